"""Language-modelling experiment: stateful truncated BPTT, perplexity, exact resume, CLI."""

import json
import math
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import run_module, run_module_killed, run_module_on_a_full_disk

from experiments.lm import config as lm_config
from experiments.lm import sample, train
from recur.train import averaging, checkpoint, fit
from recur.train.optim import make_optimizer, make_schedule
from recur.train.state import TrainState

WORDS = "the a cat dog sat ran on under mat log quickly slowly".split()


def write_corpus(path, lines=300, seed=0):
    rng = np.random.default_rng(seed)
    text = "\n".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(lines))
    path.write_text(text + "\n")
    return path


def smoke_config(corpus, **overrides):
    config = lm_config.get_config("smoke")
    config.data.train_path = str(corpus)
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt")


def test_carrying_state_across_windows_equals_the_concatenated_window(corpus):
    config = smoke_config(corpus)  # LSTM: a two-part state per layer
    vocab, ids, notes = train.prepare(config)
    task = train.build_task(config, vocab, ids, notes)
    params = task.init_params(jax.random.key(0))
    tokens = jnp.asarray(ids["train"][:24].reshape(2, 12))
    targets = jnp.asarray(ids["train"][1:25].reshape(2, 12))
    full, full_states = task.model.apply({"params": params}, tokens)
    first, states = task.model.apply({"params": params}, tokens[:, :5])
    second, states = task.model.apply({"params": params}, tokens[:, 5:], states)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), states, full_states)
    # The task's loss threads the carry the same way; "reset" restarts from zeros.
    rng = jax.random.key(0)
    batch = {"inputs": tokens[:, :5], "targets": targets[:, :5]}
    loss_a, metrics_a = task.loss_fn(params, batch, rng, False)
    rest = {"inputs": tokens[:, 5:], "targets": targets[:, 5:], "carry": metrics_a["carry"]}
    loss_b, _ = task.loss_fn(params, rest, rng, False)
    loss_full, _ = task.loss_fn(params, {"inputs": tokens, "targets": targets}, rng, False)
    np.testing.assert_allclose((5 * loss_a + 7 * loss_b) / 12, loss_full, rtol=1e-5)
    loss_reset, _ = task.loss_fn(params, {**rest, "reset": np.ones(2, bool)}, rng, False)
    loss_fresh, _ = task.loss_fn(params, {k: rest[k] for k in ("inputs", "targets")}, rng, False)
    np.testing.assert_allclose(loss_reset, loss_fresh, rtol=1e-6)
    assert abs(float(loss_reset) - float(loss_b)) > 1e-6


def test_uniform_model_has_perplexity_equal_to_vocabulary_size(corpus):
    config = smoke_config(corpus)
    vocab, ids, notes = train.prepare(config)
    task = train.build_task(config, vocab, ids, notes)
    params = task.init_params(jax.random.key(0))
    params["head"] = jax.tree.map(jnp.zeros_like, params["head"])  # all logits 0
    metrics = train.evaluate_split(task, params, ids["valid"], config)
    assert metrics["perplexity"] == pytest.approx(len(vocab), rel=1e-5)
    assert metrics["bpc"] == pytest.approx(np.log2(len(vocab)), rel=1e-5)


def test_training_carries_state_and_resumes_exactly(tmp_path, corpus):
    config = smoke_config(corpus, num_steps=8, eval_every=4, checkpoint_every=4, log_every=4)
    vocab, ids, notes = train.prepare(config)
    task = train.build_task(config, vocab, ids, notes)
    train.derive_schedule(config, task.info["windows_per_epoch"])
    straight = fit(config, tmp_path / "straight", task)
    config.num_steps = 4
    fit(config, tmp_path / "split", task)
    config.num_steps = 8
    resumed = fit(config, tmp_path / "split", task)
    assert resumed["resumed_from_step"] == 4
    assert resumed["eval"]["nll"] == pytest.approx(straight["eval"]["nll"], rel=1e-6)
    # The checkpoint holds the streams' states (non-zero mid-epoch), so resuming continues them.
    optimizer, _ = make_optimizer(config.optim, config.num_steps)
    template = TrainState.create(
        apply_fn=task.model.apply, params=task.init_params(jax.random.key(0)), tx=optimizer,
        carry=task.initial_carry,
    )  # fmt: skip
    manager = checkpoint.make_manager(tmp_path / "split")
    restored = checkpoint.restore_latest(manager, template)
    manager.close()
    assert int(restored.step) == 8
    assert all(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(restored.carry))


def test_averaged_run_reports_its_last_iterate_beside_the_average(tmp_path, corpus, monkeypatch):
    # The trigger fires at the first evaluation (step 3): steps 4-6 are averaged.
    def switch_now(state, loss, step):
        return averaging._record(state._replace(best_before=jnp.float32(-jnp.inf)), loss, step)

    monkeypatch.setattr(averaging, "_record_jit", jax.jit(switch_now))
    config = smoke_config(corpus)
    config.optim.update(averaging=True, nonmono=1)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["training"]["averaging"] == {"from_step": 4, "iterates": 3}
    last = results["last_iterate"]
    for split in ("valid", "test"):
        assert set(last[split]) == set(results[split])
        assert last[split]["nll"] != pytest.approx(results[split]["nll"], rel=1e-6)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["last_iterate"] == last


