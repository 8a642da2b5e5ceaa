"""``TrainState``, the module-level ``train_step`` and ``eval_step``.

A task gives a loss function ``loss_fn(params, batch, rng, train) -> (loss, metrics)``; it is a
static field of the state, so ``train_step(state, batch, rng)`` has the flax-examples shape and
is jitted at the call site with ``donate_argnums=0``.

Stateful tasks (truncated BPTT) keep a ``carry`` pytree in the state, e.g. the recurrent states
at the end of the last window: ``train_step`` passes it to the loss as ``batch["carry"]`` and
the loss returns the new one as ``metrics["carry"]``, which becomes the state's carry. The carry
is an input, not a parameter, so no gradient flows across window boundaries; it is saved with
checkpoints, so a resumed run continues the same streams.
"""

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import struct
from flax.training import train_state

from recur.types import Array, Params, PRNGKey

Batch = dict[str, Array]
LossFn = Callable[[Params, Batch, PRNGKey, bool], tuple[Array, dict[str, Array]]]


class TrainState(train_state.TrainState):
    """flax's ``TrainState`` plus the task's loss function (static, not saved)."""

    loss_fn: LossFn = struct.field(pytree_node=False, default=None)
    carry: Any = None


def train_step(state: TrainState, batch: Batch, rng: PRNGKey) -> tuple[TrainState, dict]:
    """One optimizer step; randomness (dropout) from ``fold_in(rng, step)``.

    Returns:
      ``(new state, metrics)`` with the task's metrics plus ``loss``, ``grad_norm``,
      ``param_norm`` and ``update_norm``.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    if state.carry is not None:
        batch = {**batch, "carry": state.carry}

    def loss(params):
        return state.loss_fn(params, batch, step_rng, True)

    (loss_value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    if state.carry is not None:
        metrics = dict(metrics)
        new_state = new_state.replace(carry=metrics.pop("carry"))
    updates = jax.tree.map(lambda new, old: new - old, new_state.params, state.params)
    metrics = {
        **metrics,
        "loss": loss_value,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_state.params),
        "update_norm": optax.global_norm(updates),
    }
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch) -> dict[str, Any]:
    """The task's metrics (and loss) on one batch, deterministic; a stateful task's loss reads
    ``batch["carry"]`` when present and returns ``metrics["carry"]`` for the next batch."""
    loss_value, metrics = state.loss_fn(state.params, batch, jax.random.key(0), False)
    return {**metrics, "loss": loss_value}
