"""Tables, JSON and plots of :mod:`benchmarks.gradient_flow`."""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FLAG_NAMES = (
    "cells", "lengths", "hidden_size", "input_size", "batch_size", "seeds",
    "input_distribution", "input_scale", "jacobian_examples", "checkpoint",
)  # fmt: skip


def to_json(tree):
    """NumPy arrays to lists of 6-digit floats; -inf (underflow) to None; the per-unit gate
    means (plotted as heatmaps, [T, H] each) are left out to keep the file small."""
    if isinstance(tree, dict):
        return {str(k): to_json(v) for k, v in tree.items() if k != "mean_per_unit"}
    if isinstance(tree, np.ndarray):
        return to_json(tree.tolist())
    if isinstance(tree, list | tuple):
        return [to_json(v) for v in tree]
    if isinstance(tree, float):
        return float(f"{tree:.6g}") if np.isfinite(tree) else None
    return tree


def table_row(summary: dict) -> str:
    decay = summary["decay_decades_per_step"]
    memory = summary["effective_memory"]
    T = len(summary["log10_grad_norm_h"])
    memory_text = f"{memory}" if memory is not None else f"> {T - 1}"
    return (
        f"decay {decay:+.4f} decades/step (x{10**decay:.4f} per step) | "
        f"effective memory {memory_text} steps"
    )


def table(results: dict) -> str:
    lines = [
        "| cell | T | decay of log10 ‖dL/dh_t‖ per step | factor per step | effective memory |",
        "|---|---|---|---|---|",
    ]
    for spec, by_length in results.items():
        for T, summary in by_length.items():
            decay, memory = summary["decay_decades_per_step"], summary["effective_memory"]
            memory_text = str(memory) if memory is not None else f"> {T - 1}"
            lines.append(f"| {spec} | {T} | {decay:+.4f} | {10**decay:.4f} | {memory_text} |")
    return "\n".join(lines)


def _panels(results: dict, key: str, ylabel: str, path: pathlib.Path, by_lag: bool) -> None:
    lengths = sorted({T for by_length in results.values() for T in by_length})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.6 * len(lengths), 3.2), squeeze=False)
    for ax, T in zip(axes[0], lengths, strict=True):
        for i, (spec, by_length) in enumerate(results.items()):
            if T not in by_length:
                continue
            values = np.asarray(by_length[T][key], np.float64)
            lags = np.arange(len(values))
            if not by_lag:  # time order -> lag order
                values = values[::-1]
            values = np.where(np.isfinite(values), values, np.nan)  # underflow: a gap
            ax.plot(lags, values, color=f"C{i}", label=spec)
        ax.set_title(f"T = {T}")
        ax.set_xlabel("lag T - t")
        ax.set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gates(results: dict, out: pathlib.Path) -> None:
    for spec, by_length in results.items():
        T = max(by_length)
        gates = by_length[T].get("gates")
        if not gates:
            continue
        fig, axes = plt.subplots(len(gates), 1, figsize=(8, 2.2 * len(gates)), squeeze=False)
        for ax, (gate, stats) in zip(axes[:, 0], gates.items(), strict=True):
            image = ax.imshow(
                np.asarray(stats["mean_per_unit"]).T, aspect="auto", vmin=0, vmax=1,
                cmap="viridis", interpolation="nearest",
            )  # fmt: skip
            saturated = np.mean(stats["saturated"])
            ax.set_title(f"{spec}, {gate} gate (mean over batch; saturated {saturated:.1%})")
            ax.set_ylabel("unit")
            fig.colorbar(image, ax=ax)
        axes[-1, 0].set_xlabel("time step")
        fig.tight_layout()
        fig.savefig(out / f"gates_{spec.replace(':', '_')}_T{T}.png", dpi=100)
        plt.close(fig)


def plot(out: pathlib.Path, results: dict) -> None:
    """``gradient_norms.png``, ``jacobian_products.png``, ``gates_<cell>_T<T>.png``."""
    _panels(results, "log10_grad_norm_h", "log10 ‖dL/dh_t‖", out / "gradient_norms.png", False)
    _panels(results, "log10_product_spectral", "log10 ‖dh_T/dh_t‖₂", out / "jacobian_products.png",
            True)  # fmt: skip
    _gates(results, out)
