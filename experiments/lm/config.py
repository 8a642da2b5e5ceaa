"""Config of the language-modelling experiment (``experiments/lm/main.py``).

Variants (comma-separated): ``ptb_small`` (default), ``ptb_medium``, ``ptb_awd`` (the
AWD-LSTM regularisation toolkit at ptb_small's parameter budget, 4.65M), ``ptb_char``,
``shakespeare_char``, ``shakespeare_awd`` (shakespeare_char's model with the same toolkit),
``cell=rnn|lstm|gru``, ``smoke``.

  python -m experiments.lm.main --config=experiments/lm/config.py:ptb_small,cell=lstm \
      --workdir=/tmp/ptb_small_lstm
  python -m experiments.lm.sample --workdir=/tmp/ptb_small_lstm --prompt="the company said"

Expected results: Zaremba et al. (2014) report 120.7 valid / 114.5 test perplexity for the
``ptb_small`` LSTM and 86.2 / 82.7 for ``ptb_medium``; the README's language-modelling table has
what this code measured.
"""

import ml_collections
from ml_collections import config_dict

from recur.train import optim, variants

PTB = "../shared/data/ptb"
SHAKESPEARE = "../shared/data/tinyshakespeare/input.txt"
VARIANTS = (
    "ptb_small", "ptb_medium", "ptb_awd", "ptb_char", "shakespeare_char", "shakespeare_awd",
)  # fmt: skip
# ptb_small's SGD learning rate per cell (the largest of 1, 0.5, 0.2 that trained here).
PTB_SMALL_LR = {"lstm": 1.0, "gru": 0.5, "rnn": 0.2}
# ptb_awd's Adam learning rate per cell: 2e-3 saturates the tanh RNN's units within an epoch
# and it stays at the unigram's perplexity; 5e-4 learns (README; results/lm/ptb_awd_rnn_*).
PTB_AWD_LR = {"lstm": 2e-3, "gru": 2e-3, "rnn": 5e-4}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = variants.parse_variant(arg, names=VARIANTS, keys={"cell": str})
    variant = variants.choose_one(items, VARIANTS, "ptb_small")
    cell = items.get("cell", "lstm")

    config = ml_collections.ConfigDict()
    config.seed = 0
    config.variant = variant
    config.data = ml_collections.ConfigDict()
    # word: whitespace words + one <eos> per line (Mikolov's PTB); char: every character;
    # char_tokens: space-separated symbols + <eos> per line (PTB's ptb.char.* files).
    config.data.level = "word"
    # Local text files, plain or .gz. train_path may also be a directory holding *train*,
    # *valid*, *test* files (or one file to split). valid_path "": the last
    # 1 - train_fraction of the training text is held out. test_path "": valid is reported.
    config.data.train_path = f"{PTB}/ptb.train.txt"
    config.data.valid_path = f"{PTB}/ptb.valid.txt"
    config.data.test_path = f"{PTB}/ptb.test.txt"
    config.data.train_fraction = 0.9
    # tensorflow-datasets name used instead of the files when set (online users), e.g.
    # "tiny_shakespeare"; its splits train/validation/test, text in the "text" feature.
    config.data.tfds_name = ""

    config.model = ml_collections.ConfigDict()
    config.model.cell = cell
    config.model.embed_size = 200
    config.model.hidden_size = 200
    config.model.num_layers = 2
    # stack | residual (pre-norm residual blocks with a GLU, for mingru / minlstm / lru;
    # recur.models.Recurrent).
    config.model.block = "stack"
    # Dropout on the non-recurrent connections (embedding, between layers, before the softmax).
    config.model.dropout_rate = 0.0
    # The embedded inputs' and the last layer's outputs' rates, where they differ from
    # dropout_rate (None: dropout_rate).
    config.model.input_dropout = config_dict.placeholder(float)
    config.model.output_dropout = config_dict.placeholder(float)
    # One dropout mask per sequence and window, shared across time (Gal & Ghahramani 2016).
    config.model.variational_dropout = False
    # Whole word types dropped from the embedding per batch (Merity et al. 2018).
    config.model.embed_dropout = 0.0
    # Dropout on h_{t-1} in the recurrent matmul, one mask per sequence and window (Gal &
    # Ghahramani 2016); such layers train with autodiff of the scan, not recur.fused.
    config.model.recurrent_dropout = 0.0
    # DropConnect on the recurrent weight matrices, one mask per batch (Merity et al. 2018).
    config.model.weight_drop = 0.0
    # Output layer = embedding matrix; a linear projection maps hidden_size to embed_size
    # where they differ (Press & Wolf 2017; Inan et al. 2017).
    config.model.tie_embeddings = False
    # Every parameter drawn from U(-init_scale, init_scale) as in Zaremba et al.; 0 keeps the
    # cells' own initialisers (and the LSTM forget bias below).
    config.model.init_scale = 0.1
    config.model.activation = "tanh"
    config.model.recurrent_init = "orthogonal"
    config.model.forget_bias = 0.0
    config.model.gru_variant = "reset_after"
    # The hand-written backward pass of recur.fused (same gradients; see the README's speed
    # section). None: the library's default (fused on CPU, autodiff of the scan elsewhere);
    # false: autodiff everywhere (the records made before the fused default say which).
    config.model.fused = config_dict.placeholder(bool)

    # Streams per batch and truncated-BPTT window length.
    config.batch_size = 20
    config.bptt = 20
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. The split's step sums the gradients over the
    # devices; with a 10k-word softmax and small batches that costs what the split saves.
    # Measured side by side on 2 cores (benchmarks.train_speed; the split's tokens/s over one
    # device's, two runs): ptb_small 0.70-0.96 and ptb_medium 0.78-0.90 keep 1; ptb_awd (batch
    # 80 x BPTT 70) 1.10-1.18 with the LSTM and 1.16 with the GRU, ptb_char 1.19-1.32,
    # shakespeare_char 1.15-1.26 and shakespeare_awd 1.21-1.23 split (set below). Each device
    # draws its own dropout masks (weight drop and embedding dropout included): the records
    # made before these variants split ran on one device (README).
    config.num_devices = 1
    # Evaluation runs batch_size streams of the whole split with the state carried across
    # windows of eval_bptt tokens; 1 stream scores every token with its full left context.
    config.eval_batch_size = 1
    config.eval_bptt = 200
    # Loss summed over the window's time steps and averaged over the batch (Zaremba et al.'s
    # TensorFlow code; with SGD this scales the step by bptt); False: mean over tokens.
    config.sum_over_time = True
    config.num_epochs = 13
    # Derived from num_epochs (and evaluation/checkpoints every epoch) when -1.
    config.num_steps = -1
    # The learning rate is multiplied by optim.decay_factor from this epoch on (1-based) and
    # once more every epoch after; optim.decay_every/decay_start are derived from it.
    config.decay_from_epoch = 5
    # Zaremba et al.'s lr 1 is the LSTM's. In ptb_small the GRU did not settle at 1 and the
    # tanh RNN did not learn at 0.5 (README, results/lm/), so they start lower.
    config.optim = optim.default_config(
        name="sgd", learning_rate=PTB_SMALL_LR.get(cell, 1.0), schedule="step",
        decay_factor=0.5, clip_norm=5.0,
    )  # fmt: skip
    config.log_every = 200
    config.eval_every = -1
    config.checkpoint_every = 500

    if variant == "ptb_medium":
        config.optim.learning_rate = 1.0  # Zaremba et al.'s; not measured here for GRU or RNN
        config.model.embed_size = config.model.hidden_size = 650
        config.model.dropout_rate = 0.5
        config.model.init_scale = 0.05
        config.bptt = 35
        config.num_epochs = 39
        config.decay_from_epoch = 7
        config.optim.decay_factor = 0.8
    elif variant == "ptb_awd":
        # Merity et al. (2018)'s toolkit at ptb_small's budget: tied 200-d embeddings, two
        # 400-unit layers and a 400 -> 200 projection (4.33M parameters with the LSTM); their
        # dropout rates and weight drop, clipping 0.25, weight decay 1.2e-6 and the switch to
        # averaging (5 evaluations of patience); batch 80, BPTT 70. Adam, not their SGD at 30:
        # at this size SGD at 30 (and at 10) spiked to training losses of 15-62 within 60
        # steps, SGD at 5 stood at 7.0-7.3 after 100, Adam at 2e-3 reached 6.55 after 50
        # (Melis et al. 2018 tune Adam for their LSTM LMs).
        config.model.embed_size, config.model.hidden_size = 200, 400
        config.model.tie_embeddings = True
        config.model.variational_dropout = True
        config.model.dropout_rate = 0.25
        config.model.input_dropout = 0.4
        config.model.output_dropout = 0.4
        config.model.embed_dropout = 0.1
        config.model.weight_drop = 0.5
        config.model.init_scale = 0.05
        config.batch_size = 80
        config.bptt = 70
        config.sum_over_time = False
        config.num_epochs = 40
        config.decay_from_epoch = config.num_epochs + 1
        config.optim = optim.default_config(
            name="adam", learning_rate=PTB_AWD_LR.get(cell, 2e-3), clip_norm=0.25,
            weight_decay=1.2e-6, averaging=True, nonmono=5,
        )  # fmt: skip
        config.num_devices = 0
    elif variant in ("ptb_char", "shakespeare_char", "shakespeare_awd"):
        config.data.level = "char_tokens" if variant == "ptb_char" else "char"
        if variant == "ptb_char":
            config.data.train_path = f"{PTB}/ptb.char.train.txt.gz"
            config.data.valid_path = f"{PTB}/ptb.char.valid.txt.gz"
            config.data.test_path = f"{PTB}/ptb.char.test.txt.gz"
        else:
            config.data.train_path = SHAKESPEARE
            config.data.valid_path = config.data.test_path = ""
        config.model.embed_size = 64
        config.model.hidden_size = 256
        config.model.dropout_rate = 0.1
        config.model.init_scale = 0.0
        config.model.forget_bias = 1.0
        config.batch_size = 64
        config.bptt = 100
        config.eval_batch_size = 8
        config.eval_bptt = 500
        config.sum_over_time = False
        config.num_epochs = 10 if variant == "shakespeare_char" else 4
        config.decay_from_epoch = config.num_epochs + 1
        config.optim = optim.default_config(learning_rate=2e-3, clip_norm=5.0)
        config.num_devices = 0
        if variant == "shakespeare_awd":
            # Merity et al. (2018)'s character-level rates (locked dropout 0.1 on the
            # embeddings and the output, 0.25 between layers, no embedding dropout), weight
            # drop 0.3 (their 0.5 is for 1,000-unit layers), tied embeddings through a
            # 256 -> 64 projection, clipping 0.25, averaging after 5 evaluations without
            # improvement, three times shakespeare_char's epochs.
            config.model.variational_dropout = True
            config.model.dropout_rate = 0.25
            config.model.input_dropout = 0.1
            config.model.output_dropout = 0.1
            config.model.weight_drop = 0.3
            config.model.tie_embeddings = True
            config.num_epochs = 30
            config.decay_from_epoch = config.num_epochs + 1
            config.optim = optim.default_config(
                learning_rate=2e-3, clip_norm=0.25, averaging=True, nonmono=5
            )

    if "smoke" in items:
        config.data.train_path = f"{PTB}/ptb.valid.txt"
        config.data.valid_path = config.data.test_path = ""
        config.model.embed_size = config.model.hidden_size = 16
        config.batch_size = 4
        config.bptt = 8
        config.eval_batch_size = 2
        config.eval_bptt = 50
        config.num_epochs = 1
        config.num_steps = 6
        config.optim.learning_rate = 0.2
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
    return config
