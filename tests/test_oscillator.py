"""Oscillator-wise normalization (Fig. 4): ItrSA with N-chunk RMSNorm, AKOrN with Pi_N or RMSNorm.

Checks, on tiny models (D = 8, N in {2, 4, 8}):
  * the model's pure step equals a hand-written NumPy formula of the update;
  * the Jacobian of one step has exactly S * D / N null directions (one radial direction per
    normalized oscillator), and the full QR Lyapunov spectrum has exactly that many exponents at
    the floor (``NULL_FLOOR``) while every other exponent is finite and above it;
  * gamma (the RMSNorm gain) receives nonzero, finite gradients through the T-step rollout
    (one step of the trainer moves it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsa_jax.attention import init_attention
from rsa_jax.dynamics import akorn_step, itrsa_step
from rsa_jax.jacobian import dense_jacobian
from rsa_jax.lyapunov import NULL_FLOOR, lyapunov_spectrum, max_lyapunov, null_directions
from rsa_jax.models.sudoku import ModelConfig, SudokuModel

D, H = 8, 2
NS = (2, 4, 8)


# ----------------------------------------------------------------------------- references
def np_msa(p, x):
    """Multi-head SA in float64 NumPy, no GTA: sum_h softmax(b q_h k_h^T) v_h W^O_h + b^O."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    out = np.zeros_like(x)
    for h in range(p["wq"].shape[0]):
        q = x @ p["wq"][h] + p["bq"][h]
        k = x @ p["wk"][h] + p["bk"][h]
        v = x @ p["wv"][h] + p["bv"][h]
        logits = q @ k.T / np.sqrt(q.shape[-1])
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        out += a @ v @ p["wo"][h]
    return out + p["bo"]


