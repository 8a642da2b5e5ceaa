"""The shared body of every experiment's ``main``: the device flags every experiment takes,
and one clear error line and exit code 1 for bad input (``ValueError``) or a diverged run,
instead of a traceback."""

import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags

from recur.train import NonFiniteLossError, quiet_logs, sharding

flags.DEFINE_integer(
    "cpu_devices", None,
    "JAX CPU devices the training batch is split over (default: one per core this process may "
    "run on; 1: no split). Ignored on GPU and TPU, whose devices are used as they are.",
)  # fmt: skip
flags.DEFINE_bool(
    "distributed", False,
    "Multi-process run (several hosts, or several processes on one): jax.distributed.initialize "
    "with the three flags below, each taken from the cluster's environment when not given; "
    "every process runs the same command, and only process 0 writes metrics, plots and results.",
)  # fmt: skip
flags.DEFINE_string("coordinator_address", None, "With --distributed: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")


def experiment_main(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], object],
    before: Callable[[], None] | None = None,
) -> Callable[[list[str]], None]:
    """``main(argv)`` for ``app.run`` that sets up the devices (``--cpu_devices``,
    ``--distributed``) before JAX starts, then calls ``train_and_evaluate(FLAGS.config,
    FLAGS.workdir)`` (the flags each ``main.py`` defines), after ``before()`` if given."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs()
        try:
            sharding.use_cpu_cores(flags.FLAGS.cpu_devices)
            sharding.maybe_initialize_distributed(
                flags.FLAGS.distributed, flags.FLAGS.coordinator_address,
                flags.FLAGS.num_processes, flags.FLAGS.process_id,
            )  # fmt: skip
            if before is not None:
                before()
            train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
        except (ValueError, NonFiniteLossError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return main
