"""Cells: contract, independent references (NumPy loops, flax.linen cells), gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import recur
from recur import cells

# (name, options): every cell and every variant the library ships.
CELLS_UNDER_TEST = [
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("rnn", {"activation": "leaky_relu"}),
    ("rnn", {"activation": "sigmoid"}),
    ("rnn", {"activation": "relu", "recurrent_init": "identity"}),
    ("lstm", {}),
    ("gru", {"variant": "reset_after"}),
    ("gru", {"variant": "reset_before"}),
    ("mingru", {}),
    ("mingru", {"positive": True}),
    ("minlstm", {}),
    ("lru", {"r_min": 0.5, "r_max": 0.99}),
]
IDS = [f"{name}-{'-'.join(map(str, options.values())) or 'default'}" for name, options in
       CELLS_UNDER_TEST]  # fmt: skip
B, T, D, H = 3, 7, 5, 6


def make(name, options, hidden_size=H, input_size=D, seed=0, dtype=jnp.float32):
    cell = cells.get(name, hidden_size, param_dtype=dtype, **options)
    params = cell.init(jax.random.key(seed), input_size)
    # Random biases, so tests see them (init gives zeros except the forget bias).
    params = {
        k: v + 0.1 * jax.random.normal(jax.random.key(seed + 1), v.shape, dtype)
        if k.startswith("b") else v
        for k, v in params.items()
    }  # fmt: skip
    return cell, params


def inputs(shape=(B, T, D), seed=2, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def python_loop(cell, params, xs, state=None):
    state = cell.initial_state(xs.shape[:1], dtype=xs.dtype) if state is None else state
    outputs = []
    for t in range(xs.shape[1]):
        state, y = cell.step(params, state, cell.project(params, xs[:, t]))
        outputs.append(y)
    return jnp.stack(outputs, axis=1), state


# -- independent NumPy references (float64, written from the papers' equations) --------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NP_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "sigmoid": _sigmoid,
}


def numpy_reference(name, options, params, xs, recurrent_mask=None):
    """``recurrent_mask [B, H]`` (rnn, lstm, gru): Gal & Ghahramani's dropout, ``h ⊙ mask``
    in the recurrent matmuls only."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mask = 1.0 if recurrent_mask is None else np.asarray(recurrent_mask, np.float64)
    xs = np.asarray(xs, np.float64)
    h = np.zeros((xs.shape[0], H))
    c = np.zeros((xs.shape[0], H))
    outputs = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        if name == "rnn":
            h = NP_ACTIVATIONS[options["activation"]](
                x @ p["w_ih"] + p["b"] + (h * mask) @ p["w_hh"]
            )
        elif name == "lstm":
            w_i, w_f, w_g, w_o = np.split(p["w_ih"], 4, axis=1)
            u_i, u_f, u_g, u_o = np.split(p["w_hh"], 4, axis=1)
            b_i, b_f, b_g, b_o = np.split(p["b"], 4)
            i = _sigmoid(x @ w_i + (h * mask) @ u_i + b_i)
            f = _sigmoid(x @ w_f + (h * mask) @ u_f + b_f)
            g = np.tanh(x @ w_g + (h * mask) @ u_g + b_g)
            o = _sigmoid(x @ w_o + (h * mask) @ u_o + b_o)
            c = f * c + i * g
            h = o * np.tanh(c)
        elif name == "mingru":  # Feng et al. 2024, eqs. of Section 3.1
            w_z, w_h = np.split(p["w"], 2, axis=1)
            b_z, b_h = np.split(p["b"], 2)
            z = _sigmoid(x @ w_z + b_z)
            candidate = x @ w_h + b_h
            if options.get("positive"):  # g(x) of the paper's log-space version (Section 3.1)
                candidate = np.where(candidate >= 0, candidate + 0.5, _sigmoid(candidate))
            h = (1 - z) * h + z * candidate
        elif name == "minlstm":  # Section 3.2, length-independent (normalised gates)
            w_f, w_i, w_h = np.split(p["w"], 3, axis=1)
            b_f, b_i, b_h = np.split(p["b"], 3)
            f, i = _sigmoid(x @ w_f + b_f), _sigmoid(x @ w_i + b_i)
            h = f / (f + i) * h + i / (f + i) * (x @ w_h + b_h)
        elif name == "lru":  # Orvieto et al. 2023, eqs. (1) and Section 3
            lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
            if t == 0:
                state = np.zeros((xs.shape[0], len(lam)), complex)
            bu = x @ (p["b_re"] + 1j * p["b_im"])
            state = lam * state + np.exp(p["gamma_log"]) * bu
            skip = x * p["d"] if p["d"].ndim == 1 else x @ p["d"]
            h = (state @ (p["c_re"] + 1j * p["c_im"])).real + skip
        else:
            w_r, w_z, w_n = np.split(p["w_ih"], 3, axis=1)
            u_r, u_z, u_n = np.split(p["w_hh"], 3, axis=1)
            b_r, b_z, b_n = np.split(p["b"], 3)
            r = _sigmoid(x @ w_r + (h * mask) @ u_r + b_r)
            z = _sigmoid(x @ w_z + (h * mask) @ u_z + b_z)
            if options["variant"] == "reset_after":
                n = np.tanh(x @ w_n + b_n + r * ((h * mask) @ u_n + p["b_hn"]))
            else:
                n = np.tanh(x @ w_n + b_n + (r * h * mask) @ u_n)
            h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(name, options, dtype):
    cell, params = make(name, options, dtype=dtype)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    outputs, final = recur.unroll(cell, params, inputs(dtype=dtype))
    assert outputs.shape == (B, T, H) and outputs.dtype == dtype
    assert final.h.shape == (B, H) and final.h.dtype == dtype
    assert set(final._fields) >= {"h"}
    step_state, y = cell.step(
        params, cell.initial_state((2, 4)), cell.project(params, jnp.ones((2, 4, D), dtype))
    )
    assert y.shape == (2, 4, H) and step_state.h.shape == (2, 4, H)


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
@pytest.mark.parametrize("hoist", [True, False])
def test_unroll_equals_python_loop(name, options, hoist):
    cell, params = make(name, options)
    xs = inputs()
    outputs, final = recur.unroll(cell, params, xs, hoist_projection=hoist)
    expected_outputs, expected_final = python_loop(cell, params, xs)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-5, atol=1e-5)
    for got, want in zip(final, expected_final, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
def test_matches_numpy_reference(name, options):
    with jax.enable_x64(True):
        cell, params = make(name, options, dtype=jnp.float64)
        xs = inputs(dtype=jnp.float64)
        outputs, final = recur.unroll(cell, params, xs)
        ref_outputs, ref_h, ref_c = numpy_reference(name, options, params, xs)
    np.testing.assert_allclose(outputs, ref_outputs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final.h, ref_h, rtol=1e-10, atol=1e-12)
    if name == "lstm":
        np.testing.assert_allclose(final.c, ref_c, rtol=1e-10, atol=1e-12)


def test_lstm_matches_flax_lstm_cell():
    cell, params = make("lstm", {})
    xs = inputs()
    flax_cell = nn.LSTMCell(H)
    carry = flax_cell.initialize_carry(jax.random.key(0), (B, D))
    w_i = np.split(np.asarray(params["w_ih"]), 4, axis=1)
    w_h = np.split(np.asarray(params["w_hh"]), 4, axis=1)
    bias = np.split(np.asarray(params["b"]), 4)
    flax_params = {}
    for gate, wi, wh, b in zip("ifgo", w_i, w_h, bias, strict=True):
        flax_params[f"i{gate}"] = {"kernel": wi}
        flax_params[f"h{gate}"] = {"kernel": wh, "bias": b}
    expected = []
    for t in range(T):
        carry, y = flax_cell.apply({"params": flax_params}, carry, xs[:, t])
        expected.append(y)
    outputs, final = recur.unroll(cell, params, xs)
    np.testing.assert_allclose(outputs, jnp.stack(expected, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.c, carry[0], rtol=1e-5, atol=1e-6)


def test_gru_reset_after_matches_flax_gru_cell():
    cell, params = make("gru", {"variant": "reset_after"})
    xs = inputs()
    flax_cell = nn.GRUCell(H)
    w_i = np.split(np.asarray(params["w_ih"]), 3, axis=1)
    w_h = np.split(np.asarray(params["w_hh"]), 3, axis=1)
    bias = np.split(np.asarray(params["b"]), 3)
    flax_params = {}
    for gate, wi, wh, b in zip("rzn", w_i, w_h, bias, strict=True):
        flax_params[f"i{gate}"] = {"kernel": wi, "bias": b}
        flax_params[f"h{gate}"] = {"kernel": wh}
    flax_params["hn"]["bias"] = np.asarray(params["b_hn"])
    carry = jnp.zeros((B, H))
    expected = []
    for t in range(T):
        carry, y = flax_cell.apply({"params": flax_params}, carry, xs[:, t])
        expected.append(y)
    outputs, _ = recur.unroll(cell, params, xs)
    np.testing.assert_allclose(outputs, jnp.stack(expected, 1), rtol=1e-5, atol=1e-6)


def test_gru_variants_differ():
    """The two GRU forms are different functions of the same weights (guards a mix-up)."""
    after, params = make("gru", {"variant": "reset_after"})
    before = cells.gru(H, variant="reset_before")
    xs = inputs()
    out_after, _ = recur.unroll(after, params, xs)
    out_before, _ = recur.unroll(before, {k: v for k, v in params.items() if k != "b_hn"}, xs)
    assert not np.allclose(out_after, out_before, atol=1e-3)


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
def test_check_grads_float64(name, options):
    with jax.enable_x64(True):
        cell, params = make(name, options, hidden_size=4, input_size=3, dtype=jnp.float64)
        xs = inputs((2, 5, 3), dtype=jnp.float64)
        lengths = jnp.array([5, 3])

        def loss(params, xs):
            outputs, final = recur.unroll(cell, params, xs, seq_lengths=lengths)
            return jnp.sum(outputs**2) + jnp.sum(final.h)

        check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), CELLS_UNDER_TEST, ids=IDS)
