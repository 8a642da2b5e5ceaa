"""Decoder loops shared by the one-to-many and encoder-decoder models.

A decoder is a pure ``step(carry, x) -> (carry, output)``; these helpers run it over time with
``jax.lax.scan`` either on given inputs (teacher forcing) or feeding each step's choice back in
(greedy or temperature sampling). Keeping the loop pure lets the models hold their decoder
params explicitly and call it inside ``jax.lax.scan`` without mixing Flax and JAX transforms.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from recur.types import Array, PRNGKey

Carry = Any
DecoderStep = Callable[[Carry, Array], tuple[Carry, Array]]


def _batch_major(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)


def teacher_forced(step: DecoderStep, carry: Carry, inputs: Array) -> tuple[Array, Carry]:
    """Runs ``step`` on given inputs ``[B, T, ...]``; returns ``(outputs [B, T, ...], carry)``."""
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

    def body(loop_carry, key):
        carry, x = loop_carry
        carry, output = step(carry, x)
        choice, x = feedback(output, key)
        return (carry, x), (choice, output)

    (carry, _), (choices, outputs) = jax.lax.scan(
        body, (carry, first_input), keys, length=num_steps
    )
    return _batch_major(choices), _batch_major(outputs), carry
