"""Tests for rsa_jax.lyapunov against maps with known exponents and the dense B.3 definition."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsa_jax.dynamics import iterate, itrsa_step  # noqa: E402
from rsa_jax.jacobian import jacobian_eigenvalues, leading_eigenvalues  # noqa: E402
from rsa_jax.lyapunov import (NULL_FLOOR, LyapunovResult, LyapunovWarning, default_null_rtol,  # noqa: E402
                              lyapunov_exact, lyapunov_spectrum, max_lyapunov, mean_lyapunov, nonnull_exponent_sum,
                              null_directions)
from rsa_jax.ops import omega_rotation, pi  # noqa: E402

S, D, H, T_SMALL = 4, 8, 2, 3


def _normal(seed, shape):
    """Gaussian test data from NumPy (keeps jax.random compilations out of the suite)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def spectrum(f, x0, T, **kw):
    return jax.jit(lambda x: lyapunov_spectrum(f, x, T, **kw))(x0)


# --- maps with known exponents -------------------------------------------------------------

def test_logistic_map_is_ln2():
    f = lambda x: 4.0 * x * (1.0 - x)
    res = spectrum(f, jnp.array([0.3]), 2000, return_history=True)
    assert isinstance(res, LyapunovResult)
    assert res.exponents.shape == (1,) and res.history.shape == (2000, 1)
    assert abs(float(res.exponents[0]) - np.log(2.0)) < 0.02
    np.testing.assert_allclose(res.history[-1], res.exponents, rtol=1e-12)


def test_henon_sum_exact_and_largest():
    a, b = 1.4, 0.3
    f = lambda z: jnp.stack([1.0 - a * z[0] ** 2 + z[1], b * z[0]])
    starts = jnp.array([(0.1, 0.1), (0.0, 0.0), (0.5, 0.1), (-0.2, 0.1)])
    ex = jax.jit(jax.vmap(lambda z: lyapunov_spectrum(f, iterate(f, z, 100), 2000).exponents))(starts)
    np.testing.assert_allclose(ex.sum(-1), np.log(b), atol=1e-10)  # ln|det J| = ln b at every step
    assert abs(float(ex[:, 0].mean()) - 0.419) < 0.02
    assert np.all(np.abs(ex[:, 0] - 0.419) < 0.03)


def _orthogonal(seed, n):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def test_symmetric_linear_map_exact_for_any_T():
    eig = np.array([2.0, 1.0, 0.5, -0.3])
    v = _orthogonal(0, 4)
    a = jnp.asarray(v @ np.diag(eig) @ v.T)
    f = lambda x: a @ x
    x0 = jnp.ones(4)
    want = np.sort(np.log(np.abs(eig)))[::-1]
    np.testing.assert_allclose(lyapunov_exact(f, x0, 5), want, atol=1e-12)
    np.testing.assert_allclose(spectrum(f, x0, 5, sweeps=1).exponents, want, atol=1e-12)
    # the classical estimator (no sweeps) only converges, like 1/T
    res = spectrum(f, x0, 400, return_history=True, method="qr")
    err = np.max(np.abs(res.history - want), axis=-1)
    assert err[-1] < 0.02 and err[-1] < err[9] / 10


def test_non_normal_linear_map_converges():
    eig = np.array([1.5, 1.0, 0.8, -0.6])
    vm = np.eye(4) + np.triu(np.random.default_rng(1).standard_normal((4, 4)), 1) * 2.0
    a = jnp.asarray(vm @ np.diag(eig) @ np.linalg.inv(vm))
    f = lambda x: a @ x
    x0 = jnp.ones(4) * 1e-3
    want = np.sort(np.log(np.abs(eig)))[::-1]
    e_short = np.max(np.abs(lyapunov_exact(f, x0, 4) - want))
    e_long = np.max(np.abs(lyapunov_exact(f, x0, 12) - want))  # sigma range in reach
    e_qr = np.max(np.abs(spectrum(f, x0, 400, method="qr").exponents - want))
    assert e_short > 0.05  # finite-T exponents of a non-normal map differ from ln|eig|
    assert e_long < e_short and e_qr < 0.02


