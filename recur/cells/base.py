"""The cell contract, the cell registry and shared initialisers.

A cell is a small factory returning a :class:`Cell`, a NamedTuple of pure functions over a
params pytree (a plain dict of arrays):

* ``init(key, input_size) -> params``
* ``initial_state(batch_shape, dtype=None) -> state``: a NamedTuple whose field ``h`` is the
  hidden output, each field ``[*batch_shape, H]``.
* ``project(params, xs) -> xs_proj``: the input matmul (and input bias), valid on one step
  ``[..., D]`` or on all steps at once ``[..., T, D]``; the unroller decides where it runs.
* ``step(params, state, x_proj) -> (state, output)``: one time step; every leading axis of
  ``x_proj`` is batch.
* ``gates(params, state, x_proj) -> {name: [..., H]}`` (gated cells only, else None): the gate
  activations ``step`` would use, for diagnostics.
* ``linear`` (cells whose state is linear in the previous state, else None): a
  :class:`LinearRecurrence`, which lets :func:`recur.unroll` compute all steps at once with a
  parallel (associative) scan; ``step`` stays the reference it is tested against.

Cells never loop over time: unrolling lives in :mod:`recur.scan`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.types import Array, Params, PRNGKey, State


class LinearRecurrence(NamedTuple):
    """A cell whose linear state ``s_t = a_t ⊙ s_{t-1} + b_t`` (real or complex, elementwise)
    holds everything it carries, with ``a_t`` and ``b_t`` functions of the input alone.

    * ``coefficients(params, x_proj) -> (a, b)``: over any leading axes, each shaped as ``s``.
    * ``linear_state(state) -> s``: the linear state held in a cell state.
    * ``readout(params, s, x_proj) -> (state, output)``: the cell state and the output of a
      step that reached ``s`` while reading ``x_proj`` (over any leading axes).

    * ``log_coefficients(params, x_proj) -> (log a, log b)`` (optional; cells whose ``a`` and
      ``b`` are positive, e.g. minGRU with ``positive=True``): the same coefficients in log
      space, for ``scan_kind="log"`` (Feng et al. 2024's cumulative sum and log-cum-sum-exp).

    ``step(params, state, x_proj)`` must equal ``readout(params, a * linear_state(state) + b,
    x_proj)`` with ``a, b = coefficients(params, x_proj)``.
    """

    coefficients: Callable[[Params, Array], tuple[Array, Array]]
    linear_state: Callable[[State], Array]
    readout: Callable[[Params, Array, Array], tuple[State, Array]]
    log_coefficients: Callable[[Params, Array], tuple[Array, Array]] | None = None


class Cell(NamedTuple):
    """Pure functions of one recurrent cell plus the facts unrollers and diagnostics need."""

    init: Callable[[PRNGKey, int], Params]
    initial_state: Callable[..., State]
    project: Callable[[Params, Array], Array]
    step: Callable[[Params, State, Array], tuple[State, Array]]
    hidden_size: int
    name: str
    gates: Callable[[Params, State, Array], dict[str, Array]] | None = None
    # Optional split of ``step`` for :mod:`recur.fused`: ``step(params, state, x_proj) ==
    # pointwise(state, x_proj, recurrent(params, state))``, where ``recurrent`` is the linear
    # recurrent matmul ``[..., H] -> [..., G]`` and ``pointwise`` the elementwise rest.
    recurrent: Callable[[Params, State], Array] | None = None
    pointwise: Callable[[State, Array, Array], tuple[State, Array]] | None = None
    # Optional hand-written backward of ``pointwise`` for :mod:`recur.fused` (tested against
    # autodiff): ``pointwise_fwd(state, x_proj, r) -> (new_state, output, residuals)`` is
    # ``pointwise`` that also returns the activations its backward needs, and
    # ``pointwise_bwd(state, residuals, d_new_state, d_output) -> (d_state, d_x_proj, d_r)``.
    pointwise_fwd: Callable[[State, Array, Array], tuple[State, Array, Any]] | None = None
    pointwise_bwd: Callable[[State, Any, State, Array], tuple[State, Array, Array]] | None = None
    # Optional, for cells whose ``pointwise`` reads ``x_proj`` and ``r`` only through their sum
    # and whose ``recurrent`` reads ``state.h`` (rnn, lstm): ``joint(params) -> (w [D + H, G],
    # b [G])`` with ``project(params, x) + recurrent(params, state) == [x, state.h] @ w + b``,
    # so :mod:`recur.fused` does one matmul per step forward and one backward instead of two.
    joint: Callable[[Params], tuple[Array, Array]] | None = None
    # Optional, for cells whose ``d_r`` is an elementwise function of ``d_x_proj`` and the
    # residuals of ``pointwise_fwd`` (gru: ``d_r`` is ``d_x_proj`` with its candidate slice times
    # the reset gate): ``recurrent_cotangent(residuals, d_x_proj) -> d_r``, also on arrays
    # stacked over steps. :mod:`recur.fused` then keeps only ``d_x_proj`` for every step.
    recurrent_cotangent: Callable[[Any, Array], Array] | None = None
    # Optional, for cells linear in their state (mingru, minlstm, lru): see LinearRecurrence.
    linear: LinearRecurrence | None = None


_REGISTRY: dict[str, Callable[..., Cell]] = {}


def register(
    name: str, *, replace: bool = False
) -> Callable[[Callable[..., Cell]], Callable[..., Cell]]:
    """Decorator adding a cell factory to the registry under ``name``.

    Raises:
      ValueError: ``name`` is registered already and ``replace`` is False (a fork's cell never
        silently takes the place of another).
    """

    def decorate(factory: Callable[..., Cell]) -> Callable[..., Cell]:
        if name in _REGISTRY and not replace:
            raise ValueError(
                f"a cell named {name!r} is registered already ({_REGISTRY[name].__module__}); "
                "choose another name or pass replace=True"
            )
        _REGISTRY[name] = factory
        return factory

    return decorate


def available() -> list[str]:
    """Names accepted by :func:`get`, sorted."""
    return sorted(_REGISTRY)


def get(name: str, hidden_size: int, **options: Any) -> Cell:
    """Builds the cell registered as ``name``.

    Args:
      name: a registered cell name, e.g. ``"lstm"``; see :func:`available`.
      hidden_size: H, the number of hidden units.
      **options: forwarded to the cell's factory (e.g. ``activation="relu"``).

    Raises:
      ValueError: for an unknown name, listing the available cells.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown cell {name!r}; available cells: {', '.join(available())}")
    return _REGISTRY[name](hidden_size, **options)


def options_from_config(model_config: Any) -> dict[str, Any]:
    """The cell options an experiment's ``config.model`` sets for its ``cell``: the classic
    cells' ``recurrent_init``, plus ``activation`` (rnn), ``forget_bias`` (lstm) or
    ``gru_variant`` (gru, passed as ``variant``); the LRU's ring ``lru_r_min``,
    ``lru_r_max`` and ``lru_max_phase`` where the config has them (else the cell's defaults).
    minGRU and minLSTM take none (their forget bias stays the paper's 0)."""
    cell = model_config.cell
    options = {}
    if cell in ("rnn", "lstm", "gru"):
        options["recurrent_init"] = model_config.recurrent_init
    if cell == "rnn":
        options["activation"] = model_config.activation
    elif cell == "lstm":
        options["forget_bias"] = model_config.forget_bias
    elif cell == "gru":
        options["variant"] = model_config.gru_variant
    elif cell == "lru":
        for field, option in (("lru_r_min", "r_min"), ("lru_r_max", "r_max"),
                              ("lru_max_phase", "max_phase")):  # fmt: skip
            if field in model_config:
                options[option] = model_config[field]
    return options


def check_positive(argument: str, value: int) -> None:
    """Raises ValueError unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")


# -- initialisers ---------------------------------------------------------------------------

Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]


def _identity(key: PRNGKey, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    del key
    rows, cols = shape
    return jnp.eye(rows, cols, dtype=dtype)


_INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "orthogonal": jax.nn.initializers.orthogonal,
    "identity": lambda: _identity,
    "lecun_normal": jax.nn.initializers.lecun_normal,
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "he_normal": jax.nn.initializers.he_normal,
    "zeros": lambda: jax.nn.initializers.zeros,
}


def initializer(spec: str | Initializer, argument: str) -> Initializer:
    """Resolves an initialiser given by name (see ``_INITIALIZERS``) or as a callable.

    The result draws in at least float32 and casts to the requested dtype, so low-precision
    params (bfloat16, float16) work with initialisers LAPACK cannot run in them (orthogonal).
    """
    if not callable(spec):
        if spec not in _INITIALIZERS:
            raise ValueError(
                f"unknown {argument} {spec!r}; available: {', '.join(sorted(_INITIALIZERS))} "
                "or a jax.nn.initializers callable"
            )
        spec = _INITIALIZERS[spec]()

    def init(key: PRNGKey, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return spec(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)

    return init


def init_blocks(
    init: Initializer, key: PRNGKey, rows: int, hidden_size: int, num_blocks: int, dtype: Any
) -> Array:
    """``[rows, num_blocks * H]`` matrix, each ``[rows, H]`` gate block initialised apart.

    Initialising gate blocks separately keeps e.g. each recurrent block orthogonal (as in
    flax and Keras), instead of one orthogonal ``[H, 4H]`` matrix whose blocks are not.
    """
    keys = jax.random.split(key, num_blocks)
    blocks = [init(k, (rows, hidden_size), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1)
