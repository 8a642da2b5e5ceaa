"""Sentiment classification: data and vocabulary, training with recur.train, the params with
the best dev accuracy kept (``best_params.msgpack``) and reported on dev and test."""

import dataclasses
import functools
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

from recur import cells, files, models
from recur.data import sentiment
from recur.train import Task, fit
from recur.train.sharding import is_writer

BEST_PARAMS, BEST_INFO, VOCAB = "best_params.msgpack", "best.json", "vocab.json"


@dataclasses.dataclass
class Split:
    sequences: list[np.ndarray]
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences])

    def batches(self, batch_size: int, **padding) -> list[dict[str, np.ndarray]]:
        """In length order (little padding), every example once, last batch padded
        (``padding``: :func:`sentiment.pad_batch`'s ``multiple`` and ``max_steps``)."""
        order = np.argsort(self.lengths, kind="stable")
        return [
            sentiment.pad_batch(
                [self.sequences[i] for i in rows], self.labels[rows], batch_size, **padding
            )
            for rows in (order[i : i + batch_size] for i in range(0, len(order), batch_size))
        ]


def padding(config) -> dict:
    """How batches of ``config``'s texts are padded (:func:`sentiment.pad_batch`'s keywords)."""
    return {"multiple": config.data.get("length_multiple", 8), "max_steps": config.data.max_length}


def _read(config, split: str) -> tuple[list[str], np.ndarray]:
    data = config.data
    if data.tfds_name:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - online users only

        tfds_split = {"train": "train", "dev": "validation", "test": "test"}[split]
        if data.tfds_name == "imdb_reviews" and split == "dev":
            return [], np.zeros(0, np.int32)
        source = tfds.data_source(data.tfds_name, split=tfds_split, download=True)
        examples = [source[i] for i in range(len(source))]
        key = "sentence" if "sentence" in examples[0] else "text"
        texts = [e[key].decode() if isinstance(e[key], bytes) else e[key] for e in examples]
        return texts, np.array([e["label"] for e in examples], np.int32)
    path = {"train": data.train_path, "dev": data.dev_path, "test": data.test_path}[split]
    if not path:
        return [], np.zeros(0, np.int32)
    return sentiment.read_labelled(path, data.text_column, data.label_column)


def prepare(config, workdir: pathlib.Path | None = None):
    """``(vocab, {"train", "dev", "test"} splits, notes)``; the vocabulary is saved in workdir."""
    multiple = config.data.get("length_multiple", 8)
    if not (isinstance(multiple, int) and multiple >= 1):
        raise ValueError(f"data.length_multiple must be a positive integer, got {multiple!r}")
    texts, labels = _read(config, "train")
    dev_texts, dev_labels = _read(config, "dev")
    if not dev_texts:  # hold out a seeded share of train
        order = np.random.default_rng(config.seed).permutation(len(texts))
        cut = int(round(config.data.dev_fraction * len(texts)))
        if not 0 < cut < len(texts):
            raise ValueError(f"data.dev_fraction {config.data.dev_fraction} leaves no dev or train")
        dev_texts, dev_labels = [texts[i] for i in order[:cut]], labels[order[:cut]]
        texts, labels = [texts[i] for i in order[cut:]], labels[order[cut:]]
    test_texts, test_labels = _read(config, "test")
    vocab_path = workdir / VOCAB if workdir else None
    if vocab_path and vocab_path.exists():
        vocab = sentiment.Vocabulary.load(vocab_path)
    else:
        tokens = [sentiment.tokenize(t) for t in texts]
        vocab = sentiment.Vocabulary.build(tokens, config.data.min_count, config.data.max_vocab)
        if vocab_path and is_writer():  # process 0 of a multi-process run
            workdir.mkdir(parents=True, exist_ok=True)
            vocab.save(vocab_path)
    splits, notes = {}, [f"vocabulary: {len(vocab)} tokens (with <pad>, <unk>)"]
    for name, (t, l) in {"train": (texts, labels), "dev": (dev_texts, dev_labels),
                         "test": (test_texts, test_labels)}.items():  # fmt: skip
        if not t:
            continue
        sequences, counts = sentiment.encode_texts(t, vocab, config.data.max_length)
        splits[name] = Split(sequences, l)
        notes.append(f"{name}: {len(t)} examples ({counts['truncated']} truncated to "
                     f"{config.data.max_length} tokens, {counts['empty']} empty)")  # fmt: skip
    return vocab, splits, notes


def make_model(config, vocab_size: int) -> models.SequenceClassifier:
    model = config.model
    cells.get(model.cell, model.hidden_size, **cells.options_from_config(model))
    return models.SequenceClassifier(
        num_classes=2,
        vocab_size=vocab_size,
        embed_size=model.embed_size,
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        bidirectional=model.bidirectional,
        pooling=model.pooling,
        attention_size=model.get("attention_size", 64),
        head_hidden_size=model.get("head_hidden_size", 0),
        dropout_rate=model.dropout_rate,
        fused=model.get("fused"),
        cell_options=cells.options_from_config(model),
    )