def test_uniform_init_draws_the_values_of_a_dense_head(monkeypatch):
    """Zaremba's U(-s, s) init (one key per parameter, in tree order) gives the output layer,
    stored [vocab, hidden], the transpose of the values an ``nn.Dense`` head [hidden, vocab]
    drew before the layout changed: the records made then reproduce."""
    import flax.linen as nn  # noqa: PLC0415

    from recur.models import language_model  # noqa: PLC0415

    config = lm_config.get_config("ptb_small")
    config.model.update(embed_size=6, hidden_size=5)
    key, vocab_size = jax.random.key(3), 13
    params = train.init_params_fn(config, train.make_model(config, vocab_size))(key)
    monkeypatch.setattr(language_model, "OutputLayer", nn.Dense)
    dense_model = train.make_model(config, vocab_size)
    dense = dense_model.init(key, jnp.zeros((1, 2), jnp.int32))["params"]
    leaves, treedef = jax.tree.flatten(dense)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    s = config.model.init_scale
    drawn = [
        jax.random.uniform(k, x.shape, x.dtype, -s, s) for k, x in zip(keys, leaves, strict=True)
    ]
    reference = jax.tree.unflatten(treedef, drawn)
    assert params["head"]["kernel"].shape == (vocab_size, 5)
    reference["head"]["kernel"] = reference["head"]["kernel"].T
    jax.tree.map(np.testing.assert_array_equal, params, reference)


def test_windows_cover_an_epoch_and_reset_at_its_start(corpus):
    config = smoke_config(corpus)
    vocab, ids, notes = train.prepare(config)
    task = train.build_task(config, vocab, ids, notes)
    per_epoch = task.info["windows_per_epoch"]
    first, last, again = (task.train_batch(s) for s in (0, per_epoch - 1, per_epoch))
    assert first["reset"].all() and not last["reset"].any() and again["reset"].all()
    np.testing.assert_array_equal(again["inputs"], first["inputs"])
    np.testing.assert_array_equal(task.train_batch(1)["inputs"][:, 0], first["targets"][:, -1])


def test_learning_rate_decays_from_the_named_epoch():
    config = lm_config.get_config("ptb_small")
    train.derive_schedule(config, 10)
    schedule = make_schedule(config.optim, config.num_steps)
    assert config.num_steps == 130 and config.eval_every == 10
    rates = [float(schedule(s)) for s in (0, 39, 40, 49, 50, 129)]
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.5**9]  # epochs 1-4 at 1.0, then halved


def test_configs_and_bad_variants():
    medium = lm_config.get_config("ptb_medium,cell=gru")
    assert (medium.model.hidden_size, medium.bptt, medium.model.cell) == (650, 35, "gru")
    assert lm_config.get_config("shakespeare_char").data.level == "char"
    awd = lm_config.get_config("shakespeare_awd")
    assert awd.data.level == "char" and awd.model.hidden_size == 256 and awd.num_epochs == 30
    assert awd.model.tie_embeddings and awd.model.weight_drop > 0 and awd.optim.averaging
    assert lm_config.get_config("ptb_char").data.level == "char_tokens"
    rates = {c: lm_config.get_config(f"ptb_small,cell={c}").optim.learning_rate
             for c in ("lstm", "gru", "rnn")}  # fmt: skip
    assert rates == {"lstm": 1.0, "gru": 0.5, "rnn": 0.2} and medium.optim.learning_rate == 1.0
    rates = {c: lm_config.get_config(f"ptb_awd,cell={c}").optim.learning_rate
             for c in ("lstm", "gru", "rnn")}  # fmt: skip
    assert rates == {"lstm": 2e-3, "gru": 2e-3, "rnn": 5e-4}  # the records' rates
    with pytest.raises(ValueError, match="unknown config variant 'ptb_large'"):
        lm_config.get_config("ptb_large")


def test_prompt_and_detokenize_round_trip():
    assert sample.prompt_tokens("the cat", "word") == ["<eos>", "the", "cat"]
    assert sample.detokenize(["sat", "<eos>", "a", "dog"], "word") == " sat\na dog"
    assert sample.prompt_tokens("a b", "char_tokens") == ["<eos>", "a", "_", "b"]
    assert sample.detokenize(["a", "_", "b", "<eos>"], "char_tokens") == "a b\n"
    assert sample.detokenize(list("ab\nc"), "char") == "ab\nc"


