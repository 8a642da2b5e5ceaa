"""Iterate averaging switched on by validation: the NT-ASGD of AWD-LSTM (Merity et al. 2018).

:func:`averaged` wraps any optax optimizer (AWD-LSTM: SGD) and keeps, in its state, the
running mean of the params since averaging started (Polyak & Juditsky 1992). Averaging starts
when :func:`record_validation`, called by :func:`recur.train.fit` after every evaluation, sees
the non-monotone trigger: the validation loss is worse than the best of the evaluations
before the last ``patience`` ones (AWD-LSTM's ``nonmono``). The inner optimizer keeps
stepping as before; from then on evaluation, the final results and checkpoints' evaluation
params are the average (:func:`eval_params`).

Everything the trigger needs lives in :class:`AveragingState` (the last ``patience``
validation losses and the best one before them), inside the optimizer state, so a checkpoint
holds it and a resumed run switches and averages exactly as an uninterrupted one.

References:
  Merity, Keskar & Socher, "Regularizing and optimizing LSTM language models", ICLR 2018.
  Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", 1992.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from recur.types import Array, Params


class AveragingState(NamedTuple):
    inner: Any  # the wrapped optimizer's state
    average: Params  # mean of the iterates since the switch; the params themselves before it
    count: Array  # int32: iterates averaged so far (0 before the switch)
    active: Array  # bool: averaging has started
    switch_step: Array  # int32: optimizer updates done when it started (0 before)
    recent: Array  # float32 [patience]: the last validation losses, oldest first (nan: none)
    best_before: Array  # float32: the best validation loss before ``recent`` (inf: none)


def averaged(inner: optax.GradientTransformation, patience: int) -> optax.GradientTransformation:
    """``inner`` plus the switchable average of the params it produces.

    Args:
      inner: the optimizer (its updates are applied unchanged).
      patience: evaluations the trigger looks past (AWD-LSTM's ``nonmono``, 5 there); >= 1.
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"averaging patience must be a positive integer, got {patience!r}")

    def init(params):
        return AveragingState(
            inner=inner.init(params),
            average=jax.tree.map(jnp.copy, params),
            count=jnp.zeros((), jnp.int32),
            active=jnp.zeros((), bool),
            switch_step=jnp.zeros((), jnp.int32),
            recent=jnp.full((patience,), jnp.nan, jnp.float32),
            best_before=jnp.full((), jnp.inf, jnp.float32),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("averaged() needs params in update(); pass them to tx.update")
        updates, inner_state = inner.update(updates, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        count = jnp.where(state.active, state.count + 1, 0)
        weight = 1.0 / jnp.maximum(count, 1).astype(jnp.float32)

        def mean(average, new):  # before the switch: the params themselves
            step = (new - average) * weight.astype(average.dtype)
            return jnp.where(state.active, average + step, new)

        average = jax.tree.map(mean, state.average, new_params)
        return updates, state._replace(inner=inner_state, average=average, count=count)

    return optax.GradientTransformation(init, update)


def _is_averaging(node) -> bool:
    return isinstance(node, AveragingState)


def find(opt_state) -> AveragingState | None:
    """The :class:`AveragingState` inside an optimizer state, or None."""
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_averaging) if _is_averaging(x)]
    if len(found) > 1:
        raise ValueError("the optimizer state holds more than one AveragingState")
    return found[0] if found else None


def _replace(opt_state, new: AveragingState):
    return jax.tree.map(lambda x: new if _is_averaging(x) else x, opt_state, is_leaf=_is_averaging)


def eval_params(state) -> Params:
    """The params to evaluate a train state with: the average once averaging has started,
    else ``state.params`` (also for optimizers without averaging)."""
    averaging = find(state.opt_state)
    if averaging is None:
        return state.params
    return jax.tree.map(
        lambda a, p: jnp.where(averaging.active, a, p), averaging.average, state.params
    )


def triggered(averaging: AveragingState, loss: Array) -> Array:
    """Whether a validation ``loss`` switches averaging on: the loss is worse than the best
    one before the last ``patience`` evaluations (AWD-LSTM: ``len(logs) > nonmono and loss >
    min(logs[:-nonmono])``)."""
    return jnp.asarray(loss, jnp.float32) > averaging.best_before


def _record(averaging: AveragingState, loss: Array, step: Array) -> AveragingState:
    loss = jnp.asarray(loss, jnp.float32)
    switch = ~averaging.active & triggered(averaging, loss)
    oldest = averaging.recent[0]  # leaves the window for the history before it
    best_before = jnp.where(
        jnp.isnan(oldest), averaging.best_before, jnp.minimum(averaging.best_before, oldest)
    )
    return averaging._replace(
        active=averaging.active | switch,
        switch_step=jnp.where(switch, step, averaging.switch_step),
        recent=jnp.concatenate([averaging.recent[1:], loss[None]]),
        best_before=best_before,
    )


_record_jit = jax.jit(_record)


def record_validation(state, loss: float):
    """``state`` after an evaluation with validation ``loss``: the trigger's history updated
    and, where the trigger fires, averaging switched on (from the next update). A state
    whose optimizer does not average is returned unchanged."""
    averaging = find(state.opt_state)
    if averaging is None:
        return state
    updated = _record_jit(averaging, loss, jnp.asarray(state.step, jnp.int32))
    return state.replace(opt_state=_replace(state.opt_state, updated))
