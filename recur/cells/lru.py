"""Linear Recurrent Unit (Orvieto et al. 2023): a complex diagonal linear recurrence with an
exponential parametrisation, ring initialisation and input normalisation.

For input ``u_t [D]``, complex state ``x_t [N]`` and output ``y_t [H]``::

    λ = exp(-exp(ν) + i exp(θ))                      (|λ| < 1 for every real ν, θ)
    γ = exp(γ_log), initialised to sqrt(1 - |λ|²)
    x_t = λ ⊙ x_{t-1} + γ ⊙ (B u_t)                  B complex [N, D]
    y_t = Re(C x_t) + D u_t                          C complex [H, N]

Ring initialisation: ``|λ|`` is drawn so that ``|λ|²`` is uniform on
``[r_min², r_max²]`` and the phase uniform on ``[0, max_phase]``. ``D`` is the paper's
elementwise skip ``[H]`` where the input has H features, else a dense ``[D, H]`` matrix (the
paper's layers keep the width). ``B``'s real and imaginary parts are drawn with variance
``1 / (2D)``, ``C``'s with variance ``1 / N``, ``D`` standard normal, as in the paper.

The state ``x_t`` is kept as its real and imaginary parts (:class:`LRUState`), the output of the
last step as ``h``; the recurrence runs in complex64 (complex128 for float64 params) whatever
the params' dtype.

References:
  Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, "Resurrecting recurrent neural
  networks for long sequences", ICML 2023.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.cells.base import Cell, LinearRecurrence, check_positive, register
from recur.types import Array


class LRUState(NamedTuple):
    h: Array  # [..., H] the last output
    x_re: Array  # [..., N] real part of the complex state
    x_im: Array  # [..., N] imaginary part


def _complex_dtype(dtype: Any) -> Any:
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


@register("lru")
def lru(
    hidden_size: int,
    *,
    state_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    param_dtype: Any = jnp.float32,
) -> Cell:
    """Builds an LRU cell.

    Args:
      hidden_size: H, the output size.
      state_size: N, the complex state size (default H).
      r_min, r_max: the ring of the initial eigenvalues' moduli, ``0 <= r_min < r_max <= 1``
        (the paper uses e.g. 0.9 and 0.999 for its long-range tasks).
      max_phase: the initial eigenvalues' phases are uniform on ``[0, max_phase]``.
      param_dtype: dtype of parameters and of the default initial state.

    Returns:
      A :class:`~recur.cells.Cell` with params ``{"nu_log", "theta_log", "gamma_log", "b_re",
      "b_im", "c_re", "c_im", "d"}``, state :class:`LRUState` and a
      :class:`~recur.cells.base.LinearRecurrence` (``a = λ``, ``b = γ ⊙ (B u)``).
    """
    check_positive("hidden_size", hidden_size)
    N = hidden_size if state_size is None else state_size
    check_positive("state_size", N)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if max_phase <= 0:
        raise ValueError(f"max_phase must be positive, got {max_phase}")
    H = hidden_size

    def init(key, input_size):
        check_positive("input_size", input_size)
        keys = jax.random.split(key, 7)
        u1 = jax.random.uniform(keys[0], (N,))
        u2 = jax.random.uniform(keys[1], (N,))
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        modulus = jnp.exp(-jnp.exp(nu_log))
        gamma_log = 0.5 * jnp.log1p(-(modulus**2))
        b_scale = 1.0 / math.sqrt(2 * input_size)
        skip_shape = (H,) if input_size == H else (input_size, H)
        skip_scale = 1.0 if input_size == H else 1.0 / math.sqrt(input_size)
        params = {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": gamma_log,
            "b_re": jax.random.normal(keys[2], (input_size, N)) * b_scale,
            "b_im": jax.random.normal(keys[3], (input_size, N)) * b_scale,
            "c_re": jax.random.normal(keys[4], (N, H)) / math.sqrt(N),
            "c_im": jax.random.normal(keys[5], (N, H)) / math.sqrt(N),
            "d": jax.random.normal(keys[6], skip_shape) * skip_scale,
        }
        return {name: value.astype(param_dtype) for name, value in params.items()}

    def initial_state(batch_shape, dtype=None):
        dtype = dtype or param_dtype
        zeros = jnp.zeros((*batch_shape, N), dtype)
        return LRUState(jnp.zeros((*batch_shape, H), dtype), zeros, zeros)

    def project(params, xs):
        """``[..., D] -> [..., 2N + H]``: Re and Im of ``γ ⊙ (B u)``, then ``D u``."""
        gamma = jnp.exp(params["gamma_log"])
        skip = xs * params["d"] if params["d"].ndim == 1 else xs @ params["d"]
        return jnp.concatenate(
            [(xs @ params["b_re"]) * gamma, (xs @ params["b_im"]) * gamma, skip], axis=-1
        )

    def eigenvalues(params):
        cdtype = _complex_dtype(params["nu_log"].dtype)
        nu = jnp.exp(
            params["nu_log"].astype(jnp.promote_types(params["nu_log"].dtype, jnp.float32))
        )
        theta = jnp.exp(params["theta_log"].astype(nu.dtype))
        return jnp.exp(jax.lax.complex(-nu, theta)).astype(cdtype)  # [N]

    def coefficients(params, x_proj):
        lam = eigenvalues(params)
        real = x_proj[..., :N].astype(lam.real.dtype)
        imag = x_proj[..., N : 2 * N].astype(lam.real.dtype)
        b = jax.lax.complex(real, imag)
        return jnp.broadcast_to(lam, b.shape), b

    def linear_state(state):
        dtype = jnp.promote_types(state.x_re.dtype, jnp.float32)
        return jax.lax.complex(state.x_re.astype(dtype), state.x_im.astype(dtype))

    def readout(params, s, x_proj):
        dtype = x_proj.dtype
        real, imag = s.real, s.imag
        c_re, c_im = (params[k].astype(real.dtype) for k in ("c_re", "c_im"))
        y = (real @ c_re - imag @ c_im).astype(dtype) + x_proj[..., 2 * N :]
        return LRUState(y, real.astype(dtype), imag.astype(dtype)), y

    def step(params, state, x_proj):
        a, b = coefficients(params, x_proj)
        return readout(params, a * linear_state(state) + b, x_proj)

    linear = LinearRecurrence(coefficients, linear_state, readout)
    return Cell(init, initial_state, project, step, H, "lru", linear=linear)
