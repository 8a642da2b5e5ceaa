"""One-to-many on images: a small image encoder whose features start a recurrent decoder."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from recur.models import decoding
from recur.models.generator import SequenceGenerator
from recur.types import Array

ENCODERS = ("mlp", "cnn")


class ImageEncoder(nn.Module):
    """Grey images ``[B, H, W]`` (uint8 0-255 or floats in [0, 1]) -> features ``[B, F]``.

    ``mlp``: flatten -> ``Dense(hidden_size)`` -> ReLU -> ``Dense(features)`` -> ReLU.
    ``cnn``: per entry of ``channels`` a 3x3 convolution with stride 2 (same padding) ->
    ReLU; then flatten -> ``Dense(features)`` -> ReLU. (Strided convolutions rather than
    convolution + max pool: on XLA's CPU backend the pool's gradient made a training step
    9x slower, measured at batch 64 on 28 x 112 strips.) Both keep where things are in the
    image (no global pooling), which a caption that reads left to right needs.
    """

    kind: str = "cnn"
    features: int = 128
    hidden_size: int = 256
    channels: Sequence[int] = (16, 32)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        if self.kind not in ENCODERS:
            raise ValueError(f"unknown encoder {self.kind!r}; available: {', '.join(ENCODERS)}")
        x = images.astype(jnp.float32)
        if jnp.issubdtype(images.dtype, jnp.integer):
            x = x / 255.0
        if self.kind == "mlp":
            x = nn.relu(nn.Dense(self.hidden_size)(x.reshape(x.shape[0], -1)))
        else:
            x = x[..., None]  # [B, H, W, 1]
            for channels in self.channels:
                x = nn.relu(nn.Conv(channels, (3, 3), strides=(2, 2))(x))
            x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.features)(x))


class ImageCaptioner(nn.Module):
    """``encoder`` features set ``decoder``'s initial state (and are fed at every step where
    the decoder has ``feed_context``); the decoder is a token :class:`SequenceGenerator`."""

    encoder: ImageEncoder
    decoder: SequenceGenerator

    def __call__(self, images: Array, targets: Array, *, deterministic: bool = True) -> Array:
        """Teacher forcing: ``images [B, H, W]``, ``targets [B, T]`` -> logits ``[B, T, V]``."""
        return self.decoder(self.encoder(images), targets, deterministic=deterministic)

    def generate(self, images: Array, num_steps: int, **kwargs) -> Array:
        """Greedy (or sampled, see :meth:`SequenceGenerator.generate`) tokens ``[B, T]``."""
        return self.decoder.generate(self.encoder(images), num_steps, **kwargs)

    def beam_search(self, images: Array, **kwargs) -> decoding.Beams:
        """Beam search (:meth:`SequenceGenerator.beam_search`), best hypothesis first."""
        return self.decoder.beam_search(self.encoder(images), **kwargs)
