"""``dL/dstate_t`` for every step t in one backward pass.

A zero perturbation ``delta_t`` is added to the state after each step inside the scan
(:func:`recur.unroll`'s ``perturbations``); the loss does not change, and its gradient with
respect to ``delta_t`` is the total derivative ``dL/dstate_t``: everything the loss receives
from step t onwards, through the recurrence and through per-step outputs. One ``jax.grad``
gives all T of them, instead of T backward passes.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import recur
from recur.cells import Cell
from recur.types import Array, Params, State

LossFn = Callable[[Array, State], Array]  # (outputs [B, T, H], final_state) -> scalar


def state_grads_per_step(
    cell: Cell,
    params: Params,
    xs: Array,
    loss_fn: LossFn,
    *,
    seq_lengths: Array | None = None,
    initial_state: State | None = None,
) -> tuple[Array, State]:
    """``(loss, grads)`` where ``grads`` is state-shaped with ``[B, T, H]`` fields:
    ``grads.h[b, t] = dL/dh_t`` for example b (and ``grads.c`` for the LSTM memory cell).

    Padded steps (``t >= seq_lengths[b]``) get exactly zero: they do not touch the state.
    """
    batch_size, num_steps = xs.shape[:2]
    template = cell.initial_state((batch_size, num_steps), dtype=xs.dtype)
    zeros = jax.tree.map(jnp.zeros_like, template)

    def loss_of(perturbations):
        outputs, final = recur.unroll(
            cell, params, xs, seq_lengths=seq_lengths, initial_state=initial_state,
            perturbations=perturbations,
        )  # fmt: skip
        return loss_fn(outputs, final)

    return jax.value_and_grad(loss_of)(zeros)


def stable_norm(x: Array, axis: int | tuple[int, ...] = -1) -> Array:
    """Euclidean norm that does not underflow: ``m * ||x / m||`` with ``m = max |x|``.

    A plain norm squares its entries, so entries below ~1e-19 (float32) vanish and the norm
    reads 0 long before the gradient itself does.
    """
    scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    safe = jnp.where(scale > 0, scale, 1.0)
    return jnp.squeeze(scale, axis) * jnp.linalg.norm(x / safe, axis=axis)


def grad_norms_per_step(grads: State) -> dict[str, Array]:
    """Per-field norms ``||dL/dstate_t||`` over hidden units, ``{field: [B, T]}``."""
    return {field: stable_norm(value, axis=-1) for field, value in grads._asdict().items()}


def fit_decay_rate(norms: np.ndarray, min_value: float = 1e-30) -> float:
    """Least-squares slope of ``log10 ||dL/dh_{T-k}||`` against the lag k, in decades per step
    (negative: the gradient shrinks going back in time). ``norms [T]`` is ordered by time step,
    so the last entry is lag 0. Entries at or below ``min_value`` (underflow) are left out."""
    norms = np.asarray(norms, np.float64)[::-1]  # by lag
    lags = np.arange(len(norms))
    keep = norms > min_value
    if keep.sum() < 2:
        return float("nan")
    slope, _ = np.polyfit(lags[keep], np.log10(norms[keep]), 1)
    return float(slope)


def effective_memory(norms: np.ndarray, threshold: float = 1e-6) -> int | None:
    """The smallest lag k at which ``||dL/dh_{T-k}||`` falls below ``threshold`` times its value
    at lag 0 (the last step), or None if it never does within the sequence."""
    norms = np.asarray(norms, np.float64)[::-1]
    below = np.nonzero(norms < threshold * norms[0])[0]
    return int(below[0]) if below.size else None
