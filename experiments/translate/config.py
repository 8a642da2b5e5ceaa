"""Config of the translation experiment (``experiments/translate/main.py``): an encoder-decoder
of any cell with or without attention on the Tatoeba English-French pairs.

Variants, comma-separated in the config argument: ``tutorial`` (the PyTorch seq2seq
tutorial's subset: both sides shorter than 10 tokens, English starting with "i am", "he is",
... and their contractions; French to English), ``full`` (every pair up to
``data.max_tokens`` tokens a side), ``cell=rnn|lstm|gru``,
``attention=none|bahdanau|luong_dot|luong_general``, ``direction=fr-en|en-fr``, ``smoke``.

Commands (README, measured on the 2-core CPU machine):
  python -m experiments.translate.main --config=experiments/translate/config.py:tutorial \
      --workdir=/tmp/translate_tutorial
  python -m experiments.translate.translate --workdir=/tmp/translate_tutorial \
      "je suis très fatigué ."
Expected: test BLEU far above the model without attention
(``--config=experiments/translate/config.py:tutorial,attention=none``); the README's table
has what this code measured.
"""

import ml_collections

from recur.train import optim, variants

DATA = "../shared/data/eng_fra/fra.txt.gz"
ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = variants.parse_variant(
        arg, names=("tutorial", "full"),
        keys={"cell": str, "attention": str, "direction": str},
    )  # fmt: skip
    variant = variants.choose_one(items, ("tutorial", "full"), "tutorial")
    config = ml_collections.ConfigDict()
    # Seed of parameter init, the split, batch order and dropout.
    config.seed = 0
    config.variant = variant

    config.data = ml_collections.ConfigDict()
    # English<TAB>French pairs, plain or .gz (extra columns ignored).
    config.data.path = DATA
    # fr-en: French source, English target (the tutorial's direction) | en-fr.
    config.data.direction = items.get("direction", "fr-en")
    # tutorial | full (see the module docstring).
    config.data.subset = variant
    # full: pairs with more tokens than this on either side are left out.
    config.data.max_tokens = 15
    # Normalisation (recur.data.translation.tokenize): lower-case; strip accents (é -> e).
    config.data.lowercase = True
    config.data.strip_accents = False
    # Held-out shares of the distinct source sentences (a seeded split by source sentence:
    # every translation of a test sentence is in test).
    config.data.valid_fraction = 0.05
    config.data.test_fraction = 0.05
    # Tokens seen fewer times in the training split become <unk>.
    config.data.min_count = 1 if variant == "tutorial" else 2

    config.model = ml_collections.ConfigDict()
    # rnn | lstm | gru, for the encoder and the decoder.
    config.model.cell = items.get("cell", "gru")
    config.model.embed_size = 256
    config.model.hidden_size = 256
    config.model.num_layers = 1
    # stack | residual (encoder and decoder: pre-norm residual blocks with a GLU, for
    # mingru / minlstm / lru stacks; recur.models.Recurrent).
    config.model.block = "stack"
    # none | bahdanau | luong_dot | luong_general (recur.models.Seq2Seq).
    config.model.attention = items.get("attention", "bahdanau")
    config.model.attention_size = 256
    config.model.bidirectional_encoder = False
    # On embeddings, between layers and before the output layer.
    config.model.dropout_rate = 0.1
    config.model.forget_bias = 1.0
    config.model.activation = "tanh"
    config.model.gru_variant = "reset_after"
    config.model.recurrent_init = "orthogonal"

    config.decode = ml_collections.ConfigDict()
    # Beam width and GNMT length-penalty exponent (0: raw log-probabilities).
    config.decode.beam_size = 5
    config.decode.alpha = 0.6
    # A hypothesis ends by ceil(ratio * source tokens) + extra tokens (and the target cap).
    config.decode.max_length_ratio = 1.5
    config.decode.max_length_extra = 5
    # Test sentences drawn as attention heatmaps, and written as samples.
    config.decode.num_plots = 4
    config.decode.num_samples = 40

    config.batch_size = 64
    # Training length in epochs; num_steps -1 derives it from them.
    # tutorial: valid perplexity is lowest near epoch 10 (3.43), then rises as it overfits.
    config.num_epochs = 10 if variant == "tutorial" else 3
    config.num_steps = -1
    config.optim = optim.default_config(learning_rate=1e-3, clip_norm=1.0)
    config.log_every = 100
    # -1: once per epoch.
    config.eval_every = -1
    config.checkpoint_every = -1
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. 1: split measured 0.85x one device's steps/s here
    # (tutorial, batch 64, 2 cores, six alternating rounds of 10 steps).
    config.num_devices = 1

    if "smoke" in items:
        config.model.embed_size = config.model.hidden_size = 16
        config.model.attention_size = 16
        config.batch_size = 8
        config.num_epochs = 1
        config.num_steps = 6
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
        config.decode.beam_size = 2
        config.decode.num_plots = 1
        config.decode.num_samples = 5
    return config
