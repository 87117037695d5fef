"""Tests of rsa_jax.pretrained (one-file checkpoints, shipped models) and of the main job's use of them."""

from __future__ import annotations

import json
import shutil

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from rsa_jax import pretrained
from rsa_jax.data.sudoku import load_or_generate, to_model_inputs
from rsa_jax.models.sudoku import ModelConfig, SudokuModel
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, split_model, train


@pytest.fixture(scope="module", autouse=True)
def _float32():
    with jax.enable_x64(False):
        yield


def leaves_equal(a, b):
    assert jax.tree.leaves(a)
    chex.assert_trees_all_equal(a, b)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step ItrSA run (D=16): ``(run_dir, model)``."""
    out = tmp_path_factory.mktemp("run")
    puzzles = load_or_generate("satnet_train", n_fallback=16, limit=16, warn=False)
    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=16, heads=2, n=4), t_train=2, batch_size=8, epochs=1,
                      lr=1e-2, checkpoint_every=0, progress=False, out=str(out))
    model, _ = train(cfg, sudoku_task(cfg, puzzles, puzzles))
    return out, model


@pytest.fixture()
def shipped_dir(tmp_path, monkeypatch, tiny_run):
    """``$RSA_JAX_PRETRAINED_DIR`` holding one exported model, ``sudoku-itrsa-test``."""
    monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path / "pre"))
    pretrained.export_run(tiny_run[0], tmp_path / "pre" / "sudoku-itrsa-test",
                          info={"command": "python -m rsa_jax.tasks.sudoku ...", "steps": 2})
    return tmp_path / "pre"


def test_save_load_file_round_trip(tmp_path):
    cfg = TrainConfig(model=ModelConfig(kind="akorn", d=16, heads=2, n=4, position="embedding"), seed=3)
    model = SudokuModel(cfg.model, rngs=nnx.Rngs(7))     # rngs differ from cfg.seed: loading must not re-init
    f = pretrained.save(model, cfg, tmp_path / "m.npz")
    loaded, cfg2 = pretrained.load_file(f)
    assert cfg2 == cfg and loaded.config == cfg.model
    leaves_equal(split_model(loaded)[1], split_model(model)[1])
    digits, given = np.zeros((1, 81), np.int32), np.zeros((1, 81), bool)
    key = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(loaded(digits, given, key, 2), model(digits, given, key, 2))


def test_names_load_and_manifest(shipped_dir, tiny_run):
    assert pretrained.names() == ["sudoku-itrsa-test"]
    model, cfg = pretrained.load("sudoku-itrsa-test")
    assert cfg.model.kind == "itrsa" and cfg.t_train == 2
    leaves_equal(split_model(model)[1], split_model(tiny_run[1])[1])    # the EMA parameters
    m = pretrained.manifest("sudoku-itrsa-test")
    assert m["steps"] == 2 and m["sha256"] == pretrained.sha256(shipped_dir / "sudoku-itrsa-test" / "model.npz")
    # a folder and a run directory load too
    leaves_equal(split_model(pretrained.load_file(shipped_dir / "sudoku-itrsa-test")[0])[1], split_model(model)[1])
    leaves_equal(split_model(pretrained.load_file(tiny_run[0])[0])[1], split_model(model)[1])


def test_add_lyapunov_takes_the_plain_record(shipped_dir, tmp_path):
    """Of a sweep's records, the manifest gets the one at X0 unscaled, no warm-up, the model's own weights;
    long=True takes the longest warmed one instead."""
    base = {"checkpoint": "sudoku-itrsa-test", "scale": 1.0, "wv_norm": None, "wo_norm": None, "eta_overridden": False,
            "T": 16, "num_null": 0, "mean_le": -0.5}
    recs = [{**base, "warmup": 64, "max_le": 0.3}, {**base, "scale": 2.0, "warmup": 0, "max_le": 0.2},
            {**base, "warmup": 0, "max_le": 0.1}]
    f = tmp_path / "lyapunov.json"
    f.write_text(json.dumps({"config": {"k": 32, "eta": [None]}, "num_samples": 1, "records": recs}))
    assert pretrained.add_lyapunov("sudoku-itrsa-test", f)["lyapunov"]["max_le"] == 0.1
    # long=True: the warmed record with the largest T (then W) becomes lyapunov_long; lyapunov is kept
    recs += [{**base, "T": 512, "warmup": 128, "max_le": 0.004}, {**base, "T": 128, "warmup": 256, "max_le": 0.02}]
    f.write_text(json.dumps({"config": {"k": 4, "eta": [None]}, "num_samples": 1, "records": recs}))
    m = pretrained.add_lyapunov("sudoku-itrsa-test", f, long=True)
    assert m["lyapunov"]["max_le"] == 0.1 and m["lyapunov"]["T"] == 16
    assert (m["lyapunov_long"]["max_le"], m["lyapunov_long"]["T"], m["lyapunov_long"]["warmup"]) == (0.004, 512, 128)
    f.write_text(json.dumps({"config": {"k": 4}, "records": [{**recs[-2], "max_le": float("nan")}]}))
    with pytest.raises(pretrained.PretrainedError, match="max LE of sudoku-itrsa-test is nan"):
        pretrained.add_lyapunov("sudoku-itrsa-test", f, long=True)          # an overflowed state is refused
    f.write_text(json.dumps({"config": {"k": 32, "eta": [None]}, "num_samples": 1, "records": recs[1:3]}))
    with pytest.raises(pretrained.PretrainedError, match="no unswept warmed record"):
        pretrained.add_lyapunov("sudoku-itrsa-test", f, long=True)
    f.write_text(json.dumps({"config": {"k": 32, "eta": [None]}, "num_samples": 1, "records": recs[:2]}))
    with pytest.raises(pretrained.PretrainedError, match="no unswept record"):
        pretrained.add_lyapunov("sudoku-itrsa-test", f)


def test_add_pseudo_energy_keeps_the_contribution_index(shipped_dir, tmp_path):
    args = {"checkpoint": "sudoku-itrsa-test", "steps": 8, "puzzles": 3, "contribution_puzzles": 1, "top_frac": 0.02,
            "contribution_method": "krylov"}
    mon = {"contribution_t": [0, 4, 8], "contribution": [0.05, 0.5, 0.3], "energy": [float(-t) for t in range(9)]}
    f = tmp_path / "pseudo_energy.json"
    f.write_text(json.dumps({"args": args, "monitors": mon}))
    pe = pretrained.add_pseudo_energy("sudoku-itrsa-test", f)["pseudo_energy"]
    assert pe["t"] == [0, 4, 8] and pe["energy"] == [0.0, -4.0, -8.0] and pe["method"] == "krylov"
    assert (pe["contribution_start"], pe["contribution_max"]) == (0.05, 0.5)
    assert pe["contribution_late_mean"] == pytest.approx(0.4)             # t = 4 and 8: the second half
    with pytest.raises(pretrained.PretrainedError, match="not of sudoku-itrsa-other"):
        pretrained.add_pseudo_energy("sudoku-itrsa-other", f)
    f.write_text(json.dumps({"args": args, "monitors": {**mon, "contribution": [0.05, float("nan"), 0.3]}}))
    with pytest.raises(pretrained.PretrainedError, match="no finite contribution index"):
        pretrained.add_pseudo_energy("sudoku-itrsa-test", f)


def test_clear_errors(shipped_dir, tmp_path):
    with pytest.raises(KeyError, match="sudoku-itrsa-test"):          # lists what exists
        pretrained.load("no-such-model")
    with pytest.raises(FileNotFoundError):
        pretrained.load_file(tmp_path / "missing.npz")
    f = shipped_dir / "sudoku-itrsa-test" / "model.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="SHA-256"):
        pretrained.load("sudoku-itrsa-test")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(pretrained.PretrainedError, match="not a readable"):
        pretrained.load_file(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(pretrained.PretrainedError, match="__config__"):
        pretrained.load_file(tmp_path / "plain.npz")


def test_parameters_that_do_not_fit_are_refused(tmp_path):
    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=16, heads=2, n=4))
    f = pretrained.save(SudokuModel(cfg.model, rngs=nnx.Rngs(0)), cfg, tmp_path / "m.npz")
    with np.load(f) as z:
        arrays = dict(z)
    record = json.loads(str(arrays["__config__"]))
    record["model_config"]["d"] = 32
    arrays["__config__"] = np.asarray(json.dumps(record))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(pretrained.PretrainedError, match="expects"):
        pretrained.load_file(tmp_path / "bad.npz")


@pytest.mark.parametrize("name", pretrained.names() or [pytest.param(None, marks=pytest.mark.skip("none shipped"))])
def test_shipped_models_load_and_solve_some_cells(name):
    """Every model committed under pretrained/ loads (checksum verified) and reproduces, on 20 SATNet test
    puzzles, the blank-cell accuracy its manifest records from training's last evaluation (1,000
    puzzles): a trained model far above chance (1/9), a one-epoch claims model (no normalization,
    symmetric attention) at it. `make sudoku-ood` recomputes the full numbers."""
    model, cfg = pretrained.load(name)
    recorded = pretrained.manifest(name)["last_eval"]["eval/cell_acc"]
    puzzles = load_or_generate("satnet_test", limit=20, n_fallback=20, warn=False)
    batch = to_model_inputs(puzzles)
    logits = model(batch["digits"], batch["given"], jax.random.PRNGKey(0), cfg.t_train)
    right = (np.argmax(logits, -1) == batch["target"]) & ~batch["given"]
    assert abs(right.sum() / (~batch["given"]).sum() - recorded) < 0.1


def test_sudoku_ood_evaluates_shipped_models(shipped_dir, tmp_path, capsys):
    from experiments import sudoku_ood
    rec = sudoku_ood.main(["--models", "itrsa", "--checkpoints", "sudoku-itrsa-test", "--id-limit", "4",
                           "--ood-limit", "4", "--t-eval", "2", "4", "--id-t-eval", "4", "--vote-k", "2",
                           "--vote-steps", "4", "--vote-limit", "2", "--out", str(tmp_path / "o")])
    assert rec["mode"] == "shipped"
    r = next(iter(rec["results"]["itrsa"]["seeds"].values()))
    assert r["id"]["steps"] == [2, 4] and len(r["id"]["board_acc"]) == 2          # + the model's T_train = 2
    assert r["ood"]["steps"] == [2, 4, 16, 128]                                  # + 16 and 128
    assert r["vote"]["K"] == 2 and r["vote"]["puzzles"] == 2 and 0 <= r["vote"]["cell_acc"] <= 1
    assert "sudoku-itrsa-test" in r["provenance"]["source"] and r["provenance"]["steps"] == 2
    assert (tmp_path / "o" / "sudoku_ood.json").exists() and (tmp_path / "o" / "sudoku_ood.png").exists()
    text = capsys.readouterr().out
    assert "trained by: python -m rsa_jax.tasks.sudoku" in text and "OOD vote K=2 T=4" in text
    m = pretrained.add_accuracy("sudoku-itrsa-test", tmp_path / "o" / "sudoku_ood.json")
    assert m["accuracy"]["ood"]["steps"] == [2, 4, 16, 128] and m["accuracy"]["vote"]["K"] == 2
    pretrained.load("sudoku-itrsa-test")                                       # checksum still right
    # Lyapunov exponents into the manifest, then the LE-vs-OOD picture reads both entries
    from experiments import le_vs_ood, lyapunov
    lyapunov.main(["--checkpoint", "sudoku-itrsa-test", "--k", "2", "--sweeps", "1", "--out", str(tmp_path / "l")])
    le = pretrained.add_lyapunov("sudoku-itrsa-test", tmp_path / "l" / "lyapunov.json")["lyapunov"]
    assert le["T"] == 16 and le["k"] == 2 and "mean_le_leading_k" in le and "mean_le" not in le
    # --paper-mean: the paper's mean LE (exact non-null sum, tested in test_lyapunov) beside the leading k
    lyapunov.main(["--checkpoint", "sudoku-itrsa-test", "--k", "2", "--paper-mean", "--out", str(tmp_path / "lp")])
    (r,) = json.loads((tmp_path / "lp" / "lyapunov.json").read_text())["records"]
    lyapunov.main(["--checkpoint", "sudoku-itrsa-test", "--k", "2", "--paper-mean", "--chunk", "100",
                   "--blas-threads", "1", "--out", str(tmp_path / "lc")])  # 100 tangents at a time, 1 thread
    (rc,) = json.loads((tmp_path / "lc" / "lyapunov.json").read_text())["records"]
    assert rc["paper_mean_le"] == pytest.approx(r["paper_mean_le"], rel=1e-5)
    le = pretrained.add_lyapunov("sudoku-itrsa-test", tmp_path / "lp" / "lyapunov.json")["lyapunov"]
    assert le["mean_le_method"].startswith("nonnull_exponent_sum") and le["mean_le_num_null"] == 81
    assert le["mean_le"] == r["paper_mean_le"] < le["max_le"] and le["mean_le_leading_k"] == r["mean_le"]
    assert r["paper_mean_pivots"]["dropped"][0] < 1e-5 < r["paper_mean_pivots"]["kept"][0]
    got = le_vs_ood.main(["--out", str(tmp_path / "v")])
    assert got["plotted"] == ["sudoku-itrsa-test"] and (tmp_path / "v" / "le_vs_ood.png").exists()
    (r,) = got["records"]
    assert r["max_le"] == le["max_le"] and r["t_last"] == 128 and r["long_max_le"] is None
    # the long-horizon exponent (a warmed composition) joins the picture as a second row of panels
    lyapunov.main(["--checkpoint", "sudoku-itrsa-test", "--k", "2", "--T", "4", "--warmup", "2",
                   "--out", str(tmp_path / "lw")])
    long = pretrained.add_lyapunov("sudoku-itrsa-test", tmp_path / "lw" / "lyapunov.json", long=True)["lyapunov_long"]
    (r,) = le_vs_ood.main(["--out", str(tmp_path / "v")])["records"]
    assert (r["long_max_le"], r["long_T"], r["long_warmup"], r["max_le"]) == (long["max_le"], 4, 2, le["max_le"])
    assert r["ood_board_acc"] == pretrained.manifest("sudoku-itrsa-test")["accuracy"]["ood"]["board_acc"]
    with pytest.raises(pretrained.PretrainedError, match="no unswept record"):
        pretrained.add_lyapunov("sudoku-itrsa-other", tmp_path / "l" / "lyapunov.json")
    # the default picks the shipped model by kind; a missing one is skipped with a note saying how to
    # train it, and nothing to evaluate at all is an error
    shutil.copytree(shipped_dir / "sudoku-itrsa-test", shipped_dir / "sudoku-itrsa-cpu")
    rec = sudoku_ood.main(["--id-limit", "2", "--ood-limit", "2", "--t-eval", "2", "--id-t-eval", "2",
                           "--vote-k", "0", "--out", str(tmp_path / "p")])
    assert list(rec["results"]) == ["itrsa"]
    assert "sudoku-itrsa-cpu" in next(iter(rec["results"]["itrsa"]["seeds"].values()))["provenance"]["source"]
    text = capsys.readouterr().out
    assert "[akorn] skipped" in text and "vote" not in text.split("board accuracy")[-1]
    with pytest.raises(SystemExit, match="no shipped model"):
        sudoku_ood.main(["--models", "akorn", "--id-limit", "2", "--ood-limit", "2", "--t-eval", "2",
                         "--out", str(tmp_path / "q")])


def test_le_vs_ood_labels_pre_parity_akorn_models():
    """An AKOrN manifest without the official-parametrization fields is marked pre-parity; ItrSA never is."""
    from experiments.le_vs_ood import preparity
    from rsa_jax.config import config_to_dict
    from rsa_jax.models.sudoku import ModelConfig
    now = config_to_dict(ModelConfig(kind="akorn").with_kind("akorn"))
    old = {k: v for k, v in now.items() if k not in ModelConfig.WHEN_ABSENT}
    assert not preparity(now) and preparity(old)
    assert not preparity(old | {"kind": "itrsa"}) and not preparity(None)


def test_le_vs_ood_figure_has_one_legend_outside_the_axes():
    """Every model once in one figure legend beside the panels (none inside an axes to cover points); the
    shared T_eval goes into the titles, and only differing T_evals stay in the labels."""
    from experiments.le_vs_ood import plot
    rec = lambda name, t: {"label": name, "le_T": 16, "max_le": 0.1, "long_max_le": None, "long_T": None,
                           "long_warmup": None, "ood_last": 0.1, "ood_best": 0.2, "t_last": t}
    fig = plot([rec("a", 1024), rec("b", 1024)])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"] and len(fig.legends) == 1
    assert all(ax.get_legend() is None for ax in fig.axes) and "T_eval 1024" in fig.axes[0].get_title()
    fig = plot([rec("a", 1024), rec("b", 128)])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a (T_eval 1024)", "b (T_eval 128)"]
