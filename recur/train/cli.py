"""The shared body of every experiment's ``main``: one clear error line and exit code 1 for
bad input (``ValueError``) or a diverged run, instead of a traceback."""

import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags

from recur.train import NonFiniteLossError, quiet_logs


def experiment_main(
    train_and_evaluate: Callable[[ml_collections.ConfigDict, str], object],
    before: Callable[[], None] | None = None,
) -> Callable[[list[str]], None]:
    """``main(argv)`` for ``app.run`` that calls ``train_and_evaluate(FLAGS.config,
    FLAGS.workdir)`` (the flags each ``main.py`` defines), after ``before()`` if given."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs()
        if before is not None:
            before()
        try:
            train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
        except (ValueError, NonFiniteLossError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)

    return main
