"""Training library: optimizers, train_step, exact resume, non-finite loss, sharding."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_probes import fake_mnist

from experiments.probes import config as probe_config
from experiments.probes import train as probe_train
from recur import files
from recur.train import (
    NonFiniteLossError,
    TrainingStopped,
    TrainState,
    allow_config_changes,
    checkpoint,
    fit,
    loop,
    make_optimizer,
    make_schedule,
    malloc,
    tensorboard,
    train_step,
)

ROOT = pathlib.Path(__file__).parents[1]


def smoke(arg: str = "", **overrides):
    config = probe_config.get_config("smoke" + ("," + arg if arg else ""))
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_steps(name):
    config = smoke(optim__name=name, optim__momentum=0.9, optim__weight_decay=0.01)
    optimizer, _ = make_optimizer(config.optim, 10)
    params = {"w": np.ones(3, np.float32)}
    updates, _ = optimizer.update({"w": np.ones(3, np.float32)}, optimizer.init(params), params)
    assert np.all(np.asarray(updates["w"]) < 0)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_is_an_l2_penalty_added_after_clipping(name):
    config = smoke(optim__name=name, optim__learning_rate=0.5, optim__weight_decay=1.0,
                   optim__clip_norm=1.0)  # fmt: skip
    optimizer, _ = make_optimizer(config.optim, 10)
    params = {"w": np.full(4, 2.0, np.float32)}
    grads = {"w": np.zeros(4, np.float32)}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    if name == "sgd":  # the penalty's gradient, 1.0 * w = 2 per element (norm 4 > clip_norm:
        # clipped it would be 0.5), times -lr
        np.testing.assert_allclose(updates["w"], -1.0, rtol=1e-6)
    else:  # Adam normalises the penalty's gradient: a first step of -lr per element
        np.testing.assert_allclose(updates["w"], -0.5, rtol=1e-4)
    config.optim.weight_decay = 0.0
    optimizer, _ = make_optimizer(config.optim, 10)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    np.testing.assert_array_equal(updates["w"], 0.0)


def test_schedules_and_clipping():
    config = smoke(
        optim__schedule="step", optim__decay_every=10, optim__decay_factor=0.5,
        optim__decay_start=20, optim__learning_rate=1.0,
    )  # fmt: skip
    schedule = make_schedule(config.optim, 100)
    rates = [float(schedule(s)) for s in (0, 19, 20, 29, 30, 45)]
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]  # first decay at decay_start
    config.optim.decay_start = -1  # the default: one period (10 steps) at the peak rate first
    schedule = make_schedule(config.optim, 100)
    assert [float(schedule(s)) for s in (0, 9, 10, 20)] == [1.0, 1.0, 0.5, 0.25]
    assert probe_config.get_config().optim.decay_start == -1
    config.optim.schedule, config.optim.warmup_steps = "warmup_cosine", 10
    schedule = make_schedule(config.optim, 100)
    assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)
    config.optim.schedule, config.optim.name, config.optim.clip_norm = "constant", "sgd", 1.0
    optimizer, _ = make_optimizer(config.optim, 100)
    params = {"w": np.zeros(4, np.float32)}
    updates, _ = optimizer.update(
        {"w": np.full(4, 10.0, np.float32)}, optimizer.init(params), params
    )
    assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)
    for field, value, match in [
        ("name", "adagrad", "unknown optimizer 'adagrad'"),
        ("schedule", "linear", "unknown schedule 'linear'"),
    ]:
        config.optim[field] = value
        with pytest.raises(ValueError, match=match):
            make_optimizer(config.optim, 10)
        config.optim.name, config.optim.schedule = "sgd", "constant"


@pytest.mark.parametrize("task", ["adding", "copy", "mnist_rows"])
def test_one_train_step_changes_every_parameter(task, tmp_path):
    fake_mnist(tmp_path)
    config = smoke(f"task={task}", task__mnist_dir=str(tmp_path))
    built = probe_train.build_task(config)
    optimizer, _ = make_optimizer(config.optim, config.num_steps)
    params = built.init_params(jax.random.key(0))
    state = TrainState.create(
        apply_fn=built.model.apply, params=params, tx=optimizer, loss_fn=built.loss_fn
    )
    new_state, metrics = jax.jit(train_step)(state, built.train_batch(0), jax.random.key(1))
    assert int(new_state.step) == 1
    for name in ("loss", built.metric, "grad_norm", "param_norm", "update_norm"):
        assert np.isfinite(metrics[name]), name
    for old, new in zip(jax.tree.leaves(params), jax.tree.leaves(new_state.params), strict=True):
        assert not np.allclose(old, new)


class Interrupt(Exception):
    pass


def test_logged_learning_rate_is_the_one_each_step_applied(tmp_path):
    config = smoke(num_steps=5, log_every=1, optim__name="sgd", optim__schedule="step",
                   optim__decay_every=2, optim__learning_rate=1.0)  # fmt: skip
    fit(config, tmp_path, probe_train.build_task(config))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rates = [row["learning_rate"] for row in rows if row["split"] == "train"]
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]  # steps 1-5 update with counts 0-4


def test_interrupt_and_resume_gives_the_same_parameters(tmp_path):
    config = smoke(num_steps=8, checkpoint_every=3, log_every=1, eval_every=4)
    fit(config, tmp_path / "whole", probe_train.build_task(config))
    task = probe_train.build_task(config)
    train_batch = task.train_batch

    def failing_batch(index):  # dies while step 5 runs: step 4 logged, the checkpoint at 3
        if index == 5:
            raise Interrupt
        return train_batch(index)

    task.train_batch = failing_batch
    with pytest.raises(Interrupt):
        fit(config, tmp_path / "split", task)
    results = fit(config, tmp_path / "split", probe_train.build_task(config))
    assert results["resumed_from_step"] == 3
    # Wall time adds up over both runs, each counted to its last checkpoint.
    segments = results["train_segments"]
    assert [(row["from_step"], row["to_step"]) for row in segments] == [(0, 3), (3, 8)]
    assert results["train_seconds_total"] == pytest.approx(sum(r["seconds"] for r in segments))
    assert all(row["seconds"] > row["step_seconds"] > 0 for row in segments)
    assert results["step_seconds_total"] == pytest.approx(sum(r["step_seconds"] for r in segments))

    def final_params(workdir):
        built = probe_train.build_task(config)
        optimizer, _ = make_optimizer(config.optim, config.num_steps)
        state = TrainState.create(
            apply_fn=built.model.apply, params=built.init_params(jax.random.key(9)), tx=optimizer
        )
        manager = checkpoint.make_manager(workdir)
        state = checkpoint.restore_latest(manager, state)
        manager.close()
        assert int(state.step) == 8
        return state.params

    whole, split = final_params(tmp_path / "whole"), final_params(tmp_path / "split")
    jax.tree.map(np.testing.assert_array_equal, whole, split)
    rows = [json.loads(x) for x in (tmp_path / "split/metrics.jsonl").read_text().splitlines()]
    train_steps = [row["step"] for row in rows if row["split"] == "train"]
    assert train_steps == list(range(1, 9))  # the first row of step 4 was dropped on resume
    whole_rows = (tmp_path / "whole/metrics.jsonl").read_text().splitlines()
    losses = [json.loads(x)["loss"] for x in whole_rows if '"train"' in x]
    assert losses == [row["loss"] for row in rows if row["split"] == "train"]
    shown = tensorboard_scalars(tmp_path / "split/tensorboard")["train/loss"]
    assert [step for step, _ in shown] == train_steps  # the first step 4 hidden
    np.testing.assert_allclose([value for _, value in shown], losses, rtol=1e-6)


def tensorboard_scalars(directory):
    """``{tag: [(step, value), ...]}`` as TensorBoard shows the event files in ``directory``:
    read in the order written, where a session start at step ``s`` hides the values read before
    it at steps ``>= s`` (TensorBoard's purge of a restarted run's orphaned steps)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: PLC0415
    from tensorboardX.record_writer import masked_crc32c  # noqa: PLC0415

    def events(path):  # TFRecord: length (8 bytes), its CRC (4), the record, its CRC (4)
        data, at = path.read_bytes(), 0
        while at < len(data):
            head = data[at : at + 8]
            record = data[at + 12 : at + 12 + int.from_bytes(head, "little")]
            crcs = [
                int.from_bytes(data[i : i + 4], "little") for i in (at + 8, at + 12 + len(record))
            ]
            assert crcs == [masked_crc32c(head), masked_crc32c(record)], f"{path}: bad CRC at {at}"
            yield Event.FromString(record)
            at += 16 + len(record)

    runs = [list(events(path)) for path in directory.glob("events.out.tfevents.*")]
    shown = {}
    for event in (e for run in sorted(runs, key=lambda r: r[0].wall_time) for e in run):
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            shown = {tag: [p for p in points if p[0] < event.step] for tag, points in shown.items()}
        for value in event.summary.value:
            shown.setdefault(value.tag, []).append((event.step, value.simple_value))
    return shown


