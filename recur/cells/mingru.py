"""minGRU (Feng et al. 2024): a GRU whose gate and candidate read the input alone, so the
state is linear in the previous state and all steps can be computed at once.

Params ``w [D, 2H]`` (update gate, candidate) and ``b [2H]``::

    z_t = σ(x_t W_z + b_z)
    h̃_t = x_t W_h + b_h
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

This is the paper's minGRU as defined in its equations (Section 3.1). The paper's log-space
implementation also passes ``h̃`` through ``g(x) = x + 0.5 (x >= 0), σ(x) (x < 0)`` to keep it
positive for ``log``: ``positive=True`` builds that variant, which also has the log-space
coefficients for ``scan_kind="log"``. recur's default parallel paths scan ``(a, b)`` pairs in
linear space (:func:`recur.unroll`), which need no sign, so by default ``h̃`` is used as it is.

References:
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?", arXiv:2410.01201,
  2024.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.cells.base import (
    Cell,
    Initializer,
    LinearRecurrence,
    check_positive,
    init_blocks,
    initializer,
    register,
)  # fmt: skip
from recur.types import Array


class MinGRUState(NamedTuple):
    h: Array  # [..., H]


@register("mingru")
def mingru(
    hidden_size: int,
    *,
    kernel_init: str | Initializer = "lecun_normal",
    positive: bool = False,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds a minGRU cell.

    Args:
      hidden_size: H.
      kernel_init: initialiser of each ``[D, H]`` block of ``w [D, 2H]``.
      positive: the paper's log-space variant, ``h̃_t = g(x_t W_h + b_h)`` (positive, so a
        nonnegative initial state keeps every state positive), with ``log_coefficients``.
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"w", "b"}``, state :class:`MinGRUState` and
      a :class:`~recur.cells.base.LinearRecurrence` (``a = 1 - z``, ``b = z ⊙ h̃``).
    """
    check_positive("hidden_size", hidden_size)
    input_init = initializer(kernel_init, "kernel_init")
    H = hidden_size

    def init(key, input_size):
        check_positive("input_size", input_size)
        return {
            "w": init_blocks(input_init, key, input_size, H, 2, param_dtype),
            "b": jnp.zeros((2 * H,), param_dtype),
        }

    def initial_state(batch_shape, dtype=None):
        return MinGRUState(jnp.zeros((*batch_shape, H), dtype or param_dtype))

    def project(params, xs):
        return xs @ params["w"] + params["b"]  # [..., 2H]

    def coefficients(params, x_proj):
        del params
        z_logit, candidate = jnp.split(x_proj, 2, axis=-1)
        if positive:
            candidate = jnp.where(candidate >= 0, candidate + 0.5, jax.nn.sigmoid(candidate))
        # 1 - σ(k) = σ(-k), exact where 1 - σ(k) would round to 0.
        return jax.nn.sigmoid(-z_logit), jax.nn.sigmoid(z_logit) * candidate

    def log_coefficients(params, x_proj):
        del params
        z_logit, candidate = jnp.split(x_proj, 2, axis=-1)
        # log g(x): log(x + 0.5) for x >= 0 (its argument kept >= 0.5 on both branches), else
        # log σ(x) = -softplus(-x).
        log_g = jnp.where(
            candidate >= 0, jnp.log(jnp.maximum(candidate, 0.0) + 0.5), -jax.nn.softplus(-candidate)
        )
        return -jax.nn.softplus(z_logit), -jax.nn.softplus(-z_logit) + log_g

    def readout(params, s, x_proj):
        del params, x_proj
        return MinGRUState(s), s

    def step(params, state, x_proj):
        a, b = coefficients(params, x_proj)
        return readout(params, a * state.h + b, x_proj)

    def gates(params, state, x_proj):
        del params, state
        return {"update": jax.nn.sigmoid(x_proj[..., :H])}

    linear = LinearRecurrence(coefficients, lambda state: state.h, readout,
                              log_coefficients if positive else None)  # fmt: skip
    return Cell(init, initial_state, project, step, H, "mingru", gates, linear=linear)
