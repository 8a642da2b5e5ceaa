"""Many-to-many language model with state carried in and out (truncated BPTT)."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
from flax.core import FrozenDict

from recur.models.recurrent import Recurrent, zero_states
from recur.types import Array, State


class LanguageModel(nn.Module):
    """Embedding -> dropout -> stacked recurrent layers -> dropout -> logits over the vocabulary.

    Dropout sits on the non-recurrent connections only (Zaremba et al. 2014); with
    ``variational_dropout`` each sequence keeps one mask across time (Gal & Ghahramani 2016).
    ``tie_embeddings`` reuses the embedding matrix as the output layer (Press & Wolf 2017;
    Inan et al. 2017) and needs ``hidden_size == embed_size``.

    Call with ``tokens [B, T]`` int and optionally the previous window's final states; returns
    ``(logits [B, T, V], final_states)``. The caller stops gradients at window boundaries.
    """

    vocab_size: int
    embed_size: int = 200
    cell: str = "lstm"
    hidden_size: int = 200
    num_layers: int = 2
    dropout_rate: float = 0.0
    variational_dropout: bool = False
    tie_embeddings: bool = False
    remat: bool = False
    fused: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()

    def setup(self):
        if self.tie_embeddings and self.hidden_size != self.embed_size:
            raise ValueError(
                f"tie_embeddings needs hidden_size == embed_size, got {self.hidden_size} "
                f"and {self.embed_size}"
            )
        self.embed = nn.Embed(self.vocab_size, self.embed_size)
        self.recurrent = Recurrent(
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            variational_dropout=self.variational_dropout,
            remat=self.remat,
            fused=self.fused,
            cell_options=self.cell_options,
        )
        broadcast = (1,) if self.variational_dropout else ()
        self.dropout = nn.Dropout(self.dropout_rate, broadcast_dims=broadcast)
        if not self.tie_embeddings:
            self.head = nn.Dense(self.vocab_size)

    def initial_states(self, batch_size: int) -> list[State]:
        """Zero states to start a stream with; works on an unbound module."""
        return zero_states(
            self.cell, self.hidden_size, self.num_layers, batch_size, cell_options=self.cell_options
        )

    def __call__(
        self,
        tokens: Array,
        initial_states: Sequence[State] | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[Array, list[State]]:
        xs = self.dropout(self.embed(tokens), deterministic=deterministic)  # [B, T, E]
        outputs, states = self.recurrent(
            xs, initial_states=initial_states, deterministic=deterministic
        )
        outputs = self.dropout(outputs, deterministic=deterministic)  # [B, T, H]
        logits = self.embed.attend(outputs) if self.tie_embeddings else self.head(outputs)
        return logits, states
