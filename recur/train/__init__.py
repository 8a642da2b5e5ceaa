"""Training library: optimizers, ``TrainState`` and ``train_step``, sharding, checkpoints,
metric writers and the loop experiments share."""

from absl import flags, logging

from recur.train.loop import (
    NonFiniteLossError,
    Task,
    TrainingStopped,
    evaluate,
    fit,
    restore_params,
)
from recur.train.optim import make_optimizer, make_schedule
from recur.train.run_config import allow_config_changes
from recur.train.state import TrainState, batch_mean, batch_weight, eval_step, train_step


def quiet_logs() -> None:
    """absl logs at WARNING unless ``--verbosity`` was given (orbax logs every save at INFO)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


__all__ = [
    "NonFiniteLossError",
    "Task",
    "TrainState",
    "TrainingStopped",
    "allow_config_changes",
    "batch_mean",
    "batch_weight",
    "eval_step",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_schedule",
    "quiet_logs",
    "restore_params",
    "train_step",
]
