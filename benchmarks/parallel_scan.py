"""Training-step time of the six cells against sequence length, at matched parameter counts:
mingru, minlstm and lru by each of recur's scans (``linear``: jax.lax.scan over the
recurrence alone; ``associative``: jax.lax.associative_scan; ``sequential``: jax.lax.scan over
the cell's step) against rnn, lstm and gru.

  python -m benchmarks.parallel_scan --lengths=100,300,1000,3000,10000 --out=/tmp/parallel_scan

A step is forward + backward of one layer on ``[B, T, D]`` inputs (as in
:mod:`benchmarks.speed`: a loss reading every output, gradients for every parameter and the
inputs). Every cell gets the hidden size whose parameter count matches the reference cell's
at ``--hidden_size`` (:func:`recur.matched_hidden_sizes`; an LRU's state size is its hidden
size; ``--nomatch_params``: every cell at ``--hidden_size``). For each T every
implementation is compiled and warmed up, then all take turns, one step each, ``--steps``
rounds in a new random order each round. Prints per T the median milliseconds, XLA's memory
estimate and the ratio to the reference cell, and for each parallel cell the T from which
each of its parallel scans stays faster than its sequential one. Writes
``parallel_scan.json``.
"""

import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import recur
from benchmarks.common import jax_step, machine, random_inputs, write_json
from recur import cells
from recur.train import quiet_logs

CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "lru")
FLAGS = flags.FLAGS
flags.DEFINE_list("cells", list(CELLS), f"Cells among {', '.join(CELLS)}.")
flags.DEFINE_list("lengths", ["100", "300", "1000", "3000", "10000"], "Sequence lengths T.")
flags.DEFINE_integer("batch_size", 16, "B.")
flags.DEFINE_integer("input_size", 64, "D.")
flags.DEFINE_string("reference", "gru", "The cell whose parameter count the others match.")
flags.DEFINE_integer("hidden_size", 128, "The reference cell's hidden size.")
flags.DEFINE_bool(
    "match_params", True, "Match every cell's parameter count to the reference's; false: every "
    "cell at --hidden_size (equal width).",
)  # fmt: skip
flags.DEFINE_integer("steps", 5, "Timed steps per implementation and T (after warm-up).")
flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
flags.DEFINE_string("out", None, "Directory for parallel_scan.json.")
flags.mark_flag_as_required("out")


PARALLEL_KINDS = ("linear", "associative")


def implementations(names, sizes):
    """``{label: (cell name, hidden size, scan_kind, cell options)}``: the classic cells
    (sequential), and each cell with a linear recurrence three ways: ``<name>_linear``,
    ``<name>_associative`` and ``<name>_sequential`` (see :data:`recur.scan.SCAN_KINDS`); for
    minGRU also the paper's log-space scan of its positive variant (``mingru_log``, with
    ``mingru_positive_linear``, the same function by the linear scan, beside it)."""
    out = {}
    for name in names:
        if cells.get(name, 2).linear is None:
            out[name] = (name, sizes[name], "sequential", {})
        else:
            for kind in (*PARALLEL_KINDS, "sequential"):
                out[f"{name}_{kind}"] = (name, sizes[name], kind, {})
        if name == "mingru":
            out["mingru_positive_linear"] = (name, sizes[name], "linear", {"positive": True})
            out["mingru_log"] = (name, sizes[name], "log", {"positive": True})
    return out


def build(name, hidden, scan_kind, batch, length, inputs, options=None):
    cell = cells.get(name, hidden, **(options or {}))
    params = cell.init(jax.random.key(0), inputs)

    def loss_fn(params, xs, cotangent):
        ys, _ = recur.unroll(cell, params, xs, scan_kind=scan_kind)
        return jnp.sum(ys * cotangent)

    xs, cotangent = random_inputs(batch, length, inputs, hidden)
    return jax_step(loss_fn, params, xs, cotangent)


