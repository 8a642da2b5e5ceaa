"""Time-series forecasting: data split and scaling, training with recur.train, evaluation in
original units next to the last-value and linear-autoregression baselines, and the plot."""

import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from recur import cells, files, models
from recur.data import batching, timeseries
from recur.train import Task, batch_mean, fit, restore_params
from recur.train.sharding import is_writer

HEADS = ("last", "every_step")


@dataclasses.dataclass
class Prepared:
    """Windows of each split (scaled), the scaler, dates and the target's column index."""

    splits: dict[str, dict[str, np.ndarray]]
    scaler: timeseries.Scaler
    target: int
    dates: np.ndarray  # first target date of each window, per split
    notes: list[str]


def prepare(config: ml_collections.ConfigDict) -> Prepared:
    data = config.data
    columns = [c.strip() for c in data.columns.split(",") if c.strip()]
    if data.target not in columns:
        raise ValueError(f"data.target {data.target!r} is not among data.columns {columns}")
    load = dict(
        date_column=data.date_column, date_format=data.date_format or None, missing=data.missing
    )
    series = timeseries.load_csv(data.train_path, columns, **load)
    if data.test_path:
        test = timeseries.load_csv(data.test_path, columns, **load)
        test_start = len(series.values)
        series = timeseries.concatenate(series, test)
    elif data.test_start:
        test_start = int(np.searchsorted(series.dates, np.datetime64(data.test_start, "D")))
    else:
        test_start = len(series.values) - int(round(data.test_fraction * len(series.values)))
    valid_start = test_start - int(round(data.valid_fraction * test_start))
    if not 0 < valid_start <= test_start < len(series.values):
        raise ValueError(
            f"impossible split of {len(series.values)} rows: train [0, {valid_start}), "
            f"valid [{valid_start}, {test_start}), test [{test_start}, {len(series.values)})"
        )
    scaler = timeseries.Scaler.fit(data.scaling, series.values[:valid_start])  # train only
    scaled = scaler.transform(series.values)
    target = columns.index(data.target)
    if data.window + data.horizon > valid_start:
        raise ValueError(
            f"{data.train_path}: window {data.window} + horizon {data.horizon} is longer than "
            f"the {valid_start} rows of the training part"
        )
    every_step = config.model.head == "every_step"
    inputs, targets, first = timeseries.windows(
        scaled, data.window, data.horizon, target, every_step=every_step
    )
    last_target = first + data.horizon - 1
    masks = {  # a window belongs to the split where its last target lies
        "train": last_target < valid_start,
        "valid": (last_target >= valid_start) & (last_target < test_start),
        "test": first >= test_start,
    }
    notes = []
    if series.repaired.get("cells_missing"):  # applied before splitting and windowing
        notes.append(
            f"data.missing={data.missing}: {series.repaired['cells_missing']} missing cells; "
            f"{series.repaired['cells_interpolated']} interpolated, "
            f"{series.repaired['rows_dropped']} rows dropped"
        )
    if valid_start == test_start:  # no hold-out: evaluate in-sample during training
        masks["valid"] = masks["train"]
        notes.append("data.valid_fraction is 0: the periodic evaluation is in-sample (train)")
    splits = {k: {"inputs": inputs[m], "targets": targets[m]} for k, m in masks.items()}
    for name, split in splits.items():
        if not len(split["inputs"]):
            raise ValueError(f"the {name} split has no complete window; shorten data.window")
    dates = {name: series.dates[first[m]] for name, m in masks.items()}
    notes += [
        f"data: {series.source}: {len(series.values)} rows, train {valid_start}, valid "
        f"{test_start - valid_start}, test {len(series.values) - test_start}; windows: "
        + ", ".join(f"{k} {len(v['inputs'])}" for k, v in splits.items())
    ]
    return Prepared(splits, scaler, target, dates, notes)


def last_step(targets: np.ndarray) -> np.ndarray:
    """``[M, horizon]`` forecasts of the window's end (many-to-many targets: the last step)."""
    return targets[:, -1] if targets.ndim == 3 else targets


