"""Gradient flow across sequence lengths: ||dL/dh_t|| against lag, Jacobian products, gates.

  python -m benchmarks.gradient_flow --cells=rnn,lstm,gru --lengths=10,30,100,300,1000 \
      --out=/tmp/gradient_flow

At initialisation (default) the loss is a fixed random linear readout of the final hidden
state; with ``--checkpoint=WORKDIR`` of an ``experiments.probes`` run, the trained cell and head
are measured on that probe's own data and loss at each requested length. Writes
``gradient_flow.json`` and PNG plots to ``--out`` and prints, per cell and T, the fitted decay
rate of ``||dL/dh_t||`` per step and the effective memory: the lag at which the norm falls
below 1e-6 of its value at the last step.

Cell specs: any registered name (``rnn``, ``lstm``, ``gru``, ``mingru``, ``minlstm``, ``lru``),
the aliases ``rnn_relu``, ``irnn`` (relu + identity init, Le et al. 2015) and
``gru_reset_before``, or ``name:option=value:...`` (e.g. ``lstm:forget_bias=0``,
``lru:r_min=0.9:r_max=0.999``).
"""

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import gradient_flow_report as report
from recur import cells, diagnostics
from recur.train import quiet_logs

ALIASES = {
    "rnn_relu": ("rnn", {"activation": "relu"}),
    "irnn": ("rnn", {"activation": "relu", "recurrent_init": "identity"}),
    "gru_reset_before": ("gru", {"variant": "reset_before"}),
}

FLAGS = flags.FLAGS
flags.DEFINE_list("cells", ["rnn", "lstm", "gru"], "Cell specs (see the module docstring).")
flags.DEFINE_list("lengths", ["10", "30", "100", "300", "1000"], "Sequence lengths T.")
flags.DEFINE_string("out", None, "Output directory for gradient_flow.json and plots.")
flags.DEFINE_integer("hidden_size", 64, "Hidden size of every cell (at initialisation).")
flags.DEFINE_integer("input_size", 8, "Input features (at initialisation).")
flags.DEFINE_integer("batch_size", 16, "Sequences per measurement.")
flags.DEFINE_list("seeds", ["0"], "Seeds (params and inputs); results are averaged over them.")
flags.DEFINE_enum("input_distribution", "normal", ["normal", "uniform", "zeros"], "Inputs x_t.")
flags.DEFINE_float("input_scale", 1.0, "Standard deviation (normal) or half-width (uniform).")
flags.DEFINE_integer("jacobian_examples", 2, "Trajectories whose Jacobian products are taken.")
flags.DEFINE_string("checkpoint", None, "Workdir of a trained experiments.probes run.")
flags.mark_flag_as_required("out")


def parse_cell(spec: str) -> tuple[str, dict]:
    """``"lstm:forget_bias=0"`` -> ``("lstm", {"forget_bias": 0.0})``; aliases expanded."""
    name, *options = spec.split(":")
    base, parsed = ALIASES.get(name, (name, {}))
    parsed = dict(parsed)
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"cell option {option!r} in {spec!r} must look like key=value")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        parsed[key] = value
    return base, parsed


def random_inputs(key, batch_size: int, num_steps: int, input_size: int) -> jax.Array:
    shape = (batch_size, num_steps, input_size)
    if FLAGS.input_distribution == "normal":
        return FLAGS.input_scale * jax.random.normal(key, shape)
    if FLAGS.input_distribution == "uniform":
        return jax.random.uniform(key, shape, minval=-FLAGS.input_scale, maxval=FLAGS.input_scale)
    return jnp.zeros(shape)


def init_setup(spec: str, num_steps: int, seed: int):
    """Cell, params, inputs and loss at initialisation: a random readout of the final h."""
    name, options = parse_cell(spec)
    cell = cells.get(name, FLAGS.hidden_size, **options)
    k_params, k_inputs, k_readout = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_params, FLAGS.input_size)
    xs = random_inputs(k_inputs, FLAGS.batch_size, num_steps, FLAGS.input_size)
    readout = jax.random.normal(k_readout, (FLAGS.hidden_size,)) / np.sqrt(FLAGS.hidden_size)

    def loss_fn(outputs, final):
        del outputs
        return jnp.sum(final.h @ readout)

    return cell, params, xs, loss_fn


