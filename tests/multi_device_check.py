"""Run by tests/test_train.py in a process of its own (two JAX CPU devices, set before JAX
starts): every experiment's smoke task trained by ``recur.train.fit`` with its batches split
over 2 devices gives the loss trajectory of 1 device, with the LM's carried state and padded
evaluation batches (three streams padded to four rows over two devices; one stream on one
of them), the sentiment task's weight-0 rows,
the time series' one evaluation batch of odd size, translation's per-token weights and the
captioner's odd validation batch; dropout runs on 2 devices repeat exactly; the split training
step has one all-reduce.

Prints one JSON line: {experiment: {"max_rel_error": ..., "steps": ..., ...}}.
"""

import json
import pathlib
import sys
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 2)

import numpy as np  # noqa: E402
from test_probes import fake_mnist  # noqa: E402

from experiments.caption import config as caption_config  # noqa: E402
from experiments.caption import train as caption_train  # noqa: E402
from experiments.lm import config as lm_config  # noqa: E402
from experiments.lm import train as lm_train  # noqa: E402
from experiments.probes import config as probe_config  # noqa: E402
from experiments.probes import train as probe_train  # noqa: E402
from experiments.sentiment import config as sentiment_config  # noqa: E402
from experiments.sentiment import train as sentiment_train  # noqa: E402
from experiments.timeseries import config as ts_config  # noqa: E402
from experiments.timeseries import train as ts_train  # noqa: E402
from experiments.translate import config as translate_config  # noqa: E402
from experiments.translate import train as translate_train  # noqa: E402
from recur.train import fit, loop  # noqa: E402
from recur.train.loop import evaluate  # noqa: E402
from recur.train.sharding import eval_device_count, make_mesh  # noqa: E402


