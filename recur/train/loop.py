"""The training loop shared by experiments: a :class:`Task` in, a trained, checkpointed run out.

Periodic work (log, eval, checkpoint) is counted in steps and always fires on the last step.
Rerunning with the same workdir resumes from the latest checkpoint; because a task's training
batch is a function of the step number and the dropout key is ``fold_in(rng, step)``, a resumed
run continues exactly as if it had never stopped.
"""

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from recur.train import checkpoint, sharding
from recur.train.metrics import MetricWriter, Progress, to_python
from recur.train.optim import make_optimizer
from recur.train.state import Batch, LossFn, TrainState, eval_step, train_step
from recur.types import Params, PRNGKey


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass
class Task:
    """What an experiment gives the loop.

    Attributes:
      model: the Flax module (``apply_fn`` of the state).
      init_params: ``key -> params``.
      loss_fn: ``(params, batch, rng, train) -> (loss, metrics)``; metrics are batch means.
      train_batch: ``step -> batch``, deterministic in the step (exact resume).
      eval_batches: ``() -> iterable of batches`` of the held-out split.
      metric: name of the task metric in the metrics (e.g. ``mse``, ``accuracy``).
      baseline: the task metric's trivial baseline(s), reported next to it.
      notes: lines printed at the start and kept with the results (e.g. data caveats).
      info: facts about the run kept with the results (e.g. hidden size, parameter count).
      on_eval: optional ``(step, state, eval_metrics) -> None`` called after every evaluation
        (e.g. to keep the params with the best held-out accuracy).
      initial_carry: for stateful tasks (truncated BPTT), the carry the training state starts
        with (see :mod:`recur.train.state`); the task's batches say when to reset it.
      summarize: optional ``metrics -> metrics`` applied to the evaluation's means, for
        metrics that are not means over batches (e.g. perplexity = exp(mean loss)).
    """

    model: nn.Module
    init_params: Callable[[PRNGKey], Params]
    loss_fn: LossFn
    train_batch: Callable[[int], Batch]
    eval_batches: Callable[[], Iterable[Batch]]
    metric: str
    baseline: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    on_eval: Callable[[int, TrainState, dict[str, float]], None] | None = None
    initial_carry: Any = None
    summarize: Callable[[dict[str, float]], dict[str, float]] | None = None


def evaluate(
    eval_fn, state: TrainState, batches: Iterable[Batch], mesh, summarize=None
) -> dict[str, float]:
    """Mean of each metric over the batches, weighted by batch size, or by the sum of
    ``batch["weights"]`` where batches are padded with weight-0 rows or hold a weight per
    token (the task's metrics are then weighted means over the batch). A ``carry`` returned by
    one batch is passed to the next (stateful tasks: the first batch starts from zeros).
    ``summarize``, if given, maps the means to the reported metrics."""
    totals: dict[str, float] = {}
    count = 0
    carry = None
    for batch in batches:
        if "weights" in batch:
            size = float(np.sum(batch["weights"]))
        else:
            size = len(jax.tree.leaves(batch)[0])
        batch = sharding.shard_batch(batch, mesh)
        if carry is not None:
            batch = {**batch, "carry": carry}
        metrics = dict(eval_fn(state, batch))
        carry = metrics.pop("carry", None)
        for name, value in to_python(metrics).items():
            totals[name] = totals.get(name, 0.0) + value * size
        count += size
    means = {name: total / count for name, total in totals.items()}
    return summarize(means) if summarize is not None else means


