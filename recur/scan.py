"""Unrolling cells over time: masks and lengths, reverse, bidirectional, stacking, remat.

Public arrays are batch-major ``[B, T, D]``; each unroll transposes to time-major once,
runs ``jax.lax.scan`` over time and transposes the outputs back.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recur import fused as fused_lib
from recur import regularizers
from recur.cells.base import Cell
from recur.types import Array, Params, PRNGKey, State

MERGES = ("concat", "sum")
# How unroll runs a cell over time: ``sequential`` (jax.lax.scan over cell.step, any cell);
# for a cell with a LinearRecurrence, every step's (a, b) computed at once and then either
# ``linear`` (jax.lax.scan over s = a * s + b alone: T steps of elementwise work) or
# ``associative`` (jax.lax.associative_scan over the (a, b) pairs: O(log T) depth, about twice
# the work), as recurrentgemma's linear and associative scans.
SCAN_KINDS = ("sequential", "linear", "associative", "log")


def default_scan_kind(cell: Cell) -> str:
    """The ``scan_kind`` :func:`unroll` uses by default: ``sequential`` for cells without a
    linear recurrence; for the others ``linear`` on CPU and ``associative`` on GPU and TPU,
    whose parallelism it is made for (not measured there yet). On the 2-core CPU
    (``benchmarks.parallel_scan``, README) ``linear`` was the fastest of the three for minGRU
    and minLSTM at every T from 100 to 10,000 and for the LRU up to T = 3,000; at 10,000 the
    LRU's step loop, holding 2.7x less memory, was faster. The associative scan was the
    slowest at every T but one."""
    if cell.linear is None:
        return "sequential"
    return "linear" if jax.default_backend() == "cpu" else "associative"


def default_hoist_projection() -> bool:
    """Whether :func:`unroll` hoists the input projection out of the scan on this backend.

    On GPU and TPU one large ``[T*B, D] @ [D, G]`` matmul before the scan is the layout the
    hardware favours. On XLA:CPU it was measured slower (see the README's performance
    section), so there the projection runs inside each step.
    """
    return jax.default_backend() != "cpu"


# Largest batch for which unroll picks recur.fused by default on CPU, per cell family. Measured
# on a 2-core CPU (results/speed/cpu_fused_crossover.json, xover4 and xover5; README) from B = 8
# to 256: fused / autodiff time 0.56-0.96 for the LSTM, 0.48-0.99 for the RNN and 0.52-1.00 for the
# GRU (reset_after; reset_before has no fused path), each with equal or less memory, so none
# has a limit. A fork that measures a crossover on its machine sets a finite limit here.
FUSED_MAX_BATCH_ON_CPU = {"lstm": math.inf, "rnn": math.inf, "gru": math.inf}


def default_fused(cell: Cell, batch_size: int) -> bool:
    """Whether :func:`unroll` uses :mod:`recur.fused` when ``fused=None``.

    True on CPU for ``lstm``, ``rnn`` (any activation) and ``gru`` (``reset_after``) up to the
    batch sizes of :data:`FUSED_MAX_BATCH_ON_CPU` (no limit: it was measured faster at every
    batch size); False elsewhere (GPU and TPU, where it is not measured yet). Either path
    gives the same values and gradients; only ``jax.jvp`` / ``jax.jacfwd`` through the unroll
    need ``fused=False`` (forward mode cannot pass a custom VJP; ``jax.grad`` of ``jax.grad``
    and forward-over-reverse Hessian-vector products work). A cell registered outside recur
    takes autodiff by default even where it has the fused members: pass ``fused=True``, or add
    its name to :data:`FUSED_MAX_BATCH_ON_CPU` once measured faster.
    """
    family = cell.name.split("_")[0] if cell.name.startswith(("rnn_", "gru_")) else cell.name
    return (
        jax.default_backend() == "cpu"
        and batch_size <= FUSED_MAX_BATCH_ON_CPU.get(family, 0)
        and fused_lib.supports(cell)
    )


def check_inputs(xs: Array) -> Array:
    """Returns ``xs`` as an array after checking it is ``[B, T, D]`` with T >= 1."""
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape [B, T, D] (rank 3), got shape {tuple(xs.shape)}")
    if xs.shape[1] < 1:
        raise ValueError(f"xs must have at least one time step, got shape {tuple(xs.shape)}")
    return xs


def check_seq_lengths(seq_lengths: Array, batch_size: int, num_steps: int) -> Array:
    """Validates ``seq_lengths [B]`` and returns it as int32, clipped to [0, T].

    Concrete values outside [1, T] raise ``ValueError``. Traced values (under ``jax.jit``)
    cannot be checked without a host round trip: they are clipped, so a length above T runs
    all T steps and a length below 1 runs none (the initial state, zero outputs), the same
    as the masks those lengths give.
    """
    seq_lengths = jnp.asarray(seq_lengths)
    if seq_lengths.shape != (batch_size,):
        raise ValueError(
            f"seq_lengths must have shape [B] = ({batch_size},), got {tuple(seq_lengths.shape)}"
        )
    if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise ValueError(f"seq_lengths must be integers, got dtype {seq_lengths.dtype}")
    if not isinstance(seq_lengths, jax.core.Tracer):
        values = np.asarray(seq_lengths)
        bad = values[(values < 1) | (values > num_steps)]
        if bad.size:
            raise ValueError(
                f"seq_lengths must lie in [1, T] = [1, {num_steps}], got {bad.tolist()[:5]}"
            )
    return jnp.clip(seq_lengths.astype(jnp.int32), 0, num_steps)


def _state_dtype(params: Params, xs: Array) -> Any:
    leaves = jax.tree.leaves(params)
    return jnp.result_type(xs.dtype, *(leaf.dtype for leaf in leaves[:1]))


def unroll(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    initial_state: State | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    hoist_projection: bool | None = None,
    perturbations: State | None = None,
    fused: bool | None = None,
    scan_kind: str | None = None,
) -> tuple[Array, State]:
    """Runs ``cell`` over the time axis of ``xs``.

    Args:
      cell: a :class:`~recur.cells.Cell`.
      params: the cell's params (from ``cell.init``).
      xs: ``[B, T, D]`` inputs.
      initial_state: the state before the first step (default ``cell.initial_state((B,))``);
        pass the previous batch's ``final_state`` to carry state (truncated BPTT: wrap it in
        ``jax.lax.stop_gradient``).
      seq_lengths: optional ``[B]`` int, each in [1, T]. Steps ``t >= seq_lengths[b]`` are
        padding: they leave the state unchanged and output zeros, so ``final_state`` is each
        sequence's state at its last valid step. Values outside [1, T] raise ``ValueError``
        when concrete; under ``jax.jit`` they are clipped to [0, T] (see
        :func:`check_seq_lengths`).
      reverse: run from the last valid step to the first. With ``seq_lengths`` each sequence is
        reversed within its own length, so padding never reaches the state; ``outputs[:, t]``
        stays aligned with ``xs[:, t]``.
      unroll: steps per scan iteration (``jax.lax.scan``'s ``unroll``).
      remat: rematerialise each step in the backward pass (``jax.checkpoint``): memory
        O(T * state) instead of O(T * activations), for one extra forward step each.
      hoist_projection: compute ``cell.project`` for all steps as one matmul before the scan
        (True) or inside each step (False). Default: :func:`default_hoist_projection`.
      perturbations: optional state-shaped pytree of ``[B, T, ...]`` arrays added to the state
        after each valid step ``t`` (the output is then the perturbed ``h``). Zeros change
        nothing; the gradient of a loss with respect to them is ``dL/dstate_t`` for every t in
        one backward pass (:mod:`recur.diagnostics`).
      fused: use the hand-written backward pass of :mod:`recur.fused` (weight gradients as one
        matmul after the backward scan); same values and gradients. Not combined with
        ``remat``, ``perturbations`` or ``unroll``. Default (None): :func:`default_fused` where
        none of those is set, else False. Pass False for ``jax.jvp`` / ``jax.jacfwd``.
      scan_kind: ``sequential``, ``linear`` or ``associative`` (:data:`SCAN_KINDS`). Default
        (None): :func:`default_scan_kind`, and ``sequential`` with ``perturbations``.
        ``linear`` and ``associative`` (cells with a ``linear`` recurrence: mingru, minlstm,
        lru) compute every step's ``(a, b)`` at once and run only ``s = a s + b`` over time;
        ``log`` does it in log space with a cumulative sum and ``jax.lax.cumlogsumexp`` (cells
        with ``log_coefficients``: mingru with ``positive=True``; the initial state must be
        nonnegative);
        padding steps are the identity ``(1, 0)``, and ``remat`` rematerialises the whole
        pass.

    Inside ``jax.shard_map`` with the batch split over a mesh axis, the carry and the params are
    cast to vary over that axis before the scan, so the params' gradient is summed over the
    devices once, after it.

    Returns:
      ``(outputs [B, T, H], final_state)``.
    """
    xs = check_inputs(xs)
    batch_size, num_steps, _ = xs.shape
    if initial_state is None:
        initial_state = cell.initial_state((batch_size,), dtype=_state_dtype(params, xs))
    # Inside shard_map (the batch split over devices): the carry must vary as xs does, and the
    # params are cast to varying once here, so that their gradient is summed over the devices
    # once, after the scan, instead of inside it at every step.
    params, initial_state = fused_lib.match_varying((params, initial_state), xs)
    mask = None  # [T, B, 1] bool
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_size, num_steps)
        mask = (jnp.arange(num_steps)[:, None] < seq_lengths[None, :])[..., None]
    if scan_kind is None:
        scan_kind = "sequential" if perturbations is not None else default_scan_kind(cell)
    if scan_kind not in SCAN_KINDS:
        raise ValueError(f"unknown scan_kind {scan_kind!r}; available: {', '.join(SCAN_KINDS)}")
    if scan_kind != "sequential":
        if cell.linear is None:
            raise ValueError(f"scan_kind={scan_kind!r} needs a cell with a linear recurrence; "
                             f"{cell.name} has none")  # fmt: skip
        if scan_kind == "log" and cell.linear.log_coefficients is None:
            raise ValueError(f"scan_kind='log' needs positive coefficients in log space "
                             f"(LinearRecurrence.log_coefficients); {cell.name} has none, "
                             "e.g. build mingru with positive=True")  # fmt: skip
        if perturbations is not None or fused:
            raise ValueError(
                f"scan_kind={scan_kind!r} does not combine with perturbations or fused"
            )
        run = jax.checkpoint(_linear_unroll, static_argnums=(0, 5, 6)) if remat else _linear_unroll
        return run(cell, params, xs, initial_state, seq_lengths, reverse, scan_kind)
    if hoist_projection is None:
        hoist_projection = default_hoist_projection()
    if fused is None:
        plain = not remat and perturbations is None and unroll == 1
        fused = plain and default_fused(cell, batch_size)
    if fused:
        if remat or perturbations is not None or unroll != 1:
            raise ValueError("fused=True does not combine with remat, perturbations or unroll")
        ys, final_state = fused_lib.fused_scan(
            cell, params, jnp.swapaxes(xs, 0, 1), initial_state, mask, reverse=reverse,
            hoist_projection=hoist_projection,
        )  # fmt: skip
        return jnp.swapaxes(ys, 0, 1), final_state

    xs = jnp.swapaxes(xs, 0, 1)  # [T, B, D]
    if hoist_projection:
        xs = cell.project(params, xs)  # [T, B, G]
    if perturbations is not None:
        perturbations = jax.tree.map(lambda p: jnp.swapaxes(p, 0, 1), perturbations)

    def body(state, inputs):
        x, valid, delta = inputs
        x_proj = x if hoist_projection else cell.project(params, x)
        new_state, y = cell.step(params, state, x_proj)
        if delta is not None:
            new_state = jax.tree.map(jnp.add, new_state, delta)
            y = new_state.h
        if valid is not None:
            new_state = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_state, state)
            y = jnp.where(valid, y, jnp.zeros_like(y))
        return new_state, y

    if remat:
        body = jax.checkpoint(body)
    final_state, ys = jax.lax.scan(
        body, initial_state, (xs, mask, perturbations), reverse=reverse, unroll=unroll
    )
    return jnp.swapaxes(ys, 0, 1), final_state


def _combine(earlier, later):
    """The composition of two steps ``s -> a s + b``: first ``earlier``, then ``later``."""
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


def _linear_space_scan(a, b, s0, mask, reverse: bool, scan_kind: str) -> Array:
    """Every step's state of ``s_t = a_t s_{t-1} + b_t`` from ``s0``, ``a, b [T, B, N]``;
    padding (``mask`` False) is the identity step ``(1, 0)``."""
    if mask is not None:
        a = jnp.where(mask, a, jnp.ones_like(a))
        b = jnp.where(mask, b, jnp.zeros_like(b))
    if scan_kind == "linear":

        def body(state, coefficients):
            state = coefficients[0] * state + coefficients[1]
            return state, state

        _, s = jax.lax.scan(body, s0, (a, b), reverse=reverse)  # [T, B, N]
        return s
    first = a.shape[0] - 1 if reverse else 0  # the step that reads the initial state
    b = b.at[first].add(a[first] * s0)
    _, s = jax.lax.associative_scan(_combine, (a, b), axis=0, reverse=reverse)
    return s


# log 0 in the log-space scan: exp() of it is 0 in float32 and float64, and it stays finite
# after the subtraction of any cumulative log a a sequence can reach.
_LOG_ZERO = -1e30


def _log_space_scan(log_a, log_b, s0, mask, reverse: bool) -> Array:
    """The same states from ``log a, log b [T, B, N]`` and ``s0 >= 0`` in log space (Feng et
    al. 2024, Appendix B): ``log s_t = A_t + logcumsumexp_{k <= t}([log s_0, log b_k - A_k])``
    with ``A_t = cumsum_{j <= t} log a_j``; padding is ``(log a, log b) = (0, log 0)``. ``log
    0`` is :data:`_LOG_ZERO`, finite: ``-inf`` would make ``cumlogsumexp``'s gradient NaN."""
    if mask is not None:
        log_a = jnp.where(mask, log_a, jnp.zeros_like(log_a))
        log_b = jnp.where(mask, log_b, jnp.full_like(log_b, _LOG_ZERO))
    if reverse:
        log_a, log_b = log_a[::-1], log_b[::-1]
    positive = s0 > 0  # log 0, with a zero (not NaN) gradient
    log_s0 = jnp.where(positive, jnp.log(jnp.where(positive, s0, 1.0)), _LOG_ZERO)
    a_star = jnp.cumsum(log_a, axis=0)
    terms = jnp.concatenate([log_s0[None], log_b - a_star], axis=0)
    log_s = a_star + jax.lax.cumlogsumexp(terms, axis=0)[1:]
    s = jnp.exp(log_s)
    return s[::-1] if reverse else s


def _linear_unroll(
    cell: Cell, params: Params, xs: Array, initial_state: State, seq_lengths, reverse: bool,
    scan_kind: str,
) -> tuple[Array, State]:  # fmt: skip
    """:func:`unroll` of a cell with a linear recurrence: its ``(a, b)`` for every step at
    once, then ``s_t = a_t s_{t-1} + b_t`` by ``jax.lax.scan`` (``linear``),
    ``jax.lax.associative_scan`` (``associative``) or in log space (``log``), then the readout
    of every step."""
    recurrence = cell.linear
    batch_size, num_steps, _ = xs.shape
    x_proj = cell.project(params, jnp.swapaxes(xs, 0, 1))  # [T, B, G]
    mask = None
    if seq_lengths is not None:
        mask = (jnp.arange(num_steps)[:, None] < seq_lengths[None, :])[..., None]  # [T, B, 1]
    if scan_kind == "log":
        log_a, log_b = recurrence.log_coefficients(params, x_proj)  # each [T, B, N]
        s0 = recurrence.linear_state(initial_state).astype(log_b.dtype)
        s = _log_space_scan(log_a, log_b, s0, mask, reverse)
    else:
        a, b = recurrence.coefficients(params, x_proj)  # each [T, B, N]
        s0 = recurrence.linear_state(initial_state).astype(b.dtype)
        s = _linear_space_scan(a, b, s0, mask, reverse, scan_kind)
    states, ys = recurrence.readout(params, s, x_proj)
    # The final state is the state after the last step read: the last valid one going forward,
    # step 0 going backward.
    if reverse:
        last = jnp.zeros((batch_size,), jnp.int32)
    elif seq_lengths is None:
        last = jnp.full((batch_size,), num_steps - 1)
    else:
        last = jnp.maximum(seq_lengths - 1, 0)
    rows = jnp.arange(batch_size)
    final_state = jax.tree.map(lambda leaf: leaf[last, rows], states)
    if mask is not None:
        ys = jnp.where(mask, ys, jnp.zeros_like(ys))
        ran = (seq_lengths > 0)[:, None]  # lengths clipped to 0 under jit: no step ran
        final_state = jax.tree.map(
            lambda new, old: jnp.where(ran, new, old.astype(new.dtype)), final_state, initial_state
        )
    return jnp.swapaxes(ys, 0, 1), final_state


def _merge(merge: str, forward: Array, backward: Array) -> Array:
    if merge == "concat":
        return jnp.concatenate([forward, backward], axis=-1)
    return forward + backward


def check_merge(merge: str) -> None:
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; available: {', '.join(MERGES)}")


def bidirectional(
    cell: Cell,
    params: Params,
    xs: Array,
    *,
    backward_cell: Cell | None = None,
    seq_lengths: Array | None = None,
    merge: str = "concat",
    initial_state: tuple[State, State] | None = None,
    **unroll_options: Any,
) -> tuple[Array, tuple[State, State]]:
    """A forward and a backward unroll over the same inputs, merged per step.

    Args:
      cell: the forward cell (also the backward one unless ``backward_cell`` is given).
      params: ``{"forward": params, "backward": params}`` (see :func:`init_layer`).
      xs: ``[B, T, D]``.
      backward_cell: optional different cell for the backward direction.
      seq_lengths: optional ``[B]``; the backward pass starts at each sequence's last valid step.
      merge: ``concat`` (outputs ``[B, T, 2H]``) or ``sum`` (``[B, T, H]``).
      initial_state: optional ``(forward_state, backward_state)``.
      **unroll_options: forwarded to :func:`unroll` (``remat``, ``unroll``, ...).

    Returns:
      ``(outputs, (forward_final_state, backward_final_state))``; the backward final state is
      the state after reading step 0.
    """
    check_merge(merge)
    backward_cell = backward_cell or cell
    fwd_init, bwd_init = initial_state if initial_state is not None else (None, None)
    fwd_out, fwd_final = unroll(
        cell, params["forward"], xs, initial_state=fwd_init, seq_lengths=seq_lengths,
        **unroll_options,
    )  # fmt: skip
    bwd_out, bwd_final = unroll(
        backward_cell, params["backward"], xs, initial_state=bwd_init, seq_lengths=seq_lengths,
        reverse=True, **unroll_options,
    )  # fmt: skip
    return _merge(merge, fwd_out, bwd_out), (fwd_final, bwd_final)


_bidirectional = bidirectional  # ``stacked`` has an argument of the same name


def layer_output_size(cell: Cell, bidirectional: bool, merge: str = "concat") -> int:
    """Feature size of one layer's outputs."""
    return cell.hidden_size * (2 if bidirectional and merge == "concat" else 1)


def init_layer(cell: Cell, key: PRNGKey, input_size: int, *, bidirectional: bool = False) -> Params:
    """Params of one layer: ``cell.init`` or, bidirectional, ``{"forward", "backward"}``."""
    if not bidirectional:
        return cell.init(key, input_size)
    k_fwd, k_bwd = jax.random.split(key)
    return {"forward": cell.init(k_fwd, input_size), "backward": cell.init(k_bwd, input_size)}


def init_stacked(
    cells: Sequence[Cell],
    key: PRNGKey,
    input_size: int,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
) -> list[Params]:
    """Params of a stack: one entry per layer, each layer fed by the previous one's outputs."""
    check_merge(merge)
    params = []
    for cell, layer_key in zip(cells, jax.random.split(key, len(cells)), strict=True):
        params.append(init_layer(cell, layer_key, input_size, bidirectional=bidirectional))
        input_size = layer_output_size(cell, bidirectional, merge)
    return params


# Offsets folded into ``stacked``'s dropout key with the layer index: each regulariser draws
# from its own stream, and the between-layer dropout keeps ``fold_in(key, layer)``.
_RECURRENT_DROPOUT_STREAM = 1_000
_WEIGHT_DROP_STREAM = 2_000


def stacked(
    cells: Sequence[Cell],
    params: Sequence[Params],
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    initial_states: Sequence[State] | None = None,
    bidirectional: bool = False,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    dropout_rng: PRNGKey | None = None,
    residual: bool = False,
    variational_dropout: bool = False,
    recurrent_dropout: float = 0.0,
    weight_drop: float = 0.0,
    **unroll_options: Any,
) -> tuple[Array, list[State]]:
    """Layers of recurrent cells, each reading the previous layer's outputs.

    Args:
      cells: one cell per layer.
      params: one params entry per layer (see :func:`init_stacked`).
      xs: ``[B, T, D]``.
      seq_lengths: optional ``[B]``, applied in every layer.
      initial_states: optional, one per layer (a ``(forward, backward)`` pair if bidirectional).
      bidirectional: every layer bidirectional, merged by ``merge``.
      dropout_rate: inverted dropout on the inputs of layers 2..N (between layers, never on the
        recurrent connections); only applied when ``dropout_rng`` is given.
      dropout_rng: key for dropout; None means deterministic (evaluation).
      residual: add each layer's input to its output for layers 2..N (sizes must match):
        ``x_{l+1} = layer_l(dropout(x_l)) + x_l``, the input added as it was before dropout,
        as in residual LSTM stacks (Wu et al. 2016, GNMT; Kim et al. 2017), so the identity path
        is never dropped.
      variational_dropout: one dropout mask per sequence, shared by all time steps ("locked"
        dropout, Gal & Ghahramani 2016), instead of a fresh mask per step.
      recurrent_dropout: dropout on every layer's recurrent connections, one ``[B, H]`` mask
        per sequence and layer (and direction) shared by all steps
        (:func:`recur.regularizers.recurrent_dropout_cell`); only with ``dropout_rng``. Runs
        step by step with autodiff: ``fused=True`` is refused.
      weight_drop: DropConnect on every layer's recurrent weight matrix, one mask per call
        (:func:`recur.regularizers.weight_drop`); only with ``dropout_rng``.
      **unroll_options: forwarded to :func:`unroll`.

    Returns:
      ``(outputs of the last layer, [final state of each layer])``.
    """
    if len(cells) != len(params):
        raise ValueError(f"got {len(cells)} cells but {len(params)} layer params")
    if initial_states is not None and len(initial_states) != len(cells):
        raise ValueError(
            f"initial_states must have {len(cells)} entries, got {len(initial_states)}"
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must lie in [0, 1), got {dropout_rate}")
    regularizers.check_rate("recurrent_dropout", recurrent_dropout)
    regularizers.check_rate("weight_drop", weight_drop)
    drop_recurrent = dropout_rng is not None and recurrent_dropout > 0.0
    if drop_recurrent and unroll_options.get("fused"):
        raise ValueError(
            "recurrent_dropout does not combine with fused=True (recur.fused's backward pass "
            "reads the unmasked state); pass fused=None or False"
        )
    final_states = []
    for layer, (cell, layer_params) in enumerate(zip(cells, params, strict=True)):
        layer_input = xs  # the residual carries it undropped
        backward_cell = None
        if dropout_rng is not None and weight_drop > 0.0:
            key = jax.random.fold_in(dropout_rng, _WEIGHT_DROP_STREAM + layer)
            layer_params = regularizers.weight_drop(layer_params, weight_drop, key)
        if drop_recurrent:
            key = jax.random.fold_in(dropout_rng, _RECURRENT_DROPOUT_STREAM + layer)
            k_fwd, k_bwd = jax.random.split(key)
            masks = [
                regularizers.recurrent_dropout_mask(
                    k, recurrent_dropout, xs.shape[0], cell, xs.dtype
                )  # fmt: skip
                for k in (k_fwd, k_bwd)
            ]
            backward_cell = regularizers.recurrent_dropout_cell(cell, masks[1])
            cell = regularizers.recurrent_dropout_cell(cell, masks[0])
        if layer > 0 and dropout_rng is not None and dropout_rate > 0.0:
            mask_shape = (xs.shape[0], 1, xs.shape[2]) if variational_dropout else xs.shape
            layer_rng = jax.random.fold_in(dropout_rng, layer)
            keep = jax.random.bernoulli(layer_rng, 1.0 - dropout_rate, mask_shape)
            xs = jnp.where(keep, xs / (1 - dropout_rate), 0.0)
        state = None if initial_states is None else initial_states[layer]
        if bidirectional:
            ys, final = _bidirectional(
                cell, layer_params, xs, seq_lengths=seq_lengths, merge=merge, initial_state=state,
                backward_cell=backward_cell, **unroll_options,
            )  # fmt: skip
        else:
            ys, final = unroll(
                cell, layer_params, xs, initial_state=state, seq_lengths=seq_lengths,
                **unroll_options,
            )  # fmt: skip
        if residual and layer > 0:
            if ys.shape != xs.shape:
                raise ValueError(
                    f"residual connections need equal sizes; layer {layer} maps "
                    f"{xs.shape[-1]} features to {ys.shape[-1]}"
                )
            ys = ys + layer_input
        xs = ys
        final_states.append(final)
    return xs, final_states


def stacked_step(
    cells: Sequence[Cell], params: Sequence[Params], states: Sequence[State], x: Array
) -> tuple[list[State], Array]:
    """One time step of a unidirectional stack, for loops that feed outputs back (decoders).

    Args:
      cells: one cell per layer.
      params: one params entry per layer (see :func:`init_stacked`).
      states: the state of each layer before the step.
      x: ``[B, D]`` input of the first layer.

    Returns:
      ``(new states, top layer output [B, H])``.
    """
    new_states = []
    for cell, layer_params, state in zip(cells, params, states, strict=True):
        state, x = cell.step(layer_params, state, cell.project(layer_params, x))
        new_states.append(state)
    return new_states, x
