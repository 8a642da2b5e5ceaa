"""Where one training step's time goes: XLA's per-op trace of a recur layer's fwd + bwd.

  python -m benchmarks.profile_step --cell=lstm --config=32x100x128x256 --out=/tmp/profile
  python -m benchmarks.profile_step --cell=lstm --fused=false --out=/tmp/profile_autodiff

The step is the speed benchmark's (:mod:`benchmarks.speed`): forward + backward of one layer,
loss ``sum(outputs * cotangent)``. After ``--warmup`` steps, ``--steps`` steps run under
``jax.profiler.trace`` with XLA:CPU's per-op trace events on; the table sums each op's time
over those steps and divides by their number, so an op inside the scan counts all its
iterations (``calls`` per step). Each op is described by its HLO shape and the JAX operation it
came from (``jvp``: forward pass, ``transpose(jvp)``: backward, ``while/body``: a scan step).
Loops are left out (their spans contain their bodies' ops). Times are wall-clock spans of the
op on its thread: ops that run concurrently overlap, an Eigen ``dot`` that hands its work to
the thread pool shows only part of it, and the profiler itself slows the step. Compare ops with
each other, not with :mod:`benchmarks.speed`'s timings. Writes ``profile.json`` (every op) and
keeps the raw trace (open it in Perfetto) under ``--out``.
"""

import os

# XLA reads its flags when the backend starts: before the first use of jax.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

import collections  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from recur.train import quiet_logs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("cell", "lstm", "Cell: lstm, gru, rnn (tanh).")
flags.DEFINE_string("config", "32x100x128x256", "BxTxDxH (batch, time steps, input, hidden).")
flags.DEFINE_enum("fused", "default", ["default", "true", "false"], "recur.unroll's fused.")
flags.DEFINE_integer("steps", 5, "Traced steps.")
flags.DEFINE_integer("warmup", 3, "Untraced steps after compilation.")
flags.DEFINE_integer("top", 25, "Ops in the printed table.")
flags.DEFINE_string("out", None, "Output directory (profile.json and the raw trace).")
flags.mark_flag_as_required("out")

# Spans of the runtime and of Python, not of XLA ops.
NOT_OPS = ("ThunkExecutor", "PjitFunction", "$", "SlinkyThreadPool", "TfrtCpu", "PjRt")
# A loop's span contains its body's ops, which are counted one by one.
LOOP = re.compile(r"^while(\.\d+)?$")


# An HLO instruction: ``%name = shape opcode(...), ..., metadata={op_name="..." ...}``.
HLO_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.-]+) = (\S+) ([\w-]+)\(")
OP_NAME = re.compile(r'op_name="(?:jit\([^)]*\)/)?([^"]*)"')


def describe_ops(hlo_text: str) -> dict[str, str]:
    """``{instruction name: "shape opcode <- jax op"}`` from compiled HLO text, so that the
    table's fusion names say what they compute and where in the program they sit (``jvp`` is
    the forward pass, ``transpose(jvp)`` the backward, ``while/body`` a scan step)."""
    described = {}
    for line in hlo_text.splitlines():
        match = HLO_LINE.match(line)
        if match:
            name, shape, opcode = match.groups()
            op_name = OP_NAME.search(line)
            described[name] = f"{shape} {opcode}" + (f" <- {op_name[1]}" if op_name else "")
    return described


def profile(cell_name: str, config, fused: bool | None, steps: int, warmup: int, out):
    """``{op: {"ms_per_step", "calls_per_step"}}`` from a trace of ``steps`` training steps,
    and the steps' median wall time in ms (traced)."""
    batch, length, inputs, hidden = config
    variant = {None: "", True: "fused", False: "autodiff"}[fused]
    loss_fn, params = common.recur_impl(cell_name, batch, length, inputs, hidden, variant)
    xs, cotangent = common.random_inputs(batch, length, inputs, hidden)
    compiled = common.compile_step(loss_fn, params, xs, cotangent)
    described = describe_ops(compiled.as_text())

    def run():
        jax.block_until_ready(compiled(params, xs, cotangent))

    for _ in range(warmup):
        run()
    trace_dir = pathlib.Path(out) / "trace"
    times = []
    with jax.profiler.trace(str(trace_dir)):
        for _ in range(steps):
            started = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - started))
    traces = sorted(trace_dir.glob("plugins/profile/*/*.trace.json.gz"))
    if not traces:
        raise RuntimeError(f"the profiler wrote no trace.json.gz under {trace_dir}")
    with gzip.open(traces[-1]) as f:
        events = json.load(f)["traceEvents"]
    totals = collections.defaultdict(lambda: [0, 0.0])
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(NOT_OPS) or LOOP.match(name):
            continue
        totals[name][0] += 1
        totals[name][1] += event.get("dur", 0) / 1000  # µs -> ms
    ops = {
        name: {
            "ms_per_step": ms / steps,
            "calls_per_step": calls / steps,
            "hlo": described.get(name, ""),
        }
        for name, (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])
    }
    return ops, sorted(times)[len(times) // 2]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    try:
        config = common.parse_config(FLAGS.config)
        if FLAGS.cell not in ("lstm", "gru", "rnn"):
            raise ValueError(f"unknown cell {FLAGS.cell!r}; available: lstm, gru, rnn")
        if FLAGS.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {FLAGS.steps}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    fused = {"default": None, "true": True, "false": False}[FLAGS.fused]
    ops, step_ms = profile(FLAGS.cell, config, fused, FLAGS.steps, FLAGS.warmup, FLAGS.out)
    print(f"{FLAGS.cell} {FLAGS.config} fused={FLAGS.fused}: {step_ms:.1f} ms per traced step")
    print(f"{'ms/step':>9}  {'calls':>6}  op")
    for name, record in list(ops.items())[: FLAGS.top]:
        print(
            f"{record['ms_per_step']:9.2f}  {record['calls_per_step']:6.0f}  {name}  "
            f"{record['hlo'][:110]}"
        )
    report = {
        "command": " ".join(["python -m benchmarks.profile_step", *sys.argv[1:]]),
        "machine": common.machine(),
        "traced_step_ms": step_ms,
        "ops": ops,
    }
    path = pathlib.Path(FLAGS.out) / "profile.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
