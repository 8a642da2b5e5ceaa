"""Elman RNN (Elman 1990), with a choice of activation; IRNN via ``recurrent_init="identity"``.

Update, for input ``x_t [D]`` and state ``h_{t-1} [H]``::

    h_t = act(x_t W_ih + b + h_{t-1} W_hh)

with ``act`` one of tanh, relu, leaky_relu (slope ``negative_slope`` below zero), sigmoid, or
linear (the identity: a linear RNN, whose Jacobians are exactly ``W_hh``; for analysis).
The IRNN of Le et al. (2015) is ``activation="relu", recurrent_init="identity"``.

References:
  Elman, "Finding structure in time", Cognitive Science 1990.
  Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of rectified linear
  units", arXiv:1504.00941, 2015.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.cells.base import Cell, Initializer, check_positive, initializer, register
from recur.types import Array

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "sigmoid", "linear")


class RNNState(NamedTuple):
    h: Array  # [..., H]


@register("rnn")
def rnn(
    hidden_size: int,
    *,
    activation: str = "tanh",
    negative_slope: float = 0.01,
    kernel_init: str | Initializer = "lecun_normal",
    recurrent_init: str | Initializer = "orthogonal",
    recurrent_scale: float = 1.0,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds an Elman RNN cell.

    Args:
      hidden_size: H.
      activation: ``tanh`` | ``relu`` | ``leaky_relu`` | ``sigmoid`` | ``linear``.
      negative_slope: slope of ``leaky_relu`` below zero.
      kernel_init: initialiser of ``w_ih [D, H]`` (name or callable).
      recurrent_init: initialiser of ``w_hh [H, H]``; ``"identity"`` gives the IRNN.
      recurrent_scale: multiplies ``w_hh`` after initialisation (e.g. 0.01 for the np-RNN).
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"w_ih", "w_hh", "b"}`` and state
      :class:`RNNState`.
    """
    check_positive("hidden_size", hidden_size)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; available: {', '.join(ACTIVATIONS)}")
    act = {
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=negative_slope),
        "sigmoid": jax.nn.sigmoid,
        "linear": lambda x: x,
    }[activation]
    input_init = initializer(kernel_init, "kernel_init")
    hidden_init = initializer(recurrent_init, "recurrent_init")

    def init(key, input_size):
        check_positive("input_size", input_size)
        k_ih, k_hh = jax.random.split(key)
        return {
            "w_ih": input_init(k_ih, (input_size, hidden_size), param_dtype),
            "w_hh": recurrent_scale * hidden_init(k_hh, (hidden_size, hidden_size), param_dtype),
            "b": jnp.zeros((hidden_size,), param_dtype),
        }

    def initial_state(batch_shape, dtype=None):
        return RNNState(jnp.zeros((*batch_shape, hidden_size), dtype or param_dtype))

    def project(params, xs):
        return xs @ params["w_ih"] + params["b"]  # [..., H]

    def recurrent(params, state):
        return state.h @ params["w_hh"]  # [..., H]

    def joint(params):
        return jnp.concatenate([params["w_ih"], params["w_hh"]]), params["b"]  # [D + H, H]

    def pointwise(state, x_proj, h_proj):
        h = act(x_proj + h_proj)  # [..., H]
        return RNNState(h), h

    # act' from what pointwise_fwd saves: the output for tanh and sigmoid, the pre-activation
    # for relu and leaky_relu (so the derivative at 0 is jax's: 0 for relu, 1 for leaky_relu).
    saves_output = activation in ("tanh", "sigmoid")
    act_grad = {
        "tanh": lambda h: 1.0 - h * h,
        "sigmoid": lambda h: h * (1.0 - h),
        "relu": lambda z: (z > 0).astype(z.dtype),
        "leaky_relu": lambda z: jnp.where(z >= 0, 1.0, negative_slope).astype(z.dtype),
        "linear": lambda z: jnp.ones_like(z),
    }[activation]

    def pointwise_fwd(state, x_proj, h_proj):
        z = x_proj + h_proj
        h = act(z)
        return RNNState(h), h, h if saves_output else z

    def pointwise_bwd(state, saved, d_new, d_h):
        d_z = (d_new.h + d_h) * act_grad(saved)
        return RNNState(jnp.zeros_like(d_z)), d_z, d_z

    def step(params, state, x_proj):
        return pointwise(state, x_proj, recurrent(params, state))

    return Cell(
        init, initial_state, project, step, hidden_size, f"rnn_{activation}",
        recurrent=recurrent, pointwise=pointwise, pointwise_fwd=pointwise_fwd,
        pointwise_bwd=pointwise_bwd, joint=joint,
    )  # fmt: skip
