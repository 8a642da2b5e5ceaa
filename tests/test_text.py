"""Language-modelling text: tokens, vocabulary round trip, stream layout, file errors."""

import gzip
import pathlib

import numpy as np
import pytest

from recur.data import text

SHARED_PTB = pathlib.Path(__file__).parents[1] / "../shared/data/ptb"


def test_tokens_and_vocabulary_round_trip(tmp_path):
    corpus = "the cat sat\n\nthe dog <unk>\n"
    tokens = text.tokens_of(corpus, "word")
    assert tokens == ["the", "cat", "sat", "<eos>", "the", "dog", "<unk>", "<eos>"]
    vocab = text.Vocabulary.build(tokens)
    assert vocab.tokens[:2] == ["the", "<eos>"]  # most frequent first, ties by first appearance
    ids = vocab.encode(tokens)
    assert vocab.decode(ids) == tokens
    assert vocab.decode(vocab.encode(["the", "platypus"])) == ["the", "<unk>"]  # OOV user text
    vocab.save(tmp_path / "vocab.json")
    assert text.Vocabulary.load(tmp_path / "vocab.json").tokens == vocab.tokens
    chars = text.tokens_of("ab\nb", "char")
    assert chars == ["a", "b", "\n", "b"] and "<unk>" in text.Vocabulary.build(chars).tokens
    assert text.tokens_of(" a _ b \n c ", "char_tokens") == ["a", "_", "b", "<eos>", "c", "<eos>"]


def test_stream_layout_continues_across_windows():
    ids = np.arange(103)
    streams = text.streams(ids, 4)  # 4 rows of 25 contiguous tokens
    assert streams.shape == (4, 25)
    np.testing.assert_array_equal(streams[1], np.arange(25, 50))
    assert text.num_windows(streams, 5) == 5  # 24 predictions in windows of 5: 5, 5, 5, 5, 4
    windows = [text.window(streams, i, 5) for i in range(5)]
    for b in range(4):
        joined = np.concatenate([w["inputs"][b] for w in windows])
        np.testing.assert_array_equal(joined, streams[b, :-1])  # window i+1 continues window i
        for w in windows:
            np.testing.assert_array_equal(w["targets"][b], w["inputs"][b] + 1)
    assert windows[-1]["inputs"].shape == (4, 4)
    with pytest.raises(ValueError, match="window 5 is outside the 5 windows"):
        text.window(streams, 5, 5)
    with pytest.raises(ValueError, match="7 tokens are too few for 4 streams"):
        text.streams(np.arange(7), 4)


def test_missing_empty_and_undecodable_files(tmp_path):
    with pytest.raises(ValueError, match="corpus file .*nope.txt does not exist"):
        text.read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text(" \n\n")
    with pytest.raises(ValueError, match="corpus file .*empty.txt is empty"):
        text.read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt cannot be read as UTF-8 text"):
        text.read_text(tmp_path / "latin1.txt")
    with gzip.open(tmp_path / "ok.txt.gz", "wt", encoding="utf-8") as f:
        f.write("hello world\n")
    assert text.read_text(tmp_path / "ok.txt.gz") == "hello world\n"
    with pytest.raises(ValueError, match="unknown text level 'byte'"):
        text.tokens_of("x", "byte")


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="../shared/data/ptb is not present")
def test_ptb_word_and_char_counts():
    train = text.tokens_of(text.read_text(SHARED_PTB / "ptb.train.txt"), "word")
    assert len(train) == 929_589 and len(text.Vocabulary.build(train)) == 10_000
    valid = text.tokens_of(text.read_text(SHARED_PTB / "ptb.valid.txt"), "word")
    assert len(valid) == 73_760
    chars = text.tokens_of(text.read_text(SHARED_PTB / "ptb.char.valid.txt.gz"), "char_tokens")
    assert len(chars) == 389_672 + 3_370  # characters plus one <eos> per line


def test_split_text_and_find_split_files(tmp_path):
    train, valid = text.split_text("one two\nthree four\nfive six\n", 0.5)
    assert (train, valid) == ("one two\nthree four\n", "five six\n")  # cut at a line break
    with pytest.raises(ValueError, match="leaves an empty train or valid split"):
        text.split_text("one line only\n", 0.5)
    with pytest.raises(ValueError, match="train_fraction must be in"):
        text.split_text("a\nb\n", 1.0)
    for name in ("x.train.txt", "x.valid.txt.gz", "x.test.txt", "README"):
        (tmp_path / name).write_text("w\n")
    (tmp_path / "README").unlink()
    found = text.find_split_files(tmp_path)
    assert {k: p.name for k, p in found.items()} == {
        "train": "x.train.txt", "valid": "x.valid.txt.gz", "test": "x.test.txt",
    }  # fmt: skip
    (tmp_path / "y.train.txt").write_text("w\n")
    with pytest.raises(ValueError, match="several train files"):
        text.find_split_files(tmp_path)
    single = tmp_path / "single"
    single.mkdir()
    (single / "input.txt").write_text("w\n")
    assert text.find_split_files(single) == {"train": single / "input.txt"}
    with pytest.raises(ValueError, match="corpus directory .*nowhere does not exist"):
        text.find_split_files(tmp_path / "nowhere")
