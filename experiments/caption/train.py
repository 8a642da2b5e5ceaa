"""Trains an image captioner on strips of MNIST digits (one-to-many) and scores its captions.

Every training batch is a fresh set of strips drawn from the training digit images with the
step's seed (``recur.data.captions``), so a run is reproducible and resumes exactly; the
validation and test strips are fixed sets drawn from held-out digit images.

Outputs in the workdir, besides the training loop's: ``valid_captions.jsonl`` (greedy
exact-match accuracy on the validation strips at every evaluation), ``results.json`` (config,
command, test exact-match and per-word accuracy for greedy and beam-search captions, by number
of digits, the most frequent word errors, per-token loss, the most-frequent-caption baseline,
params, wall time), ``samples.png`` (test strips with true and predicted captions, wrong ones
in red) and ``learning_curve.png``.
"""

import collections
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from recur import cells, files, models
from recur.data import captions
from recur.train import Task, batch_mean, fit, restore_params
from recur.train.loop import evaluate
from recur.train.metrics import read_rows
from recur.train.sharding import is_writer, make_mesh
from recur.train.state import TrainState

VOCAB = captions.vocabulary()
BOS_ID, EOS_ID = VOCAB.ids[captions.BOS], VOCAB.ids[captions.EOS]
VALID_CAPTIONS = "valid_captions.jsonl"
HELD_OUT_SEED = 12345  # the validation and test strips are the same for every run


@dataclasses.dataclass
class Prepared:
    digits: dict[str, captions.DigitImages]
    held_out: dict[str, dict[str, np.ndarray]]  # valid / test: strips, targets, weights
    length: int  # caption tokens plus <eos>
    notes: list[str]


def caption_length(config) -> int:
    return captions.caption_length(config.data.caption, config.data.max_digits)


def labelled_strips(config, rng, source, count) -> dict[str, np.ndarray]:
    """Strips and their encoded captions."""
    data = config.data
    strips = captions.make_strips(rng, source, count, data.min_digits, data.max_digits)
    encoded = captions.encode_captions(strips, data.caption, VOCAB, caption_length(config))
    return {**strips, **encoded}


def prepare(config: ml_collections.ConfigDict) -> Prepared:
    """Reads MNIST and draws the held-out strips."""
    data = config.data
    if data.caption not in captions.CAPTIONS:
        raise ValueError(
            f"unknown data.caption {data.caption!r}; available: {', '.join(captions.CAPTIONS)}"
        )
    digits, notes = captions.load_digits(data.mnist_dir, data.valid_fraction)
    held_out = {
        name: labelled_strips(
            config, np.random.default_rng([HELD_OUT_SEED, i]), digits[name], count
        )  # fmt: skip
        for i, (name, count) in enumerate((("valid", data.num_valid), ("test", data.num_test)))
    }
    notes.append(
        f"strips of {data.min_digits}-{data.max_digits} digits captioned as {data.caption}: "
        f"a fresh training batch per step, {data.num_valid} validation and {data.num_test} "
        f"test strips"
    )
    return Prepared(digits, held_out, caption_length(config), notes)


def make_model(config) -> models.ImageCaptioner:
    model = config.model
    encoder = models.ImageEncoder(
        kind=model.encoder,
        features=model.features,
        hidden_size=model.encoder_hidden_size,
        channels=tuple(model.encoder_channels),
    )
    decoder = models.SequenceGenerator(
        num_outputs=len(VOCAB),
        embed_size=model.embed_size,
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        start_token=BOS_ID,
        dropout_rate=model.dropout_rate,
        cell_options=cells.options_from_config(model),
        feed_context=model.feed_context,
        block=model.block,
    )
    return models.ImageCaptioner(encoder=encoder, decoder=decoder)


def as_batch(strips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: strips[name] for name in ("images", "targets", "weights")}


