"""Run outputs: ``metrics.jsonl``, TensorBoard event files (``recur.train.tensorboard``, no
TensorFlow) and a console progress line with step, loss, steps/s and ETA."""

import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from recur import files
from recur.train import tensorboard


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; a last line cut short by a crash mid-append is left out."""
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a JSON row") from None
    return rows


def to_python(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(np.asarray(value)) for name, value in metrics.items()}


class MetricWriter:
    """Writes ``{"step", "split", **metrics}`` rows to ``workdir/metrics.jsonl`` and TensorBoard.

    On resume from step ``s``, rows past ``s`` (written after the checkpoint the run restarts
    from) are dropped first, so the file describes one consistent run; in TensorBoard, a
    session start at step ``s + 1`` hides them.
    ``enabled=False`` (the processes of a multi-process run other than process 0) writes
    nothing.
    """

    def __init__(self, workdir: pathlib.Path, resumed_step: int = 0, enabled: bool = True):
        self.path, self.enabled, self.tensorboard = workdir / "metrics.jsonl", enabled, None
        if not enabled:  # a process of a multi-process run other than process 0
            return
        purge = None
        if self.path.exists():
            kept = [row for row in read_rows(self.path) if row["step"] <= resumed_step]
            files.write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
            purge = resumed_step + 1  # TensorBoard hides the earlier runs' events from here on
        self.tensorboard = tensorboard.EventWriter(workdir / "tensorboard", purge_step=purge)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, float]:
        values = to_python(metrics)
        if not self.enabled:
            return values
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self.tensorboard.scalars(step, {f"{split}/{name}": v for name, v in values.items()})
        return values

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """Console line ``step s/N | loss | metric | steps/s | ETA`` (measured between calls)."""

    def __init__(self, first_step: int, total_steps: int):
        self.total_steps = total_steps
        self.last_step, self.last_time = first_step, time.perf_counter()

    def line(self, step: int, metrics: dict[str, float], metric_name: str | None) -> str:
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        eta = (self.total_steps - step) / rate if rate > 0 else math.inf
        parts = [f"step {step}/{self.total_steps}", f"loss {metrics['loss']:.4f}"]
        if metric_name and metric_name in metrics and metric_name != "loss":
            parts.append(f"{metric_name} {metrics[metric_name]:.4f}")
        parts += [f"{rate:.1f} steps/s", f"ETA {format_seconds(eta)}"]
        text = " | ".join(parts)
        print(text, flush=True)
        return text


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
