"""Optimizers and learning-rate schedules from an ``ml_collections`` config, all from optax.

Config fields (``config.optim``):
  name: ``adam`` | ``adamw`` | ``sgd`` | ``rmsprop``.
  learning_rate: peak learning rate.
  momentum: SGD momentum (0 for plain SGD) and RMSProp momentum.
  weight_decay: ``adamw``: decoupled weight decay; ``sgd``, ``adam``, ``rmsprop``: an L2
    penalty, ``weight_decay * param`` added to every gradient after clipping (the gradient
    of ``weight_decay / 2 * |params|^2``; flax's sst2 example uses 3e-6 with SGD).
  schedule: ``constant`` | ``step`` | ``warmup_cosine``.
  decay_factor, decay_every, decay_start: ``step`` multiplies the rate by ``decay_factor``
    at step ``decay_start`` and again every ``decay_every`` steps after it (e.g. Zaremba et
    al.'s per-epoch decay: ``decay_start`` = the first step of the first decayed epoch);
    ``decay_start`` -1 (the default) is ``decay_every``: one period at the peak rate first.
  warmup_steps: linear warm-up of ``warmup_cosine``; then cosine decay to 0 at the last step.
  clip_norm: clip gradients by global norm (0 or less: no clipping).
  averaging: keep the average of the params from the point where the validation loss stops
    improving (NT-ASGD, Merity et al. 2018; :mod:`recur.train.averaging`); evaluation then
    uses the average.
  nonmono: the averaging trigger's patience, in evaluations (AWD-LSTM: 5).
"""

import ml_collections
import optax

from recur.train import averaging

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "warmup_cosine")


def default_config(**overrides) -> ml_collections.ConfigDict:
    """``config.optim`` with every field this module reads; ``overrides`` change defaults."""
    config = ml_collections.ConfigDict()
    # adam | adamw | sgd | rmsprop.
    config.name = "adam"
    config.learning_rate = 1e-3
    config.momentum = 0.0
    config.weight_decay = 0.0
    # constant | step | warmup_cosine.
    config.schedule = "constant"
    config.decay_factor = 0.5
    config.decay_every = 1000
    # -1: decay_every (the first period at the peak rate).
    config.decay_start = -1
    config.warmup_steps = 100
    # Clip gradients by global norm (0: off).
    config.clip_norm = 1.0
    config.averaging = False
    config.nonmono = 5
    config.update(overrides)
    return config


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule named by ``config.schedule``."""
    lr = config.learning_rate
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "step":
        decayed = optax.exponential_decay(
            lr * config.decay_factor, config.decay_every, config.decay_factor, staircase=True
        )
        start = config.get("decay_start", -1)
        return optax.join_schedules(
            [optax.constant_schedule(lr), decayed], [config.decay_every if start < 0 else start]
        )
    if config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, config.warmup_steps, max(total_steps, config.warmup_steps + 1)
        )
    raise ValueError(f"unknown schedule {config.schedule!r}; available: {', '.join(SCHEDULES)}")


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``optax.chain(clip_by_global_norm, optimizer)`` and its schedule (for logging)."""
    schedule = make_schedule(config, total_steps)
    name = config.name
    if name == "adam":
        optimizer = optax.adam(schedule)
    elif name == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    elif name == "sgd":
        optimizer = optax.sgd(schedule, momentum=config.momentum or None)
    elif name == "rmsprop":
        optimizer = optax.rmsprop(schedule, momentum=config.momentum)
    else:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    if name != "adamw" and config.weight_decay:
        optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
    if config.clip_norm and config.clip_norm > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    if config.get("averaging"):
        optimizer = averaging.averaged(optimizer, config.get("nonmono", 5))
    return optimizer, schedule
