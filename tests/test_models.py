"""Models: output shapes, one optimizer step changes every parameter, masking, decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recur import models

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


def test_language_model_carries_state():
    model = models.LanguageModel(vocab_size=V, embed_size=8, hidden_size=8, num_layers=2)
    params = model.init(KEY, TOKENS)
    whole, _ = model.apply(params, TOKENS)
    first, states = model.apply(params, TOKENS[:, :2])
    second, _ = model.apply(params, TOKENS[:, 2:], states)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-5)
    with pytest.raises(ValueError, match="tie_embeddings needs hidden_size == embed_size"):
        models.LanguageModel(V, embed_size=8, hidden_size=9, tie_embeddings=True).init(KEY, TOKENS)


def test_greedy_decoding_matches_teacher_forcing_on_its_own_output():
    model = models.Seq2Seq(src_vocab_size=V, tgt_vocab_size=V, embed_size=8, hidden_size=8,
                           num_layers=2)  # fmt: skip
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
