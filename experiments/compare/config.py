"""Config of the cell comparison grid (``experiments/compare/main.py``): cells x sequence
lengths x seeds on one probe, at matched parameter counts.

Variants (config argument): empty (the README's main job), ``long`` (longer sequences and more
steps; run once, results in ``results/probes/``), ``smoke`` (seconds, for tests); plus any
probe variant key, e.g. ``task=copy`` or ``steps=500``.

Command and expected result (README, measured on the 2-core CPU machine):
  python -m experiments.compare.main --config=experiments/compare/config.py \
      --workdir=/tmp/compare
  about 10 minutes; LSTM and GRU drive the adding-problem MSE far below the 1/6 baseline at
  every T, while the tanh RNN stays near it as T grows.
"""

import ml_collections

from experiments.probes import config as probe_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = [item for item in (arg or "").split(",") if item]
    long = "long" in items
    probe_arg = ",".join(item for item in items if item != "long")
    config = ml_collections.ConfigDict()
    # The probe every grid point trains (experiments/probes/config.py); its model.cell,
    # task.T and seed are set per grid point.
    config.probe = probe_config.get_config(probe_arg)
    # Cells compared (the RNN uses probe.model.activation, tanh by default).
    config.cells = ("rnn", "lstm", "gru")
    # Sequence lengths T.
    config.lengths = (25, 50, 100)
    # Seeds per (cell, T).
    config.seeds = (0,)
    if long:
        config.lengths = (100, 200, 400)
        config.probe.num_steps = 4000
        config.probe.eval_every = 500
    else:
        config.probe.num_steps = probe_config.parse_variant(probe_arg).get("steps", 1500)
        config.probe.eval_every = 250
    config.probe.checkpoint_every = 500
    if "smoke" in items:
        config.lengths = (4, 8)
        config.probe.num_steps = 4
        config.probe.eval_every = 2
        config.probe.checkpoint_every = 2
    return config
