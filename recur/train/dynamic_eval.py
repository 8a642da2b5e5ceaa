"""Dynamic evaluation (Krause et al. 2018): a sequence model adapted by gradient descent to
the text it has just scored.

The evaluation text is cut into short windows, read in order with the recurrent state carried
across them. Each window is first scored with the current params, then the params take one
gradient step on that window's loss, so later windows are predicted by a model that has seen
the earlier ones (a word used once in an article is likely to be used again). Two update
rules, both pulling the params back towards the trained ones (the "global prior"):

    sgd:  θ ← θ − η ∇ + λ (θ₀ − θ)
    rms:  θ ← θ − η ∇ / (max(√MS, f · mean(√MS)) + ε) + min(λ √MS / mean(√MS), 1) ⊙ (θ₀ − θ)

where ``MS`` is the mean squared gradient of the same window loss over training text
(:func:`mean_squared_gradients`), the means are over every parameter, and the floor ``f``
(``rms_floor``, 0.1; Krause et al. have none) keeps parameters that the MS windows left
untouched from taking huge steps. Scores
are those of the params *before* each window's update, so no token is scored by a model that
has been trained on it.

Reference: Krause, Kahembwe, Murray & Renals, "Dynamic evaluation of neural sequence models",
ICML 2018.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recur.types import Array, Params

RULES = ("sgd", "rms")

# loss_fn(params, carry, window) -> (mean loss over the window's weighted tokens,
#                                    (sum of the token losses, number of tokens, new carry))
WindowLoss = Callable[[Params, Any, dict[str, Array]], tuple[Array, tuple[Array, Array, Any]]]


def stack_windows(windows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Windows of one length (pad the last one with weight-0 tokens) -> arrays ``[W, ...]``."""
    shapes = {name: {w[name].shape for w in windows} for name in windows[0]}
    uneven = [name for name, found in shapes.items() if len(found) > 1]
    if uneven:
        raise ValueError(f"windows differ in shape in {uneven}: pad them to one length")
    return {name: np.stack([w[name] for w in windows]) for name in windows[0]}


