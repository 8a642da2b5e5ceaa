"""Language-modelling text: corpora from local files, word and character vocabularies, and the
stream layout for truncated backpropagation through time.

Word level follows Mikolov's PTB: whitespace-split words plus one ``<eos>`` per line; the
PTB files already map rare words to ``<unk>``, and words outside the vocabulary in user text
map to ``<unk>`` too. Character level reads every character (newline as ``\\n``); PTB's char
files (``ptb.char.*``) are space-separated characters with ``_`` for word boundaries and are
read token by token with one ``<eos>`` per line, like the word level.
"""

import gzip
import pathlib

import numpy as np

from recur.data import vocabulary

EOS, UNK = "<eos>", "<unk>"
LEVELS = ("word", "char", "char_tokens")


def read_text(path: str | pathlib.Path) -> str:
    """A UTF-8 text file, plain or ``.gz``.

    Raises:
      ValueError: naming the file when it is missing, empty or not UTF-8 text.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file {path} does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise ValueError(f"corpus file {path} cannot be read as UTF-8 text: {error}") from None
    if not text.strip():
        raise ValueError(f"corpus file {path} is empty")
    return text


def tokens_of(text: str, level: str) -> list[str]:
    """``word``: words + ``<eos>`` per line; ``char``: every character; ``char_tokens``:
    space-separated symbols + ``<eos>`` per line (PTB's char files)."""
    if level == "char":
        return list(text)
    if level not in LEVELS:
        raise ValueError(f"unknown text level {level!r}; available: {', '.join(LEVELS)}")
    tokens = []
    for line in text.splitlines():
        words = line.split()
        if words:
            tokens += [*words, EOS]
    return tokens


class Vocabulary(vocabulary.Vocabulary):
    """Token <-> id, built from the training split; unknown tokens map to ``<unk>``."""

    @classmethod
    def build(cls, tokens: list[str]) -> "Vocabulary":
        """Every distinct training token, most frequent first (ties in order of appearance),
        plus ``<unk>`` if the training text has none."""
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        ordered = sorted(counts, key=lambda t: -counts[t])  # stable: first appearance on ties
        if UNK not in counts:
            ordered.append(UNK)
        return cls(ordered)


def streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """The corpus cut into ``batch_size`` contiguous streams, ``[batch_size, N // batch_size]``
    (the remainder dropped): row b continues where it left off from one window to the next."""
    length = len(ids) // batch_size
    if length < 2:
        raise ValueError(f"{len(ids)} tokens are too few for {batch_size} streams")
    return ids[: length * batch_size].reshape(batch_size, length)


def num_windows(stream_array: np.ndarray, bptt: int) -> int:
    """Windows per epoch: each predicts ``bptt`` next tokens (the last may be shorter)."""
    return -(-(stream_array.shape[1] - 1) // bptt)


def window(stream_array: np.ndarray, index: int, bptt: int) -> dict[str, np.ndarray]:
    """Window ``index``: ``inputs [B, t]`` and ``targets [B, t]`` (inputs shifted by one),
    ``t = bptt`` except possibly for the last window. Window i+1 of row b starts right after
    window i of row b, so the final state of one window is the initial state of the next."""
    start = index * bptt
    stop = min(start + bptt, stream_array.shape[1] - 1)
    if not 0 <= start < stop:
        raise ValueError(f"window {index} is outside the {num_windows(stream_array, bptt)} windows")
    return {"inputs": stream_array[:, start:stop], "targets": stream_array[:, start + 1 : stop + 1]}


def find_split_files(directory: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """The ``train`` / ``valid`` / ``test`` text files of a directory, by name: a file whose
    name contains ``train`` (``valid`` or ``dev``, ``test``); with no such names, the one text
    file in it (to be split).

    Raises:
      ValueError: when the directory is missing, has no text file or several candidates for
        one split (name the files with ``train_path``/``valid_path``/``test_path`` instead).
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"corpus directory {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in files if p.suffix in (".txt", ".gz", "") or p.name.endswith(".txt.gz")]
    found = {}
    for split, keys in (("train", ("train",)), ("valid", ("valid", "dev")), ("test", ("test",))):
        matches = [p for p in files if any(key in p.name for key in keys)]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise ValueError(
                f"corpus directory {directory} has several {split} files ({names}); "
                "name one with the train/valid/test path fields"
            )
        if matches:
            found[split] = matches[0]
    if not found:
        if len(files) != 1:
            raise ValueError(
                f"corpus directory {directory} has {len(files)} text files and none named "
                "train/valid/test"
            )
        found["train"] = files[0]
    if "train" not in found:
        raise ValueError(f"corpus directory {directory} has no file named *train*")
    return found


def split_text(text: str, train_fraction: float) -> tuple[str, str]:
    """The first ``train_fraction`` of the characters and the rest, cut after the first line
    break at or past that point so no word is split (the customary 90/10 split of Tiny
    Shakespeare, up to one line)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    line_end = text.find("\n", cut)
    cut = line_end + 1 if line_end >= 0 else cut
    if not text[:cut].strip() or not text[cut:].strip():
        raise ValueError(f"train_fraction {train_fraction} leaves an empty train or valid split")
    return text[:cut], text[cut:]


def read_tfds_text(name: str, split: str, key: str = "text") -> str:
    """All ``key`` fields of a tensorflow-datasets split joined (e.g. ``tiny_shakespeare``,
    whose splits are one example each); downloads when needed (online users)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 - online users only

    source = tfds.data_source(name, split=split, download=True)
    pieces = [source[i][key] for i in range(len(source))]
    return "".join(p.decode("utf-8") if isinstance(p, bytes) else p for p in pieces)
