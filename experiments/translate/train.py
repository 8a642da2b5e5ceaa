"""Trains an encoder-decoder on sentence pairs and reports BLEU (greedy and beam search).

Outputs in the workdir, besides the training loop's: ``source_vocab.json`` and
``target_vocab.json``, ``results.json`` (config, command, BLEU with sacrebleu's signature,
perplexities, sentences/s, wall time), ``samples.txt`` (source, reference, greedy and beam
outputs of test sentences) and ``attention_<i>.png`` heatmaps of test sentences.
"""

import dataclasses
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.translate.config import ATTENTIONS
from recur import cells, files, models
from recur.data import batching, translation
from recur.data.vocabulary import Vocabulary
from recur.train import Task, batch_mean, fit, restore_params
from recur.train.loop import evaluate
from recur.train.sharding import is_writer, make_mesh
from recur.train.state import TrainState

SOURCE_VOCAB, TARGET_VOCAB = "source_vocab.json", "target_vocab.json"
EOS_ID = translation.SPECIALS.index(translation.EOS)
BOS_ID = translation.SPECIALS.index(translation.BOS)
PAD_ID = translation.SPECIALS.index(translation.PAD)


@dataclasses.dataclass
class Prepared:
    splits: dict[str, list[translation.Pair]]
    arrays: dict[str, dict[str, np.ndarray]]
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    source_length: int
    target_length: int
    notes: list[str]


def lengths_for(config) -> tuple[int, int]:
    """Padded lengths: source tokens, target tokens plus ``<eos>``."""
    if config.data.subset == "tutorial":
        cap = translation.TUTORIAL_MAX_WORDS - 1
    else:
        cap = config.data.max_tokens
    return cap, cap + 1


def prepare(config: ml_collections.ConfigDict, workdir: pathlib.Path | None = None) -> Prepared:
    """Reads, filters, splits and encodes the pairs; the vocabularies come from the training
    split (and are saved in ``workdir``, or read from it when a run resumes)."""
    data = config.data
    if data.subset not in ("tutorial", "full"):
        raise ValueError(f"data.subset must be tutorial or full, got {data.subset!r}")
    if config.model.attention not in ATTENTIONS:
        raise ValueError(
            f"unknown attention {config.model.attention!r}; use {', '.join(ATTENTIONS)}"
        )
    pairs = translation.read_pairs(data.path, data.direction, data.lowercase, data.strip_accents)
    source_length, target_length = lengths_for(config)
    if data.subset == "tutorial":
        kept = translation.tutorial_filter(pairs, data.direction)
    else:
        kept = [p for p in pairs if max(len(p.source), len(p.target)) <= source_length]
    if not kept:
        raise ValueError(f"{data.path}: no pairs left after the {data.subset} filter")
    splits = translation.split(kept, data.valid_fraction, data.test_fraction, config.seed)
    if workdir is not None and (workdir / SOURCE_VOCAB).exists():
        source_vocab = Vocabulary.load(workdir / SOURCE_VOCAB)
        target_vocab = Vocabulary.load(workdir / TARGET_VOCAB)
    else:
        source_vocab = translation.build_vocabulary(
            [p.source for p in splits["train"]], data.min_count
        )
        target_vocab = translation.build_vocabulary(
            [p.target for p in splits["train"]], data.min_count
        )
        if workdir is not None and is_writer():
            workdir.mkdir(parents=True, exist_ok=True)
            source_vocab.save(workdir / SOURCE_VOCAB)
            target_vocab.save(workdir / TARGET_VOCAB)
    arrays = {
        name: translation.encode(part, source_vocab, target_vocab, source_length, target_length)
        for name, part in splits.items()
        if part
    }
    for name in ("valid", "test"):
        if name not in arrays:
            raise ValueError(f"the {name} split is empty; raise data.{name}_fraction")
    notes = [
        f"{data.path}: {len(pairs)} pairs, {len(kept)} kept ({data.subset}, {data.direction}); "
        f"train {len(splits['train'])}, valid {len(splits['valid'])}, test "
        f"{len(splits['test'])}; vocabularies {len(source_vocab)} source, "
        f"{len(target_vocab)} target tokens"
    ]
    return Prepared(splits, arrays, source_vocab, target_vocab, source_length, target_length,
                    notes)  # fmt: skip


def make_model(config, source_vocab_size: int, target_vocab_size: int) -> models.Seq2Seq:
    model = config.model
    return models.Seq2Seq(
        src_vocab_size=source_vocab_size,
        tgt_vocab_size=target_vocab_size,
        embed_size=model.embed_size,
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        attention=model.attention,
        attention_size=model.attention_size,
        bidirectional_encoder=model.bidirectional_encoder,
        dropout_rate=model.dropout_rate,
        start_token=BOS_ID,
        cell_options=cells.options_from_config(model),
        block=model.block,
    )


