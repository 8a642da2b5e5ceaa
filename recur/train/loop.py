"""The training loop shared by experiments: a :class:`Task` in, a trained, checkpointed run out.

Periodic work (log, eval, checkpoint) is counted in steps and always fires on the last step.
Rerunning with the same workdir resumes from the latest checkpoint; because a task's training
batch is a function of the step number and the dropout key is ``fold_in(rng, step)``, a resumed
run continues exactly as if it had never stopped.
"""

import collections
import contextlib
import dataclasses
import json
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from recur import files
from recur.train import averaging, checkpoint, run_config, sharding
from recur.train.metrics import MetricWriter, Progress, to_python
from recur.train.optim import make_optimizer
from recur.train.state import (
    Batch,
    LossFn,
    TrainState,
    batch_weight,
    eval_step,
    split_eval_step,
    split_train_step,
    train_step,
)
from recur.types import Params, PRNGKey


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingStopped(RuntimeError):
    """``fit`` stopped early on SIGTERM or Ctrl-C, after saving a checkpoint of the last step;
    ``signum`` is the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum


class _StopOnSignal:
    """Between :meth:`install` and :meth:`restore`, SIGTERM (a scheduler's preemption,
    ``kill``, a session's end) and the first Ctrl-C (SIGINT) set ``requested`` to the signal's
    number instead of ending the process, so the loop can save the step in progress and
    stop; a Ctrl-C after either interrupts at once (``KeyboardInterrupt``, the last
    checkpoint kept). In the main thread only.

    Several processes must stop after the same step and save it together: :meth:`agree`,
    called by each after every step, gathers their requests (a scheduler may signal one
    process first, or only one), and :meth:`stopping` is the largest signal number any of
    them received, the same in all. One process needs no agreement: :meth:`stopping` is its
    own request, also one that came during an evaluation."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = 0
        self.agreed = 0
        self._previous = {}

    def install(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def agree(self) -> None:
        """Several processes: gathers every process's request (a small collective of its
        own, after the step: every process runs the same programs in the same order)."""
        if jax.process_count() > 1:
            gathered = multihost_utils.process_allgather(np.int32(self.requested))
            self.agreed = int(np.max(gathered))

    def stopping(self) -> int:
        """The signal to stop for (0: none): this process's, or the processes' agreed one."""
        return self.requested if jax.process_count() == 1 else self.agreed

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.requested:  # a stop is already on its way
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = signum
            if signum == signal.SIGINT:
                print(
                    "Ctrl-C: the run saves the step in progress and stops; press Ctrl-C "
                    "again to stop at once (the last checkpoint is kept)",
                    file=sys.stderr, flush=True,
                )  # fmt: skip

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


@dataclasses.dataclass
class Task:
    """What an experiment gives the loop.

    Attributes:
      model: the Flax module (``apply_fn`` of the state).
      init_params: ``key -> params``.
      loss_fn: ``(params, batch, rng, train) -> (loss, metrics)``; the loss and metrics are
        means over the batch's examples or tokens, weighted by ``batch["weights"]`` where present
        (:func:`recur.train.batch_mean`): the loop pads evaluation batches to a multiple of the
        devices with weight-0 rows, and splits every batch over the devices, each device's means
        weighted by its share of the batch's weight (:func:`recur.train.batch_weight`).
      train_batch: ``step -> batch``, deterministic in the step (exact resume).
      eval_batches: ``() -> iterable of batches`` of the held-out split.
      metric: name of the task metric in the metrics (e.g. ``mse``, ``accuracy``).
      baseline: the task metric's trivial baseline(s), reported next to it.
      notes: lines printed at the start and kept with the results (e.g. data caveats).
      info: facts about the run kept with the results (e.g. hidden size, parameter count).
      on_eval: optional ``(step, state, eval_metrics) -> None`` called after every evaluation
        (e.g. to keep the params with the best held-out accuracy); ``state`` is a copy, so it
        may be kept (the loop's own state is donated to the next step).
      initial_carry: for stateful tasks (truncated BPTT), the carry the training state starts
        with (see :mod:`recur.train.state`); the task's batches say when to reset it.
      summarize: optional ``metrics -> metrics`` applied to the evaluation's means (and added
        to the logged training metrics), for metrics that are not means over batches (e.g.
        perplexity = exp(mean loss)).
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
    state: TrainState, batches: Iterable[Batch], mesh: Mesh, summarize=None
) -> dict[str, float]:
    """Mean of each metric over the batches, weighted by batch size, or by the sum of
    ``batch["weights"]`` where batches are padded with weight-0 rows or hold a weight per
    token (the task's metrics are then weighted means over the batch). Each batch is split
    over the first :func:`sharding.eval_device_count` of ``mesh``'s devices (all of them
    unless the batch has too few rows to keep them all busy: one device for one row), padded
    with weight-0 rows to a multiple of their number first. A ``carry`` returned by one batch
    is passed to the next (stateful tasks, whose batches all have the same rows: the first
    batch starts from zeros). ``summarize``, if given, maps the means to the reported
    metrics."""
    placed: dict[int, tuple] = {}

    def on(count: int) -> tuple:
        """The evaluation step and the state on the first ``count`` devices of ``mesh``."""
        if count not in placed:
            if count == mesh.size:  # a no-op for fit's state, already there
                sub, sub_state = mesh, sharding.place_state(state, mesh)
            else:  # the training carry is not evaluated: not placed
                sub = sharding.make_sub_mesh(mesh, count)
                sub_state = sharding.replicate(state.replace(carry=None), sub)
            step = jax.jit(eval_step if count == 1 else split_eval_step(sub))
            placed[count] = sub, step, sub_state
        return placed[count]

    totals: dict[str, float] = {}
    count = 0.0
    carry = None
    for batch in batches:
        rows = len(next(iter(batch.values())))
        sub, step, sub_state = on(sharding.eval_device_count(rows, mesh.size))
        batch = sharding.pad_batch(batch, sub.size)
        size = float(batch_weight(batch))
        batch = sharding.shard_batch(batch, sub)
        if carry is not None:
            batch = {**batch, "carry": carry}
        metrics = dict(step(sub_state, batch))
        carry = metrics.pop("carry", None)
        for name, value in to_python(metrics).items():
            totals[name] = totals.get(name, 0.0) + value * size
        count += size
    means = {name: total / count for name, total in totals.items()}
    return summarize(means) if summarize is not None else means


def _with_nonfinite_record(step_fn):
    """``step_fn`` that also keeps, on the device, the first step whose loss is not finite and
    that loss (``{"step": 0}`` while all are finite): no host round trip per step."""

    def step(state, batch, rng, nonfinite):
        new_state, metrics = step_fn(state, batch, rng)
        loss = metrics["loss"]
        first = (nonfinite["step"] == 0) & ~jnp.isfinite(loss)
        nonfinite = {
            "step": jnp.where(first, new_state.step, nonfinite["step"]),
            "loss": jnp.where(first, loss, nonfinite["loss"]),
        }
        return new_state, metrics, nonfinite

    return step


def record_validation(state: TrainState, eval_metrics: dict, mesh: Mesh, step: int) -> TrainState:
    """After an evaluation: the averaging optimizer's trigger sees the validation loss
    (:func:`recur.train.averaging.record_validation`); a note when averaging starts. Other
    optimizers' states are returned as they are."""
    before = averaging.find(state.opt_state)
    if before is None:
        return state
    if "loss" not in eval_metrics:
        raise ValueError(
            "optim.averaging needs the evaluation's 'loss'; the task's summarize dropped it "
            f"(metrics: {', '.join(sorted(eval_metrics))})"
        )
    loss = eval_metrics["loss"]
    state = sharding.place_state(averaging.record_validation(state, loss), mesh)
    if bool(averaging.find(state.opt_state).active) and not bool(before.active):
        if sharding.is_writer():
            print(f"averaging the params from step {step + 1} on (validation loss {loss:.4g} "
                  "is worse than the best before the last evaluations)", flush=True)  # fmt: skip
    return state


def create_state(config: ml_collections.ConfigDict, task: Task, key: PRNGKey) -> TrainState:
    """The task's initial training state: params from ``task.init_params(key)``, the optimizer
    of ``config.optim`` over ``config.num_steps`` steps, and the task's initial carry."""
    optimizer, _ = make_optimizer(config.optim, config.num_steps)
    return TrainState.create(
        apply_fn=task.model.apply,
        params=jax.jit(task.init_params)(key),  # one compile, not one per op
        tx=optimizer,
        loss_fn=task.loss_fn,
        # One buffer per leaf: the state is donated, and a task may share one zero array.
        carry=jax.tree.map(lambda x: jnp.array(x, copy=True), task.initial_carry),
    )


def training_mesh(task: Task, step: int = 0, num_devices: int | None = None) -> Mesh:
    """The mesh the training batches split over: ``num_devices`` (default: every device), or
    the most of them that divide the batch size (a note says so)."""
    rows = len(jax.tree.leaves(task.train_batch(step))[0])
    wanted = num_devices or jax.device_count()
    mesh = sharding.mesh_for_batch(rows, wanted)
    if mesh.size < wanted:
        print(
            f"note: batch size {rows} does not split over {wanted} devices; "
            f"training on {mesh.size}",
            flush=True,
        )
    return mesh


class TrainingSteps:
    """The loop's training steps over ``task.train_batch``, from ``state`` (placed on ``mesh``):
    each :meth:`advance` runs one jitted step (the batch split over the mesh's devices when
    there are several; the state donated) and makes the next batch while it runs.

    No host round trip per step: the first step whose loss is not finite, and that loss, are
    kept on the device (``nonfinite``, ``{"step": 0}`` while all are finite) and read by
    :meth:`first_nonfinite` when the loop asks (at log, eval and checkpoint steps).

    The host stays at most two steps ahead of the device (``AHEAD``): :meth:`advance` returns
    once the step two before the one it queued has finished. Left alone, JAX queues about 30
    steps before dispatch blocks, and a SIGTERM or Ctrl-C, which the loop answers by saving
    the step it has queued, waited for all of them: 40 s at PTB's 1.3 s step, minutes on a
    shared machine, past the 30 s a scheduler (SLURM, Kubernetes) grants before SIGKILL. Two
    steps ran as fast as an unbounded queue on the adding LSTM's 9 ms step, one 3% slower
    (side by side, one device). With several devices one step is in flight at a time: with
    several steps queued, XLA:CPU's devices (one per core, sharing as many threads)
    deadlocked in the step's all-reduce.
    """

    AHEAD = 2

    def __init__(self, task: Task, state: TrainState, mesh: Mesh, rng: PRNGKey):
        self.task, self.mesh, self.rng = task, mesh, rng
        self.state = sharding.place_state(state, mesh)
        self.step = int(state.step)  # steps done
        step_fn = train_step if mesh.size == 1 else split_train_step(mesh)
        self._jitted = jax.jit(_with_nonfinite_record(step_fn), donate_argnums=(0, 3))
        self.nonfinite = sharding.replicate({"step": jnp.int32(0), "loss": jnp.float32(0)}, mesh)
        self._batch = self._make_batch(self.step)
        self._queued = collections.deque()  # the metrics of the steps not waited for yet

    def _make_batch(self, step: int):
        return sharding.shard_batch(self.task.train_batch(step), self.mesh)

    def advance(self, make_next: bool = True) -> dict:
        """One step; returns its metrics (device arrays). ``make_next``: prepare the next
        step's batch while this one runs (False for the last step)."""
        self.state, metrics, self.nonfinite = self._jitted(
            self.state, self._batch, self.rng, self.nonfinite
        )
        self.step += 1
        if make_next:
            self._batch = self._make_batch(self.step)
        if self.mesh.size > 1:
            self.nonfinite["step"].block_until_ready()
        else:  # two steps back (their metrics: the state's buffers are donated)
            self._queued.append(metrics)
            if len(self._queued) > self.AHEAD:
                jax.block_until_ready(self._queued.popleft())
        return metrics

    def warm_up(self, batch) -> None:
        """Compiles the step for ``batch``'s shapes by running it once on a copy of the state;
        the training state and position stay as they were. For a task whose batches come in
        several shapes (bucketed lengths), so that timing after it sees no compilation."""
        copies = jax.tree.map(jnp.copy, (self.state, self.nonfinite))
        outputs = self._jitted(copies[0], sharding.shard_batch(batch, self.mesh), self.rng,
                               copies[1])  # fmt: skip
        jax.block_until_ready(outputs)

    def memory_estimate(self) -> int | None:
        """XLA's estimate of one step's memory (arguments, outputs and temporaries; all
        devices' together), in bytes; None where the backend gives none."""
        compiled = self._jitted.lower(self.state, self._batch, self.rng, self.nonfinite).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            return None
        per_device = (
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
            - analysis.alias_size_in_bytes
        )
        return int(per_device) * self.mesh.size

    def first_nonfinite(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss so far, or None (a host round trip)."""
        step = int(self.nonfinite["step"])
        return (step, float(self.nonfinite["loss"])) if step else None


def fit(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    num_devices: int | None = None,
) -> dict:
    """Trains ``task`` for ``config.num_steps`` steps in ``workdir`` (resuming if possible),
    with each batch split over ``num_devices`` devices (default: ``config.num_devices``, where 0
    or absent means all; on CPU one per core, see :func:`recur.train.sharding.use_cpu_cores`).

    Config fields used: ``seed``, ``num_steps``, ``log_every``, ``eval_every``,
    ``checkpoint_every``, ``optim`` (see :mod:`recur.train.optim`), ``num_devices``.

    Returns:
      The final results, also written to ``workdir/final_metrics.json``: the last evaluation,
      the baseline, steps, wall time and notes.

    Resuming a workdir whose ``config.json`` differs from ``config`` in a field that changes
    what is trained raises ``ValueError`` (see :mod:`recur.train.run_config`).

    Raises:
      NonFiniteLossError: naming the step; the last good checkpoint stays on disk.
      TrainingStopped: SIGTERM or a Ctrl-C came: the step in progress was finished and
        saved, and a rerun resumes from it (several processes: a signal to any of them stops
        all after the same step). A second Ctrl-C raises ``KeyboardInterrupt`` at once.
      ValueError: the workdir holds a run with other settings, or another run holds it
        (:class:`recur.files.WorkdirInUse`).
    """
    workdir = pathlib.Path(workdir)
    writes = sharding.is_writer()  # process 0 of a multi-process run; always in one process
    with files.lock_workdir(workdir) if writes else contextlib.nullcontext():
        return _fit(config, workdir, task, num_devices, writes)


def _fit(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    task: Task,
    num_devices: int | None,
    writes: bool,
) -> dict:
    manager = checkpoint.make_manager(workdir)
    latest = manager.latest_step() or 0
    try:
        changes = run_config.check_resume(workdir, config) if latest else []
    except ValueError:
        manager.close()
        raise
    if writes:
        for change in changes:
            print(f"warning: continuing the checkpoint with a changed field: {change}", flush=True)
        run_config.write(workdir, config)
        for note in task.notes:
            print(note, flush=True)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    _, schedule = make_optimizer(config.optim, config.num_steps)
    mesh = training_mesh(task, latest, num_devices or config.get("num_devices") or None)
    state = sharding.place_state(create_state(config, task, init_rng), mesh)
    state = checkpoint.restore_latest(manager, state)
    start = int(state.step)
    if start and writes:
        print(f"resuming from the checkpoint at step {start} in {workdir}", flush=True)
    steps = TrainingSteps(task, state, mesh, train_rng)
    writer = MetricWriter(workdir, start, enabled=writes)
    progress = Progress(start, config.num_steps)
    started = time.perf_counter()
    segments = TrainSegments(workdir, start, enabled=writes)
    eval_metrics: dict[str, float] = {}
    other_seconds = 0.0  # evaluating and checkpointing

    def check_finite():  # the one host round trip, at log, eval and checkpoint steps
        bad = steps.first_nonfinite()
        if bad:
            last = manager.latest_step()
            kept = (
                f"The last good checkpoint (step {last}) is intact in {workdir / 'checkpoints'}"
                if last is not None
                else "There is no checkpoint yet: none was due before it"
            )
            raise NonFiniteLossError(f"loss is {bad[1]} at step {bad[0]}; stopping. {kept}")

    stop = _StopOnSignal().install()
    try:
        for step in range(start + 1, config.num_steps + 1):  # ``step`` steps done after this
            metrics = steps.advance(make_next=step < config.num_steps)
            stop.agree()
            last_step = step == config.num_steps
            log = step % config.log_every == 0 or last_step
            run_eval = step % config.eval_every == 0 or last_step
            save = step % config.checkpoint_every == 0 or last_step or stop.stopping()
            if log or run_eval or save:
                check_finite()
            if log:
                # The rate of this step's update (optax counts updates from 0).
                values = to_python({**metrics, "learning_rate": schedule(step - 1)})
                if task.summarize is not None:
                    values.update(task.summarize(values))
                writer.write(step, "train", values)
                if writes:
                    progress.line(step, values, task.metric)
            if run_eval or save:  # the steps so far count as training time, not what follows
                jax.block_until_ready(steps.state)
            if run_eval:
                clock = time.perf_counter()
                eval_metrics = evaluate(steps.state, task.eval_batches(), mesh, task.summarize)
                writer.write(step, "eval", eval_metrics)
                if writes:
                    print(f"eval at step {step}: {format_metrics(eval_metrics, task)}", flush=True)
                if task.on_eval is not None:  # a copy: the next step donates the state's buffers
                    task.on_eval(step, jax.tree.map(_copy, steps.state), eval_metrics)
                steps.state = record_validation(steps.state, eval_metrics, mesh, step)
                other_seconds += time.perf_counter() - clock
            if save or stop.stopping():  # one process: also a signal during the evaluation
                clock = time.perf_counter()
                checkpoint.save(manager, steps.state)
                other_seconds += time.perf_counter() - clock
                elapsed = time.perf_counter() - started
                segments.record(step, elapsed, elapsed - other_seconds)
            signum = stop.stopping()
            if signum and not last_step:
                manager.wait_until_finished()
                raise TrainingStopped(
                    f"stopped by {signal.Signals(signum).name} after step {step}; its "
                    f"checkpoint is saved in {workdir / 'checkpoints'}: rerun the same command "
                    "to resume",
                    signum,
                )
        if not eval_metrics:  # already complete: evaluate the restored state
            eval_metrics = evaluate(steps.state, task.eval_batches(), mesh, task.summarize)
    finally:
        stop.restore()
        manager.wait_until_finished()
        manager.close()
        writer.close()
    results = {
        "eval": eval_metrics,
        "metric": task.metric,
        "baseline": task.baseline,
        "num_steps": config.num_steps,
        "resumed_from_step": start,
        "config_changes_on_resume": changes,
        "train_seconds": time.perf_counter() - started,
        # Over every run of this workdir (resumed runs add up), counted to each run's last
        # checkpoint: the time spent on the steps that made the final params; with evaluation
        # and checkpoints (train_seconds_total), and in the training steps alone (first
        # compilation included).
        "train_seconds_total": segments.total_seconds(),
        "step_seconds_total": segments.total_seconds("step_seconds"),
        "train_segments": segments.rows,
        "devices": [str(device) for device in mesh.devices.flat],
        "processes": jax.process_count(),
        "notes": task.notes,
        **task.info,
    }
    averaged = averaging.find(steps.state.opt_state)
    if averaged is not None:  # the first update averaged, and how many iterates were
        results["averaging"] = {
            "from_step": int(averaged.switch_step) + 1 if bool(averaged.active) else None,
            "iterates": int(averaged.count),
        }
    if writes:
        files.write_json(workdir / "final_metrics.json", results)
    return results


class TrainSegments:
    """``workdir/train_segments.json``: one row per run of the workdir, ``{from_step, to_step,
    seconds, step_seconds}`` up to its latest checkpoint (``step_seconds``: without evaluation
    and checkpointing); rows past the step a run resumes from are dropped (their steps are
    redone)."""

    def __init__(self, workdir: pathlib.Path, start: int, enabled: bool = True):
        self.path, self.enabled = workdir / "train_segments.json", enabled
        rows = json.loads(self.path.read_text()) if self.path.exists() else []
        self.rows = [row for row in rows if row["to_step"] <= start]
        self.rows.append(
            {"from_step": start, "to_step": start, "seconds": 0.0, "step_seconds": 0.0}
        )

    def record(self, step: int, seconds: float, step_seconds: float) -> None:
        self.rows[-1].update(to_step=step, seconds=seconds, step_seconds=step_seconds)
        if not self.enabled:
            return
        files.write_json(self.path, self.rows, indent=1)

    def total_seconds(self, field: str = "seconds") -> float:
        """The sum of ``field`` over the rows (rows written before it existed count 0)."""
        return sum(row.get(field, 0.0) for row in self.rows)


def _copy(leaf):
    return leaf.copy() if isinstance(leaf, jax.Array) else leaf


def format_metrics(metrics: dict[str, Any], task: Task) -> str:
    text = ", ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
    if task.baseline:
        text += " (baseline: " + ", ".join(f"{k} {v:.4g}" for k, v in task.baseline.items()) + ")"
    return text


def restore_params(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    task: Task,
    *,
    averaged: bool = True,
):
    """The params to evaluate of the latest checkpoint in ``workdir`` (a run of ``task`` with
    ``config``): the average where the optimizer had started averaging
    (:func:`recur.train.averaging.eval_params`); with ``averaged=False`` the last iterate
    (the params the optimizer updates) in every case.

    Raises:
      ValueError: when ``workdir`` holds no checkpoint.
    """
    workdir = pathlib.Path(workdir)
    state = create_state(config, task, jax.random.key(0))
    manager = checkpoint.make_manager(workdir)
    try:
        if manager.latest_step() is None:
            raise ValueError(f"no checkpoint in {workdir / 'checkpoints'}")
        restored = checkpoint.restore_latest(manager, state)
        return averaging.eval_params(restored) if averaged else restored.params
    finally:
        manager.close()