def mean_squared_gradients(
    loss_fn: WindowLoss, params: Params, carry: Any, windows: Sequence[dict[str, np.ndarray]]
) -> Params:
    """``MS``: the mean over ``windows`` (read in order, state carried, params fixed) of the
    squared gradient of each window's loss, per parameter; the ``rms`` rule's scale."""

    def body(state, window):
        carry, total = state
        (_, (_, _, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, carry, window)
        total = jax.tree.map(lambda t, g: t + jnp.square(g), total, grads)
        return (carry, total), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (_, total), _ = jax.jit(lambda c, ws: jax.lax.scan(body, (c, zeros), ws))(
        carry, stack_windows(windows)
    )
    return jax.tree.map(lambda t: t / len(windows), total)


def check_settings(rule: str, learning_rate: float, decay: float) -> None:
    """One line naming a bad rule, step size or decay (before anything is computed)."""
    if rule not in RULES:
        raise ValueError(f"unknown dynamic-evaluation rule {rule!r}; available: {', '.join(RULES)}")
    if learning_rate < 0 or not 0 <= decay <= 1:
        raise ValueError(
            f"dynamic evaluation needs learning_rate >= 0 and 0 <= decay <= 1, got "
            f"{learning_rate} and {decay}"
        )


def check_rule(rule: str, learning_rate: float, decay: float, ms: Params | None) -> None:
    """:func:`check_settings`, and the rms rule's mean squared gradients present."""
    check_settings(rule, learning_rate, decay)
    if rule == "rms" and ms is None:
        raise ValueError("the rms rule needs the mean squared gradients (ms)")


def make_evaluator(
    loss_fn: WindowLoss, rule: str = "sgd", epsilon: float = 1e-5, rms_floor: float = 0.1
):
    """A jitted ``(params, carry, stacked windows, learning_rate, decay, ms) -> (per-window
    loss sums, per-window token counts)``, compiled once for every η and λ (a grid search
    reuses it). ``ms`` is ignored by ``sgd`` (pass ``None``); ``rms_floor``: see
    :func:`evaluate`."""
    if rule not in RULES:
        raise ValueError(f"unknown dynamic-evaluation rule {rule!r}; available: {', '.join(RULES)}")

    def run(params, carry, windows, learning_rate, decay, ms):
        if rule == "rms":
            rms = jax.tree.map(jnp.sqrt, ms)
            leaves = jax.tree.leaves(rms)
            mean_rms = sum(r.sum() for r in leaves) / sum(r.size for r in leaves)
            floor = rms_floor * mean_rms  # parameters the MS windows hardly moved
            scale = jax.tree.map(lambda r: 1.0 / (jnp.maximum(r, floor) + epsilon), rms)
            pull = jax.tree.map(
                lambda r: jnp.minimum(decay * r / jnp.maximum(mean_rms, 1e-30), 1.0), rms
            )
        else:
            scale = jax.tree.map(lambda p: jnp.ones((), p.dtype), params)
            pull = jax.tree.map(lambda p: jnp.full((), decay, p.dtype), params)

        def body(state, window):
            theta, carry = state
            (_, (loss_sum, count, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                theta, carry, window
            )
            theta = jax.tree.map(
                lambda t, t0, g, s, d: t - learning_rate * g * s + d * (t0 - t),
                theta, params, grads, scale, pull,
            )  # fmt: skip
            return (theta, carry), (loss_sum, count)

        return jax.lax.scan(body, (params, carry), windows)[1]

    return jax.jit(run)


def evaluate(
    loss_fn: WindowLoss,
    params: Params,
    carry: Any,
    windows: Sequence[dict[str, np.ndarray]],
    *,
    learning_rate: float,
    decay: float = 0.0,
    rule: str = "sgd",
    ms: Params | None = None,
    epsilon: float = 1e-5,
    rms_floor: float = 0.1,
    evaluator: Callable | None = None,
) -> dict[str, float]:
    """Dynamic evaluation of ``params`` over ``windows`` (in order, state carried).

    Args:
      loss_fn: the window loss (see ``WindowLoss``); the update follows the gradient of its
        first output, the mean over the window's tokens.
      params: the trained params θ₀.
      carry: the recurrent state before the first window.
      windows: batches of one shape (see :func:`stack_windows`).
      learning_rate: η (0: the static evaluation).
      decay: λ, the pull back towards θ₀ per window.
      rule: ``sgd`` or ``rms`` (see the module docstring).
      ms: :func:`mean_squared_gradients` of training text, for ``rms``.
      epsilon: ε of the ``rms`` rule.
      rms_floor: the ``rms`` rule divides by ``max(√MS, rms_floor · mean(√MS))``: a
        parameter whose gradient was (nearly) zero over the MS windows, such as the embedding
        of a word they do not contain, would otherwise take a step of η ∇ / ε and diverge
        (NaN on PTB at η = 1e-4 with 1,000 windows of 5 tokens). 0: the paper's rule.
      evaluator: :func:`make_evaluator` ``(loss_fn, rule, epsilon, rms_floor)``, to reuse its
        compilation over several calls.

    Returns:
      ``{"loss": mean token loss, "tokens": number of tokens scored}``.
    """
    check_rule(rule, learning_rate, decay, ms)
    if learning_rate == 0:  # the static evaluation: no gradients needed
        sums, counts = _static(loss_fn)(params, carry, stack_windows(windows))
        return _mean(sums, counts)
    run = evaluator or make_evaluator(loss_fn, rule, epsilon, rms_floor)
    sums, counts = run(
        params, carry, stack_windows(windows), jnp.float32(learning_rate), jnp.float32(decay),
        ms if rule == "rms" else None,
    )  # fmt: skip
    return _mean(sums, counts)


def _mean(sums, counts) -> dict[str, float]:
    total = float(np.sum(np.asarray(sums, np.float64)))
    tokens = float(np.sum(np.asarray(counts, np.float64)))
    return {"loss": total / max(tokens, 1.0), "tokens": tokens}


def _static(loss_fn: WindowLoss):
    @jax.jit
    def run(params, carry, windows):
        def body(carry, window):
            _, (loss_sum, count, carry) = loss_fn(params, carry, window)
            return carry, (loss_sum, count)

        return jax.lax.scan(body, carry, windows)[1]

    return run
