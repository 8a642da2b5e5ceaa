"""Parameter counting and hidden sizes matched on parameter count across cells.

Chung et al. (2014) compare RNN, LSTM and GRU at (roughly) equal numbers of parameters,
not equal hidden sizes; :func:`hidden_size_for_budget` finds the hidden size that does so.
"""

from typing import Any

import jax
import numpy as np

from recur.cells.base import check_positive, get
from recur.types import Params


def count_params(params: Params) -> int:
    """Total number of scalars in a params pytree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))


def cell_param_count(
    name: str, hidden_size: int, input_size: int, output_size: int = 0, **options: Any
) -> int:
    """Parameters of a cell ``name`` plus a dense ``[H, output_size]`` head with bias."""
    cell = get(name, hidden_size, **options)
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    head = (hidden_size + 1) * output_size if output_size else 0
    return count_params(shapes) + head


def stack_param_count(
    name: str,
    hidden_size: int,
    input_size: int,
    output_size: int = 0,
    *,
    num_layers: int = 1,
    block: str = "stack",
    **options: Any,
) -> int:
    """Parameters of a unidirectional :class:`recur.models.Recurrent` stack of ``num_layers``
    cells ``name`` plus a dense ``[H, output_size]`` head with bias. ``block="stack"``: layer 1
    reads ``input_size`` features, the others H. ``block="residual"``: a ``Dense(H)`` input
    projection where ``input_size != H``, then per layer the cell (reading H), a LayerNorm
    (2H) and the GLU's two ``Dense(H)`` (2 (H^2 + H))."""
    check_positive("num_layers", num_layers)
    head = (hidden_size + 1) * output_size if output_size else 0
    if block == "stack":
        first = cell_param_count(name, hidden_size, input_size, **options)
        rest = cell_param_count(name, hidden_size, hidden_size, **options)
        return first + (num_layers - 1) * rest + head
    if block != "residual":
        raise ValueError(f"unknown block {block!r}; available: stack, residual")
    projection = (input_size + 1) * hidden_size if input_size != hidden_size else 0
    layer = cell_param_count(name, hidden_size, hidden_size, **options)
    layer += 2 * hidden_size + 2 * (hidden_size * hidden_size + hidden_size)
    return projection + num_layers * layer + head


def hidden_size_for_budget(
    name: str, budget: int, input_size: int, output_size: int = 0, **options: Any
) -> int:
    """The hidden size whose :func:`cell_param_count` is closest to ``budget``.

    Args:
      name: cell name, e.g. ``"gru"``.
      budget: target number of parameters (cell plus head).
      input_size: D.
      output_size: size of a dense head on the hidden state (0 for none).
      **options: cell options (they may change the count, e.g. the GRU variant).

    Returns:
      The hidden size (>= 1) with the smallest ``|count - budget|``.
    """
    check_positive("budget", budget)

    def count(h):
        return cell_param_count(name, h, input_size, output_size, **options)

    return closest_size(count, budget)


def closest_size(count, budget: int) -> int:
    """The size ``h >= 1`` whose ``count(h)`` (increasing in h) is closest to ``budget``."""
    low, high = 1, 1
    while count(high) < budget:
        low, high = high, high * 2
    while high - low > 1:  # count is increasing in h: bisect for the crossing
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < budget else (low, mid)
    return min((low, high), key=lambda h: abs(count(h) - budget))


def matched_hidden_sizes(
    names: list[str],
    *,
    input_size: int,
    output_size: int,
    reference: str = "lstm",
    reference_hidden_size: int = 128,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Hidden sizes giving every cell in ``names`` the parameter count of the reference cell.

    Args:
      names: cell names.
      input_size: D.
      output_size: head size counted with each cell.
      reference: the cell whose size sets the budget.
      reference_hidden_size: its hidden size.
      options: per-name cell options.

    Returns:
      ``{name: hidden_size}``; the reference gets ``reference_hidden_size``.
    """
    options = options or {}
    budget = cell_param_count(
        reference, reference_hidden_size, input_size, output_size, **options.get(reference, {})
    )
    return {
        name: hidden_size_for_budget(name, budget, input_size, output_size, **options.get(name, {}))
        for name in names
    }
