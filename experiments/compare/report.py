"""The comparison's outputs: ``results.json``, a Markdown table and PNG plots."""

import json
import pathlib
import sys

import numpy as np

from recur import files
from recur.train.metrics import read_rows


def eval_curve(run_dir: pathlib.Path, metric: str) -> list[tuple[int, float]]:
    rows = read_rows(run_dir / "metrics.jsonl")
    return [(row["step"], row[metric]) for row in rows if row["split"] == "eval"]


def eval_metrics(points: list[dict]) -> list[str]:
    """The task's metric, then its other eval metrics (``loss`` repeats the metric)."""
    metric = points[0]["metric"]
    others = sorted({name for p in points for name in p["eval"]} - {metric, "loss"})
    return [metric, *others]


def summarize(config, points: list[dict]) -> dict:
    """``{metric: {(cell, T): [final value per seed]}}``, the baselines per metric and T, and
    the training seconds per (cell, T)."""
    finals, baselines, seconds = {}, {}, {}
    for point in points:
        key = (point["cell"], point["T"])
        for metric in eval_metrics(points):
            finals.setdefault(metric, {}).setdefault(key, []).append(point["eval"][metric])
            baselines.setdefault(metric, {})[point["T"]] = point["baseline"].get(metric)
        seconds.setdefault(key, []).append(point.get("train_seconds_total"))
    return {
        "finals": finals,
        "baselines": baselines,
        "seconds": seconds,
        "metric": points[0]["metric"],
        "metrics": eval_metrics(points),
    }


def _format(values, digits: int = 4) -> str:
    values = np.array(values, dtype=float)
    text = f"{values.mean():.{digits}g}"
    if len(values) > 1:
        text += f" ± {values.std():.2g}"
    return text


def markdown_table(config, summary: dict, points: list[dict]) -> str:
    """One table per eval metric (the task's metric first), then the training time."""
    sizes = {p["cell"]: (p["hidden_size"], p["num_params"]) for p in points}
    blocks = {p["cell"]: p.get("block", "stack") for p in points}
    header = ["T"]
    for cell in config.cells:
        block = ", residual blocks" if blocks[cell] == "residual" else ""
        header.append(f"{cell} (H={sizes[cell][0]}, {sizes[cell][1]:,} params{block})")
    rule = "|" + "---|" * (len(header) + 1)
    lines = []
    for metric in summary["metrics"]:
        lines += [
            f"{config.probe.task.name}: final eval {metric} after {config.probe.num_steps} "
            f"steps (mean over seeds {list(config.seeds)}; ± std when more than one)",
            "",
            "| " + " | ".join([*header, "baseline"]) + " |",
            rule,
        ]
        for T in config.lengths:
            cells = [_format(summary["finals"][metric][(cell, T)]) for cell in config.cells]
            baseline = summary["baselines"][metric][T]
            baseline = "" if baseline is None else f"{baseline:.4g}"
            lines.append(f"| {T} | " + " | ".join(cells) + f" | {baseline} |")
        lines.append("")
    if all(s is not None for values in summary["seconds"].values() for s in values):
        lines += [
            "training seconds per grid point, resumed runs added up (evaluation and checkpoints "
            "included; this machine, which other work may have shared)",
            "",
            "| " + " | ".join(header) + " |",
            rule[: -len("---|")],
        ]
        for T in config.lengths:
            cells = [_format(summary["seconds"][(cell, T)], 3) for cell in config.cells]
            lines.append(f"| {T} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(workdir: pathlib.Path, config, summary: dict, points: list[dict]) -> None:
    # matplotlib only here: pyplot's import is about 1 s at every start of the comparison.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    metric = summary["metric"]
    log_scale = metric in ("mse", "cross_entropy")
    lengths = list(config.lengths)
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.4), squeeze=False)
    colors = {cell: f"C{i}" for i, cell in enumerate(config.cells)}
    for ax, T in zip(axes[0], lengths, strict=True):
        for point in points:
            if point["T"] != T:
                continue
            steps, values = zip(*eval_curve(workdir / point["run_dir"], metric), strict=True)
            label = point["cell"] if point["seed"] == config.seeds[0] else None
            ax.plot(steps, values, color=colors[point["cell"]], label=label, alpha=0.85)
        ax.axhline(summary["baselines"][metric][T], color="gray", linestyle="--", label="baseline")
        ax.set_title(f"{config.probe.task.name}, T = {T}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"eval {metric}")
        if log_scale:
            ax.set_yscale("log")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(workdir / "curves.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for cell in config.cells:
        means = [np.mean(summary["finals"][metric][(cell, T)]) for T in lengths]
        ax.plot(lengths, means, marker="o", color=colors[cell], label=cell)
    ax.plot(lengths, [summary["baselines"][metric][T] for T in lengths], "k--", label="baseline")
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(T) for T in lengths])
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"final eval {metric}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "final_vs_T.png", dpi=110)
    plt.close(fig)


def write(workdir: pathlib.Path, config, points: list[dict]) -> str:
    """Writes ``results.json``, ``results.md``, ``curves.png``, ``final_vs_T.png``; returns
    the Markdown table."""
    summary = summarize(config, points)
    table = markdown_table(config, summary, points)
    files.write_text(workdir / "results.md", table)
    record = {
        "command": " ".join(["python -m experiments.compare.main", *sys.argv[1:]]),
        "config": json.loads(config.to_json_best_effort()),
        "points": [
            {**point, "eval_curve": eval_curve(workdir / point["run_dir"], point["metric"])}
            for point in points
        ],
    }
    files.write_json(workdir / "results.json", record)
    plot(workdir, config, summary, points)
    return table
