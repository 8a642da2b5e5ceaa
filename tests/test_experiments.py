"""Command-line entry points run end to end; bad configs give one clear line and exit 1."""

import importlib
import json
import re

import pytest
from absl import flags
from ml_collections import config_flags
from test_train import run_module

from experiments.compare import config as compare_config
from experiments.probes import config as probes_config
from experiments.probes import train as probes_train
from recur.train.cli import parse_flags


def test_probes_command_line_smoke(tmp_path):
    result = run_module(
        "experiments.probes.main",
        "--config=experiments/probes/config.py:smoke,task=adding,cell=gru",
        "--config.optim.learning_rate=3e-3",
        f"--workdir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step 6/6 | loss" in result.stdout and "steps/s | ETA" in result.stdout
    assert "(baseline: mse 0.1667)" in result.stdout
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["cell"] == "gru" and final["num_steps"] == 6
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["optim"]["learning_rate"] == 3e-3
    assert any((tmp_path / "tensorboard").iterdir())
    again = run_module(
        "experiments.probes.main",
        "--config=experiments/probes/config.py:smoke,task=adding,cell=gru",
        "--config.optim.learning_rate=3e-3",
        f"--workdir={tmp_path}",
    )
    assert "resuming from the checkpoint at step 6" in again.stdout


def test_compare_command_line_smoke_and_skip_on_rerun(tmp_path):
    # The modern variant: the six cells, the parallel-scan ones in residual blocks.
    args = (
        "experiments.compare.main",
        "--config=experiments/compare/config.py:modern,smoke,task=selective_copy,T=16",
        f"--workdir={tmp_path}",
    )
    result = run_module(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| T | rnn (H=" in result.stdout and "| 16 |" in result.stdout
    assert "lru (H=" in result.stdout and "params, residual blocks)" in result.stdout
    for metric in ("cross_entropy", "copy_accuracy"):  # one table per eval metric
        assert f"selective_copy: final eval {metric} after 4 steps" in result.stdout
    record = json.loads((tmp_path / "results.json").read_text())
    cells = {"rnn", "lstm", "gru", "mingru", "minlstm", "lru"}
    assert {p["cell"] for p in record["points"]} == cells
    blocks = {p["cell"]: p["block"] for p in record["points"]}
    assert blocks == {c: "residual" if c.startswith(("min", "lru")) else "stack" for c in cells}
    counts = {p["cell"]: p["num_params"] for p in record["points"]}
    assert max(counts.values()) / min(counts.values()) < 1.15  # matched parameter counts
    for name in ("results.md", "curves.png", "final_vs_T.png"):
        assert (tmp_path / name).stat().st_size > 0
    rerun = run_module(*args)
    assert rerun.stdout.count("skipping") == 6
    # The report of the finished lengths alone (T = 32 never trained), training nothing.
    partial = run_module(*args, "--config.report_only=true", "--config.lengths=(16, 32)")
    assert partial.returncode == 0, partial.stderr[-2000:]
    assert "report of the finished lengths [16] (of [16, 32])" in partial.stdout
    assert "| 16 |" in partial.stdout and "| 32 |" not in partial.stdout
    assert "==" not in partial.stdout and not (tmp_path / "selective_copy_rnn_T32_seed0").exists()
    none = run_module(*args, "--config.report_only=true", "--config.lengths=(32,)")
    assert none.returncode == 1 and none.stderr.strip().splitlines() == [
        f"error: report_only: no sequence length in {tmp_path} has every cell and seed finished"
    ]
    # A finished point is reused only under the same settings, not just the same step count.
    changed = run_module(*args, "--config.probe.optim.learning_rate=0.5")
    assert changed.returncode == 1 and "skipping" not in changed.stdout
    assert changed.stderr.strip().splitlines() == [
        f"error: {tmp_path}/selective_copy_rnn_T16_seed0 holds a run with other settings "
        "(optim.learning_rate: 0.001 -> 0.5); use another --workdir, or pass "
        "--allow_config_changes to continue its checkpoint with the new settings"
    ]


def test_compare_configs():
    classic = compare_config.get_config("")
    assert classic.cells == ("rnn", "lstm", "gru") and classic.lengths == (25, 50, 100)
    assert compare_config.cell_blocks(classic) == {}
    for task, lengths in compare_config.MODERN_LENGTHS.items():
        modern = compare_config.get_config(f"modern,task={task}")
        assert modern.lengths == lengths and len(modern.cells) == 6
        assert modern.probe.task.name == task and modern.probe.num_steps == 3000
    assert compare_config.get_config("modern,T=400,steps=10").lengths == (400,)
    with pytest.raises(ValueError, match="'long' and 'modern' are mutually exclusive"):
        compare_config.get_config("long,modern")
    config = compare_config.get_config("")
    config.blocks = "mingru=residual"
    with pytest.raises(ValueError, match="names mingru, not in config.cells"):
        compare_config.cell_blocks(config)
    config.blocks = "lstm=residual,gru"  # main.run_grid checks this before any training
    with pytest.raises(ValueError, match="expected cell=block items, got 'gru'"):
        compare_config.cell_blocks(config)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task.name", "parity", "unknown task 'parity'; available: adding, copy"),
        ("model.cell", "transformer", "unknown cell 'transformer'; available"),
        ("task.T", 0, "task.T must be >= 1, got 0"),
        ("task.name", "mnist_permuted", "MNIST directory /nonexistent does not exist"),
    ],
)
def test_bad_config_is_one_clear_error(field, value, message):
    config = probes_config.get_config("smoke")
    config.task.mnist_dir = "/nonexistent"
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        probes_train.build_task(config)


def test_bad_config_on_the_command_line_is_one_line_and_exit_1(tmp_path):
    result = run_module(
        "experiments.probes.main",
        "--config=experiments/probes/config.py:smoke",
        "--config.task.name=parity",
        f"--workdir={tmp_path}",
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown task 'parity'; available: adding, copy, selective_copy, mnist_sequential, "
        "mnist_permuted, mnist_rows"
    ]


EXPERIMENTS = ["probes", "compare", "lm", "sentiment", "timeseries", "translate", "caption"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_config_typo_is_one_line_naming_the_field(experiment, capsys):
    config = f"--config=experiments/{experiment}/config.py:smoke"
    at = "--config.probe." if experiment == "compare" else "--config."  # compare nests a probe
    for override, expected in [
        (f"{at}optim.nmae=adam", f"{at}optim.nmae: the config has no field 'nmae' (did you "),
        (f"{at}num_steps=many", f"flag {at}num_steps=many: invalid literal for int()"),
        (f"{at}modle.cell=gru", f"{at}modle.cell: the config has no field 'modle'"),
    ]:
        argv = ["main", config, override]
        flag_values = flags.FlagValues()  # config_flags reads the overrides when defined
        config_flags.DEFINE_config_file(
            "config", None, "", flag_values, lock_config=True, sys_argv=argv
        )
        with pytest.raises(SystemExit) as stop:
            parse_flags(argv, flag_values)
        assert stop.value.code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: " + expected), lines


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_unknown_config_variant_is_one_line_naming_the_flag(experiment, capsys):
    config = f"--config=experiments/{experiment}/config.py:smoke,nope"
    argv = ["main", config]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values, lock_config=True, sys_argv=argv
    )
    with pytest.raises(SystemExit) as stop:
        parse_flags(argv, flag_values)
    assert stop.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {config}: unknown config variant 'nope'; use smoke"
    ), lines  # the config file's error, not ml_collections' traceback


