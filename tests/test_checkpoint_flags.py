"""The analysis experiments take a shipped checkpoint by name (``--checkpoint`` / ``--checkpoints``).

One tiny trained ItrSA (D=16, H=2, N=4, T=2; 2 steps on 16 puzzles) is exported as the shipped model
``sudoku-itrsa-test`` under ``$RSA_JAX_PRETRAINED_DIR``; every experiment's ``main`` then runs on it at the
smallest sizes its flags allow, and its JSON must name the checkpoint and hold finite numbers.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments import eigenvalues, gamma_table, heads, lyapunov, oscillator_size, pseudo_energy, regularization
from rsa_jax import pretrained
from rsa_jax.data.sudoku import load_or_generate
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, train

pytestmark = pytest.mark.slow
NAME = "sudoku-itrsa-test"
GROUP = "itrsa norm=rmsnorm"          # experiments.sudoku_sweep.model_group of the tiny model


@pytest.fixture(scope="module", autouse=True)
def _float32():
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-step ItrSA run, exported as the shipped model ``sudoku-itrsa-test`` (env set for the module)."""
    out = tmp_path_factory.mktemp("run")
    puzzles = load_or_generate("satnet_train", n_fallback=16, limit=16, warn=False)
    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=16, heads=2, n=4), t_train=2, batch_size=8, epochs=1,
                      lr=1e-2, checkpoint_every=0, progress=False, out=str(out))
    train(cfg, sudoku_task(cfg, puzzles, puzzles))
    pre = tmp_path_factory.mktemp("pre")
    pretrained.export_run(out, pre / NAME)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pretrained.ENV_DIR, str(pre))
        assert pretrained.names() == [NAME]
        yield out


def finite(*values):
    return all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in values)


def read(path):
    return json.loads(path.read_text())


def test_lyapunov_and_eigenvalues(run_dir, tmp_path):
    lyapunov.main(["--out", str(tmp_path / "ly"), "--checkpoint", NAME, str(run_dir), "--T", "2", "--k", "2",
                   "--sweeps", "1"])
    recs = read(tmp_path / "ly" / "lyapunov.json")["records"]
    assert [r["checkpoint"] for r in recs] == [NAME, str(run_dir)]
    assert recs[0]["model"] == f"{NAME} (itrsa-rmsnorm)"
    assert finite(*[r[k] for r in recs for k in ("max_le", "mean_le")])
    assert recs[0]["max_le"] == pytest.approx(recs[1]["max_le"], rel=1e-5)   # same parameters, two ways in
    assert all(r["sweeps"] == 1 and r["residual"] is None for r in recs)   # one Ritz pass: nothing measured

    # --warmup W: the exponents of f^T at f^W(X0), checked against the dense Jacobian's singular values
    lyapunov.main(["--out", str(tmp_path / "lw"), "--checkpoint", NAME, "--T", "2", "--k", "2", "--sweeps", "10",
                   "--warmup", "0", "3"])
    recs_w = {r["warmup"]: r for r in read(tmp_path / "lw" / "lyapunov.json")["records"]}
    assert all(r["sweeps"] == 10 and 0 <= r["residual"] < 1 for r in recs_w.values())   # how far it got
    model, _ = pretrained.load(NAME)
    step, params = model.pure_step()
    from rsa_jax.data.sudoku import to_model_inputs
    inp = to_model_inputs(load_or_generate("satnet_test", n_fallback=1, limit=1, warn=False))
    c, x0 = model.condition(jax.numpy.asarray(inp["digits"][:1]), jax.numpy.asarray(inp["given"][:1]),
                            jax.random.PRNGKey(0))
    f = lambda x: step(params, x, c[0])
    for warm, start in ((0, x0[0]), (3, f(f(f(x0[0]))))):
        jac = jax.jacfwd(lambda x: f(f(x)))(start).reshape(start.size, start.size)
        top = np.log(np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)[0]) / 2
        assert recs_w[warm]["max_le"] == pytest.approx(top, abs=1e-3), warm
    assert abs(recs_w[3]["max_le"] - recs_w[0]["max_le"]) > 1e-2          # another state, other exponents
    with pytest.raises(SystemExit, match="warmup"):
        lyapunov.main(["--out", str(tmp_path / "lw"), "--checkpoint", NAME, "--warmup", "-1"])

    eigenvalues.main(["--out", str(tmp_path / "ev"), "--float32", "--checkpoint", NAME, "--d", "8", "--heads", "2",
                      "--T", "2"])
    res = read(tmp_path / "ev" / "eigenvalues.json")["results"]
    assert res["normalized"]["checkpoint"] == NAME and res["unnormalized"]["checkpoint"] is None
    assert finite(res["normalized"]["step_summary"]["spectral_radius"], res["normalized"]["step"]["real"])
    assert 0 < res["normalized"]["noise_radius"] < res["normalized"]["composition_summary"]["spectral_radius"]
    eigenvalues.main(["--out", str(tmp_path / "ev1"), "--float32", "--checkpoint", NAME, "--d", "8", "--heads", "2",
                      "--T", "2", "--no-composition"])
    res1 = read(tmp_path / "ev1" / "eigenvalues.json")["results"]["normalized"]
    assert "composition" not in res1 and res1["step"] == res["normalized"]["step"]
    # matrix-free: the outermost eigenvalues by Arnoldi, with residuals, agree with the dense eig
    eigenvalues.main(["--out", str(tmp_path / "evk"), "--float32", "--checkpoint", NAME, "--d", "8", "--heads", "2",
                      "--T", "2", "--krylov", "60", "--k", "4"])
    resk = read(tmp_path / "evk" / "eigenvalues.json")["results"]["normalized"]
    assert len(resk["step"]["real"]) == 4 and len(resk["step_residuals"]) == 4 and "composition" in resk
    for part in ("step", "composition"):
        dense_top = np.hypot(res["normalized"][part]["real"][0], res["normalized"][part]["imag"][0])
        assert resk[part + "_summary"]["spectral_radius"] == pytest.approx(dense_top, rel=1e-3)
    assert resk["step_summary"]["max_residual"] == max(resk["step_residuals"])


