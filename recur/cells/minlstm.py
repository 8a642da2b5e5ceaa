"""minLSTM (Feng et al. 2024): an LSTM whose gates and candidate read the input alone, with
the forget and input gates normalised to sum to one, so the state is linear in the previous
state and all steps can be computed at once.

Params ``w [D, 3H]`` (forget, input, candidate) and ``b [3H]``::

    f_t = σ(x_t W_f + b_f)        i_t = σ(x_t W_i + b_i)        h̃_t = x_t W_h + b_h
    f'_t = f_t / (f_t + i_t)      i'_t = i_t / (f_t + i_t)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

This is the paper's length-independent minLSTM (Section 3.2, with the normalised gates); as for
:mod:`recur.cells.mingru`, ``h̃`` is used without the log-space implementation's ``g``, the
parallel path being an associative scan in linear space. ``forget_bias`` (default 0, the
paper's) is added to ``b_f`` at initialisation.

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


class MinLSTMState(NamedTuple):
    h: Array  # [..., H]


@register("minlstm")
def minlstm(
    hidden_size: int,
    *,
    forget_bias: float = 0.0,
    kernel_init: str | Initializer = "lecun_normal",
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds a minLSTM cell.

    Args:
      hidden_size: H.
      forget_bias: added to the forget gate's bias at initialisation.
      kernel_init: initialiser of each ``[D, H]`` block of ``w [D, 3H]``.
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"w", "b"}``, state :class:`MinLSTMState`
      and a :class:`~recur.cells.base.LinearRecurrence` (``a = f'``, ``b = i' ⊙ h̃``).
    """
    check_positive("hidden_size", hidden_size)
    input_init = initializer(kernel_init, "kernel_init")
    H = hidden_size

    def init(key, input_size):
        check_positive("input_size", input_size)
        bias = jnp.zeros((3 * H,), param_dtype).at[:H].set(forget_bias)
        return {"w": init_blocks(input_init, key, input_size, H, 3, param_dtype), "b": bias}

    def initial_state(batch_shape, dtype=None):
        return MinLSTMState(jnp.zeros((*batch_shape, H), dtype or param_dtype))

    def project(params, xs):
        return xs @ params["w"] + params["b"]  # [..., 3H]

    def normalised_gates(x_proj):
        f_logit, i_logit, candidate = jnp.split(x_proj, 3, axis=-1)
        # f / (f + i) = σ(log σ(f_logit) - log σ(i_logit)): no division, no overflow.
        difference = jax.nn.log_sigmoid(f_logit) - jax.nn.log_sigmoid(i_logit)
        return jax.nn.sigmoid(difference), jax.nn.sigmoid(-difference), candidate

    def coefficients(params, x_proj):
        del params
        forget, input_, candidate = normalised_gates(x_proj)
        return forget, input_ * candidate

    def readout(params, s, x_proj):
        del params, x_proj
        return MinLSTMState(s), s

    def step(params, state, x_proj):
        a, b = coefficients(params, x_proj)
        return readout(params, a * state.h + b, x_proj)

    def gates(params, state, x_proj):
        del params, state
        forget, input_, _ = normalised_gates(x_proj)
        return {"forget": forget, "input": input_}

    linear = LinearRecurrence(coefficients, lambda state: state.h, readout)
    return Cell(init, initial_state, project, step, H, "minlstm", gates, linear=linear)
