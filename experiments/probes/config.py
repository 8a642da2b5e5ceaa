"""Config of the long-term-dependency probes (``experiments/probes/main.py``).

Variants, comma-separated in the config argument:
  ``task=adding|copy|selective_copy|mnist_sequential|mnist_permuted|mnist_rows``,
  ``cell=rnn|lstm|gru|mingru|minlstm|lru``,
  ``T=<sequence length>``, ``hidden=<hidden size>``, ``steps=<training steps>``, and ``smoke``
  (tiny and fast, for tests).

Command and expected result (measured on the 2-core CPU machine, see README):
  python -m experiments.probes.main \
      --config=experiments/probes/config.py:task=adding,cell=lstm,T=50 --workdir=/tmp/adding
  reaches an eval MSE far below the 1/6 baseline within 2,000 steps.
"""

import ml_collections
from ml_collections import config_dict

from recur.train import optim, variants

VARIANT_KEYS = {"task": str, "cell": str, "T": int, "hidden": int, "steps": int}


def parse_variant(arg: str | None) -> dict:
    """``"task=adding,cell=gru,smoke"`` -> ``{"task": "adding", "cell": "gru", "smoke": True}``."""
    return variants.parse_variant(arg, keys=VARIANT_KEYS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = parse_variant(arg)
    config = ml_collections.ConfigDict()
    # Seed of parameter init, data generation and dropout.
    config.seed = 0

    config.task = ml_collections.ConfigDict()
    # adding | copy | selective_copy | mnist_sequential | mnist_permuted | mnist_rows.
    config.task.name = variant.get("task", "adding")
    # Sequence length T of the adding problem, of the copy task's gap and of selective copying's
    # noisy part (MNIST: fixed by mode).
    config.task.T = variant.get("T", 50)
    # Directory of MNIST IDX files (train-* and t10k-*; only t10k-*: an 8k/2k split of them).
    config.task.mnist_dir = "../shared/data/mnist"
    # MNIST source: "local" (IDX files in mnist_dir) or "tfds" (downloads when online).
    config.task.mnist_source = "local"
    # Batches of generated data in the held-out evaluation set (adding, copies).
    config.task.eval_batches = 8

    config.model = ml_collections.ConfigDict()
    # Cell name: rnn | lstm | gru | mingru | minlstm | lru (recur.cells.available()).
    config.model.cell = variant.get("cell", "lstm")
    # Hidden size; with match_params it is the LSTM's, and other cells get the hidden size
    # that gives them about the LSTM's parameter count (Chung et al. 2014).
    config.model.hidden_size = variant.get("hidden", 128)
    config.model.match_params = True
    # Stacked recurrent layers.
    config.model.num_layers = 1
    # stack (layers feed each other) | residual (pre-norm residual blocks with a GLU, the LRU
    # paper's layout, for mingru / minlstm / lru; recur.models.Recurrent).
    config.model.block = "stack"
    # rnn only: tanh | relu | leaky_relu | sigmoid.
    config.model.activation = "tanh"
    # Recurrent weight initialiser (orthogonal; "identity" with relu gives the IRNN).
    config.model.recurrent_init = "orthogonal"
    # lstm only: initial forget-gate bias.
    config.model.forget_bias = 1.0
    # gru only: reset_after (cuDNN/flax) | reset_before (Cho et al. 2014).
    config.model.gru_variant = "reset_after"
    # lru only: the ring of the initial eigenvalues' moduli and their phases' range.
    config.model.lru_r_min = 0.0
    config.model.lru_r_max = 1.0
    config.model.lru_max_phase = 6.283185307179586
    # Embedding size of the copy tasks' symbols.
    config.model.embed_size = 16
    # Rematerialise each step in the backward pass (long sequences).
    config.model.remat = False
    # The hand-written backward pass of recur.fused (same gradients; see the README's speed
    # section). None: the library's default (fused on CPU, autodiff of the scan elsewhere);
    # false: autodiff everywhere (the records made before the fused default say which).
    config.model.fused = config_dict.placeholder(bool)

    # Examples per training step (a size that does not divide by the devices trains on fewer).
    config.batch_size = 64
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. The adding points train 1.5-2.1x faster split
    # (README, Training speed).
    config.num_devices = 0
    # Training steps.
    config.num_steps = variant.get("steps", 2000)
    # Optimizer, schedule and clipping: see recur/train/optim.py.
    config.optim = optim.default_config()

    # Periodic work, in steps; each also fires on the last step.
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500

    if variant.get("smoke"):
        config.task.T = variant.get("T", 6)
        config.model.hidden_size = variant.get("hidden", 8)
        config.model.embed_size = 4
        config.task.eval_batches = 2
        config.batch_size = 8
        config.num_steps = variant.get("steps", 6)
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
    return config
