"""Captions a strip of digits with a trained workdir of ``experiments.caption.main``.

  python -m experiments.caption.predict --workdir=/tmp/caption_number_gru --index=0
  python -m experiments.caption.predict --workdir=/tmp/caption_number_gru --image=strip.png
  python -m experiments.caption.predict --workdir=/tmp/caption_number_gru --score

``--index=N`` takes test strip N (and prints its true caption too; ``--save=strip.png``
writes it as an image); ``--image`` reads a PNG or an NPY array of 28 x 28k pixels, white
digits on black as in MNIST (a PNG that is mostly white is inverted, with a note). Prints the
beam-search caption with the run's settings, or the greedy one with ``--greedy``.
"""

import json
import pathlib
import sys

import ml_collections
import numpy as np
from absl import app, flags

from experiments.caption import train
from recur import files
from recur.data import captions
from recur.train import quiet_logs, restore_params

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained captioning workdir.")
flags.DEFINE_integer("index", None, "Caption this test strip of the run.")
flags.DEFINE_string("image", None, "Caption this PNG or NPY strip (28 x 28k pixels).")
flags.DEFINE_bool("greedy", False, "Greedy decoding instead of beam search.")
flags.DEFINE_integer("beam_size", None, "Beam width (default: the run's decode.beam_size).")
flags.DEFINE_string("save", None, "With --index: write the strip to this PNG.")
flags.DEFINE_bool(
    "score", False,
    "Decode every test strip of the run and write the scores (as in results.json, with the "
    "kinds of error) to WORKDIR/test_scores.json.",
)  # fmt: skip
flags.mark_flags_as_required(["workdir"])


def load(workdir: pathlib.Path):
    """``(config, model, params)`` of a trained workdir."""
    if not (workdir / "config.json").is_file():
        raise ValueError(f"{workdir} holds no captioning run (no config.json)")
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    task = train.build_task(config, None)
    return config, task.model, restore_params(config, workdir, task)


def read_strip(path: str, max_digits: int) -> np.ndarray:
    """A PNG (grey or colour, any bit depth) or NPY strip as ``[28, 28 max_digits]`` uint8."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"--image {path} does not exist")
    if path.suffix.lower() == ".npy":
        image = np.load(path, allow_pickle=False).astype(np.float64)
    elif path.suffix.lower() == ".png":
        import matplotlib.image  # noqa: PLC0415 - only for PNG input

        image = matplotlib.image.imread(path).astype(np.float64) * 255.0  # floats in [0, 1]
        if image.ndim == 3:
            image = image[..., :3].mean(-1)
        if image.mean() > 127.5:
            print(f"note: {path} is mostly white; inverted to white digits on black",
                  file=sys.stderr)  # fmt: skip
            image = 255.0 - image
    else:
        raise ValueError(f"--image {path}: use a .png or .npy file")
    return captions.fit_strip(np.rint(image), max_digits)


def score(workdir: pathlib.Path, config, model, params) -> None:
    """Writes ``test_scores.json`` and prints each decoding's exact match and error kinds."""
    test = train.prepare(config).held_out["test"]
    _, results = train.score_test(config, model, params, test)
    command = " ".join(["python -m experiments.caption.predict", *sys.argv[1:]])
    files.write_json(workdir / "test_scores.json", {"command": command, **results})
    for name, result in results.items():
        print(f"{name}: exact match {result['exact_match']:.2%}, word accuracy "
              f"{result['word_accuracy']:.2%}, wrong captions {result['error_kinds']}")  # fmt: skip


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if (FLAGS.index is None) + (FLAGS.image is None) + (not FLAGS.score) != 2:
        raise app.UsageError("give one of --index, --image or --score")
    quiet_logs()
    truth = None
    try:
        config, model, params = load(pathlib.Path(FLAGS.workdir))
        if FLAGS.beam_size is not None:
            config.decode.beam_size = FLAGS.beam_size
        if FLAGS.score:
            score(pathlib.Path(FLAGS.workdir), config, model, params)
            return
        if FLAGS.image is not None:
            image = read_strip(FLAGS.image, config.data.max_digits)
        else:
            test = train.prepare(config).held_out["test"]
            if not 0 <= FLAGS.index < len(test["images"]):
                raise ValueError(
                    f"--index must be in [0, {len(test['images'])}), got {FLAGS.index}"
                )
            image = test["images"][FLAGS.index]
            truth = " ".join(train.words(test["targets"][FLAGS.index]))
            if FLAGS.save:
                import matplotlib.pyplot as plt  # noqa: PLC0415 - only when saving

                width = captions.SIDE * int(test["num_digits"][FLAGS.index])
                plt.imsave(FLAGS.save, image[:, :width], cmap="gray", vmin=0, vmax=255)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    captioner = train.Captioner(config, model, train.caption_length(config), batch_size=1)
    decode = captioner.greedy if FLAGS.greedy else captioner.beam
    caption = " ".join(train.VOCAB.decode(decode(params, image[None])[0]))
    print(caption if truth is None else f"{caption}\t(true: {truth})")


if __name__ == "__main__":
    app.run(main)