def test_pseudo_energy(run_dir, tmp_path):
    pseudo_energy.main(["--out", str(tmp_path), "--checkpoint", NAME, "--steps", "2", "--puzzles", "2",
                        "--contribution-every", "0"])
    res = read(tmp_path / "pseudo_energy.json")
    assert res["run_dir"] == NAME and res["args"]["checkpoint"] == NAME and res["t_train"] == 2
    assert res["model_config"]["d"] == 16 and finite(res["monitors"]["energy"], res["monitors"]["cosine"])
    assert not (tmp_path / "runs").exists()                                    # nothing trained
    with pytest.raises(SystemExit, match="neither a shipped model"):
        pseudo_energy.main(["--out", str(tmp_path), "--checkpoint", "no-such-model"])


def test_heads(run_dir, tmp_path):
    heads.main(["--out", str(tmp_path), "--checkpoints", NAME, "--t-eval", "2", "--eval-limit", "2", "--id-limit",
                "2", "--eval-batch-size", "2", "--lyap-t", "2", "--lyap-k", "2", "--lyap-sweeps", "1"])
    res = read(tmp_path / "heads.json")
    assert res["args"]["t_train"] == 2 and res["args"]["t_eval"] == [2]       # the checkpoint's T_train
    per_h = res["results"][GROUP]
    assert list(per_h) == ["2"] and per_h["2"]["checkpoints"] == [NAME]      # H read from the config
    (s,) = per_h["2"]["seeds"]
    assert s["checkpoint"] == NAME and s["model_config"]["heads"] == 2
    assert finite(s["max_le"], s["mean_le"], s["ood_board_acc"], s["id_board_acc"])
    assert res["table"]["rows"][0][0] == f"{NAME} ({GROUP})"
    assert not (tmp_path / "runs").exists()


def test_oscillator_size(run_dir, tmp_path):
    small = ["--t-eval", "2", "--eval-limit", "2", "--id-limit", "2", "--eval-batch-size", "2", "--lyap-t", "2",
             "--lyap-k", "2", "--lyap-sweeps", "1", "--chaos-warmup", "1", "--chaos-steps", "2", "--chaos-puzzles", "1"]
    oscillator_size.main(["--out", str(tmp_path / "a"), "--checkpoints", NAME, *small])
    res = read(tmp_path / "a" / "oscillator_size.json")
    per_n = res["results"][GROUP]
    assert list(per_n) == ["16"] and per_n["16"]["checkpoints"] == [NAME]    # N = D: RMSNorm over the whole token
    (s,) = per_n["16"]["seeds"]
    assert s["checkpoint"] == NAME and len(s["chaos_l1"]) == 2
    assert finite(s["max_le"], s["ood_board_acc"], s["id_cell_acc"], s["chaos_l1"], s["gamma_abs_max"])
    assert not (tmp_path / "a" / "runs").exists()

    oscillator_size.main(["--out", str(tmp_path / "b"), "--chaos-only", "--checkpoint", NAME, *small])
    chaos = read(tmp_path / "b" / "oscillator_size_chaos.json")["chaos"]
    assert list(chaos) == [NAME] and finite(chaos[NAME]["l1"])


