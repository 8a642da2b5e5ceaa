"""Whole training steps of recur's experiments against plain torch scripts doing the same work.

  python -m benchmarks.train_speed --out=/tmp/train_speed

Each workload is one of recur's experiments with its own config (``adding_<cell>_T<T>``: the
main job's points, batch 64, Adam 1e-3, clipping 1, the LSTM at H = 128 and the others at the
hidden size of matched parameter count; ``ptb_small_<cell>``: Zaremba et al.'s small LM, 2 x 200,
BPTT 20, batch 20, SGD, clipping 5, on Penn Treebank; ``<variant>_<cell>`` for the LM's other
variants, ``ptb_awd_lstm``, ``shakespeare_char_lstm``..., as their configs set them, recur only;
``imdb_<cell>``: the IMDB classifier,
bucketed batches of 64 reviews cut at 400 tokens, dropout 0.5, Adam 1e-3). recur runs the steps
of ``recur.train.fit`` (:class:`recur.train.loop.TrainingSteps`: batch, step, the loss read
every ``log_every`` steps), the torch reference (``benchmarks/torch_reference.py``) the same
model, data, optimizer and batch with ``torch.nn``. Implementations:

  ``recur``: the experiment as it runs by default (its config's ``num_devices``, recur.fused's
  backward pass); ``recur_split``: the batch split over every device (one JAX CPU device per
  core); ``recur_one_device``: on one device; ``recur_autodiff``: as ``recur`` with
  ``model.fused=False`` (the experiments' setting before); ``torch``: the reference, with as
  many threads as cores; ``torch_padded`` (IMDB only): the same classifier over the padded
  batch instead of ``pack_padded_sequence``, the output at each review's last token as its
  state. The ratio to torch is against the faster torch script of the workload. The torch
  references cover the adding problem, ``ptb_small`` and IMDB; the other LM variants
  (regularisation, characters) are measured without them: the split against one device.

They take turns: each round runs ``--steps`` steps of every implementation in a new random
order, after a warm-up round (for recur, after compiling the step for every batch shape the
rounds will meet: IMDB's bucketed lengths, one program each), with ``--pause`` seconds of idle
before each (OpenMP threads, as torch's, may keep spinning for a while after the last step: not
on the next one's time).
Reported: the median over rounds of steps/s (tokens/s for the LM), the ratio to torch, XLA's
memory estimate of recur's step, and the resident memory each implementation's training adds to
a process of its own at its peak (``--memory``: the libraries imported first and not counted;
data, model, optimizer, compiled programs and the steps' working memory counted). JSON in ``--out``.

glibc's malloc is set as the experiments set it (``recur.train.malloc.reuse_freed_memory``: the
memory a step frees is kept for the next) unless ``--noreuse_freed_memory``; torch, in the same
process, runs under the same settings.
"""

import os
import pathlib
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
ADDING = [f"adding_{c}_T{t}" for t in (25, 50, 100) for c in ("rnn", "lstm", "gru")]
WORKLOADS = [*ADDING, "ptb_small_lstm", "ptb_small_gru", "ptb_small_rnn", "imdb_lstm"]
# The LM's variants (experiments/lm/config.py), as workloads <variant>_<cell>.
LM_VARIANTS = ("ptb_small", "ptb_medium", "ptb_awd", "ptb_char", "shakespeare_char",
               "shakespeare_awd")  # fmt: skip
CELLS = ("rnn", "lstm", "gru")
IMPLS = ("recur", "recur_split", "recur_one_device", "recur_autodiff", "torch", "torch_padded")
TORCH = ("torch", "torch_padded")
flags.DEFINE_list(
    "workloads", [*ADDING, "ptb_small_lstm", "ptb_small_gru", "ptb_small_rnn", "imdb_lstm"],
    f"Any of: {', '.join(WORKLOADS)} (adding_<cell>_T<T> for any T >= 2; <variant>_<cell> for "
    f"the LM's variants {', '.join(LM_VARIANTS)}, torch for ptb_small only).",
)  # fmt: skip
flags.DEFINE_list(
    "impls",
    ["recur_split", "recur_one_device", "torch", "torch_padded"],
    f"Any of {', '.join(IMPLS)} (torch_padded: IMDB only, left out of other workloads).",
)
flags.DEFINE_integer("rounds", 5, "Timed rounds (the median is reported).")
flags.DEFINE_integer("steps", 20, "Training steps per implementation per round.")
flags.DEFINE_float("pause", 0.5, "Seconds of idle before each timed run.")
flags.DEFINE_bool("memory", True, "Also measure the memory each implementation's training adds.")
flags.DEFINE_bool(
    "reuse_freed_memory", True,
    "As the experiments by default: glibc's malloc keeps freed memory for the next step "
    "(recur.train.malloc), for torch too, which runs in the same process. False: the defaults.",
)  # fmt: skip
DEFAULT_DATA_DIR = "../shared/data"
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Offline datasets (PTB, Tiny Shakespeare, IMDB).")
flags.DEFINE_string("out", None, "Directory for train_speed.json.")
# Internal: one implementation's steps in a process of its own, printing its peak memory.
flags.DEFINE_string("memory_of", None, "IMPL:WORKLOAD (internal).")


