"""Run by tests/test_scan.py in a process of its own (it needs two JAX CPU devices before JAX
starts): recur.unroll inside ``jax.shard_map`` with the batch split over the devices gives the
single-device gradients, and sums the params' gradient over the devices once, after the scan.

Prints one JSON line: {"max_error": ..., "cases": ..., "all_reduce_in_loops": ...}.
"""

import json
import re

import jax

jax.config.update("jax_num_cpu_devices", 2)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import recur  # noqa: E402
from recur import cells  # noqa: E402

B, T, D, H = 4, 5, 3, 6


def all_reduce_in_loops(hlo: str) -> int:
    """How many all-reduce ops sit in the body of a while loop of the compiled HLO."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    count, current = 0, None
    for line in hlo.splitlines():
        header = re.match(r"%?([\w.\-]+) \(.*\) -> .* \{$", line)
        if header:
            current = header.group(1)
        elif " all-reduce(" in line and current in bodies:
            count += 1
    return count


def main():
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((B, T, H)), jnp.float32)
    lengths = jnp.array([5, 3, 4, 1])
    errors, in_loops, cases = [], 0, 0
    for name in ("lstm", "gru", "rnn"):
        cell = cells.get(name, H)
        params = cell.init(jax.random.key(0), D)
        # Both backward passes forward in time, and the fused one in reverse.
        for fused, options in ((True, {}), (False, {}), (True, {"reverse": True})):

            def loss(params, xs, cotangent, lengths, options=options, cell=cell, fused=fused):
                ys, final = recur.unroll(
                    cell, params, xs, seq_lengths=lengths, fused=fused, **options
                )
                return jnp.sum(ys * cotangent) + jnp.sum(final.h)

            grad = jax.grad(loss, argnums=(0, 1))
            split = jax.jit(jax.shard_map(
                grad, mesh=mesh, in_specs=(P(), P("batch"), P("batch"), P("batch")),
                out_specs=(P(), P("batch")),
            ))  # fmt: skip
            compiled = split.lower(params, xs, cotangent, lengths).compile()
            expected = jax.jit(grad)(params, xs, cotangent, lengths)
            got = compiled(params, xs, cotangent, lengths)
            errors += [
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True)
            ]
            in_loops += all_reduce_in_loops(compiled.as_text())
            cases += 1
    print(json.dumps({"max_error": max(errors), "cases": cases, "all_reduce_in_loops": in_loops}))


if __name__ == "__main__":
    main()
