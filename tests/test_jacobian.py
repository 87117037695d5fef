"""Tests for rsa_jax.jacobian: Lemmas A.2/A.3, operators, power iteration, Prop. 5.1, appendix A.5.

float64 via tests/conftest.py. References: explicit NumPy block matrices, central finite differences,
dense SVD / eigendecompositions.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsa_jax.attention import msa
from rsa_jax.dynamics import itrsa_step
from rsa_jax.jacobian import (PowerIterationState, arnoldi, dense_jacobian, init_power_state, jacobian_eigenvalues,
                              leading_eigenvalues, linear_operators, pi_jacobian, power_iteration, rmsnorm_jacobian,
                              spectral_norm)
from rsa_jax.ops import omega_rotation, pi, rms_norm

# Test programs are tiny, so XLA compile time dominates the run: compile them without backend
# optimizations (numerics are unaffected at these tolerances).
JIT = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

S, D, H = 8, 8, 2  # S = D = 8: shares compiled random draws with the other test modules


def _attn(seed, d=D, h=H):
    rng = np.random.default_rng(seed)
    dh = d // h
    p = {"wq": rng.standard_normal((h, d, dh)), "wk": rng.standard_normal((h, d, dh)),
         "wv": rng.standard_normal((h, d, dh)), "wo": rng.standard_normal((h, dh, d))}
    return {k: jnp.asarray(v / np.sqrt(d)) for k, v in p.items()}


def _itrsa(seed, eta=0.8, norm="rmsnorm", n=None):
    """Closure f(x) = ItrSA step at fixed params/conditioning, plus the pieces."""
    rng = np.random.default_rng(seed + 1000)
    params = {"attn": _attn(seed), "eta": jnp.asarray(eta), "gamma": jnp.asarray(rng.standard_normal(D))}
    x = jnp.asarray(rng.standard_normal((S, D)))
    c = jnp.asarray(rng.standard_normal((S, D)))
    return (lambda z: itrsa_step(params, z, c, norm=norm, n=n)), params, x, c


def ref_blockdiag_pi(y, n, gamma=None):
    """Lemma A.2/A.3 assembled with explicit loops: diag(gamma)(I - u u^T)/||y_chunk|| per chunk."""
    y = np.asarray(y)
    s, d = y.shape
    n = d if n is None else n
    g = np.ones(d) if gamma is None else np.asarray(gamma)
    j = np.zeros((s * d, s * d))
    for i in range(s):
        for lo in range(0, d, n):
            c = y[i, lo:lo + n]
            r = np.linalg.norm(c)
            blk = np.diag(g[lo:lo + n]) @ (np.eye(n) - np.outer(c, c) / r ** 2) / r
            a = i * d + lo
            j[a:a + n, a:a + n] = blk
    return j


def assert_same_multiset(got, want, atol):
    """Eigenvalue lists equal up to order (greedy nearest matching; robust to ties in sorting)."""
    got, want = list(np.asarray(got)), list(np.asarray(want))
    assert len(got) == len(want)
    for w in want:
        k = int(np.argmin([abs(g - w) for g in got]))
        assert abs(got[k] - w) <= atol, (w, got)
        got.pop(k)


Y = np.random.default_rng(0).standard_normal((S, D)) * np.linspace(0.5, 3.0, S)[:, None]
GAMMA = np.random.default_rng(1).standard_normal(D)


def _jit_dense(f):
    """dense_jacobian(f, .) compiled as one XLA program (op-by-op dispatch is slow to compile)."""
    return JIT(lambda x: dense_jacobian(f, x))


@pytest.mark.parametrize("n", [None, 4, 2])
def test_pi_jacobian_lemma_a2(n):
    ana = np.asarray(JIT(pi_jacobian, static_argnums=1)(jnp.asarray(Y), n))
    assert ana.shape == (S * D, S * D)
    np.testing.assert_allclose(ana, ref_blockdiag_pi(Y, n), rtol=1e-10, atol=1e-12)
    auto = np.asarray(_jit_dense(lambda y: pi(y, n))(jnp.asarray(Y)))
    np.testing.assert_allclose(ana, auto, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n", [None, 4])
def test_rmsnorm_jacobian_lemma_a3(n):
    ana = np.asarray(JIT(rmsnorm_jacobian, static_argnums=2)(jnp.asarray(Y), jnp.asarray(GAMMA), n))
    np.testing.assert_allclose(ana, ref_blockdiag_pi(Y, n, GAMMA), rtol=1e-10, atol=1e-12)
    auto = np.asarray(_jit_dense(lambda y: rms_norm(y, jnp.asarray(GAMMA), n))(jnp.asarray(Y)))
    np.testing.assert_allclose(ana, auto, rtol=1e-9, atol=1e-10)


def test_dense_jacobian_matches_central_differences():
    f, _, x, _ = _itrsa(0, norm="rmsnorm", n=4)
    fj = JIT(f)
    j = np.asarray(_jit_dense(f)(x))
    assert j.shape == (S * D, S * D)
    x0, h = np.asarray(x), 1e-6
    fd = np.empty_like(j)
    for k in range(S * D):
        e = np.zeros(S * D)
        e[k] = h
        plus = np.asarray(fj(jnp.asarray(x0 + e.reshape(S, D))))
        minus = np.asarray(fj(jnp.asarray(x0 - e.reshape(S, D))))
        fd[:, k] = ((plus - minus) / (2 * h)).ravel()
    np.testing.assert_allclose(j, fd, rtol=1e-6, atol=1e-7)


def test_dense_jacobian_non_square_and_shapes():
    m = np.random.default_rng(2).standard_normal((5, 6))
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 3)))
    j = np.asarray(_jit_dense(lambda z: jnp.tanh(jnp.asarray(m) @ z.reshape(-1)))(x))
    ref = (1 - np.tanh(m @ np.asarray(x).ravel()) ** 2)[:, None] * m
    np.testing.assert_allclose(j, ref, rtol=1e-12, atol=1e-14)
    for chunk in (1, 4, 100):   # columns pushed in batches (lax.map, a ragged last batch) or all at once
        jc = jax.jit(lambda z: dense_jacobian(lambda y: jnp.tanh(jnp.asarray(m) @ y.reshape(-1)), z, chunk))(x)
        np.testing.assert_allclose(jc, ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="chunk"):
        dense_jacobian(lambda z: z, x, 0)


def test_linear_operators_match_dense_products():
    f, _, x, _ = _itrsa(1)
    j = np.asarray(_jit_dense(f)(x))

    @JIT
    def ops(x, v, u):
        y, jvp, vjp = linear_operators(f, x)
        return y, jvp(v), vjp(u), jvp(2.0 * v)

    rng = np.random.default_rng(4)
    for _ in range(2):
        v, u = rng.standard_normal((S, D)), rng.standard_normal((S, D))
        y, jv, jtu, jv2 = (np.asarray(a) for a in ops(x, jnp.asarray(v), jnp.asarray(u)))
        np.testing.assert_allclose(y, np.asarray(JIT(f)(x)), rtol=1e-13, atol=1e-14)
        assert jv.shape == jtu.shape == (S, D)
        np.testing.assert_allclose(jv2, 2.0 * jv, rtol=1e-12, atol=1e-14)  # linear
        np.testing.assert_allclose(jv.ravel(), j @ v.ravel(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(jtu.ravel(), j.T @ u.ravel(), rtol=1e-10, atol=1e-12)


def _gap_map():
    """A non-square linear map (S, D) -> (10,) with singular values 3, 1.5, 1, ..., 0.1."""
    rng = np.random.default_rng(5)
    u, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    v, _ = np.linalg.qr(rng.standard_normal((S * D, S * D)))
    s = np.concatenate([[3.0, 1.5], np.linspace(1.0, 0.1, 8)])
    m = jnp.asarray((u * s) @ v[:, :10].T)
    return (lambda x: m @ x.reshape(-1)), m


power_j = JIT(power_iteration, static_argnums=(0, 1), static_argnames=("max_iters", "tol"))


def test_spectral_norm_linear_map_with_gap():
    f, m = _gap_map()
    x = jnp.zeros((S, D))
    top = float(jnp.linalg.svd(m, compute_uv=False)[0])
    sigma, st = JIT(spectral_norm, static_argnums=0, static_argnames=("max_iters", "tol"))(
        f, x, key=jax.random.PRNGKey(1), tol=1e-12, max_iters=500)
    assert st.v.shape == (S, D) and int(st.iterations) < 500
    assert abs(float(sigma) - top) <= 1e-6 * top
    assert float(sigma) <= top * (1 + 1e-12)  # an estimate from below
    # v is the top right singular vector
    _, _, vt = np.linalg.svd(np.asarray(m))
    assert abs(abs(np.dot(np.asarray(st.v).ravel(), vt[0])) - 1.0) < 1e-8
    # power_iteration directly, from an explicit state
    _, jvp, vjp = linear_operators(f, x)
    st2 = power_j(jvp, vjp, init_power_state(jax.random.PRNGKey(2), x), tol=1e-12, max_iters=500)
    assert abs(float(st2.sigma) - top) <= 1e-6 * top


def test_power_iteration_tol_zero_runs_exactly_max_iters():
    """The gap map converges to machine precision in ~20 iterations; tol=0 must still run all of them."""
    f, _ = _gap_map()
    x = jnp.zeros((S, D))
    _, jvp, vjp = linear_operators(f, x)
    st0 = init_power_state(jax.random.PRNGKey(0), x)
    for max_iters in (1, 60):
        assert int(power_j(jvp, vjp, st0, max_iters=max_iters, tol=0.0).iterations) == max_iters
    assert int(power_j(jvp, vjp, st0, max_iters=60, tol=1e-8).iterations) < 60


@JIT
def _itrsa_sigma(params, x, c, v0, sigma0):
    f = lambda z: itrsa_step(params, z, c, norm="rmsnorm")
    st = PowerIterationState(v0, sigma0, jnp.zeros((), jnp.int32))
    return spectral_norm(f, x, st, tol=1e-13, max_iters=3000)


@pytest.mark.parametrize("seed", [0, 2])
def test_spectral_norm_itrsa_step_and_warm_start(seed):
    f, params, x, c = _itrsa(seed)
    top = np.linalg.svd(np.asarray(_jit_dense(f)(x)), compute_uv=False)[0]
    st0 = init_power_state(jax.random.PRNGKey(seed), x)
    sigma, st = _itrsa_sigma(params, x, c, st0.v, st0.sigma)
    assert int(st.iterations) < 3000
    assert abs(float(sigma) - top) <= 1e-6 * top
    # warm start from the returned state: converges again, in fewer iterations
    sigma2, st2 = _itrsa_sigma(params, x, c, st.v, st.sigma)
    assert int(st2.iterations) < int(st.iterations)
    assert abs(float(sigma2) - top) <= 1e-6 * top


def test_jacobian_eigenvalues_of_linear_map():
    known = np.array([2.0, -1.5, 0.5 + 0.8j, 0.5 - 0.8j, 0.3, -0.1])
    rng = np.random.default_rng(6)
    blk = np.diag([2.0, -1.5, 0.0, 0.0, 0.3, -0.1])
    blk[2:4, 2:4] = [[0.5, 0.8], [-0.8, 0.5]]
    p = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    m = p @ blk @ np.linalg.inv(p)
    mj = jnp.asarray(m)
    ev = jacobian_eigenvalues(JIT(lambda x: (mj @ x.reshape(-1)).reshape(2, 3)), jnp.zeros((2, 3)))
    assert ev.shape == (6,) and np.iscomplexobj(ev)
    assert np.all(np.diff(np.abs(ev)) <= 1e-12)  # sorted by decreasing modulus
    assert_same_multiset(ev, np.linalg.eigvals(m), atol=1e-10)
    assert_same_multiset(ev, known, atol=1e-10)


def test_leading_eigenvalues_of_non_normal_linear_map():
    """Arnoldi's outermost Ritz values against known eigenvalues of V diag V^-1 (non-normal)."""
    n, rng = 40, np.random.default_rng(7)
    blk = np.diag(np.concatenate([[1.5, 0.0, 0.0, -1.1], 0.6 * rng.random(n - 4) - 0.3]))
    blk[1:3, 1:3] = [[1.2, 0.5], [-0.5, 1.2]]  # eigenvalues 1.2 +- 0.5i
    v = rng.standard_normal((n, n))
    a = jnp.asarray(v @ blk @ np.linalg.inv(v))
    res = leading_eigenvalues(lambda x: (a @ x.reshape(-1)).reshape(4, 10), jnp.zeros((4, 10)), k=4, krylov_dim=30)
    assert res.eigenvalues.shape == res.residuals.shape == (4,)
    assert np.all(np.diff(np.abs(res.eigenvalues)) <= 1e-12)
    assert_same_multiset(res.eigenvalues, [1.5, 1.2 + 0.5j, 1.2 - 0.5j, -1.1], atol=1e-8)
    assert res.residuals.max() < 1e-8
    # too few Krylov steps: the values are not yet converged and the residuals say so
    early = leading_eigenvalues(lambda x: a @ x, jnp.zeros(n), k=4, krylov_dim=4)
    assert early.residuals.max() > 1e-3