def np_chunk_rmsnorm(y, gamma, n):
    s, d = y.shape
    yc = y.reshape(s, d // n, n)
    return gamma * (yc / np.linalg.norm(yc, axis=-1, keepdims=True)).reshape(s, d)


def np_itrsa(p, x, c, n):
    """X <- gamma * Pi_N(X + eta (C + MSA(X)))."""
    y = x + float(p["eta"]) * (c + np_msa(p["attn"], x))
    return np_chunk_rmsnorm(y, np.asarray(p["gamma"], np.float64), n)


def np_akorn(p, x, c, n, norm):
    """X <- Norm_N(X + eta (Omega X + (I - x_j x_j^T) y_j)), y = C + MSA(X), per oscillator j."""
    s, d = x.shape
    w, eta = float(p["omega"]), float(p["eta"])
    y = c + np_msa(p["attn"], x)
    omega_x = np.empty_like(x)
    omega_x[:, 0::2], omega_x[:, 1::2] = w * x[:, 1::2], -w * x[:, 0::2]
    xc, yc = x.reshape(s, d // n, n), y.reshape(s, d // n, n)
    tangent = np.einsum("sjab,sjb->sja", np.eye(n) - xc[..., :, None] * xc[..., None, :], yc)
    z = x + eta * (omega_x + tangent.reshape(s, d))
    gamma = np.asarray(p["gamma"], np.float64) if norm == "rmsnorm" else np.ones(d)
    return np_chunk_rmsnorm(z, gamma, n)


def random_params(key, with_omega):
    ka, kg = jax.random.split(key)
    attn = init_attention(ka, D, H, bias=True, std=0.6, dtype=jnp.float64)   # float64 like the states
    attn = {k: v + 0.1 * jax.random.normal(jax.random.fold_in(ka, i), v.shape) if k.startswith("b") else v
            for i, (k, v) in enumerate(attn.items())}
    p = {"attn": attn, "eta": jnp.asarray(0.7), "gamma": 1.0 + 0.3 * jax.random.normal(kg, (D,))}
    if with_omega:
        p["omega"] = jnp.asarray(0.45)
    return p


def unit_chunks(key, s, n):
    x = jax.random.normal(key, (s, D))
    xc = x.reshape(s, D // n, n)
    return (xc / jnp.linalg.norm(xc, axis=-1, keepdims=True)).reshape(s, D)


# ----------------------------------------------------------------------------- step formulas
@pytest.mark.parametrize("n", NS)
def test_itrsa_oscillator_rmsnorm_step_matches_formula(n):
    cfg = ModelConfig(kind="itrsa", d=D, heads=H, n=n, norm="rmsnorm", norm_n=n)
    assert cfg.state_chunk == n
    kp, kx, kc = jax.random.split(jax.random.PRNGKey(n), 3)
    p = random_params(kp, with_omega=False)
    s = 7
    x, c = jax.random.normal(kx, (s, D)), jax.random.normal(kc, (s, D))
    got = cfg.step_fn(p, x, c)
    want = np_itrsa(p, np.asarray(x, np.float64), np.asarray(c, np.float64), n)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    # each N-chunk of the output is gamma (.) (unit vector): ||chunk / gamma_chunk|| = 1
    ratio = (np.asarray(got) / np.asarray(p["gamma"])).reshape(s, D // n, n)
    np.testing.assert_allclose(np.linalg.norm(ratio, axis=-1), 1.0, rtol=1e-5)
    # N = D is the whole-token RMSNorm of the default ItrSA
    if n == D:
        np.testing.assert_allclose(np.asarray(got), np.asarray(itrsa_step(p, x, c, norm="rmsnorm")), atol=1e-6)


@pytest.mark.parametrize("norm", ["pi", "rmsnorm"])
@pytest.mark.parametrize("n", NS)
def test_akorn_step_matches_formula(n, norm):
    cfg = ModelConfig(kind="akorn", d=D, heads=H, n=n, norm=norm)
    kp, kx, kc = jax.random.split(jax.random.PRNGKey(10 + n), 3)
    p = random_params(kp, with_omega=True)
    if norm == "pi":
        p.pop("gamma")
    s = 7
    x, c = unit_chunks(kx, s, n), jax.random.normal(kc, (s, D))
    got = cfg.step_fn(p, x, c)
    want = np_akorn(p, np.asarray(x, np.float64), np.asarray(c, np.float64), n, norm)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(akorn_step(p, x, c, n=n, norm=norm)), atol=1e-6)


def _model(kind, n, seed=0):
    cfg = (ModelConfig(kind="itrsa", d=D, heads=H, n=n, norm="rmsnorm", norm_n=n) if kind == "itrsa"
           else ModelConfig(kind="akorn", d=D, heads=H, n=n, norm="rmsnorm"))
    return SudokuModel(cfg, rngs=nnx.Rngs(seed))


def _puzzle(seed=0, b=1):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, size=(b, 81))
    return jnp.asarray(digits), jnp.asarray(digits > 0)


@pytest.mark.parametrize("kind", ["itrsa", "akorn"])
@pytest.mark.parametrize("n", NS)
def test_model_pure_step_uses_oscillator_norm(kind, n):
    """The NNX model's pure step (GTA attention) normalizes every N-chunk with the learned gamma."""
    model = _model(kind, n)
    model.gamma[...] = 1.0 + 0.2 * jnp.arange(D, dtype=jnp.float32) / D
    step, params = model.pure_step()
    assert "gamma" in params and params["gamma"].shape == (D,)
    digits, given = _puzzle(n)
    c, x0 = model.condition(digits, given, jax.random.PRNGKey(1))
    # X0 is unit per N-chunk (the state normalization chunk is N for both models)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x0).reshape(1, 81, D // n, n), axis=-1), 1.0, rtol=1e-5)
    x1 = np.asarray(step(params, x0[0], c[0]))
    ratio = (x1 / np.asarray(params["gamma"])).reshape(81, D // n, n)
    np.testing.assert_allclose(np.linalg.norm(ratio, axis=-1), 1.0, rtol=1e-5)
    xT = np.asarray(model.rollout(c, x0, 5))
    assert xT.shape == (1, 81, D) and np.all(np.isfinite(xT))


# ----------------------------------------------------------------------------- null directions
@pytest.mark.parametrize("kind", ["itrsa", "akorn"])
@pytest.mark.parametrize("n", NS)
def test_null_directions_equal_S_D_over_N(kind, n):
    """The models' steps (``cfg.step_fn``, as ``pure_step`` returns) on S = 6 random tokens."""
    cfg = (ModelConfig(kind="itrsa", d=D, heads=H, n=n, norm="rmsnorm", norm_n=n) if kind == "itrsa"
           else ModelConfig(kind="akorn", d=D, heads=H, n=n, norm="rmsnorm"))
    kp, kx, kc = jax.random.split(jax.random.PRNGKey(3 + n), 3)
    params = random_params(kp, with_omega=kind == "akorn")
    s = 6
    x0, c = unit_chunks(kx, s, n), jax.random.normal(kc, (s, D))
    f = lambda x: cfg.step_fn(params, x, c)
    expected = s * D // n
    assert null_directions(x0.shape, cfg.state_chunk, cfg.norm) == expected
    assert null_directions((81, D), cfg.state_chunk, cfg.norm) == 81 * D // n   # a Sudoku state

    # one-step Jacobian: rank S*D - S*D/N
    sv = np.linalg.svd(np.asarray(dense_jacobian(f, x0), np.float64), compute_uv=False)
    assert int(np.sum(sv < 1e-4 * sv[0])) == expected

    # full QR spectrum (k = S*D): exactly S*D/N exponents at the floor, the rest finite above it.
    # One refinement sweep is needed: the classical start Q0 = I (sweeps=0) Gram-Schmidts the
    # axis-aligned columns of J, which are nearly dependent (tokens couple only weakly through
    # attention), so the per-step null set lands on different column indices and the time
    # averages mix floor and non-floor logs.
    ex = np.asarray(lyapunov_spectrum(f, x0, T=2, sweeps=1).exponents)
    assert ex.shape == (s * D,)
    at_floor = ex <= NULL_FLOOR + 1e-6
    assert int(at_floor.sum()) == expected, (kind, n, np.sort(ex)[: expected + 3])
    assert np.all(np.isfinite(ex)) and np.all(ex[~at_floor] > NULL_FLOOR + 1.0)
    # the summaries see the same numbers with the nulls dropped
    assert float(max_lyapunov(ex)) == pytest.approx(float(ex.max()))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["itrsa", "akorn"])
def test_gamma_trains_through_the_trainer(kind):
    """One step of ``rsa_jax.train``'s pure train step on the Sudoku loss moves gamma."""
    from rsa_jax.tasks.sudoku import sudoku_loss
    from rsa_jax.train import Task, TrainConfig, init_train_state, make_optimizer, make_train_step, split_model

    cfg = TrainConfig(model=(ModelConfig(kind="itrsa", d=D, heads=H, n=4, norm="rmsnorm", norm_n=4) if kind == "itrsa"
                             else ModelConfig(kind="akorn", d=D, heads=H, n=4, norm="rmsnorm")),
                      lr=1e-2, t_train=3, batch_size=4)
    digits, given = _puzzle(3, b=4)
    batch = {"digits": np.asarray(digits), "given": np.asarray(given),
             "target": np.random.default_rng(1).integers(0, 9, size=(4, 81))}
    task = Task(init_model=lambda rngs: SudokuModel(cfg.model, rngs=rngs),
                loss_fn=lambda m, b, k: sudoku_loss(m, b, k, cfg.t_train), train_batches=lambda e: [batch],
                steps_per_epoch=1)
    model = task.init_model(nnx.Rngs(0))
    graphdef, _, rest = split_model(model)
    tx = make_optimizer(cfg)
    state = init_train_state(model, tx, jax.random.PRNGKey(0))
    before = np.asarray(state.params["gamma"]).copy()
    state, metrics = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    after = np.asarray(state.params["gamma"])
    assert np.all(np.isfinite(after)) and not np.allclose(after, before)   # gamma got a nonzero gradient


@pytest.mark.parametrize("norm_n", [None, 4])
def test_gamma_init_at_nn_rmsnorm_scale(norm_n):
    """``gamma_init = sqrt(N)`` is PyTorch's nn.RMSNorm at init: every chunk of the new state has RMS 1
    (``y / sqrt(mean(y^2))``, weight 1), i.e. norm sqrt(N), where the default gives unit chunks."""
    n = D if norm_n is None else norm_n
    cfg = ModelConfig(kind="itrsa", d=D, heads=2, n=4, norm="rmsnorm", norm_n=norm_n, gamma_init=float(np.sqrt(n)))
    model = SudokuModel(cfg, rngs=nnx.Rngs(0))
    step, params = model.pure_step()
    np.testing.assert_array_equal(np.asarray(params["gamma"]), np.float32(np.sqrt(n)))
    digits, given = _puzzle(0)
    c, x0 = model.condition(digits, given, jax.random.PRNGKey(1))
    x1 = np.asarray(step(params, x0[0], c[0]), np.float64).reshape(81, D // n, n)
    np.testing.assert_allclose(np.sqrt(np.mean(x1 ** 2, axis=-1)), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="gamma_init must be > 0"):
        ModelConfig(kind="itrsa", gamma_init=0.0)
