"""Captioning: number words, strips drawn without leaks, caption encoding, the captioner's
teacher forcing against its generation, the experiment and its predict command line end to
end, bad input."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_probes import fake_mnist
from test_train import run_module

from experiments.caption import config as caption_config
from experiments.caption import train
from recur import models
from recur.data import captions
from recur.train import TrainState, make_optimizer, train_step

SHARED_MNIST = pathlib.Path(__file__).parents[1] / "../shared/data/mnist"


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (10, "ten"),
        (12, "twelve"),
        (20, "twenty"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (110, "one hundred ten"),
        (731, "seven hundred thirty one"),
        (1000, "one thousand"),
        (1010, "one thousand ten"),
        (4012, "four thousand twelve"),
        (9999, "nine thousand nine hundred ninety nine"),
    ],
)
def test_number_words(number, words):
    assert captions.number_words(number) == words.split()


def test_captions_of_both_kinds_and_their_lengths():
    assert captions.caption_words([7, 3, 1], "digits") == ["seven", "three", "one"]
    assert captions.caption_words([7, 3, 1], "number") == "seven hundred thirty one".split()
    assert captions.caption_words([0], "number") == ["zero"]
    assert captions.caption_length("digits", 4) == 5
    assert captions.caption_length("number", 4) == 7  # 7777: six words, then <eos>
    assert captions.caption_length("number", 2) == 3  # 21: two words
    vocab = captions.vocabulary()
    assert all(w in vocab.ids for n in range(10_000) for w in captions.number_words(n))
    with pytest.raises(ValueError, match="number_words covers 0 to 9999, got 10000"):
        captions.number_words(10_000)
    with pytest.raises(ValueError, match="unknown caption 'roman'; available: digits, number"):
        captions.caption_words([1], "roman")


def labelled_digits(n=200, seed=0):
    """Digit images whose pixels say which image they are: image i is filled with i % 251."""
    labels = np.random.default_rng(seed).integers(0, 10, n).astype(np.int32)
    labels[:10] = np.arange(10)
    images = np.broadcast_to((np.arange(n) % 251 + 1)[:, None, None], (n, 28, 28))
    return captions.DigitImages(images.astype(np.uint8), labels)


def test_strips_are_seeded_laid_out_left_to_right_and_never_start_with_zero():
    source = labelled_digits()
    strips = captions.make_strips(np.random.default_rng(5), source, 500, 1, 4)
    again = captions.make_strips(np.random.default_rng(5), source, 500, 1, 4)
    other = captions.make_strips(np.random.default_rng(6), source, 500, 1, 4)
    for name in strips:
        np.testing.assert_array_equal(strips[name], again[name])
    assert not np.array_equal(strips["images"], other["images"])
    assert strips["images"].shape == (500, 28, 112) and strips["images"].dtype == np.uint8
    assert set(strips["num_digits"].tolist()) == {1, 2, 3, 4}
    assert set(strips["digits"][strips["num_digits"] == 1, 0].tolist()) == set(range(10))
    assert (strips["digits"][strips["num_digits"] > 1, 0] > 0).all()  # no leading zero
    for row in range(500):
        k = strips["num_digits"][row]
        for slot in range(4):
            tile = strips["images"][row, :, 28 * slot : 28 * (slot + 1)]
            image_id = strips["image_ids"][row, slot]
            if slot < k:
                np.testing.assert_array_equal(tile, source.images[image_id])
                assert source.labels[image_id] == strips["digits"][row, slot]
            else:
                assert image_id == -1 and strips["digits"][row, slot] == -1 and not tile.any()
    with pytest.raises(ValueError, match=r"need 1 <= data.min_digits <= data.max_digits <= 4"):
        captions.make_strips(np.random.default_rng(0), source, 3, 2, 5)


def test_caption_encoding_ends_with_eos_and_weights_only_the_caption():
    vocab = captions.vocabulary()
    strips = {"digits": np.array([[4, 0, 1, 2], [9, -1, -1, -1]]), "num_digits": np.array([4, 1])}
    encoded = captions.encode_captions(strips, "number", vocab, 7)
    eos = vocab.ids[captions.EOS]
    assert vocab.decode(encoded["targets"][0, :4]) == "four thousand twelve".split()[:3] + ["<eos>"]
    np.testing.assert_array_equal(encoded["targets"][1], [vocab.ids["nine"], eos, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        encoded["weights"], [[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]]
    )
    digits = captions.encode_captions(strips, "digits", vocab, 5)
    assert vocab.decode(digits["targets"][0]) == ["four", "zero", "one", "two", "<eos>"]


def test_user_strips_are_checked_and_padded():
    padded = captions.fit_strip(np.full((28, 56), 300.0), 4)
    assert padded.shape == (28, 112) and padded[:, :56].min() == 255 and not padded[:, 56:].any()
    with pytest.raises(ValueError, match=r"must be 28 x 28k pixels with 1 <= k <= 4, got width 50"):
        captions.fit_strip(np.zeros((28, 50)), 4)
    with pytest.raises(ValueError, match=r"must be 28 pixels high and 2-D, got shape \(30, 28\)"):
        captions.fit_strip(np.zeros((30, 28)), 4)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not present")
def test_held_out_digit_images_never_appear_in_training_strips():
    config = caption_config.get_config("number")
    prepared = train.prepare(config)
    digits = prepared.digits
    assert [len(digits[s].labels) for s in ("train", "valid", "test")] == [7200, 800, 2000]
    held_out = {img.tobytes() for s in ("valid", "test") for img in digits[s].images}
    task = train.build_task(config, prepared)
    seen = 0
    for step in range(40):  # 2,560 training strips, about 6,400 digit images
        batch = task.train_batch(step)
        for image in batch["images"]:
            tiles = image.reshape(28, 4, 28).transpose(1, 0, 2)
            seen += sum(tile.tobytes() in held_out for tile in tiles if tile.any())
    assert seen == 0
    test = prepared.held_out["test"]
    used = {int(i) for i in test["image_ids"].ravel() if i >= 0}
    assert len(used) > 1500  # the test strips draw on most of the 2,000 held-out images
    np.testing.assert_array_equal(task.train_batch(7)["images"], task.train_batch(7)["images"])


@pytest.mark.parametrize("feed_context", [False, True])
def test_teacher_forcing_equals_generation_fed_the_same_tokens_and_eos_ends_captions(
    feed_context,
):
    vocab_size, eos = 9, 2
    model = models.ImageCaptioner(
        encoder=models.ImageEncoder(kind="cnn", features=8, channels=(4,)),
        decoder=models.SequenceGenerator(num_outputs=vocab_size, embed_size=6, hidden_size=8,
                                         cell="lstm", start_token=1, feed_context=feed_context),
    )  # fmt: skip
    images = jax.random.randint(jax.random.key(0), (5, 28, 56), 0, 256).astype(jnp.uint8)
    params = model.init(jax.random.key(1), images, jnp.zeros((5, 6), jnp.int32))
    tokens = model.apply(params, images, 6, method=model.generate)
    logits = model.apply(params, images, tokens)
    np.testing.assert_array_equal(logits.argmax(-1), tokens)
    # Step by step on the same tokens: each step's logits are teacher forcing's logits.
    decoder = model.decoder
    features = model.apply(params, images, method=lambda m, x: m.encoder(x))
    dparams = {"params": params["params"]["decoder"]}
    carry = decoder.apply(dparams, features, method=decoder._initial_carry)
    previous = jnp.full((5,), 1)
    for t in range(6):
        carry, hidden = decoder.apply(dparams, carry, decoder.apply(dparams, previous,
                                      method=decoder._read), method=decoder._step)  # fmt: skip
        head = dparams["params"]["head"]
        step_logits = hidden @ head["kernel"] + head["bias"]
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=2e-5, atol=2e-6)
        previous = tokens[:, t]
    # A head that always prefers <eos>: every caption is empty, and the beam ends at once.
    params = jax.tree.map(lambda x: x, params)
    params["params"]["decoder"]["head"]["bias"] = jnp.zeros(vocab_size).at[eos].set(100.0)
    beams = model.apply(params, images, beam_size=2, max_length=6, end_token=eos,
                        method=model.beam_search)  # fmt: skip
    np.testing.assert_array_equal(beams.lengths[:, 0], 1)
    np.testing.assert_array_equal(beams.tokens[:, 0, 0], eos)
    assert train.cut_at_end([5, 6, train.EOS_ID, 7]) == [5, 6]


def test_scores_count_missing_and_extra_words_as_wrong():
    got = [["one", "two"], ["seven"], ["five", "hundred", "two"], []]
    want = [["one", "two"], ["seven", "hundred"], ["five", "hundred"], ["zero"]]
    scores = train.scores(got, want)
    assert scores["exact_match"] == 0.25
    assert scores["word_accuracy"] == pytest.approx((2 + 1 + 2 + 0) / (2 + 2 + 3 + 1))
    errors = {(e["reference"], e["predicted"]): e["count"] for e in train.word_errors(got, want)}
    assert errors == {("hundred", "-"): 1, ("-", "two"): 1, ("zero", "-"): 1}


def test_error_kinds_tell_misread_digits_from_broken_grammar():
    config = caption_config.get_config("number")
    want = ["seven hundred one".split()] * 4 + [["twelve"]]
    got = [["seven", "hundred"], ["seventy", "hundred"], ["seven"], want[0], ["twelve"]]
    kinds = train.error_kinds(got, want, np.array([3, 3, 3, 3, 2]), config)
    assert kinds == {"misread": 1, "malformed": 1, "wrong_length": 1}
    config = caption_config.get_config("digits")
    kinds = train.error_kinds([["zero", "one"], ["one"]], [["one", "one"], ["two"]],
                              np.array([2, 1]), config)  # fmt: skip
    assert kinds == {"misread": 1, "malformed": 1, "wrong_length": 0}  # no strip starts with 0


def smoke_task(tmp_path, **model):
    (tmp_path / "mnist").mkdir()
    fake_mnist(tmp_path / "mnist")
    config = caption_config.get_config("number,smoke")
    config.model.update(model)
    config.data.mnist_dir = str(tmp_path / "mnist")
    return config, train.build_task(config, train.prepare(config))


@pytest.mark.parametrize("model", [{}, {"cell": "lru", "block": "residual", "num_layers": 2}])
def test_one_train_step_changes_the_encoder_and_the_decoder(tmp_path, model):
    config, task = smoke_task(tmp_path, **model)
    config.optim.schedule = "constant"  # the warm-up's first rate is 0
    optimizer, _ = make_optimizer(config.optim, 10)
    params = task.init_params(jax.random.key(0))
    assert set(params) == {"encoder", "decoder"}
    state = TrainState.create(apply_fn=task.model.apply, params=params, tx=optimizer,
                              loss_fn=task.loss_fn)  # fmt: skip
    new, metrics = jax.jit(train_step)(state, task.train_batch(0), jax.random.key(1))
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["token_accuracy"] <= 1
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, old), updated in zip(flat, jax.tree.leaves(new.params), strict=True):
        assert not np.allclose(old, updated), jax.tree_util.keystr(path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not present")
def test_command_line_trains_scores_draws_and_predicts(tmp_path):
    workdir = tmp_path / "run"
    result = run_module(
        "experiments.caption.main", "--config=experiments/caption/config.py:number,smoke",
        f"--workdir={workdir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test exact match: greedy" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["test_strips"] == 40 and results["baseline"]["exact_match"] > 0
    for name in ("greedy", "beam"):
        assert set(results[name]["exact_match_by_digits"]) == {"1", "2", "3", "4"}
        assert 0 <= results[name]["word_accuracy"] <= 1
    assert results["num_params"] > 0 and results["command"].startswith("python -m")
    rows = [
        json.loads(line) for line in (workdir / "valid_captions.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in rows] == [3, 6]
    for png in ("samples.png", "learning_curve.png"):
        assert (workdir / png).stat().st_size > 1000
    strip = tmp_path / "strip.png"
    by_index = run_module("experiments.caption.predict", f"--workdir={workdir}", "--index=3",
                          f"--save={strip}")  # fmt: skip
    assert by_index.returncode == 0, by_index.stderr[-2000:]
    caption, truth = by_index.stdout.strip().split("\t")
    assert truth.startswith("(true: ")
    by_image = run_module("experiments.caption.predict", f"--workdir={workdir}",
                          f"--image={strip}")  # fmt: skip
    assert by_image.returncode == 0, by_image.stderr[-2000:]
    assert by_image.stdout.strip() == caption  # the saved strip reads as the test strip
    scored = run_module("experiments.caption.predict", f"--workdir={workdir}", "--score")
    assert scored.returncode == 0, scored.stderr[-2000:]
    rescored = json.loads((workdir / "test_scores.json").read_text())
    for name in ("greedy", "beam"):  # the same params decode the same captions
        assert rescored[name]["exact_match"] == results[name]["exact_match"]
        wrong = round((1 - results[name]["exact_match"]) * 40)
        assert sum(results[name]["error_kinds"].values()) == wrong


def test_bad_input_is_one_clear_line(tmp_path):
    """In-process (the command line's one-line exit for any ValueError is tested in
    test_experiments): missing MNIST files, a bad caption, digit counts, an empty split."""
    config = caption_config.get_config("smoke")
    config.data.mnist_dir = str(tmp_path)
    with pytest.raises(ValueError, match="no MNIST IDX files in .*: need t10k-images-idx3-ubyte"):
        train.prepare(config)
    config.data.caption = "roman"
    with pytest.raises(ValueError, match="unknown data.caption 'roman'; available: digits, number"):
        train.prepare(config)
    with pytest.raises(ValueError, match="unknown config variant 'words'; use smoke, digits"):
        caption_config.get_config("smoke,words")
    with pytest.raises(ValueError, match="config variants digits and number exclude each other"):
        caption_config.get_config("digits,number")
    with pytest.raises(
        ValueError, match="no images of digit\\(s\\) \\[3\\] in a split of 9 images"
    ):
        captions.DigitImages(np.zeros((9, 28, 28), np.uint8), np.array([0, 1, 2, 4, 5, 6, 7, 8, 9]))
