"""recur: RNN, LSTM and GRU as pure JAX functions, unrolled with ``jax.lax.scan``."""

from recur import cells
from recur.params import (
    cell_param_count,
    count_params,
    hidden_size_for_budget,
    matched_hidden_sizes,
    stack_param_count,
)
from recur.scan import (
    bidirectional,
    init_layer,
    init_stacked,
    stacked,
    stacked_step,
    unroll,
)

__all__ = [
    "bidirectional",
    "cell_param_count",
    "cells",
    "count_params",
    "hidden_size_for_budget",
    "init_layer",
    "init_stacked",
    "matched_hidden_sizes",
    "stack_param_count",
    "stacked",
    "stacked_step",
    "unroll",
]
