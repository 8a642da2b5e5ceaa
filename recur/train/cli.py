"""The shared body of every experiment's ``main``: the device flags every experiment takes,
and one clear error line and exit code 1 for bad input, instead of a traceback: a config
typo or a bad flag value (:func:`parse_flags`), a ``--workdir`` that is not a directory, a
``ValueError`` from the data or the config, an ``OSError``, or a diverged run."""

import contextlib
import pathlib
import re
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags

from recur import files
from recur.train import (
    NonFiniteLossError,
    TrainingStopped,
    allow_config_changes,
    malloc,
    quiet_logs,
    sharding,
)

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
flags.DEFINE_bool(
    "allow_config_changes", False,
    "Resume a --workdir whose config.json differs from this run's config in fields that change "
    "what is trained (model, data, optimizer, seed, batch): its checkpoint continues under the "
    "new settings, which are printed and recorded. Without it such a rerun stops.",
)  # fmt: skip
flags.DEFINE_bool(
    "reuse_freed_memory", True,
    "Keep the memory each training step frees for the next step (glibc malloc: one arena, "
    "blocks up to 1 GiB from the heap, no trimming below 1 GiB; recur.train.malloc) instead of "
    "page-faulting it in anew every step. False: the C library's defaults.",
)  # fmt: skip
flags.DEFINE_string("coordinator_address", None, "With --distributed: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """``app.run``'s ``flags_parser``: parses ``argv``, or prints one line naming the bad flag
    (an unknown config field, with ml_collections' suggestion; a value of the wrong type; a
    config file that does not load) and exits with status 1."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = str(error)
        # A config file that raised while loading: ml_collections quotes the whole traceback.
        failed = re.match(r"flag (\S+): Error whilst parsing config file:.*\n(\w+): (.*)$",
                          message.strip(), re.DOTALL)  # fmt: skip
        if failed:
            flag, kind, text = failed.groups()
            message = f"{flag}: " + (text if kind == "ValueError" else f"{kind}: {text}")
    except (AttributeError, KeyError) as error:  # an override naming a field not in the config
        text = str(error).replace("\\'", "'").replace("\\n", " ")
        field = re.search(r"'(\w+)'", text)
        field = field.group(1) if field else "?"
        culprit = next((a for a in argv if a.startswith("--config.") and field in a), "--config")
        message = f"{culprit.split('=')[0]}: the config has no field {field!r}"
        suggestion = re.search(r'Did you mean "(\w+)"', text)
        if suggestion:
            message += f" (did you mean {suggestion.group(1)!r}?)"
    except Exception as error:  # e.g. the config file raising on a bad variant, or missing
        message = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else error
    print(f"error: {_one_line(message)}", file=sys.stderr)
    sys.exit(1)


def run(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], object],
    before: Callable[[], None] | None = None,
) -> None:
    """``app.run`` of :func:`experiment_main` with :func:`parse_flags`: the whole body of an
    experiment's ``if __name__ == "__main__":``."""
    app.run(experiment_main(train_and_evaluate, before), flags_parser=parse_flags)


def check_workdir(workdir: str) -> None:
    """Raises ``ValueError`` when ``workdir`` exists and is not a directory."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir={workdir} is a file, not a directory")


def experiment_main(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], object],
    before: Callable[[], None] | None = None,
) -> Callable[[list[str]], None]:
    """``main(argv)`` for ``app.run`` that sets up memory reuse (``--reuse_freed_memory``) and
    the devices (``--cpu_devices``, ``--distributed``) before JAX starts, then calls
    ``train_and_evaluate(FLAGS.config, FLAGS.workdir)`` (the flags each ``main.py`` defines),
    after ``before()`` if given."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs()
        if flags.FLAGS.reuse_freed_memory:
            malloc.reuse_freed_memory()
        try:
            sharding.use_cpu_cores(flags.FLAGS.cpu_devices)
            sharding.maybe_initialize_distributed(
                flags.FLAGS.distributed, flags.FLAGS.coordinator_address,
                flags.FLAGS.num_processes, flags.FLAGS.process_id,
            )  # fmt: skip
            check_workdir(flags.FLAGS.workdir)
            # The lock first: nothing is written to a workdir another run holds.
            with (
                files.lock_workdir(flags.FLAGS.workdir)
                if sharding.is_writer()
                else contextlib.nullcontext()
            ):
                if before is not None:
                    before()
                with allow_config_changes(flags.FLAGS.allow_config_changes):
                    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
        except TrainingStopped as stopped:
            print(str(stopped), file=sys.stderr)
            sys.exit(128 + stopped.signum)
        except (ValueError, NonFiniteLossError, OSError) as error:
            print(f"error: {_one_line(error)}", file=sys.stderr)
            sys.exit(1)

    return main
