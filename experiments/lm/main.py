"""Trains a word- or character-level language model with truncated BPTT and reports
perplexity (words) or bits per character on valid and test.

  python -m experiments.lm.main --config=experiments/lm/config.py:ptb_small,cell=lstm \
      --workdir=/tmp/ptb_small_lstm

Writes ``results.json`` (valid/test perplexity and bpc, tokens/s, wall time, config, command)
and ``vocab.json`` to the workdir; rerunning with the same workdir resumes.
"""

from absl import flags
from ml_collections import config_flags

from experiments.lm import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Language-model config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, vocabulary and results.")
flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    run(train.train_and_evaluate)