@pytest.mark.parametrize("n_osc", [None, 4])
def test_a5_rotation_normalized_vs_not(n_osc):
    eta, w = 0.7, 0.9
    x0 = pi(_normal(3, (3, 8)), n_osc)
    rot = lambda x: x + eta * omega_rotation(x, w)
    nulls = null_directions(x0.shape, n_osc, "pi")
    assert nulls == (3 if n_osc is None else 6)
    ex = spectrum(lambda x: pi(rot(x), n_osc), x0, 20).exponents
    assert float(max_lyapunov(ex)) <= 1e-9
    assert int(jnp.sum(ex == NULL_FLOOR)) == nulls
    ex_free = spectrum(rot, x0, 20).exponents
    np.testing.assert_allclose(ex_free, np.log(np.sqrt(1 + eta**2 * w**2)), atol=1e-12)
    exact = lyapunov_exact(lambda x: pi(rot(x), n_osc), x0, 5)
    np.testing.assert_allclose(max_lyapunov(exact), 0.0, atol=1e-12)
    assert int(jnp.sum(exact == NULL_FLOOR)) == nulls


# --- QR method vs the dense definition on a small ItrSA ----------------------------------------

def _itrsa(norm, dtype=jnp.float64, n=None):
    attn = {name: _normal(seed, shape) / np.sqrt(D) for seed, (name, shape) in enumerate(
        [("wq", (H, D, D // H)), ("wk", (H, D, D // H)), ("wv", (H, D, D // H)), ("wo", (H, D // H, D))])}
    params = {"attn": attn, "eta": 1.0,
              "gamma": 0.5 + jnp.linspace(0.0, 1.0, D)}
    c, x0 = _normal(2, (S, D)), _normal(3, (S, D))
    params, c, x0 = jax.tree.map(lambda a: jnp.asarray(a, dtype), (params, c, x0))
    x0 = x0 if norm == "none" else pi(x0, n)
    return (lambda x: itrsa_step(params, x, c, norm=norm, n=n)), x0


@pytest.fixture(scope="module", params=["none", "pi"])
def itrsa_case(request):
    f, x0 = _itrsa(request.param)
    return request.param, f, x0, lyapunov_exact(f, x0, T_SMALL)


@pytest.mark.parametrize("reorth_every", [1, 2])
def test_full_spectrum_matches_exact(itrsa_case, reorth_every):
    norm, f, x0, exact = itrsa_case
    res = spectrum(f, x0, T_SMALL, sweeps=1, reorth_every=reorth_every)
    np.testing.assert_allclose(res.exponents, exact, atol=1e-9)
    if reorth_every == 1 and norm == "none":
        # the classical estimator differs at finite T, but its sum (ln|det| / T) is exact
        classic = spectrum(f, x0, T_SMALL, method="qr").exponents
        assert np.max(np.abs(classic - exact)) > 0.1
        np.testing.assert_allclose(classic.sum(), exact.sum(), atol=1e-9)


def test_leading_k_matches_exact(itrsa_case):
    _, f, x0, exact = itrsa_case
    res = spectrum(f, x0, T_SMALL, k=3, sweeps=30)
    assert res.exponents.shape == (3,)
    np.testing.assert_allclose(res.exponents, exact[:3], atol=1e-8)


def test_reorth_every_does_not_change_result():
    f, x0 = _itrsa("pi")
    T = 5  # 2 does not divide 5: exercises the remainder block
    r1 = spectrum(f, x0, T, k=6, return_history=True)
    r2 = spectrum(f, x0, T, k=6, reorth_every=2, return_history=True)
    np.testing.assert_allclose(r1.exponents, r2.exponents, atol=1e-10)
    assert r1.history.shape == (5, 6) and r2.history.shape == (3, 6)
    np.testing.assert_allclose(r2.history[-1], r2.exponents, atol=1e-12)


# --- the non-null exponent sum (the paper's mean LE without the single exponents) -------------

def exponent_sum(f, x0, T, num_null, **kw):
    return jax.jit(lambda x: nonnull_exponent_sum(f, x, T, num_null, **kw))(x0)


@pytest.mark.parametrize("reorth_every", [1, 2])
def test_nonnull_exponent_sum_matches_exact(itrsa_case, reorth_every):
    norm, f, x0, exact = itrsa_case
    num_null = null_directions(x0.shape, None, norm)
    res = exponent_sum(f, x0, T_SMALL, num_null, reorth_every=reorth_every)
    kept = np.asarray(exact[:x0.size - num_null])
    assert kept.min() > NULL_FLOOR + 10   # every kept exponent resolved by the dense reference
    np.testing.assert_allclose(res.total, kept.sum(), atol=1e-8)
    np.testing.assert_allclose(res.total / kept.size, mean_lyapunov(exact, num_null), atol=1e-10)
    assert float(res.min_stretch) > 1e-6
    if num_null:
        assert float(res.dropped_pivot) < 1e-12 < 1e-6 < float(res.kept_pivot)
    else:   # no null directions: no QR of J_1^T, Q0 = I
        assert float(res.kept_pivot) == float(res.dropped_pivot) == 0.0


def test_nonnull_exponent_sum_per_chunk_and_float32():
    """Oscillator-wise Pi (N = 4): S D / N null directions; float32 agrees to its precision."""
    f, x0 = _itrsa("pi", n=4)
    num_null = null_directions(x0.shape, 4, "pi")
    assert num_null == S * D // 4
    T = 2
    exact = np.asarray(lyapunov_exact(f, x0, T))
    kept = exact[:x0.size - num_null]
    assert kept.min() > NULL_FLOOR + 10 and int(np.sum(exact == NULL_FLOOR)) == num_null
    res = exponent_sum(f, x0, T, num_null)
    np.testing.assert_allclose(res.total, kept.sum(), atol=1e-8)
    chunked = exponent_sum(f, x0, T, num_null, chunk=7)   # columns pushed 7 at a time: the same numbers
    for a, b in zip(chunked, res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    f32, x32 = _itrsa("pi", jnp.float32, n=4)
    res32 = exponent_sum(f32, x32, T, num_null)
    assert res32.total.dtype == jnp.float32
    np.testing.assert_allclose(res32.total, kept.sum(), rtol=1e-4, atol=1e-3)


def test_nonnull_exponent_sum_flags_a_wrong_null_count():
    f, x0 = _itrsa("pi")
    right = exponent_sum(f, x0, T_SMALL, S)
    too_few = exponent_sum(f, x0, T_SMALL, S - 1)   # keeps one null direction: the kept pivot collapses
    assert float(too_few.kept_pivot) < 1e-10 < float(right.kept_pivot)
    too_many = exponent_sum(f, x0, T_SMALL, S + 1)  # drops a real direction: the dropped pivot is not tiny
    assert float(too_many.dropped_pivot) > 1e-6 > float(right.dropped_pivot)
    with pytest.raises(ValueError, match="num_null"):
        nonnull_exponent_sum(f, x0, T_SMALL, x0.size)


# --- null directions ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype,want", [(jnp.float64, 1e-8), (jnp.float32, 1000 * 2.0 ** -23)])
def test_default_null_rtol_per_dtype(dtype, want):
    assert default_null_rtol(dtype) == pytest.approx(want, rel=1e-12)
    assert default_null_rtol(jnp.zeros(2, dtype).dtype) == default_null_rtol(dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_refused_clearly(dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        default_null_rtol(dtype)
    with pytest.raises(ValueError, match="float32 or float64"):
        lyapunov_spectrum(lambda x: 0.5 * x, jnp.ones(3, dtype), 2)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("norm", ["pi", "rmsnorm"])
def test_normalized_itrsa_has_exactly_S_nulls(norm, dtype):
    """Float32 (the training precision) takes the ``1000 eps`` branch of ``default_null_rtol``: its
    null directions carry roundoff ~1e-7 relative, far above float64's 1e-8 threshold."""
    f, x0 = _itrsa(norm, dtype)
    assert x0.dtype == dtype and f(x0).dtype == dtype
    nulls = null_directions(x0.shape, None, norm)
    assert nulls == S and null_directions(x0.shape, None, "none") == 0
    assert null_directions((S, D), 4, "pi") == S * D // 4
    for ex in (spectrum(f, x0, T_SMALL, sweeps=int(norm == "pi")).exponents, lyapunov_exact(f, x0, T_SMALL)):
        assert int(jnp.sum(ex == NULL_FLOOR)) == S
        assert float(ex[-S - 1]) > NULL_FLOOR + 10
        kept = np.asarray(ex[:S * (D - 1)], np.float64)
        np.testing.assert_allclose(mean_lyapunov(ex, nulls), kept.mean(), rtol=1e-12 if dtype == jnp.float64 else 1e-5)
        assert float(max_lyapunov(ex)) == float(ex[0])
    with pytest.raises(ValueError):
        mean_lyapunov(ex, S * D)


def test_vmap_over_batch_equals_loop():
    f, _ = _itrsa("rmsnorm")
    xs = pi(_normal(7, (3, S, D)))
    run = lambda x: lyapunov_spectrum(f, x, 4, k=5, sweeps=2).exponents
    batched = jax.jit(jax.vmap(run))(xs)
    single = jax.jit(run)
    looped = jnp.stack([single(x) for x in xs])
    np.testing.assert_allclose(batched, looped, atol=1e-10)
    np.testing.assert_allclose(max_lyapunov(batched), batched[:, 0])
    assert mean_lyapunov(batched).shape == (3,)


def test_argument_checks():
    f = lambda x: 2.0 * x
    with pytest.raises(ValueError):
        lyapunov_spectrum(f, jnp.ones(3), 4, k=4)
    with pytest.raises(ValueError):
        lyapunov_spectrum(f, jnp.ones(3), 0)
    with pytest.raises(ValueError):
        null_directions((4, 8), None, "layernorm")


# --- the default is the B.3 definition (issue 33) -----------------------------------------------

def _non_normal(dtype):
    """The issue's map: A = randn(6, 6) / sqrt(6), A[0, 1] += 3; exponents ln sigma_i(A^5) / 5 by NumPy."""
    a = np.random.default_rng(0).standard_normal((6, 6)) / np.sqrt(6)
    a[0, 1] += 3.0
    want = np.log(np.linalg.svd(np.linalg.matrix_power(a, 5), compute_uv=False)) / 5
    aj = jnp.asarray(a, dtype)
    return (lambda x: aj @ x), jnp.ones(6, dtype), want


@pytest.mark.parametrize("dtype,atol", [(jnp.float64, 1e-9), (jnp.float32, 2e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [None, 3, 1])
def test_default_is_ln_sigma_over_T_on_a_non_normal_map(dtype, atol, k):
    f, x0, want = _non_normal(dtype)
    for res in (lyapunov_spectrum(f, x0, 5, k), spectrum(f, x0, 5, k=k)):
        assert res.exponents.dtype == dtype and res.exponents.shape == (6 if k is None else k,)
        np.testing.assert_allclose(res.exponents, want[:res.exponents.shape[0]], atol=atol)
        assert bool(res.converged) and float(res.residual) <= (1e-7 if dtype == jnp.float64 else 1.3e-4)
        assert int(res.sweeps) >= 1
    # the classical estimator is another quantity at finite T (0.209 vs ln sigma_1 / T = 0.415)
    qr = lyapunov_spectrum(f, x0, 5, k, method="qr")
    assert qr.converged is None and int(qr.sweeps) == 0
    assert float(want[0]) - float(qr.exponents[0]) > 0.15
    np.testing.assert_allclose(lyapunov_spectrum(f, x0, 5, k, method="benettin").exponents, qr.exponents)
    np.testing.assert_allclose(lyapunov_spectrum(f, x0, 5, k, sweeps=0).exponents, qr.exponents)


def test_subspace_iteration_warns_when_stopped_short():
    f, x0, want = _non_normal(jnp.float64)
    with pytest.warns(LyapunovWarning, match="max_sweeps=2"):
        res = jax.block_until_ready(spectrum(f, x0, 5, k=3, max_sweeps=2))
    assert not bool(res.converged) and float(res.residual) > 1e-3 and int(res.sweeps) == 2
    assert float(np.max(np.abs(res.exponents - want[:3]))) > 1e-3   # and it is indeed not there yet
    # a fixed sweep count reports the diagnostic but does not warn
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", LyapunovWarning)
        fixed = jax.block_until_ready(spectrum(f, x0, 5, k=3, sweeps=2))
    assert not bool(fixed.converged) and int(fixed.sweeps) == 2
    np.testing.assert_allclose(fixed.exponents, res.exponents, atol=1e-12)
    # vmapped: the diagnostics are per start
    batched = jax.vmap(lambda x: lyapunov_spectrum(f, x, 5, k=3))(jnp.stack([x0, 2 * x0]))
    assert batched.converged.shape == (2,) and bool(jnp.all(batched.converged))


def test_max_and_mean_lyapunov_propagate_nan_and_know_leading_spectra():
    assert np.isnan(float(max_lyapunov(jnp.array([jnp.nan, 0.1]))))
    assert np.isnan(float(mean_lyapunov(jnp.array([0.2, 0.1, jnp.nan]), 1)))
    batch = jnp.array([[0.3, jnp.nan], [0.2, -0.1]])
    out = np.asarray(max_lyapunov(batch))
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.2)
    # leading k = 2 of n = 10 with 4 nulls: no null among them; k = 8: two of them
    assert float(mean_lyapunov(jnp.array([0.4, 0.2]), 4, n=10)) == pytest.approx(0.3)
    ex = jnp.array([0.4, 0.2, 0.0, -0.2, -0.4, -0.6, NULL_FLOOR, NULL_FLOOR])
    assert float(mean_lyapunov(ex, 4, n=10)) == pytest.approx(-0.1)
    assert float(max_lyapunov(ex[:2])) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="leading-k"):
        mean_lyapunov(jnp.array([0.4, 0.2]), 4)
    with pytest.raises(ValueError, match="n=3"):
        mean_lyapunov(jnp.array([0.4, 0.2, 0.1, 0.0]), 1, n=3)


def test_clear_errors_for_shape_changing_maps_and_traced_T():
    x0 = jnp.ones((6, 8))
    shrink = lambda x: x[:5]
    for call in (lambda: lyapunov_spectrum(shrink, x0, 3), lambda: lyapunov_exact(shrink, x0, 3),
                 lambda: nonnull_exponent_sum(shrink, x0, 3), lambda: jacobian_eigenvalues(shrink, x0),
                 lambda: leading_eigenvalues(shrink, x0, 2)):
        with pytest.raises(ValueError, match=r"f must map the state to one of the same shape.*\(6, 8\).*\(5, 8\)"):
            call()
    with pytest.raises(ValueError, match="same shape and dtype"):
        lyapunov_spectrum(lambda x: x.astype(jnp.float32), x0, 3)
    with pytest.raises(TypeError, match="T must be a static Python int.*static_argnames"):
        jax.jit(lambda x, T: lyapunov_spectrum(lambda y: 0.5 * y, x, T).exponents)(jnp.ones(3), 4)
    with pytest.raises(TypeError, match="T must be a static Python int"):
        jax.jit(lambda x, T: lyapunov_exact(lambda y: 0.5 * y, x, T))(jnp.ones(3), 4)
    with pytest.raises(TypeError, match="k must be an int"):
        lyapunov_spectrum(lambda y: 0.5 * y, jnp.ones(3), 4, k=2.5)
    with pytest.raises(ValueError, match="method must be one of"):
        lyapunov_spectrum(lambda y: 0.5 * y, jnp.ones(3), 4, method="exact")
    with pytest.raises(ValueError, match="classical estimator"):
        lyapunov_spectrum(lambda y: 0.5 * y, jnp.ones(3), 4, method="qr", sweeps=2)
