"""Builds a probe task (data, model, loss) from the config and trains it with recur.train."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import recur
from recur import cells, models
from recur.data import batching, probes
from recur.train import Task, batch_mean, fit, sharding

TASKS = ("adding", "copy", "selective_copy", "mnist_sequential", "mnist_permuted", "mnist_rows")


def hidden_size(config: ml_collections.ConfigDict, input_size: int, output_size: int) -> int:
    """``config.model.hidden_size``, or with ``match_params`` the size matching the LSTM's
    parameter count at that hidden size: of one cell and the head, or, for a ``residual``
    block stack, of the whole stack (blocks included) against the LSTM's plain stack of as
    many layers."""
    model = config.model
    options = cells.options_from_config(model)
    cells.get(model.cell, model.hidden_size, **options)  # unknown cell/option: clear error now
    block = model.get("block", "stack")
    if not model.match_params or (model.cell == "lstm" and block == "stack"):
        return model.hidden_size
    if block == "residual":
        reference = {"forget_bias": model.forget_bias, "recurrent_init": model.recurrent_init}
        budget = recur.stack_param_count("lstm", model.hidden_size, input_size, output_size,
                                         num_layers=model.num_layers, **reference)  # fmt: skip
        return recur.params.closest_size(
            lambda h: recur.stack_param_count(
                model.cell, h, input_size, output_size, num_layers=model.num_layers,
                block="residual", **options,
            ),
            budget,
        )  # fmt: skip
    sizes = recur.matched_hidden_sizes(
        [model.cell],
        input_size=input_size,
        output_size=output_size,
        reference_hidden_size=model.hidden_size,
        options={model.cell: options},
    )
    return sizes[model.cell]


def mean_squared_error(predictions, targets, batch):
    """Mean over the batch (weighted where it has ``weights``) of each example's squared error."""
    return batch_mean((predictions - targets) ** 2, batch)


def _generated(batch_fn, config, num_steps):
    make = jax.jit(functools.partial(batch_fn, batch_size=config.batch_size, num_steps=num_steps))
    data_key = jax.random.key(config.seed + 1)
    eval_key = jax.random.key(config.seed + 2)

    def train_batch(step):
        return make(jax.random.fold_in(data_key, step))

    def eval_batches():
        return [make(k) for k in jax.random.split(eval_key, config.task.eval_batches)]

    return train_batch, eval_batches


def _mnist(config):
    task = config.task
    if task.mnist_source == "tfds":
        import tensorflow_datasets as tfds  # noqa: PLC0415 - only for online users

        splits = {}
        for split in ("train", "test"):
            source = tfds.data_source("mnist", split=split, download=True)
            examples = [source[i] for i in range(len(source))]
            splits[split] = {
                "images": np.stack([e["image"][..., 0] for e in examples]),
                "labels": np.array([e["label"] for e in examples], np.int32),
            }
        train, test, notes = splits["train"], splits["test"], []
    elif task.mnist_source == "local":
        train, test, notes = probes.load_mnist(task.mnist_dir)
    else:
        raise ValueError(f"unknown mnist_source {task.mnist_source!r}; available: local, tfds")
    mode = task.name.removeprefix("mnist_")
    permutation = np.random.default_rng(config.seed).permutation(784)
    train = {
        "inputs": probes.mnist_sequences(train["images"], mode, permutation),
        "targets": train["labels"],
    }
    test = {
        "inputs": probes.mnist_sequences(test["images"], mode, permutation),
        "targets": test["labels"],
    }

    def train_batch(step):
        return batching.epoch_batch(train, step, config.batch_size, config.seed)

    def eval_batches():  # every test example; the last batch padded with weight-0 rows
        for start in range(0, len(test["targets"]), config.batch_size):
            batch = {name: array[start : start + config.batch_size] for name, array in test.items()}
            batch["weights"] = np.ones(len(batch["targets"]), np.float32)
            yield sharding.pad_batch(batch, config.batch_size)

    majority = np.bincount(test["targets"], minlength=10).max() / len(test["targets"])
    baseline = {"accuracy": float(majority), "cross_entropy": float(np.log(10))}
    return train_batch, eval_batches, train["inputs"].shape[-1], baseline, notes


