"""Labels texts with a trained sentiment model (the params with the best dev accuracy).

  python -m experiments.sentiment.predict --workdir=/tmp/sst2_lstm \
      "a gripping, beautifully acted film"
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from experiments.sentiment import train
from recur.data import sentiment

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a trained experiments.sentiment run.")
flags.mark_flag_as_required("workdir")


def main(argv):
    texts = argv[1:]
    if not texts:
        raise app.UsageError("give one or more texts to label")
    workdir = pathlib.Path(FLAGS.workdir)
    try:
        if not (workdir / "config.json").is_file():
            raise ValueError(f"{workdir} is not an experiments.sentiment workdir (no config.json)")
        config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
        vocab = sentiment.Vocabulary.load(workdir / train.VOCAB)
        model = train.make_model(config, len(vocab))
        params = train.load_best_params(model, workdir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    sequences, _ = sentiment.encode_texts(texts, vocab, config.data.max_length)
    for text, ids in zip(texts, sequences, strict=True):
        logits = model.apply({"params": params}, jnp.asarray(ids)[None], jnp.array([len(ids)]))
        probability = float(jax.nn.softmax(logits[0])[1])
        label = "positive" if probability >= 0.5 else "negative"
        print(f"{label}\t{probability:.3f}\t{text}")


if __name__ == "__main__":
    app.run(main)
