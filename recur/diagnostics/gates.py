"""Gate statistics per time step for gated cells (LSTM: input, forget, output; GRU: reset,
update): the mean activation and the fraction saturated (below 0.05 or above 0.95)."""

import jax
import jax.numpy as jnp

from recur.cells import Cell
from recur.diagnostics.jacobians import trajectory
from recur.types import Array, Params

SATURATION = (0.05, 0.95)


def gate_statistics(
    cell: Cell, params: Params, xs: Array, seq_lengths: Array | None = None
) -> dict[str, dict[str, Array]]:
    """``{gate: {"mean": [T], "saturated": [T], "mean_per_unit": [T, H]}}`` over the batch's
    valid steps (padded steps are left out of the averages).

    Raises:
      ValueError: for a cell without gates (the Elman RNN).
    """
    if cell.gates is None:
        raise ValueError(f"cell {cell.name!r} has no gates to report statistics for")
    before, x_proj = trajectory(cell, params, xs)
    gates = jax.vmap(lambda state, x: cell.gates(params, state, x))(before, x_proj)  # [T, B, H]
    num_steps, batch_size = x_proj.shape[:2]
    if seq_lengths is None:
        valid = jnp.ones((num_steps, batch_size), bool)
    else:
        valid = jnp.arange(num_steps)[:, None] < seq_lengths[None, :]
    weight = valid[..., None].astype(xs.dtype)  # [T, B, 1]
    count = jnp.maximum(weight.sum(1), 1.0)  # [T, 1]
    low, high = SATURATION
    stats = {}
    for name, value in gates.items():
        saturated = ((value < low) | (value > high)).astype(xs.dtype)
        per_unit = (value * weight).sum(1) / count  # [T, H]
        stats[name] = {
            "mean": per_unit.mean(-1),
            "saturated": ((saturated * weight).sum(1) / count).mean(-1),
            "mean_per_unit": per_unit,
        }
    return stats
