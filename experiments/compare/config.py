"""Config of the cell comparison grid (``experiments/compare/main.py``): cells x sequence
lengths x seeds on one probe, at matched parameter counts.

Variants (config argument): empty (the README's main job), ``long`` (longer sequences and more
steps; run once, results in ``results/probes/``), ``modern`` (the six cells: rnn, lstm, gru
and the parallel-scan mingru, minlstm, lru in residual blocks, with the task's lengths from
``MODERN_LENGTHS``), ``smoke`` (seconds, for tests); plus any probe variant key, e.g.
``task=copy`` or ``steps=500``.

Command and expected result (README, measured on the 2-core CPU machine):
  python -m experiments.compare.main --config=experiments/compare/config.py \
      --workdir=/tmp/compare
  about 10 minutes; LSTM and GRU drive the adding-problem MSE far below the 1/6 baseline at
  every T, while the tanh RNN stays near it as T grows.
"""

import ml_collections

from experiments.probes import config as probe_config

CLASSIC_CELLS = ("rnn", "lstm", "gru")
MODERN_CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "lru")
# The ``modern`` grid's sequence lengths per task (MNIST: the fixed number of steps).
MODERN_LENGTHS = {
    "adding": (100, 400, 1000),
    "copy": (100, 200),
    "selective_copy": (64, 256),
    "mnist_rows": (28,),
    "mnist_sequential": (784,),
    "mnist_permuted": (784,),
}
GRID_ITEMS = ("long", "modern")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = [item for item in (arg or "").split(",") if item]
    long, modern = "long" in items, "modern" in items
    if long and modern:
        raise ValueError("config variants 'long' and 'modern' are mutually exclusive")
    probe_arg = ",".join(item for item in items if item not in GRID_ITEMS)
    variant = probe_config.parse_variant(probe_arg)
    config = ml_collections.ConfigDict()
    # The probe every grid point trains (experiments/probes/config.py); its model.cell,
    # model.block, task.T and seed are set per grid point.
    config.probe = probe_config.get_config(probe_arg)
    # Cells compared (the RNN uses probe.model.activation, tanh by default).
    config.cells = CLASSIC_CELLS
    # Block layout per cell where it differs from probe.model.block (cell=block, comma-
    # separated; e.g. "mingru=residual"): the parallel-scan cells are linear in their state
    # and need the residual block's nonlinearity between layers (recur.models.Recurrent).
    config.blocks = ""
    # Sequence lengths T.
    config.lengths = (25, 50, 100)
    # Seeds per (cell, T).
    config.seeds = (0,)
    # Write the report from the finished points alone, training nothing: the lengths at which
    # every cell and seed finished (a long grid's columns while the rest still trains).
    config.report_only = False
    if long:
        config.lengths = (100, 200, 400)
        config.probe.num_steps = 4000
        config.probe.eval_every = 500
    elif modern:
        config.cells = MODERN_CELLS
        config.blocks = "mingru=residual,minlstm=residual,lru=residual"
        config.lengths = MODERN_LENGTHS[config.probe.task.name]
        config.probe.num_steps = variant.get("steps", 3000)
        config.probe.eval_every = 500
    else:
        config.probe.num_steps = variant.get("steps", 1500)
        config.probe.eval_every = 250
    if "T" in variant:
        config.lengths = (variant["T"],)
    config.probe.checkpoint_every = 500
    if "smoke" in items:
        config.lengths = (4, 8) if "T" not in variant else (variant["T"],)
        config.probe.num_steps = 4
        config.probe.eval_every = 2
        config.probe.checkpoint_every = 2
    return config


def cell_blocks(config: ml_collections.ConfigDict) -> dict[str, str]:
    """``config.blocks`` as ``{cell: block}``; one clear error for a malformed entry."""
    blocks = {}
    for item in (item.strip() for item in config.blocks.split(",")):
        if not item:
            continue
        cell, sep, block = item.partition("=")
        if not sep or not cell or not block:
            raise ValueError(f"config.blocks: expected cell=block items, got {item!r}")
        blocks[cell.strip()] = block.strip()
    unknown = sorted(set(blocks) - set(config.cells))
    if unknown:
        raise ValueError(
            f"config.blocks names {', '.join(unknown)}, not in config.cells "
            f"({', '.join(config.cells)})"
        )
    return blocks
