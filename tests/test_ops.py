"""Tests for rsa_jax.ops against explicit NumPy loops (float64 via tests/conftest.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from rsa_jax.ops import chunk_norm, normalize, omega_rotation, pi, proj, rms_norm

RNG = np.random.default_rng(0)
Y = RNG.standard_normal((3, 4, 8))          # (batch, S, D)
X_UNIT = RNG.standard_normal((3, 4, 8))
GAMMA = RNG.standard_normal(8)


def _loop_chunks(y, n, fn):
    """Applies ``fn(chunk, lo, hi)`` to every n-chunk of every token by explicit loops."""
    y = np.asarray(y)
    d = y.shape[-1]
    n = d if n is None else n
    out = np.empty_like(y)
    for idx in np.ndindex(*y.shape[:-1]):
        for lo in range(0, d, n):
            out[idx + (slice(lo, lo + n),)] = fn(y[idx][lo:lo + n], idx, lo, lo + n)
    return out


def ref_pi(y, n):
    return _loop_chunks(y, n, lambda c, *_: c / np.sqrt(np.sum(c ** 2)))


def ref_rms(y, gamma, n):
    return _loop_chunks(y, n, lambda c, idx, lo, hi: gamma[lo:hi] * c / np.linalg.norm(c))


def ref_proj(x, y, n):
    x = np.asarray(x)

    def one(c, idx, lo, hi):
        xc = x[idx][lo:hi]
        return (np.eye(hi - lo) - np.outer(xc, xc)) @ c

    return _loop_chunks(y, n, one)


@pytest.mark.parametrize("n", [None, 8, 4, 2])
def test_pi_matches_loop(n):
    out = np.asarray(pi(jnp.asarray(Y), n))
    np.testing.assert_allclose(out, ref_pi(Y, n), rtol=1e-10, atol=1e-12)
    # every chunk is a unit vector
    np.testing.assert_allclose(np.asarray(chunk_norm(jnp.asarray(out), n))[..., 0], 1.0, atol=1e-10)


def test_pi_zero_chunk_maps_to_zero():
    y = np.array(Y[0])
    y[1, 4:8] = 0.0
    out = np.asarray(pi(jnp.asarray(y), 4))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[1, 4:8], 0.0)
    np.testing.assert_allclose(out[1, :4], ref_pi(y[1, :4], None), rtol=1e-10)


@pytest.mark.parametrize("n", [None, 4])
def test_chunk_norm_matches_loop(n):
    nn = 8 if n is None else n
    ref = np.linalg.norm(Y.reshape(3, 4, 8 // nn, nn), axis=-1)[..., None]
    np.testing.assert_allclose(np.asarray(chunk_norm(jnp.asarray(Y), n)), ref, rtol=1e-12)


@pytest.mark.parametrize("n", [None, 4, 2])
def test_proj_matches_loop(n):
    x = ref_pi(X_UNIT, n)  # unit chunks, as the formula assumes
    out = np.asarray(proj(jnp.asarray(x), jnp.asarray(Y), n))
    np.testing.assert_allclose(out, ref_proj(x, Y, n), rtol=1e-10, atol=1e-12)
    # tangent: orthogonal to x chunk-wise
    nn = 8 if n is None else n
    dots = np.sum((out * x).reshape(3, 4, 8 // nn, nn), axis=-1)
    np.testing.assert_allclose(dots, 0.0, atol=1e-12)


def test_proj_uses_x_as_given():
    """Non-unit x: the docstring says (I - x x^T) y literally, not a normalized projection."""
    x = 2.0 * X_UNIT
    out = np.asarray(proj(jnp.asarray(x), jnp.asarray(Y), 4))
    np.testing.assert_allclose(out, ref_proj(x, Y, 4), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [None, 4, 2])
def test_rms_norm_matches_loop(n):
    out = np.asarray(rms_norm(jnp.asarray(Y), jnp.asarray(GAMMA), n))
    np.testing.assert_allclose(out, ref_rms(Y, GAMMA, n), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [None, 4])
def test_normalize_dispatch(n):
    y = jnp.asarray(Y)
    np.testing.assert_array_equal(np.asarray(normalize(y, "none", n=n)), Y)
    np.testing.assert_allclose(np.asarray(normalize(y, "pi", n=n)), ref_pi(Y, n), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(normalize(y, "rmsnorm", jnp.asarray(GAMMA), n)), ref_rms(Y, GAMMA, n),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        normalize(y, "rmsnorm", None, n)
    with pytest.raises(ValueError, match="layernorm"):
        normalize(y, "layernorm", n=n)


def _omega_matrix(d, w):
    """Explicit antisymmetric block matrix: Omega[2p, 2p+1] = w_p, Omega[2p+1, 2p] = -w_p."""
    w = np.broadcast_to(np.asarray(w, float), (d // 2,))
    om = np.zeros((d, d))
    for p in range(d // 2):
        om[2 * p, 2 * p + 1] = w[p]
        om[2 * p + 1, 2 * p] = -w[p]
    return om


@pytest.mark.parametrize("w", [0.5, np.array([0.3, -1.2, 2.0, 0.7])])
def test_omega_rotation_is_explicit_block_matrix(w):
    d, eta = 8, 0.8
    om = _omega_matrix(d, w)
    x = RNG.standard_normal((2, 5, d))
    out = np.asarray(omega_rotation(jnp.asarray(x), w if np.ndim(w) == 0 else jnp.asarray(w)))
    np.testing.assert_allclose(out, x @ om.T, rtol=1e-12, atol=1e-14)
    # matrix read back from the operator (columns = images of basis vectors)
    m = np.asarray(omega_rotation(jnp.eye(d), w if np.ndim(w) == 0 else jnp.asarray(w))).T
    np.testing.assert_array_equal(m, om)
    np.testing.assert_array_equal(m, -m.T)  # antisymmetric
    # I + eta Omega has eigenvalues 1 +- i eta w_p
    ev = np.linalg.eigvals(np.eye(d) + eta * m)
    wp = np.broadcast_to(np.asarray(w, float), (d // 2,))
    expected = np.concatenate([1 + 1j * eta * wp, 1 - 1j * eta * wp])
    np.testing.assert_allclose(np.sort_complex(ev), np.sort_complex(expected), atol=1e-12)


def test_omega_pairs_stay_inside_oscillators():
    """With even N, Omega never mixes channels of different N-chunks."""
    m = np.asarray(omega_rotation(jnp.eye(8), 1.0)).T
    for a in range(8):
        for b in range(8):
            if a // 4 != b // 4:
                assert m[a, b] == 0.0


@pytest.mark.parametrize("fn", [lambda y, n: pi(y, n), lambda y, n: proj(y, y, n),
                                lambda y, n: rms_norm(y, jnp.ones(8), n), lambda y, n: chunk_norm(y, n),
                                lambda y, n: normalize(y, "pi", n=n)])
@pytest.mark.parametrize("n", [3, 5, 0, -2])
def test_bad_oscillator_size_raises(fn, n):
    y = jnp.ones((2, 8))
    with pytest.raises(ValueError) as err:
        fn(y, n)
    msg = str(err.value)
    assert f"n={n}" in msg and "D=8" in msg and "(2, 8)" in msg


def test_omega_odd_d_raises():
    with pytest.raises(ValueError) as err:
        omega_rotation(jnp.ones((3, 7)), 0.5)
    assert "D=7" in str(err.value) and "(3, 7)" in str(err.value)


@pytest.mark.parametrize("gshape", [(7,), (2, 8), (1,)])
def test_rms_norm_wrong_gamma_shape_raises(gshape):
    y = jnp.ones((2, 8))
    with pytest.raises(ValueError) as err:
        rms_norm(y, jnp.ones(gshape))
    msg = str(err.value)
    assert str(gshape) in msg and "(2, 8)" in msg and "(8,)" in msg
