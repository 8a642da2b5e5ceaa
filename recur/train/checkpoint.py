"""Checkpoints with orbax ``CheckpointManager``: the saved pytree is the state's
``{step, params, opt_state}`` (plus ``carry`` for stateful tasks); orbax writes to a temporary
folder and renames it when complete, so an interrupted save never replaces the last good
checkpoint."""

import pathlib

import jax
import orbax.checkpoint as ocp

from recur.train.state import TrainState


def make_manager(workdir: pathlib.Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
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
    """``state`` with the latest checkpoint's values, or unchanged when there is none."""
    step = manager.latest_step()
    if step is None:
        return state
    # Shapes, dtypes and (for a state placed on a mesh) shardings: each process of a
    # multi-process run restores its devices' parts.
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved(state))
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return state.replace(**restored)
