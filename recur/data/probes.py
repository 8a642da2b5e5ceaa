"""Long-term-dependency probes: the adding problem, the copy task, selective copying, and
(sequential, permuted, row-by-row) MNIST. Generated batches are pure functions of a key, so a
training batch is a function of the step number and resumed runs see the same data.

References:
  Hochreiter & Schmidhuber, "Long short-term memory", 1997 (adding problem).
  Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of rectified linear
  units", 2015 (adding problem, sequential and permuted MNIST).
  Arjovsky, Shah & Bengio, "Unitary evolution recurrent neural networks", ICML 2016 (copy
  task, adding problem).
  Gu & Dao, "Mamba: linear-time sequence modeling with selective state spaces",
  arXiv:2312.00752, 2023 (selective copying).
"""

import gzip
import math
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np

from recur.types import Array, PRNGKey

ADDING_BASELINE_MSE = 1.0 / 6.0  # always predicting 1: Var(U1 + U2) = 2/12
COPY_SYMBOLS, COPY_LENGTH = 8, 10  # 10 symbols drawn from 8
COPY_BLANK, COPY_DELIMITER = 0, COPY_SYMBOLS + 1  # symbols are 1..8
COPY_VOCAB = COPY_SYMBOLS + 2


def adding_batch(key: PRNGKey, batch_size: int, num_steps: int) -> dict[str, Array]:
    """The adding problem.

    Inputs ``[B, T, 2]``: channel 0 holds values drawn from U[0, 1], channel 1 marks two of
    them, one in the first half of the sequence and one in the second half (Le et al. 2015;
    Arjovsky et al. 2016). Target ``[B, 1]``: the sum of the two marked values. Predicting the
    mean 1 everywhere gives MSE 1/6, the baseline.
    """
    if num_steps < 2:
        raise ValueError(f"the adding problem needs T >= 2, got T={num_steps}")
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch_size, num_steps))
    half = num_steps // 2
    first = jax.random.randint(k_first, (batch_size,), 0, half)
    second = jax.random.randint(k_second, (batch_size,), half, num_steps)
    steps = jnp.arange(num_steps)
    markers = (steps == first[:, None]) | (steps == second[:, None])
    target = jnp.sum(jnp.where(markers, values, 0.0), axis=1, keepdims=True)
    inputs = jnp.stack([values, markers.astype(values.dtype)], axis=-1)
    return {"inputs": inputs, "targets": target}


def copy_batch(key: PRNGKey, batch_size: int, num_steps: int) -> dict[str, Array]:
    """The copy task of Arjovsky et al. (2016), of length ``T + 20``.

    Inputs ``[B, T + 20]`` int: 10 symbols from {1..8}, then T - 1 blanks (0), the delimiter
    (9), and 10 more blanks. Targets: ``T + 10`` blanks, then the 10 symbols. A memoryless
    model that predicts blanks and then uniform symbols scores the baseline cross-entropy
    ``10 ln 8 / (T + 20)`` per step.
    """
    if num_steps < 1:
        raise ValueError(f"the copy task needs T >= 1, got T={num_steps}")
    symbols = jax.random.randint(key, (batch_size, COPY_LENGTH), 1, COPY_SYMBOLS + 1)
    blanks = jnp.zeros((batch_size, num_steps - 1), symbols.dtype)
    delimiter = jnp.full((batch_size, 1), COPY_DELIMITER, symbols.dtype)
    tail = jnp.zeros((batch_size, COPY_LENGTH), symbols.dtype)
    inputs = jnp.concatenate([symbols, blanks, delimiter, tail], axis=1)
    lead = jnp.zeros((batch_size, num_steps + COPY_LENGTH), symbols.dtype)
    targets = jnp.concatenate([lead, symbols], axis=1)
    return {"inputs": inputs, "targets": targets}


SELECTIVE_SYMBOLS, SELECTIVE_LENGTH = 16, 16  # 16 tokens drawn from 16, as in Mamba's task
SELECTIVE_BLANK, SELECTIVE_MARKER = 0, SELECTIVE_SYMBOLS + 1  # symbols are 1..16
SELECTIVE_VOCAB = SELECTIVE_SYMBOLS + 2


