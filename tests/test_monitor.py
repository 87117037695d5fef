"""Tests of rsa_jax.monitor against dense-Jacobian / NumPy references (float64)."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsa_jax.attention import msa  # noqa: E402
from rsa_jax.energy import pseudo_energy  # noqa: E402
from rsa_jax.jacobian import dense_jacobian, top_symmetric_eigenpairs  # noqa: E402
from rsa_jax.monitor import (contribution_index, krylov_contribution_index, msa_contribution_index,  # noqa: E402
                             msa_cosine, pseudo_energy_trajectory, symmetric_jacobian, top_count)

D, H, S, B, T = 8, 2, 3, 2, 4


def _attn(seed=0, bias=True):
    rng = np.random.default_rng(seed)
    dh = D // H
    p = {"wq": rng.standard_normal((H, D, dh)), "wk": rng.standard_normal((H, D, dh)),
         "wv": rng.standard_normal((H, D, dh)) / np.sqrt(D), "wo": rng.standard_normal((H, dh, D)) / np.sqrt(D)}
    if bias:
        p |= {"bq": 0.1 * rng.standard_normal((H, dh)), "bk": 0.1 * rng.standard_normal((H, dh)),
              "bv": 0.1 * rng.standard_normal((H, dh)), "bo": 0.1 * rng.standard_normal(D)}
    return p


def _linear_map(sym: np.ndarray, shape):
    """``g(x) = (sym / 2) x`` on flattened ``x``: its ``J + J^T`` is ``sym`` whatever ``x`` is."""
    m = jnp.asarray(sym / 2)
    return lambda x: (m @ x.reshape(-1)).reshape(shape)


def _random_symmetric(n, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.sort(rng.standard_normal(n))  # ascending, distinct almost surely
    return q, lam, (q * lam) @ q.T


def test_pseudo_energy_trajectory_matches_per_step():
    attn = _attn(0)
    rng = np.random.default_rng(1)
    xs, c = rng.standard_normal((T, B, S, D)), rng.standard_normal((B, S, D))
    e = jax.jit(pseudo_energy_trajectory)(attn, xs, c)
    assert e.shape == (T, B)
    ref = np.stack([[-np.sum(xs[t, b] * (c[b] + np.asarray(msa(attn, xs[t, b])))) for b in range(B)]
                    for t in range(T)])
    np.testing.assert_allclose(e, ref, rtol=1e-12)
    np.testing.assert_allclose(e[2], pseudo_energy(attn, xs[2], c), rtol=1e-12)
    with pytest.raises(ValueError):
        pseudo_energy_trajectory(attn, xs[:, :1], c)


def test_symmetric_jacobian():
    attn = _attn(2)
    x = np.random.default_rng(3).standard_normal((S, D))
    f = lambda z: msa(attn, z)
    s = jax.jit(symmetric_jacobian, static_argnums=0)(f, x)
    j = np.asarray(dense_jacobian(f, x))
    np.testing.assert_allclose(s, j + j.T, atol=1e-12)
    # linear map: S is the prescribed symmetric matrix
    _, _, sym = _random_symmetric(S * D, 4)
    np.testing.assert_allclose(symmetric_jacobian(_linear_map(sym, (S, D)), x), sym, atol=1e-12)


def test_top_count():
    assert top_count(24, 0.02) == 1 and top_count(100, 0.02) == 2 and top_count(101, 0.02) == 3
    assert top_count(5184, 0.02) == 104 and top_count(10, 1.0) == 10
    with pytest.raises(ValueError):
        top_count(10, 0.0)


def test_contribution_index_on_eigenvectors():
    n = S * D
    q, lam, sym = _random_symmetric(n, 5)
    g = _linear_map(sym, (S, D))
    ci = jax.jit(contribution_index, static_argnums=(0, 2))
    # x on the top eigenvector (largest algebraic eigenvalue): index 1; on the bottom one: 0
    np.testing.assert_allclose(ci(g, 3.0 * q[:, -1].reshape(S, D), 0.02), 1.0, atol=1e-12)
    np.testing.assert_allclose(ci(g, q[:, 0].reshape(S, D), 0.02), 0.0, atol=1e-12)
    # known coefficients: top k = ceil(0.25 * 24) = 6 eigenvectors carry sum a_top^2 / sum a^2
    a = np.arange(1.0, n + 1.0)
    x = (q @ a).reshape(S, D)
    np.testing.assert_allclose(ci(g, x, 0.25), np.sum(a[-6:] ** 2) / np.sum(a ** 2), rtol=1e-10)


def test_contribution_index_random_x_high_dim():
    # random x is spread evenly over eigenvectors: index ~ k / n = top_frac (seeded, deterministic)
    n = 400
    q, lam, sym = _random_symmetric(n, 6)
    x = np.random.default_rng(7).standard_normal((20, 20))
    value = float(contribution_index(_linear_map(sym, (20, 20)), x, 0.25))
    assert abs(value - 0.25) < 0.05


def test_contribution_index_matches_numpy_eigh():
    attn = _attn(8)
    x = np.random.default_rng(9).standard_normal((S, D))
    f = lambda z: msa(attn, z)
    j = np.asarray(dense_jacobian(f, x))
    w, v = np.linalg.eigh(j + j.T)
    for frac in (0.02, 0.25):
        k = top_count(S * D, frac)
        ref = np.sum((v[:, np.argsort(w)[::-1][:k]].T @ x.reshape(-1)) ** 2) / np.sum(x ** 2)
        np.testing.assert_allclose(contribution_index(f, x, frac), ref, rtol=1e-10)
        np.testing.assert_allclose(msa_contribution_index(attn, x, frac), ref, rtol=1e-10)
    # vmap over a batch of states
    xb = np.random.default_rng(10).standard_normal((B, S, D))
    batched = jax.vmap(functools.partial(msa_contribution_index, attn, top_frac=0.25))(xb)
    for b in range(B):
        np.testing.assert_allclose(batched[b], msa_contribution_index(attn, xb[b], 0.25), rtol=1e-10)


def test_top_symmetric_eigenpairs_known_spectrum():
    # A = Q diag(lam) Q^T with known lam: the top 3 Ritz pairs are lam's top 3 and Q's columns (up to sign)
    n = 60
    q, _ = np.linalg.qr(np.random.default_rng(11).standard_normal((n, n)))
    lam = np.linspace(-1.0, 2.0, n)
    a = jnp.asarray(q @ np.diag(lam) @ q.T)
    v0 = jnp.asarray(np.random.default_rng(12).standard_normal(n))
    top = jax.jit(lambda v: top_symmetric_eigenpairs(lambda u: a @ u, v, 3, 55))(v0)
    np.testing.assert_allclose(top.eigenvalues, lam[::-1][:3], atol=1e-10)
    np.testing.assert_allclose(np.abs(q[:, ::-1][:, :3].T @ top.eigenvectors), np.eye(3), atol=1e-6)  # ~ residual / gap
    assert np.all(top.residuals < 1e-8)
    # too few Lanczos steps: the residuals say so
    short = top_symmetric_eigenpairs(lambda u: a @ u, v0, 3, 5)
    assert np.max(short.residuals) > 1e-3
    with pytest.raises(ValueError, match="krylov_dim"):
        top_symmetric_eigenpairs(lambda u: a @ u, v0, 6, 5)


def test_krylov_contribution_index_matches_dense():
    # MSA at S = 16 tokens, D = 8: n = 128, the top 25% (k = 32); dense eigh is the reference
    attn = _attn(13)
    x = jnp.asarray(np.random.default_rng(14).standard_normal((16, D)))
    f = lambda z: msa(attn, z)
    for frac in (0.02, 0.25):
        ref = float(contribution_index(f, x, frac))
        res = krylov_contribution_index(f, x, frac)
        np.testing.assert_allclose(res.index, ref, atol=1e-8)
        assert res.residual < 1e-8 and res.gap > 0
        np.testing.assert_allclose(contribution_index(f, x, frac, krylov_dim=100), ref, atol=1e-8)
    # a Krylov space too small to settle the cut: flagged by residual vs gap, and the index is off
    rough = krylov_contribution_index(f, x, 0.25, 40)
    assert rough.residual > rough.gap
    with pytest.raises(ValueError, match="krylov_dim"):
        krylov_contribution_index(f, x, 0.25, 32)


def test_msa_cosine_matches_dense_jacobian():
    attn = _attn(11)
    xb = np.random.default_rng(12).standard_normal((B, S, D))
    cos = jax.jit(msa_cosine)(attn, xb)
    assert cos.shape == (B,)
    for b in range(B):
        y = np.asarray(msa(attn, xb[b])).reshape(-1)
        jx = np.asarray(dense_jacobian(lambda z: msa(attn, z), xb[b])) @ xb[b].reshape(-1)
        np.testing.assert_allclose(cos[b], y @ jx / (np.linalg.norm(y) * np.linalg.norm(jx)), rtol=1e-10)
    # uniform attention (W^Q = 0, no biases) makes MSA linear in X: MSA(X) = J X exactly
    lin = _attn(13, bias=False) | {"wq": np.zeros((H, D, D // H))}
    np.testing.assert_allclose(msa_cosine(lin, xb), np.ones(B), atol=1e-12)