def build_task(config, prepared: Prepared | None, workdir: pathlib.Path | None = None) -> Task:
    """The task; with ``prepared`` None, only enough to rebuild the model and restore params.
    Each evaluation appends the validation strips' greedy scores to ``workdir``'s
    ``valid_captions.jsonl``."""
    model = make_model(config)
    length = caption_length(config)
    width = captions.SIDE * config.data.max_digits

    def loss_fn(params, batch, rng, training):
        logits = model.apply({"params": params}, batch["images"], batch["targets"],
                             deterministic=not training, rngs={"dropout": rng})  # fmt: skip
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = (logits.argmax(-1) == batch["targets"]).astype(jnp.float32)
        return batch_mean(ce, batch), {"token_accuracy": batch_mean(correct, batch)}

    def init_params(key):
        images = jnp.zeros((1, captions.SIDE, width), jnp.uint8)
        return model.init(key, images, jnp.zeros((1, length), jnp.int32))["params"]

    if prepared is None:
        return Task(model, init_params, loss_fn, train_batch=None, eval_batches=list,
                    metric="token_accuracy")  # fmt: skip

    def train_batch(step):
        rng = np.random.default_rng([config.seed, step])
        return as_batch(labelled_strips(config, rng, prepared.digits["train"], config.batch_size))

    valid = as_batch(prepared.held_out["valid"])
    valid_batches = [
        {k: v[i : i + 500] for k, v in valid.items()} for i in range(0, config.data.num_valid, 500)
    ]
    captioner = Captioner(config, model, length)
    references = [words(row) for row in prepared.held_out["valid"]["targets"]]

    def on_eval(step, state, _):
        predicted = [VOCAB.decode(ids) for ids in captioner.greedy(state.params, valid["images"])]
        row = {"step": step, **scores(predicted, references)}
        if workdir is not None and is_writer():
            with open(workdir / VALID_CAPTIONS, "a") as f:
                f.write(json.dumps(row) + "\n")

    return Task(
        model=model,
        init_params=init_params,
        loss_fn=loss_fn,
        train_batch=train_batch,
        eval_batches=lambda: valid_batches,
        metric="token_accuracy",
        notes=prepared.notes,
        info={"cell": config.model.cell, "caption": config.data.caption},
        on_eval=on_eval,
        summarize=lambda m: {**m, "perplexity": float(np.exp(min(m["loss"], 50.0)))},
    )


class Captioner:
    """Jitted greedy and beam-search captions of image batches, in batches of fixed shape."""

    def __init__(self, config, model: models.ImageCaptioner, length: int, batch_size: int = 250):
        self.batch_size = batch_size
        decode = config.decode
        self._greedy = jax.jit(
            lambda params, images: model.apply(
                {"params": params}, images, length, method=model.generate
            )  # fmt: skip
        )
        self._beam = jax.jit(
            lambda params, images: model.apply(
                {"params": params},
                images,
                beam_size=decode.beam_size,
                max_length=length,
                end_token=EOS_ID,
                alpha=decode.alpha,
                method=model.beam_search,
            )  # fmt: skip
        )

    def _batches(self, images):
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:  # a fixed shape: one compilation
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            yield chunk, self.batch_size - pad

    def greedy(self, params, images) -> list[list[int]]:
        """The caption ids of each image (``<eos>`` and what follows cut)."""
        out = []
        for chunk, real in self._batches(images):
            out += [cut_at_end(row) for row in np.asarray(self._greedy(params, chunk))[:real]]
        return out

    def beam(self, params, images) -> list[list[int]]:
        """The best hypothesis of each image."""
        out = []
        for chunk, real in self._batches(images):
            beams = self._beam(params, chunk)
            tokens, lengths = np.asarray(beams.tokens), np.asarray(beams.lengths)
            out += [cut_at_end(tokens[row, 0, : lengths[row, 0]]) for row in range(real)]
        return out


def cut_at_end(tokens) -> list[int]:
    """The ids before the first ``<eos>``."""
    tokens = [int(t) for t in tokens]
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens


def words(targets_row) -> list[str]:
    """The caption words of an encoded ``targets`` row."""
    return VOCAB.decode(cut_at_end(targets_row))


