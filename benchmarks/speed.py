"""Training-step speed of recurrent layers: recur against flax ``nn.RNN`` and ``torch.nn``.

  python -m benchmarks.speed --out=/tmp/speed
  python -m benchmarks.speed --cells=lstm --configs=32x1000x128x256 --steps=10 --out=/tmp/speed
  python -m benchmarks.speed --cpus=1 --out=/tmp/speed_1core  # every implementation on one core
  python -m benchmarks.speed --cells=mingru,minlstm,lru,gru,lstm --configs=16x1000x64x128 \
      --sweep_lengths=100,300,1000,3000,10000 --impls=recur,recur_sequential --out=/tmp/par

A step is forward + backward of one layer on ``[B, T, D]`` inputs with a loss that reads every
output (``sum(outputs * cotangent)`` with a fixed random cotangent), giving gradients for every
parameter and the inputs. For every (config, cell) each implementation is compiled and warmed
up, then the implementations take turns, one step each, ``--steps`` rounds in a new random
order each round, so all of them see the same machine load; the table gives median
milliseconds and the ratio other / recur (> 1: recur is faster). Also recorded: the spread
(min, max), compile time and, for JAX, XLA's memory estimate of the compiled step (arguments
+ outputs + temporaries).

Implementations (``--impls``): ``recur`` (:func:`recur.unroll`, backend defaults),
``recur_autodiff`` (``fused=False``: autodiff of the scan), ``recur_fused`` (``fused=True``: the
custom-VJP recurrence, :mod:`recur.fused`), ``recur_remat``; words after ``recur_`` combine, and
``hoisted`` / ``inside`` set where the input projection runs (``recur_fused_hoisted``,
``recur_autodiff_inside``, ...: see ``benchmarks.common.RECUR_VARIANT_WORDS``;
``recur_sequential`` runs mingru, minlstm and lru by ``jax.lax.scan`` over their step instead
of their default parallel path, ``recur_associative``); ``flax``
(``nn.RNN`` with ``LSTMCell`` / ``GRUCell`` / ``SimpleCell``), ``flax_optimized`` (LSTM only:
``OptimizedLSTMCell``) and ``torch`` (``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with
``--torch_threads`` on ``--torch_device``, cuDNN on a GPU; skipped with a note when torch is not
installed: ``pip install -e '.[bench]'``). Writes ``speed.json`` (machine, versions, command,
every timing) to ``--out``.

``--cpus=N`` confines the process to N of the cores it may use (before JAX starts, so XLA's
thread pool has N threads; torch then defaults to N threads too): run once with all cores and
once with ``--cpus=1`` to see how each implementation scales with the second core.

``recur_split`` (with any other words: ``recur_split_autodiff``) splits the batch over the JAX
devices with ``jax.shard_map``; on CPU the run then has one JAX device per core in use
(``--cpu_devices`` overrides), each running its part of the batch as a program of its own.
"""

import os
import pathlib
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks.common import (
    jax_step,
    machine,
    parse_config,
    random_inputs,
    recur_impl,
    write_json,
)
from recur.train import quiet_logs

FLAGS = flags.FLAGS
CELLS = ("lstm", "gru", "rnn", "mingru", "minlstm", "lru")
flags.DEFINE_list("cells", ["lstm", "gru", "rnn"], f"Cells: {', '.join(CELLS)} (rnn: tanh).")
flags.DEFINE_list(
    "configs", ["32x100x128x256", "32x1000x128x256", "128x100x256x512"],
    "Configs BxTxDxH (batch, time steps, input features, hidden size).",
)  # fmt: skip
flags.DEFINE_list(
    "sweep_lengths", ["25", "50", "100", "200", "400", "800"],
    "T values of the sweep (at B, D, H of the first config); empty: no sweep.",
)  # fmt: skip
flags.DEFINE_list(
    "impls", ["recur", "recur_autodiff", "recur_fused", "recur_remat", "flax", "flax_optimized",
              "torch"],
    "Implementations to measure (see the module docstring).",
)  # fmt: skip
flags.DEFINE_integer("steps", 10, "Timed steps per implementation (after warm-up).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_integer(
    "cpus", None, "Run on this many of the usable cores (default: all); set before JAX starts."
)
flags.DEFINE_integer(
    "cpu_devices", None,
    "JAX CPU devices (jax_num_cpu_devices; default 1, or one per core in use when an "
    "implementation splits the batch: recur_split).",
)  # fmt: skip
flags.DEFINE_integer("torch_threads", None, "torch.set_num_threads (default: the cores in use).")
flags.DEFINE_enum(
    "torch_device", "auto", ["auto", "cpu", "cuda"],
    "Device of the torch implementation; auto: cuda where JAX runs on a GPU, else cpu.",
)  # fmt: skip
flags.DEFINE_string("out", None, "Output directory for speed.json.")
flags.mark_flag_as_required("out")


