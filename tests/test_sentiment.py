"""Sentiment data and experiment: tokenizer, vocabulary, masking, bucketing, errors, CLI."""

import gzip
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import run_module

from experiments.sentiment import config as sentiment_config
from experiments.sentiment import train as sentiment_train
from recur.data import sentiment

SHARED_SST2 = pathlib.Path(__file__).parents[1] / "../shared/data/sst2"


def test_tokenizer():
    assert sentiment.tokenize("Don't<br />STOP!  It's 10/10.") == [
        "don't", "stop", "!", "it's", "10", "/", "10", ".",
    ]  # fmt: skip
    assert sentiment.tokenize("") == []


def test_vocabulary_build_encode_round_trip(tmp_path):
    texts = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    vocab = sentiment.Vocabulary.build(texts, min_count=1, max_size=5)
    assert vocab.tokens == ["<pad>", "<unk>", "a", "b", "c"]  # by count, ties alphabetical
    assert vocab.encode(["a", "zzz", "c"]).tolist() == [2, sentiment.UNK_ID, 4]
    assert vocab.decode([2, 3]) == ["a", "b"]
    assert sentiment.Vocabulary.build(texts, min_count=2).tokens == ["<pad>", "<unk>", "a", "b"]
    vocab.save(tmp_path / "vocab.json")
    assert sentiment.Vocabulary.load(tmp_path / "vocab.json").tokens == vocab.tokens


def test_bucketing_yields_every_example_exactly_once():
    lengths = np.random.default_rng(0).integers(1, 60, 1000)
    batches = sentiment.bucketed_order(lengths, 64, seed=0, epoch=3)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # batches hold similar lengths (random batches: ~55)
    again = sentiment.bucketed_order(lengths, 64, seed=0, epoch=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_flax_recipe_variant():
    config = sentiment_config.get_config("sst2,cell=lstm,bidirectional=true,flax")
    assert (config.model.pooling, config.model.head_hidden_size) == ("attention", 256)
    assert (config.optim.name, config.optim.weight_decay, config.num_epochs) == ("sgd", 3e-6, 10)
    with pytest.raises(ValueError, match="unknown config variant 'flx'"):
        sentiment_config.get_config("sst2,flx")


def test_padding_a_batch_does_not_change_any_logits():
    config = sentiment_config.get_config("smoke,bidirectional=true,flax")
    config.model.pooling = "mean"
    model = sentiment_train.make_model(config, 50)
    sequences = [np.array(s, np.int32) for s in ([5, 6, 7, 8, 9, 10, 11], [12, 13], [14])]
    batch = sentiment.pad_batch(sequences, np.array([1, 0, 1]), batch_size=4)
    assert batch["tokens"].shape == (4, 8) and batch["weights"].tolist() == [1, 1, 1, 0]
    params = model.init(jax.random.key(0), batch["tokens"], batch["lengths"])
    logits = model.apply(params, batch["tokens"], batch["lengths"])
    for row, sequence in enumerate(sequences):
        alone = model.apply(params, jnp.asarray(sequence)[None], jnp.array([len(sequence)]))
        np.testing.assert_allclose(logits[row], alone[0], atol=1e-5)


def test_batch_lengths_round_up_to_the_multiple_but_not_past_the_cut():
    sequences = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 33, 35)]

    def shape(**padding):
        return sentiment.pad_batch(sequences, np.zeros(3), 4, **padding)["tokens"].shape

    assert shape() == (4, 40) and shape(multiple=32) == (4, 64)
    assert shape(multiple=32, max_steps=50) == (4, 50)  # texts were cut at 50: no step past it
    assert shape(multiple=32, max_steps=35) == (4, 35)
    assert sentiment.pad_batch(sequences[:1], np.zeros(1), 2, multiple=32, max_steps=50)[
        "tokens"
    ].shape == (2, 32)


def test_a_length_multiple_below_one_stops_with_one_line():
    config = sentiment_config.get_config("smoke")
    config.data.length_multiple = 0
    with pytest.raises(ValueError, match="data.length_multiple must be a positive integer, got 0"):
        sentiment_train.prepare(config)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_coarser_length_rounding_trains_the_same_function(cell):
    """``data.length_multiple`` only pads: losses and gradients equal those of tighter padding
    (on the fused default path and the autodiff one). Dropout is off: its masks are drawn
    for the padded shape, so other padding draws other masks (README)."""
    config = sentiment_config.get_config(f"smoke,cell={cell},bidirectional=true")
    config.model.pooling = "mean"
    config.model.dropout_rate = 0.0
    vocab = sentiment.Vocabulary(["<pad>", "<unk>", *[f"w{i}" for i in range(40)]])
    rng = np.random.default_rng(0)
    sequences = [rng.integers(2, 42, n).astype(np.int32) for n in (9, 3, 17, 1)]
    split = sentiment_train.Split(sequences, np.array([1, 0, 1, 0]))
    splits = {"train": split, "dev": split}
    losses = []
    for fused in (None, False):
        config.model.fused = fused
        task = sentiment_train.build_task(config, vocab, splits, {}, pathlib.Path("/nonexistent"))
        params = task.init_params(jax.random.key(0))
        grad = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=3)
        for multiple in (8, 32, 64):
            batch = sentiment.pad_batch(sequences, splits["train"].labels, 6, multiple=multiple)
            assert batch["tokens"].shape == (6, {8: 24, 32: 32, 64: 64}[multiple])
            losses.append(grad(params, batch, jax.random.key(1), True))
    first = losses[0]
    for other in losses[1:]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                     first, other)  # fmt: skip