def test_leading_eigenvalues_match_dense_on_itrsa_step():
    f, _, x, _ = _itrsa(4)
    dense = jacobian_eigenvalues(JIT(f), x)
    res = leading_eigenvalues(f, x, k=3, krylov_dim=S * D - 1)
    assert_same_multiset(res.eigenvalues, dense[:3], atol=1e-8)
    assert abs(dense[0]) > 0.1  # not the null eigenvalues


def test_arnoldi_relation_and_breakdown():
    rng = np.random.default_rng(8)
    a = jnp.asarray(rng.standard_normal((12, 12)))
    vs, h, lost = arnoldi(lambda v: a @ v, jnp.asarray(rng.standard_normal(12)), 6)
    np.testing.assert_allclose(vs @ vs.T, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(a @ vs[:6].T, vs.T @ h, atol=1e-12)
    assert np.all(np.asarray(h)[np.tril_indices(7, -2)] == 0) and np.all(lost == 0)  # Hessenberg, no breakdown
    # rank 2: the Krylov space is invariant after 2-3 steps; no NaN, V stays orthonormal, the exact
    # values survive with small residuals
    low = jnp.diag(jnp.concatenate([jnp.array([3.0, 2.0]), jnp.zeros(10)]))
    vs, h, lost = arnoldi(lambda v: low @ v, jnp.asarray(rng.standard_normal(12)), 8)
    np.testing.assert_allclose(vs @ vs.T, np.eye(9), atol=1e-12)
    np.testing.assert_allclose(low @ vs[:8].T, vs.T @ h, atol=1e-12)
    assert float(jnp.max(lost)) < 1e-12
    res = leading_eigenvalues(lambda x: low @ x, jnp.zeros(12), k=3, krylov_dim=8)
    np.testing.assert_allclose(res.eigenvalues, [3.0, 2.0, 0.0], atol=1e-10)
    assert res.residuals.max() < 1e-10
    # float32, a non-normal matrix whose second Krylov direction is 1e-4 of the first (below the
    # breakdown threshold): the discarded part shows in the residual instead of a residual of 0
    b = np.diag(np.full(30, 0.5))
    b[0, :2] = [2.0, 1.0]
    b32 = jnp.asarray(b, jnp.float32)
    start = jnp.zeros(30, jnp.float32).at[0].set(1.0).at[1].set(1e-4)
    vs32, h, lost = arnoldi(lambda v: b32 @ v, start, 5)
    assert float(lost[0]) > 1e-5
    theta, y = np.linalg.eig(np.asarray(h[:5], np.float64))
    top = int(np.argmax(np.abs(theta)))
    v = np.asarray(vs32, np.float64)[:5].T @ y[:, top]
    true_res = np.linalg.norm(b @ v - theta[top] * v) / np.linalg.norm(v)
    lost = np.asarray(lost, np.float64)
    bound = (abs(float(h[5, 4])) * abs(y[4, top]) + lost @ np.abs(y[:, top])) / np.linalg.norm(y[:, top])
    assert true_res > 1e-5 and bound >= 0.9 * true_res
    with pytest.raises(ValueError, match="krylov_dim"):
        leading_eigenvalues(lambda x: x, jnp.zeros(12), k=3, krylov_dim=12)


# --- Prop. 5.1 -----------------------------------------------------------------------------

@partial(JIT, static_argnames="n")
def _prop51_pieces(params, x, c, n):
    f = lambda z: itrsa_step(params, z, c, norm="rmsnorm", n=n)
    g = lambda z: msa(params["attn"], z)
    y = x + params["eta"] * (c + g(x))
    return y, dense_jacobian(f, x), dense_jacobian(g, x), rmsnorm_jacobian(y, params["gamma"], n)


@pytest.mark.parametrize("seed,eta,n", [(0, 0.8, None), (1, -0.6, None), (2, 1.5, None), (3, 1.0, 4)])
def test_prop_5_1_rmsnorm_jacobian_bound(seed, eta, n):
    _, params, x, c = _itrsa(seed, eta=eta, norm="rmsnorm", n=n)
    gamma = np.asarray(params["gamma"])
    y, j, j_msa, j_rms = (np.asarray(a) for a in _prop51_pieces(params, x, c, n=n))
    nn = D if n is None else n
    r = np.linalg.norm(y.reshape(S, D // nn, nn), axis=-1).min()  # min over tokens (chunks)
    # chain rule with Lemma A.3: dRMSNorm(Y)/dX = J_RMS(Y) (I + eta J_MSA)
    np.testing.assert_allclose(j, j_rms @ (np.eye(S * D) + eta * j_msa), rtol=1e-9, atol=1e-10)
    lhs = np.linalg.svd(j, compute_uv=False)[0]
    rhs = np.abs(gamma).max() / r * (1 + abs(eta) * np.linalg.svd(j_msa, compute_uv=False)[0])
    assert lhs <= rhs * (1 + 1e-12)
    assert lhs > 1e-2 * rhs  # a meaningful comparison, not a vacuous one


# --- Appendix A.5: oscillation ------------------------------------------------------------

@pytest.mark.parametrize("nosc,eta,w", [(4, 1.0, 0.7), (8, 0.4, -2.5)])
def test_a5_normalization_bounds_oscillatory_eigenvalues(nosc, eta, w):
    x = np.random.default_rng(nosc).standard_normal(nosc)
    x = jnp.asarray(x / np.linalg.norm(x))
    om = np.zeros((nosc, nosc))  # Omega, equal |w| on every pair: (x0, x1) -> (w x1, -w x0)
    for p in range(nosc // 2):
        om[2 * p, 2 * p + 1], om[2 * p + 1, 2 * p] = w, -w
    y = np.asarray(x) + eta * om @ np.asarray(x)
    np.testing.assert_allclose(y @ y, 1 + eta ** 2 * w ** 2, rtol=1e-12)  # eq. 82
    normalized = JIT(lambda z: pi(z + eta * omega_rotation(z, w)))
    j = np.asarray(dense_jacobian(normalized, x))
    # eq. 77: J = (I - y y^T/||y||^2)(I + eta Omega)/||y||
    ref = (np.eye(nosc) - np.outer(y, y) / (y @ y)) @ (np.eye(nosc) + eta * om) / np.linalg.norm(y)
    np.testing.assert_allclose(j, ref, rtol=1e-10, atol=1e-12)
    ev = jacobian_eigenvalues(normalized, x)
    assert_same_multiset(ev, np.linalg.eigvals(ref), atol=1e-10)
    assert np.abs(ev).max() <= 1 + 1e-12
    assert np.linalg.svd(j, compute_uv=False)[0] <= 1 + 1e-12  # eq. 85-87
    assert np.abs(ev).min() < 1e-10  # the radial direction x is annihilated
    ev_raw = jacobian_eigenvalues(JIT(lambda z: z + eta * omega_rotation(z, w)), x)
    np.testing.assert_allclose(np.abs(ev_raw), np.sqrt(1 + eta ** 2 * w ** 2), rtol=1e-12)
    assert np.abs(ev_raw).min() > 1.0