def test_split_step_and_hand_written_backward_match_autodiff(name, options):
    with jax.enable_x64(True):
        cell, params = make(name, options, dtype=jnp.float64)
        if cell.pointwise is None:
            assert cell.recurrent is None and cell.pointwise_bwd is None
            return
        keys = jax.random.split(jax.random.key(3), 4)
        state = jax.tree.map(
            lambda s: jax.random.normal(keys[0], s.shape, s.dtype), cell.initial_state((B,))
        )
        x = inputs((B, D), dtype=jnp.float64)
        x_proj = cell.project(params, x)
        r = cell.recurrent(params, state)
        new_state, y = cell.pointwise(state, x_proj, r)
        step_state, step_y = cell.step(params, state, x_proj)
        np.testing.assert_allclose(y, step_y, rtol=1e-12)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), new_state,
                     step_state)  # fmt: skip
        if cell.joint is not None:  # one matmul of [x, h], and pointwise reads only the sum
            w, b = cell.joint(params)
            np.testing.assert_allclose(
                jnp.concatenate([x, state.h], axis=-1) @ w + b, x_proj + r, rtol=1e-12
            )
            _, joint_y = cell.pointwise(state, x_proj + r, jnp.zeros((), r.dtype))
            np.testing.assert_allclose(joint_y, y, rtol=1e-12)
        if cell.pointwise_bwd is None:
            return
        fwd_state, fwd_y, residuals = cell.pointwise_fwd(state, x_proj, r)
        np.testing.assert_allclose(fwd_y, y, rtol=1e-12)
        d_state = jax.tree.map(lambda s: jax.random.normal(keys[1], s.shape, s.dtype), state)
        d_y = jax.random.normal(keys[2], y.shape, y.dtype)
        _, pullback = jax.vjp(cell.pointwise, state, x_proj, r)
        expected = pullback((d_state, d_y))
        got = cell.pointwise_bwd(state, residuals, d_state, d_y)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
                     got, expected)  # fmt: skip
        if cell.recurrent_cotangent is not None:  # d_r rebuilt from d_x_proj and the residuals
            d_r = cell.recurrent_cotangent(residuals, got[1])
            np.testing.assert_allclose(d_r, got[2], rtol=1e-12, atol=1e-14)


