"""Recurrent cells as pure functions; see :mod:`recur.cells.base` for the contract."""

from recur.cells.base import (
    Cell,
    LinearRecurrence,
    available,
    get,
    options_from_config,
    register,
)  # fmt: skip
from recur.cells.gru import GRUState, gru
from recur.cells.lru import LRUState, lru
from recur.cells.lstm import LSTMState, lstm
from recur.cells.mingru import MinGRUState, mingru
from recur.cells.minlstm import MinLSTMState, minlstm
from recur.cells.rnn import RNNState, rnn

__all__ = [
    "Cell",
    "GRUState",
    "LRUState",
    "LSTMState",
    "LinearRecurrence",
    "MinGRUState",
    "MinLSTMState",
    "RNNState",
    "available",
    "get",
    "gru",
    "lru",
    "lstm",
    "mingru",
    "minlstm",
    "options_from_config",
    "register",
    "rnn",
]
