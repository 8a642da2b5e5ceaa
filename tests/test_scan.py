"""Unrolling: variable lengths, reverse, bidirectional, stacking, state carry, remat, errors."""

import functools
import json
import pathlib
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from test_cells import CELLS_UNDER_TEST, IDS, inputs, make, python_loop

import recur
from recur import cells

B, T, D, H = 3, 7, 5, 6
LENGTHS = jnp.array([7, 4, 1])


def close(a, b, tol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_padded_batch_equals_each_sequence_alone(name, options, reverse):
    cell, params = make(name, options)
    xs = inputs()
    outputs, final = recur.unroll(cell, params, xs, seq_lengths=LENGTHS, reverse=reverse)
    for b, length in enumerate(LENGTHS.tolist()):
        alone_out, alone_final = recur.unroll(cell, params, xs[b : b + 1, :length], reverse=reverse)
        close(outputs[b, :length], alone_out[0])
        np.testing.assert_array_equal(outputs[b, length:], 0.0)  # padded steps output zeros
        close(jax.tree.map(lambda s, b=b: s[b], final), jax.tree.map(lambda s: s[0], alone_final))


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST[::3], ids=IDS[::3])
def test_reverse_equals_loop_over_flipped_inputs(name, options):
    cell, params = make(name, options)
    xs = inputs()
    outputs, final = recur.unroll(cell, params, xs, reverse=True)
    loop_out, loop_final = python_loop(cell, params, xs[:, ::-1])
    close(outputs, loop_out[:, ::-1])
    close(final, loop_final)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_against_explicit_flips(merge):
    cell = cells.gru(H)
    params = recur.init_layer(cell, jax.random.key(0), D, bidirectional=True)
    xs = inputs()
    outputs, (fwd_final, bwd_final) = recur.bidirectional(
        cell, params, xs, seq_lengths=LENGTHS, merge=merge
    )
    assert outputs.shape == (B, T, 2 * H if merge == "concat" else H)
    for b, length in enumerate(LENGTHS.tolist()):
        seq = xs[b : b + 1, :length]
        fwd, fwd_state = python_loop(cell, params["forward"], seq)
        bwd, bwd_state = python_loop(cell, params["backward"], seq[:, ::-1])
        bwd = bwd[:, ::-1]  # re-align the backward outputs with the inputs
        want = jnp.concatenate([fwd, bwd], -1) if merge == "concat" else fwd + bwd
        close(outputs[b, :length], want[0])
        close(fwd_final.h[b], fwd_state.h[0])
        close(bwd_final.h[b], bwd_state.h[0])


def test_carrying_state_equals_running_the_concatenation():
    cell, params = make("lstm", {})
    xs = inputs((B, 12, D))
    whole, whole_final = recur.unroll(cell, params, xs)
    first, state = recur.unroll(cell, params, xs[:, :5])
    second, final = recur.unroll(cell, params, xs[:, 5:], initial_state=state)
    close(jnp.concatenate([first, second], 1), whole)
    close(final, whole_final)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_remat_and_unroll_factor_keep_values_and_gradients(name):
    cell, params = make(name, {})
    xs = inputs()

    def loss(params, **options):
        outputs, _ = recur.unroll(cell, params, xs, seq_lengths=LENGTHS, **options)
        return jnp.sum(jnp.sin(outputs))

    value, grads = jax.value_and_grad(loss)(params)
    for options in ({"remat": True}, {"unroll": 3}, {"hoist_projection": True}):
        other_value, other_grads = jax.value_and_grad(lambda p, o=options: loss(p, **o))(params)
        close(other_value, value)
        close(other_grads, grads)


def test_no_recompilation_on_second_call():
    cell, params = make("lstm", {})
    run = jax.jit(lambda p, x, n: recur.unroll(cell, p, x, seq_lengths=n))
    run(params, inputs(), LENGTHS)
    run(params, inputs(seed=5), jnp.array([2, 2, 2]))
    assert run._cache_size() == 1


