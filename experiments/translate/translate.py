"""Translates sentences with a trained workdir of ``experiments.translate.main``.

  python -m experiments.translate.translate --workdir=/tmp/translate_tutorial \
      "je suis très fatigué ." [--greedy] [--beam_size=5] [--plot=attention.png]

Prints one translation per sentence (beam search with the run's settings by default). Words
the training data never showed become ``<unk>``, with a note.
"""

import json
import pathlib
import sys

import ml_collections
from absl import app, flags

from experiments.translate import train
from recur.data import translation
from recur.data.vocabulary import Vocabulary
from recur.train import quiet_logs, restore_params

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained translation workdir.")
flags.DEFINE_bool("greedy", False, "Greedy decoding instead of beam search.")
flags.DEFINE_integer("beam_size", None, "Beam width (default: the run's decode.beam_size).")
flags.DEFINE_string("plot", None, "Write the first sentence's attention heatmap to this PNG.")
flags.mark_flags_as_required(["workdir"])


def load(workdir: pathlib.Path):
    """``(config, model, params, source_vocab, target_vocab)`` of a trained workdir."""
    needed = [workdir / name for name in ("config.json", train.SOURCE_VOCAB, train.TARGET_VOCAB)]
    missing = [str(p.name) for p in needed if not p.is_file()]
    if missing:
        raise ValueError(f"{workdir} holds no translation run (missing {', '.join(missing)})")
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    source_vocab = Vocabulary.load(workdir / train.SOURCE_VOCAB)
    target_vocab = Vocabulary.load(workdir / train.TARGET_VOCAB)
    source_length, target_length = train.lengths_for(config)
    prepared = train.Prepared({}, {}, source_vocab, target_vocab, source_length, target_length,
                              [])  # fmt: skip
    task = train.build_task_for_restore(config, prepared)
    params = restore_params(config, workdir, task)
    return config, task.model, params, prepared


def main(argv):
    sentences = argv[1:]
    if not sentences:
        raise app.UsageError("give one or more sentences to translate")
    quiet_logs()
    try:
        config, model, params, prepared = load(pathlib.Path(FLAGS.workdir))
        if FLAGS.beam_size is not None:
            config.decode.beam_size = FLAGS.beam_size
        data = config.data
        tokens = [translation.tokenize(s, data.lowercase, data.strip_accents) for s in sentences]
        unknown = sorted({t for ts in tokens for t in ts if t not in prepared.source_vocab.ids})
        if unknown:
            print(f"note: not in the training vocabulary, read as <unk>: {', '.join(unknown)}",
                  file=sys.stderr)  # fmt: skip
        too_long = [i for i, ts in enumerate(tokens) if len(ts) > prepared.source_length]
        if too_long:
            print(f"note: sentence {too_long[0] + 1} is cut to {prepared.source_length} tokens, "
                  "the longest the run trained on", file=sys.stderr)  # fmt: skip
        pairs = [translation.Pair(tuple(ts), (), i) for i, ts in enumerate(tokens)]
        arrays = translation.encode(pairs, prepared.source_vocab, prepared.target_vocab,
                                    prepared.source_length, prepared.target_length)  # fmt: skip
        translator = train.Translator(
            config, model, params, prepared.target_length, batch_size=len(sentences),
        )  # fmt: skip
        source, lengths = arrays["source"], arrays["source_lengths"]
        if FLAGS.greedy:
            outputs, weights = translator.greedy(source, lengths), None
        else:
            outputs, weights = translator.beam(source, lengths)
        words = prepared.target_vocab.decode
        for output in outputs:
            print(translation.detokenize(words(output)))
        if FLAGS.plot:
            if weights is None:
                raise ValueError("--plot needs beam search (drop --greedy)")
            from experiments.translate import plot  # noqa: PLC0415

            plot.attention(FLAGS.plot, list(tokens[0][: prepared.source_length]),
                           words(outputs[0]) + [translation.EOS], weights[0])  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
