"""Data parallelism with ``jax.sharding``: one mesh axis over all devices, batch split along
it, params and optimizer state replicated. The same code runs on one CPU, a GPU, or many
devices (multi-host after :func:`maybe_initialize_distributed`)."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool) -> None:
    """``jax.distributed.initialize()`` for multi-host runs (its arguments from the cluster's
    environment); call before any other JAX work."""
    if enabled:
        jax.distributed.initialize()


def make_mesh() -> Mesh:
    """A 1-D mesh over every device, axis ``"data"``."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicate(tree, mesh: Mesh):
    """Places every leaf on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch, mesh: Mesh):
    """Splits every leaf's leading (batch) axis over the mesh's devices."""
    devices = mesh.devices.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % devices:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not divisible by the number of devices {devices}"
            )
    return jax.device_put(batch, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))