def test_event_files_read_back_as_tensorboard_reads_them(tmp_path):
    # recur writes the TFRecord framing and the protocol buffers itself; tensorboardX's protos
    # and CRC (in tensorboard_scalars) read them back.
    from tensorboardX.proto.event_pb2 import Event  # noqa: PLC0415

    first = tensorboard.EventWriter(tmp_path)
    first.scalars(1, {"train/loss": 2.5, "train/accuracy": 0.25})
    first.scalars(2, {"eval/nan": float("nan"), "eval/big": 1e300, "eval/tiny": -1e-3})
    first.scalars(2**40, {"train/loss": 1.0})
    first.close()
    second = tensorboard.EventWriter(tmp_path, purge_step=3)  # the same process and second
    second.scalars(3, {"train/loss": 0.5})
    second.close()
    assert first.path != second.path and first.path.name.startswith("events.out.tfevents.")
    shown = tensorboard_scalars(tmp_path)
    assert shown["train/accuracy"] == [(1, 0.25)]
    # The second session starts at step 3: the first one's step 2**40 is hidden.
    assert shown["train/loss"] == [(1, 2.5), (3, 0.5)]
    assert shown["eval/big"] == [(2, np.inf)]  # float32, as TensorBoard keeps scalars
    assert shown["eval/tiny"] == [(2, pytest.approx(-1e-3))]
    assert np.isnan(shown["eval/nan"][0][1])
    data = first.path.read_bytes()
    version = Event.FromString(data[12 : 12 + int.from_bytes(data[:8], "little")])
    assert version.file_version == "brain.Event:2"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = smoke(num_steps=8, checkpoint_every=1, optim__clip_norm=0.0)
    task = probe_train.build_task(config)
    # Poison the data from step 4 on: NaN inputs give a NaN loss.
    train_batch = task.train_batch

    def poisoned(step):
        batch = train_batch(step)
        return {**batch, "inputs": batch["inputs"] * np.nan} if step >= 3 else batch

    task.train_batch = poisoned
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4; .*\(step 3\) is intact"):
        fit(config, tmp_path, task)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


