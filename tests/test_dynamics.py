"""Tests for rsa_jax.dynamics against hand-written NumPy formulas (float64 via tests/conftest.py)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

from rsa_jax.dynamics import (akorn_step, integrate, iterate, itrsa_step, msa_field, projected_sa_field,
                              rollout)
from reference import numpy_attention_params  # noqa: E402

S, D, H = 6, 8, 2
RNG = np.random.default_rng(0)

# Test programs are tiny, so XLA compile time dominates the run: compile them without backend
# optimizations (numerics are unaffected at these tolerances).
JIT = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# jitted entry points (one XLA compilation per configuration instead of op-by-op dispatch)
itrsa_j = JIT(itrsa_step, static_argnames=("norm", "n", "fused"))
akorn_j = JIT(akorn_step, static_argnames=("n", "norm", "fused"))
rollout_j = JIT(rollout, static_argnums=(0, 4), static_argnames=("trajectory",))
iterate_j = JIT(iterate, static_argnums=(0, 2))
integrate_j = JIT(integrate, static_argnums=(0, 3, 4))
expm_j = JIT(expm)


def _attn(d=D, h=H, *, out_proj=True, seed=0):
    return {k: jnp.asarray(v) for k, v in numpy_attention_params(d, h, out_proj=out_proj, seed=seed).items()}


def ref_msa(p, x):
    """sum_h softmax(beta X Wq_h (X Wk_h)^T) X Wv_h W^O_h, direct NumPy (no biases)."""
    p = {k: np.asarray(v) for k, v in p.items()}
    out = 0.0
    for h in range(p["wq"].shape[0]):
        q, k, v = x @ p["wq"][h], x @ p["wk"][h], x @ p["wv"][h]
        z = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
        a = np.exp(z - z.max(-1, keepdims=True))
        sa = (a / a.sum(-1, keepdims=True)) @ v
        out = out + (sa @ p["wo"][h] if "wo" in p else sa)
    return out


def ref_chunkwise(y, n, fn):
    """Applies ``fn(chunk, lo, hi, idx)`` chunk by chunk with explicit loops."""
    n = y.shape[-1] if n is None else n
    out = np.empty_like(y)
    for idx in np.ndindex(*y.shape[:-1]):
        for lo in range(0, y.shape[-1], n):
            out[idx + (slice(lo, lo + n),)] = fn(y[idx][lo:lo + n], lo, lo + n, idx)
    return out


def ref_norm(y, kind, gamma=None, n=None):
    if kind == "none":
        return y
    g = np.ones(y.shape[-1]) if kind == "pi" else gamma
    return ref_chunkwise(y, n, lambda c, lo, hi, _: g[lo:hi] * c / np.linalg.norm(c))


def omega_matrix(d, w):
    w = np.broadcast_to(np.asarray(w, float), (d // 2,))
    om = np.zeros((d, d))
    for p in range(d // 2):
        om[2 * p, 2 * p + 1], om[2 * p + 1, 2 * p] = w[p], -w[p]
    return om


def ref_itrsa(params, x, c, norm, n=None):
    y = x + params["eta"] * (c + ref_msa(params["attn"], x))
    return ref_norm(y, norm, np.asarray(params.get("gamma")) if "gamma" in params else None, n)


def ref_akorn(params, x, c, n, norm="pi"):
    y = c + ref_msa(params["attn"], x)
    om = omega_matrix(x.shape[-1], params["omega"])
    tang = ref_chunkwise(y, n, lambda yc, lo, hi, idx: yc - x[idx][lo:hi] * np.dot(x[idx][lo:hi], yc))
    dx = x @ om.T + tang
    return ref_norm(x + params["eta"] * dx, norm, np.asarray(params.get("gamma")) if "gamma" in params else None, n)


def _itrsa_params(eta=0.7):
    return {"attn": _attn(), "eta": jnp.asarray(eta), "gamma": jnp.asarray(RNG.standard_normal(D))}


X = RNG.standard_normal((S, D))
C = RNG.standard_normal((S, D))


def _unit_chunks(x, n):
    return ref_norm(x, "pi", n=n)


@pytest.mark.parametrize("norm,n", [("none", None), ("pi", None), ("rmsnorm", None), ("rmsnorm", 4), ("pi", 2)])
def test_itrsa_step_formula(norm, n):
    params = _itrsa_params()
    out = np.asarray(itrsa_j(params, jnp.asarray(X), jnp.asarray(C), norm=norm, n=n))
    np.testing.assert_allclose(out, ref_itrsa(params, X, C, norm, n), rtol=1e-10, atol=1e-12)


def test_itrsa_step_negative_eta_and_batch():
    params = _itrsa_params(eta=-0.4)
    xb, cb = RNG.standard_normal((2, S, D)), RNG.standard_normal((2, S, D))
    out = np.asarray(itrsa_j(params, jnp.asarray(xb), jnp.asarray(cb)))  # default rmsnorm
    for b in range(2):
        np.testing.assert_allclose(out[b], ref_itrsa(params, xb[b], cb[b], "rmsnorm"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n,omega,norm", [(4, 0.5, "pi"), (8, 1.3, "pi"), (2, "pairs", "pi"), (4, 0.5, "rmsnorm")])
def test_akorn_step_formula(n, omega, norm):
    omega = RNG.standard_normal(D // 2) if omega == "pairs" else omega
    params = {"attn": _attn(), "eta": jnp.asarray(0.9), "omega": jnp.asarray(omega),
              "gamma": jnp.asarray(RNG.standard_normal(D))}
    x = _unit_chunks(X, n)
    out = np.asarray(akorn_j(params, jnp.asarray(x), jnp.asarray(C), n=n, norm=norm))
    np.testing.assert_allclose(out, ref_akorn(params, x, C, n, norm), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["itrsa", "akorn"])
def test_rollout_equals_python_loop(kind):
    T = 3
    if kind == "itrsa":
        params = _itrsa_params()
        raw, step = partial(itrsa_step, norm="rmsnorm", n=4), partial(itrsa_j, norm="rmsnorm", n=4)
        x0 = X
    else:
        params = {"attn": _attn(), "eta": jnp.asarray(0.9), "omega": jnp.asarray(0.5)}
        raw, step = partial(akorn_step, n=4), partial(akorn_j, n=4)
        x0 = _unit_chunks(X, 4)
    x0, c = jnp.asarray(x0), jnp.asarray(C)
    final, xs = rollout_j(raw, params, x0, c, T, trajectory=True)
    assert xs.shape == (T, S, D)
    x, ref = x0, []
    for _ in range(T):  # separately compiled single steps
        x = step(params, x, c)
        ref.append(np.asarray(x))
    np.testing.assert_allclose(xs, np.stack(ref), rtol=1e-10, atol=1e-12)
    xs = np.asarray(xs)
    np.testing.assert_array_equal(xs[-1], np.asarray(final))
    # the trajectory moves (so "last = final" is not satisfied trivially by a fixed point)
    assert np.abs(ref[0] - ref[-1]).max() > 1e-3
    if kind == "akorn":
        # without trajectory: only the final state
        np.testing.assert_allclose(np.asarray(rollout_j(raw, params, x0, c, T)), ref[-1], rtol=1e-12, atol=1e-13)
    else:
        # iterate on the closure agrees
        np.testing.assert_allclose(np.asarray(iterate_j(lambda z: raw(params, z, c), x0, T)), ref[-1],
                                   rtol=1e-12, atol=1e-13)
        # the loop itself matches the NumPy formula
        xr = X
        for _ in range(T):
            xr = ref_itrsa(params, xr, C, "rmsnorm", 4)
        np.testing.assert_allclose(ref[-1], xr, rtol=1e-9, atol=1e-11)


def test_rollout_batched_and_akorn_keeps_unit_oscillators():
    T, n = 4, 4
    params = {"attn": _attn(), "eta": jnp.asarray(1.0), "omega": jnp.asarray(0.5)}
    x0 = _unit_chunks(RNG.standard_normal((2, S, D)), n)
    c = 3.0 * RNG.standard_normal((2, S, D))
    final, xs = rollout_j(partial(akorn_step, n=n), params, jnp.asarray(x0), jnp.asarray(c), T, trajectory=True)
    assert xs.shape == (T, 2, S, D) and final.shape == (2, S, D)
    norms = np.linalg.norm(np.asarray(xs).reshape(T, 2, S, D // n, n), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)


@pytest.mark.parametrize("step", [itrsa_step, akorn_step])
def test_state_shape_mismatch_raises(step):
    params = {"attn": _attn(), "eta": jnp.asarray(1.0), "omega": jnp.asarray(0.5), "gamma": jnp.ones(D)}
    with pytest.raises(ValueError) as err:
        step(params, jnp.ones((S, D)), jnp.ones((S + 1, D)))
    assert f"({S}, {D})" in str(err.value) and f"({S + 1}, {D})" in str(err.value)
    with pytest.raises(ValueError) as err:
        step(params, jnp.ones((D,)), jnp.ones((D,)))
    assert f"({D},)" in str(err.value)


def test_continuous_fields():
    x = _unit_chunks(X, None)
    p1 = _attn(h=1, out_proj=False)
    sa = ref_msa(p1, x)
    ref = np.stack([(np.eye(D) - np.outer(x[i], x[i])) @ sa[i] for i in range(S)])
    np.testing.assert_allclose(np.asarray(JIT(projected_sa_field)(p1, jnp.asarray(x))), ref,
                               rtol=1e-10, atol=1e-12)
    p2 = _attn(h=2, out_proj=False)
    np.testing.assert_allclose(np.asarray(JIT(msa_field)(p2, jnp.asarray(X))), ref_msa(p2, X),
                               rtol=1e-10, atol=1e-12)


A_LIN = np.array([[-0.3, 1.2, 0.0, 0.1],
                  [-1.1, -0.2, 0.4, 0.0],
                  [0.0, -0.5, 0.1, 0.9],
                  [0.2, 0.0, -0.8, -0.4]])
X0_LIN = np.array([1.0, -0.5, 0.3, 2.0])


def _lin_error(method, dt, t_end=1.0):
    a = jnp.asarray(A_LIN)
    steps = int(round(t_end / dt))
    xs = np.asarray(integrate_j(lambda x: a @ x, jnp.asarray(X0_LIN), dt, steps, method))
    assert xs.shape == (steps + 1, 4)
    exact = np.asarray(expm_j(a * t_end)) @ X0_LIN
    return np.linalg.norm(xs[-1] - exact) / np.linalg.norm(exact)


def test_rk4_linear_ode_matches_expm():
    a = jnp.asarray(A_LIN)
    xs = np.asarray(integrate_j(lambda x: a @ x, jnp.asarray(X0_LIN), 0.01, 100, "rk4"))
    assert xs.shape == (101, 4)
    np.testing.assert_array_equal(xs[0], X0_LIN)
    for k in (25, 50, 100):  # along the whole trajectory, not only at the end
        exact = np.asarray(expm_j(a * (0.01 * k))) @ X0_LIN
        np.testing.assert_allclose(xs[k], exact, rtol=0, atol=1e-8)
    # and not trivially: one RK4 step of size 0.25 is far off (fourth-order error ~ dt^5 per step)
    coarse = np.asarray(integrate_j(lambda x: a @ x, jnp.asarray(X0_LIN), 0.25, 4, "rk4"))
    assert np.abs(coarse[-1] - xs[-1]).max() > 1e-5


def test_euler_is_first_order():
    e1, e2 = _lin_error("euler", 0.02), _lin_error("euler", 0.01)
    assert e1 > 1e-3  # a real discretization error, not rounding
    assert 1.8 < e1 / e2 < 2.2


def test_integrate_bad_method():
    with pytest.raises(ValueError, match="midpoint"):
        integrate(lambda x: x, jnp.ones(2), 0.1, 2, "midpoint")