def test_stacked_layers_dropout_and_residual():
    cell = cells.lstm(H)
    stack = [cell] * 3
    params = recur.init_stacked(stack, jax.random.key(0), D, bidirectional=True)
    xs = inputs()
    outputs, finals = recur.stacked(stack, params, xs, seq_lengths=LENGTHS, bidirectional=True)
    assert outputs.shape == (B, T, 2 * H) and len(finals) == 3
    # Layer by layer by hand gives the same.
    ys = xs
    for layer_params in params:
        ys, _ = recur.bidirectional(cell, layer_params, ys, seq_lengths=LENGTHS)
    close(outputs, ys)
    # Dropout only with a key; with one, outputs change and depend on the key.
    rng = jax.random.key(1)
    dropped, _ = recur.stacked(
        stack, params, xs, bidirectional=True, dropout_rate=0.5, dropout_rng=rng
    )
    assert not np.allclose(dropped, recur.stacked(stack, params, xs, bidirectional=True)[0])
    again, _ = recur.stacked(
        stack, params, xs, bidirectional=True, dropout_rate=0.5, dropout_rng=rng
    )
    close(dropped, again)
    # Residual: layer 2's input is added to its output.
    uni = [cell] * 2
    uni_params = recur.init_stacked(uni, jax.random.key(2), H)
    xs_h = inputs((B, T, H))
    res, _ = recur.stacked(uni, uni_params, xs_h, residual=True)
    first, _ = recur.unroll(cell, uni_params[0], xs_h)
    second, _ = recur.unroll(cell, uni_params[1], first)
    close(res, first + second)
    # With dropout the residual adds layer 2's input as it was before dropout: with layer 2
    # deaf to its input (w_ih = 0), the stack's output is layer 1's plus layer 2's on zeros.
    deaf = [uni_params[0], {**uni_params[1], "w_ih": jnp.zeros_like(uni_params[1]["w_ih"])}]
    res, _ = recur.stacked(uni, deaf, xs_h, residual=True, dropout_rate=0.5, dropout_rng=rng)
    on_zeros, _ = recur.unroll(cell, deaf[1], jnp.zeros_like(xs_h))
    close(res, first + on_zeros)


def test_variational_dropout_shares_mask_over_time():
    cell = cells.rnn(H)
    stack = [cell] * 2
    params = recur.init_stacked(stack, jax.random.key(0), D)
    # Identity-like second layer input check: zeroed features are zero at every step.
    xs = jnp.ones((B, T, D))
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.key(3), 1), 0.5, (B, 1, H))
    first, _ = recur.unroll(cell, params[0], xs)
    want, _ = recur.unroll(cell, params[1], jnp.where(keep, first / 0.5, 0.0))
    got, _ = recur.stacked(
        stack, params, xs, dropout_rate=0.5, dropout_rng=jax.random.key(3),
        variational_dropout=True,
    )  # fmt: skip
    close(got, want)


