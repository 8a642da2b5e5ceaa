"""Dynamic evaluation (recur.train.dynamic_eval): the scan equals a Python loop of "score the
window, then step", a zero step is the static evaluation, adapting helps on repeated text."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.lm import train
from recur import models
from recur.train import dynamic_eval

V = 9
MODEL = models.LanguageModel(vocab_size=V, embed_size=6, hidden_size=8, num_layers=2)
PARAMS = MODEL.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))["params"]
LOSS = train.window_loss_for(MODEL)
GRAD = jax.jit(jax.value_and_grad(LOSS, has_aux=True))  # one window's loss and gradient


def windows(ids, batch_size=2, bptt=4):
    return train.padded_windows(np.asarray(ids, np.int32), batch_size, bptt)


def reference(params, ws, learning_rate, decay, ms=None, epsilon=1e-5):
    """The update rules written out per window with jax.grad, in a Python loop (NumPy
    arithmetic for the update)."""
    theta0 = jax.tree.map(np.asarray, params)
    theta, carry, total, count = theta0, MODEL.initial_states(ws[0]["inputs"].shape[0]), 0.0, 0.0
    if ms is not None:
        rms = jax.tree.map(lambda m: np.sqrt(np.asarray(m, np.float64)), ms)
        mean_rms = np.mean(np.concatenate([r.ravel() for r in jax.tree.leaves(rms)]))
    for w in ws:
        (_, (loss_sum, n, carry)), grads = GRAD(theta, carry, w)
        total, count = total + float(loss_sum), count + float(n)
        if ms is None:
            theta = jax.tree.map(lambda t, t0, g: t - learning_rate * np.asarray(g)
                                 + decay * (t0 - t), theta, theta0, grads)  # fmt: skip
        else:
            theta = jax.tree.map(
                lambda t, t0, g, r: t
                - learning_rate * np.asarray(g) / (np.maximum(r, 0.1 * mean_rms) + epsilon)
                + np.minimum(decay * r / mean_rms, 1.0) * (t0 - t),
                theta, theta0, grads, rms,
            )  # fmt: skip
    return total / count


def corpus(length=205, seed=1):
    return np.random.default_rng(seed).integers(0, V, length)


@pytest.mark.parametrize("rule", ["sgd", "rms"])
def test_scan_equals_a_loop_that_scores_each_window_then_steps(rule):
    ws = windows(corpus())  # 205 tokens, 2 streams of 102: 26 windows, the last padded
    assert ws[-1]["weights"].sum() == 2 and len(ws) == 26
    ms = None
    if rule == "rms":
        ms = dynamic_eval.mean_squared_gradients(LOSS, PARAMS, MODEL.initial_states(1),
                                                 windows(corpus(81, seed=2), 1, 4))  # fmt: skip
        assert all(float(m.min()) >= 0 and float(m.max()) > 0 for m in jax.tree.leaves(ms))
    got = dynamic_eval.evaluate(LOSS, PARAMS, MODEL.initial_states(2), ws, learning_rate=0.05,
                                decay=0.02, rule=rule, ms=ms)  # fmt: skip
    want = reference(PARAMS, ws, 0.05, 0.02, ms)
    assert got["tokens"] == 202
    assert got["loss"] == pytest.approx(want, rel=2e-5)
    static = dynamic_eval.evaluate(LOSS, PARAMS, MODEL.initial_states(2), ws, learning_rate=0.0)
    assert abs(got["loss"] - static["loss"]) > 1e-3  # the updates changed the scores


def test_zero_step_is_the_static_evaluation_of_the_split():
    ids = corpus(301)
    static = dynamic_eval.evaluate(LOSS, PARAMS, MODEL.initial_states(3), windows(ids, 3, 7),
                                   learning_rate=0.0, decay=0.5)  # fmt: skip
    logits, _ = MODEL.apply({"params": PARAMS}, jnp.asarray(ids[:300].reshape(3, 100)[:, :-1]))
    ce = -jax.nn.log_softmax(logits)
    targets = ids[:300].reshape(3, 100)[:, 1:]
    whole = float(np.take_along_axis(np.asarray(ce), targets[..., None], -1).mean())
    assert static["tokens"] == 3 * 99
    assert static["loss"] == pytest.approx(whole, rel=1e-5)


def test_adapting_lowers_the_loss_on_text_that_repeats():
    phrase = np.array([3, 1, 4, 1, 5, 2, 6, 5, 3, 5, 8, 7])
    ws = windows(np.tile(phrase, 20), 1, 6)
    carry = MODEL.initial_states(1)
    static = dynamic_eval.evaluate(LOSS, PARAMS, carry, ws, learning_rate=0.0)
    adapted = dynamic_eval.evaluate(LOSS, PARAMS, carry, ws, learning_rate=1.0)
    assert adapted["loss"] < static["loss"] - 0.2  # 1.91 against 2.19 nats here
    forgetful = dynamic_eval.evaluate(LOSS, PARAMS, carry, ws, learning_rate=1.0, decay=1.0)
    assert static["loss"] - 0.2 < forgetful["loss"]  # λ = 1 forgets each step before the next


def test_bad_settings_are_one_line():
    with pytest.raises(
        ValueError, match="unknown dynamic-evaluation rule 'adam'; available: sgd, rms"
    ):
        dynamic_eval.check_rule("adam", 0.1, 0.0, None)
    with pytest.raises(ValueError, match="learning_rate >= 0 and 0 <= decay <= 1, got 0.1 and 2"):
        dynamic_eval.check_rule("sgd", 0.1, 2, None)
    with pytest.raises(ValueError, match="the rms rule needs the mean squared gradients"):
        dynamic_eval.check_rule("rms", 0.1, 0.0, None)
    dynamic_eval.check_settings("rms", 0.1, 0.0)  # the settings alone, before ms is measured
    with pytest.raises(ValueError, match="got -0.1 and 0"):
        dynamic_eval.check_settings("rms", -0.1, 0)
    with pytest.raises(ValueError, match="windows differ in shape in"):
        dynamic_eval.stack_windows(train.eval_batches(corpus(), 2, 4))
