"""Translation: tokenising, the tutorial filter, a split without leaks, encoding, the
experiment and its translate command line end to end, bad input."""

import json
import pathlib

import jax
import numpy as np
import pytest
from test_train import run_module

from experiments.translate import config as translate_config
from experiments.translate import train
from recur.data import translation
from recur.train import TrainState, make_optimizer, train_step

SHARED_PAIRS = pathlib.Path(__file__).parents[1] / "../shared/data/eng_fra/fra.txt.gz"


def test_tokenize_splits_punctuation_and_keeps_words_whole():
    assert translation.tokenize("Je suis très fatigué !") == ["je", "suis", "très", "fatigué", "!"]
    assert translation.tokenize("I'm \"sure\", aren't you?") == [
        "i'm",
        '"',
        "sure",
        '"',
        ",",
        "aren't",
        "you",
        "?",
    ]
    assert translation.tokenize("Peut-être\u202f? «\u00a0Oui\u00a0»") == [
        "peut-être", "?", "«", "oui", "»"
    ]  # fmt: skip
    assert translation.tokenize("J\u2019ai 19 ans.") == ["j'ai", "19", "ans", "."]
    assert translation.tokenize("Élève", strip_accents=True) == ["eleve"]
    assert translation.tokenize("Élève", lowercase=False) == ["Élève"]


def write_pairs(path, pairs):
    path.write_text("".join(f"{en}\t{fr}\n" for en, fr in pairs))
    return path


def test_tutorial_filter_and_a_split_that_keeps_test_sources_out_of_training(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt", [
        ("I am cold.", "J'ai froid."), ("I'm cold.", "J'ai froid."),  # one source, twice
        ("He is tall.", "Il est grand."), ("Go.", "Va !"),
        ("They're here.", "Ils sont là."),
        ("I am a very very very very long sentence here.", "Je suis longue."),
    ])  # fmt: skip
    pairs = translation.read_pairs(path, "fr-en")
    assert pairs[0].source == ("j'ai", "froid", ".") and pairs[0].target == ("i", "am", "cold", ".")
    kept = translation.tutorial_filter(pairs, "fr-en")
    assert [p.line for p in kept] == [1, 2, 3, 5]  # "Go." and the 11-token one are out
    english_first = translation.read_pairs(path, "en-fr")
    assert [p.line for p in translation.tutorial_filter(english_first, "en-fr")] == [1, 2, 3, 5]
    many = [translation.Pair((f"s{i % 40}",), (f"t{i}",), i) for i in range(200)]
    parts = translation.split(many, 0.1, 0.2, seed=3)
    assert sum(len(v) for v in parts.values()) == 200
    sources = {name: {p.source for p in part} for name, part in parts.items()}
    assert not sources["test"] & sources["train"] and not sources["valid"] & sources["train"]
    assert len(sources["test"]) == 8 and len(sources["valid"]) == 4  # of 40 sources
    again = translation.split(many, 0.1, 0.2, seed=3)
    assert [p.line for p in again["test"]] == [p.line for p in parts["test"]]
    other = translation.split(many, 0.1, 0.2, seed=4)
    assert [p.line for p in other["test"]] != [p.line for p in parts["test"]]


def test_encode_lays_out_source_decoder_inputs_targets_and_weights():
    vocab = translation.build_vocabulary([("a", "b", "b")], min_count=2)
    assert vocab.tokens == ["<pad>", "<bos>", "<eos>", "<unk>", "b"]
    pairs = [translation.Pair(("b", "a"), ("b",), 1), translation.Pair(("b",) * 5, ("b",) * 5, 2)]
    arrays = translation.encode(pairs, vocab, vocab, source_length=3, target_length=4)
    np.testing.assert_array_equal(arrays["source"], [[4, 3, 0], [4, 4, 4]])
    np.testing.assert_array_equal(arrays["source_lengths"], [2, 3])
    np.testing.assert_array_equal(arrays["target_inputs"], [[1, 4, 0, 0], [1, 4, 4, 4]])
    np.testing.assert_array_equal(arrays["targets"], [[4, 2, 0, 0], [4, 4, 4, 2]])
    np.testing.assert_array_equal(arrays["target_weights"], [[1, 1, 0, 0], [1, 1, 1, 1]])