def test_non_finite_loss_is_named_by_its_exact_step_between_checks(tmp_path):
    # The loss is read back only at log, eval and checkpoint steps (every 3rd here); the first
    # non-finite step (5) is recorded on the device and named at the check after it (step 6).
    config = smoke(num_steps=9, checkpoint_every=3, log_every=3, eval_every=9,
                   optim__clip_norm=0.0)  # fmt: skip
    task = probe_train.build_task(config)
    train_batch = task.train_batch

    def poisoned(step):  # batch of step 5 (0-based 4) and after: NaN inputs
        batch = train_batch(step)
        return {**batch, "inputs": batch["inputs"] * np.nan} if step >= 4 else batch

    task.train_batch = poisoned
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5; .*\(step 3\) is intact"):
        fit(config, tmp_path, task)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [3]  # nothing logged from a bad state


def test_non_finite_loss_before_any_checkpoint_says_there_is_none(tmp_path):
    config = smoke(num_steps=6, checkpoint_every=3, log_every=3, optim__clip_norm=0.0)
    task = probe_train.build_task(config)
    train_batch = task.train_batch
    task.train_batch = lambda step: {
        **train_batch(step),
        "inputs": train_batch(step)["inputs"] * np.nan,
    }
    with pytest.raises(
        NonFiniteLossError, match=r"at step 1; stopping. There is no checkpoint yet"
    ):
        fit(config, tmp_path, task)


