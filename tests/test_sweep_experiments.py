"""Fig. S.1 (``experiments.heads``) and Table S.1 (``experiments.gamma_table``) on tiny settings.

Checks:
  * gamma_table reports exactly mean / max |gamma| of a model's RMSNorm gain, reads a run directory
    in oscillator_size's layout back (the numbers of ``load_model``'s parameters), flags a run
    trained with other settings, and rejects bad N;
  * heads writes one entry per H with the full Lyapunov spectrum (81 D exponents), finite
    ``max_le >= mean_le``, accuracies in [0, 1], and rejects H that do not fit D (slow: two trainings).

Sudoku data come from the default data directory (the repository's committed data/sudoku).
"""

import json
import warnings

import numpy as np
import pytest
from flax import nnx

from experiments import gamma_table, heads
from rsa_jax.models.sudoku import ModelConfig, SudokuModel
from rsa_jax.train import load_model

TINY_TRAIN = ["--d", "8", "--heads", "2", "--train-limit", "20", "--batch-size", "10", "--epochs", "1",
              "--id-limit", "10", "--t-train", "1"]


# ----------------------------------------------------------------------------- gamma_table
def test_gamma_record_is_exact():
    model = SudokuModel(ModelConfig(kind="itrsa", d=8, heads=2, n=4, norm="rmsnorm", norm_n=4), rngs=nnx.Rngs(0))
    g = np.array([0.5, -1.25, 0.1, 0.0, -0.3, 0.7, 2.0, -0.05], np.float32)
    model.gamma[...] = g
    rec = gamma_table.gamma_record(model, 0, "somewhere", "loaded")
    assert rec["gamma_abs_mean"] == pytest.approx(np.abs(g.astype(np.float64)).mean(), abs=1e-12)
    assert rec["gamma_abs_max"] == pytest.approx(2.0, abs=1e-12)
    # nn.RMSNorm's weight (Y / rms(Y) over N = 4 channels) is gamma / sqrt(4); at init 1 / 2
    assert (rec["gamma_abs_max_rms"], rec["gamma_rms_init"]) == (pytest.approx(1.0, abs=1e-12), 0.5)
    whole = SudokuModel(ModelConfig(kind="itrsa", d=8, heads=2, n=4, norm="rmsnorm"), rngs=nnx.Rngs(0))
    whole.gamma[...] = g                                   # RMSNorm over the whole token: N = D = 8
    rec = gamma_table.gamma_record(whole, 0, "somewhere", "loaded")
    y = np.arange(1.0, 9.0)
    torch_rmsnorm = y / np.sqrt(np.mean(y ** 2)) * rec["gamma_abs_max_rms"]   # nn.RMSNorm with weight gamma/sqrt(8)
    np.testing.assert_allclose(torch_rmsnorm, 2.0 * y / np.linalg.norm(y), rtol=1e-12)   # = ours with gamma 2