def build_task(config: ml_collections.ConfigDict) -> Task:
    """The :class:`~recur.train.Task` named by ``config.task.name``."""
    name, T = config.task.name, config.task.T
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    if T < 1:
        raise ValueError(f"task.T must be >= 1, got {T}")
    if config.batch_size < 1 or config.num_steps < 1:
        raise ValueError(
            f"batch_size and num_steps must be >= 1, got {config.batch_size}, {config.num_steps}"
        )
    model_config = config.model
    common = {
        "cell": model_config.cell,
        "num_layers": model_config.num_layers,
        "remat": model_config.remat,
        "fused": model_config.get("fused"),
        "cell_options": cells.options_from_config(model_config),
        "block": model_config.get("block", "stack"),
    }
    notes = []
    if name == "adding":
        if T < 2:
            raise ValueError(f"the adding problem needs task.T >= 2, got {T}")
        train_batch, eval_batches = _generated(probes.adding_batch, config, T)
        model = models.SequenceClassifier(
            num_classes=1, hidden_size=hidden_size(config, 2, 1), **common
        )

        def loss_fn(params, batch, rng, train):
            del rng, train
            predictions = model.apply({"params": params}, batch["inputs"])
            mse = mean_squared_error(predictions, batch["targets"], batch)
            return mse, {"mse": mse}

        example, metric = jnp.zeros((1, T, 2)), "mse"
        baseline = {"mse": probes.ADDING_BASELINE_MSE}
    elif name in ("copy", "selective_copy"):
        copy = name == "copy"
        batch_fn = probes.copy_batch if copy else probes.selective_copy_batch
        vocab = probes.COPY_VOCAB if copy else probes.SELECTIVE_VOCAB
        recall = probes.COPY_LENGTH if copy else probes.SELECTIVE_LENGTH
        if not copy and T < probes.SELECTIVE_LENGTH:
            raise ValueError(f"selective_copy needs task.T >= {recall}, got {T}")
        train_batch, eval_batches = _generated(batch_fn, config, T)
        embed = model_config.embed_size
        model = models.SequenceTagger(
            num_outputs=vocab,
            vocab_size=vocab,
            embed_size=embed,
            hidden_size=hidden_size(config, embed, vocab),
            **common,
        )

        def loss_fn(params, batch, rng, train):
            del rng, train
            logits = model.apply({"params": params}, batch["inputs"])
            targets = batch["targets"]
            ce = batch_mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets), batch)
            recalled = logits[:, -recall:].argmax(-1)
            accuracy = batch_mean(recalled == targets[:, -recall:], batch)
            return ce, {"cross_entropy": ce, "copy_accuracy": accuracy}

        length = T + 20 if copy else T + probes.SELECTIVE_LENGTH
        example, metric = jnp.zeros((1, length), jnp.int32), "cross_entropy"
        if copy:
            baseline = {"cross_entropy": probes.copy_baseline(T), "copy_accuracy": 1 / 8}
        else:
            baseline = {
                "cross_entropy": probes.selective_copy_baseline(T),
                "copy_accuracy": 1 / probes.SELECTIVE_SYMBOLS,
            }
    else:
        train_batch, eval_batches, input_size, baseline, notes = _mnist(config)
        model = models.SequenceClassifier(
            num_classes=10, hidden_size=hidden_size(config, input_size, 10), **common
        )

        def loss_fn(params, batch, rng, train):
            del rng, train
            logits = model.apply({"params": params}, batch["inputs"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            ce = batch_mean(ce, batch)
            accuracy = batch_mean(logits.argmax(-1) == batch["targets"], batch)
            return ce, {"cross_entropy": ce, "accuracy": accuracy}

        steps = 784 if name != "mnist_rows" else 28
        example, metric = jnp.zeros((1, steps, input_size)), "accuracy"

    def init_params(key):
        return model.init(key, example)["params"]

    info = {
        "task": name,
        "T": T,
        "cell": model_config.cell,
        "block": common["block"],
        "hidden_size": model.hidden_size,
        "num_params": recur.count_params(jax.eval_shape(init_params, jax.random.key(0))),
    }
    return Task(
        model, init_params, loss_fn, train_batch, eval_batches, metric, baseline, notes, info
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the probe named by the config in ``workdir``; returns the final results."""
    return fit(config, workdir, build_task(config))
