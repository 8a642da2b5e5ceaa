"""Sentence pairs for translation: reading tab-separated pair files (the Tatoeba/manythings
``fra.txt``: ``English<TAB>French`` per line), normalising and tokenising, the PyTorch
tutorial's filter, a seeded split that never puts a test source sentence in training,
vocabularies from the training split, and padded id arrays.

Normalisation (:func:`tokenize`): Unicode NFC, no-break and narrow no-break spaces made
spaces, lower-casing (optional), accents kept or stripped (optional), and the punctuation
``. ! ? , ; : " « » ( )`` split off as tokens; apostrophes and hyphens stay inside words
(``j'ai``, ``peut-être``, ``i'm``). Tokens are what is left between spaces.
"""

import collections
import dataclasses
import gzip
import pathlib
import re
import unicodedata

import numpy as np

from recur.data.vocabulary import Vocabulary

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
# The English prefixes of the PyTorch seq2seq tutorial's filter, with the contracted forms
# this tokenizer keeps whole ("i'm", where the tutorial's normalisation makes "i m").
TUTORIAL_PREFIXES = (
    "i am ", "i'm ", "he is ", "he's ", "she is ", "she's ", "you are ", "you're ",
    "we are ", "we're ", "they are ", "they're ",
)  # fmt: skip
TUTORIAL_MAX_WORDS = 10  # both sides shorter than this many tokens
_PUNCTUATION = re.compile(r'([.!?,;:"«»()])')
_SPACES = re.compile(r"[\s\u00a0\u202f]+")


def tokenize(text: str, lowercase: bool = True, strip_accents: bool = False) -> list[str]:
    """``"Je suis très fatigué !"`` -> ``["je", "suis", "très", "fatigué", "!"]``."""
    text = unicodedata.normalize("NFC", text)
    if strip_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        )
    if lowercase:
        text = text.lower()
    text = text.replace("\u2019", "'")  # typographic apostrophe
    return _PUNCTUATION.sub(r" \1 ", _SPACES.sub(" ", text)).split()


def detokenize(tokens: list[str]) -> str:
    """Tokens joined by spaces (what BLEU is computed on, for hypotheses and references)."""
    return " ".join(tokens)


@dataclasses.dataclass
class Pair:
    """One sentence pair, tokenised; ``line`` is its line in the file."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    line: int


def read_pairs(
    path: str | pathlib.Path,
    direction: str = "fr-en",
    lowercase: bool = True,
    strip_accents: bool = False,
) -> list[Pair]:
    """Reads an ``English<TAB>French`` file (plain or .gz; extra columns, such as the newer
    files' attribution, are ignored) as ``direction`` (``fr-en``: French source).

    Raises:
      ValueError: a missing file, an unknown direction, or a line without two columns, with
        an empty side or not in UTF-8 (naming the file and line).
    """
    if direction not in ("fr-en", "en-fr"):
        raise ValueError(f"direction must be fr-en or en-fr, got {direction!r}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"sentence-pair file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    pairs = []
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 (byte {raw[error.start]:#04x} at "
                    f"column {error.start + 1})"
                ) from None
            columns = line.rstrip("\r\n").split("\t")
            if len(columns) < 2:
                raise ValueError(f"{path}, line {number}: expected English<TAB>French")
            for side, text in zip(("English", "French"), columns[:2], strict=True):
                if not text.strip():
                    raise ValueError(f"{path}, line {number}: the {side} side is empty")
            english, french = (tokenize(c, lowercase, strip_accents) for c in columns[:2])
            source, target = (french, english) if direction == "fr-en" else (english, french)
            pairs.append(Pair(tuple(source), tuple(target), number))
    if not pairs:
        raise ValueError(f"{path}: no sentence pairs")
    return pairs


def tutorial_filter(pairs: list[Pair], direction: str = "fr-en") -> list[Pair]:
    """The PyTorch tutorial's subset: both sides shorter than 10 tokens and the English side
    starting with one of :data:`TUTORIAL_PREFIXES`."""

    def english(pair):
        return pair.target if direction == "fr-en" else pair.source

    return [
        p for p in pairs
        if len(p.source) < TUTORIAL_MAX_WORDS and len(p.target) < TUTORIAL_MAX_WORDS
        and (" ".join(english(p)) + " ").startswith(TUTORIAL_PREFIXES)
    ]  # fmt: skip


def split(
    pairs: list[Pair], valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Pair]]:
    """A seeded split by source sentence: all pairs of one source sentence (its several
    translations) fall in the same split, so no test source is ever trained on.

    Raises:
      ValueError: fractions outside [0, 1) or leaving no training pairs.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and
            valid_fraction + test_fraction < 1):  # fmt: skip
        raise ValueError(
            f"valid_fraction {valid_fraction} and test_fraction {test_fraction} must be in "
            "[0, 1) and sum to less than 1"
        )
    groups = collections.defaultdict(list)
    for pair in pairs:
        groups[pair.source].append(pair)
    sources = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(sources))
    n_test = int(round(test_fraction * len(sources)))
    n_valid = int(round(valid_fraction * len(sources)))
    parts = {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "train": order[n_test + n_valid :],
    }
    out = {
        name: sorted((p for i in index for p in groups[sources[i]]), key=lambda p: p.line)
        for name, index in parts.items()
    }
    if not out["train"]:
        raise ValueError(f"no training pairs left of {len(pairs)}")
    return out


def build_vocabulary(sentences, min_count: int = 1) -> Vocabulary:
    """The tokens seen at least ``min_count`` times (most frequent first, ties by token)
    after :data:`SPECIALS` (ids 0-3)."""
    counts = collections.Counter(token for sentence in sentences for token in sentence)
    kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                  key=lambda t: (-counts[t], t))  # fmt: skip
    return Vocabulary([*SPECIALS, *kept], unknown=UNK)


def encode(
    pairs: list[Pair], source_vocab: Vocabulary, target_vocab: Vocabulary,
    source_length: int, target_length: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Padded id arrays of ``pairs``: ``source [N, S]`` with ``source_lengths [N]``, the
    decoder's ``target_inputs [N, T]`` (``<bos>`` then the target) and ``targets [N, T]``
    (the target then ``<eos>``) with ``target_weights [N, T]`` (1 on real tokens).
    Sentences are cut to ``source_length`` / ``target_length - 1`` tokens."""
    n = len(pairs)
    source = np.zeros((n, source_length), np.int32)
    inputs = np.zeros((n, target_length), np.int32)
    targets = np.zeros((n, target_length), np.int32)
    lengths = np.zeros(n, np.int32)
    weights = np.zeros((n, target_length), np.float32)
    for row, pair in enumerate(pairs):
        src = source_vocab.encode(list(pair.source[:source_length]))
        tgt = target_vocab.encode(list(pair.target[: target_length - 1]))
        source[row, : len(src)], lengths[row] = src, max(len(src), 1)
        inputs[row, 0], inputs[row, 1 : len(tgt) + 1] = SPECIALS.index(BOS), tgt
        targets[row, : len(tgt)], targets[row, len(tgt)] = tgt, SPECIALS.index(EOS)
        weights[row, : len(tgt) + 1] = 1.0
    return {
        "source": source, "source_lengths": lengths, "target_inputs": inputs,
        "targets": targets, "target_weights": weights,
    }  # fmt: skip