def test_lstm_forget_bias_and_initialisers():
    cell = cells.lstm(H, forget_bias=1.0)
    params = cell.init(jax.random.key(0), D)
    np.testing.assert_array_equal(params["b"][H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(np.asarray(params["b"]), np.s_[H : 2 * H]), 0.0)
    for block in np.split(np.asarray(params["w_hh"]), 4, axis=1):  # each gate block orthogonal
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    irnn = cells.rnn(H, activation="relu", recurrent_init="identity")
    np.testing.assert_array_equal(irnn.init(jax.random.key(0), D)["w_hh"], np.eye(H))
    assert cells.lstm(H, forget_bias=0.0).init(jax.random.key(0), D)["b"].sum() == 0


def test_get_and_registry():
    assert {"rnn", "lstm", "gru", "mingru", "minlstm", "lru"} <= set(cells.available())
    assert cells.get("gru", 4, variant="reset_before").name == "gru_reset_before"
    with pytest.raises(
        ValueError, match=r"unknown cell 'lstn'.*gru, lru, lstm, mingru, minlstm, rnn"
    ):
        cells.get("lstn", 4)
    # A name registered twice is an error, unless the replacement is asked for.
    with pytest.raises(ValueError, match=r"a cell named 'lstm' is registered already"):
        cells.register("lstm")(lambda hidden_size: cells.rnn(hidden_size))
    assert cells.get("lstm", 4).name == "lstm"
    original = cells.lstm
    try:
        cells.register("lstm", replace=True)(lambda hidden_size: cells.rnn(hidden_size))
        assert cells.get("lstm", 4).name.startswith("rnn")
    finally:
        cells.register("lstm", replace=True)(original)
    assert cells.get("lstm", 4).name == "lstm"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: cells.rnn(4, activation="softplus"), "unknown activation 'softplus'.*tanh"),
        (lambda: cells.gru(4, variant="minimal"), "unknown GRU variant 'minimal'"),
        (lambda: cells.lstm(0), "hidden_size must be a positive integer, got 0"),
        (lambda: cells.rnn(-3), "hidden_size must be a positive integer, got -3"),
        (lambda: cells.lstm(4).init(jax.random.key(0), 0), "input_size must be a positive"),
        (lambda: cells.lstm(4, recurrent_init="eye"), "unknown recurrent_init 'eye'"),
    ],
)
def test_bad_cell_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("block", ["stack", "residual"])
def test_stack_param_count_is_the_models_count(block):
    """The analytic count against a real SequenceClassifier on features (adding's shape)."""
    from recur import models  # noqa: PLC0415

    for name, hidden in (("mingru", 7), ("lru", 2), ("lstm", 5)):
        model = models.SequenceClassifier(num_classes=1, cell=name, hidden_size=hidden,
                                          num_layers=2, block=block)  # fmt: skip
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 2)))
        want = recur.count_params(shapes)
        assert recur.stack_param_count(name, hidden, 2, 1, num_layers=2, block=block) == want


