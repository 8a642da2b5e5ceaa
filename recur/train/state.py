"""``TrainState``, the module-level ``train_step`` and ``eval_step``, and their data-parallel
forms with the batch split over the devices of a mesh.

A task gives a loss function ``loss_fn(params, batch, rng, train) -> (loss, metrics)``; it is a
static field of the state, so ``train_step(state, batch, rng)`` has the flax-examples shape and
is jitted at the call site with ``donate_argnums=0``. The loss and every metric are means over
the batch's examples (or tokens), weighted by ``batch["weights"]`` where the batch has them
(:func:`batch_mean`): padded rows carry weight 0.

Stateful tasks (truncated BPTT) keep a ``carry`` pytree in the state, e.g. the recurrent states
at the end of the last window: ``train_step`` passes it to the loss as ``batch["carry"]`` and
the loss returns the new one as ``metrics["carry"]``, which becomes the state's carry. The carry
is an input, not a parameter, so no gradient flows across window boundaries; it is saved with
checkpoints, so a resumed run continues the same streams.

Split over devices (:func:`split_train_step`), each device runs the loss on its rows of the
batch as a program of its own (``jax.shard_map``); its loss, metrics and gradients are scaled by
its share of the batch's weight and summed over the devices once, after the scan, so they are
the whole batch's weighted means and their gradient.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from recur.train import averaging
from recur.types import Array, Params, PRNGKey

Batch = dict[str, Array]
LossFn = Callable[[Params, Batch, PRNGKey, bool], tuple[Array, dict[str, Array]]]
DATA_AXIS = "data"


class TrainState(train_state.TrainState):
    """flax's ``TrainState`` plus the task's loss function (static, not saved)."""

    loss_fn: LossFn = struct.field(pytree_node=False, default=None)
    carry: Any = None


def batch_weight(batch: Batch) -> Array:
    """The batch's total weight: the sum of ``batch["weights"]`` ([B] or [B, T]: per example or
    per token), else its number of rows."""
    if "weights" in batch:
        return jnp.sum(batch["weights"], dtype=jnp.float32)
    rows = jax.tree.leaves({k: v for k, v in batch.items() if k != "carry"})[0].shape[0]
    return jnp.asarray(rows, jnp.float32)


def batch_mean(values: Array, batch: Batch) -> Array:
    """Mean of per-example ``values: [B, ...]`` (or per-token ``[B, T, ...]``) weighted by
    ``batch["weights"]`` where present; trailing axes beyond the weights' are averaged first.
    A batch of weight 0 (all padding) gives 0."""
    if "weights" not in batch:
        return jnp.mean(values)
    weights = batch["weights"]
    values = values.reshape(*weights.shape, -1).mean(-1)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-30)


def _with_carry(state: TrainState, batch: Batch) -> Batch:
    return batch if state.carry is None else {**batch, "carry": state.carry}


def _apply(state: TrainState, loss_value, metrics: dict, grads) -> tuple[TrainState, dict]:
    """The optimizer step and the logged norms, given the loss, metrics and gradients."""
    new_state = state.apply_gradients(grads=grads)
    metrics = dict(metrics)
    carry = metrics.pop("carry", None)
    if state.carry is not None:
        new_state = new_state.replace(carry=carry)
    updates = jax.tree.map(lambda new, old: new - old, new_state.params, state.params)
    metrics = {
        **metrics,
        "loss": loss_value,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_state.params),
        "update_norm": optax.global_norm(updates),
    }
    return new_state, metrics


def train_step(state: TrainState, batch: Batch, rng: PRNGKey) -> tuple[TrainState, dict]:
    """One optimizer step; randomness (dropout) from ``fold_in(rng, step)``.

    Returns:
      ``(new state, metrics)`` with the task's metrics plus ``loss``, ``grad_norm``,
      ``param_norm`` and ``update_norm``.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    batch = _with_carry(state, batch)

    def loss(params):
        return state.loss_fn(params, batch, step_rng, True)

    (loss_value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    return _apply(state, loss_value, metrics, grads)


def eval_step(state: TrainState, batch: Batch) -> dict[str, Any]:
    """The task's metrics (and loss) on one batch, deterministic, with the params evaluation
    uses (the average where the optimizer averages: :func:`recur.train.averaging.eval_params`);
    a stateful task's loss reads ``batch["carry"]`` when present and returns
    ``metrics["carry"]`` for the next batch."""
    params = averaging.eval_params(state)
    loss_value, metrics = state.loss_fn(params, batch, jax.random.key(0), False)
    return {**metrics, "loss": loss_value}


def _weighted_sum(weight: Array, tree):
    """``(sum of weight, sum of weight * tree)`` over the ``"data"`` axis: one all-reduce
    (integer metrics become float32, as means are)."""
    return jax.lax.psum((weight, jax.tree.map(lambda x: x * weight, tree)), DATA_AXIS)


def _divide(total: Array, tree):
    """``tree / total`` (a batch of weight 0, all padding, gives 0); floating leaves keep their
    dtype (gradients stay in the params' dtype)."""
    scale = 1.0 / jnp.maximum(total, 1e-30)

    def divide(x):
        return x * (scale.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else scale)

    return jax.tree.map(divide, tree)


@functools.cache
def split_train_step(mesh: Mesh) -> Callable[[TrainState, Batch, PRNGKey], tuple]:
    """:func:`train_step` with the batch (and a stateful task's carry) split over ``mesh``'s
    ``"data"`` axis and the params replicated. Each device's loss, metrics and gradients, times
    its part of the batch's weight (:func:`batch_weight`), are summed over the devices after the
    scan and divided by the whole batch's weight: its weighted means and their gradient.
    Dropout keys differ per device (``fold_in(fold_in(rng, step), device index)``): runs are
    deterministic for a given number of devices. Returns the same ``(new state, metrics)``.

    One collective per step: each device's weight and its weighted loss, metrics and gradients
    are summed in one all-reduce, and the sums divided by the whole batch's weight after it (two
    collectives, the weights' sum first, were 4-9% slower on the adding problem at T = 25, 2
    CPU devices, side by side)."""

    def step(state: TrainState, batch: Batch, rng: PRNGKey):
        step_rng = jax.random.fold_in(rng, state.step)

        def local(params, batch, rng):
            rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
            # Varying params: their gradient stays per device until the one sum below.
            params = jax.lax.pcast(params, (DATA_AXIS,), to="varying")
            weight = batch_weight(batch)

            def loss(params):
                value, metrics = state.loss_fn(params, batch, rng, True)
                return value * weight, metrics  # the gradient comes out scaled too

            (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
            metrics = dict(metrics)
            carry = metrics.pop("carry", None)
            metrics = {name: metric * weight for name, metric in metrics.items()}
            # One all-reduce of every operand: the weighted sums and the weights' sum.
            total, (value, metrics, grads) = jax.lax.psum(
                (weight, (value, metrics, grads)), DATA_AXIS
            )
            return total, value, metrics, carry, grads

        total, loss_value, metrics, carry, grads = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
            out_specs=(P(), P(), P(), P(DATA_AXIS), P()),
        )(state.params, _with_carry(state, batch), step_rng)  # fmt: skip
        # The weighted sums over the devices, divided by the whole batch's weight: its means.
        loss_value, metrics, grads = _divide(total, (loss_value, metrics, grads))
        if carry is not None:
            metrics = {**metrics, "carry": carry}
        return _apply(state, loss_value, metrics, grads)

    return step


@functools.cache
def split_eval_step(mesh: Mesh) -> Callable[[TrainState, Batch], dict]:
    """:func:`eval_step` with the batch split over ``mesh``'s ``"data"`` axis: the whole
    batch's weighted means, and the carry split as the batch is."""

    def step(state: TrainState, batch: Batch) -> dict:
        def local(params, batch):
            loss_value, metrics = state.loss_fn(params, batch, jax.random.key(0), False)
            metrics = {**metrics, "loss": loss_value}
            carry = metrics.pop("carry", None)
            return *_weighted_sum(batch_weight(batch), metrics), carry

        total, metrics, carry = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P(), P(DATA_AXIS))
        )(averaging.eval_params(state), batch)
        metrics = _divide(total, metrics)
        return metrics if carry is None else {**metrics, "carry": carry}

    return step