def parse_workload(name: str) -> tuple[str, str, int]:
    """``(kind, cell, T)`` of a workload name."""
    parts = name.split("_")
    if name.startswith("adding_") and len(parts) == 3 and parts[2][:1] == "T":
        if parts[2][1:].isdigit() and int(parts[2][1:]) >= 2 and parts[1] in ("rnn", "lstm", "gru"):
            return "adding", parts[1], int(parts[2][1:])
    variant, _, cell = name.rpartition("_")
    if variant in LM_VARIANTS and cell in CELLS:
        return variant, cell, 0  # the variant's BPTT
    if name.startswith("imdb_") and parts[-1] in ("rnn", "lstm", "gru"):
        return "imdb", parts[-1], 400
    raise ValueError(f"unknown workload {name!r}; use {', '.join(WORKLOADS)}")


def build_recur(name: str, data_dir: str, fused: bool | None = None):
    """``(config, task, tokens per step)`` of the experiment behind workload ``name``, with
    ``model.fused`` set to ``fused``."""
    kind, cell, length = parse_workload(name)
    if kind == "adding":
        from experiments.probes import config, train  # noqa: PLC0415

        cfg = config.get_config(f"task=adding,cell={cell},T={length}")
        cfg.model.fused = fused
        return cfg, train.build_task(cfg), cfg.batch_size * length
    if kind in LM_VARIANTS:
        from experiments.lm import config, train  # noqa: PLC0415

        cfg = config.get_config(f"{kind},cell={cell}")
        cfg.model.fused = fused
        for split in ("train", "valid", "test"):  # the config's ../shared/data/... in data_dir
            path = cfg.data[f"{split}_path"]
            if path.startswith(DEFAULT_DATA_DIR + "/"):
                cfg.data[f"{split}_path"] = data_dir + path[len(DEFAULT_DATA_DIR) :]
        vocab, ids, notes = train.prepare(cfg)
        task = train.build_task(cfg, vocab, ids, notes)
        train.derive_schedule(cfg, task.info["windows_per_epoch"])
        task.info.update(
            vocab_size=len(vocab), streams=train.text.streams(ids["train"], cfg.batch_size)
        )
        return cfg, task, cfg.batch_size * cfg.bptt
    from experiments.sentiment import config, train  # noqa: PLC0415

    cfg = config.get_config(f"imdb,cell={cell}")
    cfg.model.fused = fused
    cfg.data.train_path = f"{data_dir}/imdb/imdb_train.csv.gz"
    cfg.data.test_path = ""  # not read: training steps only
    vocab, splits, notes = train.prepare(cfg)
    task = train.build_task(cfg, vocab, splits, notes, pathlib.Path("/nonexistent"))
    task.info["vocab_size"] = len(vocab)
    return cfg, task, None  # tokens vary per batch: steps/s only


def distinct_shapes(task, count: int) -> list:
    """One batch of each shape among ``task``'s first ``count`` training batches."""
    import jax  # noqa: PLC0415

    seen = {}
    for step in range(count):
        batch = task.train_batch(step)
        seen.setdefault(str(jax.tree.map(lambda x: x.shape, batch)), batch)
    return list(seen.values())