def test_stacked_step_equals_stacked_unroll():
    stack = [cells.gru(H)] * 2
    params = recur.init_stacked(stack, jax.random.key(0), D)
    xs = inputs()
    outputs, finals = recur.stacked(stack, params, xs)
    states = [c.initial_state((B,)) for c in stack]
    ys = []
    for t in range(T):
        states, y = recur.stacked_step(stack, params, states, xs[:, t])
        ys.append(y)
    close(jnp.stack(ys, 1), outputs)
    close(states, finals)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"xs": jnp.ones((T, D))}, r"xs must have shape \[B, T, D\] \(rank 3\), got shape \(7, 5\)"),
        ({"xs": jnp.ones((B, 0, D))}, "at least one time step"),
        ({"seq_lengths": jnp.array([7, 0, 1])}, r"seq_lengths must lie in \[1, T\] = \[1, 7\], got \[0\]"),
        ({"seq_lengths": jnp.array([8, 1, 1])}, r"got \[8\]"),
        ({"seq_lengths": jnp.array([1, 1])}, r"seq_lengths must have shape \[B\] = \(3,\), got \(2,\)"),
        ({"seq_lengths": jnp.array([1.0, 1.0, 1.0])}, "seq_lengths must be integers"),
    ],
)  # fmt: skip
def test_bad_unroll_input(kwargs, match):
    cell, params = make("lstm", {})
    args = {"xs": inputs(), **kwargs}
    with pytest.raises(ValueError, match=match):
        recur.unroll(cell, params, args.pop("xs"), **args)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_outside_the_sequence_are_clipped_under_jit(reverse, fused):
    # Traced lengths cannot be checked: T + 3 runs all T steps, -2 runs none (initial state,
    # zero outputs), as documented; concrete ones raise (test_bad_unroll_input).
    cell, params = make("lstm", {})
    xs = inputs()
    run = jax.jit(lambda xs, n: recur.unroll(cell, params, xs, seq_lengths=n, reverse=reverse,
                                             fused=fused))  # fmt: skip
    outputs, final = run(xs, jnp.array([T + 3, -2, 2]))
    full, full_final = recur.unroll(cell, params, xs[:1], reverse=reverse, fused=fused)
    close(outputs[:1], full)
    close(jax.tree.map(lambda x: x[:1], final), full_final)
    np.testing.assert_array_equal(outputs[1], 0.0)
    for part in final:
        np.testing.assert_array_equal(part[1], 0.0)
    two, two_final = recur.unroll(cell, params, xs[2:, :2], reverse=reverse, fused=fused)
    close(outputs[2, :2], two[0])
    close(jax.tree.map(lambda x: x[2:], final), two_final)


def test_bad_stack_arguments():
    stack = [cells.lstm(H)] * 2
    params = recur.init_stacked(stack, jax.random.key(0), D)
    with pytest.raises(ValueError, match="unknown merge 'avg'"):
        recur.bidirectional(stack[0], {"forward": params[0], "backward": params[0]}, inputs(),
                            merge="avg")  # fmt: skip
    with pytest.raises(ValueError, match=r"dropout_rate must lie in \[0, 1\), got 1.5"):
        recur.stacked(stack, params, inputs(), dropout_rate=1.5)
    mixed = [cells.lstm(H), cells.lstm(H + 1)]
    mixed_params = recur.init_stacked(mixed, jax.random.key(0), D)
    with pytest.raises(ValueError, match="residual connections need equal sizes; layer 1 maps 6"):
        recur.stacked(mixed, mixed_params, inputs(), residual=True)
    with pytest.raises(ValueError, match="got 2 cells but 1 layer params"):
        recur.stacked(stack, params[:1], inputs())


# (cell, options, optional fields removed): without pointwise_fwd/bwd the custom VJP
# differentiates ``pointwise`` by autodiff; without ``joint`` (and when hoisting the
# projection) it does two matmuls per step; without ``recurrent_cotangent`` the GRU keeps d_r.
FUSED_CELLS = [("rnn", {}, ()), ("rnn", {"activation": "relu"}, ()), ("lstm", {}, ()),
               ("gru", {}, ()), ("rnn", {}, ("pointwise_fwd", "pointwise_bwd")),
               ("lstm", {}, ("pointwise_fwd", "pointwise_bwd")), ("lstm", {}, ("joint",)),
               ("rnn", {}, ("joint",)), ("gru", {}, ("recurrent_cotangent",))]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "removed"), FUSED_CELLS, ids=lambda v: str(v))