def build_task(config: ml_collections.ConfigDict, prepared: Prepared) -> Task:
    model_config = config.model
    if model_config.head not in HEADS:
        raise ValueError(f"unknown head {model_config.head!r}; available: {', '.join(HEADS)}")
    common = dict(
        cell=model_config.cell,
        hidden_size=model_config.hidden_size,
        num_layers=model_config.num_layers,
        dropout_rate=model_config.dropout_rate,
        fused=model_config.get("fused"),
        cell_options=cells.options_from_config(model_config),
    )
    cells.get(model_config.cell, model_config.hidden_size, **common["cell_options"])
    horizon = config.data.horizon
    if model_config.head == "last":
        model = models.SequenceClassifier(num_classes=horizon, pooling="last", **common)
    else:
        model = models.SequenceTagger(num_outputs=horizon, **common)

    def loss_fn(params, batch, rng, train):
        predictions = model.apply(
            {"params": params}, batch["inputs"], deterministic=not train, rngs={"dropout": rng}
        )
        mse = batch_mean((predictions - batch["targets"]) ** 2, batch)
        return mse, {"mse": mse}

    train = prepared.splits["train"]

    def init_params(key):
        return model.init(key, jnp.asarray(train["inputs"][:1]))["params"]

    return Task(
        model=model,
        init_params=init_params,
        loss_fn=loss_fn,
        train_batch=lambda step: batching.epoch_batch(train, step, config.batch_size, config.seed),
        eval_batches=lambda: [prepared.splits["valid"]],
        metric="mse",
        notes=prepared.notes,
        info={"cell": model_config.cell, "head": model_config.head},
    )


def forecasts(model, params, inputs: np.ndarray) -> np.ndarray:
    return last_step(np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(inputs))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, then writes ``results.json`` and ``forecast.png`` to ``workdir``."""
    prepared = prepare(config)
    if config.num_steps < 1:
        per_epoch = len(prepared.splits["train"]["inputs"]) // config.batch_size
        if per_epoch < 1:
            raise ValueError(f"batch_size {config.batch_size} exceeds the training windows")
        config.num_steps = config.num_epochs * per_epoch
    task = build_task(config, prepared)
    training = fit(config, workdir, task)
    params = restore_params(config, workdir, task)

    def original(values):
        return prepared.scaler.inverse(values, prepared.target)

    train, test = prepared.splits["train"], prepared.splits["test"]
    horizon, target = config.data.horizon, prepared.target
    linear = timeseries.LinearAutoregression.fit(train["inputs"], last_step(train["targets"]))
    truth = original(last_step(test["targets"]))
    predictions = {
        "model": original(forecasts(task.model, params, test["inputs"])),
        "last_value": original(timeseries.last_value_forecast(test["inputs"], horizon, target)),
        "linear": original(linear.predict(test["inputs"])),
    }
    test_errors = {name: timeseries.errors(p, truth) for name, p in predictions.items()}
    results = {
        "test": test_errors,
        "beats_last_value": test_errors["model"]["rmse"] < test_errors["last_value"]["rmse"],
        "beats_linear": test_errors["model"]["rmse"] < test_errors["linear"]["rmse"],
        "test_dates": [str(d) for d in prepared.dates["test"]],
        "test_truth": truth.tolist(),
        "test_predictions": {name: p.tolist() for name, p in predictions.items()},
        "training": training,
        "command": " ".join(["python -m experiments.timeseries.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
    }
    from experiments.timeseries import plot  # noqa: PLC0415 - matplotlib only when needed

    train_fit = original(forecasts(task.model, params, train["inputs"]))
    if is_writer():  # process 0 of a multi-process run
        plot.forecast(workdir, config, prepared, truth, predictions, train_fit)
        files.write_json(pathlib.Path(workdir) / "results.json", results)
    print(
        "test RMSE / MAE / MAPE (original units): "
        + "; ".join(
            f"{name} {e['rmse']:.2f} / {e['mae']:.2f} / {e['mape']:.2f}%"
            for name, e in test_errors.items()
        ),
        flush=True,
    )
    return results