def test_probes_match_residual_stacks_to_the_lstm_stack():
    from experiments.probes import config as probe_config  # noqa: PLC0415
    from experiments.probes import train as probe_train  # noqa: PLC0415

    config = probe_config.get_config("task=adding,cell=mingru,hidden=32")
    config.model.num_layers, config.model.block = 3, "residual"
    size = probe_train.hidden_size(config, 2, 1)
    budget = recur.stack_param_count("lstm", 32, 2, 1, num_layers=3)
    counts = [recur.stack_param_count("mingru", h, 2, 1, num_layers=3, block="residual")
              for h in (size - 1, size, size + 1)]  # fmt: skip
    assert abs(counts[1] - budget) == min(abs(c - budget) for c in counts)
    assert abs(counts[1] - budget) / budget < 0.05


def test_count_params_and_matched_sizes():
    lstm = cells.lstm(10).init(jax.random.key(0), 3)
    assert recur.count_params(lstm) == 4 * (3 * 10 + 10 * 10 + 10)
    gru = cells.gru(10).init(jax.random.key(0), 3)
    assert recur.count_params(gru) == 3 * (3 * 10 + 10 * 10 + 10) + 10
    sizes = recur.matched_hidden_sizes(
        ["rnn", "lstm", "gru"], input_size=2, output_size=1, reference_hidden_size=128
    )
    assert sizes["lstm"] == 128 and sizes["rnn"] > sizes["gru"] > sizes["lstm"]
    budget = recur.cell_param_count("lstm", 128, 2, 1)
    for name, size in sizes.items():
        count = recur.cell_param_count(name, size, 2, 1)
        step = recur.cell_param_count(name, size + 1, 2, 1) - count
        assert abs(count - budget) <= step  # the closest hidden size, within one unit