FLAX_CELLS = {
    ("lstm", False): nn.LSTMCell,
    ("lstm", True): nn.OptimizedLSTMCell,
    ("gru", False): nn.GRUCell,
    ("rnn", False): nn.SimpleCell,
}


def flax_impl(cell_name, batch, length, inputs, hidden, optimized):
    layer = nn.RNN(FLAX_CELLS[cell_name, optimized](hidden))
    params = layer.init(jax.random.key(0), jnp.zeros((batch, length, inputs)))

    def loss_fn(params, xs, cotangent):
        return jnp.sum(layer.apply(params, xs) * cotangent)

    return loss_fn, params


def torch_impl(cell_name, batch, length, inputs, hidden, device="cpu"):
    import torch  # noqa: PLC0415 - optional (the bench extra)

    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell_name]
    layer = module(inputs, hidden, batch_first=True).to(device)
    rng = np.random.default_rng(0)
    xs = torch.tensor(
        rng.standard_normal((batch, length, inputs), np.float32), device=device,
        requires_grad=True,
    )  # fmt: skip
    cotangent = torch.tensor(rng.standard_normal((batch, length, hidden), np.float32))
    cotangent = cotangent.to(device)
    # GPU work is asynchronous: a step is timed to the end of its kernels.
    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None

    def run():
        layer.zero_grad(set_to_none=True)
        xs.grad = None
        ys, _ = layer(xs)
        (ys * cotangent).sum().backward()
        synchronize()

    started = time.perf_counter()
    run()
    return run, time.perf_counter() - started, None


def torch_device() -> str:
    if FLAGS.torch_device != "auto":
        return FLAGS.torch_device
    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def build(impl, cell_name, config):
    """``(run, compile_seconds, memory_bytes)`` or None where ``impl`` lacks this cell."""
    batch, length, inputs, hidden = config
    if impl == "torch":
        if cell_name not in ("lstm", "gru", "rnn"):
            return None  # torch.nn has no minGRU, minLSTM or LRU
        return torch_impl(cell_name, batch, length, inputs, hidden, torch_device())
    if impl.startswith("flax"):
        optimized = impl == "flax_optimized"
        if (cell_name, optimized) not in FLAX_CELLS:
            return None
        loss_fn, params = flax_impl(cell_name, batch, length, inputs, hidden, optimized)
        split = False
    else:
        variant = impl.removeprefix("recur").lstrip("_")
        loss_fn, params = recur_impl(cell_name, batch, length, inputs, hidden, variant)
        split = common.recur_options(variant).get("split", False)
    xs, cotangent = random_inputs(batch, length, inputs, hidden)
    return jax_step(loss_fn, params, xs, cotangent, split=split)


def measure(cell_name, config, impls, steps, warmup):
    """Every implementation's timings for one (cell, config), measured in turns."""
    runners, records = {}, {}
    for impl in impls:
        built = build(impl, cell_name, config)
        if built is None:
            continue
        run, compile_seconds, memory = built
        for _ in range(warmup):
            run()
        runners[impl] = run
        records[impl] = {"compile_seconds": compile_seconds, "memory_bytes": memory, "ms": []}
    # A new order every round: the step after another implementation's can pay for that one's
    # memory use (freed pages, evicted caches), so no implementation keeps one position.
    order = np.random.default_rng(0)
    for _ in range(steps):
        for impl in order.permutation(list(runners)):
            started = time.perf_counter()
            runners[impl]()
            records[impl]["ms"].append(1000 * (time.perf_counter() - started))
    batch, length = config[:2]
    for record in records.values():
        record["median_ms"] = statistics.median(record["ms"])
        record["tokens_per_second"] = batch * length / (record["median_ms"] / 1000)
    return records


