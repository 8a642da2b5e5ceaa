"""Batches of in-memory datasets as a pure function of the step number (exact resume)."""

import numpy as np


def epoch_batch(
    data: dict[str, np.ndarray], step: int, batch_size: int, seed: int
) -> dict[str, np.ndarray]:
    """Batch ``step`` of shuffled epochs over ``data`` (a fresh permutation per epoch, from
    ``seed`` and the epoch number; the last partial batch of an epoch is dropped)."""
    size = len(next(iter(data.values())))
    per_epoch = size // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {size} training examples")
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(size)
    rows = order[index * batch_size : (index + 1) * batch_size]
    return {name: array[rows] for name, array in data.items()}
