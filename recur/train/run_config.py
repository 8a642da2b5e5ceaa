"""A run's config, kept in ``workdir/config.json``, and the check that a rerun of the workdir
continues the same run: a field that changes what is trained (model, data, optimizer, seed,
batch) must not change silently under a checkpoint made with another value.

Fields that only extend or report a run may change on resume: the number of steps or epochs,
logging/evaluation/checkpoint periods, the device count, and the speed paths that compute the
same function (``fused``, ``remat``, a classifier's ``length_multiple`` padding, which draws
its dropout masks for another shape). Anything else is refused with one line listing the
changed fields, unless the run is started under :func:`allow_config_changes` (the
experiments' ``--allow_config_changes`` flag).
"""

import contextlib
import contextvars
import json
import pathlib
from typing import Any

import ml_collections

from recur import files

# Last components of dotted field names that may differ between a run and its resumption.
EXTENDING_FIELDS = frozenset({
    "num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every", "num_devices",
    "eval_batches", "fused", "remat", "length_multiple",
})  # fmt: skip

# Fields added after runs were recorded, with the value that trains as those runs did: a
# saved config without the field equals a current one that has it at this value (matched on
# the dotted name's last components), so a code upgrade does not lock out older workdirs.
ADDED_FIELDS = {
    "optim.averaging": False,
    "optim.nonmono": 5,
    "model.embed_dropout": 0.0,
    "model.input_dropout": None,
    "model.output_dropout": None,
    "model.recurrent_dropout": 0.0,
    "model.weight_drop": 0.0,
    "model.block": "stack",
}

_allowed = contextvars.ContextVar("recur_config_changes_allowed", default=False)


@contextlib.contextmanager
def allow_config_changes(allowed: bool = True):
    """Within this context, :func:`check_resume` lets a resumed run change any field (and
    returns the changes, which the loop prints and records)."""
    token = _allowed.set(allowed)
    try:
        yield
    finally:
        _allowed.reset(token)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config`` as the plain JSON value ``config.json`` holds."""
    return json.loads(config.to_json_best_effort())


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"field: old -> new"`` for each field (dotted) whose value differs between two configs
    as JSON values, fields in :data:`EXTENDING_FIELDS` left out; a field only one of them has
    shows as ``(absent)`` on the other side, unless it is in :data:`ADDED_FIELDS` at the
    value that trains as before it existed."""
    saved, current = _flat(saved), _flat(current)
    changes = []
    for name in sorted(saved.keys() | current.keys()):
        if name.rsplit(".", 1)[-1] in EXTENDING_FIELDS:
            continue
        old, new = saved.get(name, "(absent)"), current.get(name, "(absent)")
        added = [value for field, value in ADDED_FIELDS.items()
                 if name == field or name.endswith("." + field)]  # fmt: skip
        if added and old == "(absent)" and new == added[0]:
            continue
        if old != new:
            changes.append(f"{name}: {old!r} -> {new!r}")
    return changes


def check_resume(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> list[str]:
    """Before resuming ``workdir`` (it holds a checkpoint) with ``config``: the changed fields
    when changes are allowed, else ``[]``.

    Raises:
      ValueError: naming the changed fields, when any changes what is trained and changes
        are not allowed.
    """
    path = workdir / "config.json"
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON config ({error})") from None
    changes = config_changes(saved, as_dict(config))
    if changes and not _allowed.get():
        shown = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
        raise ValueError(
            f"{workdir} holds a run with other settings ({shown}); use another --workdir, or "
            "pass --allow_config_changes to continue its checkpoint with the new settings"
        )
    return changes


def write(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Writes ``workdir/config.json`` (atomically)."""
    files.write_text(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
