"""Language modelling with truncated BPTT: corpus and vocabulary, the stateful task for
:func:`recur.train.fit`, and perplexity / bits per character on valid and test with the state
carried over the whole split."""

import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from recur import cells, files, models
from recur.data import text
from recur.train import Task, batch_mean, fit
from recur.train.loop import evaluate, restore_params
from recur.train.metrics import read_rows
from recur.train.sharding import is_writer, make_mesh
from recur.train.state import TrainState

VOCAB = "vocab.json"


def read_splits(config) -> tuple[dict[str, str], list[str]]:
    """``{"train", "valid", "test"} -> text`` and notes on where each split came from."""
    data = config.data
    if data.tfds_name:
        names = {"train": "train", "valid": "validation", "test": "test"}
        return {k: text.read_tfds_text(data.tfds_name, v) for k, v in names.items()}, [
            f"data: tensorflow-datasets {data.tfds_name}"
        ]
    paths = {"train": data.train_path, "valid": data.valid_path, "test": data.test_path}
    if pathlib.Path(data.train_path).is_dir():
        found = text.find_split_files(data.train_path)
        paths = {split: str(found.get(split, "")) for split in paths}
    splits = {"train": text.read_text(paths["train"])}
    notes = [f"train: {paths['train']}"]
    if paths["valid"]:
        splits["valid"] = text.read_text(paths["valid"])
        notes.append(f"valid: {paths['valid']}")
    else:
        splits["train"], splits["valid"] = text.split_text(splits["train"], data.train_fraction)
        notes.append(f"valid: the last {1 - data.train_fraction:.0%} of the training text")
    if paths["test"]:
        splits["test"] = text.read_text(paths["test"])
        notes.append(f"test: {paths['test']}")
    else:
        splits["test"] = splits["valid"]
        notes.append("test: no test split; the valid split is reported as test")
    return splits, notes


def prepare(config, workdir: pathlib.Path | None = None):
    """``(vocab, {split: ids}, notes)``; the vocabulary is built from train and saved."""
    splits, notes = read_splits(config)
    tokens = {name: text.tokens_of(t, config.data.level) for name, t in splits.items()}
    vocab_path = workdir / VOCAB if workdir else None
    if vocab_path and vocab_path.exists():
        vocab = text.Vocabulary.load(vocab_path)
    else:
        vocab = text.Vocabulary.build(tokens["train"])
        if vocab_path and is_writer():  # process 0 of a multi-process run
            workdir.mkdir(parents=True, exist_ok=True)
            vocab.save(vocab_path)
    ids = {name: vocab.encode(t) for name, t in tokens.items()}
    unk = vocab.ids[text.UNK]
    notes.append(f"vocabulary: {len(vocab)} {config.data.level} tokens from train")
    for name, values in ids.items():
        notes.append(f"{name}: {len(values):,} tokens ({int(np.sum(values == unk)):,} {text.UNK})")
    return vocab, ids, notes


def make_model(config, vocab_size: int) -> models.LanguageModel:
    model = config.model
    options = cells.options_from_config(model)
    cells.get(model.cell, model.hidden_size, **options)  # a clear error for a bad cell
    return models.LanguageModel(
        vocab_size=vocab_size,
        embed_size=model.embed_size,
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        dropout_rate=model.dropout_rate,
        variational_dropout=model.variational_dropout,
        input_dropout=model.get("input_dropout"),
        output_dropout=model.get("output_dropout"),
        embed_dropout=model.get("embed_dropout", 0.0),
        recurrent_dropout=model.get("recurrent_dropout", 0.0),
        weight_drop=model.get("weight_drop", 0.0),
        tie_embeddings=model.tie_embeddings,
        block=model.get("block", "stack"),
        fused=model.get("fused"),
        cell_options=options,
    )


def init_params_fn(config, model: models.LanguageModel):
    """``key -> params``; with ``model.init_scale > 0`` every parameter is redrawn from
    U(-scale, scale) (Zaremba et al.). The output layer's kernel, stored ``[vocab, hidden]``
    since 2026-12-04, is drawn ``[hidden, vocab]`` and transposed: the values it had before,
    so the records made then reproduce."""

    def init_params(key):
        params = model.init(key, jnp.zeros((1, 2), jnp.int32))["params"]
        scale = config.model.init_scale
        if scale > 0:
            leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
            keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))

            def draw(k, path, x):
                if jax.tree_util.keystr(path) == "['head']['kernel']":
                    return jax.random.uniform(k, x.shape[::-1], x.dtype, -scale, scale).T
                return jax.random.uniform(k, x.shape, x.dtype, -scale, scale)

            leaves = [draw(k, path, x) for k, (path, x) in zip(keys, leaves, strict=True)]
            params = jax.tree.unflatten(treedef, leaves)
        return params

    return init_params


