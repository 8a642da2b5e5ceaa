"""Trained cells for :mod:`benchmarks.gradient_flow`: a probes run's checkpoint, its cell and
head, measured on that probe's data and loss (single-layer, unidirectional models)."""

import json
import pathlib

import jax.numpy as jnp
import ml_collections
import optax

from experiments.probes import train as probe_train
from recur import cells
from recur.train import restore_params


def setups(workdir: str, lengths: list[int], seeds: list[int]) -> dict:
    """``{spec: {T: [(cell, params, xs, loss_fn) per seed]}}`` for the trained run."""
    workdir = pathlib.Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{workdir} is not an experiments.probes workdir (no config.json)")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    task = probe_train.build_task(config)
    if config.model.num_layers != 1:
        raise ValueError("--checkpoint supports single-layer probe models")
    params = restore_params(config, workdir, task)
    encoder = params["encoder"]
    cell_params = encoder["recurrent"]["layer_0"]
    head = params["head"]

    cell = cells.get(
        config.model.cell, task.model.hidden_size, **cells.options_from_config(config.model)
    )
    name = config.task.name
    if name.startswith("mnist"):
        lengths = [784 if name != "mnist_rows" else 28]
    spec = f"{config.model.cell} (trained, {name} T={config.task.T})"
    result = {}
    for T in lengths:
        runs = []
        for seed in seeds:
            point = config.copy_and_resolve_references()
            point.task.T, point.seed = (T if not name.startswith("mnist") else config.task.T), seed
            batch = next(iter(probe_train.build_task(point).eval_batches()))
            runs.append((cell, cell_params, *_inputs_and_loss(name, encoder, head, batch)))
        result[T] = runs
    return {spec: result}


def _inputs_and_loss(name: str, encoder, head, batch):
    targets = batch["targets"]
    if name == "copy":
        xs = encoder["embed"]["embedding"][batch["inputs"]]

        def loss_fn(outputs, final):
            logits = outputs @ head["kernel"] + head["bias"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        return xs, loss_fn
    xs = jnp.asarray(batch["inputs"])

    def loss_fn(outputs, final):
        prediction = final.h @ head["kernel"] + head["bias"]
        if name == "adding":
            return jnp.mean((prediction - targets) ** 2)
        return optax.softmax_cross_entropy_with_integer_labels(prediction, targets).mean()

    return xs, loss_fn
