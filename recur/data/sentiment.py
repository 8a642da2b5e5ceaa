"""Sentiment data: reading labelled TSV/CSV files, tokenising, a vocabulary, padded and
length-bucketed batches, and optional pretrained word vectors.

Tokeniser: the text is lower-cased, HTML line breaks (``<br />``, as in IMDB) become spaces,
and tokens are maximal runs of letters and digits (keeping an apostrophe suffix such as
``n't`` or ``'s`` attached to the token before it: ``don't`` is one token), or single
punctuation characters: ``re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\\sa-z0-9]", text)``.
"""

import collections
import csv
import gzip
import io
import pathlib
import re

import numpy as np

from recur.data import vocabulary

TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (see the module docstring)."""
    return TOKEN_PATTERN.findall(text.lower().replace("<br />", " "))


class Vocabulary(vocabulary.Vocabulary):
    """Token <-> id; id 0 is ``<pad>``, id 1 is ``<unk>`` (every unknown token)."""

    @classmethod
    def build(cls, texts: list[list[str]], min_count: int = 1, max_size: int = 0):
        """From tokenised training texts: tokens seen at least ``min_count`` times, the most
        frequent first (ties alphabetical), at most ``max_size`` in all (0: no limit)."""
        counts = collections.Counter(token for text in texts for token in text)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if max_size:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])


def _open_text(path: pathlib.Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_labelled(
    path: str | pathlib.Path, text_column: str, label_column: str
) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels from a TSV (``.tsv``, unquoted, as GLUE) or CSV (``.csv``,
    RFC 4180), plain or ``.gz``, with a header row naming the columns.

    Raises:
      ValueError: naming the file (and line) for a missing file or column, a row without the
        columns, or a label other than 0/1.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"sentiment file {path} does not exist")
    tsv = ".tsv" in path.suffixes
    texts, labels = [], []
    with _open_text(path) as f:
        if tsv:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (text_column, label_column):
            if column not in header:
                raise ValueError(f"{path}: no column {column!r}; columns: {', '.join(header)}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            text, label = row.get(text_column), row.get(label_column)
            if text is None or label is None:
                raise ValueError(f"{where}: missing column {text_column!r} or {label_column!r}")
            if label.strip() not in ("0", "1"):
                raise ValueError(f"{where}: label must be 0 or 1, got {label!r}")
            texts.append(text)
            labels.append(int(label))
    if not texts:
        raise ValueError(f"{path}: no data rows")
    return texts, np.array(labels, np.int32)


def encode_texts(
    texts: list[str], vocab: Vocabulary, max_length: int
) -> tuple[list[np.ndarray], dict[str, int]]:
    """Token ids per text, truncated to ``max_length``; an empty text becomes one ``<unk>``.
    Returns the ids and counts of what was changed (for the log)."""
    encoded, truncated, empty = [], 0, 0
    for text in texts:
        ids = vocab.encode(tokenize(text))
        if len(ids) > max_length:
            ids, truncated = ids[:max_length], truncated + 1
        if len(ids) == 0:
            ids, empty = [UNK_ID], empty + 1
        encoded.append(np.array(ids, np.int32))
    return encoded, {"truncated": truncated, "empty": empty}


def pad_batch(
    sequences: list[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    multiple: int = 8,
    max_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Pads to ``[batch_size, T]``: T is the longest sequence rounded up to ``multiple`` (so
    few shapes compile: one step program per T), at most ``max_steps`` (the length sequences
    were cut at, so the longest batches are not padded past it); missing rows of a final
    partial batch get weight 0."""
    count = len(sequences)
    longest = max(len(s) for s in sequences)
    num_steps = -(-longest // multiple) * multiple
    if max_steps is not None:
        num_steps = max(min(num_steps, max_steps), longest)
    tokens = np.full((batch_size, num_steps), PAD_ID, np.int32)
    lengths = np.ones(batch_size, np.int32)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
        lengths[row] = len(sequence)
    padded_labels = np.zeros(batch_size, np.int32)
    padded_labels[:count] = labels
    weights = (np.arange(batch_size) < count).astype(np.float32)
    return {"tokens": tokens, "lengths": lengths, "labels": padded_labels, "weights": weights}


def bucketed_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list:
    """One epoch of batches (index arrays) where each batch holds examples of similar length:
    shuffle, sort chunks of 50 batches by length, cut into batches, shuffle the batches.
    Every example appears exactly once."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def load_glove(path: str | pathlib.Path, vocab: Vocabulary, embed_size: int) -> tuple:
    """Rows of a GloVe-format text file (``word v1 v2 ...``, plain or .gz) for the vocabulary's
    words: ``(vectors [V, E], found [V] bool)``; other rows are zero."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"word-vector file {path} does not exist")
    vectors = np.zeros((len(vocab), embed_size), np.float32)
    found = np.zeros(len(vocab), bool)
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            word, *values = line.rstrip().split(" ")
            index = vocab.ids.get(word)
            if index is None:
                continue
            if len(values) != embed_size:
                raise ValueError(
                    f"{path}, line {number}: {len(values)} values, expected embed_size {embed_size}"
                )
            vectors[index], found[index] = np.array(values, np.float32), True
    return vectors, found
