"""Array-shape aliases used in signatures and docstrings.

Legend: B batch, T time, D input features, H hidden units, G gate width (a multiple of H),
V vocabulary, S source length (encoder-decoder), C classes.

These are plain aliases for readability; shapes are written out in docstrings, e.g.
``xs: [B, T, D] float32``.
"""

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of arrays: nested dicts for cells, flax FrozenDict/dict for models
State = Any  # a NamedTuple of [..., H] arrays with field ``h``
