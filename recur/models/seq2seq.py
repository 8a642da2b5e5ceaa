"""Encoder-decoder (Sutskever et al. 2014; Cho et al. 2014) with optional attention.

The encoder is a stacked, optionally bidirectional :class:`~recur.models.recurrent.Recurrent`
over the source; its final states start the decoder (the two directions summed when
bidirectional). With attention, each decoder step t:

    s_t      = decoder stack step on [embed(y_{t-1}); h~_{t-1}]     (input feeding)
    a_t      = softmax_s score(s_t, e_s) over valid source positions
    context  = sum_s a_t[s] e_s
    h~_t     = tanh([s_t; context] W_c + b_c)
    logits_t = h~_t W_o + b_o

as in Luong, Pham & Manning (2015); ``score`` is Bahdanau's additive one or Luong's dot or
general one (:mod:`recur.models.attention`). Bahdanau et al. (2015) score the previous decoder
state instead of the current one; here all three scores use the current one, so they differ
only in the score function. Without attention, ``logits_t = s_t W_o + b_o``.

References:
  Sutskever, Vinyals & Le, "Sequence to sequence learning with neural networks", 2014.
  Bahdanau, Cho & Bengio, "Neural machine translation by jointly learning to align and
  translate", ICLR 2015.
  Luong, Pham & Manning, "Effective approaches to attention-based neural machine
  translation", EMNLP 2015.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from recur import cells as cells_lib
from recur.models import attention, decoding
from recur.models.layers import (
    decoder_step,
    dense,
    init_decoder,
    init_dense,
    init_embedding,
    init_output,
)
from recur.models.layers import output as output_layer
from recur.models.pooling import time_mask
from recur.models.recurrent import Recurrent
from recur.types import Array, PRNGKey


class Seq2Seq(nn.Module):
    """Source tokens ``[B, S]`` -> target logits ``[B, T, tgt_vocab_size]``.

    Attributes:
      src_vocab_size, tgt_vocab_size: vocabulary sizes.
      embed_size: size of both embeddings.
      cell: cell name for encoder and decoder.
      hidden_size: H of every layer (encoder and decoder).
      num_layers: depth of encoder and of decoder.
      attention: ``none`` | ``bahdanau`` | ``luong_dot`` | ``luong_general``.
      attention_size: hidden size of the additive score.
      bidirectional_encoder: run the encoder in both directions (outputs concatenated).
      dropout_rate: on embeddings, between encoder layers and before the output layer.
      start_token: id the decoder reads first.
      cell_options: extra cell options.
      block: ``stack`` or ``residual`` (:class:`~recur.models.recurrent.Recurrent`'s block
        layouts) for the encoder and the decoder; ``residual`` suits stacks of mingru,
        minlstm or lru (its memory has H features, bidirectional or not).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_size: int = 128
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    attention: str = "bahdanau"
    attention_size: int = 128
    bidirectional_encoder: bool = False
    dropout_rate: float = 0.0
    start_token: int = 1
    cell_options: Mapping[str, Any] = FrozenDict()
    block: str = "stack"

    def setup(self):
        attention.check_attention(self.attention)
        H = self.hidden_size
        self.src_embed = nn.Embed(self.src_vocab_size, self.embed_size)
        self.encoder = Recurrent(
            cell=self.cell,
            hidden_size=H,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional_encoder,
            dropout_rate=self.dropout_rate,
            cell_options=self.cell_options,
            block=self.block,
        )
        self.cells = [cells_lib.get(self.cell, H, **self.cell_options)] * self.num_layers
        memory_size = self.encoder.output_size
        feed = H if self.attention != "none" else 0
        self.tgt_embedding = self.param(
            "tgt_embedding", lambda key: init_embedding(key, self.tgt_vocab_size, self.embed_size)
        )
        self.decoder = self.param(
            "decoder",
            lambda key: init_decoder(self.cells, key, self.embed_size + feed, self.block),
        )
        if self.attention != "none":
            self.attention_params = self.param(
                "attention",
                lambda key: attention.init(
                    self.attention, key, H, memory_size, self.attention_size
                ),
            )
            self.combine = self.param("combine", lambda key: init_dense(key, H + memory_size, H))
        self.head = self.param("head", lambda key: init_output(key, H, self.tgt_vocab_size))
        self.dropout = nn.Dropout(self.dropout_rate)

    def encode(self, src: Array, src_lengths: Array | None, deterministic: bool = True):
        """Returns ``(memory [B, S, K], mask [B, S], initial decoder carry)``."""
        xs = self.dropout(self.src_embed(src), deterministic=deterministic)
        memory, finals = self.encoder(xs, seq_lengths=src_lengths, deterministic=deterministic)
        if self.bidirectional_encoder:
            finals = [jax.tree.map(jnp.add, *pair) for pair in finals]
        mask = time_mask(src_lengths, *src.shape)
        feed = jnp.zeros((src.shape[0], self.hidden_size), memory.dtype)
        return memory, mask, (finals, feed)

    def _step_fn(self, memory: Array, mask: Array):
        """The decoder step over ``carry = (states, h~)`` and ``x = embedded token``."""
        with_attention = self.attention != "none"
        if with_attention:
            scored = attention.precompute_keys(self.attention, self.attention_params, memory)

        def step(carry, x):
            states, feed = carry
            if with_attention:
                x = jnp.concatenate([x, feed], axis=-1)
            states, top = decoder_step(self.cells, self.decoder, states, x, self.block)
            if not with_attention:
                return (states, feed), (top, jnp.zeros(mask.shape, top.dtype))
            context, weights = attention.attend(
                self.attention, self.attention_params, top, scored, memory, mask
            )
            attended = jnp.tanh(dense(self.combine, jnp.concatenate([top, context], -1)))
            return (states, attended), (attended, weights)

        return step

    def __call__(
        self,
        src: Array,
        tgt_inputs: Array,
        src_lengths: Array | None = None,
        *,
        deterministic: bool = True,
    ) -> Array:
        """Teacher forcing: ``tgt_inputs [B, T]`` (the targets shifted right, starting with
        ``start_token``) -> logits ``[B, T, tgt_vocab_size]``."""
        memory, mask, carry = self.encode(src, src_lengths, deterministic)
        inputs = self.dropout(self.tgt_embedding[tgt_inputs], deterministic=deterministic)
        (outputs, _), _ = decoding.teacher_forced(self._step_fn(memory, mask), carry, inputs)
        outputs = self.dropout(outputs, deterministic=deterministic)
        return output_layer(self.head, outputs)

    def decode(
        self,
        src: Array,
        max_length: int,
        src_lengths: Array | None = None,
        *,
        rng: PRNGKey | None = None,
        temperature: float = 1.0,
    ) -> tuple[Array, Array]:
        """Greedy (or, with ``rng``, sampled) decoding of ``max_length`` tokens.

        Returns:
          ``(tokens [B, max_length], attention weights [B, max_length, S])``; tokens after an
          end-of-sequence symbol are whatever the model kept emitting: cut them off.
        """
        memory, mask, carry = self.encode(src, src_lengths)
        first = self.tgt_embedding[jnp.full((src.shape[0],), self.start_token, jnp.int32)]

        def feedback(output, key):
            attended, _ = output
            token = decoding.choose_token(output_layer(self.head, attended), key, temperature)
            return token, self.tgt_embedding[token]

        tokens, (_, weights), _ = decoding.free_running(
            self._step_fn(memory, mask), carry, first, max_length, feedback, rng
        )
        return tokens, weights

    def beam_search(
        self,
        src: Array,
        src_lengths: Array | None = None,
        *,
        beam_size: int = 5,
        max_length: int = 50,
        end_token: int = 2,
        alpha: float = 0.0,
        max_lengths: Array | None = None,
    ) -> decoding.Beams:
        """Beam search (:func:`recur.models.decoding.beam_search`) for each source sentence.

        Args:
          src: ``[B, S]`` source tokens; ``src_lengths`` ``[B]`` (None: all S).
          beam_size, alpha: beam width and length-penalty exponent.
          max_length: static bound on the output tokens; ``max_lengths`` ``[B]`` (optional)
            per sentence, e.g. ``2 * src_lengths + 10``.
          end_token: the end-of-sentence id.

        Returns:
          :class:`~recur.models.decoding.Beams`, best first; ``extras`` are the attention
          weights of each output token, ``[B, K, L, S]`` (zeros without attention).
        """
        memory, mask, carry = self.encode(src, src_lengths)
        memory = jnp.repeat(memory, beam_size, axis=0)  # one copy per beam
        mask = jnp.repeat(mask, beam_size, axis=0)
        decoder_step = self._step_fn(memory, mask)

        def step(carry, tokens):
            carry, (attended, weights) = decoder_step(carry, self.tgt_embedding[tokens])
            log_probs = jax.nn.log_softmax(output_layer(self.head, attended).astype(jnp.float32))
            return carry, log_probs, weights

        return decoding.beam_search(
            step, carry, start_token=self.start_token, end_token=end_token,
            beam_size=beam_size, max_length=max_length, alpha=alpha, max_lengths=max_lengths,
        )  # fmt: skip