def recur_runner(cfg, task, impl: str):
    """``run(steps)`` over recur's training loop steps, and XLA's memory estimate of one step."""
    import jax  # noqa: PLC0415

    from recur.train import loop  # noqa: PLC0415
    from recur.train.metrics import to_python  # noqa: PLC0415

    devices = {"recur_split": None, "recur_one_device": 1}.get(impl, cfg.get("num_devices"))
    mesh = loop.training_mesh(task, 0, devices or None)
    steps = loop.TrainingSteps(task, loop.create_state(cfg, task, jax.random.key(0)), mesh,
                               jax.random.key(1))  # fmt: skip
    memory = steps.memory_estimate()
    # Bucketed batches (IMDB) come in many lengths, one compiled step each: compile every shape
    # the timed steps will meet now, as a whole run does once, not inside the rounds.
    shapes = distinct_shapes(task, FLAGS.steps * (FLAGS.rounds + 1))
    for batch in shapes:
        steps.warm_up(batch)

    def run(count: int) -> None:
        for _ in range(count):
            metrics = steps.advance()
            if steps.step % cfg.log_every == 0:
                to_python(metrics)  # the loop's log read
        jax.block_until_ready(steps.state)

    run.batch_shapes = len(shapes)
    return run, memory


def torch_runner(cfg, task, name: str, packed: bool = True):
    import torch  # noqa: PLC0415

    from benchmarks import torch_reference  # noqa: PLC0415

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    kind, cell, length = parse_workload(name)
    common = dict(optim=cfg.optim, clip_norm=cfg.optim.clip_norm, log_every=cfg.log_every)
    if kind == "adding":
        step = torch_reference.adding_step(
            cell, task.model.hidden_size, length, cfg.batch_size, **common
        )
    elif kind == "ptb_small":
        step = torch_reference.language_model_step(
            cell, task.info["streams"], cfg.bptt, task.info["vocab_size"],
            cfg.model.embed_size, cfg.model.hidden_size, cfg.model.num_layers,
            sum_over_time=cfg.sum_over_time, **common,
        )  # fmt: skip
    else:
        step = torch_reference.classifier_step(
            cell, task.train_batch, task.info["vocab_size"], cfg.model.embed_size,
            cfg.model.hidden_size, cfg.model.dropout_rate, packed=packed, **common,
        )  # fmt: skip

    def run(count: int) -> None:
        for _ in range(count):
            step()

    return run, None


def runner(impl: str, name: str):
    fused = False if impl == "recur_autodiff" else None
    cfg, task, tokens = build_recur(name, FLAGS.data_dir, fused)
    if impl in TORCH:
        run, memory = torch_runner(cfg, task, name, packed=impl == "torch")
    else:
        run, memory = recur_runner(cfg, task, impl)
    return run, memory, tokens


def resident_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in bytes."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no {field} in /proc/self/status")


def training_memory(impl: str, name: str) -> int:
    """The resident memory that building ``impl`` on ``name`` and training it added to this
    process at its peak over two rounds of steps (after a warm-up round), in bytes: the
    libraries are imported first and not counted; data, model, optimizer state, compiled
    programs and the steps' working memory are (for torch, also the recur task that holds the
    shared data: the same for both)."""
    import jax.numpy as jnp  # noqa: PLC0415

    import experiments.lm.train  # noqa: F401, PLC0415
    import experiments.probes.train  # noqa: F401, PLC0415
    import experiments.sentiment.train  # noqa: F401, PLC0415

    jnp.ones(8).block_until_ready()  # the runtimes started before the count
    try:
        import torch  # noqa: PLC0415

        from benchmarks import torch_reference  # noqa: F401, PLC0415

        torch.ones(8).sum()
    except ImportError:  # recur alone (the test install has no torch)
        pass
    before = resident_bytes("VmRSS")
    run, _, _ = runner(impl, name)
    run(FLAGS.steps)
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM)
    run(2 * FLAGS.steps)
    return resident_bytes("VmHWM") - before