def test_fused_backward_equals_autodiff_in_float64(name, options, removed):
    with jax.enable_x64(True):
        cell = cells.get(name, H, param_dtype=jnp.float64, **options)
        cell = cell._replace(**dict.fromkeys(removed))
        params = cell.init(jax.random.key(0), D)
        xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)
        initial = jax.tree.map(lambda s: s + 0.1, cell.initial_state((B,), jnp.float64))
        cotangent = jax.random.normal(jax.random.key(2), (B, T, H), jnp.float64)
        # (reverse, lengths, hoist_projection); the last, reverse and masked, is also checked
        # against finite differences. Hoisting skips the joint matmul: once per cell is enough.
        cases = ((False, None, False), (True, LENGTHS, True)) if not removed else ()
        for reverse, lengths, hoist in (*cases, (True, LENGTHS, False)):

            def loss(params, xs, initial, fused, reverse=reverse, lengths=lengths, hoist=hoist):
                ys, final = recur.unroll(
                    cell, params, xs, initial_state=initial, seq_lengths=lengths,
                    reverse=reverse, fused=fused, hoist_projection=hoist,
                )  # fmt: skip
                return jnp.sum(ys * cotangent) + sum(jnp.sum(s**2) for s in final)

            grad = jax.jit(jax.grad(loss, (0, 1, 2)), static_argnums=3)
            close(grad(params, xs, initial, False), grad(params, xs, initial, True), tol=1e-10)
        # The custom VJP's own gradients against finite differences.
        check = jax.jit(functools.partial(loss, initial=initial, fused=True))
        jax.test_util.check_grads(check, (params, xs), order=1, modes=["rev"])


def test_fused_errors():
    cell, params = make("gru", {"variant": "reset_before"})
    with pytest.raises(ValueError, match="has no recurrent/pointwise split"):
        recur.unroll(cell, params, inputs(), fused=True)
    cell, params = make("lstm", {})
    with pytest.raises(ValueError, match="fused=True does not combine with remat"):
        recur.unroll(cell, params, inputs(), fused=True, remat=True)


def test_default_fused_picks_by_backend_cell_and_size():
    """``fused=None`` takes the hand-written backward where it was measured faster (CPU, LSTM,
    RNN and GRU up to FUSED_MAX_BATCH_ON_CPU) and autodiff elsewhere, or where an option
    excludes it."""
    from recur import scan  # noqa: PLC0415

    assert jax.default_backend() == "cpu"
    assert scan.default_fused(cells.get("lstm", 256), 1)
    assert scan.default_fused(cells.get("rnn", 64, activation="relu"), 4096)
    with mock.patch.dict(scan.FUSED_MAX_BATCH_ON_CPU, {"rnn": 64}):
        assert scan.default_fused(cells.get("rnn", 64), 64)
        assert not scan.default_fused(cells.get("rnn", 64), 65)
    assert scan.default_fused(cells.get("gru", 64), 4096)
    assert not scan.default_fused(cells.get("gru", 64, variant="reset_before"), 8)

    def runs_custom_vjp(name, **options):
        cell, params = make(name, {})
        jaxpr = jax.make_jaxpr(lambda p: recur.unroll(cell, p, inputs(), **options))(params)
        return "custom_vjp" in str(jaxpr)

    assert runs_custom_vjp("lstm") and runs_custom_vjp("rnn") and runs_custom_vjp("gru")
    assert not runs_custom_vjp("lstm", fused=False)
    # remat, unroll and perturbations fall back to autodiff instead of raising.
    assert not runs_custom_vjp("lstm", remat=True) and not runs_custom_vjp("lstm", unroll=2)
    # Forward mode needs fused=False; JAX says so if it meets the custom VJP.
    cell, params = make("lstm", {})
    run = functools.partial(recur.unroll, cell, xs=inputs())
    with pytest.raises(TypeError, match="forward-mode autodiff"):
        jax.jvp(lambda p: run(p)[0], (params,), (params,))
    jax.jvp(lambda p: run(p, fused=False)[0], (params,), (params,))


def test_fused_second_order_matches_autodiff():
    """grad of grad and forward-over-reverse Hessian-vector products go through the custom VJP
    (its backward is ordinary JAX code) and equal those of autodiff, masked, in float64."""
    with jax.enable_x64(True):
        cell = cells.get("lstm", H, param_dtype=jnp.float64)
        params = cell.init(jax.random.key(0), D)
        xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)

        def grad(fused):
            def loss(p):
                ys, _ = recur.unroll(cell, p, xs, seq_lengths=LENGTHS, fused=fused)
                return jnp.sum(jnp.tanh(ys))

            return jax.grad(loss)

        def hvp(fused):
            return jax.jvp(grad(fused), (params,), (params,))[1]

        def grad_of_grad(fused):
            square = lambda p: sum(jnp.sum(g**2) for g in jax.tree.leaves(grad(fused)(p)))  # noqa: E731
            return jax.grad(square)(params)

        for second_order in (hvp, grad_of_grad):
            fused, autodiff = (jax.jit(second_order, static_argnums=0)(f) for f in (True, False))
            close(fused, autodiff, tol=1e-10)


