"""Tests of rsa_jax.regularizers against dense SVD / explicit-loop references (float64)."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from rsa_jax.attention import full_matrices, symmetric_multi_head, symmetric_single_head  # noqa: E402
from rsa_jax.dynamics import itrsa_step, rollout  # noqa: E402
from rsa_jax.jacobian import dense_jacobian  # noqa: E402
from rsa_jax.regularizers import (EnergyPenalty, JacobianPenalty, SpecPenalty, jacobian_penalty,  # noqa: E402
                                  jacobian_penalty_init, orthogonal, orthogonal_value_output, power_sigma,
                                  r_e_multi, r_e_single, spec_init, spec_layout, spec_matrices, spec_penalty,
                                  split_output_heads, split_value_heads)

D, H, S = 6, 2, 3

# Eager JAX dispatch (and compiling jax.random per shape) is slow on a shared CPU: test data come
# from NumPy and every JAX computation below is jitted once.
_spec = jax.jit(spec_penalty, static_argnames=("num_iters",))
_jp = jax.jit(jacobian_penalty, static_argnames=("step", "target", "num_iters", "steps", "stop_state_grad"))


def _attn(seed=0, bias=True, out_proj=True):
    """Random MSA parameters (D, H) in the layout of rsa_jax.attention, nonzero biases."""
    rng = np.random.default_rng(seed)
    dh = D // H
    dv = dh if out_proj else D
    p = {"wq": 0.7 * rng.standard_normal((H, D, dh)), "wk": 0.7 * rng.standard_normal((H, D, dh)),
         "wv": 0.7 * rng.standard_normal((H, D, dv))}
    if out_proj:
        p["wo"] = 0.7 * rng.standard_normal((H, dv, D))
    if bias:
        p |= {"bq": 0.3 * rng.standard_normal((H, dh)), "bk": 0.3 * rng.standard_normal((H, dh)),
              "bv": 0.3 * rng.standard_normal((H, dv))}
        if out_proj:
            p["bo"] = 0.3 * rng.standard_normal(D)
    return p


@functools.partial(jax.jit, static_argnames=("layout",))
def _spec_reference(attn, layout="separate"):
    """R_Spec by dense SVD, written out per layout."""
    def term(w):
        return (jnp.linalg.svd(w, compute_uv=False)[0] ** 2 - 1) ** 2
    total = 0.0
    if layout == "per_head":
        for name in ("wq", "wk", "wv", "wo"):
            for w in attn[name]:
                total += term(w)
        for name in ("bq", "bk", "bv"):
            for b in attn[name]:
                total += jnp.sum(b ** 2) ** 2
    elif layout == "fused":
        full = full_matrices(attn)
        total += term(jnp.concatenate([full["WQ"], full["WK"], full["WV"]], axis=1)) + term(full["WO"])
        total += sum(jnp.sum(attn[name] ** 2) for name in ("bq", "bk", "bv")) ** 2
    else:
        for w in full_matrices(attn).values():
            total += term(w)
        for name in ("bq", "bk", "bv"):
            total += jnp.sum(attn[name] ** 2) ** 2
    return total + jnp.sum(attn["bo"] ** 2) ** 2


def test_spec_matrices_match_full_matrices():
    attn = _attn()
    full = full_matrices(attn)
    mats = spec_matrices(attn)
    for name in ("wq", "wk", "wv", "wo"):
        np.testing.assert_array_equal(mats[name], full[name.upper()])


@pytest.mark.parametrize("layout", ["separate", "fused", "per_head"])
def test_spec_penalty_converges_to_svd(layout):
    attn = _attn()
    state = spec_init(attn, jax.random.PRNGKey(1), layout=layout)
    assert spec_layout(state) == layout
    value, _ = _spec(attn, state, num_iters=500)
    np.testing.assert_allclose(value, _spec_reference(attn, layout), rtol=1e-10)


def test_spec_layouts_differ_and_fused_shape():
    """The fused W_qkv is (D, 3D) here and its penalty is not the separate one (a lambda means
    different things under the two)."""
    attn = _attn(1)
    assert spec_matrices(attn, "fused")["wqkv"].shape == (D, 3 * D)
    values = {lay: float(_spec(attn, spec_init(attn, jax.random.PRNGKey(0), layout=lay), num_iters=500)[0])
              for lay in ("separate", "fused")}
    assert abs(values["fused"] - values["separate"]) > 0.1 * values["separate"], values
    with pytest.raises(ValueError, match="layout"):
        spec_matrices(attn, "stacked")
    with pytest.raises(ValueError, match="layout"):
        SpecPenalty(1.0, layout="stacked")


def test_spec_penalty_without_bias_or_wo():
    attn = _attn(3, bias=False, out_proj=False)
    state = spec_init(attn, jax.random.PRNGKey(0))
    assert set(state.u) == {"wq", "wk", "wv"}
    value, _ = _spec(attn, state, num_iters=500)
    ref = sum((jnp.linalg.svd(w, compute_uv=False)[0] ** 2 - 1) ** 2 for w in full_matrices(attn).values())
    np.testing.assert_allclose(value, ref, rtol=1e-10)


def test_power_sigma_gradient_is_uv():
    rng = np.random.default_rng(0)
    w, u0, v0 = rng.standard_normal((5, 4)), rng.standard_normal(5), rng.standard_normal(4)
    # before convergence: d(u^T W v)/dW = u v^T with the iterated (stopped) u, v
    sigma, u, v = jax.jit(power_sigma, static_argnums=3)(w, u0, v0, 2)
    grad = jax.jit(jax.grad(lambda w_: power_sigma(w_, u0, v0, 2)[0]))(w)
    np.testing.assert_allclose(grad, jnp.outer(u, v), atol=1e-14)
    np.testing.assert_allclose(sigma, u @ w @ v, rtol=1e-14)
    # after convergence: equals d sigma_max / dW = u1 v1^T from the SVD
    g_conv = jax.jit(jax.grad(lambda w_: power_sigma(w_, u0, v0, 500)[0]))(w)
    uu, ss, vvt = np.linalg.svd(np.asarray(w))
    np.testing.assert_allclose(g_conv, np.outer(uu[:, 0], vvt[0]), atol=1e-10)
    g_svd = jax.jit(jax.grad(lambda w_: jnp.linalg.svd(w_, compute_uv=False)[0]))(w)
    np.testing.assert_allclose(g_conv, g_svd, atol=1e-10)


def test_spec_penalty_gradient_matches_svd_after_convergence():
    attn = _attn(4)
    state = spec_init(attn, jax.random.PRNGKey(2))
    _, state = _spec(attn, state, num_iters=500)  # converge, then one warm step
    g = jax.grad(lambda a: spec_penalty(a, state, num_iters=1)[0])(attn)
    g_ref = jax.grad(_spec_reference)(attn)
    for name in g_ref:
        np.testing.assert_allclose(g[name], g_ref[name], atol=1e-9, err_msg=name)


def test_spec_state_warm_start_converges():
    attn = _attn(5)
    ref = _spec_reference(attn)
    state = spec_init(attn, jax.random.PRNGKey(3))
    f = functools.partial(_spec, num_iters=1)
    errs = []
    for _ in range(200):
        value, state = f(attn, state)
        errs.append(abs(float(value) - float(ref)))
    assert errs[-1] < 1e-9 * abs(float(ref)) + 1e-12
    assert errs[-1] < errs[0]
    # a fresh state with a single iteration is worse than the warm-started one
    cold, _ = _spec(attn, spec_init(attn, jax.random.PRNGKey(3)), num_iters=1)
    assert abs(float(cold) - float(ref)) > errs[-1]


# --- Jacobian penalty --------------------------------------------------------------------------

T, B = 3, 2
STEP = functools.partial(itrsa_step, norm="rmsnorm")
STEPS = (0, -1)  # the fixed steps used below (-1 = T - 1)


def _model_params(seed=0):
    rng = np.random.default_rng(seed + 1000)
    return {"attn": _attn(seed), "eta": np.float64(0.7), "gamma": 1.0 + 0.2 * rng.standard_normal(D)}


@jax.jit
def _rollout(params, x0, c):
    return rollout(STEP, params, x0, c, T, trajectory=True)[1]


def _trajectory(params, seed):
    rng = np.random.default_rng(seed)
    c, x0 = rng.standard_normal((B, S, D)), rng.standard_normal((B, S, D))
    return _rollout(params, x0, c), c


@jax.jit
def _sigma_all(params, xs, c):
    """``(T, B)`` sigma_max of the dense Jacobian of every (step, sample), by SVD."""
    def one(x, cc):
        j = dense_jacobian(lambda z: STEP(params, z, cc), x)
        return jnp.linalg.svd(j, compute_uv=False)[0]
    return jax.vmap(jax.vmap(one), in_axes=(0, None))(xs, c)


@pytest.fixture(scope="module")
def setup():
    params = _model_params(1)
    xs, c = _trajectory(params, 8)
    state = jacobian_penalty_init(xs[0], jax.random.PRNGKey(1), num_samples=len(STEPS))
    return params, xs, c, state


def test_jacobian_penalty_matches_dense_svd(setup):
    params, xs, c, state = setup
    value, new = _jp(STEP, params, xs, c, state, num_iters=300, steps=STEPS, target=0.5)
    ref = _sigma_all(params, xs, c)[np.array(STEPS)]
    np.testing.assert_allclose(new.sigma, ref, rtol=1e-9)
    np.testing.assert_allclose(value, jnp.mean((ref - 0.5) ** 2), rtol=1e-9)
    assert new.v.shape == (2, B, S, D) and new.sigma.shape == (2, B)
    np.testing.assert_array_equal(new.steps, [0, T - 1])


def test_jacobian_penalty_gradient_matches_finite_differences(setup):
    params, xs, c, state = setup
    _, state = _jp(STEP, params, xs, c, state, num_iters=300, steps=STEPS, target=0.5)  # converged vectors
    grad = jax.jit(jax.grad(lambda p: jacobian_penalty(STEP, p, xs, c, state, num_iters=1, steps=STEPS)[0]))(params)
    # directional finite difference of the exact (dense-SVD) penalty, xs and c held fixed
    flat, unravel = ravel_pytree(params)
    exact = jax.jit(lambda f: jnp.mean((_sigma_all(unravel(f), xs, c)[np.array(STEPS)] - 1.0) ** 2))
    direction = np.random.default_rng(0).standard_normal(flat.shape)
    eps = 1e-6
    fd = (exact(flat + eps * direction) - exact(flat - eps * direction)) / (2 * eps)
    ad = np.dot(np.asarray(ravel_pytree(grad)[0]), direction)
    np.testing.assert_allclose(ad, fd, rtol=1e-6)
    assert float(jnp.linalg.norm(grad["attn"]["wq"])) > 0  # gradient reaches the attention weights


def test_jacobian_penalty_warm_start_converges(setup):
    params, xs, c, state = setup
    ref = _sigma_all(params, xs, c)[np.array(STEPS)]
    errs = []
    for _ in range(150):  # one iteration per call, vectors carried in the state
        value, state = _jp(STEP, params, xs, c, state, num_iters=1, steps=STEPS)
        errs.append(float(jnp.max(jnp.abs(state.sigma - ref))))
    assert errs[-1] < 1e-8 and errs[0] > errs[-1]
    np.testing.assert_allclose(value, jnp.mean((ref - 1.0) ** 2), rtol=1e-8)


def test_jacobian_penalty_errors(setup):
    params, xs, c, state = setup  # state has K = 2 slots
    too_many = state._replace(v=np.zeros((T + 1, B, S, D)), sigma=np.zeros((T + 1, B)), steps=np.zeros(T + 1, np.int32))
    with pytest.raises(ValueError, match="distinct steps"):
        jacobian_penalty(STEP, params, xs, c, too_many)
    with pytest.raises(ValueError, match="vector slots"):
        jacobian_penalty(STEP, params, xs, c, state, steps=(0, 1, 2))
    with pytest.raises(ValueError, match="shaped like one state"):
        jacobian_penalty(STEP, params, xs, c[0], state)


# --- Energy penalties and orthogonal parametrization ----------------------------------------------

def test_r_e_matches_loops():
    attn = _attn(3)
    ref = 0.0
    for h in range(H):
        m = np.asarray(attn["wv"][h]) @ np.asarray(attn["wo"][h])
        assert m.shape == (D, D)
        ref += np.sum((m - m.T) ** 2)
    np.testing.assert_allclose(r_e_multi(attn), ref, rtol=1e-12)
    rng = np.random.default_rng(1)
    single = {"wq": rng.standard_normal((1, D, D)), "wk": rng.standard_normal((1, D, D)),
              "wv": rng.standard_normal((1, D, D)), "wo": rng.standard_normal((1, D, D))}
    m = np.asarray(single["wv"][0]) @ np.asarray(single["wo"][0])
    np.testing.assert_allclose(r_e_single(single), np.sum((m - m.T) ** 2), rtol=1e-12)
    np.testing.assert_allclose(r_e_single(single), r_e_multi(single), rtol=1e-12)
    with pytest.raises(ValueError):
        r_e_single(attn)


def test_r_e_zero_for_symmetric_parametrizations():
    # Props. 4.1 / 4.2 parametrizations (no wo: W^O_h = I, W^V_h symmetric)
    assert float(r_e_single(symmetric_single_head(jax.random.PRNGKey(0), D, dtype=jnp.float64))) < 1e-24
    assert float(r_e_multi(symmetric_multi_head(jax.random.PRNGKey(0), 8, 2, dtype=jnp.float64))) < 1e-24
    # single head with W^O: W^V = M W^O^{-1} with M symmetric makes W^V W^O = M symmetric
    rng = np.random.default_rng(1)
    m, wo = rng.standard_normal((D, D)), rng.standard_normal((D, D))
    attn = {"wq": np.ones((1, D, D)), "wk": np.ones((1, D, D)),
            "wv": ((m + m.T) @ np.linalg.inv(wo))[None], "wo": wo[None]}
    assert float(r_e_single(attn)) < 1e-18
    # orthogonal W^V, W^O with W^O = W^V^T: each W^V_h W^O_h is a symmetric projector
    a = rng.standard_normal((D, D))
    vo = orthogonal_value_output(a, -a, H)
    attn = _attn() | vo
    assert float(r_e_multi(attn)) < 1e-24
    # ... but a generic orthogonal pair is penalized
    assert float(r_e_multi(_attn() | orthogonal_value_output(a, a, H))) > 1e-3


@pytest.mark.parametrize("method", ["cayley", "qr"])
def test_orthogonal(method):
    rng = np.random.default_rng(0)
    a, target, d = (rng.standard_normal((D, D)) for _ in range(3))
    q = orthogonal(a, method)
    np.testing.assert_allclose(q.T @ q, np.eye(D), atol=1e-12)
    np.testing.assert_allclose(q @ q.T, np.eye(D), atol=1e-12)
    batched = orthogonal(jnp.stack([a, 2 * a]), method)
    np.testing.assert_allclose(batched[0], q, atol=1e-12)
    # differentiable: the gradient of a smooth function matches finite differences
    loss = jax.jit(lambda a_: jnp.sum(orthogonal(a_, method) * target))
    g = jax.jit(jax.grad(loss))(a)
    assert np.all(np.isfinite(g))
    eps = 1e-6
    fd = (loss(a + eps * d) - loss(a - eps * d)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g, d), fd, rtol=1e-6)


def test_orthogonal_cayley_properties():
    a = np.random.default_rng(3).standard_normal((D, D))
    np.testing.assert_allclose(orthogonal(np.zeros((D, D))), np.eye(D), atol=1e-15)
    np.testing.assert_allclose(orthogonal(-a), orthogonal(a).T, atol=1e-12)


def test_split_heads_inverts_full_matrices():
    attn = _attn()
    full = full_matrices(attn)
    np.testing.assert_array_equal(split_value_heads(full["WV"], H), attn["wv"])
    np.testing.assert_array_equal(split_output_heads(full["WO"], H), attn["wo"])
    vo = orthogonal_value_output(jnp.ones((D, D)), jnp.zeros((D, D)), H)
    assert vo["wv"].shape == (H, D, D // H) and vo["wo"].shape == (H, D // H, D)


# --- Adapters -----------------------------------------------------------------------------------

class _FakeModel:
    """Duck-typed stand-in for an NNX model: ``pure_step() -> (step, params)``."""

    def __init__(self, params):
        self.params = params

    def pure_step(self):
        return STEP, self.params


def test_adapters(setup):
    params, xs, c, _ = setup
    aux = {"xs": xs, "c": c}
    spec = SpecPenalty(1e-2, num_iters=300)
    energy = EnergyPenalty(0.5)
    jac = JacobianPenalty(3.0, num_samples=2, num_iters=300)  # K = 2 random steps of T = 3
    model = _FakeModel(params)
    states = (spec.init(model, jax.random.PRNGKey(0)), energy.init(model, jax.random.PRNGKey(0)),
              jac.init(model, jax.random.PRNGKey(0)))  # the Jacobian state is a placeholder, redrawn on call

    @jax.jit
    def penalties(p, states):  # as inside a jitted train step
        m = _FakeModel(p)
        outs = [pen(m, st, aux) for pen, st in zip((spec, energy, jac), states)]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

    (v_spec, v_energy, v_jac), new = penalties(params, states)
    np.testing.assert_allclose(v_spec, 1e-2 * _spec_reference(params["attn"]), rtol=1e-9)
    np.testing.assert_allclose(v_energy, 0.5 * r_e_multi(params["attn"]), rtol=1e-12)
    jstate = new[2]
    assert jstate.v.shape == (2, B, S, D)
    assert int(jstate.steps[0]) < int(jstate.steps[1]) < T  # distinct, sorted
    ref = _sigma_all(params, xs, c)[np.asarray(jstate.steps)]
    np.testing.assert_allclose(v_jac, 3.0 * jnp.mean((ref - 1.0) ** 2), rtol=1e-8)
    assert not np.array_equal(jstate.key, states[2].key)  # the key advances

    fixed = JacobianPenalty(1.0, num_samples=2, like_shape=(B, S, D)).init(model, jax.random.PRNGKey(0))
    assert fixed.v.shape == (2, B, S, D)
    with pytest.raises(KeyError):
        jac(model, jstate, {"c": c})
    with pytest.raises(ValueError):
        EnergyPenalty(1.0, kind="single")(model, (), aux)
