"""Models: output shapes, one optimizer step changes every parameter, masking, decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recur import models
from recur.models import decoding, layers

B, T, V = 4, 6, 11
KEY = jax.random.key(0)
TOKENS = jax.random.randint(jax.random.key(1), (B, T), 1, V)
LENGTHS = jnp.array([6, 3, 1, 5])
FEATURES = jax.random.normal(jax.random.key(2), (B, T, 3))
CONTEXT = jax.random.normal(jax.random.key(3), (B, 5))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# name -> (model, init/apply args, loss(outputs), expected output shape)
CASES = {
    "feedforward": (
        models.FeedForward(num_outputs=3, hidden_sizes=(8, 8), dropout_rate=0.1),
        (FEATURES[:, 0],),
        lambda out: cross_entropy(out, TOKENS[:, 0] % 3),
        (B, 3),
    ),
    "classifier_tokens_bi_attention": (
        models.SequenceClassifier(
            num_classes=2, vocab_size=V, embed_size=8, cell="gru", hidden_size=8, num_layers=2,
            bidirectional=True, pooling="attention", dropout_rate=0.1, head_hidden_size=5,
        ),
        (TOKENS, LENGTHS),
        lambda out: cross_entropy(out, TOKENS[:, 0] % 2),
        (B, 2),
    ),
    "classifier_features_last": (
        models.SequenceClassifier(num_classes=3, cell="rnn", hidden_size=8, pooling="last"),
        (FEATURES, LENGTHS),
        lambda out: cross_entropy(out, TOKENS[:, 0] % 3),
        (B, 3),
    ),
    "tagger": (
        models.SequenceTagger(num_outputs=V, vocab_size=V, embed_size=8, hidden_size=8,
                              num_layers=2, dropout_rate=0.1),
        (TOKENS, LENGTHS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "language_model_tied": (
        models.LanguageModel(vocab_size=V, embed_size=8, hidden_size=8, num_layers=2,
                             dropout_rate=0.2, variational_dropout=True, tie_embeddings=True),
        (TOKENS,),
        lambda out: cross_entropy(out[0], TOKENS),
        (B, T, V),
    ),
    "generator_tokens": (
        models.SequenceGenerator(num_outputs=V, embed_size=8, hidden_size=8, num_layers=2,
                                 dropout_rate=0.1),
        (CONTEXT, TOKENS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "generator_values": (
        models.SequenceGenerator(num_outputs=3, tokens=False, cell="gru", hidden_size=8),
        (CONTEXT, FEATURES),
        lambda out: jnp.mean((out - FEATURES) ** 2),
        (B, T, 3),
    ),
    "seq2seq_bahdanau_bi": (
        models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V + 2, embed_size=8, hidden_size=8,
                       num_layers=2, bidirectional_encoder=True, dropout_rate=0.1),
        (TOKENS, TOKENS[:, :4], LENGTHS),
        lambda out: cross_entropy(out, TOKENS[:, 1:5]),
        (B, 4, V + 2),
    ),
    "seq2seq_luong_general_gru": (
        models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                       cell="gru", attention="luong_general"),
        (TOKENS, TOKENS, LENGTHS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "seq2seq_luong_dot": (
        models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                       attention="luong_dot"),
        (TOKENS, TOKENS, LENGTHS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "seq2seq_residual_mingru_bi": (
        models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=6, hidden_size=8,
                       cell="mingru", num_layers=2, bidirectional_encoder=True,
                       block="residual"),
        (TOKENS, TOKENS, LENGTHS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "generator_residual_lru": (
        models.SequenceGenerator(num_outputs=V, embed_size=6, cell="lru", hidden_size=8,
                                 num_layers=2, block="residual"),
        (CONTEXT, TOKENS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
    "seq2seq_no_attention": (
        models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                       attention="none"),
        (TOKENS, TOKENS),
        lambda out: cross_entropy(out, TOKENS),
        (B, T, V),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_shapes_and_one_step_changes_every_parameter(case):
    model, args, loss_of, shape = CASES[case]
    params = jax.jit(model.init)(KEY, *args)["params"]
    out = jax.jit(model.apply)({"params": params}, *args)
    assert (out[0] if isinstance(out, tuple) else out).shape == shape

    def loss_fn(params):
        out = model.apply(
            {"params": params}, *args, deterministic=False, rngs={"dropout": jax.random.key(9)}
        )
        return loss_of(out)

    optimizer = optax.adam(1e-2)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    new_params = optax.apply_updates(params, updates)
    assert np.isfinite(loss)
    for path, old, new in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree.leaves(params),
        jax.tree.leaves(new_params),
        strict=True,
    ):
        assert not np.allclose(old, new), (
            f"{case}: parameter {jax.tree_util.keystr(path[0])} unchanged"
        )


@pytest.mark.parametrize(
    ("cell", "bidirectional", "pooling"), [("mingru", False, "last"), ("lru", True, "mean")]
)  # "last" of a bidirectional stack: the top backward cell reads one step, λ gets no gradient
def test_residual_blocks_padding_gradients_and_layout(cell, bidirectional, pooling):
    """The residual block (Orvieto et al. 2023's layout): padding never changes the logits,
    a sequence alone gives the same logits, every parameter gets a gradient."""
    model = models.SequenceClassifier(
        num_classes=3, vocab_size=V, embed_size=5, cell=cell, hidden_size=8, num_layers=2,
        bidirectional=bidirectional, block="residual", dropout_rate=0.1, pooling=pooling,
    )  # fmt: skip
    params = model.init(KEY, TOKENS, LENGTHS)
    encoder = params["params"]["encoder"]["recurrent"]
    assert {"input_projection", "norm_1", "glu_1", "glu_gate_1", "layer_1"} <= set(encoder)
    apply = jax.jit(model.apply)
    logits = apply(params, TOKENS, LENGTHS)
    padded = jnp.concatenate([TOKENS, jnp.full((B, 4), 7)], axis=1)
    np.testing.assert_allclose(apply(params, padded, LENGTHS), logits, atol=1e-5)
    alone = apply(params, TOKENS[1:2, : int(LENGTHS[1])])  # a sequence run alone
    np.testing.assert_allclose(alone[0], logits[1], atol=1e-5)

    def loss(params):
        out = model.apply(params, TOKENS, LENGTHS, deterministic=False,
                          rngs={"dropout": jax.random.key(4)})  # fmt: skip
        return jnp.sum(out**2)

    for path, grad in jax.tree_util.tree_flatten_with_path(jax.grad(loss)(params))[0]:
        assert np.abs(grad).max() > 0, jax.tree_util.keystr(path)
    with pytest.raises(ValueError, match="unknown block 'dense'; available: stack, residual"):
        models.SequenceTagger(2, vocab_size=V, block="dense").init(KEY, TOKENS)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_does_not_change_classifier_logits(pooling):
    model = models.SequenceClassifier(
        num_classes=2, vocab_size=V, embed_size=8, hidden_size=8, num_layers=2,
        bidirectional=True, pooling=pooling, head_hidden_size=6,
    )  # fmt: skip
    params = model.init(KEY, TOKENS, LENGTHS)
    assert params["params"]["head_hidden"]["kernel"].shape[1] == 6
    apply = jax.jit(model.apply)
    logits = apply(params, TOKENS, LENGTHS)
    padded = jnp.concatenate([TOKENS, jnp.full((B, 4), 7)], axis=1)  # junk in padding
    np.testing.assert_allclose(apply(params, padded, LENGTHS), logits, atol=1e-5)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = apply(params, TOKENS[b : b + 1, :length])
        np.testing.assert_allclose(alone[0], logits[b], atol=1e-5)


@pytest.mark.parametrize(("cell", "block"), [("lstm", "stack"), ("mingru", "residual")])
def test_language_model_carries_state(cell, block):
    model = models.LanguageModel(vocab_size=V, embed_size=8, hidden_size=8, num_layers=2,
                                 cell=cell, block=block)  # fmt: skip
    params = model.init(KEY, TOKENS)
    assert ("norm_0" in params["params"]["recurrent"]) == (block == "residual")
    whole, _ = model.apply(params, TOKENS)
    first, states = model.apply(params, TOKENS[:, :2])
    second, _ = model.apply(params, TOKENS[:, 2:], states)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-5)


def test_output_layers_are_dense_layers_stored_vocabulary_first():
    """The vocabulary heads (the LM's ``OutputLayer``, the translator's ``init_output``) draw
    ``nn.Dense``'s and ``init_dense``'s values for the same key, transposed, and give their
    logits: the layout changed, not the model."""
    x = jax.random.normal(jax.random.key(4), (B, T, 7))
    head = models.OutputLayer(V).init(KEY, x)
    dense = nn.Dense(V).init(KEY, x)
    assert head["params"]["kernel"].shape == (V, 7)
    np.testing.assert_array_equal(head["params"]["kernel"], dense["params"]["kernel"].T)
    np.testing.assert_array_equal(head["params"]["bias"], dense["params"]["bias"])
    dense["params"]["bias"] = head["params"]["bias"] = jnp.arange(V, dtype=jnp.float32)
    np.testing.assert_allclose(models.OutputLayer(V).apply(head, x), nn.Dense(V).apply(dense, x),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    explicit, reference = layers.init_output(KEY, 7, V), layers.init_dense(KEY, 7, V)
    np.testing.assert_array_equal(explicit["kernel"], reference["kernel"].T)
    np.testing.assert_allclose(layers.output(explicit, x), layers.dense(reference, x),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    lm = models.LanguageModel(vocab_size=V, embed_size=8, hidden_size=8)
    assert lm.init(KEY, TOKENS)["params"]["head"]["kernel"].shape == (V, 8)


@pytest.mark.parametrize("cell", ["mingru", "lru", "lstm"])
def test_residual_decoder_steps_equal_the_residual_stack_over_the_sequence(cell):
    """layers.decoder_step (explicit params, one token at a time) computes what
    Recurrent(block="residual") computes over the whole sequence, given the same params."""
    stack = models.Recurrent(cell=cell, hidden_size=8, num_layers=2, block="residual")
    flax_params = stack.init(KEY, FEATURES)["params"]
    ys, finals = stack.apply({"params": flax_params}, FEATURES)
    cells = stack.make_cells()
    params = layers.init_decoder(cells, KEY, FEATURES.shape[-1], "residual")
    assert set(params) == {"input_projection", "layers"}  # 3 input features, H = 8
    params["input_projection"] = dict(flax_params["input_projection"])
    for i, layer in enumerate(params["layers"]):
        layer.update(cell=flax_params[f"layer_{i}"], norm=dict(flax_params[f"norm_{i}"]),
                     glu=dict(flax_params[f"glu_{i}"]),
                     glu_gate=dict(flax_params[f"glu_gate_{i}"]))  # fmt: skip
    states, outputs = [c.initial_state((B,)) for c in cells], []
    for t in range(T):
        states, y = layers.decoder_step(cells, params, states, FEATURES[:, t], "residual")
        outputs.append(y)
    np.testing.assert_allclose(jnp.stack(outputs, 1), ys, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), states, finals)
    with pytest.raises(ValueError, match="unknown block 'dense'; available: stack, residual"):
        layers.init_decoder(cells, KEY, 3, "dense")


@pytest.mark.parametrize(("cell", "block"), [("lstm", "stack"), ("minlstm", "residual")])
def test_greedy_decoding_matches_teacher_forcing_on_its_own_output(cell, block):
    model = models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                           num_layers=2, cell=cell, block=block)  # fmt: skip
    params = model.init(KEY, TOKENS, TOKENS, LENGTHS)
    tokens, weights = model.apply(params, TOKENS, 5, LENGTHS, method=model.decode)
    assert tokens.shape == (B, 5) and weights.shape == (B, 5, T)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(weights[2, :, 1:], 0.0)  # no attention on padding
    start = jnp.full((B, 1), model.start_token)
    forced = model.apply(params, TOKENS, jnp.concatenate([start, tokens[:, :-1]], 1), LENGTHS)
    np.testing.assert_array_equal(forced.argmax(-1), tokens)


def test_generator_greedy_matches_teacher_forcing_and_samples_vary():
    model = models.SequenceGenerator(num_outputs=V, embed_size=8, hidden_size=8)
    params = model.init(KEY, CONTEXT, TOKENS)
    tokens = model.apply(params, CONTEXT, T, method=model.generate)
    np.testing.assert_array_equal(model.apply(params, CONTEXT, tokens).argmax(-1), tokens)
    samples = [
        model.apply(params, CONTEXT, T, method=model.generate, rng=jax.random.key(s),
                    temperature=2.0)
        for s in range(3)
    ]  # fmt: skip
    assert not all(np.array_equal(samples[0], s) for s in samples[1:])


def test_unknown_names_in_models():
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        models.SequenceClassifier(2, vocab_size=V, pooling="sum").init(KEY, TOKENS)
    with pytest.raises(ValueError, match="unknown attention 'multihead'"):
        models.Seq2Seq(V, V, attention="multihead").init(KEY, TOKENS, TOKENS)
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        models.SequenceTagger(3, vocab_size=V, cell="transformer").init(KEY, TOKENS)


@pytest.mark.parametrize(
    "make",
    [
        lambda fused: models.LanguageModel(
            vocab_size=V, embed_size=8, cell="lstm", hidden_size=8, num_layers=2, fused=fused
        ),
        lambda fused: models.SequenceClassifier(
            num_classes=2,
            vocab_size=V,
            embed_size=8,
            cell="gru",
            hidden_size=8,
            num_layers=2,
            bidirectional=True,
            pooling="mean",
            fused=fused,
        ),
        lambda fused: models.SequenceTagger(
            num_outputs=3, cell="rnn", hidden_size=8, bidirectional=True, fused=fused
        ),
    ],
    ids=["language_model_lstm", "classifier_bigru_masked", "tagger_birnn_masked"],
)
def test_fused_models_match_autodiff(make):
    """``fused=True`` only changes how the backward pass is computed: same outputs and
    gradients, with padding (seq_lengths) and both directions."""
    model = make(False)
    inputs = FEATURES if isinstance(model, models.SequenceTagger) else TOKENS
    args = (inputs,) if isinstance(model, models.LanguageModel) else (inputs, LENGTHS)
    params = model.init(KEY, *args)

    def loss(params, fused):
        out = make(fused).apply(params, *args)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.sum(jnp.sin(out))

    # The option reaches recur.unroll: the fused model runs recur.fused's custom VJP.
    assert "custom_vjp" in str(jax.make_jaxpr(lambda p: loss(p, True))(params))
    assert "custom_vjp" not in str(jax.make_jaxpr(lambda p: loss(p, False))(params))
    value, grads = jax.value_and_grad(loss)(params, False)
    fused_value, fused_grads = jax.value_and_grad(loss)(params, True)
    np.testing.assert_allclose(fused_value, value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _toy_decoder(vocab_size=4, batch_size=2, seed=0):
    """A decoder whose log-probabilities depend on the input, the position and the last
    token: ``(step, carry)`` for :func:`decoding.beam_search`."""
    rng = np.random.default_rng(seed)
    tables = jnp.asarray(rng.normal(size=(batch_size, 8, vocab_size, vocab_size)) * 2)

    def step(carry, tokens):
        row, position = carry
        logits = tables[row, position, tokens]
        return (row, position + 1), jax.nn.log_softmax(logits), logits[:, :2]

    carry = (jnp.arange(batch_size), jnp.zeros(batch_size, jnp.int32))
    return step, carry, tables


def _exhaustive(tables, row, start, end, max_length, alpha, limit):
    """Every hypothesis ending in ``end`` within ``limit`` tokens, best first by score."""
    found = []

    def grow(prefix, log_prob, last):
        for token in range(tables.shape[-1]):
            logits = np.asarray(tables[row, len(prefix), last])
            here = log_prob + logits[token] - np.log(np.exp(logits).sum())
            if token == end:
                length = len(prefix) + 1
                found.append((here / ((5 + length) / 6) ** alpha, prefix + [token], here))
            elif len(prefix) + 1 < min(max_length, limit):
                grow(prefix + [token], here, token)

    grow([], 0.0, start)
    return sorted(found, key=lambda item: -item[0])


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_beam_search_finds_the_best_hypotheses_an_exhaustive_search_finds(alpha):
    # Vocabulary 3, 4 steps: at most 8 live prefixes and 24 extensions a step, all within a
    # beam of 32, which makes the search exhaustive.
    step, carry, tables = _toy_decoder(vocab_size=3)
    limits = np.array([4, 2])  # input 1 must end by its second token
    beams = jax.jit(
        lambda carry: decoding.beam_search(
            step,
            carry,
            start_token=2,
            end_token=0,
            beam_size=32,
            max_length=4,
            alpha=alpha,
            max_lengths=jnp.asarray(limits),
            pad_token=-1,
        )  # fmt: skip
    )(carry)
    assert beams.tokens.shape == (2, 32, 4) and beams.extras.shape == (2, 32, 4, 2)
    for row in range(2):
        best = _exhaustive(tables, row, 2, 0, 4, alpha, limits[row])[:5]
        for k, (score, tokens, log_prob) in enumerate(best):
            n = len(tokens)
            assert int(beams.lengths[row, k]) == n
            np.testing.assert_array_equal(beams.tokens[row, k, :n], tokens)
            np.testing.assert_array_equal(beams.tokens[row, k, n:], -1)
            np.testing.assert_allclose(beams.scores[row, k], score, rtol=1e-5)
            np.testing.assert_allclose(beams.log_probs[row, k], log_prob, rtol=1e-5)
        # The extras are the step outputs along the hypothesis.
        k_tokens = [2] + best[0][1][:-1]
        expected = [np.asarray(tables[row, t, k_tokens[t], :2]) for t in range(len(best[0][1]))]
        np.testing.assert_allclose(beams.extras[row, 0, : len(expected)], expected, rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_beam_of_one_is_greedy_decoding_token_for_token(seed):
    step, carry, _ = _toy_decoder(vocab_size=6, seed=seed)
    beams = decoding.beam_search(step, carry, start_token=5, end_token=0, beam_size=1,
                                 max_length=8, pad_token=-1)  # fmt: skip
    state, token, greedy, log_probs = carry, jnp.full((2,), 5), [], []
    for _ in range(8):
        state, step_log_probs, _ = step(state, token)
        token = step_log_probs.argmax(-1)
        greedy.append(token)
        log_probs.append(step_log_probs.max(-1))
    greedy, log_probs = np.stack(greedy, 1), np.stack(log_probs, 1)
    for row in range(2):
        ends = list(greedy[row]).index(0) + 1 if 0 in greedy[row] else 8
        assert int(beams.lengths[row, 0]) == ends
        np.testing.assert_array_equal(beams.tokens[row, 0, :ends], greedy[row, :ends])
        np.testing.assert_array_equal(beams.tokens[row, 0, ends:], -1)  # never extended
        np.testing.assert_allclose(beams.log_probs[row, 0], log_probs[row, :ends].sum(), rtol=1e-5)


def test_seq2seq_beam_search_scores_are_the_model_log_probabilities():
    model = models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                           num_layers=2, bidirectional_encoder=True)  # fmt: skip
    params = model.init(KEY, TOKENS, TOKENS, LENGTHS)
    search = jax.jit(
        lambda src, lengths: model.apply(
            params,
            src,
            lengths,
            beam_size=3,
            max_length=6,
            end_token=2,
            max_lengths=lengths + 3,
            method=model.beam_search,
        )  # fmt: skip
    )
    beams = search(TOKENS, LENGTHS)
    assert beams.tokens.shape == (B, 3, 6) and beams.extras.shape == (B, 3, 6, T)
    assert np.all(np.asarray(beams.lengths) <= np.asarray(LENGTHS)[:, None] + 3)
    assert np.all(np.diff(np.asarray(beams.scores), axis=1) <= 0)  # best first
    # Teacher forcing the best hypothesis gives its log-probability and attention.
    start = jnp.full((B, 1), model.start_token)
    best = beams.tokens[:, 0]
    logits = model.apply(params, TOKENS, jnp.concatenate([start, best[:, :-1]], 1), LENGTHS)
    token_log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), best[..., None], -1)[..., 0]
    valid = jnp.arange(6)[None] < beams.lengths[:, :1]
    np.testing.assert_allclose(
        (token_log_probs * valid).sum(1), beams.log_probs[:, 0], rtol=1e-5, atol=1e-5
    )
    weights = beams.extras[:, 0]
    np.testing.assert_allclose(weights.sum(-1)[valid], 1.0, atol=1e-5)
    np.testing.assert_array_equal(weights[2, :, 1:], 0.0)  # no attention on padding
    search(TOKENS % (V - 1) + 1, LENGTHS)
    assert search._cache_size() == 1


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_attention_scores_against_numpy(kind):
    from recur.models import attention  # noqa: PLC0415

    rng = np.random.default_rng(0)
    batch, length, size = 3, 5, 4
    params = attention.init(kind, KEY, size, size, 6)
    query = rng.normal(size=(batch, size)).astype(np.float32)
    keys = rng.normal(size=(batch, length, size)).astype(np.float32)
    mask = np.arange(length)[None] < np.array([5, 2, 1])[:, None]
    context, weights = attention.attend(
        kind, params, query, attention.precompute_keys(kind, params, keys), keys, mask
    )
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    for b in range(batch):
        if kind == "bahdanau":
            scores = [p["v"] @ np.tanh(query[b] @ p["w_q"] + keys[b, s] @ p["w_k"])
                      for s in range(length)]  # fmt: skip
        elif kind == "luong_dot":
            scores = [query[b] @ keys[b, s] for s in range(length)]
        else:
            scores = [query[b] @ p["w"] @ keys[b, s] for s in range(length)]
        valid = np.flatnonzero(mask[b])
        expected = np.zeros(length)
        expected[valid] = np.exp(np.array(scores)[valid] - np.max(np.array(scores)[valid]))
        expected /= expected.sum()
        np.testing.assert_allclose(weights[b], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(weights[b])[~mask[b]], 0.0)  # exactly
        np.testing.assert_allclose(context[b], expected @ keys[b], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["none", "bahdanau", "luong_general"])
def test_padded_source_tokens_never_change_seq2seq_outputs(kind):
    model = models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                           attention=kind, bidirectional_encoder=True)  # fmt: skip
    params = model.init(KEY, TOKENS, TOKENS, LENGTHS)
    junk = jnp.where(jnp.arange(T)[None] < LENGTHS[:, None], TOKENS, (TOKENS * 7) % V)
    assert not np.array_equal(junk, TOKENS)
    np.testing.assert_allclose(model.apply(params, junk, TOKENS, LENGTHS),
                               model.apply(params, TOKENS, TOKENS, LENGTHS), atol=1e-6)  # fmt: skip
    beams = [model.apply(params, src, LENGTHS, beam_size=2, max_length=4, method=model.beam_search)
             for src in (junk, TOKENS)]  # fmt: skip
    np.testing.assert_array_equal(beams[0].tokens, beams[1].tokens)


def test_seq2seq_with_attention_learns_to_reverse_sequences():
    """The encoder-decoder trains end to end: reversing 3-6 tokens, exact match >= 95%."""
    vocab, length, batch = 8, 6, 64  # ids 0 pad, 1 start, 2 end, 3..7 symbols
    model = models.Seq2Seq(src_vocab_size=vocab, tgt_vocab_size=vocab, embed_size=16,
                           hidden_size=32, cell="gru", attention="luong_general")  # fmt: skip

    def data(key):
        k_len, k_sym = jax.random.split(key)
        lengths = jax.random.randint(k_len, (batch,), 3, length + 1)
        symbols = jax.random.randint(k_sym, (batch, length), 3, vocab)
        valid = jnp.arange(length)[None] < lengths[:, None]
        src = jnp.where(valid, symbols, 0)
        reverse = jnp.take_along_axis(src, (lengths[:, None] - 1 - jnp.arange(length)) % length, 1)
        targets = jnp.concatenate([jnp.where(valid, reverse, 0), jnp.zeros((batch, 1), int)], 1)
        targets = targets.at[jnp.arange(batch), lengths].set(2)
        inputs = jnp.concatenate([jnp.ones((batch, 1), int), targets[:, :-1]], 1)
        weights = (jnp.arange(length + 1)[None] <= lengths[:, None]).astype(jnp.float32)
        return src, lengths, inputs, targets, weights

    def loss(params, key):
        src, lengths, inputs, targets, weights = data(key)
        logits = model.apply(params, src, inputs, lengths)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(ce * weights) / jnp.sum(weights)

    params = model.init(KEY, *data(KEY)[:1], data(KEY)[2], data(KEY)[1])
    optimizer = optax.adam(1e-2)

    @jax.jit
    def train(params, opt_state, key):
        grads = jax.grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for step in range(400):
        params, opt_state = train(params, opt_state, jax.random.key(step + 10))
    src, lengths, _, targets, weights = data(jax.random.key(99_999))
    beams = model.apply(params, src, lengths, beam_size=1, max_length=length + 1,
                        method=model.beam_search)  # fmt: skip
    exact = np.all((np.asarray(beams.tokens[:, 0]) == targets) | (np.asarray(weights) == 0), 1)
    assert exact.mean() >= 0.95, exact.mean()


def test_generator_beam_of_one_is_its_greedy_output_with_its_log_probability():
    model = models.SequenceGenerator(num_outputs=V, embed_size=8, hidden_size=8, start_token=0)
    params = model.init(KEY, CONTEXT, TOKENS)
    greedy = np.asarray(model.apply(params, CONTEXT, 8, method=model.generate))
    beams = model.apply(params, CONTEXT, beam_size=1, max_length=8, end_token=1,
                        method=model.beam_search)  # fmt: skip
    for row in range(len(greedy)):
        ends = list(greedy[row]).index(1) + 1 if 1 in greedy[row] else 8
        np.testing.assert_array_equal(beams.tokens[row, 0, :ends], greedy[row, :ends])
        logits = model.apply(params, CONTEXT[row : row + 1], greedy[row : row + 1, :ends])[0]
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), greedy[row, :ends, None], 1)
        np.testing.assert_allclose(beams.log_probs[row, 0], log_prob.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="beam_search needs token outputs"):
        vectors = models.SequenceGenerator(num_outputs=3, tokens=False)
        vectors.apply(vectors.init(KEY, CONTEXT, FEATURES), CONTEXT, method=vectors.beam_search)
