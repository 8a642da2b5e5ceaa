"""What the speed benchmark and the step profiler share: the step of a recur layer, its inputs,
the config syntax and the machine record (no flags here, so both apps can import it)."""

import json
import os
import pathlib
import platform
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import recur
from recur import cells
from recur.train import malloc


def parse_config(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise ValueError(f"config {text!r} is not BxTxDxH with four positive integers")
    return values


def random_inputs(batch, length, inputs, hidden):
    """Fixed random ``xs [B, T, D]`` and output cotangent ``[B, T, H]`` (seed 0)."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((batch, length, inputs), np.float32))
    cotangent = jnp.asarray(rng.standard_normal((batch, length, hidden), np.float32))
    return xs, cotangent


def compile_step(loss_fn, params, xs, cotangent):
    """The compiled fwd+bwd of ``loss_fn(params, xs, cotangent)`` (gradients for params, xs)."""
    return jax.jit(jax.grad(loss_fn, argnums=(0, 1))).lower(params, xs, cotangent).compile()


def split_batch(loss_fn, params, xs, cotangent):
    """The step with the batch split over every JAX device (on CPU: one device per core, made
    with ``jax_num_cpu_devices``): ``jax.shard_map`` runs each device's part of the batch as a
    program of its own, and JAX sums the replicated params' gradients over the devices.

    Returns ``(grad_fn, params, xs, cotangent)``, the arrays placed on the devices.
    """
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    if xs.shape[0] % mesh.size:
        raise ValueError(f"batch {xs.shape[0]} does not split over {mesh.size} devices")
    grad_fn = jax.shard_map(
        jax.grad(loss_fn, argnums=(0, 1)), mesh=mesh,
        in_specs=(P(), P("batch"), P("batch")), out_specs=(P(), P("batch")),
    )  # fmt: skip
    place = lambda tree, spec: jax.device_put(tree, NamedSharding(mesh, spec))  # noqa: E731
    return grad_fn, place(params, P()), place(xs, P("batch")), place(cotangent, P("batch"))


def jax_step(loss_fn, params, xs, cotangent, split=False):
    """:func:`compile_step` timed; returns ``(run, compile_s, memory_bytes)`` where ``run()``
    executes one step and blocks until it is done. ``split``: the batch split over every
    device (:func:`split_batch`); the memory is then all devices' together."""
    started = time.perf_counter()
    if split:
        grad_fn, params, xs, cotangent = split_batch(loss_fn, params, xs, cotangent)
        compiled = jax.jit(grad_fn).lower(params, xs, cotangent).compile()
    else:
        compiled = compile_step(loss_fn, params, xs, cotangent)
    compile_seconds = time.perf_counter() - started
    memory = None
    analysis = compiled.memory_analysis()
    if analysis is not None:
        memory = int(
            analysis.argument_size_in_bytes + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
        ) * (jax.device_count() if split else 1)  # fmt: skip

    def run():
        jax.block_until_ready(compiled(params, xs, cotangent))

    return run, compile_seconds, memory


# The words of a recur implementation's name after "recur_" and the unroll options they set;
# words not given keep recur.unroll's backend defaults ("recur" alone: all defaults). "split"
# is not an unroll option: the batch is split over the devices (split_batch).
RECUR_VARIANT_WORDS = {
    "autodiff": ("fused", False),  # autodiff of the scan
    "fused": ("fused", True),  # recur.fused's hand-written backward
    "hoisted": ("hoist_projection", True),  # input matmul before the scan, for all steps
    "inside": ("hoist_projection", False),  # input matmul inside each step
    "remat": ("remat", True),
    "split": ("split", True),
    "sequential": ("scan_kind", "sequential"),  # jax.lax.scan over the cell's step
    "linear": ("scan_kind", "linear"),  # mingru, minlstm, lru: jax.lax.scan of s = a s + b
    "associative": ("scan_kind", "associative"),  # their jax.lax.associative_scan
}


def recur_options(variant: str) -> dict:
    """The options of a variant such as ``"fused_inside"`` ("": the defaults): ``recur.unroll``
    keywords, and ``split`` where the batch is split over the devices."""
    options = {}
    for word in filter(None, variant.split("_")):
        if word not in RECUR_VARIANT_WORDS:
            raise ValueError(f"unknown recur variant word {word!r} in {variant!r}")
        key, value = RECUR_VARIANT_WORDS[word]
        if key in options:
            raise ValueError(f"recur variant {variant!r} sets {key} twice")
        options[key] = value
    return options


def recur_impl(cell_name, batch, length, inputs, hidden, variant):
    cell = cells.get(cell_name, hidden)
    params = cell.init(jax.random.key(0), inputs)
    options = recur_options(variant)
    options.pop("split", None)  # how the step runs, not how it is written (jax_step)

    def loss_fn(params, xs, cotangent):
        ys, _ = recur.unroll(cell, params, xs, **options)
        return jnp.sum(ys * cotangent)

    return loss_fn, params


def write_json(path: pathlib.Path, report: dict) -> None:
    """Writes ``report`` whole or not at all (a temporary file renamed over ``path``)."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(path)


def _cpuinfo() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("" where there is none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return ""


def machine() -> dict:
    settings = os.environ.items()
    allocator = {k: v for k, v in settings if k in ("LD_PRELOAD", "GLIBC_TUNABLES")
                 or k.startswith("MALLOC_")}  # fmt: skip
    if malloc.settings_applied:
        allocator["mallopt"] = malloc.describe()
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or cpu_model(),
        # XLA:CPU compiles for the CPU's vector extensions: results and times differ with them.
        "avx512": "avx512f" in _cpuinfo(),
        "cpu_count": os.cpu_count(),
        "cpus_used": len(os.sched_getaffinity(0)),  # fewer under taskset or speed --cpus
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # float32 matmuls may run as TF32 on a GPU unless this says "highest".
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        # The allocator changes CPU timings (under glibc's defaults every step's large buffers
        # are fresh pages): record any preloaded allocator and malloc tuning, and whether
        # recur.train.malloc.reuse_freed_memory set glibc's options in this process.
        "allocator": allocator or "default (glibc malloc)",
    }
    try:
        import torch  # noqa: PLC0415

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["torch_cuda"] = torch.cuda.get_device_name()
            info["torch_cudnn"] = torch.backends.cudnn.version()
            info["torch_allow_tf32"] = {
                "matmul": torch.backends.cuda.matmul.allow_tf32,
                "cudnn": torch.backends.cudnn.allow_tf32,
            }
    except ImportError:
        pass
    return info
