"""Compares cells on one probe over sequence lengths and seeds, at matched parameter counts.

  python -m experiments.compare.main --config=experiments/compare/config.py --workdir=/tmp/cmp

Writes ``results.json``, ``results.md`` and PNG plots to the workdir and prints the table.
Each grid point trains in its own sub-directory; rerunning skips finished points and resumes
an interrupted one from its checkpoint.
"""

import json
import pathlib

from absl import flags
from ml_collections import config_flags

from experiments.compare import config as compare_config
from experiments.compare import report
from experiments.probes import train
from recur.train import run_config
from recur.train.cli import run
from recur.train.sharding import is_writer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Compare config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for every grid point's run and the report.")
flags.mark_flags_as_required(["config", "workdir"])


def point_config(config, cell: str, T: int, seed: int):
    """The probe config of one grid point."""
    point = config.probe.copy_and_resolve_references()
    point.model.cell, point.task.T, point.seed = cell, T, seed
    point.model.block = compare_config.cell_blocks(config).get(cell, point.model.block)
    return point


def finished_point(config, workdir: pathlib.Path, cell: str, T: int, seed: int) -> dict | None:
    """The results of a grid point that finished under the same settings, else None."""
    point = point_config(config, cell, T, seed)
    point_dir = workdir / f"{point.task.name}_{cell}_T{T}_seed{seed}"
    finished = point_dir / "final_metrics.json"
    if not finished.exists():
        return None
    results = json.loads(finished.read_text())
    saved = json.loads((point_dir / "config.json").read_text())
    same = not run_config.config_changes(saved, run_config.as_dict(point))
    if not same or results["num_steps"] != point.num_steps:
        return None
    return {**results, "run_dir": point_dir.name}


def run_point(config, workdir: pathlib.Path, cell: str, T: int, seed: int) -> dict:
    """Trains one grid point, or loads its results if it already finished."""
    found = finished_point(config, workdir, cell, T, seed)
    if found is not None:
        print(f"skipping {found['run_dir']}: finished", flush=True)
        return found
    # Otherwise fit trains it, resumes it (more steps) or refuses other settings.
    point = point_config(config, cell, T, seed)
    point_dir = workdir / f"{point.task.name}_{cell}_T{T}_seed{seed}"
    print(f"== {point_dir.name}", flush=True)
    return {**train.train_and_evaluate(point, str(point_dir)), "run_dir": point_dir.name}


def finished_lengths(config, workdir: pathlib.Path):
    """``config`` narrowed to the lengths at which every cell and seed finished, and those
    points (``report_only``); one clear error when there is none."""
    found = {
        (T, cell, seed): finished_point(config, workdir, cell, T, seed)
        for T in config.lengths
        for cell in config.cells
        for seed in config.seeds
    }
    done = {key[0] for key in found} - {key[0] for key, value in found.items() if value is None}
    lengths = tuple(T for T in config.lengths if T in done)
    if not lengths:
        raise ValueError(
            f"report_only: no sequence length in {workdir} has every cell and seed finished"
        )
    narrowed = config.copy_and_resolve_references()
    narrowed.lengths = lengths
    points = [{**found[key], "seed": key[2]} for key in found if key[0] in lengths]
    print(f"report of the finished lengths {list(lengths)} (of {list(config.lengths)})",
          flush=True)  # fmt: skip
    return narrowed, points


def run_grid(config, workdir: str) -> str:
    """Trains (or loads) every grid point, then writes and returns the report's table; with
    ``config.report_only``, the report of the lengths whose points all finished, training
    nothing."""
    workdir = pathlib.Path(workdir)
    compare_config.cell_blocks(config)  # a malformed config.blocks fails before any training
    if config.get("report_only"):
        config, points = finished_lengths(config, workdir)
    else:
        points = [
            {**run_point(config, workdir, cell, T, seed), "seed": seed}
            for T in config.lengths
            for cell in config.cells
            for seed in config.seeds
        ]
    table = report.write(workdir, config, points) if is_writer() else ""
    print(table)
    return table


if __name__ == "__main__":
    run(run_grid)
