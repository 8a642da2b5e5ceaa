"""The recurrence with a hand-written backward pass (a custom VJP), as cuDNN organises it.

Autodiff of ``lax.scan`` accumulates the weight gradients inside the backward loop: every step
adds ``h_{t-1}^T dG_t`` (a ``[H, B] @ [B, G]`` product) to a ``[H, G]`` accumulator carried
through the loop, and likewise for the input weights. Here the backward scan carries only the
state cotangent ``dstate`` and stores each step's gate cotangents; the weight gradients are
then one large matmul over all ``T * B`` rows each, and the input cotangents another::

    backward scan, t = T..1:   dx_proj_t, dr_t, dstate_{t-1} = pointwise_vjp(dstate_t, dy_t)
                               dstate_{t-1}.h += dr_t W_hh^T
    after it:                  dW_hh, db_hn = vjp(recurrent)(H_prev [T*B, H], dR [T*B, G])
                               dW_ih, db, dxs = vjp(project)(X [T*B, D], dX_proj [T*B, G])

For cells that give ``Cell.joint`` (``rnn``, ``lstm``: the gates read ``x_proj + r`` only), the
forward step is one matmul ``[x_t, h] [W_ih; W_hh]``, and the backward multiplies by ``W_hh^T``
and ``W_ih^T`` materialised as arrays of their own: XLA:CPU multiplies by a weight read
transposed in place (``dG @ W.T``, an "NT" product) markedly slower: at (B, T, D, H) =
(32, 100, 128, 256), two LSTM programs whose compiled HLO differed only in that took 84 ms (in
place) and 74 ms (materialised) for fwd + bwd (2-core CPU, one run alternating the two).

For cells that give ``Cell.recurrent_cotangent`` (``gru``, whose ``d_r`` differs from
``d_x_proj`` only by the reset gate on the candidate slice), the backward scan stores only
``d_x_proj`` and ``dR`` is computed from it after the scan: at (32, 1000, 128, 256) the GRU's
step needed 361 MiB instead of 455 (autodiff of the scan: 394) and ran faster.

The forward pass is a plain scan that also saves each step's previous state and either the
activations a cell's hand-written ``pointwise_bwd`` needs (``rnn``, ``lstm``, ``gru``: no
recomputation, and for the LSTM 5H numbers per row and step instead of 8H) or, for cells
without one, the projected input and recurrent product, from which autodiff recomputes the
elementwise part.

Works for cells that give ``Cell.recurrent`` and ``Cell.pointwise`` (``rnn``, ``lstm``, ``gru``
with ``reset_after``); :func:`recur.unroll` uses it with ``fused=True``. Gradients equal those of
autodiff (tested in float64).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from recur.cells.base import Cell
from recur.types import Array, Params, State


def _varying_axes(x) -> frozenset:
    """The ``shard_map`` mesh axes ``x`` varies over (empty outside ``shard_map``)."""
    typeof = getattr(jax, "typeof", None)  # older jax: no varying-axis types to match
    if typeof is None:
        return frozenset()
    aval = typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; before it, aval.vma
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def match_varying(tree, like: Array):
    """``tree`` with every leaf marked as varying over the mesh axes ``like`` varies over.

    Inside ``jax.shard_map`` (e.g. a batch split over devices) a scan's carry must vary over
    the same manual axes as its per-step outputs; an initial state of zeros, or a cotangent
    JAX makes up as zeros, does not. Outside ``shard_map`` this returns ``tree`` unchanged.
    """
    axes = _varying_axes(like)

    def cast(leaf):
        missing = tuple(sorted(axes - _varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(cast, tree) if axes else tree


def supports(cell: Cell) -> bool:
    """Whether ``cell`` has the ``recurrent`` / ``pointwise`` split this module needs."""
    return cell.recurrent is not None and cell.pointwise is not None


def _apply_mask(new_state, y, state, valid, masked):
    """Steps where ``valid`` is False keep ``state`` and output zeros."""
    if not masked:
        return new_state, y
    new_state = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_state, state)
    return new_state, jnp.where(valid, y, jnp.zeros_like(y))


def _masked_pointwise(cell: Cell, masked: bool) -> Callable:
    def pointwise(state, x_proj, r, valid):
        new_state, y = cell.pointwise(state, x_proj, r)
        return _apply_mask(new_state, y, state, valid, masked)

    return pointwise


def fused_scan(
    cell: Cell,
    params: Params,
    xs: Array,
    initial_state: State,
    mask: Array | None = None,
    reverse: bool = False,
    hoist_projection: bool = False,
    joint: bool = True,
) -> tuple[Array, State]:
    """Time-major unroll with the custom VJP.

    Args:
      cell: a cell with ``recurrent`` and ``pointwise`` (see :func:`supports`).
      params: its params.
      xs: ``[T, B, D]`` inputs (time-major).
      initial_state: the state before the first step.
      mask: optional ``[T, B, 1]`` bool; False steps keep the state and output zeros.
      reverse: run from ``t = T - 1`` down to 0.
      hoist_projection: compute ``cell.project`` for all steps as one matmul before the scan
        instead of inside each step (the backward is one matmul either way).
      joint: for cells with ``Cell.joint`` (rnn, lstm) and without ``hoist_projection``, one
        matmul of ``[x_t, h]`` per forward step instead of two, and a backward against
        materialised ``W_hh^T`` / ``W_ih^T``. False: the generic path (two matmuls per step,
        autodiff of ``recurrent`` for the backward's).

    Returns:
      ``(ys [T, B, H], final_state)``.
    """
    if not supports(cell):
        raise ValueError(
            f"cell {cell.name!r} has no recurrent/pointwise split; use fused=False "
            "(supported: rnn, lstm, gru with reset_after)"
        )
    masked = mask is not None
    # An argument of the custom VJP (it must not close over traced values), as a float array
    # so that its (zero) cotangent is an ordinary one.
    mask = (jnp.ones((xs.shape[0], xs.shape[1], 1)) if mask is None else mask).astype(xs.dtype)
    pointwise = _masked_pointwise(cell, masked)

    hand_written = cell.pointwise_fwd is not None and cell.pointwise_bwd is not None
    # d_r recomputed from d_x_proj after the backward scan instead of kept for every step.
    d_r_after = hand_written and cell.recurrent_cotangent is not None
    joint = joint and cell.joint is not None and not hoist_projection

    def forward_scan(params, xs, initial_state, mask):
        w, b = cell.joint(params) if joint else (None, None)

        def body(state, inputs):
            x, valid = inputs
            valid = valid > 0  # [B, 1] bool
            if joint:  # the cell's pointwise reads only x_proj + r
                x_proj = jnp.concatenate([x, state.h], axis=-1) @ w + b
                r = jnp.zeros((), x_proj.dtype)
            else:
                x_proj = x if hoist_projection else cell.project(params, x)  # [B, G]
                r = cell.recurrent(params, state)  # [B, G]
            if hand_written:
                new_state, y, residuals = cell.pointwise_fwd(state, x_proj, r)
                new_state, y = _apply_mask(new_state, y, state, valid, masked)
                return new_state, (y, (state, residuals))
            new_state, y = pointwise(state, x_proj, r, valid)
            return new_state, (y, (state, (x_proj, r)))

        inputs = cell.project(params, xs) if hoist_projection else xs
        return jax.lax.scan(body, initial_state, (inputs, mask), reverse=reverse)

    @jax.custom_vjp
    def run(params, xs, initial_state, mask):
        final_state, (ys, _) = forward_scan(params, xs, initial_state, mask)
        return ys, final_state

    def run_fwd(params, xs, initial_state, mask):
        final_state, (ys, saved) = forward_scan(params, xs, initial_state, mask)
        return (ys, final_state), (params, xs, mask, saved)

    def pointwise_backward(state, saved, valid, d_state, d_y):
        """``(d_prev_state, d_x_proj, d_r)`` of one step, by hand or by autodiff."""
        if not hand_written:
            x_proj, r = saved
            _, pullback = jax.vjp(lambda s, xp, rr: pointwise(s, xp, rr, valid), state, x_proj, r)
            return pullback((d_state, d_y))
        if not masked:
            return cell.pointwise_bwd(state, saved, d_state, d_y)
        # A masked step keeps the old state: its cotangent passes straight through.
        zero = jnp.zeros((), d_y.dtype)
        d_prev, d_x_proj, d_r = cell.pointwise_bwd(
            state, saved, jax.tree.map(lambda d: jnp.where(valid, d, zero), d_state),
            jnp.where(valid, d_y, zero),
        )  # fmt: skip
        d_prev = jax.tree.map(lambda a, d: a + jnp.where(valid, zero, d), d_prev, d_state)
        return d_prev, d_x_proj, d_r

    def run_bwd(residuals, cotangents):
        params, xs, mask, (prev_states, saved) = residuals
        d_ys, d_final = cotangents
        shared = []  # whether d_x_proj and d_r are one array (cells that add x_proj and r)
        if joint:
            # W_hh^T and W_ih^T as arrays of their own: XLA:CPU multiplies by a weight read
            # transposed in place (an "NT" product) markedly slower (see the module docstring).
            w = cell.joint(params)[0]  # [D + H, G]
            w_ih_t, w_hh_t = jnp.transpose(w[: xs.shape[-1]]), jnp.transpose(w[xs.shape[-1] :])

        def body(d_state, inputs):
            state, step_saved, valid, d_y = inputs
            d_prev, d_x_proj, d_r = pointwise_backward(state, step_saved, valid > 0, d_state, d_y)
            if joint:  # d_h += d_gates W_hh^T (x_proj + r is all pointwise reads: d_r = d_x_proj)
                d_prev = d_prev._replace(h=d_prev.h + d_x_proj @ w_hh_t)
                shared.append(True)
            else:
                _, recurrent_pullback = jax.vjp(lambda s: cell.recurrent(params, s), state)
                (d_from_r,) = recurrent_pullback(d_r)  # d_r W_hh^T into the state's h
                d_prev = jax.tree.map(jnp.add, d_prev, d_from_r)
                shared.append(d_x_proj is d_r)
            return d_prev, (d_x_proj, None if shared[-1] or d_r_after else d_r)

        d_initial, (d_x_projs, d_rs) = jax.lax.scan(
            body, match_varying(d_final, d_ys), (prev_states, saved, mask, d_ys),
            reverse=not reverse,
        )  # fmt: skip
        if shared[-1]:
            d_rs = d_x_projs
        elif d_r_after:
            d_rs = cell.recurrent_cotangent(saved, d_x_projs)
        # The weight gradients as one matmul over all T * B rows each (as 2-D arrays: XLA:CPU
        # copies and transposes [T, B, ·] operands of a two-axis contraction first).
        rows = xs.shape[0] * xs.shape[1]
        flat = lambda a: a.reshape(rows, *a.shape[2:])  # noqa: E731
        _, project_pullback = jax.vjp(cell.project, params, flat(xs))
        d_params, d_xs = project_pullback(flat(d_x_projs))  # NT: not run with joint
        d_xs = (flat(d_x_projs) @ w_ih_t if joint else d_xs).reshape(xs.shape)
        flat_states = jax.tree.map(flat, prev_states)
        _, recurrent_pullback = jax.vjp(lambda p: cell.recurrent(p, flat_states), params)
        (d_params_r,) = recurrent_pullback(flat(d_rs))
        d_params = jax.tree.map(jnp.add, d_params, d_params_r)
        return d_params, d_xs, d_initial, jnp.zeros_like(mask)

    run.defvjp(run_fwd, run_bwd)
    return run(params, xs, initial_state, mask)
