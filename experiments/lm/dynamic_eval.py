"""Dynamic evaluation of a trained language model (Krause et al. 2018; recur.train.dynamic_eval).

  python -m experiments.lm.dynamic_eval --workdir=/tmp/ptb_awd_lstm --rule=rms \
      --learning_rates=3e-6,1e-5,3e-5 --decays=0,0.001,0.01

The valid and test splits are read as ``--batch_size`` streams in windows of ``--bptt`` tokens;
each window is scored, then the params take one step on it. The step size and the decay
towards the trained params are chosen on valid (the grid of ``--learning_rates`` ×
``--decays``), and test is scored once with the chosen pair. The ``rms`` rule scales each
parameter's step by the root mean squared gradient over the first ``--ms_windows`` windows of
the training text. The workdir gets ``dynamic_eval.json`` (the grid, the choice, static and
dynamic valid/test, seconds); the static numbers are those of the same windows with no update.
"""

import json
import math
import pathlib
import sys
import time

import ml_collections
from absl import app, flags

from experiments.lm import train
from recur import files
from recur.train import Task, dynamic_eval, quiet_logs
from recur.train.loop import restore_params

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a language-model run (experiments.lm.main).")
flags.DEFINE_enum("rule", "rms", list(dynamic_eval.RULES), "Update rule (see the module).")
flags.DEFINE_integer("bptt", 5, "Tokens per window: the params are updated after each window.")
flags.DEFINE_integer("batch_size", 1, "Streams the splits are read as.")
flags.DEFINE_list("learning_rates", ["3e-6", "1e-5", "3e-5"], "Step sizes tried on valid.")
flags.DEFINE_list("decays", ["0", "0.001", "0.01"], "Decays towards the trained params tried.")
flags.DEFINE_integer("ms_windows", 1000, "Training windows the rms rule's scale is measured on.")
flags.DEFINE_float("rms_floor", 0.1, "The rms rule's floor on √MS, a fraction of its mean.")
flags.mark_flags_as_required(["workdir"])


def floats(values: list[str], name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} must be numbers separated by commas, got {values}") from None


def run(workdir: pathlib.Path) -> dict:
    if not (workdir / "config.json").exists() or not (workdir / train.VOCAB).exists():
        raise ValueError(f"{workdir} holds no language-model run (config.json, vocab.json)")
    if FLAGS.bptt < 1 or FLAGS.batch_size < 1 or FLAGS.ms_windows < 1:
        raise ValueError("--bptt, --batch_size and --ms_windows must be >= 1")
    rates, decays = floats(FLAGS.learning_rates, "learning_rates"), floats(FLAGS.decays, "decays")
    for rate in rates:
        for decay in decays:
            dynamic_eval.check_settings(FLAGS.rule, rate, decay)
    started = time.perf_counter()
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    vocab, ids, _ = train.prepare(config, workdir)
    model = train.make_model(config, len(vocab))
    task = Task(
        model=model, init_params=train.init_params_fn(config, model), loss_fn=None,
        train_batch=None, eval_batches=None, metric="",
        initial_carry=model.initial_states(config.batch_size),
    )  # fmt: skip
    params = restore_params(config, workdir, task)
    loss = train.window_loss_for(model)
    carry = model.initial_states(FLAGS.batch_size)
    windows = {
        split: train.padded_windows(ids[split], FLAGS.batch_size, FLAGS.bptt)
        for split in ("valid", "test")
    }
    ms = None
    if FLAGS.rule == "rms":
        head = ids["train"][: FLAGS.ms_windows * FLAGS.bptt + 1]
        ms = dynamic_eval.mean_squared_gradients(
            loss, params, model.initial_states(1), train.padded_windows(head, 1, FLAGS.bptt)
        )
    evaluator = dynamic_eval.make_evaluator(loss, FLAGS.rule, rms_floor=FLAGS.rms_floor)

    def score(split, rate, decay):
        clock = time.perf_counter()
        result = dynamic_eval.evaluate(
            loss, params, carry, windows[split], learning_rate=rate, decay=decay,
            rule=FLAGS.rule, ms=ms, evaluator=evaluator if rate > 0 else None,
        )  # fmt: skip
        seconds = time.perf_counter() - clock
        summary = train.summarize({"nll": result["loss"]})
        print(
            f"{split} η={rate:g} λ={decay:g}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
            + f" ({seconds:.0f} s)",
            flush=True,
        )
        return {**summary, "tokens": result["tokens"], "seconds": seconds}

    static = {split: score(split, 0.0, 0.0) for split in ("valid", "test")}
    grid = [
        {"learning_rate": rate, "decay": decay, "valid": score("valid", rate, decay)}
        for rate in rates
        for decay in decays
    ]
    finite = [row for row in grid if math.isfinite(row["valid"]["nll"])]
    if not finite:
        raise ValueError("every step size of the grid diverged on valid: try smaller ones")
    best = min(finite, key=lambda row: row["valid"]["nll"])
    test = score("test", best["learning_rate"], best["decay"])
    results = {
        "metric": "perplexity" if config.data.level == "word" else "bpc",
        "rule": FLAGS.rule,
        "bptt": FLAGS.bptt,
        "batch_size": FLAGS.batch_size,
        "ms_windows": FLAGS.ms_windows if FLAGS.rule == "rms" else None,
        "rms_floor": FLAGS.rms_floor if FLAGS.rule == "rms" else None,
        "static": static,
        "grid": grid,
        "chosen": {"learning_rate": best["learning_rate"], "decay": best["decay"]},
        "valid": best["valid"],
        "test": test,
        "wall_seconds": time.perf_counter() - started,
        "command": " ".join(["python -m experiments.lm.dynamic_eval", *sys.argv[1:]]),
    }
    files.write_json(workdir / "dynamic_eval.json", results)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    try:
        results = run(pathlib.Path(FLAGS.workdir))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    metric = results["metric"]
    print(
        f"dynamic evaluation ({results['rule']}, η={results['chosen']['learning_rate']:g}, "
        f"λ={results['chosen']['decay']:g}): valid {metric} {results['valid'][metric]:.4g}, "
        f"test {metric} {results['test'][metric]:.4g} (static: valid "
        f"{results['static']['valid'][metric]:.4g}, test {results['static']['test'][metric]:.4g})"
    )


if __name__ == "__main__":
    app.run(main)