def test_bad_pair_files_and_settings_are_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="sentence-pair file .*nope.txt does not exist"):
        translation.read_pairs(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Go.\tVa !\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: expected English<TAB>French"):
        translation.read_pairs(bad)
    bad.write_text("Go.\tVa !\nRun!\t \n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: the French side is empty"):
        translation.read_pairs(bad)
    bad.write_bytes("Go.\tVa !\nCafé\tCafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"bad.txt, line 2: not UTF-8 \(byte 0xe9 at column 4\)"):
        translation.read_pairs(bad)
    with pytest.raises(ValueError, match="direction must be fr-en or en-fr, got 'de-en'"):
        translation.read_pairs(bad, "de-en")
    config = translate_config.get_config("smoke")
    config.model.attention = "multihead"
    with pytest.raises(ValueError, match="unknown attention 'multihead'; use none, bahdanau"):
        train.prepare(config)


@pytest.mark.skipif(not SHARED_PAIRS.is_file(), reason="../shared/data/eng_fra is not present")
def test_shared_pairs_and_the_tutorial_subset():
    pairs = translation.read_pairs(SHARED_PAIRS)
    assert len(pairs) == 142_787  # the data README's count
    assert pairs[0].source == ("va", "!") and pairs[0].target == ("go", ".")
    kept = translation.tutorial_filter(pairs)
    assert 10_000 < len(kept) < 12_000  # the tutorial's subset is "about 10-11k" pairs
    assert all(len(p.source) < 10 and len(p.target) < 10 for p in kept)


def test_command_line_trains_reports_bleu_and_translates(tmp_path):
    english = ["i am", "you are", "he is", "we are", "they are", "she is"]
    french = ["je suis", "tu es", "il est", "nous sommes", "ils sont", "elle est"]
    words = [("cold", "froid"), ("tall", "grand"), ("happy", "heureux"), ("here", "là"),
             ("tired", "fatigué"), ("ready", "prêt")]  # fmt: skip
    pairs = [(f"{e} {w}.", f"{f} {x}.") for e, f in zip(english, french, strict=True)
             for w, x in words]  # fmt: skip
    path = write_pairs(tmp_path / "pairs.txt", pairs * 3)
    workdir = tmp_path / "run"
    result = run_module(
        "experiments.translate.main", "--config=experiments/translate/config.py:smoke",
        f"--config.data.path={path}", "--config.data.valid_fraction=0.1",
        "--config.data.test_fraction=0.1", f"--workdir={workdir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test BLEU greedy" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["bleu"]) == {"greedy", "beam"} and "tok:13a" in results["bleu_signature"]
    assert results["test_pairs"] > 0 and results["train_sentences_per_second"] > 0
    assert (workdir / "attention_0.png").stat().st_size > 0
    assert "reference:" in (workdir / "samples.txt").read_text()
    translated = run_module(
        "experiments.translate.translate", f"--workdir={workdir}", "je suis xyzzy .",
        f"--plot={tmp_path / 'one.png'}",
    )  # fmt: skip
    assert translated.returncode == 0, translated.stderr[-2000:]
    assert "read as <unk>: xyzzy" in translated.stderr
    assert len(translated.stdout.strip().splitlines()) == 1
    assert (tmp_path / "one.png").stat().st_size > 0
    missing = run_module("experiments.translate.translate", f"--workdir={tmp_path}", "a")
    assert missing.returncode == 1 and "holds no translation run" in missing.stderr


def smoke_task(tmp_path, pairs, **model):
    """``(config, task)`` of the smoke config (``model`` fields overridden) on ``pairs``
    written to a file."""
    config = translate_config.get_config("smoke")
    config.model.update(model)
    config.data.path = str(write_pairs(tmp_path / "pairs.txt", pairs))
    config.data.valid_fraction = config.data.test_fraction = 0.1
    return config, train.build_task(config, train.prepare(config))


@pytest.mark.parametrize("model", [{}, {"cell": "mingru", "block": "residual", "num_layers": 2}])
def test_one_train_step_changes_every_parameter(tmp_path, model):
    pairs = [(f"i am w{i}.", f"je suis m{i}.") for i in range(40)]
    config, task = smoke_task(tmp_path, pairs, **model)
    optimizer, _ = make_optimizer(config.optim, 10)
    params = task.init_params(jax.random.key(0))
    state = TrainState.create(apply_fn=task.model.apply, params=params, tx=optimizer,
                              loss_fn=task.loss_fn)  # fmt: skip
    new, metrics = jax.jit(train_step)(state, task.train_batch(0), jax.random.key(1))
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["token_accuracy"] <= 1
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, old), updated in zip(flat, jax.tree.leaves(new.params), strict=True):
        assert not np.allclose(old, updated), jax.tree_util.keystr(path)


def test_target_padding_never_counts_in_the_loss(tmp_path):
    pairs = [(f"i am w{i} w{i % 3}.", f"je suis m{i}.") for i in range(40)]
    _, task = smoke_task(tmp_path, pairs)
    params = task.init_params(jax.random.key(0))
    batch = task.train_batch(0)
    extra = 3  # the same batch padded 3 tokens longer, with junk where the weights are 0
    padded = {
        **batch,
        "target_inputs": np.pad(batch["target_inputs"], ((0, 0), (0, extra)), constant_values=5),
        "targets": np.pad(batch["targets"], ((0, 0), (0, extra)), constant_values=6),
        "weights": np.pad(batch["weights"], ((0, 0), (0, extra))),
    }
    junk = {**batch, "targets": np.where(batch["weights"] > 0, batch["targets"], 7)}
    losses = [task.loss_fn(params, b, jax.random.key(1), False) for b in (batch, padded, junk)]
    for loss, metrics in losses[1:]:
        np.testing.assert_allclose(loss, losses[0][0], rtol=1e-6)
        np.testing.assert_allclose(metrics["token_accuracy"], losses[0][1]["token_accuracy"])
    # BLEU reads the hypotheses cut at <eos> and detokenised: no padding is left to count.
    assert train.cut_at_end([5, 6, train.EOS_ID, 0, 0]) == [5, 6]
    sentences = ["i am very happy to be here .", "you are not ready for this yet ."]
    assert train.bleu(sentences, sentences)[0] == pytest.approx(100.0)
