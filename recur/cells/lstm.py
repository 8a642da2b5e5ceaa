"""LSTM with forget gate (Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000).

One fused gate matmul of width 4H, gates in the order input, forget, cell candidate, output
(the order of PyTorch and cuDNN)::

    [i, f, g, o] = x_t W_ih + b + h_{t-1} W_hh          # [4H]
    i = σ(i)   f = σ(f + forget_bias)   g = tanh(g)   o = σ(o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

``forget_bias`` (default 1.0, Jozefowicz et al. 2015) is added at initialisation to the
forget-gate slice of ``b``, so it is a learnable starting point, as in Keras'
``unit_forget_bias``; pass ``forget_bias=0.0`` for a zero-initialised bias.

References:
  Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997.
  Gers, Schmidhuber & Cummins, "Learning to forget: continual prediction with LSTM", 2000.
  Jozefowicz, Zaremba & Sutskever, "An empirical exploration of recurrent network
  architectures", ICML 2015.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.cells.base import Cell, Initializer, check_positive, init_blocks, initializer, register
from recur.types import Array


class LSTMState(NamedTuple):
    h: Array  # [..., H] hidden output
    c: Array  # [..., H] memory cell


@register("lstm")
def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    kernel_init: str | Initializer = "lecun_normal",
    recurrent_init: str | Initializer = "orthogonal",
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds an LSTM cell.

    Args:
      hidden_size: H.
      forget_bias: initial value of the forget-gate bias.
      kernel_init: initialiser of each ``[D, H]`` block of ``w_ih [D, 4H]``.
      recurrent_init: initialiser of each ``[H, H]`` block of ``w_hh [H, 4H]``.
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"w_ih", "w_hh", "b"}`` and state
      :class:`LSTMState`.
    """
    check_positive("hidden_size", hidden_size)
    input_init = initializer(kernel_init, "kernel_init")
    hidden_init = initializer(recurrent_init, "recurrent_init")
    H = hidden_size

    def init(key, input_size):
        check_positive("input_size", input_size)
        k_ih, k_hh = jax.random.split(key)
        b = jnp.zeros((4 * H,), param_dtype).at[H : 2 * H].set(forget_bias)
        return {
            "w_ih": init_blocks(input_init, k_ih, input_size, H, 4, param_dtype),
            "w_hh": init_blocks(hidden_init, k_hh, H, H, 4, param_dtype),
            "b": b,
        }

    def initial_state(batch_shape, dtype=None):
        zeros = jnp.zeros((*batch_shape, H), dtype or param_dtype)
        return LSTMState(zeros, zeros)

    def project(params, xs):
        return xs @ params["w_ih"] + params["b"]  # [..., 4H]

    def recurrent(params, state):
        return state.h @ params["w_hh"]  # [..., 4H]

    def joint(params):
        return jnp.concatenate([params["w_ih"], params["w_hh"]]), params["b"]  # [D + H, 4H]

    def gate_values(x_proj, h_proj):
        i, f, g, o = jnp.split(x_proj + h_proj, 4, axis=-1)  # each [..., H]
        return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)

    def pointwise_fwd(state, x_proj, h_proj):
        i, f, g, o = gate_values(x_proj, h_proj)
        c = f * state.c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        return LSTMState(h, c), h, (i, f, g, o, tanh_c)

    def pointwise(state, x_proj, h_proj):
        new_state, h, _ = pointwise_fwd(state, x_proj, h_proj)  # unused residuals: no cost
        return new_state, h

    def pointwise_bwd(state, residuals, d_new, d_h):
        i, f, g, o, tanh_c = residuals
        d_h = d_new.h + d_h
        d_c = d_new.c + d_h * o * (1.0 - tanh_c * tanh_c)
        d_gates = jnp.concatenate(  # through σ' = σ(1 - σ) and tanh' = 1 - tanh²
            [d_c * g * i * (1.0 - i), d_c * state.c * f * (1.0 - f), d_c * i * (1.0 - g * g),
             d_h * tanh_c * o * (1.0 - o)], axis=-1,
        )  # fmt: skip
        return LSTMState(jnp.zeros_like(d_h), d_c * f), d_gates, d_gates

    def step(params, state, x_proj):
        return pointwise(state, x_proj, recurrent(params, state))

    def gates(params, state, x_proj):
        i, f, _, o = gate_values(x_proj, recurrent(params, state))
        return {"input": i, "forget": f, "output": o}

    return Cell(
        init, initial_state, project, step, H, "lstm", gates,
        recurrent=recurrent, pointwise=pointwise, pointwise_fwd=pointwise_fwd,
        pointwise_bwd=pointwise_bwd, joint=joint,
    )  # fmt: skip