def test_gamma_record_rejects_models_without_gamma():
    model = SudokuModel(ModelConfig(kind="akorn", d=8, heads=2, n=4, norm="pi"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no RMSNorm gamma"):
        gamma_table.gamma_record(model, 0, "somewhere", "loaded")


def test_gamma_table_pools_only_equal_configs():
    def given(label, heads, seed, n=4):
        model = SudokuModel(ModelConfig(kind="itrsa", d=8, heads=heads, n=n, norm="rmsnorm", norm_n=n),
                            rngs=nnx.Rngs(seed))
        model.gamma[...] = np.full(8, 0.5 + seed + heads, np.float32)
        return label, model, type("TrainConfig", (), {"seed": seed})()

    results, skipped = gamma_table.run_checkpoints(
        [given("h2s0", 2, 0), given("h2s1", 2, 1), given("h4s0", 4, 0), given("h2n8", 2, 0, n=8)])
    assert skipped == [] and sorted(results) == ["itrsa (heads=2)", "itrsa (heads=4)"]
    h2 = results["itrsa (heads=2)"]
    assert h2["4"]["checkpoints"] == ["h2s0", "h2s1"] and h2["8"]["checkpoints"] == ["h2n8"]   # seeds; N: rows
    assert h2["4"]["gamma_abs_max_mean"] == pytest.approx(3.0) and h2["4"]["gamma_abs_max_std"] > 0
    assert results["itrsa (heads=4)"]["4"]["gamma_abs_max_mean"] == pytest.approx(4.5)
    alone, _ = gamma_table.run_checkpoints([given("h2s0", 2, 0)])
    assert list(alone) == ["itrsa"]


def test_gamma_table_rejects_bad_n(tmp_path):
    with pytest.raises(SystemExit, match="divide D=8"):
        gamma_table.main(["--out", str(tmp_path), "--d", "8", "--ns", "4", "6"])


@pytest.mark.slow
def test_gamma_table_reads_runs(tmp_path):
    runs = tmp_path / "shared_runs"
    argv = ["--out", str(tmp_path / "a"), "--runs-from", str(runs), "--ns", "4", *TINY_TRAIN]
    gamma_table.main(argv)                                           # trains the missing run
    run = runs / "itrsa_N4" / "seed_0"
    first = json.loads((tmp_path / "a" / "gamma_table.json").read_text())["results"]["itrsa"]["4"]["seeds"][0]
    assert first["source"] == "trained" and first["run_dir"] == str(run)

    model, cfg = load_model(run)
    assert cfg.model.norm_n == 4 and cfg.model.kind == "itrsa"
    g = np.abs(np.asarray(model.pure_step()[1]["gamma"], np.float64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gamma_table.main(["--out", str(tmp_path / "b"), "--runs-from", str(runs), "--ns", "4", *TINY_TRAIN,
                          "--epochs", "3"])                        # read back; other epochs than trained
    res = json.loads((tmp_path / "b" / "gamma_table.json").read_text())
    rec = res["results"]["itrsa"]["4"]["seeds"][0]
    assert rec["source"] == "loaded" and rec["config_matches"] is False
    assert any("epochs: 1 (expected 3)" in str(w.message) for w in caught)
    assert rec["gamma_abs_mean"] == g.mean() and rec["gamma_abs_max"] == g.max()
    assert rec["gamma_abs_mean"] == first["gamma_abs_mean"]
    assert res["results"]["itrsa"]["4"]["gamma_abs_max_mean"] == g.max()
    row = res["table"]["rows"][0]
    assert row[1] == "4"
    assert row[4] == f"{g.max() / 2:.3f} ± 0.0000 (init 0.500)"      # nn.RMSNorm's weight: gamma / sqrt(4)
    assert row[5] == "0.229 ± 0.0004"                               # the paper's Table S.1 beside ours
    assert (tmp_path / "b" / "gamma_table.png").is_file()


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("bad", [["--heads", "3"], ["--heads", "8"]])  # 3 does not divide 8; 8 -> odd D/H = 1
def test_heads_rejects_bad_h(tmp_path, bad):
    with pytest.raises(SystemExit, match="even head width"):
        heads.main(["--out", str(tmp_path), "--d", "8", *bad])


def test_heads_rejects_bad_n(tmp_path):
    with pytest.raises(SystemExit, match="--n 3"):
        heads.main(["--out", str(tmp_path), "--d", "8", "--heads", "2", "--n", "3"])


@pytest.mark.slow
def test_heads_end_to_end(tmp_path):
    heads.main(["--out", str(tmp_path), "--d", "8", "--heads", "1", "2", "--train-limit", "20", "--batch-size", "10",
                "--epochs", "1", "--id-limit", "10", "--eval-limit", "5", "--t-train", "1", "--t-eval", "1", "2",
                "--lyap-t", "2", "--lyap-k", "full"])
    res = json.loads((tmp_path / "heads.json").read_text())
    assert "full spectrum" in res["mean_le_over"]
    per_h = res["results"]["itrsa"]
    assert sorted(per_h, key=int) == ["1", "2"]
    for h, r in per_h.items():
        (s,) = r["seeds"]
        assert len(s["exponents"]) == 81 * 8 and s["num_null"] == 81
        assert np.isfinite(s["max_le"]) and np.isfinite(s["mean_le"]) and s["max_le"] >= s["mean_le"]
        kept = np.sort(s["exponents"])[::-1][: 81 * 8 - s["dropped"]]
        assert s["mean_le"] == pytest.approx(kept.mean(), rel=1e-5) and s["max_le"] == pytest.approx(kept[0])
        assert s["t_eval"] == [1, 2] and all(0 <= a <= 1 for a in s["ood_board_acc"] + s["ood_cell_acc"])
        assert r["max_le_mean"] == s["max_le"]
        assert s["run_dir"].endswith(f"itrsa_H{h}/seed_0")
    assert len(res["table"]["rows"]) == 2 and len(res["this_run"]) == 1
    assert (tmp_path / "heads.png").is_file()


def test_blas_threads_sets_and_restores_the_openblas_count():
    import experiments
    fns = experiments._openblas()
    if fns is None:
        pytest.skip("no OpenBLAS found behind SciPy's LAPACK")
    _, get_threads = fns
    before = get_threads()
    with pytest.raises(RuntimeError), experiments.blas_threads(before + 1) as inside:
        assert inside == get_threads() == before + 1
        raise RuntimeError   # restored on the way out of an error, too
    assert get_threads() == before


@pytest.mark.parametrize("flag", ["--blas-threads", "--chunk"])
def test_lyapunov_refuses_nonpositive_counts(flag, tmp_path):
    from experiments import lyapunov
    with pytest.raises(SystemExit, match=f"{flag} must be >= 1"):
        lyapunov.main(["--k", "2", "--paper-mean", flag, "0", "--out", str(tmp_path)])
