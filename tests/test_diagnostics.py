"""Gradient-flow diagnostics against direct computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recur import cells, diagnostics

B, T, D, H = 3, 6, 4, 5


def xs_for(seed=0, shape=(B, T, D)):
    return jax.random.normal(jax.random.key(seed), shape)


def test_linear_rnn_jacobian_products_equal_matrix_powers():
    cell = cells.rnn(H, activation="linear")
    params = cell.init(jax.random.key(0), D)
    params["w_hh"] = 1.1 * jax.random.normal(jax.random.key(1), (H, H)) / np.sqrt(H)
    jacobians = diagnostics.one_step_jacobians(cell, params, xs_for())
    assert jacobians.shape == (B, T, H, H)
    np.testing.assert_allclose(jacobians[1, 3], params["w_hh"].T, atol=1e-6)
    norms = diagnostics.jacobian_product_norms(jacobians[0])
    w = np.asarray(params["w_hh"], np.float64)
    for lag in range(T):
        power = np.linalg.matrix_power(w, lag)
        np.testing.assert_allclose(norms["spectral"][lag], np.linalg.norm(power, 2), rtol=1e-4)
        np.testing.assert_allclose(norms["frobenius"][lag], np.linalg.norm(power), rtol=1e-4)
    # Power iteration agrees with the exact spectral norm.
    iterated = diagnostics.jacobian_product_norms(jacobians[0], exact_max_size=0, iterations=200)
    np.testing.assert_allclose(iterated["spectral"], norms["spectral"], rtol=1e-3)


def test_linear_cells_jacobian_products_are_their_closed_forms():
    """minGRU and minLSTM: ``dh_T/dh_t = diag(prod a_k)``; LRU: each unit's (Re, Im) block is
    ``λ^lag`` as a rotation-scaling, so the product's spectral norm is ``max |λ|^lag``."""
    xs = xs_for()
    for name in ("mingru", "minlstm"):
        cell = cells.get(name, H)
        params = cell.init(jax.random.key(0), D)
        jacobians = diagnostics.one_step_jacobians(cell, params, xs)
        a, _ = cell.linear.coefficients(params, cell.project(params, xs))  # [B, T, H]
        np.testing.assert_allclose(jacobians, jax.vmap(jax.vmap(jnp.diag))(a), atol=1e-6)
        norms = diagnostics.jacobian_product_norms(jacobians[0])
        a = np.asarray(a[0], np.float64)
        for lag in range(T):
            product = np.prod(a[T - lag :], axis=0)  # the last ``lag`` steps
            np.testing.assert_allclose(norms["spectral"][lag], product.max(), rtol=1e-5)
            np.testing.assert_allclose(norms["frobenius"][lag], np.linalg.norm(product), rtol=1e-5)
    cell = cells.lru(H, state_size=3, r_min=0.5, r_max=0.9)
    params = cell.init(jax.random.key(0), D)
    jacobians = diagnostics.one_step_jacobians(cell, params, xs)  # state [h (H), re (3), im (3)]
    recurrence = jacobians[0][:, H:, H:]  # the complex state's block; h is read, never carried
    np.testing.assert_allclose(jacobians[0][:, :, :H], 0.0, atol=1e-7)
    lam = np.exp(-np.exp(np.asarray(params["nu_log"], np.float64))
                 + 1j * np.exp(np.asarray(params["theta_log"], np.float64)))  # fmt: skip
    norms = diagnostics.jacobian_product_norms(recurrence)
    for lag in range(T):
        np.testing.assert_allclose(norms["spectral"][lag], np.abs(lam).max() ** lag, rtol=1e-5)


