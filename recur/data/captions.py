"""Captioned strips of MNIST digits: the one-to-many task of ``experiments/caption``.

A strip is 1 to ``max_digits`` digit images placed side by side (``28 x 28k`` pixels for k
digits, padded on the right with black to ``28 x 28 max_digits`` for batching). Its caption
names the digits one word each (``digits``: "seven three one") or reads the number the strip
shows in English (``number``: "seven hundred thirty one"). A strip of two or more digits never
starts with a zero, so both captions describe the same images and every strip shows a number
as it is written.

Strips are drawn from a seeded generator, so a set of strips (or the training batch of a step)
is a pure function of the seed: runs are reproducible and resume exactly. Training strips use
only the training digit images; validation and test strips use disjoint held-out images.
"""

import dataclasses
import functools
import pathlib

import numpy as np

from recur.data.probes import load_mnist
from recur.data.vocabulary import Vocabulary

CAPTIONS = ("digits", "number")
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
WORDS = (*ONES, *TENS[2:], "hundred", "thousand")
MAX_DIGITS = 4  # the number words go up to 9,999
SIDE = 28  # MNIST images are SIDE x SIDE


def number_words(number: int) -> list[str]:
    """The English name of ``0 <= number <= 9999`` as words, without "and" or hyphens:
    ``731 -> seven hundred thirty one``, ``4012 -> four thousand twelve``."""
    if not 0 <= number < 10**MAX_DIGITS:
        raise ValueError(f"number_words covers 0 to {10**MAX_DIGITS - 1}, got {number}")
    if number == 0:
        return ["zero"]
    thousands, rest = divmod(number, 1000)
    hundreds, rest = divmod(rest, 100)
    words = []
    if thousands:
        words += [ONES[thousands], "thousand"]
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words += [TENS[tens]] + ([ONES[ones]] if ones else [])
    elif rest:
        words.append(ONES[rest])
    return words


def caption_words(digits, caption: str) -> list[str]:
    """The caption of a strip showing ``digits`` (ints, most significant first)."""
    digits = [int(d) for d in digits]
    if caption == "digits":
        return [ONES[d] for d in digits]
    if caption == "number":
        return number_words(int("".join(map(str, digits))))
    raise ValueError(f"unknown caption {caption!r}; available: {', '.join(CAPTIONS)}")


def vocabulary() -> Vocabulary:
    """One table for both captions: :data:`SPECIALS`, then :data:`WORDS`."""
    return Vocabulary([*SPECIALS, *WORDS], unknown=UNK)


@functools.cache  # the number case reads 10^max_digits names; every training batch asks
def caption_length(caption: str, max_digits: int) -> int:
    """Tokens of the longest caption of up to ``max_digits`` digits, plus ``<eos>``."""
    if caption == "digits":
        return max_digits + 1
    longest = max(len(number_words(n)) for n in range(10**max_digits))
    return longest + 1