def loss_fn_for(config, model: models.LanguageModel):
    """The stateful loss: reads ``batch["carry"]`` (zeros where ``batch["reset"]`` or absent),
    returns the per-token negative log-likelihood ``nll`` and the final states as ``carry``."""
    sum_over_time = config.sum_over_time

    def loss_fn(params, batch, rng, training):
        inputs, targets = batch["inputs"], batch["targets"]  # [B, T] int
        carry = batch.get("carry")
        if carry is None:
            carry = model.initial_states(inputs.shape[0])
        elif "reset" in batch:
            reset = batch["reset"][:, None]  # [B, 1] bool: a new epoch starts the streams anew
            carry = jax.tree.map(lambda c: jnp.where(reset, jnp.zeros_like(c), c), carry)
        logits, states = model.apply(
            {"params": params}, inputs, carry, deterministic=not training, rngs={"dropout": rng}
        )  # [B, T, V]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
        nll = batch_mean(ce, batch)  # per token; eval batches padded to the devices: weights
        loss = nll * inputs.shape[1] if training and sum_over_time else nll
        return loss, {"nll": nll, "perplexity": jnp.exp(nll), "carry": states}

    return loss_fn


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    """Perplexity and bits per token from the mean per-token negative log-likelihood (and the
    loss, which the averaging optimizer's trigger reads)."""
    nll = metrics["nll"]
    summary = {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "bpc": nll / math.log(2)}
    return {**summary, "loss": metrics["loss"]} if "loss" in metrics else summary


def eval_batches(ids: np.ndarray, batch_size: int, bptt: int) -> list[dict[str, np.ndarray]]:
    """The whole split as ``batch_size`` streams in windows of ``bptt`` (the last shorter);
    ``weights`` count the tokens, so means are per token."""
    streams = text.streams(ids, batch_size)
    batches = []
    for i in range(text.num_windows(streams, bptt)):
        batch = text.window(streams, i, bptt)
        batch["weights"] = np.ones(batch["targets"].shape, np.float32)
        batches.append(batch)
    return batches


def padded_windows(ids: np.ndarray, batch_size: int, bptt: int) -> list[dict[str, np.ndarray]]:
    """:func:`eval_batches` with the last window padded to ``bptt`` by weight-0 tokens, so
    every window has one shape (``recur.train.dynamic_eval`` scans over them)."""
    batches = eval_batches(ids, batch_size, bptt)
    last = batches[-1]
    short = bptt - last["targets"].shape[1]
    if short:
        batches[-1] = {name: np.pad(v, ((0, 0), (0, short))) for name, v in last.items()}
    return batches


def window_loss_for(model: models.LanguageModel):
    """``(params, carry, window) -> (mean nll, (nll sum, tokens, final states))``: the window
    loss of :mod:`recur.train.dynamic_eval` (no dropout)."""

    def window_loss(params, carry, window):
        logits, states = model.apply({"params": params}, window["inputs"], carry)
        ce = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), window["targets"]
        )
        weights = window["weights"]
        total, count = jnp.sum(ce * weights), jnp.sum(weights)
        return total / jnp.maximum(count, 1.0), (total, count, states)

    return window_loss


def unigram_nll(train: np.ndarray, valid: np.ndarray, vocab_size: int) -> float:
    """Per-token NLL of valid under add-one-smoothed training unigram frequencies."""
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    return float(-np.mean(np.log(counts[valid] / counts.sum())))