def selective_copy_batch(key: PRNGKey, batch_size: int, num_steps: int) -> dict[str, Array]:
    """Selective copying (Gu & Dao 2023), of length ``T + 16``.

    Inputs ``[B, T + 16]`` int: T steps of blanks (0) among which 16 symbols from {1..16} sit
    at random positions (different for every sequence), then 16 markers (17). Targets: T
    blanks, then the 16 symbols in the order they appeared. Unlike the copy task the symbols'
    positions vary, so a model must decide from the content which inputs to keep. A memoryless
    model scores the baseline cross-entropy ``16 ln 16 / (T + 16)`` per step.
    """
    K = SELECTIVE_LENGTH
    if num_steps < K:
        raise ValueError(
            f"selective copying hides {K} symbols: it needs T >= {K}, got T={num_steps}"
        )
    k_symbols, k_positions = jax.random.split(key)
    symbols = jax.random.randint(k_symbols, (batch_size, K), 1, SELECTIVE_SYMBOLS + 1)
    order = jnp.argsort(jax.random.uniform(k_positions, (batch_size, num_steps)), axis=1)
    positions = jnp.sort(order[:, :K], axis=1)  # [B, K] distinct, increasing
    rows = jnp.arange(batch_size)[:, None]
    noisy = jnp.zeros((batch_size, num_steps), symbols.dtype).at[rows, positions].set(symbols)
    markers = jnp.full((batch_size, K), SELECTIVE_MARKER, symbols.dtype)
    inputs = jnp.concatenate([noisy, markers], axis=1)
    targets = jnp.concatenate([jnp.zeros_like(noisy), symbols], axis=1)
    return {"inputs": inputs, "targets": targets}


def selective_copy_baseline(num_steps: int) -> float:
    """Cross-entropy per step of the memoryless strategy: ``16 ln 16 / (T + 16)``."""
    return SELECTIVE_LENGTH * math.log(SELECTIVE_SYMBOLS) / (num_steps + SELECTIVE_LENGTH)


def copy_baseline(num_steps: int) -> float:
    """Cross-entropy per step of the memoryless strategy: ``10 ln 8 / (T + 20)``."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (num_steps + 2 * COPY_LENGTH)


# -- MNIST -------------------------------------------------------------------------------------

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_MODES = ("sequential", "permuted", "rows")


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads an IDX file (plain or .gz) into a uint8 array; clear error if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as error:
        raise ValueError(f"malformed MNIST IDX file {path}: {error}") from None


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(directory: str | pathlib.Path) -> tuple[dict, dict, list[str]]:
    """MNIST from IDX files in ``directory``: ``(train, test, notes)``, each split
    ``{"images": [N, 28, 28] uint8, "labels": [N] int32}``.

    With the 60k training images present, the standard split. With only the 10k test images
    (as in ``../shared/data/mnist/``), a deterministic split of them: the first 8,000 for
    training and the last 2,000 for testing, and a note saying so.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"MNIST directory {directory} does not exist")
    splits = {}
    for split, (images_stem, labels_stem) in MNIST_FILES.items():
        images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
        if images_path and labels_path:
            splits[split] = {
                "images": read_idx(images_path),
                "labels": read_idx(labels_path).astype(np.int32),
            }
    if "train" in splits and "test" in splits:
        return splits["train"], splits["test"], []
    if "test" not in splits:
        raise ValueError(
            f"no MNIST IDX files in {directory}: need t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz] (and the train-* pair for the standard split)"
        )
    test = splits["test"]
    note = (
        f"MNIST: the 60k training images are not in {directory}; using a deterministic "
        "split of the 10k test images: the first 8,000 to train, the last 2,000 to test. "
        "Accuracies are not comparable with results on the standard split."
    )
    train = {name: array[:8000] for name, array in test.items()}
    held_out = {name: array[8000:] for name, array in test.items()}
    return train, held_out, [note]


def mnist_sequences(images: np.ndarray, mode: str, permutation: np.ndarray | None) -> np.ndarray:
    """``[N, 28, 28]`` uint8 -> float32 sequences in [0, 1]: ``[N, 784, 1]`` pixel by pixel
    (``sequential``, or ``permuted`` by a fixed permutation) or ``[N, 28, 28]`` row by row."""
    if mode not in MNIST_MODES:
        raise ValueError(f"unknown MNIST mode {mode!r}; available: {', '.join(MNIST_MODES)}")
    pixels = images.astype(np.float32) / 255.0
    if mode == "rows":
        return pixels
    pixels = pixels.reshape(len(images), -1)
    if mode == "permuted":
        pixels = pixels[:, permutation]
    return pixels[..., None]
