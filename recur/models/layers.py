"""Explicit-params dense and embedding layers for decoders that run inside ``jax.lax.scan``.

Flax modules cannot be called inside a plain ``jax.lax.scan`` body, so the decoders keep their
step's params as plain dicts (declared with ``self.param``) and use these pure functions.
Initialisers follow flax's ``nn.Dense`` (LeCun normal kernel, zero bias) and ``nn.Embed``
(normal with variance 1 / embed_size).
"""

import jax
import jax.numpy as jnp

from recur.types import Array, Params, PRNGKey


def init_dense(key: PRNGKey, input_size: int, output_size: int) -> Params:
    """``{"kernel": [input_size, output_size], "bias": [output_size]}``."""
    kernel = jax.nn.initializers.lecun_normal()(key, (input_size, output_size))
    return {"kernel": kernel, "bias": jnp.zeros((output_size,))}


def dense(params: Params, x: Array) -> Array:
    """``x [..., input_size] -> [..., output_size]``."""
    return x @ params["kernel"] + params["bias"]


def init_embedding(key: PRNGKey, vocab_size: int, embed_size: int) -> Array:
    """``[vocab_size, embed_size]`` embedding table."""
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    return init(key, (vocab_size, embed_size))
