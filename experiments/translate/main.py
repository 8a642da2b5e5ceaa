"""Trains an encoder-decoder translator and reports BLEU.

  python -m experiments.translate.main --config=experiments/translate/config.py:tutorial \
      --workdir=/tmp/translate_tutorial

Overrides: ``--config.model.attention=none``. Rerunning with the same ``--workdir`` resumes
from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from experiments.translate import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Translation config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    run(train.train_and_evaluate)
