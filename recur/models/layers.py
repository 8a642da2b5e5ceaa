"""Explicit-params layers for decoders that run inside ``jax.lax.scan``: dense, the output
layer over a vocabulary, embedding, layer norm, and the decoder stacks (``stack`` or
``residual`` blocks) stepped one token at a time.

Flax modules cannot be called inside a plain ``jax.lax.scan`` body, so the decoders keep their
step's params as plain dicts (declared with ``self.param``) and use these pure functions.
Initialisers follow flax's ``nn.Dense`` (LeCun normal kernel, zero bias) and ``nn.Embed``
(normal with variance 1 / embed_size).
"""

import jax
import jax.numpy as jnp

from recur import scan
from recur.types import Array, Params, PRNGKey


def init_dense(key: PRNGKey, input_size: int, output_size: int) -> Params:
    """``{"kernel": [input_size, output_size], "bias": [output_size]}``."""
    kernel = jax.nn.initializers.lecun_normal()(key, (input_size, output_size))
    return {"kernel": kernel, "bias": jnp.zeros((output_size,))}


def dense(params: Params, x: Array) -> Array:
    """``x [..., input_size] -> [..., output_size]``."""
    return x @ params["kernel"] + params["bias"]


def init_output(key: PRNGKey, input_size: int, vocab_size: int) -> Params:
    """``{"kernel": [vocab_size, input_size], "bias": [vocab_size]}``: an output layer over a
    vocabulary, its kernel stored as torch's ``nn.Linear`` and a tied embedding store theirs.
    The values are :func:`init_dense`'s for the same key, transposed.

    The layout is for speed: XLA:CPU computes the kernel's gradient (a product over every
    batch and time row) faster into ``[vocab, input]`` than into ``[input, vocab]``: the
    softmax layer's training step (forward, backward, clipping, SGD) took 11-26% less time
    at the LM's and the translator's sizes (README, training speed)."""
    params = init_dense(key, input_size, vocab_size)
    return {"kernel": params["kernel"].T, "bias": params["bias"]}


def output(params: Params, x: Array) -> Array:
    """``x [..., input_size] -> logits [..., vocab_size]`` with :func:`init_output`'s params,
    computed on the rows flattened to ``[N, input_size]`` (about 10% faster on XLA:CPU than on
    ``[B, T, input_size]`` for the LM's softmax layer)."""
    rows = x.reshape(-1, x.shape[-1])
    logits = rows @ params["kernel"].T + params["bias"]
    return logits.reshape(*x.shape[:-1], params["bias"].shape[-1])


def init_embedding(key: PRNGKey, vocab_size: int, embed_size: int) -> Array:
    """``[vocab_size, embed_size]`` embedding table."""
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    return init(key, (vocab_size, embed_size))


BLOCKS = ("stack", "residual")


def check_block(block: str) -> None:
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; available: {', '.join(BLOCKS)}")


def init_layer_norm(size: int) -> Params:
    """``{"scale": ones, "bias": zeros}``, as flax's ``nn.LayerNorm``."""
    return {"scale": jnp.ones((size,)), "bias": jnp.zeros((size,))}


def layer_norm(params: Params, x: Array, epsilon: float = 1e-6) -> Array:
    """Normalises the last axis (flax ``nn.LayerNorm``'s defaults), then scales and shifts."""
    mean = x.mean(-1, keepdims=True)
    variance = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + epsilon) * params["scale"] + params["bias"]


def init_decoder(cells, key: PRNGKey, input_size: int, block: str = "stack") -> Params:
    """Params of a unidirectional decoder stack stepped by :func:`decoder_step`.

    ``stack``: :func:`recur.scan.init_stacked`'s list. ``residual``: the block of
    :class:`recur.models.Recurrent` (``block="residual"``) in explicit params,
    ``{"input_projection": dense (where input_size != H), "layers": [{"cell", "norm",
    "glu", "glu_gate"}, ...]}``.
    """
    check_block(block)
    if block == "stack":
        return scan.init_stacked(cells, key, input_size)
    size = cells[0].hidden_size
    keys = jax.random.split(key, len(cells) + 1)
    params: dict = {"layers": []}
    if input_size != size:
        params["input_projection"] = init_dense(keys[-1], input_size, size)
    for cell, layer_key in zip(cells, keys[:-1], strict=False):
        k_cell, k_glu, k_gate = jax.random.split(layer_key, 3)
        params["layers"].append({
            "cell": cell.init(k_cell, size),
            "norm": init_layer_norm(size),
            "glu": init_dense(k_glu, size, size),
            "glu_gate": init_dense(k_gate, size, size),
        })  # fmt: skip
    return params


def decoder_step(cells, params: Params, states, x: Array, block: str = "stack"):
    """One step of a decoder stack made by :func:`init_decoder`: ``x [B, D]`` -> ``(new
    states, output [B, H])``. ``residual`` computes, per layer, ``x <- x + GLU(GELU(cell(
    LayerNorm(x))))`` as :class:`recur.models.Recurrent` does over a whole sequence."""
    if block == "stack":
        return scan.stacked_step(cells, params, states, x)
    if "input_projection" in params:
        x = dense(params["input_projection"], x)
    new_states = []
    for cell, layer, state in zip(cells, params["layers"], states, strict=True):
        normed = layer_norm(layer["norm"], x)
        state, y = cell.step(layer["cell"], state, cell.project(layer["cell"], normed))
        y = jax.nn.gelu(y)
        x = x + dense(layer["glu"], y) * jax.nn.sigmoid(dense(layer["glu_gate"], y))
        new_states.append(state)
    return new_states, x