def build_task(config, vocab, ids, notes) -> Task:
    model = make_model(config, len(vocab))
    streams = text.streams(ids["train"], config.batch_size)
    per_epoch = (streams.shape[1] - 1) // config.bptt  # full windows; the remainder is dropped
    if per_epoch < 1:
        raise ValueError(
            f"{len(ids['train'])} training tokens give no window of {config.bptt} for "
            f"{config.batch_size} streams"
        )

    def train_batch(step):
        index = step % per_epoch
        reset = np.full(config.batch_size, index == 0)
        return {**text.window(streams, index, config.bptt), "reset": reset}

    valid = eval_batches(ids["valid"], config.eval_batch_size, config.eval_bptt)
    word = config.data.level == "word"
    unigram = unigram_nll(ids["train"], ids["valid"], len(vocab))
    if word:
        metric = "perplexity"
        baseline = {"uniform perplexity": float(len(vocab)), "unigram": math.exp(unigram)}
    else:
        metric = "bpc"
        baseline = {"uniform bpc": math.log2(len(vocab)), "unigram": unigram / math.log(2)}
    return Task(
        model=model,
        init_params=init_params_fn(config, model),
        loss_fn=loss_fn_for(config, model),
        train_batch=train_batch,
        eval_batches=lambda: valid,
        metric=metric,
        baseline=baseline,
        notes=notes,
        info={"cell": config.model.cell, "windows_per_epoch": per_epoch},
        initial_carry=model.initial_states(config.batch_size),
        summarize=summarize,
    )


def evaluate_split(task: Task, params, ids: np.ndarray, config) -> dict[str, float]:
    """Per-token NLL, perplexity and bpc of ``params`` on a whole split."""
    state = TrainState.create(
        apply_fn=task.model.apply, params=params, tx=optax.identity(), loss_fn=task.loss_fn
    )
    batches = eval_batches(ids, config.eval_batch_size, config.eval_bptt)
    return evaluate(state, batches, make_mesh(config.get("num_devices") or None), summarize)


def derive_schedule(config, per_epoch: int) -> None:
    """Fills the step counts left at -1 from the epoch length."""
    if config.num_steps < 1:
        config.num_steps = config.num_epochs * per_epoch
    if config.eval_every < 1:
        config.eval_every = per_epoch
    if config.checkpoint_every < 1:
        config.checkpoint_every = per_epoch
    if config.decay_from_epoch < 1:
        raise ValueError(f"decay_from_epoch must be >= 1, got {config.decay_from_epoch}")
    config.optim.decay_every = per_epoch
    config.optim.decay_start = (config.decay_from_epoch - 1) * per_epoch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    started = time.perf_counter()
    workdir = pathlib.Path(workdir)
    vocab, ids, notes = prepare(config, workdir)
    task = build_task(config, vocab, ids, notes)
    derive_schedule(config, task.info["windows_per_epoch"])
    training = fit(config, workdir, task)
    params = restore_params(config, workdir, task)
    valid = evaluate_split(task, params, ids["valid"], config)
    test = evaluate_split(task, params, ids["test"], config)
    tokens = config.num_steps * config.batch_size * config.bptt
    results = {
        "variant": config.variant,
        "cell": config.model.cell,
        "level": config.data.level,
        "valid": valid,
        "test": test,
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "wall_seconds": time.perf_counter() - started,
        "train_tokens": tokens,
        # Training throughput: the training steps alone (first compilation included) ...
        "train_step_seconds": training["step_seconds_total"],
        "tokens_per_second": tokens / max(training["step_seconds_total"], 1e-9),
        # ... and with evaluation and checkpoints (over every run of the workdir).
        "train_seconds": training["train_seconds_total"],
        "tokens_per_train_second": tokens / max(training["train_seconds_total"], 1e-9),
        "training": training,
        "command": " ".join(["python -m experiments.lm.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
    }
    if (training.get("averaging") or {}).get("from_step") is not None:
        # The averaging ablation at no extra training: the same run's last iterate.
        last = restore_params(config, workdir, task, averaged=False)
        results["last_iterate"] = {
            "valid": evaluate_split(task, last, ids["valid"], config),
            "test": evaluate_split(task, last, ids["test"], config),
        }
    if is_writer():
        # Every evaluation of the run (resumed runs' lost steps dropped): the validation curve.
        evals = [row for row in read_rows(workdir / "metrics.jsonl") if row["split"] == "eval"]
        results["valid_curve"] = {
            "steps": [row["step"] for row in evals],
            "nll": [round(row["nll"], 5) for row in evals],
            "perplexity": [round(row["perplexity"], 3) for row in evals],
        }
        files.write_json(workdir / "results.json", results)
    name = task.metric
    print(f"valid {name} {valid[name]:.4g}, test {name} {test[name]:.4g}", flush=True)
    return results
