"""Files a run writes, written so that a crash or a full disk mid-write never leaves a
truncated file where a good one was: the text goes to a temporary file beside the target,
which then replaces it in one step (``os.replace``, atomic on POSIX)."""

import json
import os
import pathlib
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
