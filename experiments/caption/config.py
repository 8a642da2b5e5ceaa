"""Config of the captioning experiment (``experiments/caption/main.py``): strips of 1-4 MNIST
digits captioned by an image encoder and a recurrent decoder (one-to-many).

Variants, comma-separated in the config argument: ``digits`` (default: one word per digit,
"seven three one") or ``number`` (the number in English, "seven hundred thirty one"),
``cell=rnn|lstm|gru``, ``encoder=mlp|cnn``, ``smoke``.

Commands (README, measured on the 2-core CPU machine):
  python -m experiments.caption.main --config=experiments/caption/config.py:number,cell=gru \
      --workdir=/tmp/caption_number_gru
  python -m experiments.caption.predict --workdir=/tmp/caption_number_gru --index=0
Expected: held-out exact-match caption accuracy far above the most-frequent-caption baseline
(2.4% on the test strips); the README's table has what this code measured for each cell and caption.
"""

import ml_collections

from recur.data.captions import CAPTIONS
from recur.models.captioner import ENCODERS
from recur.train import optim, variants

MNIST = "../shared/data/mnist"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = variants.parse_variant(
        arg, names=CAPTIONS, keys={"cell": str, "encoder": str}
    )  # fmt: skip
    caption = variants.choose_one(items, CAPTIONS, "digits")
    config = ml_collections.ConfigDict()
    # Seed of parameter init, the strips (training batches and held-out sets) and dropout.
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # A directory of MNIST IDX files (plain or .gz): the four standard files give the 60k/10k
    # split; the 10k test pair alone gives the probes' split (first 8,000 / last 2,000).
    config.data.mnist_dir = MNIST
    # digits | number (see the module docstring).
    config.data.caption = caption
    # Digits per strip, uniform in [min_digits, max_digits] (max 4).
    config.data.min_digits = 1
    config.data.max_digits = 4
    # Share of the training digit images kept for validation strips only.
    config.data.valid_fraction = 0.1
    # Held-out strips: validation (learning curve) and test (the reported results).
    config.data.num_valid = 1000
    config.data.num_test = 2000

    config.model = ml_collections.ConfigDict()
    # mlp | cnn (recur.models.ImageEncoder).
    config.model.encoder = items.get("encoder", "cnn")
    # Channels of each 3x3, stride-2 convolution (cnn).
    config.model.encoder_channels = (16, 32)
    # Hidden layer of the mlp encoder.
    config.model.encoder_hidden_size = 256
    # Image features: they set the decoder's initial state through tanh(Dense).
    config.model.features = 128
    # Also feed the projected features at every decoder step.
    config.model.feed_context = False
    # rnn | lstm | gru (the decoder).
    config.model.cell = items.get("cell", "gru")
    config.model.embed_size = 32
    config.model.hidden_size = 128
    config.model.num_layers = 1
    # stack | residual (the decoder: pre-norm residual blocks with a GLU, for mingru / minlstm /
    # lru stacks; recur.models.Recurrent).
    config.model.block = "stack"
    # On the decoder's inputs and before its output layer.
    config.model.dropout_rate = 0.1
    config.model.forget_bias = 1.0
    config.model.activation = "tanh"
    config.model.gru_variant = "reset_after"
    config.model.recurrent_init = "orthogonal"

    config.decode = ml_collections.ConfigDict()
    # Beam width and GNMT length-penalty exponent (0: raw log-probabilities).
    config.decode.beam_size = 3
    config.decode.alpha = 0.0
    # Held-out strips drawn in samples.png.
    config.decode.num_samples = 24

    config.batch_size = 64
    config.num_steps = 6000
    config.optim = optim.default_config(
        learning_rate=2e-3, clip_norm=1.0, schedule="warmup_cosine", warmup_steps=200
    )
    config.log_every = 100
    config.eval_every = 500
    config.checkpoint_every = 500
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. 1: split measured 0.89-1.03x one device's
    # strips/s here (number, GRU, 800 steps, two alternating rounds).
    config.num_devices = 1

    if config.model.encoder not in ENCODERS:
        raise ValueError(
            f"unknown encoder {config.model.encoder!r}; available: {', '.join(ENCODERS)}"
        )
    if "smoke" in items:
        config.data.num_valid = 40
        config.data.num_test = 40
        config.model.encoder_channels = (4,)
        config.model.features = config.model.hidden_size = 16
        config.model.embed_size = 8
        config.batch_size = 8
        config.num_steps = 6
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
        config.decode.beam_size = 2
        config.decode.num_samples = 6
    return config