def write_tsv(path, rows, header="sentence\tlabel"):
    path.write_text(header + "\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    return path


def test_malformed_rows_name_file_and_line(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [("fine film ", 1), ("awful ", 2)])
    with pytest.raises(ValueError, match=r"bad.tsv, line 3: label must be 0 or 1, got '2'"):
        sentiment.read_labelled(path, "sentence", "label")
    path.write_text("sentence\tlabel\nfine film \t1\nno label here\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 3: missing column"):
        sentiment.read_labelled(path, "sentence", "label")
    with pytest.raises(ValueError, match="no column 'review'; columns: sentence, label"):
        sentiment.read_labelled(path, "review", "label")
    with pytest.raises(ValueError, match="sentiment file .*none.tsv does not exist"):
        sentiment.read_labelled(tmp_path / "none.tsv", "sentence", "label")


def test_csv_gz_and_glove(tmp_path):
    path = tmp_path / "reviews.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write('id,label,text\n1,1,"Great, great film.<br />Loved it"\n2,0,"Dull"\n')
    texts, labels = sentiment.read_labelled(path, "text", "label")
    assert texts[0] == "Great, great film.<br />Loved it" and labels.tolist() == [1, 0]
    vocab = sentiment.Vocabulary.build([sentiment.tokenize(t) for t in texts])
    glove = tmp_path / "glove.txt"
    glove.write_text("great 0.5 -1.0\nunseen 9 9\nfilm 2 3\n")
    vectors, found = sentiment.load_glove(glove, vocab, 2)
    np.testing.assert_array_equal(vectors[vocab.ids["great"]], [0.5, -1.0])
    assert found.sum() == 2 and not found[sentiment.PAD_ID]
    with pytest.raises(ValueError, match="glove.txt, line 1: 2 values, expected embed_size 3"):
        sentiment.load_glove(glove, vocab, 3)


@pytest.mark.skipif(not SHARED_SST2.is_dir(), reason="../shared/data/sst2 is not present")
def test_shared_sst2_dev():
    texts, labels = sentiment.read_labelled(SHARED_SST2 / "dev.tsv", "sentence", "label")
    assert len(texts) == 872 and np.bincount(labels).tolist() == [428, 444]


def test_smoke_train_and_predict_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = ["great", "superb", "moving", "fine"], ["dull", "awful", "boring", "flat"]
    rows = []
    for _ in range(200):
        label = int(rng.integers(2))
        words = rng.choice(good if label else bad, 3).tolist() + ["film"]
        rows.append((" ".join(words) + " ", label))
    train = write_tsv(tmp_path / "train.tsv", rows[:160])
    dev = write_tsv(tmp_path / "dev.tsv", rows[160:])
    workdir = tmp_path / "run"
    result = run_module(
        "experiments.sentiment.main",
        "--config=experiments/sentiment/config.py:smoke,cell=gru,bidirectional=true",
        f"--config.data.train_path={train}",
        f"--config.data.dev_path={dev}",
        "--config.num_steps=20",
        "--config.optim.learning_rate=0.01",
        "--config.batch_size=16",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best dev accuracy" in result.stdout
    record = json.loads((workdir / "results.json").read_text())
    dev_counts = record["dev"]
    assert sum(v for k, v in dev_counts.items() if k != "accuracy") == 40
    assert record["test"] is None and record["dev"]["accuracy"] > 0.8
    predicted = run_module(
        "experiments.sentiment.predict",
        f"--workdir={workdir}",
        "superb moving great film",
        "awful dull boring film",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = predicted.stdout.strip().splitlines()
    assert lines[0].startswith("positive\t") and lines[1].startswith("negative\t")


def test_word_dropout_replaces_tokens_with_unk_in_training_only(tmp_path):
    rows = [("a fine film", 1), ("a dull film indeed", 0)] * 4
    config = sentiment_config.get_config("smoke")
    config.data.train_path = str(write_tsv(tmp_path / "train.tsv", rows))
    config.data.dev_path = str(write_tsv(tmp_path / "dev.tsv", rows[:2]))
    config.model.dropout_rate = 0.0
    config.model.word_dropout_rate = 1.0
    vocab, splits, notes = sentiment_train.prepare(config)
    task = sentiment_train.build_task(config, vocab, splits, notes, tmp_path)
    params = task.init_params(jax.random.key(0))
    batch = splits["train"].batches(4)[0]
    all_unk = {**batch, "tokens": np.where(batch["tokens"] > 0, sentiment.UNK_ID, 0)}
    rng = jax.random.key(1)
    trained, _ = task.loss_fn(params, batch, rng, True)
    np.testing.assert_allclose(trained, task.loss_fn(params, all_unk, rng, False)[0], rtol=1e-6)
    assert abs(float(task.loss_fn(params, batch, rng, False)[0]) - float(trained)) > 1e-6
