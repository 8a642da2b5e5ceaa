"""``Recurrent``: the Flax Linen layer that owns cell params and calls :mod:`recur.scan`."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from recur import cells as cells_lib
from recur import scan
from recur.models.layers import check_block
from recur.types import Array, State


def zero_states(
    cell: str,
    hidden_size: int,
    num_layers: int,
    batch_size: int,
    *,
    bidirectional: bool = False,
    cell_options: Mapping[str, Any] = FrozenDict(),
) -> list[State]:
    """Zero states for every layer of a stack (``(forward, backward)`` pairs if bidirectional)."""
    state = cells_lib.get(cell, hidden_size, **cell_options).initial_state((batch_size,))
    return [(state, state) if bidirectional else state for _ in range(num_layers)]


class Recurrent(nn.Module):
    """Stacked, optionally bidirectional recurrent layers of one cell type.

    Attributes:
      cell: cell name (see ``recur.cells.available()``).
      hidden_size: H of every layer.
      num_layers: depth.
      bidirectional: run every layer in both directions.
      merge: ``concat`` or ``sum`` of the two directions.
      dropout_rate: dropout between layers (needs the ``"dropout"`` rng when not deterministic).
      residual: residual connections around layers 2..N.
      variational_dropout: share each sequence's dropout mask across time steps.
      recurrent_dropout: dropout on the recurrent connections, one mask per sequence shared by
        all steps (Gal & Ghahramani 2016; :func:`recur.regularizers.recurrent_dropout_cell`);
        such layers run with autodiff of the scan, not :mod:`recur.fused`.
      weight_drop: DropConnect on the recurrent weight matrices, one mask per call (Merity et
        al. 2018; :func:`recur.regularizers.weight_drop`).
      remat: rematerialise each step in the backward pass.
      hoist_projection: see :func:`recur.unroll` (None: the backend's default).
      fused: the hand-written backward pass of :mod:`recur.fused`; None: the backend's default
        (:func:`recur.scan.default_fused`).
      cell_options: extra options for the cell factory, e.g. ``{"activation": "relu"}``.
      block: ``stack`` (layers feed each other directly, dropout between them: the classic
        stacked RNN) or ``residual``: the block of Orvieto et al. (2023), used for stacks of
        linear recurrences (mingru, minlstm, lru), ``x <- x + dropout(GLU(GELU(cell(
        LayerNorm(x)))))`` with ``GLU(y) = Dense(y) ⊙ σ(Dense'(y))`` back to H features,
        after a ``Dense(H)`` of the inputs where they have another size. The outputs are the
        residual stream; the final states are the cells'.
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    residual: bool = False
    variational_dropout: bool = False
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    remat: bool = False
    hoist_projection: bool | None = None
    fused: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()
    block: str = "stack"

    def make_cells(self) -> list[cells_lib.Cell]:
        cell = cells_lib.get(self.cell, self.hidden_size, **self.cell_options)
        return [cell] * self.num_layers

    @property
    def output_size(self) -> int:
        if self.block == "residual":
            return self.hidden_size
        return self.hidden_size * (2 if self.bidirectional and self.merge == "concat" else 1)

    def initial_states(self, batch_size: int) -> list[State]:
        """Zero states for every layer; works on an unbound module."""
        return zero_states(
            self.cell, self.hidden_size, self.num_layers, batch_size,
            bidirectional=self.bidirectional, cell_options=self.cell_options,
        )  # fmt: skip

    @nn.compact
    def __call__(
        self,
        xs: Array,
        *,
        seq_lengths: Array | None = None,
        initial_states: Sequence[State] | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, list[State]]:
        """Runs the stack over ``xs [B, T, D]``.

        Returns:
          ``(outputs [B, T, output_size], final states per layer)``.
        """
        xs = scan.check_inputs(xs)
        check_block(self.block)
        cells = self.make_cells()
        if self.block == "residual":
            if self.recurrent_dropout or self.weight_drop:
                raise ValueError(
                    "recurrent_dropout and weight_drop apply to block='stack' layers; the "
                    "residual block's cells (mingru, minlstm, lru) have no recurrent matmul"
                )
            return self._residual(cells, xs, seq_lengths, initial_states, deterministic)
        input_size = xs.shape[-1]
        params = []
        for layer, cell in enumerate(cells):
            params.append(
                self.param(
                    f"layer_{layer}",
                    lambda key, c=cell, d=input_size: scan.init_layer(
                        c, key, d, bidirectional=self.bidirectional
                    ),
                )
            )
            input_size = scan.layer_output_size(cell, self.bidirectional, self.merge)
        use_dropout = not deterministic and (
            (self.dropout_rate > 0.0 and self.num_layers > 1)
            or self.recurrent_dropout > 0.0
            or self.weight_drop > 0.0
        )
        return scan.stacked(
            cells,
            params,
            xs,
            seq_lengths=seq_lengths,
            initial_states=initial_states,
            bidirectional=self.bidirectional,
            merge=self.merge,
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
            residual=self.residual,
            variational_dropout=self.variational_dropout,
            recurrent_dropout=self.recurrent_dropout,
            weight_drop=self.weight_drop,
            remat=self.remat,
            hoist_projection=self.hoist_projection,
            fused=self.fused,
        )

    def _residual(self, cells, xs, seq_lengths, initial_states, deterministic):
        """The ``residual`` block layout (see the class docstring)."""
        options = {"remat": self.remat, "hoist_projection": self.hoist_projection,
                   "fused": self.fused}  # fmt: skip
        if xs.shape[-1] != self.hidden_size:
            xs = nn.Dense(self.hidden_size, name="input_projection")(xs)
        final_states = []
        for layer, cell in enumerate(cells):
            params = self.param(
                f"layer_{layer}",
                lambda key, c=cell: scan.init_layer(
                    c, key, self.hidden_size, bidirectional=self.bidirectional
                ),
            )
            normed = nn.LayerNorm(name=f"norm_{layer}")(xs)
            state = None if initial_states is None else initial_states[layer]
            if self.bidirectional:
                ys, final = scan.bidirectional(
                    cell, params, normed, seq_lengths=seq_lengths, merge=self.merge,
                    initial_state=state, **options,
                )  # fmt: skip
            else:
                ys, final = scan.unroll(
                    cell, params, normed, initial_state=state, seq_lengths=seq_lengths, **options
                )
            ys = jax.nn.gelu(ys)
            gate = nn.Dense(self.hidden_size, name=f"glu_gate_{layer}")(ys)
            ys = nn.Dense(self.hidden_size, name=f"glu_{layer}")(ys) * jax.nn.sigmoid(gate)
            ys = nn.Dropout(self.dropout_rate, deterministic=deterministic)(ys)
            if seq_lengths is not None:  # padding stays zero in the stream
                ys = ys * (jnp.arange(xs.shape[1])[None, :, None] < seq_lengths[:, None, None])
            xs = xs + ys
            final_states.append(final)
        return xs, final_states
