"""Gated recurrent unit (Cho et al. 2014), in both of the variants frameworks disagree on.

Gates in the order reset, update, candidate; ``W_ih [D, 3H]``, ``W_hh [H, 3H]``::

    r = σ(x_t W_ir + b_r + h_{t-1} W_hr)
    z = σ(x_t W_iz + b_z + h_{t-1} W_hz)

``variant="reset_after"`` (cuDNN, PyTorch, flax ``GRUCell``, Keras ``reset_after=True``): the
reset gate multiplies the recurrent matmul's result, which has its own bias ``b_hn``, so one
matmul of ``h`` serves all three gates::

    n = tanh(x_t W_in + b_n + r ⊙ (h_{t-1} W_hn + b_hn))

``variant="reset_before"`` (the original paper, Keras ``reset_after=False``): the reset gate
multiplies ``h`` before its matmul, so the candidate needs a second, dependent matmul::

    n = tanh(x_t W_in + b_n + (r ⊙ h_{t-1}) W_hn)

Both then interpolate::

    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

References:
  Cho et al., "Learning phrase representations using RNN encoder-decoder for statistical
  machine translation", EMNLP 2014.
  Chung et al., "Empirical evaluation of gated recurrent neural networks on sequence
  modeling", arXiv:1412.3555, 2014.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.cells.base import Cell, Initializer, check_positive, init_blocks, initializer, register
from recur.types import Array

VARIANTS = ("reset_after", "reset_before")


class GRUState(NamedTuple):
    h: Array  # [..., H]


@register("gru")
def gru(
    hidden_size: int,
    *,
    variant: str = "reset_after",
    kernel_init: str | Initializer = "lecun_normal",
    recurrent_init: str | Initializer = "orthogonal",
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds a GRU cell.

    Args:
      hidden_size: H.
      variant: ``reset_after`` (default; cuDNN/PyTorch/flax) or ``reset_before`` (Cho et al.).
      kernel_init: initialiser of each ``[D, H]`` block of ``w_ih [D, 3H]``.
      recurrent_init: initialiser of each ``[H, H]`` block of ``w_hh [H, 3H]``.
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"w_ih", "w_hh", "b"}`` (plus ``"b_hn" [H]``
      for ``reset_after``) and state :class:`GRUState`.
    """
    check_positive("hidden_size", hidden_size)
    if variant not in VARIANTS:
        raise ValueError(f"unknown GRU variant {variant!r}; available: {', '.join(VARIANTS)}")
    input_init = initializer(kernel_init, "kernel_init")
    hidden_init = initializer(recurrent_init, "recurrent_init")
    H = hidden_size

    def init(key, input_size):
        check_positive("input_size", input_size)
        k_ih, k_hh = jax.random.split(key)
        params = {
            "w_ih": init_blocks(input_init, k_ih, input_size, H, 3, param_dtype),
            "w_hh": init_blocks(hidden_init, k_hh, H, H, 3, param_dtype),
            "b": jnp.zeros((3 * H,), param_dtype),
        }
        if variant == "reset_after":
            params["b_hn"] = jnp.zeros((H,), param_dtype)
        return params

    def initial_state(batch_shape, dtype=None):
        return GRUState(jnp.zeros((*batch_shape, H), dtype or param_dtype))

    def project(params, xs):
        return xs @ params["w_ih"] + params["b"]  # [..., 3H]

    def recurrent(params, state):
        """reset_after: ``h W_hh`` with ``b_hn`` added to its candidate slice, ``[..., 3H]``."""
        h_proj = state.h @ params["w_hh"]  # [..., 3H]
        return h_proj + jnp.concatenate([jnp.zeros((2 * H,), h_proj.dtype), params["b_hn"]])

    def gates_from(x_proj, h_proj):
        x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        return r, z, n

    def pointwise_fwd(state, x_proj, h_proj):
        r, z, n = gates_from(x_proj, h_proj)
        h = (1.0 - z) * n + z * state.h
        return GRUState(h), h, (r, z, n, h_proj[..., 2 * H :])

    def pointwise(state, x_proj, h_proj):
        new_state, h, _ = pointwise_fwd(state, x_proj, h_proj)  # unused residuals: no cost
        return new_state, h

    def pointwise_bwd(state, residuals, d_new, d_h):
        r, z, n, h_n = residuals
        d_h = d_new.h + d_h
        d_n = d_h * (1.0 - z) * (1.0 - n * n)  # through tanh
        d_r = d_n * h_n * r * (1.0 - r)  # through σ
        d_z = d_h * (state.h - n) * z * (1.0 - z)
        d_x_proj = jnp.concatenate([d_r, d_z, d_n], axis=-1)
        d_h_proj = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
        return GRUState(d_h * z), d_x_proj, d_h_proj

    def recurrent_cotangent(residuals, d_x_proj):
        r = residuals[0]
        return jnp.concatenate([d_x_proj[..., : 2 * H], d_x_proj[..., 2 * H :] * r], axis=-1)

    def gates_reset_after(params, state, x_proj):
        return gates_from(x_proj, recurrent(params, state))

    def gates_reset_before(params, state, x_proj):
        h = state.h
        w_rz, w_n = params["w_hh"][:, : 2 * H], params["w_hh"][:, 2 * H :]
        x_rz, x_n = x_proj[..., : 2 * H], x_proj[..., 2 * H :]
        r, z = jnp.split(jax.nn.sigmoid(x_rz + h @ w_rz), 2, axis=-1)  # each [..., H]
        n = jnp.tanh(x_n + (r * h) @ w_n)
        return r, z, n

    gate_values = gates_reset_after if variant == "reset_after" else gates_reset_before

    def step(params, state, x_proj):
        _, z, n = gate_values(params, state, x_proj)
        h = (1.0 - z) * n + z * state.h
        return GRUState(h), h

    def gates(params, state, x_proj):
        r, z, _ = gate_values(params, state, x_proj)
        return {"reset": r, "update": z}

    if variant == "reset_after":
        return Cell(
            init, initial_state, project, step, H, f"gru_{variant}", gates,
            recurrent=recurrent, pointwise=pointwise, pointwise_fwd=pointwise_fwd,
            pointwise_bwd=pointwise_bwd, recurrent_cotangent=recurrent_cotangent,
        )  # fmt: skip
    # reset_before multiplies h by r before the matmul: no linear-then-pointwise split.
    return Cell(init, initial_state, project, step, H, f"gru_{variant}", gates)