def measure(impls, length, steps, warmup):
    runners, records = {}, {}
    for label, (name, hidden, scan_kind, options) in impls.items():
        run, compile_seconds, memory = build(name, hidden, scan_kind, FLAGS.batch_size, length,
                                             FLAGS.input_size, options)  # fmt: skip
        for _ in range(warmup):
            run()
        runners[label] = run
        records[label] = {"compile_seconds": compile_seconds, "memory_bytes": memory, "ms": []}
    order = np.random.default_rng(length)
    for _ in range(steps):
        for label in order.permutation(list(runners)):
            started = time.perf_counter()
            runners[label]()
            records[label]["ms"].append(1000 * (time.perf_counter() - started))
    for record in records.values():
        record["median_ms"] = statistics.median(record["ms"])
    return records


def crossover(rows, name, kind) -> int | None:
    """The smallest T from which ``kind`` is faster than the sequential path at every larger T
    measured (None: at the longest T it is not)."""
    faster = [(row["T"], row["results"][f"{name}_{kind}"]["median_ms"]
               < row["results"][f"{name}_sequential"]["median_ms"]) for row in rows]  # fmt: skip
    found = None
    for length, wins in reversed(faster):
        if not wins:
            break
        found = length
    return found


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    try:
        unknown = sorted(set(FLAGS.cells) - set(CELLS))
        if unknown:
            raise ValueError(f"unknown cell {unknown[0]!r}; available: {', '.join(CELLS)}")
        if FLAGS.reference not in CELLS:
            raise ValueError(f"unknown reference cell {FLAGS.reference!r}")
        lengths = [int(t) for t in FLAGS.lengths]
        if min(lengths) < 1:
            raise ValueError(f"lengths must be positive, got {lengths}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    names = list(dict.fromkeys([FLAGS.reference, *FLAGS.cells]))
    if FLAGS.match_params:
        sizes = recur.matched_hidden_sizes(
            names, input_size=FLAGS.input_size, output_size=0, reference=FLAGS.reference,
            reference_hidden_size=FLAGS.hidden_size,
        )  # fmt: skip
    else:
        sizes = dict.fromkeys(names, FLAGS.hidden_size)
    counts = {n: recur.cell_param_count(n, sizes[n], FLAGS.input_size) for n in names}
    impls = implementations([n for n in names if n in FLAGS.cells], sizes)
    print("hidden sizes (params): " + ", ".join(f"{n} {sizes[n]} ({counts[n]:,})" for n in names),
          flush=True)  # fmt: skip
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python -m benchmarks.parallel_scan", *sys.argv[1:]]),
        "machine": machine(),
        "batch_size": FLAGS.batch_size,
        "input_size": FLAGS.input_size,
        "reference": FLAGS.reference,
        "match_params": FLAGS.match_params,
        "hidden_sizes": sizes,
        "param_counts": counts,
        "steps": FLAGS.steps,
        "complete": False,
        "rows": [],
    }
    for length in lengths:
        records = measure(impls, length, FLAGS.steps, FLAGS.warmup)
        reference = records.get(FLAGS.reference, next(iter(records.values())))["median_ms"]
        parts = []
        for label, record in records.items():
            memory = record["memory_bytes"]
            memory_text = f", {memory / 2**20:.1f} MiB" if memory else ""
            parts.append(f"{label} {record['median_ms']:.1f} ms "
                         f"(x{reference / record['median_ms']:.2f}{memory_text})")  # fmt: skip
        print(f"T={length}: " + " | ".join(parts), flush=True)
        report["rows"].append({"T": length, "results": records})
        write_json(out / "parallel_scan.json", report)
    parallel = sorted({name for name, _, kind, _ in impls.values() if kind in PARALLEL_KINDS})
    report["crossover_T"] = {
        name: {kind: crossover(report["rows"], name, kind) for kind in PARALLEL_KINDS}
        for name in parallel
    }
    for name, kinds in report["crossover_T"].items():
        for kind, length in kinds.items():
            text = f"from T = {length}" if length else "at no T measured"
            print(f"{name}: {kind} faster than sequential {text}", flush=True)
    report["complete"] = True
    write_json(out / "parallel_scan.json", report)
    print(f"wrote {out / 'parallel_scan.json'}", flush=True)


if __name__ == "__main__":
    app.run(main)
