"""Trains a sentiment classifier (SST-2, IMDB or any labelled TSV/CSV) and reports the best dev
checkpoint on dev and test.

  python -m experiments.sentiment.main --config=experiments/sentiment/config.py:sst2,cell=lstm \
      --workdir=/tmp/sst2_lstm
"""

from absl import flags
from ml_collections import config_flags

from experiments.sentiment import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Sentiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, vocabulary and results.")
flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    run(train.train_and_evaluate)
