"""Gradient-flow diagnostics: per-step ``dL/dh_t`` in one backward pass, Jacobian products
along a trajectory, and gate statistics. Pure JAX over any cell of :mod:`recur.cells`."""

from recur.diagnostics.gates import gate_statistics
from recur.diagnostics.gradient_flow import (
    effective_memory,
    fit_decay_rate,
    grad_norms_per_step,
    state_grads_per_step,
)
from recur.diagnostics.jacobians import (
    jacobian_product_norms,
    one_step_jacobians,
    spectral_norm,
    trajectory,
)

__all__ = [
    "effective_memory",
    "fit_decay_rate",
    "gate_statistics",
    "grad_norms_per_step",
    "jacobian_product_norms",
    "one_step_jacobians",
    "spectral_norm",
    "state_grads_per_step",
    "trajectory",
]