def format_row(cell_name, config, records) -> str:
    base = records.get("recur", next(iter(records.values())))["median_ms"]
    cells_text = []
    for impl, record in records.items():
        low, high = min(record["ms"]), max(record["ms"])
        memory = record["memory_bytes"]
        memory_text = f", {memory / 2**20:.0f} MiB" if memory else ""
        cells_text.append(
            f"{impl} {record['median_ms']:.1f} ms [{low:.0f}-{high:.0f}] "
            f"x{record['median_ms'] / base:.2f}{memory_text}"
        )
    return f"{cell_name} {'x'.join(map(str, config))}: " + " | ".join(cells_text)


def restrict_cpus(count: int) -> None:
    """Confines this process to the first ``count`` cores it may use. Must run before JAX
    creates its CPU client, which sizes its thread pool by the cores the process may use."""
    usable = sorted(os.sched_getaffinity(0))
    if not 1 <= count <= len(usable):
        raise ValueError(f"--cpus={count} is not between 1 and the {len(usable)} usable cores")
    os.sched_setaffinity(0, usable[:count])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    try:
        configs = [parse_config(c) for c in FLAGS.configs]
        sweep = [int(t) for t in FLAGS.sweep_lengths]
        unknown = sorted(set(FLAGS.cells) - set(CELLS))
        if unknown:
            raise ValueError(f"unknown cell {unknown[0]!r}; available: {', '.join(CELLS)}")
        impls = list(FLAGS.impls)
        splits = False  # whether an implementation splits the batch over the devices
        for impl in impls:
            if impl.startswith("recur"):
                try:
                    options = common.recur_options(impl.removeprefix("recur").lstrip("_"))
                except ValueError as error:
                    raise ValueError(f"implementation {impl!r}: {error}") from None
                splits = splits or options.get("split", False)
            elif impl not in ("flax", "flax_optimized", "torch"):
                raise ValueError(f"unknown implementation {impl!r}")
        if FLAGS.cpus is not None:
            restrict_cpus(FLAGS.cpus)
        cpu_devices = FLAGS.cpu_devices
        if cpu_devices is None and splits:
            cpu_devices = len(os.sched_getaffinity(0))
        if cpu_devices is not None:
            if cpu_devices < 1:
                raise ValueError(f"--cpu_devices={cpu_devices} must be at least 1")
            jax.config.update("jax_num_cpu_devices", cpu_devices)  # before JAX starts
        if splits:
            for batch in sorted({config[0] for config in configs}):
                if batch % jax.device_count():
                    raise ValueError(
                        f"batch {batch} does not split over {jax.device_count()} devices"
                    )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    notes = []
    if "torch" in impls:
        try:
            import torch  # noqa: PLC0415

            torch.set_num_threads(FLAGS.torch_threads or len(os.sched_getaffinity(0)))
        except ImportError:
            impls.remove("torch")
            notes.append("torch is not installed (pip install -e '.[bench]'): not measured")
    for note in notes:
        print(note, flush=True)
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python -m benchmarks.speed", *sys.argv[1:]]),
        "machine": machine(),
        "steps": FLAGS.steps,
        "notes": notes,
        "complete": False,  # the file is rewritten after every row: a cut-short run keeps them
        "rows": [],
    }
    runs = [("table", config) for config in configs]
    if sweep:
        batch, _, inputs, hidden = configs[0]
        runs += [("sweep", (batch, length, inputs, hidden)) for length in sweep]
    for kind, config in runs:
        for cell_name in FLAGS.cells:
            records = measure(cell_name, config, impls, FLAGS.steps, FLAGS.warmup)
            print(("sweep " if kind == "sweep" else "") + format_row(cell_name, config, records),
                  flush=True)  # fmt: skip
            report["rows"].append({"kind": kind, "cell": cell_name, "config": dict(
                zip(("batch", "length", "input", "hidden"), config, strict=True)),
                "results": records})  # fmt: skip
            write_json(out / "speed.json", report)
    report["complete"] = True
    write_json(out / "speed.json", report)
    print(f"wrote {out / 'speed.json'}", flush=True)


if __name__ == "__main__":
    app.run(main)
