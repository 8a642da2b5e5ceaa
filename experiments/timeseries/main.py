"""Forecasts a time series with a stacked RNN / LSTM / GRU and reports it next to baselines.

  python -m experiments.timeseries.main --config=experiments/timeseries/config.py:cell=gru \
      --workdir=/tmp/stock_gru

Writes ``results.json`` (test RMSE / MAE / MAPE of the model, the last-value and the linear
autoregression baselines, in original units) and ``forecast.png`` to the workdir.
"""

from absl import flags
from ml_collections import config_flags

from experiments.timeseries import train
from recur.train.cli import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Time-series config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    run(train.train_and_evaluate)