def fit(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task) -> dict:
    """Trains ``task`` for ``config.num_steps`` steps in ``workdir`` (resuming if possible).

    Config fields used: ``seed``, ``num_steps``, ``log_every``, ``eval_every``,
    ``checkpoint_every``, ``optim`` (see :mod:`recur.train.optim`).

    Returns:
      The final results, also written to ``workdir/final_metrics.json``: the last evaluation,
      the baseline, steps, wall time and notes.

    Raises:
      NonFiniteLossError: naming the step; the last good checkpoint stays on disk.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    for note in task.notes:
        print(note, flush=True)
    mesh = sharding.make_mesh()
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    optimizer, schedule = make_optimizer(config.optim, config.num_steps)
    state = TrainState.create(
        apply_fn=task.model.apply,
        params=task.init_params(init_rng),
        tx=optimizer,
        loss_fn=task.loss_fn,
        # One buffer per leaf: the state is donated, and a task may share one zero array.
        carry=jax.tree.map(lambda x: jnp.array(x, copy=True), task.initial_carry),
    )
    manager = checkpoint.make_manager(workdir)
    state = checkpoint.restore_latest(manager, state)
    start = int(state.step)
    if start:
        print(f"resuming from the checkpoint at step {start} in {workdir}", flush=True)
    state = sharding.replicate(state, mesh)
    writer = MetricWriter(workdir, start)
    progress = Progress(start, config.num_steps)
    jit_train_step = jax.jit(train_step, donate_argnums=0)
    jit_eval_step = jax.jit(eval_step)
    started = time.perf_counter()
    segments = TrainSegments(workdir, start)
    eval_metrics: dict[str, float] = {}
    try:
        for step in range(start + 1, config.num_steps + 1):  # ``step`` steps done after this
            batch = sharding.shard_batch(task.train_batch(step - 1), mesh)
            state, metrics = jit_train_step(state, batch, train_rng)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                last = manager.latest_step()
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; stopping. The last good checkpoint "
                    f"(step {last}) is intact in {workdir / 'checkpoints'}"
                )
            last_step = step == config.num_steps
            if step % config.log_every == 0 or last_step:
                values = writer.write(step, "train", {**metrics, "learning_rate": schedule(step)})
                progress.line(step, values, task.metric)
            if step % config.eval_every == 0 or last_step:
                eval_metrics = evaluate(
                    jit_eval_step, state, task.eval_batches(), mesh, task.summarize
                )
                writer.write(step, "eval", eval_metrics)
                print(f"eval at step {step}: {format_metrics(eval_metrics, task)}", flush=True)
                if task.on_eval is not None:
                    task.on_eval(step, state, eval_metrics)
            if step % config.checkpoint_every == 0 or last_step:
                checkpoint.save(manager, state)
                segments.record(step, time.perf_counter() - started)
        if not eval_metrics:  # already complete: evaluate the restored state
            eval_metrics = evaluate(jit_eval_step, state, task.eval_batches(), mesh, task.summarize)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
    results = {
        "eval": eval_metrics,
        "metric": task.metric,
        "baseline": task.baseline,
        "num_steps": config.num_steps,
        "resumed_from_step": start,
        "train_seconds": time.perf_counter() - started,
        # Over every run of this workdir (resumed runs add up), counted to each run's last
        # checkpoint: the time spent on the steps that made the final params.
        "train_seconds_total": segments.total_seconds(),
        "train_segments": segments.rows,
        "devices": [str(device) for device in jax.devices()],
        "notes": task.notes,
        **task.info,
    }
    (workdir / "final_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


class TrainSegments:
    """``workdir/train_segments.json``: one row per run of the workdir, ``{from_step, to_step,
    seconds}`` up to its latest checkpoint; rows past the step a run resumes from are dropped
    (their steps are redone)."""

    def __init__(self, workdir: pathlib.Path, start: int):
        self.path = workdir / "train_segments.json"
        rows = json.loads(self.path.read_text()) if self.path.exists() else []
        self.rows = [row for row in rows if row["to_step"] <= start]
        self.rows.append({"from_step": start, "to_step": start, "seconds": 0.0})

    def record(self, step: int, seconds: float) -> None:
        self.rows[-1].update(to_step=step, seconds=seconds)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.rows, indent=1) + "\n")
        temporary.replace(self.path)

    def total_seconds(self) -> float:
        return sum(row["seconds"] for row in self.rows)


def format_metrics(metrics: dict[str, Any], task: Task) -> str:
    text = ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
    if task.baseline:
        text += " (baseline: " + ", ".join(f"{k} {v:.4g}" for k, v in task.baseline.items()) + ")"
    return text


def restore_params(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task):
    """The params of the latest checkpoint in ``workdir`` (a run of ``task`` with ``config``).

    Raises:
      ValueError: when ``workdir`` holds no checkpoint.
    """
    workdir = pathlib.Path(workdir)
    optimizer, _ = make_optimizer(config.optim, config.num_steps)
    state = TrainState.create(
        apply_fn=task.model.apply,
        params=task.init_params(jax.random.key(0)),
        tx=optimizer,
        carry=task.initial_carry,
    )
    manager = checkpoint.make_manager(workdir)
    try:
        if manager.latest_step() is None:
            raise ValueError(f"no checkpoint in {workdir / 'checkpoints'}")
        return checkpoint.restore_latest(manager, state).params
    finally:
        manager.close()
