"""Files a run writes, written so that a crash or a full disk mid-write never leaves a
truncated file where a good one was: the text goes to a temporary file beside the target,
which then replaces it in one step (``os.replace``, atomic on POSIX); and the lock that keeps
two runs out of one workdir (:func:`lock_workdir`)."""

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any


def write_text(path: str | pathlib.Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically: ``path`` holds either its old contents or all of
    ``text``, never a part; on an error the old file is untouched and the temporary removed."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | pathlib.Path, value: Any, indent: int | None = 2) -> None:
    """``value`` as JSON (plus a final newline), written atomically (:func:`write_text`)."""
    write_text(path, json.dumps(value, indent=indent) + "\n")


class WorkdirInUse(ValueError):
    """Another run holds the workdir's lock."""


_held: set[pathlib.Path] = set()  # the workdirs this process holds
_held_guard = threading.Lock()


@contextlib.contextmanager
def lock_workdir(workdir: str | pathlib.Path) -> Iterator[None]:
    """Holds ``workdir``'s lock (``flock`` on ``workdir/.lock``, which names the holder) while
    the block runs, creating the directory if needed. Two runs in one workdir would interleave
    their checkpoints and metrics (a job requeued while its first copy still drains, a command
    launched twice); the second is refused at once. The kernel drops the lock when its
    process dies, even by SIGKILL, so a killed run never leaves a stale one. Reentrant within
    a process (an experiment's ``main`` and the ``fit`` inside it).

    Raises:
      WorkdirInUse: another process holds it; the message names its pid, host and start.
    """
    path = pathlib.Path(workdir).resolve()
    with _held_guard:
        nested = path in _held
    if nested:  # the outer block releases it
        yield
        return
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / ".lock", "a+")  # noqa: SIM115 (held open while the block runs)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "holder unknown"
        handle.close()
        raise WorkdirInUse(
            f"workdir {workdir} is in use by another run ({holder}): wait for it to end, stop "
            "it (SIGTERM saves its step), or use another workdir"
        ) from None
    except OSError as error:  # a filesystem without locks: run unguarded, and say so
        print(f"warning: cannot lock workdir {workdir} ({error}); nothing keeps a second run "
              "out of it", file=sys.stderr)  # fmt: skip
    try:
        since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        handle.flush()
        with _held_guard:
            _held.add(path)
        try:
            yield
        finally:
            with _held_guard:
                _held.discard(path)
    finally:
        handle.close()  # releases the lock; the file stays (removing it would race a waiter)