def test_fused_recurrent_module_matches_autodiff():
    from recur.models import Recurrent  # noqa: PLC0415

    xs = inputs()
    grads, outputs = [], []
    for fused in (False, True):
        layer = Recurrent(cell="lstm", hidden_size=H, num_layers=2, bidirectional=True, fused=fused)
        variables = layer.init(jax.random.key(0), xs)

        def loss(variables, layer=layer):
            ys, _ = layer.apply(variables, xs, seq_lengths=LENGTHS)
            return jnp.sum(ys**2), ys

        (_, ys), grad = jax.value_and_grad(loss, has_aux=True)(variables)
        grads.append(grad)
        outputs.append(ys)
    close(*outputs)
    close(*grads, tol=1e-4)


def test_unroll_with_the_batch_split_over_devices():
    # In a process of its own (two JAX CPU devices must exist before JAX starts): lstm, gru and
    # rnn, fused and autodiff, forward (and fused in reverse), padded, under jax.shard_map.
    script = pathlib.Path(__file__).with_name("split_batch_check.py")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cases"] == 9 and report["max_error"] < 1e-5
    # The params' gradient is summed over the devices once, after the scan, not at every step.
    assert report["all_reduce_in_loops"] == 0


LINEAR_CELLS = [(n, o) for n, o in CELLS_UNDER_TEST if cells.get(n, 2, **o).linear is not None]
LINEAR_IDS = [n + ("-positive" if o.get("positive") else "") for n, o in LINEAR_CELLS]


@pytest.mark.parametrize(("name", "options"), LINEAR_CELLS, ids=LINEAR_IDS)
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_parallel_scans_equal_the_sequential_steps(name, options, dtype):
    """The parallel scans (``log`` too, for cells with log-space coefficients), every output
    and final-state field, with and without padding and a carried initial state (nonnegative
    for ``log``), both directions: 1e-10 in float64, 1e-5 in float32 (the issue's targets)."""
    tolerance = 1e-10 if dtype == jnp.float64 else 1e-5
    with jax.enable_x64(dtype == jnp.float64):
        for batch, steps, width in [(3, 7, 5), (2, 33, 6), (1, 1, 6)]:
            cell, params = make(name, options, input_size=width, dtype=dtype)
            xs = inputs((batch, steps, width), dtype=dtype)
            kinds = ["linear", "associative"] + (["log"] if cell.linear.log_coefficients else [])
            state = jax.tree.map(
                lambda s: jax.random.normal(jax.random.key(9), s.shape, s.dtype),
                cell.initial_state((batch,), dtype),
            )
            if "log" in kinds:  # log space needs a nonnegative state
                state = jax.tree.map(jnp.abs, state)
            lengths = jnp.maximum(steps - 3 * jnp.arange(batch), 1)
            unroll = jax.jit(  # one program per case, not one per operation
                functools.partial(recur.unroll, cell), static_argnames=("reverse", "scan_kind")
            )
            for reverse in (False, True):
                for kwargs in ({}, {"seq_lengths": lengths, "initial_state": state}):
                    want = unroll(params, xs, reverse=reverse, scan_kind="sequential", **kwargs)
                    for scan_kind in kinds:
                        got = unroll(params, xs, reverse=reverse, scan_kind=scan_kind, **kwargs)
                        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                            assert a.dtype == b.dtype == dtype
                            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