def scores(predicted: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """``exact_match``: captions equal word for word; ``word_accuracy``: words equal at the
    same position, over the longer of the two captions of each strip (so missing and extra
    words count as wrong), summed over the strips."""
    exact = sum(p == r for p, r in zip(predicted, references, strict=True))
    same = sum(a == b for p, r in zip(predicted, references, strict=True)
               for a, b in zip(p, r, strict=False))  # fmt: skip
    positions = sum(max(len(p), len(r)) for p, r in zip(predicted, references, strict=True))
    return {"exact_match": exact / len(references), "word_accuracy": same / max(positions, 1)}


def by_digits(predicted, references, num_digits) -> dict[str, float]:
    """Exact-match accuracy of the strips of each number of digits."""
    out = {}
    for k in sorted(set(num_digits.tolist())):
        rows = np.flatnonzero(num_digits == k)
        out[str(k)] = scores([predicted[i] for i in rows], [references[i] for i in rows])[
            "exact_match"
        ]
    return out


def word_errors(predicted, references, top: int = 10) -> list[dict]:
    """The most frequent (reference word, predicted word) pairs that differ at one position;
    ``-`` stands for a missing word."""
    counts = collections.Counter()
    for p, r in zip(predicted, references, strict=True):
        for i in range(max(len(p), len(r))):
            want, got = (r[i] if i < len(r) else "-"), (p[i] if i < len(p) else "-")
            if want != got:
                counts[(want, got)] += 1
    return [{"reference": r, "predicted": p, "count": c} for (r, p), c in counts.most_common(top)]


def most_frequent_caption(config, prepared: Prepared, count: int = 20000) -> list[str]:
    """The most frequent caption of ``count`` training strips (the trivial baseline)."""
    rng = np.random.default_rng([HELD_OUT_SEED, 99])
    strips = labelled_strips(config, rng, prepared.digits["train"], count)
    counted = collections.Counter(tuple(words(row)) for row in strips["targets"])
    return list(min(counted, key=lambda caption: (-counted[caption], caption)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    started = time.perf_counter()
    workdir = pathlib.Path(workdir)
    prepared = prepare(config)
    task = build_task(config, prepared, workdir)
    training = fit(config, workdir, task)
    params = restore_params(config, workdir, task)
    mesh = make_mesh(config.get("num_devices") or None)
    test = prepared.held_out["test"]
    state = TrainState.create(apply_fn=task.model.apply, params=params, tx=optax.identity(),
                              loss_fn=task.loss_fn)  # fmt: skip
    batch = as_batch(test)
    batches = [
        {k: v[i : i + 500] for k, v in batch.items()} for i in range(0, len(batch["images"]), 500)
    ]
    teacher_forced = evaluate(state, batches, mesh, task.summarize)
    decoded, decoding = score_test(config, task.model, params, test)
    references = [words(row) for row in test["targets"]]
    baseline_caption = most_frequent_caption(config, prepared)
    baseline = scores([baseline_caption] * len(references), references)
    num_params = int(sum(x.size for x in jax.tree.leaves(params)))
    steps_seconds = max(training["step_seconds_total"], 1e-9)
    results = {
        "caption": config.data.caption,
        "cell": config.model.cell,
        "encoder": config.model.encoder,
        "num_params": num_params,
        "test_strips": len(references),
        **decoding,
        "beam_settings": {"size": config.decode.beam_size, "alpha": config.decode.alpha},
        "test_teacher_forced": teacher_forced,
        "baseline": {"caption": " ".join(baseline_caption), **baseline},
        "train_strips_per_second": config.num_steps * config.batch_size / steps_seconds,
        "wall_seconds": time.perf_counter() - started,
        "training": training,
        "command": " ".join(["python -m experiments.caption.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
    }
    if is_writer():
        files.write_json(workdir / "results.json", results)
        from experiments.caption import plot  # noqa: PLC0415 - matplotlib only here

        count = config.decode.num_samples
        plot.samples(workdir / "samples.png", test["images"][:count], references[:count],
                     decoded["beam"][:count], test["num_digits"][:count])  # fmt: skip
        plot.learning_curve(workdir / "learning_curve.png", read_rows(workdir / "metrics.jsonl"),
                            valid_curve(workdir))  # fmt: skip
    print(
        f"test exact match: greedy {results['greedy']['exact_match']:.2%}, beam "
        f"{results['beam']['exact_match']:.2%} (most frequent caption "
        f"{baseline['exact_match']:.2%}); word accuracy beam "
        f"{results['beam']['word_accuracy']:.2%}",
        flush=True,
    )
    return results


def score_test(config, model, params, test) -> tuple[dict, dict]:
    """Greedy and beam-search captions of the test strips and their scores:
    ``({"greedy": captions, "beam": captions}, {"greedy": scores, "beam": scores})``."""
    captioner = Captioner(config, model, caption_length(config))
    references = [words(row) for row in test["targets"]]
    decoded, results = {}, {}
    for name in ("greedy", "beam"):
        decode = getattr(captioner, name)
        decode(params, test["images"][:1])  # compile before timing
        clock = time.perf_counter()
        decoded[name] = [VOCAB.decode(ids) for ids in decode(params, test["images"])]
        seconds = time.perf_counter() - clock
        results[name] = {
            **scores(decoded[name], references),
            "exact_match_by_digits": by_digits(decoded[name], references, test["num_digits"]),
            "word_errors": word_errors(decoded[name], references),
            "error_kinds": error_kinds(decoded[name], references, test["num_digits"], config),
            "strips_per_second": len(references) / max(seconds, 1e-9),
        }
    return decoded, results


def error_kinds(predicted, references, num_digits, config) -> dict[str, int]:
    """The wrong captions by kind: ``misread`` (the caption of another strip with as many
    digits: well-formed, the digits wrong), ``wrong_length`` (the caption of a strip with
    another number of digits) and ``malformed`` (the caption of no strip: the grammar broke)."""
    data = config.data
    valid = {}  # caption -> number of digits
    for k in range(data.min_digits, data.max_digits + 1):
        for number in range(10 ** (k - 1) if k > 1 else 0, 10**k):
            valid[tuple(captions.caption_words(f"{number:0{k}d}", data.caption))] = k
    kinds = {"misread": 0, "wrong_length": 0, "malformed": 0}
    for p, r, k in zip(predicted, references, num_digits, strict=True):
        if p != r:
            found = valid.get(tuple(p))
            kind = "malformed" if found is None else "misread" if found == k else "wrong_length"
            kinds[kind] += 1
    return kinds


def valid_curve(workdir: pathlib.Path) -> list[dict]:
    """The rows of ``valid_captions.jsonl``, the last one of each step (a resumed run redoes
    the evaluations after its checkpoint)."""
    path = workdir / VALID_CAPTIONS
    if not path.exists():
        return []
    rows = {row["step"]: row for row in read_rows(path)}
    return [rows[step] for step in sorted(rows)]