def as_batch(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "source": arrays["source"],
        "source_lengths": arrays["source_lengths"],
        "target_inputs": arrays["target_inputs"],
        "targets": arrays["targets"],
        "weights": arrays["target_weights"],  # per token: padding never counts
    }


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    return {**metrics, "perplexity": math.exp(min(metrics["loss"], 50.0))}


def build_task_for_restore(config, prepared: Prepared) -> Task:
    """The task without data: enough to rebuild the model and restore its params."""
    return build_task(config, prepared, with_data=False)


def build_task(config, prepared: Prepared, with_data: bool = True) -> Task:
    model = make_model(config, len(prepared.source_vocab), len(prepared.target_vocab))
    train = as_batch(prepared.arrays["train"]) if with_data else None

    def loss_fn(params, batch, rng, training):
        logits = model.apply(
            {"params": params}, batch["source"], batch["target_inputs"],
            batch["source_lengths"], deterministic=not training, rngs={"dropout": rng},
        )  # fmt: skip
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = (logits.argmax(-1) == batch["targets"]).astype(jnp.float32)
        return batch_mean(ce, batch), {"token_accuracy": batch_mean(correct, batch)}

    def init_params(key):
        source = jnp.zeros((1, prepared.source_length), jnp.int32)
        target = jnp.zeros((1, prepared.target_length), jnp.int32)
        return model.init(key, source, target, jnp.ones((1,), jnp.int32))["params"]

    valid_batches = []
    if with_data:
        valid = as_batch(prepared.arrays["valid"])
        valid_batches = [
            {k: v[i : i + config.batch_size] for k, v in valid.items()}
            for i in range(0, len(valid["source"]), config.batch_size)
        ]
    return Task(
        model=model,
        init_params=init_params,
        loss_fn=loss_fn,
        train_batch=lambda step: batching.epoch_batch(train, step, config.batch_size, config.seed),
        eval_batches=lambda: valid_batches,
        metric="perplexity",
        notes=prepared.notes,
        info={"cell": config.model.cell, "attention": config.model.attention},
        summarize=summarize,
    )


def derive_schedule(config, num_train: int) -> int:
    """Fills the step counts left at -1 from the epoch length; returns steps per epoch."""
    per_epoch = num_train // config.batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {num_train} training pairs")
    if config.num_steps < 1:
        config.num_steps = config.num_epochs * per_epoch
    if config.eval_every < 1:
        config.eval_every = per_epoch
    if config.checkpoint_every < 1:
        config.checkpoint_every = per_epoch
    return per_epoch


class Translator:
    """Jitted greedy and beam-search decoding of a trained model, in batches of fixed shape."""

    def __init__(self, config, model: models.Seq2Seq, params, target_length: int,
                 batch_size: int = 128):  # fmt: skip
        self.batch_size = batch_size
        variables = {"params": params}
        decode = config.decode

        def limits(lengths):
            wanted = jnp.ceil(decode.max_length_ratio * lengths).astype(jnp.int32)
            return jnp.minimum(wanted + decode.max_length_extra, target_length)

        self._greedy = jax.jit(
            lambda src, lengths: model.apply(
                variables, src, target_length, lengths, method=model.decode
            )[0]
        )
        self._beam = jax.jit(
            lambda src, lengths: model.apply(
                variables,
                src,
                lengths,
                beam_size=decode.beam_size,
                max_length=target_length,
                end_token=EOS_ID,
                alpha=decode.alpha,
                max_lengths=limits(lengths),
                method=model.beam_search,
            )  # fmt: skip
        )

    def _batches(self, source, lengths):
        for start in range(0, len(source), self.batch_size):
            rows = slice(start, start + self.batch_size)
            src, n = source[rows], lengths[rows]
            pad = self.batch_size - len(src)
            if pad:  # a fixed shape: one compilation
                src = np.concatenate([src, np.zeros((pad, src.shape[1]), src.dtype)])
                n = np.concatenate([n, np.ones(pad, n.dtype)])
            yield src, n, len(source[rows])

    def greedy(self, source, lengths) -> list[list[int]]:
        out = []
        for src, n, real in self._batches(source, lengths):
            tokens = np.asarray(self._greedy(src, n))[:real]
            out += [cut_at_end(row) for row in tokens]
        return out

    def beam(self, source, lengths) -> tuple[list[list[int]], list[np.ndarray]]:
        """Best hypothesis of each sentence, and its attention weights ``[len, S]``."""
        out, weights = [], []
        for src, n, real in self._batches(source, lengths):
            beams = self._beam(src, n)
            tokens, lengths_, extras = (np.asarray(x)[:real] for x in
                                        (beams.tokens, beams.lengths, beams.extras))  # fmt: skip
            for row in range(real):
                best = cut_at_end(tokens[row, 0, : lengths_[row, 0]])
                out.append(best)
                weights.append(extras[row, 0, : len(best) + 1])
        return out, weights


