"""Many-to-many language model with state carried in and out (truncated BPTT)."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from recur import regularizers
from recur.models import layers
from recur.models.recurrent import Recurrent, zero_states
from recur.types import Array, State


class OutputLayer(nn.Module):
    """Logits over a vocabulary, ``x [..., D] -> [..., vocab_size]``, with the kernel stored
    ``[vocab_size, D]`` (:func:`recur.models.layers.init_output`: faster on XLA:CPU than
    ``nn.Dense``'s ``[D, vocab_size]``). Initialised as ``nn.Dense(vocab_size)`` would be with
    the same key, transposed: the same values, so the same model."""

    vocab_size: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        def init_kernel(key, shape, dtype=jnp.float32):  # nn.Dense's draw, transposed
            return nn.initializers.lecun_normal()(key, shape[::-1], dtype).T

        kernel = self.param("kernel", init_kernel, (self.vocab_size, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.vocab_size,))
        return layers.output({"kernel": kernel, "bias": bias}, x)


class LanguageModel(nn.Module):
    """Embedding -> dropout -> stacked recurrent layers -> dropout -> logits over the vocabulary.

    ``dropout_rate`` drops the non-recurrent connections (Zaremba et al. 2014): the embedded
    inputs, between layers and the last layer's outputs; ``input_dropout`` and
    ``output_dropout`` set the first and last of those apart (None: ``dropout_rate``). With
    ``variational_dropout`` each sequence keeps one mask across time ("locked" dropout, Gal &
    Ghahramani 2016; Merity et al. 2018). The AWD-LSTM toolkit (Merity et al. 2018) adds
    ``embed_dropout`` (whole word types dropped per batch), ``weight_drop`` (DropConnect on the
    recurrent matrices) and ``recurrent_dropout`` (Gal & Ghahramani's mask on ``h_{t-1}``
    shared over time); see :mod:`recur.regularizers`. All rates 0 (the defaults) give the
    unregularised model.

    ``block="residual"`` stacks the layers in the residual blocks of
    :class:`~recur.models.Recurrent` (for mingru, minlstm and lru).

    ``tie_embeddings`` reuses the embedding matrix as the output layer (Press & Wolf 2017;
    Inan et al. 2017) with a bias of its own; where ``hidden_size != embed_size`` a linear
    projection (no bias) maps the last layer's outputs to ``embed_size`` first.

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
    input_dropout: float | None = None
    output_dropout: float | None = None
    embed_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    tie_embeddings: bool = False
    block: str = "stack"
    remat: bool = False
    fused: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()

    def setup(self):
        for name in ("input_dropout", "output_dropout", "embed_dropout"):
            if getattr(self, name) is not None:
                regularizers.check_rate(name, getattr(self, name))
        self.embed = nn.Embed(self.vocab_size, self.embed_size)
        self.recurrent = Recurrent(
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            variational_dropout=self.variational_dropout,
            recurrent_dropout=self.recurrent_dropout,
            weight_drop=self.weight_drop,
            block=self.block,
            remat=self.remat,
            fused=self.fused,
            cell_options=self.cell_options,
        )
        broadcast = (1,) if self.variational_dropout else ()
        self.dropout = nn.Dropout(self.dropout_rate, broadcast_dims=broadcast)
        # Separate layers only for rates that differ (equal rates: today's masks exactly).
        rates = {"input": self.input_dropout, "output": self.output_dropout}
        self.apart = {
            where: nn.Dropout(rate, broadcast_dims=broadcast)
            for where, rate in rates.items()
            if rate is not None and rate != self.dropout_rate
        }
        if not self.tie_embeddings:
            self.head = OutputLayer(self.vocab_size)
        else:  # the tied decoder keeps a bias of its own (Press & Wolf 2017)
            self.output_bias = self.param("output_bias", nn.initializers.zeros,
                                          (self.vocab_size,))  # fmt: skip
            if self.hidden_size != self.embed_size:
                self.projection = nn.Dense(self.embed_size, use_bias=False)

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
        if self.embed_dropout > 0.0 and not deterministic:
            table = regularizers.embedding_dropout(
                self.embed.embedding, self.embed_dropout, self.make_rng("dropout")
            )
            xs = jnp.take(table, tokens, axis=0)
        else:
            xs = self.embed(tokens)
        drop_in = self.apart.get("input", self.dropout)
        xs = drop_in(xs, deterministic=deterministic)  # [B, T, E]
        outputs, states = self.recurrent(
            xs, initial_states=initial_states, deterministic=deterministic
        )
        drop_out = self.apart.get("output", self.dropout)
        outputs = drop_out(outputs, deterministic=deterministic)  # [B, T, H]
        if not self.tie_embeddings:
            return self.head(outputs), states
        if self.hidden_size != self.embed_size:
            outputs = self.projection(outputs)  # [B, T, E]
        return self.embed.attend(outputs) + self.output_bias, states
