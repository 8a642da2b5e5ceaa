"""One-to-many: a context vector sets the initial state; a recurrent decoder emits T outputs."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from recur import cells as cells_lib
from recur.models import decoding
from recur.models.layers import decoder_step, dense, init_decoder, init_dense, init_embedding
from recur.types import Array, PRNGKey


class SequenceGenerator(nn.Module):
    """Context ``[B, F]`` -> ``tanh(Dense)`` initial state of every layer and state field ->
    stacked decoder -> ``num_outputs`` per step.

    With ``tokens=True`` the outputs are logits over ``num_outputs`` symbols and each step reads
    the embedding of the previous symbol (``start_token`` first); with ``tokens=False`` they are
    real vectors of size ``num_outputs`` and each step reads the previous vector (zeros first).
    Training uses teacher forcing (:meth:`__call__` with the targets); inference feeds the
    model's own outputs back (:meth:`generate`: greedy, or sampled at a temperature;
    :meth:`beam_search` for token outputs).
    Dropout (``dropout_rate``) is applied to the decoder inputs and before the head.
    With ``feed_context=True`` every step also reads ``Dense(embed_size)(context)`` beside
    its input (Vinyals et al. 2015 feed the image once; Mao et al. 2015 at every step); the
    projection rides in the decoder's carry, so beam search repeats it with the states.
    ``block``: ``stack`` or ``residual``, the decoder layers' layout (as
    :class:`~recur.models.recurrent.Recurrent`'s; ``residual`` for mingru, minlstm, lru).
    """

    num_outputs: int
    tokens: bool = True
    embed_size: int = 64
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    start_token: int = 0
    dropout_rate: float = 0.0
    cell_options: Mapping[str, Any] = FrozenDict()
    feed_context: bool = False
    block: str = "stack"

    def setup(self):
        self.cells = [cells_lib.get(self.cell, self.hidden_size, **self.cell_options)]
        self.cells = self.cells * self.num_layers
        input_size = self.embed_size if self.tokens else self.num_outputs
        if self.feed_context:
            input_size += self.embed_size
            self.context_input = nn.Dense(self.embed_size)
        self.decoder = self.param(
            "decoder", lambda key: init_decoder(self.cells, key, input_size, self.block)
        )
        if self.tokens:
            self.embedding = self.param(
                "embedding", lambda key: init_embedding(key, self.num_outputs, self.embed_size)
            )
        self.head = self.param(
            "head", lambda key: init_dense(key, self.hidden_size, self.num_outputs)
        )
        num_fields = len(self.cells[0].initial_state((1,)))
        self.bridge = nn.Dense(self.num_layers * num_fields * self.hidden_size)
        self.dropout = nn.Dropout(self.dropout_rate)

    def _initial_states(self, context: Array) -> list:
        cell = self.cells[0]
        template = cell.initial_state((1,))
        values = jnp.tanh(self.bridge(context))  # [B, L * fields * H]
        values = values.reshape(context.shape[0], self.num_layers, len(template), -1)
        return [
            type(template)(*(values[:, layer, field] for field in range(len(template))))
            for layer in range(self.num_layers)
        ]

    def _initial_carry(self, context: Array):
        """The decoder's carry: the layers' states, and the fed context when it is fed."""
        states = self._initial_states(context)
        return (states, self.context_input(context)) if self.feed_context else states

    def _read(self, previous: Array) -> Array:
        """The decoder input made from a previous output (token ids or vectors)."""
        return self.embedding[previous] if self.tokens else previous

    def _step(self, carry, x):
        if not self.feed_context:
            return decoder_step(self.cells, self.decoder, carry, x, self.block)
        states, fed = carry
        states, y = decoder_step(
            self.cells,
            self.decoder,
            states,
            jnp.concatenate([x, fed.astype(x.dtype)], -1),
            self.block,
        )
        return (states, fed), y

    def __call__(self, context: Array, targets: Array, *, deterministic: bool = True) -> Array:
        """Teacher forcing: ``targets [B, T]`` int or ``[B, T, num_outputs]`` -> outputs
        ``[B, T, num_outputs]``, step ``t`` having read target ``t - 1``."""
        if self.tokens:
            start = jnp.full(targets.shape[:1] + (1,), self.start_token, targets.dtype)
        else:
            start = jnp.zeros_like(targets[:, :1])
        previous = jnp.concatenate([start, targets[:, :-1]], axis=1)
        inputs = self.dropout(self._read(previous), deterministic=deterministic)
        hidden, _ = decoding.teacher_forced(self._step, self._initial_carry(context), inputs)
        hidden = self.dropout(hidden, deterministic=deterministic)
        return dense(self.head, hidden)

    def generate(
        self,
        context: Array,
        num_steps: int,
        *,
        rng: PRNGKey | None = None,
        temperature: float = 1.0,
    ) -> Array:
        """Free-running generation: tokens ``[B, T]`` (greedy unless ``rng`` is given) or
        vectors ``[B, T, num_outputs]``."""
        batch_size = context.shape[0]
        if self.tokens:
            first = self._read(jnp.full((batch_size,), self.start_token, jnp.int32))
        else:
            first = jnp.zeros((batch_size, self.num_outputs), context.dtype)

        def feedback(hidden, key):
            output = dense(self.head, hidden)
            choice = decoding.choose_token(output, key, temperature) if self.tokens else output
            return choice, self._read(choice)

        choices, _, _ = decoding.free_running(
            self._step, self._initial_carry(context), first, num_steps, feedback, rng
        )
        return choices

    def beam_search(
        self,
        context: Array,
        *,
        beam_size: int = 5,
        max_length: int = 20,
        end_token: int = 1,
        alpha: float = 0.0,
    ) -> decoding.Beams:
        """Beam search over token outputs (:func:`recur.models.decoding.beam_search`), best
        first; width 1 with ``alpha=0`` is :meth:`generate`'s greedy output cut at
        ``end_token``."""
        if not self.tokens:
            raise ValueError("beam_search needs token outputs (tokens=True)")

        def step(states, tokens):
            states, hidden = self._step(states, self._read(tokens))
            log_probs = jax.nn.log_softmax(dense(self.head, hidden).astype(jnp.float32))
            return states, log_probs, ()

        return decoding.beam_search(
            step, self._initial_carry(context), start_token=self.start_token,
            end_token=end_token, beam_size=beam_size, max_length=max_length, alpha=alpha,
        )  # fmt: skip