def test_associative_scan_in_stacks_both_directions_with_remat_and_its_gradients():
    with jax.enable_x64(True):
        cell = cells.get("lru", 4, param_dtype=jnp.float64)
        stack = [cell, cell]
        params = recur.init_stacked(stack, jax.random.key(0), 3, bidirectional=True)
        xs = inputs((2, 9, 3), dtype=jnp.float64)
        lengths = jnp.array([9, 4])

        def loss(params, scan_kind, remat):
            ys, finals = recur.stacked(
                stack, params, xs, seq_lengths=lengths, bidirectional=True, dropout_rate=0.3,
                dropout_rng=jax.random.key(1), scan_kind=scan_kind, remat=remat,
            )  # fmt: skip
            return jnp.sum(ys**2) + sum(jnp.sum(f.h) for pair in finals for f in pair)

        want, want_grad = jax.value_and_grad(loss)(params, "sequential", False)
        for scan_kind, remat in (("associative", True), ("linear", False)):
            got, got_grad = jax.value_and_grad(loss)(params, scan_kind, remat)
            np.testing.assert_allclose(got, want, rtol=1e-10)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                         got_grad, want_grad)  # fmt: skip


@pytest.mark.parametrize("reverse", [False, True])
def test_log_space_scan_gradients_equal_the_sequential_ones(reverse):
    """Padding is log 0 (finite) in log space: -inf made the gradient NaN."""
    with jax.enable_x64(True):
        cell, params = make("mingru", {"positive": True}, dtype=jnp.float64)
        xs = inputs(dtype=jnp.float64)
        lengths = jnp.array([T, 3, 1])

        def loss(params, xs, scan_kind):
            ys, final = recur.unroll(cell, params, xs, seq_lengths=lengths, reverse=reverse,
                                     scan_kind=scan_kind)  # fmt: skip
            return jnp.sum(ys**2) + jnp.sum(jnp.sin(final.h))

        want = jax.grad(loss, argnums=(0, 1))(params, xs, "sequential")
        got = jax.grad(loss, argnums=(0, 1))(params, xs, "log")
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                     got, want)  # fmt: skip


@pytest.mark.parametrize("reverse", [False, True])
def test_associative_scan_clips_lengths_under_jit_like_the_sequential_one(reverse):
    cell, params = make("minlstm", {})
    xs = inputs()
    state = jax.tree.map(lambda s: s + 0.5, cell.initial_state((B,)))
    lengths = jnp.array([0, T + 4, 2])  # outside [1, T]: only possible under jit

    def run(scan_kind):
        return jax.jit(
            lambda n: recur.unroll(
                cell,
                params,
                xs,
                seq_lengths=n,
                initial_state=state,
                reverse=reverse,
                scan_kind=scan_kind,
            )  # fmt: skip
        )(lengths)

    want = run("sequential")
    for got in (run("associative"), run("linear")):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    np.testing.assert_array_equal(got[0][0], 0.0)  # length 0: no output ...
    np.testing.assert_allclose(got[1].h[0], 0.5)  # ... and the initial state


def test_scan_kind_errors():
    cell, params = make("lstm", {})
    with pytest.raises(ValueError, match="scan_kind='associative' needs a cell with a linear"):
        recur.unroll(cell, params, inputs(), scan_kind="associative")
    assert recur.scan.default_scan_kind(cell) == "sequential"
    assert recur.scan.default_scan_kind(cells.get("lru", 3)) == "linear"  # on CPU (measured)
    with pytest.raises(ValueError, match="unknown scan_kind 'parallel'; available: sequential"):
        recur.unroll(cell, params, inputs(), scan_kind="parallel")
    cell, params = make("mingru", {})
    with pytest.raises(ValueError, match="scan_kind='log' needs positive coefficients.*positive"):
        recur.unroll(cell, params, inputs(), scan_kind="log")
    with pytest.raises(ValueError, match="does not combine with perturbations or fused"):
        recur.unroll(cell, params, inputs(), scan_kind="associative", fused=True)
    # Perturbations (the gradient-flow diagnostics) take the sequential path by default.
    zeros = jax.tree.map(lambda s: jnp.zeros((B, T, *s.shape[1:])), cell.initial_state((B,)))
    ys, _ = recur.unroll(cell, params, inputs(), perturbations=zeros)
    np.testing.assert_allclose(ys, recur.unroll(cell, params, inputs())[0], rtol=1e-5, atol=1e-6)
