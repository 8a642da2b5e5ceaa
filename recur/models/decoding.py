"""Decoder loops shared by the one-to-many and encoder-decoder models.

A decoder is a pure ``step(carry, x) -> (carry, output)``; these helpers run it over time with
``jax.lax.scan`` either on given inputs (teacher forcing) or feeding each step's choice back in
(greedy or temperature sampling), or search a beam of hypotheses (:func:`beam_search`).
Keeping the loop pure lets the models hold their decoder params explicitly and call it inside
``jax.lax.scan`` without mixing Flax and JAX transforms.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recur.fused import match_varying
from recur.types import Array, PRNGKey

Carry = Any
DecoderStep = Callable[[Carry, Array], tuple[Carry, Array]]


def _batch_major(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)


def teacher_forced(step: DecoderStep, carry: Carry, inputs: Array) -> tuple[Array, Carry]:
    """Runs ``step`` on given inputs ``[B, T, ...]``; returns ``(outputs [B, T, ...], carry)``.
    Inside ``jax.shard_map`` a carry made of zeros is cast to vary over the mesh axes as the
    inputs do (the scan's carry must keep one type)."""
    carry = match_varying(carry, inputs)
    carry, outputs = jax.lax.scan(step, carry, jnp.swapaxes(inputs, 0, 1))
    return _batch_major(outputs), carry


def choose_token(logits: Array, rng: PRNGKey | None, temperature: float) -> Array:
    """Greedy (``rng`` None or ``temperature`` 0) or temperature sampling: ``[B, V] -> [B]``."""
    if rng is None or temperature == 0.0:
        return jnp.argmax(logits, axis=-1)
    return jax.random.categorical(rng, logits / temperature, axis=-1)


def free_running(
    step: DecoderStep,
    carry: Carry,
    first_input: Array,
    num_steps: int,
    feedback: Callable[[Array, PRNGKey | None], tuple[Array, Array]],
    rng: PRNGKey | None = None,
) -> tuple[Array, Array, Carry]:
    """Runs ``step`` for ``num_steps``, each step's input made from the previous output.

    Args:
      step: the decoder step.
      carry: its initial carry.
      first_input: ``[B, ...]`` input of the first step (e.g. a start token).
      num_steps: T.
      feedback: ``(output, key) -> (choice, next_input)``: what to keep from an output (a token
        or a value) and the next step's input made from it.
      rng: sampling key (split per step), or None for deterministic feedback.

    Returns:
      ``(choices [B, T, ...], outputs [B, T, ...], final carry)``.
    """
    keys = None if rng is None else jax.random.split(rng, num_steps)
    carry, first_input = match_varying((carry, first_input), jax.tree.leaves(carry)[0])

    def body(loop_carry, key):
        carry, x = loop_carry
        carry, output = step(carry, x)
        choice, x = feedback(output, key)
        return (carry, x), (choice, output)

    (carry, _), (choices, outputs) = jax.lax.scan(
        body, (carry, first_input), keys, length=num_steps
    )
    return _batch_major(choices), _batch_major(outputs), carry


class Beams(NamedTuple):
    """Result of :func:`beam_search`, best hypothesis first along ``K``.

    Attributes:
      tokens: ``[B, K, L]`` int32; each hypothesis ends with ``end_token`` (unless it reached
        the maximum length first) and is padded with ``pad_token`` after it.
      lengths: ``[B, K]`` int32, tokens up to and including ``end_token``.
      log_probs: ``[B, K]``, the sum of the tokens' log-probabilities.
      scores: ``[B, K]``, ``log_probs`` divided by the length penalty (what ranks them).
      extras: the step's auxiliary outputs (e.g. attention weights) of each hypothesis's
        steps, ``[B, K, L, ...]``.
    """

    tokens: Array
    lengths: Array
    log_probs: Array
    scores: Array
    extras: Any


def length_penalty(length: Array, alpha: float) -> Array:
    """GNMT's length penalty ``((5 + length) / 6) ** alpha`` (Wu et al. 2016); 1 at alpha 0."""
    return ((5.0 + length) / 6.0) ** alpha


BeamStep = Callable[[Carry, Array], tuple[Carry, Array, Any]]


def beam_search(
    step: BeamStep,
    carry: Carry,
    *,
    start_token: int,
    end_token: int,
    beam_size: int,
    max_length: int,
    alpha: float = 0.0,
    max_lengths: Array | None = None,
    pad_token: int = 0,
) -> Beams:
    """Beam search over a decoder, batched and jitted: one ``jax.lax.while_loop`` over a state
    of fixed size, the ``K`` beams of each of the ``B`` inputs folded into the batch axis.

    Each iteration extends every live hypothesis by every token and ranks the extensions by
    log-probability. Those among the best ``K`` that end in ``end_token`` are finished (ranked
    by ``log_prob / length_penalty(length, alpha)``, the best ``K`` kept; as in Hugging Face's
    scorer, an ending ranked below ``K`` is not), and the ``K`` best that do not end stay live
    (looking as far as rank ``2K``, so ``K`` stay live whatever ends), the decoder's carry
    gathered along; a finished hypothesis is never extended. It stops when no live hypothesis
    can still beat the worst finished one of any input, or after ``max_length`` steps; an input
    with no finished hypothesis then returns its live ones. Width 1 with ``alpha=0`` is greedy
    decoding, token for token, stopped at ``end_token``.

    Args:
      step: ``(carry, tokens [N]) -> (carry, log_probs [N, V], extra [N, ...])`` for
        ``N = B * K`` (carry leaves ``[N, ...]``): the decoder reading each hypothesis's last
        token. ``extra`` is kept per step (e.g. attention weights); return ``()`` for none.
      carry: the decoder's initial carry for the ``B`` inputs (leaves ``[B, ...]``); repeated
        for the ``K`` beams of each input.
      start_token, end_token: the first token read; the token that ends a hypothesis.
      beam_size: ``K``.
      max_length: ``L``, the most tokens a hypothesis may have (static).
      alpha: length-penalty exponent, >= 0 (0: raw log-probabilities, which favour short
        output; GNMT used 0.6-0.7).
      max_lengths: optional ``[B]`` int, per input at most ``L``: a hypothesis of input ``b``
        must end by token ``max_lengths[b]`` (its last step allows only ``end_token``), e.g.
        a multiple of the source length. Without it, hypotheses that reach ``L`` tokens
        without ending stay live (returned only when none ended).
      pad_token: fills the positions after ``end_token``.

    Returns:
      :class:`Beams`.
    """
    batch_size = jax.tree.leaves(carry)[0].shape[0]
    K, L = beam_size, max_length
    if K < 1 or L < 1:
        raise ValueError(f"beam_size and max_length must be >= 1, got {K} and {L}")
    if alpha < 0:
        raise ValueError(f"the length penalty's alpha must be >= 0, got {alpha}")

    def fold(x):  # [B, K, ...] -> [B * K, ...]
        return x.reshape((batch_size * K, *x.shape[2:]))

    def unfold(x):  # [B * K, ...] -> [B, K, ...]
        return x.reshape((batch_size, K, *x.shape[1:]))

    def gather(x, index):  # x [B, M, ...], index [B, K] -> [B, K, ...]
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    carry = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), carry)  # [B * K, ...]
    starts = jnp.full((batch_size * K,), start_token, jnp.int32)
    _, probe_log_probs, probe_extra = jax.eval_shape(step, carry, starts)
    vocab_size = probe_log_probs.shape[-1]
    extras = jax.tree.map(
        lambda e: jnp.zeros((batch_size, K, L, *e.shape[1:]), e.dtype), probe_extra
    )
    limit = jnp.full((batch_size,), L, jnp.int32) if max_lengths is None else max_lengths
    limit = jnp.clip(jnp.asarray(limit, jnp.int32), 1, L)
    dtype = probe_log_probs.dtype
    minus_inf = jnp.array(-jnp.inf, dtype)
    state = {
        "i": jnp.int32(0),
        "alive_tokens": jnp.full((batch_size, K, L), pad_token, jnp.int32),
        # Only the first beam is live at the start: the others would repeat it.
        "alive_log_probs": jnp.where(jnp.arange(K) == 0, 0.0, minus_inf)[None]
        .repeat(batch_size, 0)
        .astype(dtype),
        "alive_extras": extras,
        "carry": carry,
        "done_tokens": jnp.full((batch_size, K, L), pad_token, jnp.int32),
        "done_log_probs": jnp.full((batch_size, K), minus_inf),
        "done_scores": jnp.full((batch_size, K), minus_inf),
        "done_lengths": jnp.zeros((batch_size, K), jnp.int32),
        "done_extras": extras,
    }

    def worst_done_beats_best_alive(s):
        # Log-probabilities only fall as hypotheses grow, so a live one scores at most its
        # log-probability over the largest penalty (alpha >= 0).
        best_alive = s["alive_log_probs"][:, 0] / length_penalty(limit.astype(dtype), alpha)
        worst_done = jnp.where(
            jnp.isfinite(s["done_scores"]).all(axis=1), s["done_scores"].min(axis=1), minus_inf
        )
        return jnp.all((worst_done > best_alive) | ~jnp.isfinite(best_alive))

    def condition(s):
        return (s["i"] < L) & ~worst_done_beats_best_alive(s)

    def body(s):
        i = s["i"]
        last = jnp.where(i == 0, starts, fold(s["alive_tokens"])[:, jnp.maximum(i - 1, 0)])
        carry, log_probs, extra = step(s["carry"], last)
        log_probs = unfold(log_probs.astype(dtype))  # [B, K, V]
        if max_lengths is not None:  # at an input's last allowed step only end_token follows
            must_end = (i + 1 >= limit)[:, None, None] & (jnp.arange(vocab_size) != end_token)
            log_probs = jnp.where(must_end, minus_inf, log_probs)
        total = (s["alive_log_probs"][:, :, None] + log_probs).reshape(batch_size, K * vocab_size)
        top_log_probs, top_index = jax.lax.top_k(total, 2 * K)  # [B, 2K]
        origin, token = top_index // vocab_size, top_index % vocab_size
        top_tokens = gather(s["alive_tokens"], origin).at[:, :, i].set(token)
        extra = jax.tree.map(unfold, extra)
        top_extras = jax.tree.map(
            lambda kept, new: gather(kept, origin).at[:, :, i].set(gather(new, origin)),
            s["alive_extras"],
            extra,
        )
        ended = token == end_token
        finishes = ended & (jnp.arange(2 * K) < K)  # endings within the beam's K best
        # The K best that go on.
        going = jnp.where(ended, minus_inf, top_log_probs)
        alive_log_probs, keep = jax.lax.top_k(going, K)
        carry = jax.tree.map(lambda x: fold(gather(unfold(x), gather(origin, keep))), carry)
        # The K best finished so far, old and new.
        length = i + 1
        new_scores = jnp.where(
            finishes, top_log_probs / length_penalty(jnp.asarray(length, dtype), alpha), minus_inf
        )
        ended_log_probs = jnp.where(finishes, top_log_probs, minus_inf)
        scores = jnp.concatenate([s["done_scores"], new_scores], axis=1)
        done_scores, pick = jax.lax.top_k(scores, K)

        def merge(old, new):
            return gather(jnp.concatenate([old, new], axis=1), pick)

        return {
            "i": i + 1,
            "alive_tokens": gather(top_tokens, keep),
            "alive_log_probs": alive_log_probs,
            "alive_extras": jax.tree.map(lambda x: gather(x, keep), top_extras),
            "carry": carry,
            "done_tokens": merge(s["done_tokens"], top_tokens),
            "done_log_probs": merge(s["done_log_probs"], ended_log_probs),
            "done_scores": done_scores,
            "done_lengths": merge(s["done_lengths"], jnp.full(token.shape, length, jnp.int32)),
            "done_extras": jax.tree.map(merge, s["done_extras"], top_extras),
        }

    s = jax.lax.while_loop(condition, body, state)
    # Inputs with nothing finished (every hypothesis reached max_length) return the live ones.
    none_done = ~jnp.isfinite(s["done_scores"][:, 0])
    steps = s["i"]
    alive_scores = s["alive_log_probs"] / length_penalty(steps.astype(dtype), alpha)

    def choose(done, alive):
        where = none_done.reshape((batch_size,) + (1,) * (done.ndim - 1))
        return jnp.where(where, alive, done)

    return Beams(
        tokens=choose(s["done_tokens"], s["alive_tokens"]),
        lengths=choose(s["done_lengths"], jnp.full((batch_size, K), steps, jnp.int32)),
        log_probs=choose(s["done_log_probs"], s["alive_log_probs"]),
        scores=choose(s["done_scores"], alive_scores),
        extras=jax.tree.map(choose, s["done_extras"], s["alive_extras"]),
    )
