"""Tests for rsa_jax.energy: explicit sums, and the Lyapunov property of Props. 4.1/4.2 and its limits.

float64 via tests/conftest.py. Trajectories come from ``integrate(..., "rk4")`` with small steps, so a
discrete energy increase far above rounding means an increase of the continuous-time energy; the
counter-examples also check the sign of dE/dt = <grad E, field> directly.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsa_jax.attention import init_attention, symmetric_multi_head, symmetric_single_head
from rsa_jax.dynamics import integrate, msa_field, projected_sa_field
from rsa_jax.energy import akorn_energy, e_multi, e_single, pseudo_energy
from reference import numpy_attention_params  # noqa: E402

D = 8

# Test programs are tiny, so XLA compile time dominates the run: compile them without backend
# optimizations (numerics are unaffected at these tolerances).
JIT = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
e_single_j = JIT(e_single, static_argnames="beta")
e_multi_j = JIT(e_multi, static_argnames="beta")
pseudo_j = JIT(pseudo_energy)
init_j = JIT(init_attention, static_argnums=(1, 2), static_argnames=("out_proj", "dtype"))
single_j = JIT(symmetric_single_head, static_argnums=1, static_argnames=("scale", "dtype"))
multi_j = JIT(symmetric_multi_head, static_argnums=(1, 2), static_argnames=("dtype",))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_attn(d, h, *, out_proj, bias=False, seed=0):
    return numpy_attention_params(d, h, out_proj=out_proj, bias=bias, seed=seed)


def ref_energy(p, x, beta=None):
    """-sum_h sum_i sum_j exp(beta X_i^T W^Q_h W^K_h^T X_j), explicit loops."""
    h_, _, dh = p["wq"].shape
    beta = 1.0 / np.sqrt(dh) if beta is None else beta
    total = 0.0
    for h in range(h_):
        a = p["wq"][h] @ p["wk"][h].T
        for i in range(x.shape[0]):
            for j in range(x.shape[0]):
                total += np.exp(beta * x[i] @ a @ x[j])
    return -total


def ref_msa(p, x):
    out = 0.0
    for h in range(p["wq"].shape[0]):
        q, k, v = x @ p["wq"][h], x @ p["wk"][h], x @ p["wv"][h]
        if "bq" in p:
            q, k, v = q + p["bq"][h], k + p["bk"][h], v + p["bv"][h]
        z = q @ k.T / np.sqrt(q.shape[-1])
        a = np.exp(z - z.max(-1, keepdims=True))
        sa = (a / a.sum(-1, keepdims=True)) @ v
        out = out + (sa @ p["wo"][h] if "wo" in p else sa)
    return out + p.get("bo", 0.0)


def _j(p):
    return {k: jnp.asarray(v) for k, v in p.items()}


@pytest.mark.parametrize("h", [1, 2])
def test_energies_match_double_sums(h):
    p = _np_attn(D, h, out_proj=True, seed=h)
    x = np.random.default_rng(10 + h).standard_normal((2, 5, D))
    em = np.asarray(e_multi_j(_j(p), jnp.asarray(x)))
    assert em.shape == (2,)
    for b in range(2):
        np.testing.assert_allclose(em[b], ref_energy(p, x[b]), rtol=1e-12)
    if h == 2:  # explicit beta (one extra compilation only)
        np.testing.assert_allclose(np.asarray(e_multi_j(_j(p), jnp.asarray(x), beta=0.3))[0],
                                   ref_energy(p, x[0], 0.3), rtol=1e-12)
    if h == 1:
        np.testing.assert_allclose(np.asarray(e_single_j(_j(p), jnp.asarray(x))), em, rtol=1e-14)
    else:
        with pytest.raises(ValueError, match=r"\(2, 8, 4\)"):
            e_single(_j(p), jnp.asarray(x))


def test_energy_uses_a_not_its_symmetric_part():
    """For non-symmetric A = W^Q W^K^T the energy is the sum over ordered pairs with A itself (invariant
    under A -> A^T by relabelling i <-> j, but not equal to the sum with (A + A^T)/2)."""
    p = _np_attn(D, 1, out_proj=False, seed=3)
    a = p["wq"][0] @ p["wk"][0].T
    assert np.abs(a - a.T).max() > 0.1
    x = 2.0 * np.random.default_rng(4).standard_normal((2, D))
    ref = -sum(np.exp(x[i] @ a @ x[j] / np.sqrt(D)) for i in range(2) for j in range(2))
    sym = -sum(np.exp(x[i] @ (a + a.T) @ x[j] / (2 * np.sqrt(D))) for i in range(2) for j in range(2))
    assert abs(ref - sym) > 1e-3 * abs(ref)
    got = float(e_single_j(_j(p), jnp.asarray(x)))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("out_proj,bias", [(True, True), (False, False)])
def test_pseudo_energy_is_minus_trace(out_proj, bias):
    p = _np_attn(D, 2, out_proj=out_proj, bias=bias, seed=5)
    rng = np.random.default_rng(6)
    x, c = rng.standard_normal((3, 5, D)), rng.standard_normal((3, 5, D))
    got = np.asarray(pseudo_j(_j(p), jnp.asarray(x), jnp.asarray(c)))
    assert got.shape == (3,)
    for b in range(3):
        np.testing.assert_allclose(got[b], -np.trace(x[b].T @ (c[b] + ref_msa(p, x[b]))), rtol=1e-11)
    assert akorn_energy is pseudo_energy


# --- Props. 4.1 / 4.2 ---------------------------------------------------------------------

@JIT
def _proj_traj(attn, x0):
    xs = integrate(lambda x: projected_sa_field(attn, x), x0, 0.01, 200, "rk4")
    return xs, e_single(attn, xs)


@JIT
def _msa_traj(attn, x0):
    xs = integrate(lambda x: msa_field(attn, x), x0, 0.005, 200, "rk4")
    return xs, e_multi(attn, xs)


@JIT
def _rate_single(attn, x):
    """Continuous-time dE_single/dt along eq. 3, and its cosine |grad E| |field|."""
    g, f = jax.grad(lambda z: e_single(attn, z))(x), projected_sa_field(attn, x)
    r = jnp.vdot(g, f)
    return r, r / (jnp.linalg.norm(g) * jnp.linalg.norm(f))


@JIT
def _rate_multi(attn, x):
    g, f = jax.grad(lambda z: e_multi(attn, z))(x), msa_field(attn, x)
    r = jnp.vdot(g, f)
    return r, r / (jnp.linalg.norm(g) * jnp.linalg.norm(f))


def _assert_monotone(e):
    e = np.asarray(e)
    tol = 1e-12 * max(1.0, np.abs(e).max())
    assert np.diff(e).max() <= tol, f"energy increases by {np.diff(e).max()} at step {np.diff(e).argmax()}"
    assert e[-1] < e[0] - 1e-3 * abs(e[0])  # and really moves


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prop_4_1_energy_decreases_symmetric_single_head(seed):
    attn = single_j(jax.random.PRNGKey(seed), D, scale=2.0, dtype=jnp.float64)
    x0 = _unit(np.random.default_rng(seed).standard_normal((8, D)))
    xs, e = _proj_traj(attn, jnp.asarray(x0))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(xs), axis=-1), 1.0, atol=1e-5)  # stays on the sphere
    _assert_monotone(e)


@pytest.mark.parametrize("h,seed", [(2, 0), (2, 1), (4, 0), (4, 1)])
def test_prop_4_2_energy_decreases_symmetric_multi_head(h, seed):
    attn = multi_j(jax.random.PRNGKey(seed), D, h, dtype=jnp.float64)
    x0 = _unit(np.random.default_rng(seed).standard_normal((8, D)))
    _, e = _msa_traj(attn, jnp.asarray(x0))
    _assert_monotone(e)


# --- Where the energy is not a Lyapunov function -----------------------------------------

def test_generic_weights_energy_increases_single_head():
    """(a) init_attention without W^O (D_V = D): E_single is not monotone along eq. 3."""
    attn = init_j(jax.random.PRNGKey(4), D, 1, out_proj=False, dtype=jnp.float64)
    x0 = _unit(np.random.default_rng(4).standard_normal((8, D)))
    xs, e = _proj_traj(attn, jnp.asarray(x0))
    xs, e = np.asarray(xs), np.asarray(e)
    assert np.diff(e).max() > 1e-5 * np.abs(e).max()
    assert e[-1] > e[0] + 1.0  # even a net increase over the trajectory
    rates = np.array([float(_rate_single(attn, jnp.asarray(x))[1]) for x in xs[::20]])
    assert rates.max() > 0.05  # dE/dt > 0 in continuous time, not an integration artefact


def test_generic_weights_energy_increases_multi_head():
    """(a') the same for H = 2 heads, dX/dt = sum_h SA_h(X), E_multi."""
    attn = init_j(jax.random.PRNGKey(0), D, 2, out_proj=False, dtype=jnp.float64)
    x0 = _unit(np.random.default_rng(0).standard_normal((8, D)))
    xs, e = _msa_traj(attn, jnp.asarray(x0))
    xs, e = np.asarray(xs), np.asarray(e)
    assert np.diff(e).max() > 1e-5 * np.abs(e).max()
    assert e[-1] > e[0] + 1.0
    rates = np.array([float(_rate_multi(attn, jnp.asarray(x))[1]) for x in xs[::20]])
    assert rates.max() > 0.05


def test_prop_4_1_literal_condition_is_not_enough():
    """(b) Only W^V = (A + A^T)/2 with a NON-symmetric A = W^Q W^K^T (the condition as stated in
    Prop. 4.1 / eq. 31) does not make E_single decrease: the proof's step (35) merges
    exp(b x_i^T A x_j) and exp(b x_j^T A x_i), which needs A = A^T. This backs the docstring of
    ``symmetric_single_head``, which makes A itself symmetric (tested above to give a decrease)."""
    rng = np.random.default_rng(7)
    wq = 3.0 * rng.standard_normal((D, D)) / np.sqrt(D)
    wk = 3.0 * rng.standard_normal((D, D)) / np.sqrt(D)
    a = wq @ wk.T
    assert np.abs(a - a.T).max() > 1.0
    attn = _j({"wq": wq[None], "wk": wk[None], "wv": ((a + a.T) / 2)[None]})
    x0 = _unit(rng.standard_normal((8, D)))
    xs, e = _proj_traj(attn, jnp.asarray(x0))
    xs, e = np.asarray(xs), np.asarray(e)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(xs), axis=-1), 1.0, atol=1e-5)
    assert np.diff(e).max() > 1e-3 * np.abs(e).max()
    assert e[-1] > e.min() + 0.2 * abs(e.min())  # climbs back a long way after its minimum
    cos = np.array([float(_rate_single(attn, jnp.asarray(x))[1]) for x in xs[::10]])
    assert cos.max() > 0.1
    # the rate from an explicit NumPy gradient and field (independent of autodiff and of the library)
    x = np.asarray(xs[10 * int(cos.argmax())])
    beta = 1 / np.sqrt(D)
    ex = np.exp(beta * x @ a @ x.T)
    grad = -beta * (ex @ x @ a.T + ex.T @ x @ a)  # d/dx_i of -sum_ij exp(beta x_i^T A x_j)
    sa = (ex / ex.sum(-1, keepdims=True)) @ x @ ((a + a.T) / 2)
    field = sa - x * np.sum(x * sa, axis=-1, keepdims=True)  # (I - x_i x_i^T) SA_i
    assert np.vdot(grad, field) > 0
    np.testing.assert_allclose(np.vdot(grad, field), float(_rate_single(attn, jnp.asarray(x))[0]), rtol=1e-8)


