"""Tests of rsa_jax.regularizers against dense SVD / explicit-loop references (float64)."""

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsa_jax.attention import full_matrices, init_attention, symmetric_multi_head, symmetric_single_head  # noqa: E402
from rsa_jax.dynamics import itrsa_step, rollout  # noqa: E402
from rsa_jax.jacobian import dense_jacobian  # noqa: E402
from rsa_jax.regularizers import (EnergyPenalty, JacobianPenalty, SpecPenalty, jacobian_penalty,  # noqa: E402
                                  jacobian_penalty_init, orthogonal, orthogonal_value_output, power_sigma,
                                  r_e_multi, r_e_single, spec_init, spec_matrices, spec_penalty,
                                  split_output_heads, split_value_heads)

D, H, S = 6, 2, 3

# Eager JAX dispatch is slow on a shared CPU; every helper below is jitted once.
_spec = jax.jit(spec_penalty, static_argnames=("num_iters",))
_jp = jax.jit(jacobian_penalty, static_argnames=("step", "target", "num_iters", "steps", "stop_state_grad"))


def _attn(key=0, bias=True):
    p = init_attention(jax.random.PRNGKey(key), D, H, bias=bias, dtype=jnp.float64, std=0.7)
    if bias:  # nonzero biases
        ks = jax.random.split(jax.random.PRNGKey(key + 100), 4)
        for k, name in zip(ks, ("bq", "bk", "bv", "bo")):
            p[name] = 0.3 * jax.random.normal(k, p[name].shape, jnp.float64)
    return p


@functools.partial(jax.jit, static_argnames=("per_head",))
def _spec_reference(attn, per_head=False):
    total = 0.0
    if per_head:
        for name in ("wq", "wk", "wv", "wo"):
            for w in attn[name]:
                total += (jnp.linalg.svd(w, compute_uv=False)[0] ** 2 - 1) ** 2
        for name in ("bq", "bk", "bv"):
            for b in attn[name]:
                total += jnp.sum(b ** 2) ** 2
    else:
        for w in full_matrices(attn).values():
            total += (jnp.linalg.svd(w, compute_uv=False)[0] ** 2 - 1) ** 2
        for name in ("bq", "bk", "bv"):
            total += jnp.sum(attn[name] ** 2) ** 2
    return total + jnp.sum(attn["bo"] ** 2) ** 2


def test_spec_matrices_match_full_matrices():
    attn = _attn()
    full = full_matrices(attn)
    mats = spec_matrices(attn)
    for name in ("wq", "wk", "wv", "wo"):
        np.testing.assert_array_equal(mats[name], full[name.upper()])


@pytest.mark.parametrize("per_head", [False, True])
def test_spec_penalty_converges_to_svd(per_head):
    attn = _attn()
    state = spec_init(attn, jax.random.PRNGKey(1), per_head=per_head)
    value, _ = _spec(attn, state, num_iters=500)
    np.testing.assert_allclose(value, _spec_reference(attn, per_head), rtol=1e-10)


def test_spec_penalty_without_bias_or_wo():
    attn = init_attention(jax.random.PRNGKey(3), D, H, bias=False, out_proj=False, dtype=jnp.float64)
    state = spec_init(attn, jax.random.PRNGKey(0))
    assert set(state.u) == {"wq", "wk", "wv"}
    value, _ = _spec(attn, state, num_iters=500)
    ref = sum((jnp.linalg.svd(w, compute_uv=False)[0] ** 2 - 1) ** 2 for w in full_matrices(attn).values())
    np.testing.assert_allclose(value, ref, rtol=1e-10)


def test_power_sigma_gradient_is_uv():
    w = jax.random.normal(jax.random.PRNGKey(0), (5, 4), jnp.float64)
    u0 = jax.random.normal(jax.random.PRNGKey(1), (5,), jnp.float64)
    v0 = jax.random.normal(jax.random.PRNGKey(2), (4,), jnp.float64)
    # before convergence: d(u^T W v)/dW = u v^T with the iterated (stopped) u, v
    sigma, u, v = power_sigma(w, u0, v0, 2)
    grad = jax.grad(lambda w_: power_sigma(w_, u0, v0, 2)[0])(w)
    np.testing.assert_allclose(grad, jnp.outer(u, v), atol=1e-14)
    np.testing.assert_allclose(sigma, u @ w @ v, rtol=1e-14)
    # after convergence: equals d sigma_max / dW = u1 v1^T from the SVD
    g_conv = jax.grad(lambda w_: power_sigma(w_, u0, v0, 500)[0])(w)
    uu, ss, vvt = np.linalg.svd(np.asarray(w))
    np.testing.assert_allclose(g_conv, np.outer(uu[:, 0], vvt[0]), atol=1e-10)
    g_svd = jax.grad(lambda w_: jnp.linalg.svd(w_, compute_uv=False)[0])(w)
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


