"""Config of the sentiment experiment (``experiments/sentiment/main.py``).

Variants (comma-separated): ``sst2`` (default) or ``imdb``, ``cell=rnn|lstm|gru``,
``bidirectional=true|false``, ``flax`` (the flax sst2 example's recipe: attention pooling, a
tanh hidden layer in the head, word dropout 0.1, SGD 0.1 with momentum 0.9 and an L2 penalty
of 3e-6, 10 epochs), ``smoke``.

  python -m experiments.sentiment.main --config=experiments/sentiment/config.py:sst2,cell=lstm \
      --workdir=/tmp/sst2_lstm

Expected results: the README's sentiment table (dev accuracy on SST-2, test accuracy on IMDB).
"""

import ml_collections
from ml_collections import config_dict

from recur.train import optim, variants

DATASETS = {
    # name: (train, dev, test, text column, label column); dev "" holds out dev_fraction of train.
    "sst2": ("../shared/data/sst2/train.tsv", "../shared/data/sst2/dev.tsv", "",
             "sentence", "label"),
    "imdb": ("../shared/data/imdb/imdb_train.csv.gz", "", "../shared/data/imdb/imdb_test.csv.gz",
             "text", "label"),
}  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    items = variants.parse_variant(
        arg, names=("sst2", "imdb", "flax"), keys={"cell": str, "bidirectional": bool}
    )
    dataset = variants.choose_one(items, ("sst2", "imdb"), "sst2")
    train, dev, test, text_column, label_column = DATASETS[dataset]
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict()
    # Dataset name (for the record) and local files: TSV (unquoted, GLUE) or CSV, plain or .gz,
    # with a header row; any file with a text and a 0/1 label column works.
    config.data.name = dataset
    config.data.train_path = train
    # Dev split file; "" holds out dev_fraction of the training file (seeded).
    config.data.dev_path = dev
    config.data.dev_fraction = 0.1
    # Test split file; "": no test split (results.json has test: null and the dev accuracy is
    # the result, as is usual for SST-2, whose GLUE test labels are hidden).
    config.data.test_path = test
    config.data.text_column = text_column
    config.data.label_column = label_column
    # tensorflow-datasets name used instead of the files when set (online users):
    # "glue/sst2" or "imdb_reviews".
    config.data.tfds_name = ""
    # Vocabulary from the training split: minimum count and maximum size (with <pad>, <unk>).
    config.data.min_count = 1
    config.data.max_vocab = 20000
    # Tokens kept per text (the rest is cut; counted in the log).
    config.data.max_length = 400 if dataset == "imdb" else 100
    # Batches are padded to their longest text rounded up to a multiple of this (at most
    # max_length). Each padded length compiles its own training, evaluation and prediction
    # programs (seconds each on a CPU), so coarser rounding trades a little padded compute for
    # fewer compilations. Padding changes no loss or gradient (masked steps leave the state as
    # it was), but dropout masks are drawn for the padded shape: other rounding, other masks.
    config.data.length_multiple = 32 if dataset == "imdb" else 8
    # Optional GloVe-format word vectors (text file) to initialise the embedding.
    config.data.glove_path = ""

    config.model = ml_collections.ConfigDict()
    config.model.cell = items.get("cell", "lstm")
    config.model.bidirectional = items.get("bidirectional", False)
    config.model.embed_size = 300 if dataset == "sst2" else 128
    config.model.hidden_size = 256 if dataset == "sst2" else 128
    config.model.num_layers = 1
    # last | mean | max | attention.
    config.model.pooling = "last"
    # Units of the attention pooling's scoring layer.
    config.model.attention_size = 64
    # 0: a linear classifier; > 0: a tanh hidden layer of this size with dropout first.
    config.model.head_hidden_size = 0
    # Dropout on embeddings, between layers and before the classifier.
    config.model.dropout_rate = 0.5
    # Word dropout in training: each token becomes <unk> with this probability (flax sst2).
    config.model.word_dropout_rate = 0.0
    config.model.activation = "tanh"
    config.model.recurrent_init = "orthogonal"
    config.model.forget_bias = 1.0
    config.model.gru_variant = "reset_after"
    # The hand-written backward pass of recur.fused (same gradients; see the README's speed
    # section). None: the library's default (fused on CPU, autodiff of the scan elsewhere);
    # false: autodiff everywhere (the records made before the fused default say which).
    config.model.fused = config_dict.placeholder(bool)

    config.batch_size = 64
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. 1: the IMDB LSTM step measured slower split
    # (0.89-0.96x one device's steps/s; README, Training speed).
    config.num_devices = 1
    config.num_epochs = 5 if dataset == "sst2" else 6
    # Derived from num_epochs (and evaluation/checkpoints every epoch) when -1.
    config.num_steps = -1
    config.optim = optim.default_config(learning_rate=5e-4 if dataset == "sst2" else 1e-3)
    config.log_every = 200
    config.eval_every = -1
    config.checkpoint_every = -1

    if "flax" in items:
        config.model.pooling = "attention"
        config.model.attention_size = config.model.head_hidden_size = config.model.hidden_size
        config.model.word_dropout_rate = 0.1
        config.optim.update(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=3e-6)
        config.num_epochs = 10
    if "smoke" in items:
        config.data.max_vocab = 500
        config.data.max_length = 20
        config.model.embed_size = 8
        config.model.hidden_size = 8
        config.num_epochs = 1
        config.num_steps = 4
        config.log_every = 2
        config.eval_every = 2
        config.checkpoint_every = 2
    return config