def rows(workdir: pathlib.Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def losses(workdir: pathlib.Path) -> np.ndarray:
    """Every logged loss (train and eval) and the task's metrics, in order."""
    values = []
    for row in rows(workdir):
        values += [v for k, v in sorted(row.items()) if k not in ("step", "split")]
    return np.array(values)


def compare(build, root: pathlib.Path, name: str) -> dict:
    """Trains ``build()`` on 1 and on 2 devices; the largest relative difference of the logs."""
    for devices in (1, 2):
        config, task = build(root / f"{name}{devices}")
        results = fit(config, root / f"{name}{devices}", task, num_devices=devices)
        assert len(results["devices"]) == devices, results["devices"]
    one, two = losses(root / f"{name}1"), losses(root / f"{name}2")
    error = np.max(np.abs(one - two) / np.maximum(np.abs(one), 1e-6))
    steps = [row["step"] for row in rows(root / f"{name}2") if row["split"] == "train"]
    return {"max_rel_error": float(error), "steps": steps, "values": len(one)}


def lm_corpus(path: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on under mat log quickly slowly".split()
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(40)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(root: pathlib.Path) -> None:
    report = {}

    def probes(workdir):
        config = probe_config.get_config("smoke,task=adding,cell=lstm")
        config.num_steps = 6
        return config, probe_train.build_task(config)

    report["probes_adding"] = compare(probes, root, "adding")
    config, task = probes(root)
    steps = loop.TrainingSteps(
        task, loop.create_state(config, task, jax.random.key(0)), loop.training_mesh(task, 0, 2),
        jax.random.key(1),
    )  # fmt: skip
    compiled = steps._jitted.lower(steps.state, steps._batch, steps.rng, steps.nonfinite).compile()
    hlo = compiled.as_text()
    report["probes_adding"]["train_step_all_reduces"] = hlo.count(" all-reduce(")

    corpus = lm_corpus(root / "corpus.txt")

    def lm(workdir, dropout=0.0):
        config = lm_config.get_config("smoke")
        config.data.train_path = str(corpus)
        config.eval_batch_size = 3  # three streams: padded with a weight-0 row on 2 devices
        config.model.dropout_rate = dropout
        vocab, ids, notes = lm_train.prepare(config)
        task = lm_train.build_task(config, vocab, ids, notes)
        lm_train.derive_schedule(config, task.info["windows_per_epoch"])
        config.num_steps = 2 * task.info["windows_per_epoch"] + 1  # the carry resets twice
        config.log_every = 1
        return config, task

    report["lm"] = compare(lm, root, "lm")
    config, task = lm(root)
    params = lm_train.restore_params(config, root / "lm1", task)
    _, ids, _ = lm_train.prepare(config)
    state = lm_train.TrainState.create(
        apply_fn=task.model.apply, params=params, tx=lm_train.optax.identity(),
        loss_fn=task.loss_fn,
    )  # fmt: skip
    for streams, name in ((1, "eval_one_stream_rel_error"), (3, "eval_three_streams_rel_error")):
        batches = lm_train.eval_batches(ids["valid"], streams, config.eval_bptt)
        split_nll = [evaluate(state, batches, make_mesh(n))["nll"] for n in (1, 2)]
        report["lm"][name] = abs(split_nll[1] / split_nll[0] - 1)
    # One stream on a 2-device mesh: evaluated on one device, not beside a row of padding.
    report["lm"]["eval_devices_per_rows"] = {r: eval_device_count(r, 2) for r in (1, 2, 3)}
    for run in ("a", "b"):
        config, task = lm(root, dropout=0.3)
        config.num_steps = 4
        fit(config, root / f"lm_dropout_{run}", task, num_devices=2)
    report["lm"]["dropout_repeats"] = bool(
        np.array_equal(losses(root / "lm_dropout_a"), losses(root / "lm_dropout_b"))
    )

    def sentiment(workdir):
        rng = np.random.default_rng(0)
        good, bad = ["great", "superb", "moving"], ["dull", "awful", "boring"]
        lines = ["sentence\tlabel"]
        for _ in range(70):  # 63 train rows: each epoch's last batch has weight-0 rows
            label = int(rng.integers(2))
            words = rng.choice(good if label else bad, int(rng.integers(1, 6))).tolist()
            lines.append(" ".join(words) + f" film\t{label}")
        (root / "train.tsv").write_text("\n".join(lines[:64]) + "\n")
        (root / "dev.tsv").write_text("\n".join(lines[:1] + lines[64:]) + "\n")
        config = sentiment_config.get_config("smoke,cell=gru")
        config.data.train_path, config.data.dev_path = (
            str(root / "train.tsv"),
            str(root / "dev.tsv"),
        )
        config.model.dropout_rate = 0.0
        config.batch_size, config.num_steps = 16, 8
        config.eval_every = config.checkpoint_every = 4
        vocab, splits, notes = sentiment_train.prepare(config)
        return config, sentiment_train.build_task(config, vocab, splits, notes, workdir)

    report["sentiment"] = compare(sentiment, root, "sentiment")

    def timeseries(workdir):
        days = np.datetime64("2020-01-01") + np.arange(150)
        prices = 100 + np.cumsum(np.random.default_rng(0).normal(size=150))
        text = "".join(f"{d},{p:.2f}\n" for d, p in zip(days, prices, strict=True))
        (root / "series.csv").write_text("Date,Open\n" + text)
        config = ts_config.get_config("smoke")
        config.data.train_path, config.data.test_path = str(root / "series.csv"), ""
        config.model.dropout_rate = 0.0
        config.num_steps = 4
        prepared = ts_train.prepare(config)
        return config, ts_train.build_task(config, prepared)

    report["timeseries"] = compare(timeseries, root, "timeseries")

    def translate(workdir):
        nouns = [("cold", "froid"), ("tall", "grand"), ("happy", "heureux"), ("here", "là")]
        pairs = [(f"{e} {w}.", f"{f} {x}.") for e, f in (("i am", "je suis"), ("he is", "il est"),
                 ("we are", "nous sommes")) for w, x in nouns]  # fmt: skip
        (root / "pairs.txt").write_text("".join(f"{e}\t{f}\n" for e, f in pairs * 4))
        config = translate_config.get_config("smoke")
        config.data.path = str(root / "pairs.txt")
        config.data.valid_fraction = config.data.test_fraction = 0.2
        config.model.dropout_rate = 0.0
        config.batch_size = 4
        return config, translate_train.build_task(config, translate_train.prepare(config))

    report["translate"] = compare(translate, root, "translate")

    def caption(workdir):
        (root / "mnist").mkdir(exist_ok=True)
        fake_mnist(root / "mnist")
        config = caption_config.get_config("number,smoke")
        config.data.mnist_dir = str(root / "mnist")
        config.data.num_valid = 41  # one batch of odd size: padded with a weight-0 row
        config.model.dropout_rate = 0.0
        return config, caption_train.build_task(config, caption_train.prepare(config))

    report["caption"] = compare(caption, root, "caption")
    print(json.dumps(report))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else directory))
