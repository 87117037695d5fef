"""Sec. 6.3 monitors: ``rsa_jax.evaluate.monitor_rollout`` and ``experiments.pseudo_energy``.

Checks, on an untrained tiny ItrSA (D = 8, additive positions so the NumPy reference needs no GTA):
  * the pseudo-energy at t = 0 and t = 1 equals ``-Tr(X^T (C + MSA(X)))`` in float64 NumPy, with
    X_1 from a NumPy ItrSA step;
  * the contribution index lies in [0, 1] and equals a dense ``numpy.linalg.eigh`` computation on
    ``S = J + J^T``, J the central-difference Jacobian of a NumPy MSA; the cosine matches too;
  * the readout accuracy at the last step equals ``evaluate.predict``'s; the segmentation by the
    contribution steps does not change the trajectory; AKOrN runs through the same code;
  * the script's flag checks, and a tiny end-to-end run (slow).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import pseudo_energy as pe
from experiments.sudoku_sweep import load_sets
from rsa_jax.data.sudoku import cell_accuracy
from rsa_jax.evaluate import monitor_rollout, predict
from rsa_jax.models.sudoku import ModelConfig, SudokuModel
from rsa_jax.monitor import pseudo_energy_trajectory

D, H, B = 8, 2, 3
KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module")
def puzzles():
    s = load_sets(None, ood=B)["ood"]
    return s.subset(slice(0, B))


def _model(kind="itrsa"):
    model = SudokuModel(ModelConfig(kind=kind, d=D, heads=H, n=4, position="embedding"), rngs=nnx.Rngs(3))
    for i, (k, v) in enumerate(model.attn.items()):  # nonzero biases and a less trivial attention
        v[...] = (v[...] * 2.0 if k.startswith("w") else
                  0.3 * jax.random.normal(jax.random.PRNGKey(i), v[...].shape, v[...].dtype))
    return model


@pytest.fixture(scope="module")
def itrsa():
    return _model("itrsa")


@pytest.fixture(scope="module")
def monitored(itrsa, puzzles):
    return monitor_rollout(itrsa, puzzles.puzzles.astype(np.int32), puzzles.givens, 3, KEY,
                           solutions=puzzles.solutions, contribution_every=3, contribution_puzzles=2)


# ----------------------------------------------------------------------------- NumPy references
def np_msa(p, x):
    """sum_h softmax(q_h k_h^T / sqrt(D_H)) v_h W^O_h + b^O in float64, no GTA; x (S, D)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    out = np.zeros_like(x)
    for h in range(p["wq"].shape[0]):
        q, k, v = (x @ p[w][h] + p[b][h] for w, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
        logits = q @ k.T / np.sqrt(q.shape[-1])
        a = np.exp(logits - logits.max(-1, keepdims=True))
        out += (a / a.sum(-1, keepdims=True)) @ v @ p["wo"][h]
    return out + p["bo"]


def np_energy(p, x, c):
    return -np.sum(x * (c + np_msa(p, x)))


def np_jacobian(f, x, h=1e-5):
    """Central differences, (x.size, x.size), row-major flattening."""
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        e = e.reshape(x.shape)
        cols.append(((f(x + e) - f(x - e)) / (2 * h)).reshape(-1))
    return np.stack(cols, axis=1)


def np_contribution(j, x, top_frac=0.02):
    _, q = np.linalg.eigh(j + j.T)
    k = max(1, math.ceil(top_frac * x.size - 1e-9))
    return float(np.sum((q[:, -k:].T @ x.reshape(-1)) ** 2) / np.sum(x * x))


def _start(model, puzzles):
    c, x0 = model.condition(jnp.asarray(puzzles.puzzles, jnp.int32), jnp.asarray(puzzles.givens), KEY)
    return np.asarray(c, np.float64), np.asarray(x0, np.float64)


# ----------------------------------------------------------------------------- monitor_rollout
def test_pseudo_energy_matches_numpy(itrsa, puzzles, monitored):
    _, params = itrsa.pure_step()
    attn = {k: np.asarray(v, np.float64) for k, v in params["attn"].items()}
    c, x0 = _start(itrsa, puzzles)
    gamma, eta = np.asarray(params["gamma"], np.float64), float(params["eta"])
    e = monitored["energy_per_puzzle"]
    assert e.shape == (4, B) and monitored["t"].tolist() == [0, 1, 2, 3]
    for b in range(B):
        y = x0[b] + eta * (c[b] + np_msa(attn, x0[b]))
        x1 = gamma * y / np.linalg.norm(y, axis=-1, keepdims=True)        # ItrSA step, whole-token RMSNorm
        np.testing.assert_allclose(e[0, b], np_energy(attn, x0[b], c[b]), rtol=1e-4)
        np.testing.assert_allclose(e[1, b], np_energy(attn, x1, c[b]), rtol=1e-4)
    np.testing.assert_allclose(monitored["energy"], e.mean(1), rtol=1e-12)


def test_contribution_index_and_cosine_match_dense_numpy(itrsa, puzzles, monitored):
    attn = {k: np.asarray(v, np.float64) for k, v in itrsa.pure_step()[1]["attn"].items()}
    _, x0 = _start(itrsa, puzzles)
    ci = monitored["contribution_per_puzzle"]
    assert monitored["contribution_t"].tolist() == [0, 3] and ci.shape == (2, 2)
    assert np.all((ci >= 0) & (ci <= 1))
    for b in range(1):                                                # puzzle 1 is checked by the range only
        j = np_jacobian(lambda z: np_msa(attn, z), x0[b])
        ref = np_contribution(j, x0[b])
        assert 0.0 < ref < 1.0
        np.testing.assert_allclose(ci[0, b], ref, atol=2e-4)
        y, jx = np_msa(attn, x0[b]).reshape(-1), j @ x0[b].reshape(-1)
        np.testing.assert_allclose(monitored["cosine_per_puzzle"][0, b],
                                   y @ jx / np.linalg.norm(y) / np.linalg.norm(jx), atol=1e-5)
    np.testing.assert_allclose(monitored["contribution"], ci.mean(1))


def test_krylov_contribution_matches_dense_rollout(itrsa, puzzles, monitored):
    mon = monitor_rollout(itrsa, puzzles.puzzles.astype(np.int32), puzzles.givens, 3, KEY,
                          contribution_every=3, contribution_puzzles=2, krylov_dim=0)
    np.testing.assert_allclose(mon["contribution_per_puzzle"], monitored["contribution_per_puzzle"], atol=1e-4)
    assert np.all(mon["contribution_residual"] < mon["contribution_gap"])
    assert np.all(np.isnan(monitored["contribution_residual"]))          # dense: no Lanczos diagnostics


def test_contribution_method_resolution():
    args = pe.resolve(pe.parse_args(["--d", "16"]))
    assert pe.krylov_dim(args, 16) is None and pe.krylov_dim(args, 128) == 0    # auto: dense up to D = 32
    args = pe.resolve(pe.parse_args(["--contribution-method", "krylov", "--krylov-dim", "50"]))
    assert pe.krylov_dim(args, 16) == 50
    with pytest.raises(SystemExit, match="krylov-dim"):
        pe.resolve(pe.parse_args(["--contribution-method", "dense", "--krylov-dim", "50"]))
    # the convergence line says what the residual/gap ratio means, either way
    assert "(below 1: the top-2% subspace is resolved)" in pe.lanczos_note(1e-6, 0.04)
    assert "NOT below 1" in pe.lanczos_note(5e-6, 8.1) and "8.10" in pe.lanczos_note(5e-6, 8.1)


def test_accuracy_matches_predict(itrsa, puzzles, monitored):
    pred = predict(itrsa, puzzles.puzzles.astype(np.int32), puzzles.givens, KEY, 3)
    assert monitored["cell_acc"][-1] == pytest.approx(cell_accuracy(pred, puzzles))
    acc = monitored["board_acc"]
    assert acc.shape == (4,) and np.all((acc >= 0) & (acc <= 1))


def test_segments_do_not_change_the_trajectory(itrsa, puzzles, monitored):
    plain = monitor_rollout(itrsa, puzzles.puzzles.astype(np.int32), puzzles.givens, 3, KEY, contribution_every=0)
    np.testing.assert_allclose(plain["energy_per_puzzle"], monitored["energy_per_puzzle"], rtol=1e-6)
    assert plain["contribution_t"].size == 0 and plain["contribution"].size == 0 and plain["board_acc"] is None


def test_akorn_energy_matches_trajectory(puzzles):
    model = _model("akorn")
    digits, given = puzzles.puzzles.astype(np.int32), puzzles.givens
    mon = monitor_rollout(model, digits, given, 2, KEY, contribution_every=0)
    c, x0 = model.condition(jnp.asarray(digits), jnp.asarray(given), KEY)
    _, xs = model.rollout(c, x0, 2, trajectory=True)
    ref = pseudo_energy_trajectory(model.pure_step()[1]["attn"], jnp.concatenate([x0[None], xs]), c)
    np.testing.assert_allclose(mon["energy_per_puzzle"], np.asarray(ref), rtol=1e-5)
    assert np.all(np.abs(mon["cosine"]) <= 1 + 1e-6)


def test_monitor_rollout_rejects_bad_arguments(itrsa, puzzles):
    with pytest.raises(ValueError, match="contribution_every"):
        monitor_rollout(itrsa, puzzles.puzzles.astype(np.int32), puzzles.givens, 2, KEY, contribution_every=-1)


# ----------------------------------------------------------------------------- the script
def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither a shipped model"):
        pe.main(["--out", str(tmp_path), "--checkpoint", str(tmp_path / "nowhere")])


def test_bad_heads_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="even head width"):
        pe.main(["--out", str(tmp_path), "--d", "8", "--heads", "8"])


@pytest.mark.slow
def test_script_end_to_end(tmp_path):
    argv = ["--out", str(tmp_path), "--d", "8", "--heads", "2", "--train-limit", "20", "--batch-size", "10",
            "--epochs", "1", "--id-limit", "10", "--t-train", "1", "--steps", "2", "--puzzles", "3",
            "--contribution-every", "2"]
    pe.main(argv)
    res = json.loads((tmp_path / "pseudo_energy.json").read_text())
    mon = res["monitors"]
    assert len(mon["energy"]) == 3 and mon["contribution_t"] == [0, 2]
    assert all(0 <= v <= 1 for v in mon["contribution"])
    assert (tmp_path / "pseudo_energy.png").is_file()
    assert (tmp_path / "runs" / "itrsa" / "seed_0" / "config.json").is_file()
    pe.main(argv + ["--checkpoint", str(tmp_path / "runs" / "itrsa" / "seed_0")])   # the run read back
    again = json.loads((tmp_path / "pseudo_energy.json").read_text())["monitors"]
    np.testing.assert_allclose(again["energy"], mon["energy"], rtol=1e-6)
