"""Jacobians of the recurrence along a trajectory: one-step ``J_k = dstate_k/dstate_{k-1}``
and their products ``dstate_T/dstate_t = J_T J_{T-1} ... J_{t+1}`` for every lag.

The state is flattened over its fields (the LSTM's ``[h, c]`` is one 2H vector), so the
products are exactly what backpropagation multiplies gradients by. Spectral norms are exact
(singular values) up to ``exact_max_size`` and by power iteration beyond.
"""

import itertools

import jax
import jax.numpy as jnp

from recur.cells import Cell
from recur.diagnostics.gradient_flow import stable_norm
from recur.types import Array, Params, PRNGKey, State


def trajectory(cell: Cell, params: Params, xs: Array) -> tuple[State, Array]:
    """States before each step and the projected inputs, time-major: ``(states [T, B, ...],
    x_proj [T, B, G])`` for ``xs [B, T, D]``."""
    x_proj = cell.project(params, jnp.swapaxes(xs, 0, 1))  # [T, B, G]
    initial = cell.initial_state((xs.shape[0],), dtype=xs.dtype)

    def body(state, x):
        new_state, _ = cell.step(params, state, x)
        return new_state, state

    _, before = jax.lax.scan(body, initial, x_proj)
    return before, x_proj


def _flat_step(cell: Cell, params: Params, template: State):
    """``step`` on one example's flat state vector ``[S]`` (fields concatenated)."""
    sizes = [leaf.shape[-1] for leaf in template]
    boundaries = list(itertools.accumulate(sizes))[:-1]

    def unflatten(vector):
        parts = jnp.split(vector, boundaries)
        return type(template)(*parts)

    def step(vector, x_proj):
        new_state, _ = cell.step(params, unflatten(vector), x_proj)
        return jnp.concatenate(list(new_state), axis=-1)

    return step


def one_step_jacobians(cell: Cell, params: Params, xs: Array) -> Array:
    """``J [B, T, S, S]``: ``J[b, k] = dstate_k/dstate_{k-1}`` along each example's trajectory
    (S = state size: H, or 2H for the LSTM)."""
    before, x_proj = trajectory(cell, params, xs)
    flat = jnp.concatenate(list(before), axis=-1)  # [T, B, S]
    step = _flat_step(cell, params, jax.tree.map(lambda a: a[0, 0], before))
    jacobian = jax.vmap(jax.vmap(jax.jacfwd(step)))(flat, x_proj)  # [T, B, S, S]
    return jnp.swapaxes(jacobian, 0, 1)


def spectral_norm(
    matrices: Array, *, exact_max_size: int = 256, iterations: int = 50, key: PRNGKey | None = None
) -> Array:
    """Largest singular value of each ``[..., S, S]`` matrix: exact for S <= exact_max_size,
    else by ``iterations`` of power iteration on ``M^T M`` (a lower bound that converges)."""
    if matrices.shape[-1] <= exact_max_size:
        return jnp.linalg.svd(matrices, compute_uv=False)[..., 0]
    key = jax.random.key(0) if key is None else key
    v = jax.random.normal(key, matrices.shape[:-2] + matrices.shape[-1:])

    def power(v, _):
        v = jnp.einsum("...ij,...j->...i", matrices, v)
        v = jnp.einsum("...ji,...j->...i", matrices, v)
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True), None

    v, _ = jax.lax.scan(power, v / jnp.linalg.norm(v, axis=-1, keepdims=True), None, iterations)
    return jnp.linalg.norm(jnp.einsum("...ij,...j->...i", matrices, v), axis=-1)


def jacobian_product_norms(jacobians: Array, **spectral_options) -> dict[str, Array]:
    """Norms of ``dstate_T/dstate_{T-k} = J_T ... J_{T-k+1}`` for lags k = 0..T-1.

    Args:
      jacobians: ``[T, S, S]`` one-step Jacobians of one trajectory (time order).
      **spectral_options: forwarded to :func:`spectral_norm`.

    Returns:
      ``{"spectral": [T], "frobenius": [T]}`` indexed by lag (lag 0: the identity).
    """
    size = jacobians.shape[-1]

    def body(product, jacobian):  # walk back in time: P_{k+1} = P_k @ J_{T-k}
        norms = (spectral_norm(product, **spectral_options), stable_norm(product, (-2, -1)))
        return product @ jacobian, norms

    _, (spectral, frobenius) = jax.lax.scan(body, jnp.eye(size, dtype=jacobians.dtype),
                                            jacobians[::-1])  # fmt: skip
    return {"spectral": spectral, "frobenius": frobenius}
