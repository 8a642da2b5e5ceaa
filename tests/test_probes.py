"""Probe data: shapes, and trivial baselines computed from generated data match the formulas."""

import gzip
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.probes import config as probe_config
from experiments.probes import train as probe_train
from recur.data import batching, probes

SHARED_MNIST = pathlib.Path(__file__).parents[1] / "../shared/data/mnist"


def test_adding_problem_layout_and_baseline():
    T = 30
    batch = probes.adding_batch(jax.random.key(0), 20000, T)
    inputs, target = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    assert inputs.shape == (20000, T, 2) and target.shape == (20000, 1)
    markers = inputs[..., 1]
    assert np.all(markers.sum(1) == 2)
    assert np.all(markers[:, : T // 2].sum(1) == 1)  # one marker in each half
    np.testing.assert_allclose(target[:, 0], (inputs[..., 0] * markers).sum(1), rtol=1e-6)
    assert inputs[..., 0].min() >= 0 and inputs[..., 0].max() <= 1
    # Always predicting 1 scores the baseline 1/6 (standard error here ~0.0014).
    assert abs(np.mean((target - 1.0) ** 2) - probes.ADDING_BASELINE_MSE) < 0.006


@pytest.mark.parametrize("T", [1, 5, 40])
def test_copy_task_layout_and_memoryless_baseline(T):
    batch = probes.copy_batch(jax.random.key(1), 64, T)
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    assert inputs.shape == targets.shape == (64, T + 20)
    symbols = inputs[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    np.testing.assert_array_equal(inputs[:, 10 : T + 9], 0)
    np.testing.assert_array_equal(inputs[:, T + 9], probes.COPY_DELIMITER)
    np.testing.assert_array_equal(inputs[:, T + 10 :], 0)
    np.testing.assert_array_equal(targets[:, : T + 10], 0)
    np.testing.assert_array_equal(targets[:, T + 10 :], symbols)
    # The memoryless strategy: blank for T + 10 steps, then uniform over the 8 symbols.
    logits = np.full((64, T + 20, probes.COPY_VOCAB), -1e9)
    logits[:, : T + 10, probes.COPY_BLANK] = 0.0
    logits[:, T + 10 :, 1:9] = 0.0
    ce = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), targets).mean()
    np.testing.assert_allclose(ce, probes.copy_baseline(T), rtol=1e-5)
    np.testing.assert_allclose(probes.copy_baseline(T), 10 * np.log(8) / (T + 20))


@pytest.mark.parametrize("T", [16, 50])
def test_selective_copy_layout_and_memoryless_baseline(T):
    K = probes.SELECTIVE_LENGTH
    batch = probes.selective_copy_batch(jax.random.key(1), 64, T)
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    assert inputs.shape == targets.shape == (64, T + K)
    np.testing.assert_array_equal(inputs[:, T:], probes.SELECTIVE_MARKER)
    np.testing.assert_array_equal(targets[:, :T], 0)
    for row in range(64):  # the symbols, in order, wherever they sit among the blanks
        noisy = inputs[row, :T]
        np.testing.assert_array_equal(noisy[noisy != 0], targets[row, T:])
    assert ((targets[:, T:] >= 1) & (targets[:, T:] <= 16)).all()
    if T > K:  # positions differ between sequences
        assert len({tuple(np.flatnonzero(row[:T])) for row in inputs}) > 32
    logits = np.full((64, T + K, probes.SELECTIVE_VOCAB), -1e9)
    logits[:, :T, probes.SELECTIVE_BLANK] = 0.0
    logits[:, T:, 1:17] = 0.0
    ce = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), targets).mean()
    np.testing.assert_allclose(ce, probes.selective_copy_baseline(T), rtol=1e-5)
    with pytest.raises(ValueError, match="it needs T >= 16, got T=15"):
        probes.selective_copy_batch(jax.random.key(1), 2, 15)


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(directory: pathlib.Path, n: int = 10000, with_train: bool = False) -> None:
    rng = np.random.default_rng(0)
    stems = [("t10k", n)] + ([("train", 100)] if with_train else [])
    for stem, size in stems:
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (size, 28, 28)))
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, (size,)))


def test_mnist_split_fallback_and_standard(tmp_path):
    fake_mnist(tmp_path)
    train, test, notes = probes.load_mnist(tmp_path)
    assert len(train["images"]) == 8000 and len(test["images"]) == 2000
    assert notes and "8,000" in notes[0] and "not comparable" in notes[0]
    fake_mnist(tmp_path, n=50, with_train=True)
    train, test, notes = probes.load_mnist(tmp_path)
    assert len(train["images"]) == 100 and len(test["images"]) == 50 and not notes


def test_mnist_sequences():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    permutation = np.random.default_rng(1).permutation(784)
    sequential = probes.mnist_sequences(images, "sequential", None)
    permuted = probes.mnist_sequences(images, "permuted", permutation)
    rows = probes.mnist_sequences(images, "rows", None)
    assert sequential.shape == permuted.shape == (3, 784, 1) and rows.shape == (3, 28, 28)
    np.testing.assert_allclose(sequential[0, 28 * 5 + 3, 0], images[0, 5, 3] / 255.0)
    np.testing.assert_array_equal(permuted[:, :, 0], sequential[:, permutation, 0])
    with pytest.raises(ValueError, match="unknown MNIST mode 'columns'"):
        probes.mnist_sequences(images, "columns", None)


def test_mnist_errors(tmp_path):
    with pytest.raises(ValueError, match="MNIST directory .*nowhere does not exist"):
        probes.load_mnist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no MNIST IDX files in"):
        probes.load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02garbage")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="malformed MNIST IDX file .*t10k-images-idx3-ubyte"):
        probes.load_mnist(tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not present")
def test_shared_mnist_reads_real_digits():
    train, test, notes = probes.load_mnist(SHARED_MNIST)
    assert train["images"].shape == (8000, 28, 28) and len(notes) == 1
    labels = np.concatenate([train["labels"], test["labels"]])
    # Published test-set label counts (shared/data/README.md).
    np.testing.assert_array_equal(
        np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )


def test_epoch_batches_cover_each_example_once_per_epoch():
    data = {"x": np.arange(10), "y": np.arange(10) * 2}
    epoch = [batching.epoch_batch(data, step, 3, seed=0) for step in range(3)]  # 3 per epoch
    seen = np.concatenate([b["x"] for b in epoch])
    assert len(set(seen.tolist())) == 9
    np.testing.assert_array_equal(epoch[0]["y"], epoch[0]["x"] * 2)
    again = batching.epoch_batch(data, 1, 3, seed=0)
    np.testing.assert_array_equal(again["x"], epoch[1]["x"])  # a function of the step
    assert not np.array_equal(batching.epoch_batch(data, 3, 3, 0)["x"], epoch[0]["x"])


def test_mnist_evaluation_scores_every_test_image(tmp_path):
    # 50 test images in batches of 8: six full batches and one of 2, padded with weight-0 rows.
    fake_mnist(tmp_path, n=50, with_train=True)
    config = probe_config.get_config("smoke,task=mnist_rows")
    config.task.mnist_dir = str(tmp_path)
    batches = list(probe_train.build_task(config).eval_batches())
    assert {len(batch["targets"]) for batch in batches} == {config.batch_size}  # one shape
    assert sum(float(batch["weights"].sum()) for batch in batches) == 50
