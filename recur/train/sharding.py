"""Data parallelism: one mesh axis (``"data"``) over the devices, the batch split along it,
params and optimizer state replicated (:func:`recur.train.state.split_train_step`).

On CPU the devices are the cores: :func:`use_cpu_cores` (called by every experiment's ``main``
before JAX starts) makes one JAX CPU device per core, so each core runs its part of the batch
as a program of its own (XLA:CPU runs one operation at a time, and a recurrence at a small batch
is a chain of small operations that leaves the second core waiting; see the README's speed
section). The same code shards the batch over several GPUs or TPUs, or over the devices of
several processes after :func:`maybe_initialize_distributed`.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recur.train.state import DATA_AXIS, TrainState


def maybe_initialize_distributed(
    enabled: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` for multi-process runs; call before any other JAX work.
    Arguments left None come from the cluster's environment (SLURM, Open MPI, Cloud TPU; the
    coordinator also from ``JAX_COORDINATOR_ADDRESS``). On CPU the processes' collectives run
    over TCP (gloo)."""
    if not enabled:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def is_writer() -> bool:
    """Whether this process writes run outputs (metrics, plots, results): process 0 only."""
    return jax.process_index() == 0


def use_cpu_cores(cpu_devices: int | None = None) -> int:
    """Sets the number of JAX CPU devices before JAX starts: ``cpu_devices``, or by default one
    per core this process may run on (``os.sched_getaffinity``), unless ``XLA_FLAGS`` already
    sets ``--xla_force_host_platform_device_count``. Returns the number set (0: left as is).

    Raises:
      ValueError: ``cpu_devices`` below 1.
    """
    if cpu_devices is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return 0
        cpu_devices = len(os.sched_getaffinity(0))
    if cpu_devices < 1:
        raise ValueError(f"--cpu_devices must be at least 1, got {cpu_devices}")
    jax.config.update("jax_num_cpu_devices", cpu_devices)
    return cpu_devices


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh, axis ``"data"``, over the first ``num_devices`` devices (default: all).

    With several processes every process takes part with as many of its own devices as the
    others: ``num_devices // process_count`` each, at least one (so ``num_devices=1``, "no
    split", is one device per process: a process without a device in the mesh could not
    place its part of the arrays)."""
    devices = jax.devices()
    count = min(num_devices or len(devices), len(devices))
    processes = jax.process_count()
    if processes == 1:
        return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))
    own: dict[int, list] = {}
    for device in devices:
        own.setdefault(device.process_index, []).append(device)
    each = max(1, count // processes)
    chosen = [device for index in sorted(own) for device in own[index][:each]]
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def make_sub_mesh(mesh: Mesh, count: int) -> Mesh:
    """A 1-D mesh, axis ``"data"``, over the first ``count`` devices of ``mesh``."""
    return Mesh(np.asarray(mesh.devices.flat[:count]), (DATA_AXIS,))


def eval_device_count(rows: int, devices: int) -> int:
    """How many of ``devices`` devices evaluate a batch of ``rows`` rows: the fewest that take
    no more rows each than all of them would (each pads to ``ceil(rows / devices)`` rows), so
    that no device computes only weight-0 padding. One device for one row: a single-stream
    LM evaluation split over 2 CPU devices, one row of padding on the second, took 1.8x one
    device's time (the padding's work took a core the real row's matmuls could use). With
    several processes every process takes part (:func:`make_mesh`): all devices."""
    if jax.process_count() > 1 or rows < 1:
        return devices
    each = -(-rows // devices)
    return -(-rows // each)


def mesh_for_batch(batch_size: int, num_devices: int | None = None) -> Mesh:
    """The mesh over the most of the first ``num_devices`` devices (default: all) that split
    ``batch_size`` rows evenly (all of them when the batch divides; 1 device for a prime batch
    size above their number). With several processes the count is a multiple of the number
    of processes (see :func:`make_mesh`).

    Raises:
      ValueError: with several processes, a batch size that does not divide by their number.
    """
    count = min(num_devices or jax.device_count(), jax.device_count())
    processes = jax.process_count()
    if batch_size % processes:
        raise ValueError(
            f"batch size {batch_size} does not split over {processes} processes; use a batch "
            f"size divisible by {processes}"
        )
    count = max(count, processes)
    fits = [d for d in range(processes, count + 1, processes) if batch_size % d == 0]
    return make_mesh(max(fits))


def _put(tree, sharding: NamedSharding):
    """``tree`` placed with ``sharding``. With several processes every process holds the same
    whole values (the tasks' batches are functions of the step), and each places its devices'
    parts."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf  # already placed
        leaf = np.asarray(leaf)
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Places every leaf on all devices of ``mesh``."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """The state on ``mesh``: everything replicated, the carry split along its batch axis."""
    carry = state.carry
    state = replicate(state.replace(carry=None), mesh)
    return state.replace(carry=shard_batch(carry, mesh))


def shard_batch(batch, mesh: Mesh):
    """Splits every leaf's leading (batch) axis over the mesh's devices.

    Raises:
      ValueError: a leading axis that does not divide by the number of devices
        (:func:`pad_batch` first).
    """
    devices = mesh.devices.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % devices:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not divisible by the number of devices {devices}"
            )
    return _put(batch, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))


def pad_batch(batch: dict, multiple: int) -> dict:
    """``batch`` with its rows padded to a multiple of ``multiple``: padded rows repeat the last
    row and get weight 0 in ``batch["weights"]`` (ones for the real rows where the batch had
    none), so the task's weighted means (:func:`recur.train.state.batch_mean`) ignore them."""
    rows = len(next(iter(batch.values())))
    missing = -rows % multiple
    if not missing:
        return batch
    padded = {}
    for name, array in batch.items():
        array = np.asarray(array)
        tail = np.repeat(array[-1:], missing, axis=0)
        padded[name] = np.concatenate([array, tail])
    weights = np.asarray(batch.get("weights", np.ones(rows, np.float32)))
    pad_shape = (missing, *weights.shape[1:])
    padded["weights"] = np.concatenate([weights, np.zeros(pad_shape, weights.dtype)])
    return padded