def test_gamma_table(run_dir, tmp_path):
    gamma_table.main(["--out", str(tmp_path), "--checkpoints", NAME])
    res = read(tmp_path / "gamma_table.json")
    (rec,) = res["results"][GROUP]["16"]["seeds"]   # N = D: its RMSNorm is over the whole token (norm_n None)
    model, _ = pretrained.load(NAME)
    g = np.abs(np.asarray(model.pure_step()[1]["gamma"], np.float64))
    assert rec["checkpoint"] == NAME and rec["source"] == "given" and res["skipped"] == []
    assert rec["gamma_abs_max"] == pytest.approx(g.max()) and finite(rec["gamma_abs_mean"])
    assert res["table"]["rows"][0][0] == f"{NAME} ({GROUP})"
    assert not (tmp_path / "runs").exists()


def test_regularization(run_dir, tmp_path):
    record = regularization.main(["--out", str(tmp_path), "--checkpoints", NAME, "--t-eval", "2", "--test-limit",
                                  "2"])
    res = read(tmp_path / "regularization.json")
    entry = res["results"]["itrsa"][NAME]
    assert entry["label"] == f"{NAME}: baseline (given checkpoint)" and entry["checkpoint"] == NAME
    assert entry["test"]["steps"] == [2] and finite(entry["test"]["board_acc"], entry["summary"]["cell_acc"]["mean"])
    assert res["claims"] == [] == record["claims"] and res["table"]["rows"][0][1] == entry["label"]
    assert not (tmp_path / "runs").exists()


def _manifest(heads_: int, max_le: float, mean_le: float, ood_cells: list, *, penalty="none", t_eval=(2, 4)) -> dict:
    """A shipped model's manifest as ``experiments.claims_runs`` leaves it (the entries ``heads`` reads)."""
    n = len(t_eval)
    return {"model": {"kind": "itrsa", "d": 16, "heads": heads_, "n": 4, "norm": "rmsnorm"},
            "training": {"t_train": 2, "seed": 0, "penalty": penalty, "penalty_lam": 1e-4},
            "lyapunov": {"T": 16, "k": 32, "max_le": max_le, "mean_le": mean_le, "mean_le_leading_k": -9.0},
            "accuracy": {"id": {"steps": [4, 2], "board_acc": [0.0, 0.5 * heads_ / 4], "cell_acc": [0.1, 0.9]},
                         "ood": {"steps": list(t_eval), "board_acc": [0.0] * n, "cell_acc": ood_cells}}}


