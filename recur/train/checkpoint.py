"""Checkpoints with orbax ``CheckpointManager``: the saved pytree is the state's
``{step, params, opt_state}`` (plus ``carry`` for stateful tasks); orbax writes to a temporary
folder and renames it when complete, so an interrupted save never replaces the last good
checkpoint. A checkpoint damaged afterwards (a truncated or emptied file) is moved aside to
``workdir/damaged_checkpoints/`` on restore, with a warning, and the run resumes from the
newest one that reads."""

import pathlib
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from recur.train.state import TrainState


def make_manager(workdir: pathlib.Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_handlers=ocp.StandardCheckpointHandler(),  # known before a save: for metadata
    )


def _saved(state: TrainState) -> dict:
    saved = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
    if state.carry is not None:
        saved["carry"] = state.carry
    return saved


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
    step = int(jax.device_get(state.step))
    if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(_saved(state)))


def restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    """``state`` with the newest readable checkpoint's values, or unchanged when there is none.

    A checkpoint that fails to read (its metadata or its arrays) is damaged: the next older one
    is tried, and once one reads the damaged ones are moved to ``damaged_checkpoints/<step>``
    beside the checkpoints folder (so the run can save those steps again), each with a
    one-line warning.

    Raises:
      ValueError: when a checkpoint holds arrays of other shapes than ``state``
        (another model), or when none reads; nothing is moved then.
    """
    # Shapes, dtypes and (for a state placed on a mesh) shardings: each process of a
    # multi-process run restores its devices' parts.
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved(state))
    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            saved = manager.item_metadata(step).tree
        except Exception as error:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint
            failures.append((step, error))
            continue
        if _shapes(saved) != _shapes(target):
            raise ValueError(
                f"the checkpoint at step {step} in {manager.directory} holds another model's "
                f"state ({len(_shapes(saved))} arrays, this run has {len(_shapes(target))}, or "
                "of other shapes): use another --workdir"
            )
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as error:  # noqa: BLE001 - unreadable arrays: a damaged checkpoint
            failures.append((step, error))
            continue
        if failures:
            _move_aside(manager, failures)
        return state.replace(**restored)
    if failures:
        step, error = failures[0]
        raise ValueError(
            f"no checkpoint in {manager.directory} can be read (the newest, step {step}: "
            f"{_one_line(error)})"
        )
    return state


def _shapes(tree) -> list[tuple[int, ...]]:
    return sorted(tuple(np.shape(leaf)) for leaf in jax.tree.leaves(tree))


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _move_aside(manager: ocp.CheckpointManager, failures: list) -> None:
    directory = pathlib.Path(manager.directory)
    damaged = directory.parent / "damaged_checkpoints"
    for step, error in failures:
        print(
            f"warning: the checkpoint at step {step} is damaged ({_one_line(error)}); "
            f"moved to {damaged / str(step)}, resuming from an older one",
            file=sys.stderr,
            flush=True,
        )
    if jax.process_index() == 0:
        damaged.mkdir(exist_ok=True)
        for step, _ in failures:
            target = damaged / str(step)
            if target.exists():
                shutil.rmtree(target)
            (directory / str(step)).rename(target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("recur: damaged checkpoints moved aside")
    manager.reload()
