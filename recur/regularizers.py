"""Dropout for recurrent networks, as pure functions of arrays, params and keys.

* :func:`recurrent_dropout_cell`: dropout on the recurrent connections with one mask per
  sequence shared by every step (Gal & Ghahramani 2016): the state's ``h`` is masked where it
  enters the recurrent matmul, ``(h_{t-1} ⊙ m) W_hh``, and nowhere else (an LSTM's memory cell
  and a GRU's interpolation ``(1 - z) ⊙ h_{t-1}`` read it unmasked, as Keras'
  ``recurrent_dropout`` and Semeniuta et al. 2016 keep the memory undropped).
* :func:`weight_drop`: DropConnect on the recurrent weight matrix, one mask per forward pass
  shared by the whole batch and every step (Wan et al. 2013; Merity et al. 2018, AWD-LSTM).
* :func:`embedding_dropout`: whole word types dropped for a batch, the same type dropped at
  every position it occurs (Gal & Ghahramani 2016; Merity et al. 2018).
* :func:`locked_dropout`: one mask per sequence over ``[B, T, D]`` features, shared by all steps
  (Merity et al.'s name for Gal & Ghahramani's variational dropout of inputs and outputs).

All are inverted dropout: kept units are scaled by ``1 / (1 - rate)``, so evaluation runs the
model unchanged. A rate of 0 returns its input unchanged (the same arrays, no key read).

References:
  Gal & Ghahramani, "A theoretically grounded application of dropout in recurrent neural
  networks", NeurIPS 2016.
  Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of neural networks using DropConnect",
  ICML 2013.
  Merity, Keskar & Socher, "Regularizing and optimizing LSTM language models", ICLR 2018.
  Semeniuta, Severyn & Barth, "Recurrent dropout without memory loss", COLING 2016.
"""

import jax
import jax.numpy as jnp

from recur.cells.base import Cell
from recur.types import Array, Params, PRNGKey

# Recurrent weight matrices that weight drop masks, per cell parameter name.
RECURRENT_WEIGHTS = ("w_hh",)


def check_rate(argument: str, rate: float) -> None:
    """Raises ValueError unless ``0 <= rate < 1``."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{argument} must lie in [0, 1), got {rate}")


def _keep_mask(rng: PRNGKey, rate: float, shape: tuple[int, ...], dtype) -> Array:
    """``1 / (1 - rate)`` where kept, 0 where dropped."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dtype)


def recurrent_dropout_mask(rng: PRNGKey, rate: float, batch_size: int, cell: Cell, dtype) -> Array:
    """The ``[B, H]`` mask of :func:`recurrent_dropout_cell`: one per sequence."""
    check_rate("recurrent_dropout", rate)
    return _keep_mask(rng, rate, (batch_size, cell.hidden_size), dtype)


def recurrent_dropout_cell(cell: Cell, mask: Array) -> Cell:
    """``cell`` whose step reads ``h_{t-1} ⊙ mask`` in its recurrent matmul.

    Args:
      cell: a cell with a recurrent matmul (``Cell.recurrent`` and ``Cell.pointwise``: rnn,
        lstm, gru with ``reset_after``).
      mask: ``[B, H]`` (:func:`recurrent_dropout_mask`), the same at every step.

    The returned cell has no members of :mod:`recur.fused` (whose backward pass reads the
    unmasked state), so :func:`recur.unroll` runs it step by step with autodiff; it has no
    ``linear`` recurrence either.

    Raises:
      ValueError: the cell has no recurrent matmul to drop from (mingru, minlstm and lru
        compute their gates from the input alone; gru ``reset_before`` multiplies the reset
        gate into the state before its matmul: use ``reset_after``).
    """
    if cell.recurrent is None or cell.pointwise is None:
        raise ValueError(
            f"recurrent dropout needs a cell with a recurrent matmul (Cell.recurrent); "
            f"{cell.name} has none"
        )

    def step(params, state, x_proj):
        dropped = state._replace(h=state.h * mask)
        return cell.pointwise(state, x_proj, cell.recurrent(params, dropped))

    def gates(params, state, x_proj):
        return cell.gates(params, state._replace(h=state.h * mask), x_proj)

    return Cell(
        cell.init, cell.initial_state, cell.project, step, cell.hidden_size, cell.name,
        gates if cell.gates is not None else None,
    )  # fmt: skip


def weight_drop(
    params: Params, rate: float, rng: PRNGKey, names: tuple[str, ...] = RECURRENT_WEIGHTS
) -> Params:
    """``params`` with DropConnect on the recurrent weight matrices (``names``), one mask each.

    ``params`` is one layer's cell params, or ``{"forward": ..., "backward": ...}`` of a
    bidirectional layer (each direction its own mask).

    Raises:
      ValueError: ``rate > 0`` and no entry of ``names`` is in the params (mingru, minlstm and
        lru have no recurrent matrix).
    """
    check_rate("weight_drop", rate)
    if rate == 0.0:
        return params
    if "forward" in params and "backward" in params:
        k_fwd, k_bwd = jax.random.split(rng)
        return {
            "forward": weight_drop(params["forward"], rate, k_fwd, names),
            "backward": weight_drop(params["backward"], rate, k_bwd, names),
        }
    found = [name for name in names if name in params]
    if not found:
        raise ValueError(
            f"weight_drop needs a recurrent weight matrix ({', '.join(names)}) in the cell's "
            f"params; found {', '.join(sorted(params))}"
        )
    dropped = dict(params)
    for name, key in zip(found, jax.random.split(rng, len(found)), strict=True):
        weight = params[name]
        dropped[name] = weight * _keep_mask(key, rate, weight.shape, weight.dtype)
    return dropped


def embedding_dropout(embedding: Array, rate: float, rng: PRNGKey) -> Array:
    """The ``[V, E]`` embedding matrix with whole rows (word types) dropped."""
    check_rate("embed_dropout", rate)
    if rate == 0.0:
        return embedding
    return embedding * _keep_mask(rng, rate, (embedding.shape[0], 1), embedding.dtype)


def locked_dropout(xs: Array, rate: float, rng: PRNGKey) -> Array:
    """``xs [B, T, D]`` with one ``[B, 1, D]`` mask per sequence, shared by all steps."""
    check_rate("locked dropout rate", rate)
    if rate == 0.0:
        return xs
    return xs * _keep_mask(rng, rate, (xs.shape[0], 1, xs.shape[2]), xs.dtype)
