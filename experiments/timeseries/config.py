"""Config of the time-series experiment (``experiments/timeseries/main.py``).

The default is the LSTM stock-price tutorial done honestly: Google's daily opening price,
2012-2016 to train, January 2017 to test, windows of
60 days predicting the next day, 4 stacked layers of 50 units with dropout 0.2, Adam, 100
epochs of batches of 32; min-max scaling fitted on the training part only.

Variants (comma-separated): ``google_stock`` (the default, named), ``cell=rnn|lstm|gru``,
``horizon=<steps ahead>``, ``head=last|every_step``, ``smoke``.

  python -m experiments.timeseries.main --config=experiments/timeseries/config.py:cell=lstm \
      --workdir=/tmp/stock_lstm

Expected result: see the README's time-series table (RMSE in dollars next to the last-value and
linear-autoregression baselines).
"""

import ml_collections
from ml_collections import config_dict

from recur.train import optim, variants

VARIANT_KEYS = {"cell": str, "horizon": int, "head": str}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = variants.parse_variant(arg, names=("google_stock",), keys=VARIANT_KEYS)
    config = ml_collections.ConfigDict()
    # Seed of parameter init, batch order and dropout.
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # CSV of the training period (date column + numeric columns, header row).
    config.data.train_path = "../shared/data/google_stock/Google_Stock_Price_Train.csv"
    # CSV of the test period, after the training period; "" to cut the test period from the
    # end of train_path: from the date test_start (YYYY-MM-DD) on if set, else the last
    # test_fraction of its rows.
    config.data.test_path = "../shared/data/google_stock/Google_Stock_Price_Test.csv"
    config.data.test_start = ""
    config.data.test_fraction = 0.1
    # Share of the training period (its end) held out for validation during training. 0 (the
    # tutorial's setup) trains and fits the scaler on the whole training period, and the
    # periodic evaluation then reports the in-sample MSE. With a hold-out the scaler's range
    # ends earlier, and a level forecaster with bounded activations cannot reach prices above
    # it (measured: LSTM test RMSE 51 with 10% held out; see the README).
    config.data.valid_fraction = 0.0
    config.data.date_column = "Date"
    # Date format (strptime); "" tries M/D/YYYY, YYYY-MM-DD, D.M.YYYY and YYYY/MM/DD.
    config.data.date_format = ""
    # Empty or NA/NaN/null/- value cells: error (stop, naming the row and column) | drop (drop
    # the row) | interpolate (linear in time from the nearest values before and after; rows
    # at either end without one are dropped). Applied before splitting and windowing; the
    # counts are printed and kept in results.json's notes.
    config.data.missing = "error"
    # Input features, comma-separated; the target must be one of them.
    config.data.columns = "Open"
    config.data.target = "Open"
    # minmax (to [0, 1]) or standard; fitted on the training part only.
    config.data.scaling = "minmax"
    # Past steps each forecast reads, and steps ahead it predicts.
    config.data.window = 60
    config.data.horizon = variant.get("horizon", 1)

    config.model = ml_collections.ConfigDict()
    config.model.cell = variant.get("cell", "lstm")
    config.model.hidden_size = 50
    config.model.num_layers = 4
    # Dropout between layers and before the head.
    config.model.dropout_rate = 0.2
    # last: many-to-one (the final state predicts the horizon); every_step: many-to-many
    # (each step predicts the horizon after it; the last step's forecast is used).
    config.model.head = variant.get("head", "last")
    config.model.activation = "tanh"
    config.model.recurrent_init = "orthogonal"
    config.model.forget_bias = 1.0
    config.model.gru_variant = "reset_after"
    # The hand-written backward pass of recur.fused (same gradients; see the README's speed
    # section). None: the library's default (fused on CPU, autodiff of the scan elsewhere);
    # false: autodiff everywhere (the records made before the fused default say which).
    config.model.fused = config_dict.placeholder(bool)

    config.batch_size = 32
    # Devices each training batch is split over (recur.train.fit): 0 = every device (on CPU one
    # per core; --cpu_devices), 1 = no split. Split: 0.85-0.88 of one device's step time here.
    config.num_devices = 0
    # Training length in epochs over the training windows; num_steps follows from it.
    config.num_epochs = 100
    config.num_steps = -1
    # Optimizer, schedule and clipping: see recur/train/optim.py.
    config.optim = optim.default_config(warmup_steps=0)

    config.log_every = 200
    config.eval_every = 500
    config.checkpoint_every = 500

    if variant.get("smoke"):
        config.data.window = 10
        config.model.hidden_size = 8
        config.model.num_layers = 2
        config.num_epochs = 1
        config.batch_size = 64
        config.log_every = 5
        config.eval_every = 10
        config.checkpoint_every = 10
    return config
