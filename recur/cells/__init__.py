"""Recurrent cells as pure functions; see :mod:`recur.cells.base` for the contract."""

from recur.cells.base import Cell, available, get, options_from_config, register
from recur.cells.gru import GRUState, gru
from recur.cells.lstm import LSTMState, lstm
from recur.cells.rnn import RNNState, rnn

__all__ = [
    "Cell",
    "GRUState",
    "LSTMState",
    "RNNState",
    "available",
    "get",
    "gru",
    "lstm",
    "options_from_config",
    "register",
    "rnn",
]
