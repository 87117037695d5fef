"""Tests for rsa_jax.attention against a direct NumPy implementation (float64 via tests/conftest.py)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsa_jax.attention import (attention_weights, full_matrices, init_attention, msa, sa_heads,
                               symmetric_multi_head, symmetric_single_head, with_spectral_norms)
from reference import numpy_attention_params  # noqa: E402

S = 5

# Test programs are tiny, so XLA compile time dominates the run: compile them without backend
# optimizations (numerics are unaffected at these tolerances).
JIT = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# jitted once per parameter structure/shape: far fewer XLA compilations than op-by-op dispatch
msa_j = JIT(msa, static_argnames=("beta", "fused"))
weights_j = JIT(attention_weights, static_argnames=("beta",))
init_j = JIT(init_attention, static_argnums=(1, 2), static_argnames=("bias", "out_proj", "dtype", "std"))
single_j = JIT(symmetric_single_head, static_argnums=1, static_argnames=("scale", "dtype"))
multi_j = JIT(symmetric_multi_head, static_argnums=(1, 2), static_argnames=("scale", "dtype"))


def _np(p):
    return {k: np.asarray(v) for k, v in p.items()}


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ref_msa(p, x, beta=None):
    """softmax(beta (X Wq_h + bq)(X Wk_h + bk)^T)(X Wv_h + bv), summed over h through the row blocks of W^O.

    Built from the concatenated D x (H D_H) matrices, so it also pins the per-head layout.
    """
    p = _np(p)
    h, d, dh = p["wq"].shape
    dv = p["wv"].shape[2]
    beta = 1.0 / np.sqrt(dh) if beta is None else beta
    wq, wk, wv = (np.concatenate([p[k][i] for i in range(h)], axis=1) for k in ("wq", "wk", "wv"))
    out = np.zeros(x.shape[:-1] + (d,))
    attn = []
    for i in range(h):
        cq, cv = slice(i * dh, (i + 1) * dh), slice(i * dv, (i + 1) * dv)
        q, k, v = x @ wq[:, cq], x @ wk[:, cq], x @ wv[:, cv]
        if "bq" in p:
            q, k, v = q + p["bq"][i], k + p["bk"][i], v + p["bv"][i]
        a = _softmax(beta * q @ np.swapaxes(k, -1, -2))
        attn.append(a)
        sa = a @ v
        out = out + (sa @ p["wo"][i] if "wo" in p else sa)
    if "bo" in p:
        out = out + p["bo"]
    return out, np.stack(attn, axis=-3)


def _params(d, h, *, bias, out_proj, seed=0):
    """Random parameters in the library layout, drawn with NumPy (cheap; init_attention is tested apart)."""
    return {k: jnp.asarray(v) for k, v in numpy_attention_params(d, h, bias=bias, out_proj=out_proj,
                                                                 seed=seed).items()}


# (D, H, bias, out_proj)
CASES = [(8, 2, True, True), (16, 4, False, True), (8, 2, False, False), (16, 4, True, False)]  # H = 1: init test


@pytest.mark.parametrize("d,h,bias,out_proj", CASES)
def test_msa_matches_numpy(d, h, bias, out_proj):
    p = _params(d, h, bias=bias, out_proj=out_proj)
    x = np.random.default_rng(1).standard_normal((S, d))
    ref, ref_a = ref_msa(p, x)
    np.testing.assert_allclose(np.asarray(msa_j(p, jnp.asarray(x))), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(weights_j(p, jnp.asarray(x))), ref_a, rtol=1e-10, atol=1e-13)
    if (d, h, bias) == (8, 2, True):  # explicit beta is honoured (once: each beta is a new compilation)
        ref2, _ = ref_msa(p, x, beta=0.37)
        np.testing.assert_allclose(np.asarray(msa_j(p, jnp.asarray(x), beta=0.37)), ref2, rtol=1e-10, atol=1e-12)


def test_sa_heads_and_weights():
    p = _params(8, 2, bias=True, out_proj=True)
    x = np.random.default_rng(2).standard_normal((S, 8))
    _, a = ref_msa(p, x)
    heads = np.asarray(JIT(sa_heads)(p, jnp.asarray(x)))
    assert heads.shape == (2, S, 4)
    pn = _np(p)
    for i in range(2):
        np.testing.assert_allclose(heads[i], a[i] @ (x @ pn["wv"][i] + pn["bv"][i]), rtol=1e-10, atol=1e-12)
    w = np.asarray(weights_j(p, jnp.asarray(x)))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)
    # MSA = sum_h SA_h W^O_h + b^O
    np.testing.assert_allclose(np.asarray(msa_j(p, jnp.asarray(x))),
                               np.einsum("hsv,hvd->sd", heads, pn["wo"]) + pn["bo"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lead,bias", [((), False), ((2, 3), True)])
def test_fused_equals_einsum(lead, bias):
    """fused=True goes through jax.nn.dot_product_attention, whose XLA path always runs the softmax
    in float32 (even for float64 inputs), so agreement is only to ~1e-7, not to float64 rounding."""
    p = _params(16, 4, bias=bias, out_proj=True)
    x = jnp.asarray(np.random.default_rng(3).standard_normal(lead + (S, 16)))
    a, b = np.asarray(msa_j(p, x, fused=True)), np.asarray(msa_j(p, x))
    assert a.shape == b.shape == lead + (S, 16)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batched_equals_per_sample():
    p = _params(8, 2, bias=True, out_proj=True)
    xb = np.random.default_rng(4).standard_normal((2, 3, S, 8))
    out = np.asarray(msa_j(p, jnp.asarray(xb)))
    aw = np.asarray(weights_j(p, jnp.asarray(xb)))
    assert out.shape == (2, 3, S, 8) and aw.shape == (2, 3, 2, S, S)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], np.asarray(msa_j(p, jnp.asarray(xb[i, j]))), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(out[i, j], ref_msa(p, xb[i, j])[0], rtol=1e-10, atol=1e-12)


def test_full_matrices_layout():
    p = _params(16, 4, bias=False, out_proj=True)
    f = {k: np.asarray(v) for k, v in full_matrices(p).items()}
    pn = _np(p)
    assert f["WQ"].shape == f["WK"].shape == f["WV"].shape == (16, 16) and f["WO"].shape == (16, 16)
    for h in range(4):
        cols = slice(4 * h, 4 * h + 4)
        np.testing.assert_array_equal(f["WQ"][:, cols], pn["wq"][h])
        np.testing.assert_array_equal(f["WK"][:, cols], pn["wk"][h])
        np.testing.assert_array_equal(f["WV"][:, cols], pn["wv"][h])
        np.testing.assert_array_equal(f["WO"][cols, :], pn["wo"][h])
    # no W^O: no "WO" entry, and W^V is (D, H*D)
    g = full_matrices(_params(8, 2, bias=False, out_proj=False))
    assert "WO" not in g and g["WV"].shape == (8, 16)


def test_init_shapes_and_scale():
    p = init_j(jax.random.PRNGKey(0), 8, 2, out_proj=False, bias=True, dtype=jnp.float64)
    assert set(p) == {"wq", "wk", "wv", "bq", "bk", "bv"}  # no W^O, no b^O
    assert p["wq"].shape == p["wk"].shape == (2, 8, 4) and p["wv"].shape == (2, 8, 8)  # D_V = D
    assert p["bq"].shape == p["bk"].shape == (2, 4) and p["bv"].shape == (2, 8)
    assert p["wq"].dtype == jnp.float64
    np.testing.assert_array_equal(p["bq"], 0.0)
    allw = np.concatenate([np.asarray(p[k]).ravel() for k in ("wq", "wk", "wv")])
    assert abs(allw.std() * np.sqrt(8) - 1.0) < 0.2  # std 1/sqrt(D)
    assert not np.allclose(p["wq"], p["wk"])  # independent draws
    x = np.random.default_rng(5).standard_normal((S, 8))
    np.testing.assert_allclose(np.asarray(msa_j(p, jnp.asarray(x))), ref_msa(p, x)[0], rtol=1e-10, atol=1e-12)
    q = init_j(jax.random.PRNGKey(1), 8, 1, dtype=jnp.float64)
    assert set(q) == {"wq", "wk", "wv", "wo"}
    assert q["wq"].shape == q["wv"].shape == q["wo"].shape == (1, 8, 8)
    np.testing.assert_allclose(np.asarray(msa_j(q, jnp.asarray(x))), ref_msa(q, x)[0], rtol=1e-10, atol=1e-12)


def test_shape_errors_name_the_shapes():
    p = _params(8, 2, bias=False, out_proj=True)
    with pytest.raises(ValueError) as err:  # wrong D
        msa(p, jnp.ones((S, 10)))
    assert "(5, 10)" in str(err.value) and "(2, 8, 4)" in str(err.value)
    with pytest.raises(ValueError) as err:  # rank 1 X
        msa(p, jnp.ones((8,)))
    assert "(8,)" in str(err.value)
    with pytest.raises(ValueError) as err:  # heads disagree between W^Q and W^K
        msa(dict(p, wk=p["wk"][:1]), jnp.ones((S, 8)))
    assert "(1, 8, 4)" in str(err.value) and "(2, 8, 4)" in str(err.value)
    with pytest.raises(ValueError) as err:  # W^O with the wrong H
        msa(dict(p, wo=p["wo"][:1]), jnp.ones((S, 8)))
    assert "(1, 4, 8)" in str(err.value) and "(2, 4, 8)" in str(err.value)
    with pytest.raises(ValueError) as err:  # no W^O but D_V != D
        msa({k: v for k, v in p.items() if k != "wo"}, jnp.ones((S, 8)))
    assert "D_V=4" in str(err.value) and "D=8" in str(err.value)
    with pytest.raises(ValueError) as err:  # 2-D weight
        attention_weights(dict(p, wq=p["wq"][0]), jnp.ones((S, 8)))
    assert "(8, 4)" in str(err.value)
    with pytest.raises(ValueError, match="heads=3 must divide D=8"):
        init_attention(jax.random.PRNGKey(0), 8, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_symmetric_single_head(seed):
    p = _np(single_j(jax.random.PRNGKey(seed), 8, scale=1.5, dtype=jnp.float64))
    assert p["wq"].shape == p["wk"].shape == p["wv"].shape == (1, 8, 8) and "wo" not in p
    a = p["wq"][0] @ p["wk"][0].T
    np.testing.assert_allclose(a, a.T, atol=1e-12)
    np.testing.assert_allclose(p["wv"][0], a, atol=1e-12)
    # not trivially zero / identity
    assert np.linalg.norm(a) > 0.1 and np.linalg.norm(a - np.diag(np.diag(a))) > 0.1


@pytest.mark.parametrize("d,h", [(8, 2), (8, 4)])
def test_symmetric_multi_head(d, h):
    s = 1.3
    p = _np(multi_j(jax.random.PRNGKey(d + h), d, h, scale=s, dtype=jnp.float64))
    m = d // (2 * h)
    assert p["wq"].shape == p["wk"].shape == (h, d, d // h) and p["wv"].shape == (h, d, d) and "wo" not in p
    a = np.einsum("hde,hfe->hdf", p["wq"], p["wk"])
    for i in range(h):
        np.testing.assert_allclose(a[i], a[i].T, atol=1e-12)
        np.testing.assert_allclose(p["wv"][i], a[i], atol=1e-12)
        # W^Q_h = s [U1, U2], W^K_h = s [U2, U1]
        np.testing.assert_array_equal(p["wk"][i][:, :m], p["wq"][i][:, m:])
        np.testing.assert_array_equal(p["wk"][i][:, m:], p["wq"][i][:, :m])
        for j in range(h):
            if i != j:
                np.testing.assert_allclose(a[i] @ a[j], 0.0, atol=1e-12)
    # all U blocks together are one orthonormal D x D matrix: orthonormal and mutually orthogonal
    u = np.concatenate(list(p["wq"]), axis=1) / s
    np.testing.assert_allclose(u.T @ u, np.eye(d), atol=1e-12)
    # A_h = s^2 (U1 U2^T + U2 U1^T): eigenvalues +-s^2 (m each) and 0
    ev = np.sort(np.linalg.eigvalsh(a[0]))
    np.testing.assert_allclose(ev[:m], -s ** 2, atol=1e-10)
    np.testing.assert_allclose(ev[-m:], s ** 2, atol=1e-10)
    with pytest.raises(ValueError, match="must divide D"):
        symmetric_multi_head(jax.random.PRNGKey(0), 12, 4)  # raises before drawing anything


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-12), (jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_with_spectral_norms_sets_the_concatenated_norms(dtype, rtol):
    """The norm is taken in the parameters' precision (float64 was once normed in float32, off by
    ~1e-7) and the parameters keep their dtype (bfloat16 ones once came back float32)."""
    p = {k: v.astype(dtype) for k, v in _params(8, 2, bias=False, out_proj=True, seed=3).items()}
    q = with_spectral_norms(p, wv_norm=2.5, wo_norm=0.5)
    assert all(v.dtype == dtype for v in q.values())
    full = full_matrices(q)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(full["WV"], np.float64), 2), 2.5, rtol=rtol)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(full["WO"], np.float64), 2), 0.5, rtol=rtol)
    ratio = np.asarray(q["wv"], np.float64) / np.asarray(p["wv"], np.float64)   # one factor for all heads
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=max(rtol, 1e-7))
    np.testing.assert_array_equal(q["wq"], p["wq"])
    assert with_spectral_norms(p)["wv"] is p["wv"]
    with pytest.raises(ValueError):
        with_spectral_norms(_params(8, 2, bias=False, out_proj=False), wo_norm=1.0)