def loss_fn(outputs, final):
    """Per-step and final-state terms, so both paths of the gradient are exercised."""
    readout = jnp.linspace(-1.0, 1.0, outputs.shape[-1])
    return jnp.sum(jnp.sin(outputs) @ readout) + jnp.sum(final.h**2)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_one_pass_grads_equal_jacrev_on_a_python_loop(name):
    cell = cells.get(name, H)
    params = cell.init(jax.random.key(0), D)
    xs = xs_for()
    _, grads = diagnostics.state_grads_per_step(cell, params, xs, loss_fn)
    readout = jnp.linspace(-1.0, 1.0, H)

    def rest_of_loss(state, t):  # the loss as a function of the state after step t
        total = jnp.sum(jnp.sin(state.h) @ readout)
        for s in range(t + 1, T):
            state, _ = cell.step(params, state, cell.project(params, xs[:, s]))
            total += jnp.sum(jnp.sin(state.h) @ readout)
        return total + jnp.sum(state.h**2)

    state = cell.initial_state((B,))
    for t in range(T):
        state, _ = cell.step(params, state, cell.project(params, xs[:, t]))
        want = jax.jacrev(rest_of_loss)(state, t)
        for field in state._fields:
            np.testing.assert_allclose(
                getattr(grads, field)[:, t], getattr(want, field), rtol=1e-4, atol=1e-6
            )


def test_padded_steps_get_zero_and_valid_steps_match_unpadded():
    cell = cells.lstm(H)
    params = cell.init(jax.random.key(0), D)
    xs = xs_for()
    lengths = jnp.array([6, 2, 4])

    def final_loss(outputs, final):
        return jnp.sum(final.h @ jnp.arange(H, dtype=jnp.float32)) + jnp.sum(final.c)

    _, grads = diagnostics.state_grads_per_step(cell, params, xs, final_loss, seq_lengths=lengths)
    norms = diagnostics.grad_norms_per_step(grads)
    assert set(norms) == {"h", "c"} and norms["h"].shape == (B, T)
    for b, length in enumerate(lengths.tolist()):
        np.testing.assert_array_equal(grads.h[b, length:], 0.0)
        np.testing.assert_array_equal(grads.c[b, length:], 0.0)
        _, alone = diagnostics.state_grads_per_step(
            cell, params, xs[b : b + 1, :length], final_loss
        )
        np.testing.assert_allclose(grads.h[b, :length], alone.h[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grads.c[b, :length], alone.c[0], rtol=1e-5, atol=1e-7)


def test_gate_statistics():
    lstm = cells.lstm(H, forget_bias=20.0)
    params = lstm.init(jax.random.key(0), D)
    lengths = jnp.array([6, 2, 4])
    stats = diagnostics.gate_statistics(lstm, params, xs_for(), lengths)
    assert set(stats) == {"input", "forget", "output"}
    np.testing.assert_allclose(stats["forget"]["mean"], 1.0, atol=1e-4)
    np.testing.assert_allclose(stats["forget"]["saturated"], 1.0)
    assert stats["input"]["mean_per_unit"].shape == (T, H)
    # The mean over valid steps only, computed by hand for one step.
    gru = cells.gru(H)
    gru_params = gru.init(jax.random.key(1), D)
    xs = xs_for(2)
    stats = diagnostics.gate_statistics(gru, gru_params, xs, lengths)
    before, x_proj = diagnostics.trajectory(gru, gru_params, xs)
    state_3 = jax.tree.map(lambda a: a[3], before)
    z = gru.gates(gru_params, state_3, x_proj[3])["update"]  # valid for examples 0 and 2
    np.testing.assert_allclose(stats["update"]["mean"][3], z[jnp.array([0, 2])].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="cell 'rnn_tanh' has no gates"):
        diagnostics.gate_statistics(cells.rnn(H), cells.rnn(H).init(jax.random.key(0), D), xs)


def test_decay_rate_and_effective_memory():
    lags = np.arange(100)
    norms = (3.0 * 10.0 ** (-0.1 * lags))[::-1]  # time order: the last entry is lag 0
    assert diagnostics.fit_decay_rate(norms) == pytest.approx(-0.1)
    assert diagnostics.effective_memory(norms) == 61  # first lag with 10^{-0.1 k} < 1e-6
    assert diagnostics.effective_memory(np.ones(10)) is None


def test_norms_do_not_underflow_before_the_gradient_does():
    tiny = jnp.full((2, 3, 64), 1e-25)  # squares underflow in float32; the values do not
    grads = cells.rnn(64).initial_state((2, 3))._replace(h=tiny)
    np.testing.assert_allclose(diagnostics.grad_norms_per_step(grads)["h"], 8e-25, rtol=1e-5)
    np.testing.assert_array_equal(
        diagnostics.grad_norms_per_step(grads._replace(h=tiny * 0))["h"], 0.0
    )