def peak_memory(impl: str, name: str) -> int | None:
    """:func:`training_memory` of ``impl`` on ``name``, in a process of its own."""
    command = [sys.executable, "-m", "benchmarks.train_speed", f"--memory_of={impl}:{name}",
               f"--steps={FLAGS.steps}", f"--data_dir={FLAGS.data_dir}",
               f"--reuse_freed_memory={FLAGS.reuse_freed_memory}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        print(f"memory of {impl} on {name} failed: {result.stderr[-500:]}", flush=True)
        return None
    return int(result.stdout.strip().splitlines()[-1])


def measure(name: str, impls: list[str]) -> dict:
    import numpy as np  # noqa: PLC0415

    runners, records = {}, {}
    if not name.startswith("imdb_"):  # no packed sequences elsewhere: one torch script
        impls = [impl for impl in impls if impl != "torch_padded"]
    if parse_workload(name)[0] in LM_VARIANTS and not name.startswith("ptb_small_"):
        impls = [impl for impl in impls if impl not in TORCH]  # no torch reference
    for impl in impls:
        started = time.perf_counter()
        run, memory, tokens = runner(impl, name)
        run(FLAGS.steps)  # warm-up: compilation, first allocations
        records[impl] = {"setup_seconds": time.perf_counter() - started, "xla_memory_bytes": memory,
                         "batch_shapes": getattr(run, "batch_shapes", None),
                         "steps_per_second": []}  # fmt: skip
        runners[impl] = run
    order = np.random.default_rng(0)
    for _ in range(FLAGS.rounds):
        for impl in order.permutation(list(runners)):
            time.sleep(FLAGS.pause)  # idle threads of the last one stop spinning
            started = time.perf_counter()
            runners[impl](FLAGS.steps)
            records[impl]["steps_per_second"].append(FLAGS.steps / (time.perf_counter() - started))
    torch_rates = [statistics.median(records[impl]["steps_per_second"])
                   for impl in TORCH if impl in records]  # fmt: skip
    for record in records.values():
        record["median_steps_per_second"] = statistics.median(record["steps_per_second"])
        if tokens:
            record["median_tokens_per_second"] = record["median_steps_per_second"] * tokens
        if torch_rates:  # against the faster torch script
            record["speed_vs_torch"] = record["median_steps_per_second"] / max(torch_rates)
    runners.clear()
    if FLAGS.memory:
        for impl in impls:
            records[impl]["training_memory_bytes"] = peak_memory(impl, name)
    return records


def format_row(name: str, records: dict) -> str:
    parts = []
    for impl, record in records.items():
        text = f"{impl} {record['median_steps_per_second']:.3g} steps/s"
        if "median_tokens_per_second" in record:
            text += f" ({record['median_tokens_per_second']:,.0f} tokens/s)"
        if "speed_vs_torch" in record and impl not in TORCH:
            text += f" (x{record['speed_vs_torch']:.2f} torch)"
        if record.get("training_memory_bytes"):
            text += f", {record['training_memory_bytes'] / 2**20:.0f} MiB"
        parts.append(text)
    return f"{name}: " + " | ".join(parts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from recur.train import malloc, quiet_logs, sharding  # noqa: PLC0415

    quiet_logs()
    reused = FLAGS.reuse_freed_memory and malloc.reuse_freed_memory()
    try:
        sharding.use_cpu_cores()
        if FLAGS.memory_of:
            impl, _, name = FLAGS.memory_of.partition(":")
            print(training_memory(impl, name))
            return
        for name in FLAGS.workloads:
            parse_workload(name)
        unknown = sorted(set(FLAGS.impls) - set(IMPLS))
        if unknown:
            available = ", ".join(IMPLS)
            raise ValueError(f"unknown implementation {unknown[0]!r}; available: {available}")
        if not FLAGS.out:
            raise ValueError("--out is required")
        if set(TORCH) & set(FLAGS.impls):
            try:
                import torch  # noqa: F401, PLC0415
            except ImportError:
                raise ValueError(
                    "torch is not installed (pip install -e '.[bench]'); leave it out of --impls"
                ) from None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    from benchmarks.common import machine, write_json  # noqa: PLC0415

    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python -m benchmarks.train_speed", *sys.argv[1:]]),
        "machine": machine(),
        "rounds": FLAGS.rounds,
        "steps_per_round": FLAGS.steps,
        "reuse_freed_memory": reused,
        "complete": False,
        "rows": [],
    }
    for name in FLAGS.workloads:
        records = measure(name, list(FLAGS.impls))
        print(format_row(name, records), flush=True)
        report["rows"].append({"workload": name, "results": records})
        write_json(out / "train_speed.json", report)
    report["complete"] = True
    write_json(out / "train_speed.json", report)
    print(f"wrote {out / 'train_speed.json'}", flush=True)


if __name__ == "__main__":
    app.run(main)
