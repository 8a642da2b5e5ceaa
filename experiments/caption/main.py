"""Trains an image captioner on strips of MNIST digits and reports held-out caption accuracy.

  python -m experiments.caption.main --config=experiments/caption/config.py:number,cell=gru \
      --workdir=/tmp/caption_number_gru

Overrides: ``--config.model.feed_context=true``. Rerunning with the same ``--workdir`` resumes
from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from experiments.caption import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Captioning config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    run(train.train_and_evaluate)