@dataclasses.dataclass
class DigitImages:
    """Digit images of one split, grouped by label for drawing strips."""

    images: np.ndarray  # [N, 28, 28] uint8
    labels: np.ndarray  # [N] int32

    def __post_init__(self):
        self._order = np.argsort(self.labels, kind="stable")  # indices grouped by label
        self._counts = np.bincount(self.labels, minlength=10)
        if (self._counts == 0).any():
            missing = np.flatnonzero(self._counts == 0).tolist()
            count = len(self.labels)
            raise ValueError(f"no images of digit(s) {missing} in a split of {count} images")
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])

    def draw(self, rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
        """Indices into ``images`` of a random image of each digit (any shape)."""
        offsets = np.floor(rng.random(digits.shape) * self._counts[digits]).astype(np.int64)
        return self._order[self._starts[digits] + offsets]


def load_digits(
    directory: str | pathlib.Path, valid_fraction: float
) -> tuple[dict[str, DigitImages], list[str]]:
    """``({"train", "valid", "test"}: DigitImages, notes)`` from the MNIST IDX files.

    The test images are the probes' held-out part (:func:`recur.data.probes.load_mnist`: the
    standard 10k test set, or the last 2,000 of the 10k test images where the 60k training
    images are absent); the last ``valid_fraction`` of the remaining images are for
    validation strips, and the rest for training strips.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
    train, test, notes = load_mnist(directory)
    cut = len(train["labels"]) - int(round(valid_fraction * len(train["labels"])))
    splits = {
        "train": DigitImages(train["images"][:cut], train["labels"][:cut]),
        "valid": DigitImages(train["images"][cut:], train["labels"][cut:]),
        "test": DigitImages(test["images"], test["labels"]),
    }
    notes = notes + [
        f"digit images: {cut} for training strips, {len(train['labels']) - cut} for "
        f"validation strips, {len(test['labels'])} (held out) for test strips"
    ]
    return splits, notes


def make_strips(
    rng: np.random.Generator, source: DigitImages, count: int, min_digits: int, max_digits: int
) -> dict[str, np.ndarray]:
    """``count`` random strips: ``images [N, 28, 28 max_digits]`` uint8, ``digits
    [N, max_digits]`` int32 (-1 past the strip's end), ``num_digits [N]`` and the source
    image of each digit ``image_ids [N, max_digits]`` (-1 past the end).

    The number of digits is uniform in ``[min_digits, max_digits]``, each digit uniform in
    0-9 except that a strip of two or more digits starts with 1-9.
    """
    if not 1 <= min_digits <= max_digits <= MAX_DIGITS:
        raise ValueError(
            f"need 1 <= data.min_digits <= data.max_digits <= {MAX_DIGITS}, got "
            f"{min_digits} and {max_digits}"
        )
    num_digits = rng.integers(min_digits, max_digits + 1, count)
    digits = rng.integers(0, 10, (count, max_digits))
    first = rng.integers(1, 10, count)
    digits[:, 0] = np.where(num_digits > 1, first, digits[:, 0])
    present = np.arange(max_digits) < num_digits[:, None]  # [N, max_digits]
    image_ids = source.draw(rng, digits)
    digits = np.where(present, digits, -1).astype(np.int32)
    image_ids = np.where(present, image_ids, -1)
    tiles = source.images[np.maximum(image_ids, 0)] * present[..., None, None]  # [N, k, 28, 28]
    images = tiles.transpose(0, 2, 1, 3).reshape(count, SIDE, SIDE * max_digits)
    return {
        "images": images.astype(np.uint8),
        "digits": digits,
        "num_digits": num_digits.astype(np.int32),
        "image_ids": image_ids,
    }


def encode_captions(
    strips: dict[str, np.ndarray], caption: str, vocab: Vocabulary, length: int
) -> dict[str, np.ndarray]:
    """``targets [N, length]`` (the caption's ids, ``<eos>``, then ``<pad>``) and
    ``weights [N, length]`` (1 on the caption and its ``<eos>``)."""
    count = len(strips["digits"])
    targets = np.zeros((count, length), np.int32)
    weights = np.zeros((count, length), np.float32)
    eos = vocab.ids[EOS]
    for row, (digits, k) in enumerate(zip(strips["digits"], strips["num_digits"], strict=True)):
        ids = vocab.encode(caption_words(digits[:k], caption))
        if len(ids) >= length:
            raise ValueError(f"caption of {digits[:k]} has {len(ids)} words; length {length}")
        targets[row, : len(ids)], targets[row, len(ids)] = ids, eos
        weights[row, : len(ids) + 1] = 1.0
    return {"targets": targets, "weights": weights}


def fit_strip(image: np.ndarray, max_digits: int) -> np.ndarray:
    """A user's strip ``[28, W]`` (W a multiple of 28, at most ``28 max_digits``; values
    0-255, white digits on black as in MNIST) padded on the right to the model's width."""
    if image.ndim != 2 or image.shape[0] != SIDE:
        raise ValueError(f"a strip must be {SIDE} pixels high and 2-D, got shape {image.shape}")
    width = image.shape[1]
    if width % SIDE or not SIDE <= width <= SIDE * max_digits:
        raise ValueError(
            f"a strip must be 28 x 28k pixels with 1 <= k <= {max_digits}, got width {width}"
        )
    padded = np.zeros((SIDE, SIDE * max_digits), np.uint8)
    padded[:, :width] = np.clip(image, 0, 255).astype(np.uint8)
    return padded