def build_task(config, vocab, splits, notes, workdir: pathlib.Path) -> Task:
    model = make_model(config, len(vocab))
    train = splits["train"]
    per_epoch = -(-len(train.labels) // config.batch_size)
    epoch_cache = {}

    def train_batch(step):
        epoch, index = divmod(step, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = sentiment.bucketed_order(
                train.lengths, config.batch_size, config.seed, epoch
            )
        rows = epoch_cache[epoch][index]
        return sentiment.pad_batch(
            [train.sequences[i] for i in rows], train.labels[rows], config.batch_size,
            **padding(config),
        )  # fmt: skip

    word_dropout = config.model.get("word_dropout_rate", 0.0)

    def loss_fn(params, batch, rng, training):
        tokens = batch["tokens"]  # [B, T] int
        if training and word_dropout > 0:
            rng, word_rng = jax.random.split(rng)
            dropped = jax.random.bernoulli(word_rng, word_dropout, tokens.shape)
            tokens = jnp.where(dropped & (tokens != sentiment.PAD_ID), sentiment.UNK_ID, tokens)
        logits = model.apply(
            {"params": params}, tokens, batch["lengths"], deterministic=not training,
            rngs={"dropout": rng},
        )  # fmt: skip
        weights = batch["weights"]
        total = jnp.maximum(weights.sum(), 1.0)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        correct = logits.argmax(-1) == batch["labels"]
        loss = jnp.sum(ce * weights) / total
        return loss, {"accuracy": jnp.sum(correct * weights) / total}

    def init_params(key):
        params = model.init(key, jnp.zeros((1, 8), jnp.int32), jnp.ones((1,), jnp.int32))
        params = params["params"]
        if config.data.glove_path:
            vectors, found = sentiment.load_glove(
                config.data.glove_path, vocab, config.model.embed_size
            )
            table = params["encoder"]["embed"]["embedding"]
            table = jnp.where(found[:, None], vectors, table)
            params["encoder"]["embed"]["embedding"] = table
        return params

    dev_batches = splits["dev"].batches(config.batch_size, **padding(config))
    best = {"accuracy": -1.0}
    if (workdir / BEST_INFO).exists():
        best = json.loads((workdir / BEST_INFO).read_text())

    def keep_best(step, state, metrics):
        if metrics["accuracy"] > best["accuracy"]:
            best.update(step=step, accuracy=metrics["accuracy"])
            if not is_writer():
                return
            temporary = workdir / (BEST_PARAMS + ".tmp")
            temporary.write_bytes(serialization.to_bytes(jax.device_get(state.params)))
            os.replace(temporary, workdir / BEST_PARAMS)  # never a half-written file
            files.write_json(workdir / BEST_INFO, best, indent=None)

    return Task(
        model=model,
        init_params=init_params,
        loss_fn=loss_fn,
        train_batch=train_batch,
        eval_batches=lambda: dev_batches,
        metric="accuracy",
        baseline={
            "accuracy": float(max(np.mean(splits["dev"].labels), 1 - np.mean(splits["dev"].labels)))
        },  # fmt: skip
        notes=notes,
        info={"cell": config.model.cell, "bidirectional": config.model.bidirectional},
        on_eval=keep_best,
    )


def load_best_params(model, workdir: pathlib.Path):
    template = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    path = workdir / BEST_PARAMS
    if not path.exists():
        raise ValueError(f"no {BEST_PARAMS} in {workdir}: train there first")
    return serialization.from_bytes(template, path.read_bytes())


def confusion(model, params, split: Split, batch_size: int, apply=None, **padding) -> dict:
    """Accuracy and confusion counts (label 1 = positive) of ``params`` on a split.
    ``apply``: a jitted ``(params, tokens, lengths) -> logits`` to reuse (and its compiled
    lengths) across splits; ``padding``: as for :meth:`Split.batches`."""
    if apply is None:
        apply = jax.jit(lambda p, t, n: model.apply({"params": p}, t, n))
    counts = {"true_positive": 0, "false_positive": 0, "true_negative": 0, "false_negative": 0}
    for batch in split.batches(batch_size, **padding):
        keep = batch["weights"] > 0
        predicted = np.asarray(apply(params, batch["tokens"], batch["lengths"]).argmax(-1))[keep]
        truth = batch["labels"][keep]
        counts["true_positive"] += int(np.sum((predicted == 1) & (truth == 1)))
        counts["false_positive"] += int(np.sum((predicted == 1) & (truth == 0)))
        counts["true_negative"] += int(np.sum((predicted == 0) & (truth == 0)))
        counts["false_negative"] += int(np.sum((predicted == 0) & (truth == 1)))
    total = sum(counts.values())
    return {"accuracy": (counts["true_positive"] + counts["true_negative"]) / total, **counts}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    started = time.perf_counter()
    workdir = pathlib.Path(workdir)
    vocab, splits, notes = prepare(config, workdir)
    per_epoch = -(-len(splits["train"].labels) // config.batch_size)
    if config.num_steps < 1:
        config.num_steps = config.num_epochs * per_epoch
    for field in ("eval_every", "checkpoint_every"):
        if config[field] < 1:
            config[field] = per_epoch
    task = build_task(config, vocab, splits, notes, workdir)
    training = fit(config, workdir, task)
    params = load_best_params(task.model, workdir)
    best = json.loads((workdir / BEST_INFO).read_text())
    # One forward program per padded length, shared by the dev and test splits.
    apply = jax.jit(lambda p, t, n: task.model.apply({"params": p}, t, n))
    evaluate = functools.partial(
        confusion, task.model, params, batch_size=config.batch_size, apply=apply,
        **padding(config),
    )  # fmt: skip
    results = {
        "dataset": config.data.name,
        "best_step": best["step"],
        "dev": evaluate(splits["dev"]),
        "test": evaluate(splits["test"]) if "test" in splits else None,
        "wall_seconds": time.perf_counter() - started,
        "training": training,
        "command": " ".join(["python -m experiments.sentiment.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
    }
    if is_writer():
        files.write_json(workdir / "results.json", results)
    report = f"best dev accuracy {results['dev']['accuracy']:.4f} (step {best['step']})"
    if results["test"]:
        report += f", test accuracy {results['test']['accuracy']:.4f}"
    print(report, flush=True)
    return results