def cut_at_end(tokens) -> list[int]:
    """The ids before the first ``<eos>``."""
    tokens = [int(t) for t in tokens]
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU (sacrebleu's defaults: 13a tokenisation, exponential smoothing) and its
    signature."""
    import sacrebleu  # noqa: PLC0415 - only after training

    metric = sacrebleu.metrics.BLEU(force=True)  # the text is tokenised on purpose (see README)
    score = metric.corpus_score(hypotheses, [references])
    return float(score.score), str(metric.get_signature())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    started = time.perf_counter()
    workdir = pathlib.Path(workdir)
    prepared = prepare(config, workdir)
    task = build_task(config, prepared)
    derive_schedule(config, len(prepared.splits["train"]))
    training = fit(config, workdir, task)
    params = restore_params(config, workdir, task)
    mesh = make_mesh(config.get("num_devices") or None)

    def perplexity(split):
        state = TrainState.create(apply_fn=task.model.apply, params=params, tx=optax.identity(),
                                  loss_fn=task.loss_fn)  # fmt: skip
        batch = as_batch(prepared.arrays[split])
        size = len(batch["source"])
        batches = [{k: v[i : i + 256] for k, v in batch.items()} for i in range(0, size, 256)]
        return evaluate(state, batches, mesh, summarize)

    valid, test = perplexity("valid"), perplexity("test")
    translator = Translator(config, task.model, params, prepared.target_length)
    test_arrays, test_pairs = prepared.arrays["test"], prepared.splits["test"]
    source, lengths = test_arrays["source"], test_arrays["source_lengths"]
    translator.greedy(source[:1], lengths[:1])  # compile before timing
    translator.beam(source[:1], lengths[:1])
    clock = time.perf_counter()
    greedy = translator.greedy(source, lengths)
    greedy_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    beam, weights = translator.beam(source, lengths)
    beam_seconds = time.perf_counter() - clock
    words = prepared.target_vocab.decode
    references = [translation.detokenize(list(p.target)) for p in test_pairs]
    greedy_text = [translation.detokenize(words(h)) for h in greedy]
    beam_text = [translation.detokenize(words(h)) for h in beam]
    greedy_bleu, signature = bleu(greedy_text, references)
    beam_bleu, _ = bleu(beam_text, references)
    num_params = int(sum(x.size for x in jax.tree.leaves(params)))
    steps_seconds = max(training["step_seconds_total"], 1e-9)
    results = {
        "variant": config.variant,
        "direction": config.data.direction,
        "cell": config.model.cell,
        "attention": config.model.attention,
        "num_params": num_params,
        "bleu": {"greedy": greedy_bleu, "beam": beam_bleu},
        "bleu_signature": signature,
        "bleu_note": "corpus BLEU on the test pairs, one reference each, hypotheses and "
        "references normalised as in training (lower-cased, punctuation split)",
        "beam": {"size": config.decode.beam_size, "alpha": config.decode.alpha},
        "valid": valid,
        "test": test,
        "test_pairs": len(test_pairs),
        "train_sentences_per_second": config.num_steps * config.batch_size / steps_seconds,
        "decode_sentences_per_second": {
            "greedy": len(test_pairs) / max(greedy_seconds, 1e-9),
            "beam": len(test_pairs) / max(beam_seconds, 1e-9),
        },
        "wall_seconds": time.perf_counter() - started,
        "training": training,
        "command": " ".join(["python -m experiments.translate.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
    }
    if is_writer():
        files.write_json(workdir / "results.json", results)
        write_samples(workdir / "samples.txt", test_pairs, greedy_text, beam_text,
                      config.decode.num_samples)  # fmt: skip
        from experiments.translate import plot  # noqa: PLC0415 - matplotlib only here

        for i in range(min(config.decode.num_plots, len(test_pairs))):
            plot.attention(workdir / f"attention_{i}.png", list(test_pairs[i].source),
                           words(beam[i]) + [translation.EOS], weights[i])  # fmt: skip
    print(
        f"test BLEU greedy {greedy_bleu:.2f}, beam {beam_bleu:.2f} ({signature}); "
        f"valid perplexity {valid['perplexity']:.3g}",
        flush=True,
    )
    return results


def write_samples(path, pairs, greedy, beam, count) -> None:
    blocks = []
    for pair, g, b in list(zip(pairs, greedy, beam, strict=True))[:count]:
        blocks.append(
            f"source:    {translation.detokenize(list(pair.source))}\n"
            f"reference: {translation.detokenize(list(pair.target))}\n"
            f"greedy:    {g}\nbeam:      {b}\n"
        )
    files.write_text(path, "\n".join(blocks))
