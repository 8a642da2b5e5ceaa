"""Many-to-one and many-to-many models, and the one-to-one feed-forward baseline."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from recur.models.pooling import AttentionPool, check_pooling, max_pool, mean_pool, time_mask
from recur.models.recurrent import Recurrent
from recur.types import Array


class FeedForward(nn.Module):
    """One-to-one baseline: an MLP ``[B, D] -> [B, num_outputs]`` with ReLU hidden layers."""

    num_outputs: int
    hidden_sizes: tuple[int, ...] = (128,)
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, xs: Array, *, deterministic: bool = True) -> Array:
        for size in self.hidden_sizes:
            xs = nn.relu(nn.Dense(size)(xs))
            xs = nn.Dropout(self.dropout_rate, deterministic=deterministic)(xs)
        return nn.Dense(self.num_outputs)(xs)


class _Encoder(nn.Module):
    """Optional embedding + input dropout + :class:`Recurrent`; shared by the models below."""

    vocab_size: int | None
    embed_size: int
    cell: str
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout_rate: float
    remat: bool
    fused: bool | None
    cell_options: Mapping[str, Any]
    block: str = "stack"

    @nn.compact
    def __call__(self, inputs, seq_lengths, deterministic):
        if self.vocab_size is not None:
            inputs = nn.Embed(self.vocab_size, self.embed_size, name="embed")(inputs)
            inputs = nn.Dropout(self.dropout_rate, deterministic=deterministic)(inputs)
        recurrent = Recurrent(
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout_rate=self.dropout_rate,
            remat=self.remat,
            fused=self.fused,
            cell_options=self.cell_options,
            block=self.block,
            name="recurrent",
        )
        outputs, states = recurrent(inputs, seq_lengths=seq_lengths, deterministic=deterministic)
        return outputs, states


class SequenceClassifier(nn.Module):
    """Many-to-one: tokens ``[B, T]`` int (``vocab_size`` set) or features ``[B, T, D]`` ->
    stacked (bi)recurrent layers -> pooling -> dropout -> head ``[B, num_classes]``.

    Pooling: ``last`` (final state; both directions' finals if bidirectional), ``mean`` or
    ``max`` over valid steps, or ``attention`` (dropout on the per-step outputs, then
    additive attention with ``attention_size`` units). The head is one dense layer, or with
    ``head_hidden_size`` > 0 a tanh hidden layer with dropout first (flax's sst2 example
    classifier). Padding (``seq_lengths``) never changes an example's logits. ``block``:
    see :class:`~recur.models.Recurrent` (``last`` pooling of a ``residual`` stack reads the
    stream at each sequence's last valid step).
    """

    num_classes: int
    vocab_size: int | None = None
    embed_size: int = 128
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    attention_size: int = 64
    head_hidden_size: int = 0
    dropout_rate: float = 0.0
    remat: bool = False
    fused: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()
    block: str = "stack"

    @nn.compact
    def __call__(
        self, inputs: Array, seq_lengths: Array | None = None, *, deterministic: bool = True
    ) -> Array:
        check_pooling(self.pooling)
        outputs, states = _Encoder(
            self.vocab_size, self.embed_size, self.cell, self.hidden_size, self.num_layers,
            self.bidirectional, self.dropout_rate, self.remat, self.fused, self.cell_options,
            self.block, name="encoder",
        )(inputs, seq_lengths, deterministic)  # fmt: skip
        batch_size, num_steps = outputs.shape[:2]
        mask = time_mask(seq_lengths, batch_size, num_steps)
        if self.pooling == "last" and self.block == "residual":  # the stream at the last step
            last_step = jnp.sum(mask, axis=1) - 1  # [B]
            pooled = outputs[jnp.arange(batch_size), jnp.maximum(last_step, 0)]
        elif self.pooling == "last":
            last = states[-1]
            pooled = (
                jnp.concatenate([last[0].h, last[1].h], axis=-1) if self.bidirectional else last.h
            )
        elif self.pooling == "mean":
            pooled = mean_pool(outputs, mask)
        elif self.pooling == "max":
            pooled = max_pool(outputs, mask)
        else:
            outputs = nn.Dropout(self.dropout_rate, deterministic=deterministic)(outputs)
            pooled = AttentionPool(self.attention_size, name="attention_pool")(outputs, mask)
        pooled = nn.Dropout(self.dropout_rate, deterministic=deterministic)(pooled)
        if self.head_hidden_size > 0:
            pooled = jnp.tanh(nn.Dense(self.head_hidden_size, name="head_hidden")(pooled))
            pooled = nn.Dropout(self.dropout_rate, deterministic=deterministic)(pooled)
        return nn.Dense(self.num_classes, name="head")(pooled)


class SequenceTagger(nn.Module):
    """Many-to-many (aligned): one output per input step, ``[B, T, num_outputs]``.

    Tokens ``[B, T]`` (``vocab_size`` set) or features ``[B, T, D]``; outputs at padded steps
    are computed from zero recurrent outputs and should be masked in the loss.
    """

    num_outputs: int
    vocab_size: int | None = None
    embed_size: int = 128
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout_rate: float = 0.0
    remat: bool = False
    fused: bool | None = None
    cell_options: Mapping[str, Any] = FrozenDict()
    block: str = "stack"

    @nn.compact
    def __call__(
        self, inputs: Array, seq_lengths: Array | None = None, *, deterministic: bool = True
    ) -> Array:
        outputs, _ = _Encoder(
            self.vocab_size, self.embed_size, self.cell, self.hidden_size, self.num_layers,
            self.bidirectional, self.dropout_rate, self.remat, self.fused, self.cell_options,
            self.block, name="encoder",
        )(inputs, seq_lengths, deterministic)  # fmt: skip
        outputs = nn.Dropout(self.dropout_rate, deterministic=deterministic)(outputs)
        return nn.Dense(self.num_outputs, name="head")(outputs)