def test_every_experiment_on_two_devices_matches_one_device():
    """tests/multi_device_check.py in a process of its own (two JAX CPU devices)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/multi_device_check.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"probes_adding", "lm", "sentiment", "timeseries", "translate", "caption"}
    for name, record in report.items():
        # Sums in another order: float32 rounding only.
        assert record["max_rel_error"] < 2e-5, (name, record)
        assert record["values"] > 2 * len(record["steps"]), (name, record)  # metrics compared
    # One collective per step: the weights' sum travels with the gradients.
    assert report["probes_adding"]["train_step_all_reduces"] == 1
    lm = report["lm"]
    assert len(lm["steps"]) > 10  # two epochs: the carry is reset and carried on both devices
    assert lm["eval_three_streams_rel_error"] < 2e-5  # three streams padded to four rows
    assert lm["eval_one_stream_rel_error"] < 2e-5
    assert lm["eval_devices_per_rows"] == {"1": 1, "2": 2, "3": 2}  # one stream: one device
    assert lm["dropout_repeats"]


def run_module(module, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def run_module_on_a_full_disk(max_file_bytes, module, *args):
    """``run_module`` in a process that cannot grow any file past ``max_file_bytes``: each
    write past it fails with ``OSError`` (EFBIG), as on a disk that filled up mid-write."""
    code = (
        "import resource, runpy, signal, sys;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes}));"
        f"sys.argv = {[module, *args]!r};"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def run_module_killed(step, moment, module, *args, sig=signal.SIGKILL):
    """``run_module`` in a process that sends itself ``sig`` (SIGKILL) at step ``step``: right
    after the step ran (``moment="step"``), or while its checkpoint is being written
    (``moment="save"``, orbax's write in flight)."""
    return subprocess.run(
        [sys.executable, "-c", killing_code(step, moment, module, *args, sig=sig)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def killing_code(step, moment, module, *args, sig=signal.SIGKILL):
    """Python code for ``-c`` that runs ``module`` with ``args`` as ``run_module_killed`` does."""
    return f"""
import os, runpy, signal, sys
from recur.train import checkpoint, loop
advance, save = loop.TrainingSteps.advance, checkpoint.save

def kill_after_step(self, *args, **kwargs):
    metrics = advance(self, *args, **kwargs)
    if {moment!r} == "step" and self.step == {step}:
        os.kill(os.getpid(), {int(sig)})
    return metrics

def kill_while_saving(manager, state):
    save(manager, state)
    if {moment!r} == "save" and int(state.step) == {step}:
        os.kill(os.getpid(), {int(sig)})

loop.TrainingSteps.advance, loop.checkpoint.save = kill_after_step, kill_while_saving
sys.argv = {[module, *args]!r}
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


def test_command_line_stops_on_ctrl_c_and_sigterm_with_their_exit_codes(tmp_path):
    """An experiment's command line stopped by Ctrl-C exits 130, by SIGTERM 143, each with the
    one line that says where the step is saved; the rerun resumes there."""
    args = ["experiments.probes.main", "--config=experiments/probes/config.py:smoke,task=copy",
            "--config.num_steps=8", f"--workdir={tmp_path}"]  # fmt: skip
    interrupted = run_module_killed(3, "step", *args, sig=signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert interrupted.stderr.strip().splitlines()[-1].startswith("stopped by SIGINT after step 3")
    terminated = run_module_killed(5, "step", *args, sig=signal.SIGTERM)
    assert terminated.returncode == 143, terminated.stderr[-2000:]
    assert "resuming from the checkpoint at step 3" in terminated.stdout
    assert terminated.stderr.strip().splitlines()[-1] == (
        f"stopped by SIGTERM after step 5; its checkpoint is saved in {tmp_path / 'checkpoints'}:"
        " rerun the same command to resume"
    )


TWO_PROCESS_RUNS = {
    # Each process asks for one device (num_devices=1): the mesh still takes one per process.
    "probes": ("experiments.probes.main", "--config=experiments/probes/config.py:smoke,task=copy",
               "--config.num_devices=1"),
    # The LM: carried state, then restore_params and evaluate_split after fit.
    "lm": ("experiments.lm.main", "--config=experiments/lm/config.py:smoke"),
}  # fmt: skip


@pytest.mark.parametrize("experiment", sorted(TWO_PROCESS_RUNS))
def test_two_processes_give_the_losses_of_one_process(tmp_path, experiment):
    """--distributed: two processes on localhost (one CPU device each, collectives over TCP)
    train as one process with two devices; only process 0 writes the run's outputs. The probe
    run is first stopped by a SIGTERM to process 1 alone, after step 4 (off the checkpoint
    schedule): both processes stop after that step, save it, exit 143, and the rerun resumes
    there."""
    if experiment == "lm" and not (ROOT.parent / "shared/data/ptb").is_dir():
        pytest.skip("../shared/data/ptb is absent")
    module, config, *overrides = TWO_PROCESS_RUNS[experiment]

    def launch(signal_process_1):
        with socket.socket() as probe:  # a free port for the coordinator
            probe.bind(("localhost", 0))
            port = probe.getsockname()[1]
        processes = []
        for index in (0, 1):
            args = [config, *overrides, "--cpu_devices=1", f"--workdir={tmp_path / 'two'}",
                    "--distributed", f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={index}"]  # fmt: skip
            if index == 1 and signal_process_1:
                command = ["-c", killing_code(4, "step", module, *args, sig=signal.SIGTERM)]
            else:
                command = ["-m", module, *args]
            processes.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
        outputs = [process.communicate(timeout=300) for process in processes]
        return [process.returncode for process in processes], outputs

    if experiment == "probes":
        codes, outputs = launch(signal_process_1=True)
        assert codes == [143, 143], outputs[0][1][-2000:] + outputs[1][1][-2000:]
        for _, stderr in outputs:
            assert stderr.strip().splitlines()[-1].startswith("stopped by SIGTERM after step 4;")
        assert (tmp_path / "two/checkpoints/4").is_dir()
    codes, outputs = launch(signal_process_1=False)
    assert codes == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    if experiment == "probes":
        assert "resuming from the checkpoint at step 4" in outputs[0][0]
    assert "step 6/6 | loss" in outputs[0][0] and "step 6/6" not in outputs[1][0]
    one = run_module(module, config, "--config.num_devices=2", "--cpu_devices=2",
                     f"--workdir={tmp_path / 'one'}")  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    final = json.loads((tmp_path / "two/final_metrics.json").read_text())
    assert final["processes"] == 2 and len(final["devices"]) == 2

    def logged(workdir):
        rows = (workdir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(row)["loss"] for row in rows]

    assert len(logged(tmp_path / "two")) == len(logged(tmp_path / "one")) > 3
    np.testing.assert_allclose(logged(tmp_path / "two"), logged(tmp_path / "one"), rtol=1e-5)
    saved = {"probes": ["4", "6"], "lm": ["3", "6"]}[experiment]  # the newest two
    assert sorted(p.name for p in (tmp_path / "two/checkpoints").iterdir()) == saved
    if experiment == "lm":  # the evaluation after fit, over both processes
        two, one = (json.loads((tmp_path / name / "results.json").read_text())
                    for name in ("two", "one"))  # fmt: skip
        for split in ("valid", "test"):
            assert two[split]["perplexity"] == pytest.approx(one[split]["perplexity"], rel=1e-5)


def test_sigterm_saves_the_last_step_stops_and_the_rerun_resumes_exactly(tmp_path):
    """A preempted run (SIGTERM) saves a checkpoint of the step it was on, off the checkpoint
    schedule, and stops with TrainingStopped; the rerun resumes there and ends where an
    uninterrupted run does. SIGTERM's previous handler is back afterwards."""
    config = smoke(num_steps=9, checkpoint_every=4, log_every=3, eval_every=3)
    fit(config, tmp_path / "whole", probe_train.build_task(config))
    task = probe_train.build_task(config)
    train_batch = task.train_batch

    def terminated_batch(index):  # made while step 6 runs: the signal arrives mid-step
        if index == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_batch(index)

    task.train_batch = terminated_batch
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after step 6; its checkpoint"):
        fit(config, tmp_path / "stopped", task)
    assert signal.getsignal(signal.SIGTERM) is before
    assert _final_params(config, tmp_path / "stopped")[0] == 6  # not the scheduled 4
    results = fit(config, tmp_path / "stopped", probe_train.build_task(config))
    assert results["resumed_from_step"] == 6
    a, b = _final_params(config, tmp_path / "whole"), _final_params(config, tmp_path / "stopped")
    assert a[0] == b[0] == 9
    jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
    # A signal during an evaluation (off the checkpoint schedule) still saves that step.
    task = probe_train.build_task(config)
    eval_batches = task.eval_batches

    def terminated_eval():
        os.kill(os.getpid(), signal.SIGTERM)
        return eval_batches()

    task.eval_batches = terminated_eval
    with pytest.raises(TrainingStopped, match=r"after step 3; its checkpoint"):
        fit(config, tmp_path / "during_eval", task)
    assert _final_params(config, tmp_path / "during_eval")[0] == 3


def test_ctrl_c_saves_the_step_and_a_second_ctrl_c_stops_at_once(tmp_path):
    """The first Ctrl-C (SIGINT) stops like SIGTERM: the step in progress is saved and the
    rerun resumes from it. A second one interrupts at once (KeyboardInterrupt), keeping the
    last scheduled checkpoint to resume from. Both handlers are restored."""
    config = smoke(num_steps=9, checkpoint_every=4, log_every=3, eval_every=3)
    fit(config, tmp_path / "whole", probe_train.build_task(config))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def interrupted(presses):
        task = probe_train.build_task(config)
        train_batch = task.train_batch

        def batch(index):  # made while step 6 runs
            if index == 6:
                for _ in range(presses):
                    os.kill(os.getpid(), signal.SIGINT)
            return train_batch(index)

        task.train_batch = batch
        return task

    with pytest.raises(TrainingStopped, match=r"stopped by SIGINT after step 6") as stopped:
        fit(config, tmp_path / "once", interrupted(1))
    assert stopped.value.signum == signal.SIGINT
    assert _final_params(config, tmp_path / "once")[0] == 6
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "twice", interrupted(2))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert _final_params(config, tmp_path / "twice")[0] == 4  # the scheduled checkpoint
    for run in ("once", "twice"):
        results = fit(config, tmp_path / run, probe_train.build_task(config))
        assert results["resumed_from_step"] == {"once": 6, "twice": 4}[run]
        a, b = _final_params(config, tmp_path / "whole"), _final_params(config, tmp_path / run)
        assert a[0] == b[0] == 9
        jax.tree.map(np.testing.assert_array_equal, a[1], b[1])


def test_the_host_stays_two_steps_ahead_of_the_device():
    """A stop request (SIGTERM, Ctrl-C) saves the step the host has queued, so the host must
    not run far ahead of the device: after ``advance`` returns, the step two before is done.
    Left to JAX, dispatch returns at once for ~30 steps of this size."""
    config = smoke("T=200,hidden=128", batch_size=64)
    task = probe_train.build_task(config)
    batch = task.train_batch(0)
    task.train_batch = lambda index: batch  # no host work between steps
    state = loop.create_state(config, task, jax.random.key(0))
    steps = loop.TrainingSteps(task, state, loop.training_mesh(task, 0, 1), jax.random.key(1))
    queued = [steps.advance() for _ in range(8)]
    assert steps.AHEAD == 2
    for number, metrics in enumerate(queued[:-2], start=1):
        assert all(leaf.is_ready() for leaf in jax.tree.leaves(metrics)), number


def test_split_steps_average_by_the_batch_weights_with_integer_metrics():
    """The split steps (here over one device's mesh) give the batch's weighted means, for float
    and integer metrics alike, with fractional weights: the same as the unsplit steps."""
    from recur.train import sharding, state  # noqa: PLC0415

    def loss_fn(params, batch, rng, training):
        errors = (batch["x"] @ params["w"] - batch["y"]) ** 2  # [B]
        weights = batch["weights"]
        loss = jnp.sum(errors * weights) / jnp.sum(weights)
        return loss, {"big": jnp.sum(errors > 1.0).astype(jnp.int32), "mean": loss}

    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=6), jnp.float32),
             "weights": jnp.asarray([0.5, 1.5, 2.0, 0.25, 1.0, 0.0], jnp.float32)}  # fmt: skip
    train = TrainState.create(
        apply_fn=None, params={"w": jnp.ones(3)}, tx=optax.sgd(0.1), loss_fn=loss_fn, carry=None
    )
    mesh = sharding.make_mesh(1)
    split = state.split_eval_step(mesh)(train, batch)
    plain = state.eval_step(train, batch)
    assert split["big"].dtype == jnp.float32 and float(split["big"]) == float(plain["big"]) > 0
    np.testing.assert_allclose(float(split["mean"]), float(plain["mean"]), rtol=1e-6)
    new_split, metrics_split = state.split_train_step(mesh)(train, batch, jax.random.key(0))
    new_plain, metrics_plain = train_step(train, batch, jax.random.key(0))
    np.testing.assert_allclose(new_split.params["w"], new_plain.params["w"], rtol=1e-6)
    assert new_split.params["w"].dtype == jnp.float32
    assert float(metrics_split["big"]) == float(metrics_plain["big"]) > 0