@pytest.mark.parametrize(
    ("experiment", "misuse", "message"),
    [
        (
            "lm",
            "--config.optim.nmae=adam",
            "error: --config.optim.nmae: the config has no field 'nmae' (did you mean 'name'?)",
        ),
        ("timeseries", "--workdir={file}", "error: --workdir={file} is a file, not a directory"),
        (
            "caption",
            "--config.data.mnist_dir={file}",
            "error: MNIST directory {file} does not exist",
        ),
    ],
)
def test_misuse_on_the_command_line_is_one_line_and_exit_1(experiment, misuse, message, tmp_path):
    file = tmp_path / "a_file"
    file.write_text("keep me\n")
    result = run_module(
        f"experiments.{experiment}.main",
        f"--config=experiments/{experiment}/config.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        misuse.format(file=file),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [message.format(file=file)]
    assert file.read_text() == "keep me\n"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_config_parses_its_variants_one_way(experiment):
    get_config = importlib.import_module(f"experiments.{experiment}.config").get_config
    assert get_config("smoke") is not None
    with pytest.raises(ValueError, match=r"^unknown config variant 'nope'; use smoke, .*\.\.\.$"):
        get_config("smoke,nope")
    with pytest.raises(
        ValueError, match=r"^config variant 'cell' given twice in 'cell=gru,cell=rnn'"
    ):
        get_config("cell=gru,cell=rnn")
    with pytest.raises(ValueError, match=r"^unknown config variant 'cell='; use"):
        get_config("cell=")


@pytest.mark.parametrize(
    ("experiment", "arg", "message"),
    [
        ("probes", "T=ten", "config variant T needs an integer, got 'ten'"),
        (
            "lm",
            "ptb_char,shakespeare_char",
            "config variants ptb_char and shakespeare_char exclude",
        ),
        ("sentiment", "bidirectional=yes", "config variant bidirectional needs true or false"),
        ("sentiment", "sst2,imdb", "config variants sst2 and imdb exclude each other; use one"),
        ("timeseries", "horizon=h", "config variant horizon needs an integer, got 'h'"),
    ],
)
def test_bad_variant_values_are_one_line(experiment, arg, message):
    get_config = importlib.import_module(f"experiments.{experiment}.config").get_config
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        get_config(arg)
