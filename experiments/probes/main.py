"""Trains one cell on one long-term-dependency probe.

  python -m experiments.probes.main \
      --config=experiments/probes/config.py:task=adding,cell=lstm,T=200 --workdir=/tmp/probe

Overrides: ``--config.optim.learning_rate=3e-4``. Rerunning with the same ``--workdir``
resumes from the latest checkpoint.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments.probes import train
from recur.train import NonFiniteLossError, quiet_logs, sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Probe config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    sharding.maybe_initialize_distributed(FLAGS.distributed)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
