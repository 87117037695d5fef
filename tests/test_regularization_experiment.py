"""Fig. 5 plumbing: the orthogonal W^V, W^O model option, lambda selection, and a tiny end-to-end run.

Sudoku data come from the default data directory (the repository's committed data/sudoku).
"""

import json
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import regularization as reg
from experiments.sudoku_sweep import load_sets
from rsa_jax.attention import full_matrices
from rsa_jax.models.sudoku import ModelConfig, SudokuModel
from rsa_jax.regularizers import EnergyPenalty, r_e_multi
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, load_model, train

D, H = 8, 2


def _model(method="cayley", kind="itrsa", seed=0):
    return SudokuModel(ModelConfig(kind=kind, d=D, heads=H, orthogonal_vo=method), rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("method", ["cayley", "qr"])
@pytest.mark.parametrize("kind", ["itrsa", "akorn"])
def test_orthogonal_vo_builds_orthogonal_value_output(method, kind):
    model = _model(method, kind)
    assert "wv" not in model.attn and "wo" not in model.attn   # trainable only through vo_free
    _, params = model.pure_step()
    attn = params["attn"]
    assert attn["wv"].shape == (H, D, D // H) and attn["wo"].shape == (H, D // H, D)
    full = full_matrices(attn)
    eye = np.eye(D)
    np.testing.assert_allclose(full["WV"].T @ full["WV"], eye, atol=1e-5)
    np.testing.assert_allclose(full["WO"] @ full["WO"].T, eye, atol=1e-5)
    assert np.abs(np.asarray(full["WV"]) - eye).max() > 0.1      # a random rotation, not the identity


def test_orthogonal_vo_rejects_unknown_method():
    with pytest.raises(ValueError, match="orthogonal_vo"):
        ModelConfig(kind="itrsa", d=D, heads=H, orthogonal_vo="svd")


def test_r_e_multi_differentiable_in_free_params():
    graphdef, params = nnx.split(_model(), nnx.Param)
    loss = lambda p: r_e_multi(nnx.merge(graphdef, p).pure_step()[1]["attn"])
    assert float(loss(params)) > 0
    grads = jax.grad(loss)(params)
    for name in ("v", "o"):
        g = np.asarray(grads["vo_free"][name][...])
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6


def test_orthogonal_vo_model_roundtrips_through_train_and_load(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sets = load_sets(None, train=8, id=4)
    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=D, heads=H, orthogonal_vo="cayley"), t_train=2, batch_size=4,
                      epochs=1, max_steps=2, lr=1e-2, ema_after=0, progress=False, checkpoint_every=0,
                      out=str(tmp_path / "run"))
    model, _ = train(cfg, sudoku_task(cfg, sets["train"], sets["id"]), [EnergyPenalty(1e-2)])
    loaded, loaded_cfg = load_model(cfg.out)
    assert loaded_cfg.model.orthogonal_vo == "cayley"
    a, b = model.pure_step()[1], loaded.pure_step()[1]
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    fresh = _model().pure_step()[1]["attn"]["wv"]                 # training moved the free parameters
    assert np.abs(np.asarray(a["attn"]["wv"]) - np.asarray(fresh)).max() > 0


def _entry(lam, board, cell, test_board):
    curve = lambda v: [[v, v]]                                    # (seeds=1, T=2)
    return {"lam": lam, "valid": {"board_acc": curve(board), "cell_acc": curve(cell)},
            "test": {"board_acc": curve(test_board), "cell_acc": curve(test_board)}}


def test_select_lambda_uses_validation_only():
    # validation order: 1e-4 > 1e-3 > 1e-5; test numbers in the opposite order
    per = {"1e-05": _entry(1e-5, 0.1, 0.5, 0.9), "0.0001": _entry(1e-4, 0.3, 0.2, 0.1),
           "0.001": _entry(1e-3, 0.2, 0.9, 0.5)}
    best, scores = reg.select_lambda(per)
    assert best == "0.0001" and scores["0.0001"] == (0.3, 0.2)
    assert reg.select_lambda(per, "cell_mean")[0] == "0.001"


def test_select_lambda_cell_tie_break_then_smaller_lambda():
    per = {"1e-05": _entry(1e-5, 0.0, 0.40, 0.9), "0.0001": _entry(1e-4, 0.0, 0.45, 0.0),
           "0.001": _entry(1e-3, 0.0, 0.45, 0.5)}
    assert reg.select_lambda(per)[0] == "0.0001"                  # board ties -> cell -> smaller lambda
    with pytest.raises(ValueError, match="criterion"):
        reg.select_lambda(per, "test_board")


def test_e_single_forces_one_head():
    args = reg.resolve(reg.parse_args(["--d", "8", "--heads", "2", "--variants", "none", "e_single"]))
    assert reg.model_config(args, "itrsa", "e_single").heads == 1
    assert reg.model_config(args, "itrsa", "none").heads == 2
    assert reg.model_config(args, "akorn", "e_multi").orthogonal_vo == "cayley"
    assert args.lambdas["e_single"] == reg.CPU["lambdas"]["e_single"]
    args = reg.resolve(reg.parse_args(["--lambdas", "1e-3", "--lam-spec", "1e-5", "1e-4"]))
    assert args.lambdas["spec"] == [1e-5, 1e-4] and args.lambdas["e_multi"] == [1e-3]


@pytest.mark.slow
def test_main_end_to_end(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = reg.main(["--out", str(tmp_path), "--models", "itrsa", "--variants", "none", "e_multi",
                           "--lambdas", "1e-3", "--d", str(D), "--heads", str(H), "--t-train", "2", "--batch-size",
                           "4", "--max-steps", "2", "--train-limit", "8", "--id-limit", "4", "--valid-limit", "4",
                           "--test-limit", "4", "--t-eval", "2", "4", "--eval-batch-size", "4"])
    saved = json.loads((tmp_path / "regularization.json").read_text())
    assert (tmp_path / "regularization.png").stat().st_size > 0
    res = saved["results"]["itrsa"]
    assert set(res) == {"none", "e_multi"}
    assert res["e_multi"]["selected"] == "0.001" and res["e_multi"]["orthogonal_vo"] == "cayley"
    assert res["e_multi"]["test"]["steps"] == [2, 4]
    assert np.asarray(res["e_multi"]["test"]["board_acc"]).shape == (1, 2)
    assert (tmp_path / "runs" / "itrsa_e_multi_lam0.001" / "seed_0" / "config.json").exists()
    assert (tmp_path / "runs" / "itrsa_none" / "seed_0").is_dir()
    assert [c["claim"] for c in record["claims"]] == ["e_multi_lowers"]
