"""Benchmark apps run end to end on tiny settings."""

import json
import subprocess
import sys

import pytest
from test_train import ROOT, run_module

import recur
from benchmarks import common, gradient_flow_trained


def test_gradient_flow_app_at_initialisation(tmp_path):
    result = run_module(
        "benchmarks.gradient_flow",
        "--cells=rnn,irnn,lstm:forget_bias=0,gru",
        "--lengths=4,9",
        "--hidden_size=5",
        "--batch_size=3",
        "--seeds=0,1",
        f"--out={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| lstm:forget_bias=0 | 9 |" in result.stdout
    record = json.loads((tmp_path / "gradient_flow.json").read_text())
    assert set(record["results"]) == {"rnn", "irnn", "lstm:forget_bias=0", "gru"}
    lstm = record["results"]["lstm:forget_bias=0"]["9"]
    assert len(lstm["log10_grad_norm_h"]) == 9 and len(lstm["log10_grad_norm_c"]) == 9
    assert set(lstm["gates"]) == {"input", "forget", "output"}
    assert len(lstm["log10_product_spectral"]) == 9 and lstm["log10_product_spectral"][0] == 0.0
    for name in ("gradient_norms.png", "jacobian_products.png", "gates_gru_T9.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow  # trains a probe first; the app's default path is tested above
def test_gradient_flow_app_from_a_trained_probe(tmp_path):
    workdir = tmp_path / "probe"
    trained = run_module(
        "experiments.probes.main",
        "--config=experiments/probes/config.py:smoke,task=copy,cell=gru",
        f"--workdir={workdir}",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = run_module(
        "benchmarks.gradient_flow", f"--checkpoint={workdir}", "--lengths=3,7",
        f"--out={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "out/gradient_flow.json").read_text())
    (spec,) = record["results"]
    assert spec.startswith("gru (trained, copy")
    assert len(record["results"][spec]["7"]["log10_grad_norm_h"]) == 7 + 20  # copy: T + 20


def test_gradient_flow_bad_input(tmp_path):
    result = run_module("benchmarks.gradient_flow", "--cells=lstn", f"--out={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown cell 'lstn'")
    with pytest.raises(ValueError, match="is not an experiments.probes workdir"):
        gradient_flow_trained.setups(str(tmp_path), [3], [0])  # --checkpoint=tmp_path


def test_speed_app_smoke(tmp_path):
    result = run_module(
        "benchmarks.speed", "--cells=lstm,rnn", "--configs=2x5x3x4", "--sweep_lengths=3",
        "--impls=recur,recur_autodiff,recur_fused,flax_optimized", "--steps=2", "--warmup=1",
        f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["machine"]["jax"] and report["command"].startswith("python -m benchmarks.speed")
    assert report["machine"]["allocator"] and report["complete"]
    rows = {(row["kind"], row["cell"], row["config"]["length"]): row for row in report["rows"]}
    assert set(rows) == {
        (k, c, t) for k, t in (("table", 5), ("sweep", 3)) for c in ("lstm", "rnn")
    }
    lstm = rows["table", "lstm", 5]["results"]
    assert set(lstm) == {"recur", "recur_autodiff", "recur_fused", "flax_optimized"}
    assert "flax_optimized" not in rows["table", "rnn", 5]["results"]  # LSTM-only cell
    for record in lstm.values():
        assert len(record["ms"]) == 2 and record["median_ms"] > 0 and record["memory_bytes"] > 0
    assert "x1.00" in result.stdout
    assert report["machine"]["cpus_used"] >= 1


@pytest.mark.slow  # the split itself is tested in tests/test_scan.py and test_train.py
def test_speed_app_on_one_core_with_the_batch_split_over_two_devices(tmp_path):
    result = run_module(
        "benchmarks.speed", "--cpus=1", "--cpu_devices=2", "--cells=lstm", "--configs=4x3x3x4",
        "--sweep_lengths=", "--impls=recur,recur_split,recur_split_autodiff", "--steps=1",
        "--warmup=0", f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["machine"]["cpus_used"] == 1
    assert report["machine"]["devices"] == ["cpu:0", "cpu:1"]
    (row,) = report["rows"]
    assert set(row["results"]) == {"recur", "recur_split", "recur_split_autodiff"}
    result = run_module(
        "benchmarks.speed", "--cpu_devices=2", "--configs=3x3x3x4", "--impls=recur_split",
        f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: batch 3 does not split over 2 devices"


def test_profile_step_app(tmp_path):
    result = run_module(
        "benchmarks.profile_step", "--cell=lstm", "--config=2x6x3x4", "--fused=true",
        "--steps=2", "--warmup=1", f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["traced_step_ms"] > 0 and report["command"].startswith("python -m bench")
    ops = report["ops"]
    # The scan's ops run once per step (6 here); the forward's recurrent matmul is among them.
    per_step = [r for r in ops.values() if r["calls_per_step"] == 6]
    assert per_step and all(r["ms_per_step"] >= 0 for r in ops.values())
    assert not any(name.startswith("while") for name in ops)  # loops would count twice
    assert any("jvp()/while/body" in r["hlo"] and "dot_general" in r["hlo"] for r in per_step)


def test_speed_bad_input(tmp_path):
    result = run_module("benchmarks.speed", "--configs=32x100", f"--out={tmp_path}")
    assert result.returncode == 1 and "config '32x100' is not BxTxDxH" in result.stderr
    with pytest.raises(ValueError, match="config '32x100x3x0' is not BxTxDxH"):
        common.parse_config("32x100x3x0")
    result = run_module("benchmarks.speed", "--cpus=999", f"--out={tmp_path}")
    assert result.returncode == 1 and "--cpus=999 is not between 1 and the" in result.stderr


def test_recur_variant_names():
    assert common.recur_options("") == {}  # recur.unroll's backend defaults
    assert common.recur_options("autodiff") == {"fused": False}
    assert common.recur_options("fused_inside") == {"fused": True, "hoist_projection": False}
    assert common.recur_options("autodiff_hoisted") == {"fused": False, "hoist_projection": True}
    assert common.recur_options("remat") == {"remat": True}
    assert common.recur_options("split_fused") == {"split": True, "fused": True}
    with pytest.raises(ValueError, match="sets fused twice"):
        common.recur_options("fused_autodiff")
    with pytest.raises(ValueError, match="unknown recur variant word 'fast'"):
        common.recur_options("fast")


def test_train_speed_app_smoke(tmp_path):
    impls = "recur_split,recur_one_device"
    result = run_module(
        "benchmarks.train_speed", "--workloads=adding_lstm_T4", f"--impls={impls}",
        "--rounds=2", "--steps=2", "--pause=0", "--memory=false", f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "train_speed.json").read_text())
    assert report["complete"] and report["command"].startswith("python -m benchmarks.train_speed")
    assert [row["workload"] for row in report["rows"]] == ["adding_lstm_T4"]
    assert report["machine"]["devices"] == [
        f"cpu:{i}" for i in range(report["machine"]["cpus_used"])
    ]
    for row in report["rows"]:
        assert set(row["results"]) == set(impls.split(","))
        for record in row["results"].values():
            assert len(record["steps_per_second"]) == 2 and record["median_steps_per_second"] > 0
            assert record["xla_memory_bytes"] > 0
            assert record["batch_shapes"] == 1  # every adding batch has one shape
            assert record["median_tokens_per_second"] == record[
                "median_steps_per_second"
            ] * 64 * int(row["workload"][-1])
    assert "adding_lstm_T4: recur_split " in result.stdout and "steps/s" in result.stdout
    # --memory measures each implementation in a child process like this one.
    memory = run_module(
        "benchmarks.train_speed", "--memory_of=recur_split:adding_gru_T3", "--steps=2"
    )
    assert memory.returncode == 0, memory.stderr[-2000:]
    assert int(memory.stdout.strip().splitlines()[-1]) > 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_classifier_padded_equals_packed(cell):
    """The IMDB torch reference over the padded batch (``torch_padded``) trains as the one over
    packed sequences: the same losses step after step (no dropout)."""
    pytest.importorskip("torch", reason="torch is the bench extra: pip install -e '.[bench]'")
    import numpy as np  # noqa: PLC0415
    from ml_collections import ConfigDict  # noqa: PLC0415

    from benchmarks import torch_reference  # noqa: PLC0415

    rng = np.random.default_rng(0)
    lengths = np.array([7, 3, 9, 1, 5, 9], np.int32)
    tokens = np.where(np.arange(9) < lengths[:, None], rng.integers(2, 50, (6, 9)), 0)
    batch = {"tokens": tokens, "lengths": lengths, "labels": np.array([0, 1, 1, 0, 1, 0]),
             "weights": np.array([1, 1, 1, 1, 1, 0], np.float32)}  # fmt: skip
    optim = ConfigDict({"name": "adam", "learning_rate": 0.01})
    losses = {}
    for packed in (True, False):
        step = torch_reference.classifier_step(
            cell, lambda index: batch, 50, 8, 16, 0.0, optim, 1.0, 1, packed=packed
        )
        losses[packed] = [step() for _ in range(3)]
    np.testing.assert_allclose(losses[False], losses[True], rtol=1e-5)
    assert losses[True][2] < losses[True][0]  # it trains


PARSE_WORKLOADS = """
import json, sys
from benchmarks import train_speed
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = list(train_speed.parse_workload(name))
    except ValueError as error:
        out[name] = str(error)
print(json.dumps(out))
"""


def test_train_speed_workload_names():
    # In a process of its own: the benchmark's absl flags would clash with recur.train.cli's
    # (--reuse_freed_memory), which other tests import into this one.
    good = {"adding_gru_T50": ["adding", "gru", 50], "ptb_small_lstm": ["ptb_small", "lstm", 0],
            "ptb_awd_gru": ["ptb_awd", "gru", 0],
            "shakespeare_char_rnn": ["shakespeare_char", "rnn", 0]}  # fmt: skip
    bad = ["ptb_awd_transformer", "ptb_large_lstm", "shakespeare_lstm", "adding_gru_T1"]
    result = subprocess.run(
        [sys.executable, "-c", PARSE_WORKLOADS, *good, *bad],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert {name: parsed[name] for name in good} == good
    for name in bad:
        assert parsed[name].startswith(f"unknown workload '{name}'"), parsed[name]


def test_train_speed_bad_input(tmp_path):
    result = run_module("benchmarks.train_speed", "--workloads=adding_lstn_T4", f"--out={tmp_path}")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: unknown workload 'adding_lstn_T4'")
    )


def test_parallel_scan_app_smoke(tmp_path):
    result = run_module(
        "benchmarks.parallel_scan", "--cells=gru,mingru", "--lengths=5,9", "--hidden_size=6",
        "--input_size=3", "--batch_size=2", "--steps=1", f"--out={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "parallel_scan.json").read_text())
    assert record["complete"] and [row["T"] for row in record["rows"]] == [5, 9]
    assert set(record["rows"][0]["results"]) == {
        "gru", "mingru_linear", "mingru_associative", "mingru_sequential",
        "mingru_positive_linear", "mingru_log",
    }  # fmt: skip
    sizes, counts = record["hidden_sizes"], record["param_counts"]
    for size in (sizes["mingru"] - 1, sizes["mingru"] + 1):  # the matched size is the closest
        other = recur.cell_param_count("mingru", size, 3)
        assert abs(other - counts["gru"]) >= abs(counts["mingru"] - counts["gru"])
    assert set(record["crossover_T"]) == {"mingru"}
    assert set(record["crossover_T"]["mingru"]) == {"linear", "associative"}
    bad = run_module("benchmarks.parallel_scan", "--cells=s4", f"--out={tmp_path}")
    assert bad.returncode == 1 and "error: unknown cell 's4'" in bad.stderr