def _model_params(key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    return {"attn": _attn(key), "eta": jnp.asarray(0.7, jnp.float64),
            "gamma": 1.0 + 0.2 * jax.random.normal(k2, (D,), jnp.float64)}


@jax.jit
def _trajectory(params, key):
    kc, kx = jax.random.split(key)
    c = jax.random.normal(kc, (B, S, D), jnp.float64)
    x0 = jax.random.normal(kx, (B, S, D), jnp.float64)
    _, xs = rollout(STEP, params, x0, c, T, trajectory=True)
    return xs, c


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
    xs, c = _trajectory(params, jax.random.PRNGKey(8))
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
    exact = lambda p: jnp.mean((_sigma_all(p, xs, c)[np.array(STEPS)] - 1.0) ** 2)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    direction = jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, l.shape, l.dtype)
                                                       for k, l in zip(keys, leaves)])
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction)
    fd = (exact(shift(eps)) - exact(shift(-eps))) / (2 * eps)
    ad = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(ad, fd, rtol=1e-6)
    # the attention weights alone (the bulk of the parameters) also match
    assert float(jnp.linalg.norm(grad["attn"]["wq"])) > 0


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
    params, xs, c, _ = setup
    with pytest.raises(ValueError):  # more samples than steps
        _jp(STEP, params, xs, c, jacobian_penalty_init(xs[0], jax.random.PRNGKey(0), T + 1))
    with pytest.raises(ValueError):  # steps and slots disagree
        _jp(STEP, params, xs, c, jacobian_penalty_init(xs[0], jax.random.PRNGKey(0), 1), steps=(0, 1))
    with pytest.raises(ValueError):  # c not shaped like a state
        _jp(STEP, params, xs, c[0], jacobian_penalty_init(xs[0], jax.random.PRNGKey(0), 1))


# --- Energy penalties and orthogonal parametrization ----------------------------------------------

def test_r_e_matches_loops():
    attn = _attn(3)
    ref = 0.0
    for h in range(H):
        m = np.asarray(attn["wv"][h]) @ np.asarray(attn["wo"][h])
        assert m.shape == (D, D)
        ref += np.sum((m - m.T) ** 2)
    np.testing.assert_allclose(r_e_multi(attn), ref, rtol=1e-12)
    single = init_attention(jax.random.PRNGKey(1), D, 1, dtype=jnp.float64)
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
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    m = jax.random.normal(k1, (D, D), jnp.float64)
    wo = jax.random.normal(k2, (D, D), jnp.float64)
    attn = {"wq": jnp.ones((1, D, D)), "wk": jnp.ones((1, D, D)),
            "wv": ((m + m.T) @ jnp.linalg.inv(wo))[None], "wo": wo[None]}
    assert float(r_e_single(attn)) < 1e-18
    # orthogonal W^V, W^O with W^O = W^V^T: each W^V_h W^O_h is a symmetric projector
    a = jax.random.normal(jax.random.PRNGKey(2), (D, D), jnp.float64)
    vo = orthogonal_value_output(a, -a, H)
    attn = _attn() | vo
    assert float(r_e_multi(attn)) < 1e-24
    # ... but a generic orthogonal pair is penalized
    assert float(r_e_multi(_attn() | orthogonal_value_output(a, a, H))) > 1e-3


@pytest.mark.parametrize("method", ["cayley", "qr"])
def test_orthogonal(method):
    a = jax.random.normal(jax.random.PRNGKey(0), (D, D), jnp.float64)
    q = orthogonal(a, method)
    np.testing.assert_allclose(q.T @ q, np.eye(D), atol=1e-12)
    np.testing.assert_allclose(q @ q.T, np.eye(D), atol=1e-12)
    batched = orthogonal(jnp.stack([a, 2 * a]), method)
    np.testing.assert_allclose(batched[0], q, atol=1e-12)
    # differentiable: the gradient of a smooth function matches finite differences
    target = jax.random.normal(jax.random.PRNGKey(1), (D, D), jnp.float64)
    loss = lambda a_: jnp.sum(orthogonal(a_, method) * target)
    g = jax.grad(loss)(a)
    assert np.all(np.isfinite(g))
    d = jax.random.normal(jax.random.PRNGKey(2), (D, D), jnp.float64)
    eps = 1e-6
    fd = (loss(a + eps * d) - loss(a - eps * d)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g, d), fd, rtol=1e-6)


def test_orthogonal_cayley_properties():
    a = jax.random.normal(jax.random.PRNGKey(3), (D, D), jnp.float64)
    np.testing.assert_allclose(orthogonal(jnp.zeros((D, D))), np.eye(D), atol=1e-15)
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
    def loss(p, states):
        m = _FakeModel(p)
        outs = [pen(m, st, aux) for pen, st in zip((spec, energy, jac), states)]
        values = tuple(o[0] for o in outs)
        return sum(values), (values, tuple(o[1] for o in outs))

    (total, ((v_spec, v_energy, v_jac), new)), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, states)
    np.testing.assert_allclose(v_spec, 1e-2 * _spec_reference(params["attn"]), rtol=1e-9)
    np.testing.assert_allclose(v_energy, 0.5 * r_e_multi(params["attn"]), rtol=1e-12)
    jstate = new[2]
    assert jstate.v.shape == (2, B, S, D)
    assert int(jstate.steps[0]) < int(jstate.steps[1]) < T  # distinct, sorted
    ref = _sigma_all(params, xs, c)[np.asarray(jstate.steps)]
    np.testing.assert_allclose(v_jac, 3.0 * jnp.mean((ref - 1.0) ** 2), rtol=1e-8)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(grad))
    assert not np.array_equal(jstate.key, states[2].key)  # the key advances

    fixed = JacobianPenalty(1.0, num_samples=2, like_shape=(B, S, D)).init(model, jax.random.PRNGKey(0))
    assert fixed.v.shape == (2, B, S, D)
    with pytest.raises(KeyError):
        jac(model, jstate, {"c": c})
    with pytest.raises(ValueError):
        EnergyPenalty(1.0, kind="single")(model, (), aux)