def test_heads_from_manifests(tmp_path, monkeypatch):
    """``--manifests`` draws Fig. S.1 from what the manifests record: grouped by regularizer, then H; the
    trend line is the least-squares slope against log2 H of the recorded exponents."""
    monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path / "pre"))
    models = {"h1": _manifest(1, 0.05, -0.47, [0.5, 0.4]), "h4": _manifest(4, 0.01, -0.62, [0.6, 0.7]),
              "h2": _manifest(2, 0.03, -0.50, [0.55, 0.5]), "spec": _manifest(4, 0.02, -0.58, [0.3, 0.2],
                                                                              penalty="spec"),
              "no-le": {**_manifest(8, 0, 0, [0, 0]), "lyapunov": None},
              "scaled": _manifest(4, 0.0, -0.6, [0.1, 0.2]),
              "t-other": _manifest(8, 0.0, -0.6, [0.1, 0.2, 0.3], t_eval=(2, 4, 8))}
    models["scaled"]["model"]["gamma_init"] = 4.0                           # another model: its own group
    for name, m in models.items():
        (tmp_path / "pre" / name).mkdir(parents=True)
        (tmp_path / "pre" / name / "manifest.json").write_text(json.dumps(m))
        (tmp_path / "pre" / name / "model.npz").touch()                        # a shipped model's folder
    res = heads.main(["--out", str(tmp_path / "o"), "--manifests", "h4", "h1", "spec", "h2", "scaled"])
    assert (tmp_path / "o" / "heads.png").exists() and read(tmp_path / "o" / "heads.json")["this_run"]
    base, spec = res["results"][GROUP], res["results"][GROUP + " R_spec lam=0.0001"]
    assert list(base) == ["1", "2", "4"] and list(spec) == ["4"] and spec["4"]["checkpoints"] == ["spec"]
    assert res["results"][GROUP + " gamma_init=4"]["4"]["checkpoints"] == ["scaled"]
    assert base["4"]["max_le_mean"] == 0.01 and base["2"]["mean_le_mean"] == -0.50        # the paper's mean LE
    assert base["4"]["id_board_acc_mean"] == 0.5 and base["4"]["ood_cell_acc_mean"] == [0.6, 0.7]  # ID at T_train
    assert (res["args"]["d"], res["args"]["t_eval"], res["args"]["heads"], res["args"]["lyap_k"]) == (16, [2, 4],
                                                                                                     [1, 2, 4], "full")
    slope = np.polyfit([0, 1, 2], [0.05, 0.03, 0.01], 1)[0]                             # -0.02 per doubling
    assert f"max LE +0.010..+0.050 (slope {slope:+.4f} per doubling" in res["this_run"][0]
    assert "best OOD at T=4: board H=1 (0.0%), cell H=4 (70.0%)" in res["this_run"][0]
    with pytest.raises(SystemExit, match="no-le: the manifest lacks lyapunov; to fill it: python -m experiments.lyap"):
        heads.main(["--out", str(tmp_path / "o"), "--manifests", "h1", "no-le"])
    with pytest.raises(SystemExit, match="t_eval = \\[2, 4, 8\\], the others \\[2, 4\\]"):
        heads.main(["--out", str(tmp_path / "o"), "--manifests", "h1", "t-other"])
    with pytest.raises(SystemExit, match="no shipped model 'h3'"):
        heads.main(["--out", str(tmp_path / "o"), "--manifests", "h1", "h3"])
    with pytest.raises(SystemExit, match="exclude each other"):
        heads.main(["--out", str(tmp_path / "o"), "--manifests", "h1", "--checkpoints", "h1"])


def test_weight_penalties_values():
    """Exact values on hand-built weights: sigma_max of diagonal matrices, symmetric and antisymmetric W^V W^O."""
    from experiments.weight_penalties import penalties
    eye, anti = np.eye(4), np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 2], [0, 0, -2, 0]], np.float64)
    attn = {"wq": np.diag([2.0, 1, 1, 1])[None], "wk": 3 * eye[None], "wv": anti[None], "wo": eye[None],
            "bq": np.array([[1.0, 1, 0, 0]]), "bk": np.zeros((1, 4)), "bv": np.zeros((1, 4)), "bo": np.zeros(4)}
    got = penalties(attn)
    # sigma_max: 2, 3, 2, 1 -> (4-1)^2 + (9-1)^2 + (4-1)^2 + 0 = 82; ||b^Q||^4 = 4
    assert got["sigma_max"] == pytest.approx({"wq": 2.0, "wk": 3.0, "wv": 2.0, "wo": 1.0})
    assert got["r_spec"] == pytest.approx(86.0)
    # fused: M = [W^Q W^K W^V], M M^T = diag(4,1,1,1) + 9 I + diag(1,1,4,4), sigma_max^2 = 14; (||b^Q||^2)^2 = 4
    assert got["r_spec_fused"] == pytest.approx((14.0 - 1) ** 2 + 0 + (1 + 1) ** 2)
    assert (got["r_e"], got["asymmetry"]) == (pytest.approx(4 * 10.0), pytest.approx(2.0))   # antisymmetric
    sym = penalties({**attn, "wv": (anti @ anti)[None]})                                       # A^2 is symmetric
    assert (sym["r_e"], sym["asymmetry"]) == (0.0, 0.0)


def test_weight_penalties(run_dir, tmp_path):
    from experiments import weight_penalties
    (r,) = weight_penalties.main(["--out", str(tmp_path), "--checkpoints", NAME])["records"]
    model, cfg = pretrained.load(NAME)
    init = weight_penalties.SudokuModel(model.config, rngs=weight_penalties.nnx.Rngs(cfg.seed))
    assert r["init"] == weight_penalties.penalties(init.pure_step()[1]["attn"])
    assert r["trained"]["r_e"] != r["init"]["r_e"] and r["penalty"] == "none" and r["lam_r"] is None
    assert read(tmp_path / "weight_penalties.json")["records"][0]["checkpoint"] == NAME