def measure(cell, params, xs, loss_fn) -> dict:
    """Every diagnostic of one (cell, T, seed), as NumPy arrays indexed by time step or lag."""
    _, grads = jax.jit(
        lambda p, x: diagnostics.state_grads_per_step(cell, p, x, loss_fn)
    )(params, xs)  # fmt: skip
    norms = {f: np.asarray(v) for f, v in diagnostics.grad_norms_per_step(grads).items()}
    examples = xs[: FLAGS.jacobian_examples]
    jacobians = jax.jit(lambda p, x: diagnostics.one_step_jacobians(cell, p, x))(params, examples)
    products = jax.jit(jax.vmap(diagnostics.jacobian_product_norms))(jacobians)
    one_step = jax.jit(diagnostics.spectral_norm)(jacobians)  # [E, T]
    result = {
        "grad_norms": norms,  # field -> [B, T]
        "product_spectral": np.asarray(products["spectral"]),  # [E, T] by lag
        "product_frobenius": np.asarray(products["frobenius"]),
        "one_step_spectral": np.asarray(one_step),  # [E, T] by time step
    }
    if cell.gates is not None:
        stats = jax.jit(lambda p, x: diagnostics.gate_statistics(cell, p, x))(params, xs)
        result["gates"] = jax.tree.map(np.asarray, stats)
    return result


def median_log10(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median over ``axis`` of log10 (the typical example: one example whose gradient is
    exactly 0, e.g. all ReLUs off at a step, does not make the summary -inf; where most are
    0, as after float32 underflow, it is -inf and plots as a gap)."""
    with np.errstate(divide="ignore"):
        return np.median(np.log10(np.asarray(values, np.float64)), axis=axis)


def summarize(runs: list[dict]) -> dict:
    """Medians over seeds and examples in log10 space; fits decay and effective memory."""

    def stacked(key):
        return np.concatenate([r[key] for r in runs])

    log_h = median_log10(np.concatenate([r["grad_norms"]["h"] for r in runs]))  # [T]
    norms_h = 10.0**log_h
    summary = {
        "log10_grad_norm_h": log_h,
        "log10_product_spectral": median_log10(stacked("product_spectral")),
        "log10_product_frobenius": median_log10(stacked("product_frobenius")),
        "one_step_spectral_mean": np.mean(stacked("one_step_spectral"), 0),
        "decay_decades_per_step": diagnostics.fit_decay_rate(norms_h),
        "effective_memory": diagnostics.effective_memory(norms_h),
    }
    if "c" in runs[0]["grad_norms"]:
        summary["log10_grad_norm_c"] = median_log10(
            np.concatenate([r["grad_norms"]["c"] for r in runs])
        )
    if "gates" in runs[0]:
        summary["gates"] = {
            gate: {key: np.mean([r["gates"][gate][key] for r in runs], 0) for key in values}
            for gate, values in runs[0]["gates"].items()
        }
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = [int(T) for T in FLAGS.lengths]
    seeds = [int(s) for s in FLAGS.seeds]
    try:
        if any(T < 2 for T in lengths):
            raise ValueError(f"--lengths must all be >= 2, got {lengths}")
        if FLAGS.checkpoint:
            from benchmarks import gradient_flow_trained  # noqa: PLC0415

            setups = gradient_flow_trained.setups(FLAGS.checkpoint, lengths, seeds)
        else:
            setups = {
                spec: {T: [init_setup(spec, T, seed) for seed in seeds] for T in lengths}
                for spec in FLAGS.cells
            }
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    results, started = {}, time.perf_counter()
    for spec, by_length in setups.items():
        for T, runs in by_length.items():
            summary = summarize([measure(*setup) for setup in runs])
            results.setdefault(spec, {})[T] = summary
            print(f"{spec:>16} T={T:<5} {report.table_row(summary)}", flush=True)
    record = {
        "command": " ".join(["python -m benchmarks.gradient_flow", *sys.argv[1:]]),
        "flags": {name: FLAGS[name].value for name in report.FLAG_NAMES},
        "seconds": time.perf_counter() - started,
        "backend": jax.default_backend(),
        "results": results,
    }
    (out / "gradient_flow.json").write_text(json.dumps(report.to_json(record), indent=1) + "\n")
    report.plot(out, results)
    print(report.table(results))


if __name__ == "__main__":
    app.run(main)