def test_evaluation_uses_no_more_devices_than_its_rows_keep_busy():
    """An evaluation batch goes to the fewest devices that take no more rows each than all of
    them would: no device evaluates only padding (one LM stream: one device)."""
    from recur.train import sharding  # noqa: PLC0415

    for devices in (1, 2, 3, 4, 8):
        for rows in range(1, 20):
            count = sharding.eval_device_count(rows, devices)
            each = -(-rows // devices)  # rows per device with all of them
            assert 1 <= count <= devices and -(-rows // count) == each, (rows, devices)
            assert count == 1 or -(-rows // (count - 1)) > each, (rows, devices)  # the fewest
            assert rows - (count - 1) * each > 0  # the last device holds a real row
    assert [sharding.eval_device_count(rows, 2) for rows in (1, 2, 3, 64)] == [1, 2, 2, 2]
    assert [sharding.eval_device_count(rows, 4) for rows in (1, 2, 3, 5, 6)] == [1, 2, 3, 3, 3]


def test_warm_up_compiles_a_batch_shape_and_leaves_the_training_as_it_was():
    """``TrainingSteps.warm_up`` (the training-speed benchmark compiles IMDB's bucketed lengths
    with it before timing): the step for another shape is compiled, the state, position and
    non-finite record are untouched, and training on that shape then compiles nothing."""
    config = smoke("T=6")
    task = probe_train.build_task(config)
    steps = loop.TrainingSteps(
        task, loop.create_state(config, task, jax.random.key(0)),
        loop.training_mesh(task, 0, 1), jax.random.key(1),
    )  # fmt: skip
    steps.advance()
    before = jax.tree.map(np.asarray, (steps.state.params, steps.state.opt_state))
    compiled = steps._jitted._cache_size()
    longer = smoke("T=9")  # the same model, longer sequences: another shape
    other = probe_train.build_task(longer).train_batch(0)
    steps.warm_up(other)
    assert steps._jitted._cache_size() == compiled + 1
    assert steps.step == 1 and int(steps.state.step) == 1 and int(steps.nonfinite["step"]) == 0
    after = jax.tree.map(np.asarray, (steps.state.params, steps.state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    task.train_batch = lambda index: other
    steps._batch = steps._make_batch(steps.step)
    steps.advance()
    assert steps._jitted._cache_size() == compiled + 1


REUSE_CODE = """
import resource
import jax, numpy as np
from absl import flags
from recur.train import cli
flags.DEFINE_string("config", None, "")
flags.DEFINE_string("workdir", None, "")

def train(config, workdir):
    jax.numpy.ones(8).block_until_ready()  # the runtime and its threads started
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = np.ones(1 << 24, np.float32)  # 64 MiB, written and freed every round
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[-4:]))

cli.run(train)
"""


@pytest.mark.skipif(malloc.glibc_version() is None, reason="mallopt settings are glibc's")
def test_experiments_reuse_the_memory_a_step_frees(tmp_path):
    """With ``--reuse_freed_memory`` (the default) a 64 MiB buffer written and freed every
    round, as XLA frees a step's buffers, is served from memory the process already has after
    the first round; with the C library's defaults each round maps it anew and page-faults it
    in (16,384 pages of 4 KiB, or 32 huge pages and their neighbours)."""
    faults = {}
    for flag in ("--reuse_freed_memory", "--noreuse_freed_memory"):
        command = ["-c", REUSE_CODE, f"--workdir={tmp_path / flag}", flag]
        result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        faults[flag] = int(result.stdout.split()[-1])  # over the last four rounds
    if faults["--noreuse_freed_memory"] < 4 * 16:
        pytest.skip(f"this C library kept the buffer without help ({faults} page faults)")
    assert faults["--reuse_freed_memory"] < 20, faults


def test_a_workdir_another_run_holds_is_refused_untouched(tmp_path):
    """A second run in a workdir (a requeued job whose first copy still drains, a command
    launched twice) stops at once naming the holder, writing nothing; the lock of a run
    killed by SIGKILL does not outlive it. The holder's own nested ``fit`` is not refused."""
    config = smoke(num_steps=3, eval_every=3, log_every=3, checkpoint_every=3)
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-c", "import sys; from recur import files\n"
        "with files.lock_workdir(sys.argv[1]):\n print('held', flush=True); sys.stdin.read()",
        str(workdir),
    ]  # fmt: skip
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    with subprocess.Popen(command, cwd=ROOT, **pipes) as holder:
        try:
            assert holder.stdout.readline() == "held\n"
            in_use = rf"^workdir {re.escape(str(workdir))} is in use by another run \(pid "
            with pytest.raises(files.WorkdirInUse, match=in_use + rf"{holder.pid} on "):
                fit(config, workdir, probe_train.build_task(config))
            assert [p.name for p in workdir.iterdir()] == [".lock"]
        finally:
            holder.kill()  # SIGKILL: the kernel drops its lock
    with files.lock_workdir(workdir):
        assert fit(config, workdir, probe_train.build_task(config))["num_steps"] == 3
    assert (workdir / "final_metrics.json").exists()


def _stop_after_checkpoint(task, step):
    """``task`` whose run stops (``Interrupt``) right after step ``step`` and its checkpoint."""
    train_batch = task.train_batch

    def batch(index):  # batch ``index`` is made while step ``index`` runs
        if index == step + 1:
            raise Interrupt
        return train_batch(index)

    task.train_batch = batch
    return task


def _final_params(config, workdir):
    state = probe_train_state(config)
    manager = checkpoint.make_manager(workdir)
    state = checkpoint.restore_latest(manager, state)
    manager.close()
    return int(state.step), state.params


def probe_train_state(config, key=9):
    built = probe_train.build_task(config)
    optimizer, _ = make_optimizer(config.optim, config.num_steps)
    return TrainState.create(
        apply_fn=built.model.apply, params=built.init_params(jax.random.key(key)), tx=optimizer
    )


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
    tmp_path, capsys
):
    config = smoke(num_steps=6, checkpoint_every=2, log_every=2, eval_every=6)
    fit(config, tmp_path / "whole", probe_train.build_task(config))
    with pytest.raises(Interrupt):
        fit(config, tmp_path / "run", _stop_after_checkpoint(probe_train.build_task(config), 4))
    steps = tmp_path / "run/checkpoints"
    assert sorted(p.name for p in steps.iterdir()) == ["2", "4"]
    for file in (steps / "4").rglob("*"):
        if file.is_file():
            file.write_bytes(b"")  # a disk that lost the newest checkpoint's contents
    capsys.readouterr()
    results = fit(config, tmp_path / "run", probe_train.build_task(config))
    warning = capsys.readouterr().err
    assert "warning: the checkpoint at step 4 is damaged" in warning
    assert results["resumed_from_step"] == 2
    assert (tmp_path / "run/damaged_checkpoints/4").is_dir()
    whole, resumed = (
        _final_params(config, tmp_path / "whole"),
        _final_params(config, tmp_path / "run"),
    )
    assert whole[0] == resumed[0] == 6
    jax.tree.map(np.testing.assert_array_equal, whole[1], resumed[1])


def test_checkpoints_of_another_model_are_refused_and_left_in_place(tmp_path):
    config = smoke(num_steps=2, checkpoint_every=1)
    fit(config, tmp_path, probe_train.build_task(config))
    bigger = smoke(num_steps=2, model__hidden_size=config.model.hidden_size + 1)
    manager = checkpoint.make_manager(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint at step 2 in .* holds another model"):
        checkpoint.restore_latest(manager, probe_train_state(bigger))
    manager.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]
    assert not (tmp_path / "damaged_checkpoints").exists()


def test_resuming_with_settings_that_change_the_run_is_refused_unless_allowed(tmp_path):
    config = smoke(num_steps=2, checkpoint_every=2)
    fit(config, tmp_path, probe_train.build_task(config))
    saved = (tmp_path / "config.json").read_text()
    other = smoke(num_steps=2, checkpoint_every=2, seed=5, optim__learning_rate=0.5)
    with pytest.raises(ValueError) as refused:
        fit(other, tmp_path, probe_train.build_task(other))
    message = str(refused.value)
    assert "optim.learning_rate: 0.001 -> 0.5; seed: 0 -> 5" in message, message
    assert "--allow_config_changes" in message and "\n" not in message
    assert (tmp_path / "config.json").read_text() == saved
    # More steps, other periods: the same run, extended.
    longer = smoke(num_steps=4, checkpoint_every=1, log_every=1)
    results = fit(longer, tmp_path, probe_train.build_task(longer))
    assert results["resumed_from_step"] == 2 and results["config_changes_on_resume"] == []
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 4
    with allow_config_changes():
        other.num_steps = 5
        results = fit(other, tmp_path, probe_train.build_task(other))
    assert results["resumed_from_step"] == 4
    assert results["config_changes_on_resume"] == [
        "optim.learning_rate: 0.001 -> 0.5",
        "seed: 0 -> 5",
    ]


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one_to_resume_from(
    tmp_path, monkeypatch
):
    from orbax.checkpoint._src.path import atomicity  # noqa: PLC0415 - where orbax commits

    config = smoke(num_steps=6, checkpoint_every=2, log_every=2, eval_every=6)
    fit(config, tmp_path / "whole", probe_train.build_task(config))

    def disk_full_when_committing_step_4(finalize):
        async def patched(self, *args, **kwargs):
            if pathlib.Path(str(self.get_final())).name == "4":  # its arrays are written
                raise OSError(28, "No space left on device")
            return await finalize(self, *args, **kwargs)

        return patched

    for name in ("AtomicRenameTemporaryPath", "CommitFileTemporaryPath"):
        cls = getattr(atomicity, name)
        monkeypatch.setattr(cls, "finalize", disk_full_when_committing_step_4(cls.finalize))
    with pytest.raises(OSError, match="No space left on device"):
        fit(config, tmp_path / "run", probe_train.build_task(config))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir() if p.name.isdigit()] == ["2"]
    results = fit(config, tmp_path / "run", probe_train.build_task(config))
    assert results["resumed_from_step"] == 2
    whole, resumed = (
        _final_params(config, tmp_path / "whole"),
        _final_params(config, tmp_path / "run"),
    )
    assert whole[0] == resumed[0] == 6
    jax.tree.map(np.testing.assert_array_equal, whole[1], resumed[1])


def test_on_eval_gets_a_state_it_may_keep(tmp_path):
    config = smoke(num_steps=4, eval_every=2, checkpoint_every=4)
    task = probe_train.build_task(config)
    kept = []
    task.on_eval = lambda step, state, metrics: kept.append((step, state.params))
    fit(config, tmp_path, task)
    assert [step for step, _ in kept] == [2, 4]
    first, last = (jax.tree.map(np.asarray, params) for _, params in kept)  # not deleted
    assert not np.array_equal(jax.tree.leaves(first)[0], jax.tree.leaves(last)[0])
    jax.tree.map(np.testing.assert_array_equal, last, _final_params(config, tmp_path)[1])
