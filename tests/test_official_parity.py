"""Parity with the official AKOrN Sudoku code (PyTorch), from a fixture it recorded.

``tests/fixtures/official_akorn.npz`` was written by ``tests/fixtures/make_official_akorn.py`` from the
official classes (D = 32, H = 2, N = 4, T = 6, weights moved off their init); no torch is needed here.
The official weights mapped by ``rsa_jax.models.official`` must give every state within 1e-5 and the
logits within 1e-4 (float32); a wrong head layout must not. The initialization of
``SudokuModel(kind="akorn")`` must match the official one's per-tensor statistics at D = 128.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsa_jax.models.official import OFFICIAL_NAMES, load_official, official_to_params
from rsa_jax.models.sudoku import ModelConfig, SudokuModel, gta_matrices
from rsa_jax.ops import pi

FIXTURE = Path(__file__).parent / "fixtures" / "official_akorn.npz"


@pytest.fixture(scope="module")
def rec():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def _run(rec, head_layout="interleaved"):
    d, h, n, t = (int(v) for v in rec["config"])
    state = {k[2:]: v for k, v in rec.items() if k.startswith("w/")}
    model = load_official(state, ModelConfig(kind="akorn", d=d, heads=h, n=n), head_layout=head_layout)
    digits = jnp.asarray(rec["digits"])
    given = digits > 0
    c, _ = model.condition(digits, given, jax.random.PRNGKey(0))
    noise = jnp.asarray(rec["noise"]).reshape(len(digits), d, 81).transpose(0, 2, 1)   # (B, D, 9, 9) -> (B, 81, D)
    g = given[..., None].astype(c.dtype)
    x0 = pi(g * c + (1 - g) * noise, n)
    x, xs = model.rollout(c, x0, t, trajectory=True)
    return xs, model.readout(x)


def _official_states(rec):
    s = rec["states"]   # (T, B, D, 9, 9)
    return s.reshape(*s.shape[:3], 81).transpose(0, 1, 3, 2)


def test_states_and_logits_match_the_official_code(rec):
    xs, logits = _run(rec)
    want = _official_states(rec)
    assert xs.shape == want.shape
    assert float(jnp.max(jnp.abs(xs - want))) < 1e-5                     # every step
    assert float(jnp.max(jnp.abs(logits.reshape(rec["logits"].shape) - rec["logits"]))) < 1e-4
    assert float(jnp.std(logits)) > 0.1                                    # not a trivial (constant) output


def test_gta_matrices_at_init_are_the_official_ones(rec):
    d, h, _, _ = (int(v) for v in rec["config"])
    np.testing.assert_allclose(gta_matrices(d // h), rec["gta_init"], atol=1e-6)


def test_a_wrong_head_layout_breaks_parity(rec):
    xs, logits = _run(rec, head_layout="contiguous")
    assert float(jnp.max(jnp.abs(xs[0] - _official_states(rec)[0]))) > 1e-2
    assert float(jnp.max(jnp.abs(logits.reshape(rec["logits"].shape) - rec["logits"]))) > 1e-2


def test_every_official_tensor_is_mapped_and_wrong_inputs_are_refused(rec):
    state = {k[2:]: v for k, v in rec.items() if k.startswith("w/")}
    assert set(state) - {"x0"} == set(OFFICIAL_NAMES)
    d, h, n, _ = (int(v) for v in rec["config"])
    cfg = ModelConfig(kind="akorn", d=d, heads=h, n=n)
    with pytest.raises(ValueError, match="missing"):
        official_to_params({k: v for k, v in state.items() if k != "gamma"}, cfg)
    with pytest.raises(ValueError, match="readout"):
        official_to_params(state, ModelConfig(kind="akorn", d=d, heads=h, n=n, readout="gelu"))
    ema = {f"ema_model.{k}": v for k, v in state.items()}   # an EMA checkpoint's names
    assert np.allclose(official_to_params(ema, cfg)["attn"]["wq"], official_to_params(state, cfg)["attn"]["wq"])


def _ours(params: dict, path: tuple) -> list:
    """The arrays of our parameter tree at ``path`` (W_qkv maps to three: ``("attn", "wq", "wk", "wv")``)."""
    if path[0] == "attn" and len(path) == 4:
        return [params["attn"][k] for k in path[1:]]
    node = params
    for key in path:
        node = node[key]
    return [node]


def test_initialization_matches_the_official_statistics(rec):
    """Each official tensor's mean and std at D = 128, H = 4, N = 4 (seeds 0-2) against ours (seeds 0-2):
    std within 10%, mean within 10% of the std. The embedding is N(0, 1) (Flax's default would be
    N(0, 1/D)), the linear layers U(+-1/sqrt(fan_in)) with biases drawn alike, omega a 2-vector."""
    ours = {}
    for seed in range(3):
        model = SudokuModel(ModelConfig(kind="akorn", d=128, heads=4, n=4), rngs=nnx.Rngs(seed))
        params = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1])
        for name, path in OFFICIAL_NAMES.items():
            arrays = [np.asarray(a, np.float64).ravel() for a in _ours(params, path)]
            v = np.concatenate(arrays)
            ours.setdefault(name, []).append([v.mean(), v.std(), v.size])
    for name in OFFICIAL_NAMES:
        want = rec[f"stat/{name}"].mean(0)
        got = np.mean(ours[name], 0)
        # 10%, widened by 4 standard errors of the two samples' estimates (3 seeds x size entries), which
        # only matters for small tensors (the 9 output biases: sigma / sqrt(27) = 0.19 sigma)
        n = 3 * got[2]
        scale = max(want[1], 1e-3)
        assert abs(got[0] - want[0]) <= (0.1 + 4 * np.sqrt(2 / n)) * scale + 1e-6, (name, got, want)
        assert abs(got[1] - want[1]) <= (0.1 + 4 * np.sqrt(1 / n)) * scale + 1e-6, (name, got, want)
    # the check can fail: the pre-parity initialization (Flax's N(0, 1/D) embedding) is far off
    legacy = SudokuModel(ModelConfig(kind="akorn", d=128, heads=4, n=4, param_init="normal"), rngs=nnx.Rngs(0))
    assert float(jnp.std(legacy.embed.embedding[...])) < 0.5 * rec["stat/embedding.weight"][:, 1].mean()


def test_legacy_checkpoints_keep_their_parametrization():
    """A record written before the parity work (no new fields) loads with the pre-parity choices."""
    from rsa_jax.config import config_from_dict
    old = {"kind": "akorn", "d": 16, "heads": 2, "n": 4}
    cfg = config_from_dict(ModelConfig, old)
    assert (cfg.param_init, cfg.gta_param, cfg.omega_param, cfg.readout) == ("normal", "angles", "scalar", "gelu")
    new = ModelConfig(kind="akorn", d=16, heads=2, n=4)
    assert (new.param_init, new.gta_param, new.omega_param, new.readout) == ("torch", "matrices", "vector", "akorn")
    itrsa = ModelConfig(kind="itrsa", d=16, heads=2, n=4)
    assert (itrsa.param_init, itrsa.gta_param, itrsa.readout) == ("normal", "angles", "gelu")
    assert new.with_kind("itrsa") == itrsa


def test_one_training_step_matches_the_official_code(rec):
    """The official train_sudoku.py step on the fixture's puzzles (random targets, the same noise): the loss,
    every gradient, and the weights after clip_grad_norm_(1.0) and one Adam(1e-3) step, against ours
    (``rsa_jax.train_state.make_optimizer``: clip_by_global_norm then optax.adam)."""
    import optax

    from rsa_jax.train_config import TrainConfig
    from rsa_jax.train_state import make_optimizer
    d, h, n, t = (int(v) for v in rec["config"])
    cfg = ModelConfig(kind="akorn", d=d, heads=h, n=n)
    state = {k[2:]: v for k, v in rec.items() if k.startswith("w/")}
    model = load_official(state, cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    digits, target = jnp.asarray(rec["digits"]), jnp.asarray(rec["target"])
    noise = jnp.asarray(rec["noise"]).reshape(len(digits), d, 81).transpose(0, 2, 1)

    def loss_fn(p):
        m = nnx.merge(graphdef, p, rest)
        c, _ = m.condition(digits, digits > 0, jax.random.PRNGKey(0))
        g = (digits > 0)[..., None].astype(c.dtype)
        logits = m.readout(m.rollout(c, pi(g * c + (1 - g) * noise, n), t))
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    assert abs(float(loss) - float(rec["loss"])) < 1e-5
    want = official_to_params({k[2:]: v for k, v in rec.items() if k.startswith("g/")}, cfg)
    got = nnx.to_pure_dict(grads)
    scale = max(float(np.max(np.abs(v))) for v in jax.tree.leaves(want))
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), got, want)
    assert max(jax.tree.leaves(diffs)) < 1e-4 * scale, diffs
    tx = make_optimizer(TrainConfig(model=cfg, lr=1e-3, grad_clip=1.0))
    with jax.numpy_dtype_promotion("standard"):   # optax's bias correction mixes a Python float and int32
        updates, _ = tx.update(grads, tx.init(params), params)
    stepped = nnx.to_pure_dict(optax.apply_updates(params, updates))
    after = official_to_params({k[3:]: v for k, v in rec.items() if k.startswith("w1/")}, cfg)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), stepped, after)
    # Adam's first step moves each weight by lr * g / (|g| + eps) ~ 1e-3: agree to 1% of it (a gradient entry
    # near eps = 1e-8 turns float32 rounding of g into a visible change of its step; seen: 1.1e-6)
    assert max(jax.tree.leaves(moved)) < 1e-5, moved


def test_exported_official_checkpoint_loads_as_the_mapped_model(rec, tmp_path, monkeypatch):
    """``experiments.akorn_parity export``: an official ``checkpoint.pt`` (read by torch, here a stand-in for
    ``torch.load``) becomes a model file that ``pretrained.load_file`` rebuilds with the mapped weights."""
    import sys
    import types

    from experiments import akorn_parity
    from rsa_jax import pretrained
    d, h, n, _ = (int(v) for v in rec["config"])
    state = {k[2:]: v for k, v in rec.items() if k.startswith("w/")}

    class Tensor:
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    fake = types.ModuleType("torch")
    fake.load = lambda path, weights_only: {"net": {f"module.{k}": Tensor(v) for k, v in state.items()}, "step": 7}
    monkeypatch.setitem(sys.modules, "torch", fake)
    out = akorn_parity.main(["export", "--checkpoint", "ckpt.pt", "--out", str(tmp_path / "m.npz"),
                             "--d", str(d), "--heads", str(h)])
    model, cfg = pretrained.load_file(out)
    want = load_official(state, ModelConfig(kind="akorn", d=d, heads=h, n=n))
    assert model.config == want.config and cfg.model.kind == "akorn"
    got, ref = nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(want, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, ref)
