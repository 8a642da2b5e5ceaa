"""The regularisation toolkit: recurrent dropout, weight drop, embedding and locked dropout, tied
embeddings with a projection, and iterate averaging (NT-ASGD)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_cells import inputs, make, numpy_reference
from test_train import Interrupt, _final_params, _stop_after_checkpoint, smoke

import recur
from experiments.probes import train as probe_train
from recur import cells, models, regularizers
from recur.train import averaging, fit
from recur.train.loop import restore_params

RECURRENT = [("rnn", {"activation": "tanh"}), ("lstm", {}), ("gru", {"variant": "reset_after"})]


@pytest.mark.parametrize(("name", "options"), RECURRENT, ids=lambda x: str(x))
def test_recurrent_dropout_cell_matches_the_numpy_reference(name, options):
    cell, params = make(name, options)
    xs = inputs()
    mask = regularizers.recurrent_dropout_mask(jax.random.key(5), 0.4, xs.shape[0], cell,
                                               jnp.float32)  # fmt: skip
    assert 0 < float((mask == 0).mean()) < 1
    ys, _ = recur.unroll(regularizers.recurrent_dropout_cell(cell, mask), params, xs)
    expected, _, _ = numpy_reference(name, options, params, xs, recurrent_mask=mask)
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-5)
    plain, _, _ = numpy_reference(name, options, params, xs)
    assert np.abs(np.asarray(ys) - plain).max() > 1e-3  # the mask matters


def _identity_relu_stack(rate, *, batch=4, steps=5, hidden=64, bidirectional=False):
    """A ReLU RNN with W_hh = I and no input: from h_0 = 1 it computes h_t = m^t for a mask m
    held fixed over time, so its outputs show the masks the stack drew."""
    cell = cells.get("rnn", hidden, activation="relu")
    layer = cell.init(jax.random.key(0), 1)
    layer = {"w_ih": jnp.zeros_like(layer["w_ih"]), "w_hh": jnp.eye(hidden),
             "b": jnp.zeros(hidden)}  # fmt: skip
    if bidirectional:
        layer = {"forward": layer, "backward": layer}
    ones = cell.initial_state((batch,))._replace(h=jnp.ones((batch, hidden)))
    state = (ones, ones) if bidirectional else ones
    ys, _ = recur.stacked(
        [cell], [layer], jnp.zeros((batch, steps, 1)), initial_states=[state],
        dropout_rng=jax.random.key(3), recurrent_dropout=rate, bidirectional=bidirectional,
    )  # fmt: skip
    return np.asarray(ys)


def test_recurrent_dropout_masks_are_shared_over_time_and_differ_between_sequences():
    rate = 0.5
    ys = _identity_relu_stack(rate)  # [B, T, H]
    first = ys[:, 0]  # the mask: 0 or 1 / (1 - rate)
    assert set(np.unique(first).round(5)) == {0.0, 2.0}
    for t in range(ys.shape[1]):  # the same units dropped at every step: h_t = m^(t + 1)
        np.testing.assert_allclose(ys[:, t], first ** (t + 1), rtol=1e-6)
    kept = first > 0
    assert all((kept[i] != kept[j]).any() for i in range(4) for j in range(i))
    assert 0.3 < 1 - kept.mean() < 0.7
    both = _identity_relu_stack(rate, bidirectional=True)  # each direction its own mask
    forward, backward = both[..., :64], both[..., 64:]
    assert (forward[:, 0] > 0).tolist() != (backward[:, -1] > 0).tolist()
    np.testing.assert_allclose(_identity_relu_stack(0.0), 1.0)  # rate 0: nothing dropped


def test_recurrent_dropout_refusals():
    cell, params = make("lstm", {})
    xs = inputs()
    with pytest.raises(ValueError, match="does not combine with fused=True"):
        recur.stacked([cell], [params], xs, dropout_rng=jax.random.key(0),
                      recurrent_dropout=0.2, fused=True)  # fmt: skip
    for name, options in [("mingru", {}), ("lru", {}), ("gru", {"variant": "reset_before"})]:
        cell = cells.get(name, 4, **options)
        with pytest.raises(ValueError, match=f"needs a cell with a recurrent matmul.*{name}"):
            regularizers.recurrent_dropout_cell(cell, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="recurrent_dropout must lie in"):
        recur.stacked([cell], [params], xs, recurrent_dropout=1.0)
    residual = models.Recurrent(cell="mingru", hidden_size=4, block="residual", weight_drop=0.1)
    with pytest.raises(ValueError, match="apply to block='stack' layers"):
        residual.init(jax.random.key(0), xs)
    with pytest.raises(ValueError, match=r"recurrent weight matrix \(w_hh\).*found b, w"):
        regularizers.weight_drop(cells.get("mingru", 4).init(jax.random.key(0), 3), 0.5,
                                 jax.random.key(1))  # fmt: skip


def test_weight_drop_masks_only_the_recurrent_matrix_once_per_pass():
    cell, params = make("lstm", {}, hidden_size=32)
    dropped = regularizers.weight_drop(params, 0.5, jax.random.key(4))
    for name in ("w_ih", "b"):
        np.testing.assert_array_equal(dropped[name], params[name])
    ratio = np.asarray(dropped["w_hh"] / params["w_hh"])
    assert set(np.unique(ratio.round(5))) == {0.0, 2.0}
    assert 0.4 < (ratio == 0).mean() < 0.6
    both = regularizers.weight_drop({"forward": params, "backward": params}, 0.5,
                                    jax.random.key(4))  # fmt: skip
    assert (both["forward"]["w_hh"] == 0).tolist() != (both["backward"]["w_hh"] == 0).tolist()
    assert regularizers.weight_drop(params, 0.0, jax.random.key(4)) is params
    # One mask for the whole batch and every step: identical sequences stay identical (a
    # recurrent dropout mask, drawn per sequence, separates them).
    xs = jnp.broadcast_to(inputs((1, 7, 5)), (4, 7, 5))
    rngs = {"dropout": jax.random.key(2)}
    for kind, differs in (("weight_drop", False), ("recurrent_dropout", True)):
        layer = models.Recurrent(cell="lstm", hidden_size=32, **{kind: 0.5})
        variables = layer.init(jax.random.key(0), xs)
        train, _ = layer.apply(variables, xs, deterministic=False, rngs=rngs)
        evaluation, _ = layer.apply(variables, xs)
        assert np.abs(np.asarray(train) - np.asarray(evaluation)).max() > 1e-3
        spread = np.abs(np.asarray(train) - np.asarray(train[:1])).max()
        assert (spread > 1e-4) == differs, (kind, spread)


def test_embedding_and_locked_dropout_drop_whole_rows_and_whole_sequences():
    table = jnp.ones((50, 8))
    dropped = np.asarray(regularizers.embedding_dropout(table, 0.5, jax.random.key(0)))
    rows = dropped[:, 0]
    assert set(np.unique(rows)) == {0.0, 2.0}
    np.testing.assert_array_equal(dropped, np.broadcast_to(rows[:, None], dropped.shape))
    xs = jnp.ones((3, 6, 16))
    locked = np.asarray(regularizers.locked_dropout(xs, 0.5, jax.random.key(1)))
    np.testing.assert_array_equal(locked, np.broadcast_to(locked[:, :1], locked.shape))
    assert (locked[0, 0] != locked[1, 0]).any()


def _lm(**fields):
    return models.LanguageModel(vocab_size=40, embed_size=16, hidden_size=16, num_layers=2,
                                **fields)  # fmt: skip


def test_language_model_rates_zero_is_the_model_of_before_and_each_rate_acts():
    tokens = jnp.arange(30).reshape(3, 10) % 40
    rngs = {"dropout": jax.random.key(7)}
    base = _lm(dropout_rate=0.3, variational_dropout=True)
    variables = base.init(jax.random.key(0), tokens)
    reference, _ = base.apply(variables, tokens, deterministic=False, rngs=rngs)
    spelled_out = _lm(dropout_rate=0.3, variational_dropout=True, input_dropout=0.3,
                      output_dropout=0.3, embed_dropout=0.0, recurrent_dropout=0.0,
                      weight_drop=0.0)  # fmt: skip
    same, _ = spelled_out.apply(variables, tokens, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(same, reference)
    plain = _lm()
    train, _ = plain.apply(variables, tokens, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(train, plain.apply(variables, tokens)[0])
    for field in ("input_dropout", "output_dropout", "embed_dropout", "recurrent_dropout",
                  "weight_drop"):  # fmt: skip
        model = _lm(**{field: 0.4})
        dropped, _ = model.apply(variables, tokens, deterministic=False, rngs=rngs)
        assert np.abs(np.asarray(dropped) - np.asarray(train)).max() > 1e-3, field
        np.testing.assert_array_equal(model.apply(variables, tokens)[0], train)  # eval: none
    with pytest.raises(ValueError, match="embed_dropout must lie in"):
        _lm(embed_dropout=1.5).init(jax.random.key(0), tokens)


def test_tied_embeddings_with_a_projection_when_sizes_differ():
    tokens = jnp.arange(12).reshape(2, 6) % 40
    model = models.LanguageModel(vocab_size=40, embed_size=8, hidden_size=24, num_layers=1,
                                 tie_embeddings=True)  # fmt: skip
    params = dict(model.init(jax.random.key(0), tokens)["params"])
    assert "head" not in params and params["projection"]["kernel"].shape == (24, 8)
    params["output_bias"] = jax.random.normal(jax.random.key(1), (40,))  # the decoder's own
    logits, _ = model.apply({"params": params}, tokens)
    untied = models.LanguageModel(vocab_size=40, embed_size=8, hidden_size=24, num_layers=1)
    hidden, _ = models.Recurrent(cell="lstm", hidden_size=24).apply(
        {"params": params["recurrent"]}, jnp.take(params["embed"]["embedding"], tokens, axis=0)
    )
    expected = hidden @ params["projection"]["kernel"] @ params["embed"]["embedding"].T
    expected = expected + params["output_bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    count = sum(x.size for x in jax.tree.leaves(params))
    untied_count = sum(x.size for x in jax.tree.leaves(untied.init(jax.random.key(0), tokens)))
    assert untied_count - count == 24 * 40 - 24 * 8  # head's kernel out, projection in


def test_averaging_switches_on_the_non_monotone_trigger_and_averages_the_iterates():
    lr, patience, w0 = 0.1, 2, np.array([4.0, -2.0])
    tx = averaging.averaged(optax.sgd(lr), patience)
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)

    class Holder:  # the fields record_validation reads and replaces
        def __init__(self, params, opt_state, step):
            self.params, self.opt_state, self.step = params, opt_state, step

        def replace(self, opt_state):
            return Holder(self.params, opt_state, self.step)

    # Losses 5, 3, 4, 3.5, 4.5: at 4.5 the best before the last two (5, 3) is 3 -> switch.
    fired = []
    holder = Holder(params, state, 0)
    for loss in [5.0, 3.0, 4.0, 3.5, 4.5]:
        holder = averaging.record_validation(holder, loss)
        fired.append(bool(averaging.find(holder.opt_state).active))
    assert fired == [False, False, False, False, True]
    state, iterates = holder.opt_state, []
    np.testing.assert_array_equal(averaging.eval_params(Holder(params, state, 0))["w"], w0)
    w = params
    for _ in range(6):  # gradient of |w|^2 / 2 is w: w_k = (1 - lr)^k w_0
        updates, state = tx.update(w, state, w)
        w = optax.apply_updates(w, updates)
        iterates.append(np.asarray(w["w"]))
    expected = np.mean([w0 * (1 - lr) ** k for k in range(1, 7)], axis=0)
    np.testing.assert_allclose(np.mean(iterates, axis=0), expected, rtol=1e-6)
    np.testing.assert_allclose(averaging.eval_params(Holder(w, state, 6))["w"], expected,
                               rtol=1e-6)  # fmt: skip
    assert int(state.count) == 6
    # Before the switch the "average" is the params themselves.
    fresh = tx.init(params)
    updates, fresh = tx.update(params, fresh, params)
    np.testing.assert_allclose(fresh.average["w"], w0 * (1 - lr), rtol=1e-6)
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        averaging.averaged(optax.sgd(lr), 0)


def _rising_eval_task(config):
    """The adding smoke task whose held-out loss grows with the step evaluated at (targets
    shifted by 0.5 per step), so the averaging trigger fires at a known evaluation."""
    task = probe_train.build_task(config)
    train_batch, eval_batches, seen = task.train_batch, task.eval_batches, [0]

    def tracked(step):
        seen[0] = step
        return train_batch(step)

    def shifted():
        return [{**b, "targets": b["targets"] + 0.5 * seen[0]} for b in eval_batches()]

    task.train_batch, task.eval_batches = tracked, shifted
    return task


def test_fit_switches_to_averaging_and_resumes_mid_averaging_exactly(tmp_path, capsys):
    config = smoke(num_steps=12, eval_every=2, checkpoint_every=3, log_every=3)
    config.optim.update(name="sgd", learning_rate=0.05, averaging=True, nonmono=1)
    whole = fit(config, tmp_path / "whole", _rising_eval_task(config))
    # Evaluations at steps 2, 4, 6: at 6 the loss exceeds the one at 2 -> average from 7 on.
    assert "averaging the params from step 7 on" in capsys.readouterr().out
    assert whole["averaging"] == {"from_step": 7, "iterates": 6}
    with pytest.raises(Interrupt):  # stops after the checkpoint at step 9, mid-averaging
        fit(config, tmp_path / "run", _stop_after_checkpoint(_rising_eval_task(config), 9))
    resumed = fit(config, tmp_path / "run", _rising_eval_task(config))
    assert resumed["resumed_from_step"] == 9 and resumed["averaging"] == whole["averaging"]
    assert resumed["eval"] == whole["eval"]
    a, b = _final_params(config, tmp_path / "whole"), _final_params(config, tmp_path / "run")
    jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
    averaged = restore_params(config, tmp_path / "whole", probe_train.build_task(config))
    differ = jax.tree.map(lambda x, y: np.abs(np.asarray(x) - np.asarray(y)).max(), averaged,
                          a[1])  # fmt: skip
    assert max(jax.tree.leaves(differ)) > 0  # evaluation reads the average, not the params
    last = restore_params(config, tmp_path / "whole", probe_train.build_task(config),
                          averaged=False)  # fmt: skip
    jax.tree.map(np.testing.assert_array_equal, last, a[1])  # ... unless asked for the iterate


def test_weight_drop_gradients_through_the_fused_path_equal_autodiff():
    xs = inputs((4, 9, 5))
    rngs = {"dropout": jax.random.key(2)}
    grads = []
    for fused in (True, False):
        layer = models.Recurrent(cell="lstm", hidden_size=8, num_layers=2, weight_drop=0.5,
                                 fused=fused)  # fmt: skip
        params = layer.init(jax.random.key(1), xs)["params"]

        def loss(params, layer=layer):
            ys, _ = layer.apply({"params": params}, xs, deterministic=False, rngs=rngs)
            return jnp.sum(ys**2)

        grads.append(jax.grad(loss)(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)
    dropped = np.asarray(grads[0]["layer_0"]["w_hh"]) == 0  # dropped weights get no gradient
    assert 0.3 < dropped.mean() < 0.7