def test_prop_4_2_literal_condition_is_not_enough():
    """The paper's Prop. 4.2 states W^Q_h W^K_h^T = U_1h U_2h^T (not symmetric) with
    W^V_h = (A_h + A_h^T)/2. Its proof also needs A_h = A_h^T ("similar to the single-head case"):
    here is a state where dE_multi/dt > 0 under the literal condition (H = 2, D = 8)."""
    rng = np.random.default_rng(247)
    u, _ = np.linalg.qr(rng.standard_normal((D, D)))
    h_, m = 2, D // 4
    wq, wk = np.zeros((h_, D, D // h_)), np.zeros((h_, D, D // h_))
    for h in range(h_):
        wq[h][:, :m] = u[:, 2 * h * m:2 * h * m + m]          # U_1h
        wk[h][:, :m] = u[:, 2 * h * m + m:2 * h * m + 2 * m]  # U_2h
    a = np.einsum("hde,hfe->hdf", wq, wk)  # A_h = U_1h U_2h^T, A_h A_h'^T = A_h^T A_h' = 0
    for h in range(h_):
        for g in range(h_):
            if g != h:
                np.testing.assert_allclose(a[h] @ a[g], 0.0, atol=1e-12)
    attn = _j({"wq": wq, "wk": wk, "wv": (a + np.swapaxes(a, 1, 2)) / 2})
    x = rng.standard_normal((4, D)) * rng.uniform(0.5, 6)
    rate, cos = (float(v) for v in _rate_multi(attn, jnp.asarray(x)))
    assert cos > 0.02
    # the same rate from an explicit NumPy gradient and field
    beta = 1 / np.sqrt(D // h_)
    grad, field = 0.0, 0.0
    for h in range(h_):
        ex = np.exp(beta * x @ a[h] @ x.T)
        grad = grad - beta * (ex @ x @ a[h].T + ex.T @ x @ a[h])
        field = field + (ex / ex.sum(-1, keepdims=True)) @ x @ np.asarray(attn["wv"][h])
    np.testing.assert_allclose(np.vdot(grad, field), rate, rtol=1e-8)
    # and a small step along the field really raises the energy
    e0 = float(e_multi_j(attn, jnp.asarray(x)))
    for h in (1e-6, 1e-5):
        e1 = float(e_multi_j(attn, jnp.asarray(x + h * field)))
        assert e1 - e0 > 0.5 * h * rate


# --- the trainable symmetric (energy) attention of ModelConfig(symmetric=True) ------------------

def test_symmetric_model_value_matrix_and_energy_descent():
    """W^V_h = (W^Q_h W^K_h^T + W^K_h W^Q_h^T) / 2 from the learned W^Q, W^K, no W^O; with H = 1,
    E_single decreases along small Euler steps of the attention flow dX/dt = SA(X) (SPEC eq. 3),
    and a generic W^V does not guarantee it."""
    from flax import nnx

    from rsa_jax.attention import msa
    from rsa_jax.energy import e_single
    from rsa_jax.models.sudoku import ModelConfig, SudokuModel

    cfg = ModelConfig(kind="itrsa", d=8, heads=1, n=4, symmetric=True, bias=False, position="embedding")
    model = SudokuModel(cfg, rngs=nnx.Rngs(0))
    assert "wv" not in model.attn and "wo" not in model.attn
    attn = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.pure_step()[1]["attn"])
    a = np.asarray(attn["wq"][0] @ attn["wk"][0].T)
    np.testing.assert_allclose(attn["wv"][0], (a + a.T) / 2, atol=1e-6)   # built in float32
    assert np.abs(a - a.T).max() > 1e-3                           # A itself is not symmetric

    def energies(attn, x, steps=30, dt=1e-2):
        out = []
        for _ in range(steps):
            out.append(float(e_single(attn, x)))
            x = x + dt * msa(attn, x)
        return np.array(out)

    x = 2.0 * jnp.asarray(np.random.default_rng(0).standard_normal((6, 8)))
    e = energies(attn, x)
    assert np.all(np.diff(e) < 0) and e[0] - e[-1] > 1e-3
    rng = np.random.default_rng(1)
    generic = dict(attn, wv=jnp.asarray(rng.standard_normal((1, 8, 8))))
    assert np.any(np.diff(energies(generic, x)) > 0)               # the test can tell the difference
    for bad in ({"position": "gta"}, {"bias": True}, {"kind": "akorn"}):
        with pytest.raises(ValueError, match="symmetric"):
            ModelConfig(**{"kind": "itrsa", "d": 8, "heads": 1, "n": 4, "symmetric": True, "bias": False,
                           "position": "embedding", **bad})