def test_command_line_train_kill_resume_evaluate_sample_and_errors(tmp_path, corpus):
    """The LM's command line end to end: training (the fused backward, dropout on, the state
    carried between windows); the same run SIGKILLed after a random step and during a random
    checkpoint write, resumed, ends where the uninterrupted one did; a rerun on a full disk
    damages nothing; sampling; bad input."""
    flags = [
        "--config=experiments/lm/config.py:smoke,cell=gru",
        f"--config.data.train_path={corpus}",
        "--config.model.fused=true",  # the hand-written backward (same gradients)
        "--config.model.dropout_rate=0.3",
        "--config.num_steps=10",
        "--config.checkpoint_every=2",
        "--config.eval_every=5",
        "--config.log_every=1",
    ]
    workdir = tmp_path / "run"
    result = run_module("experiments.lm.main", *flags, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["valid"]["perplexity"] < results["training"]["baseline"]["uniform perplexity"]
    assert results["cell"] == "gru"
    # Training throughput counts the training steps alone; evaluation time is left out.
    assert results["tokens_per_second"] > results["tokens_per_train_second"] > 0
    curve = results["valid_curve"]
    assert curve["steps"] == [5, 10]
    assert curve["nll"][-1] == pytest.approx(results["training"]["eval"]["nll"], rel=1e-4)
    assert curve["perplexity"] == [pytest.approx(math.exp(nll), rel=1e-4) for nll in curve["nll"]]

    seed = np.random.SeedSequence().entropy
    rng = np.random.default_rng(seed)
    first = int(rng.integers(2, 6))  # after the step ran, before its checkpoint (if due)
    saved = [step for step in (6, 8, 10) if step > first]  # during a checkpoint's write
    kills = [(first, "step"), (int(rng.choice(saved)), "save")]
    killed_dir = tmp_path / "killed"
    for step, moment in kills:
        killed = run_module_killed(
            step, moment, "experiments.lm.main", *flags, f"--workdir={killed_dir}"
        )
        assert killed.returncode == -signal.SIGKILL, (seed, killed.stderr[-2000:])
    resumed = run_module("experiments.lm.main", *flags, f"--workdir={killed_dir}")
    assert resumed.returncode == 0, (seed, kills, resumed.stderr[-2000:])
    assert "resuming from the checkpoint at step" in resumed.stdout

    def outcome(run_dir):
        results = json.loads((run_dir / "results.json").read_text())
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
        losses = [(r["step"], r["loss"]) for r in map(json.loads, rows) if r["split"] == "train"]
        return results["valid"], results["test"], losses

    assert outcome(killed_dir) == outcome(workdir), (seed, kills)

    # A rerun that dies of a full disk while rewriting the outputs damages none of them (the
    # lock file names its holder, the rerun).
    def outputs():
        return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and p.name != ".lock"}

    kept = outputs()
    full = run_module_on_a_full_disk(1000, "experiments.lm.main", *flags, f"--workdir={workdir}")
    assert full.returncode == 1
    assert full.stderr.strip().splitlines()[-1].startswith("error: [Errno 27] File too large")
    assert outputs() == kept
    sampled = run_module(
        "experiments.lm.sample", f"--workdir={workdir}", "--prompt=the cat", "--length=12"
    )
    assert sampled.returncode == 0, sampled.stderr
    words = sampled.stdout.split()
    assert words[:2] == ["the", "cat"] and len(words) >= 8
    assert set(words) <= {*WORDS, "<unk>"}

    # Dynamic evaluation of the trained run: its static numbers are the run's own (the same
    # two streams, the state carried across windows of another length); the choice is the
    # grid's best on valid; a directory without a run is one line.
    dynamic = run_module(
        "experiments.lm.dynamic_eval", f"--workdir={workdir}", "--batch_size=2", "--bptt=4",
        "--learning_rates=0.001,0.01", "--decays=0,0.1", "--ms_windows=30",
    )  # fmt: skip
    assert dynamic.returncode == 0, dynamic.stderr
    record = json.loads((workdir / "dynamic_eval.json").read_text())
    for split in ("valid", "test"):
        assert record["static"][split]["nll"] == pytest.approx(results[split]["nll"], rel=1e-5)
    assert len(record["grid"]) == 4
    assert record["valid"] == min((r["valid"] for r in record["grid"]), key=lambda v: v["nll"])
    assert "dynamic evaluation (rms" in dynamic.stdout
    missing = run_module("experiments.lm.dynamic_eval", f"--workdir={tmp_path / 'none'}")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .endswith("holds no language-model run (config.json, vocab.json)")
    )

    with pytest.raises(ValueError, match="missing.txt does not exist"):
        train.prepare(smoke_config(tmp_path / "missing.txt"))
    # model.fused reaches the model: the reset-before GRU has no fused backward.
    impossible = smoke_config(corpus)
    impossible.model.update(cell="gru", gru_variant="reset_before", fused=True)
    model = train.make_model(impossible, vocab_size=len(WORDS) + 2)
    with pytest.raises(ValueError, match="no recurrent/pointwise split; use fused=False"):
        model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="corpus file .*empty.txt is empty"):
        train.prepare(smoke_config(tmp_path / "empty.txt"))
