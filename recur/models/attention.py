"""Attention scores as pure functions over explicit params (used inside decoder scans).

* ``bahdanau`` (additive; Bahdanau, Cho & Bengio 2015): ``score(q, k) = v · tanh(q W_q + k W_k)``
* ``luong_dot`` (Luong, Pham & Manning 2015): ``score(q, k) = q · k`` (needs equal sizes)
* ``luong_general``: ``score(q, k) = q W k``

The keys' part of each score (``k W_k`` for additive, ``k Wᵀ`` for general) is computed once
per source sequence by :func:`precompute_keys`, not once per decoder step.
"""

import jax
import jax.numpy as jnp

from recur.types import Array, Params, PRNGKey

ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general")


def check_attention(kind: str) -> None:
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; available: {', '.join(ATTENTIONS)}")


def init(kind: str, key: PRNGKey, query_size: int, key_size: int, attention_size: int) -> Params:
    """Params for ``kind``; ``{}`` for ``none`` and ``luong_dot``."""
    check_attention(kind)
    glorot = jax.nn.initializers.glorot_uniform()
    k_q, k_k, k_v = jax.random.split(key, 3)
    if kind == "bahdanau":
        return {
            "w_q": glorot(k_q, (query_size, attention_size)),
            "w_k": glorot(k_k, (key_size, attention_size)),
            "v": glorot(k_v, (attention_size, 1))[:, 0],
        }
    if kind == "luong_general":
        return {"w": glorot(k_q, (query_size, key_size))}
    if kind == "luong_dot" and query_size != key_size:
        raise ValueError(
            f"luong_dot attention needs equal query and key sizes, got {query_size} and "
            f"{key_size}; use luong_general"
        )
    return {}


def precompute_keys(kind: str, params: Params, keys: Array) -> Array:
    """``keys [B, S, K]`` -> what :func:`attend` scores against, once per source."""
    if kind == "bahdanau":
        return keys @ params["w_k"]  # [B, S, A]
    if kind == "luong_general":
        return keys @ params["w"].T  # [B, S, Q]
    return keys


def attend(
    kind: str, params: Params, query: Array, scored_keys: Array, values: Array, mask: Array
) -> tuple[Array, Array]:
    """One decoder step's attention.

    Args:
      kind: one of ``ATTENTIONS`` except ``none``.
      params: from :func:`init`.
      query: ``[B, Q]`` decoder state.
      scored_keys: ``[B, S, ·]`` from :func:`precompute_keys`.
      values: ``[B, S, K]`` encoder outputs.
      mask: ``[B, S]`` bool, True at valid source positions.

    Returns:
      ``(context [B, K], weights [B, S])``.
    """
    if kind == "bahdanau":
        hidden = jnp.tanh(scored_keys + (query @ params["w_q"])[:, None, :])  # [B, S, A]
        scores = hidden @ params["v"]  # [B, S]
    else:
        scores = jnp.einsum("bsq,bq->bs", scored_keys, query)
    scores = jnp.where(mask, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bs,bsk->bk", weights, values), weights
