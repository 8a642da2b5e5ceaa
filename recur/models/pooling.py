"""Masked pooling of per-step outputs into one vector per sequence (many-to-one)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from recur.types import Array

POOLINGS = ("last", "mean", "max", "attention")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; available: {', '.join(POOLINGS)}")


def time_mask(seq_lengths: Array | None, batch_size: int, num_steps: int) -> Array:
    """``[B, T]`` bool, True at valid steps."""
    if seq_lengths is None:
        return jnp.ones((batch_size, num_steps), bool)
    return jnp.arange(num_steps)[None, :] < seq_lengths[:, None]


def mean_pool(outputs: Array, mask: Array) -> Array:
    """Mean over valid steps: ``outputs [B, T, F]``, ``mask [B, T]`` -> ``[B, F]``."""
    weights = mask[..., None].astype(outputs.dtype)
    return (outputs * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


def max_pool(outputs: Array, mask: Array) -> Array:
    """Max over valid steps."""
    return jnp.where(mask[..., None], outputs, -jnp.inf).max(1)


class AttentionPool(nn.Module):
    """Additive self-attention pooling: ``softmax_t(v · tanh(W o_t))``-weighted sum of outputs."""

    attention_size: int = 64

    @nn.compact
    def __call__(self, outputs: Array, mask: Array) -> Array:
        scores = nn.Dense(1, use_bias=False)(jnp.tanh(nn.Dense(self.attention_size)(outputs)))
        scores = jnp.where(mask, scores[..., 0], -jnp.inf)  # [B, T]
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("bt,btf->bf", weights, outputs)
