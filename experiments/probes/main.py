"""Trains one cell on one long-term-dependency probe.

  python -m experiments.probes.main \
      --config=experiments/probes/config.py:task=adding,cell=lstm,T=200 --workdir=/tmp/probe

Overrides: ``--config.optim.learning_rate=3e-4``. Rerunning with the same ``--workdir``
resumes from the latest checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from experiments.probes import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Probe config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    run(train.train_and_evaluate)
