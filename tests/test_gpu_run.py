"""``experiments.gpu_run``: the one GPU command, checked on the CPU along the same code path.

Checks:
  * ``--dry-run`` (tiny sizes, the code of the real run) exits 0 and leaves at most 8 files of at most
    16 MiB, at most two folders deep, with plain names; its JSON holds every phase (bench in both
    precisions with compile time and fraction of peak, training with epochs done, ID / OOD / voting,
    Lyapunov exponents), and the exported checkpoints load with ``rsa_jax.pretrained.load_file``;
  * without ``--dry-run`` on a machine without a GPU it stops at once with exit status 2 and a clear
    message (no silent CPU fallback);
  * the budget plan: reserves of later phases, training shares, the choice of vmapped seeds;
  * a paper-size checkpoint (D=512) stays under the 16 MiB per file that comes back.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import gpu_run
from rsa_jax import pretrained
from rsa_jax.models.sudoku import ModelConfig, SudokuModel

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "experiments.gpu_run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_dry_run_outputs(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    # a generous budget, so that a loaded CPU skips no bench item (the budget only caps; the run takes ~1.5 min)
    p = run_cli("--dry-run", "--out", str(out), "--work-dir", str(work), "--budget", "6000")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    files = [f for f in out.rglob("*") if f.is_file()]
    assert sorted(f.name for f in files) == ["akorn.npz", "gpu_run.json", "gpu_run.log", "gpu_run.png", "itrsa.npz"]
    assert len(files) <= 8
    for f in files:
        rel = f.relative_to(out)
        assert f.stat().st_size <= 16 << 20 and len(rel.parts) <= 3
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts)

    rec = json.loads((out / "gpu_run.json").read_text())
    assert rec["dry_run"] and rec["env"]["gpu_check"] == "skipped (dry run)"
    assert {"jax", "flax", "optax"} <= set(rec["env"]["versions"]) and rec["env"]["devices"]
    assert {k: v["status"] for k, v in rec["phases"].items()} == {p: "ok" for p in gpu_run.PHASES}
    assert all(v["seconds"] >= 0 for v in rec["phases"].values()) and rec["outputs"]["ok"]
    timed = {(b["model"], b["precision"], b["seeds"]) for b in rec["bench"]["steps"] if "ms_per_step" in b}
    assert {(k, p, 1) for k in gpu_run.KINDS for p in ("float32", "tensorfloat32")} <= timed
    for b in rec["bench"]["steps"]:
        if "ms_per_step" in b:
            assert b["ms_per_step"] > 0 and b["compile_s"] > 0 and b["fraction_of_matmul_peak"] > 0
    S = gpu_run.DRY
    for kind in gpu_run.KINDS:
        tr, ev, ly = rec["train"][kind], rec["eval"][kind], rec["lyapunov"][kind]
        assert tr["epochs_done"] == S.epochs and tr["steps_done"] == S.epochs * S.train_n // S.batch
        assert tr["checkpoint"]["file"] == f"{kind}.npz" and len(tr["final_loss_per_seed"]) == len(tr["seeds"])
        assert ev["id"]["puzzles"] == S.id_n and ev["id"]["steps"] == list(S.t_eval)
        assert ev["ood"]["puzzles"] == S.ood_n and ev["vote"]["puzzles"] == S.vote_n and ev["vote"]["K"] == S.vote_k
        for acc in (ev["id"]["board_acc"], ev["ood"]["cell_acc"], [ev["vote"]["cell_acc"]]):
            a = np.asarray(acc, float)
            assert a.shape[0] >= 1 and np.all((a >= 0) & (a <= 1))
        assert len(ev["ood"]["board_acc"]) == len(tr["seeds"])
        assert len(ly["exponents"]) == S.lyap_k and all(math.isfinite(x) for x in ly["exponents"])

    with jax.enable_x64(False):
        for kind in gpu_run.KINDS:
            model, cfg = pretrained.load_file(out / f"{kind}.npz")
            assert cfg.model.kind == kind and cfg.model.d == S.d and cfg.t_train == S.t
            _, params = model.pure_step()
            assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    log = (out / "gpu_run.log").read_text()
    assert "train akorn" in log and "lyapunov itrsa" in log and "done in" in log


def test_refuses_to_run_without_gpu(tmp_path):
    if jax.default_backend() != "cpu":
        pytest.skip("a GPU is visible here")
    p = run_cli("--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), timeout=300)
    assert p.returncode == 2
    assert "JAX sees no GPU" in p.stdout + p.stderr and "--dry-run" in p.stdout + p.stderr
    rec = json.loads((tmp_path / "out" / "gpu_run.json").read_text())
    assert rec["env"]["gpu_check"] == "failed" and "no GPU" in rec["error"] and not rec["train"]


def test_data_come_from_the_repository(monkeypatch):
    """Nothing copied, nothing beside the repository: the committed data/sudoku (what travels to a bare machine)."""
    monkeypatch.delenv("RSA_JAX_SUDOKU_DIR", raising=False)
    sets, rec = gpu_run.load_data(None, gpu_run.DRY, dry=False)
    assert rec["dir"] == str(REPO / "data" / "sudoku")
    assert {k: v for k, v in rec.items() if k != "dir"} == {
        "train": ["satnet_train", 9000], "id": ["satnet_test", 1000], "ood": ["rrn_test", 18000]}
    _, rec = gpu_run.load_data(None, gpu_run.DRY, dry=True)
    assert rec["train"] == ["satnet_train", gpu_run.DRY.train_n] and rec["ood"] == ["rrn_test", gpu_run.DRY.ood_n]


def test_budget_plan():
    clock = gpu_run.Clock(1000.0, gpu_run.PHASES)
    s = gpu_run.SHARES
    assert clock.reserve("bench") == pytest.approx(1000 * (s["eval"] + s["lyapunov"] + s["write"]))
    assert clock.reserve("eval") == pytest.approx(1000 * (s["lyapunov"] + s["write"]))
    assert gpu_run.Clock(1000.0, ["train"]).reserve("train") == pytest.approx(1000 * s["write"])
    assert sum(s.values()) < 0.5                                        # training gets most of the budget

    assert gpu_run.train_share("akorn", ["akorn", "itrsa"], {"akorn": 200, "itrsa": 100}, 300) == pytest.approx(200)
    assert gpu_run.train_share("itrsa", ["itrsa"], {"akorn": 200, "itrsa": 100}, 120) == pytest.approx(120)
    assert gpu_run.train_share("akorn", ["akorn", "itrsa"], {"akorn": None, "itrsa": 100}, 300) == pytest.approx(150)

    one = {"seeds": 1, "compile_s": 10.0, "ms_per_step": 20.0}
    cheap = {"seeds": 4, "compile_s": 12.0, "ms_per_step": 21.0}        # vmapped seeds nearly free: take them
    dear = {"seeds": 4, "compile_s": 12.0, "ms_per_step": 70.0}         # would cost most of the epochs: one seed
    assert gpu_run.pick_seeds(200.0, one, cheap, 90, 100) == 4
    assert gpu_run.pick_seeds(200.0, one, dear, 90, 100) == 1
    assert gpu_run.pick_seeds(2000.0, one, dear, 90, 100) == 4          # all epochs fit either way
    assert gpu_run.pick_seeds(200.0, one, None, 90, 100) == 1


def test_paper_size_checkpoint_fits_what_comes_back():
    for kind in gpu_run.KINDS:
        cfg = ModelConfig(kind=kind, d=512, heads=8, n=4)
        abstract = nnx.eval_shape(lambda c=cfg: SudokuModel(c, rngs=nnx.Rngs(0)))
        params = nnx.state(abstract, nnx.Param)
        nbytes = sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(params))   # float32 on the GPU
        assert 8 << 20 < nbytes < 15 << 20, nbytes                    # ~12 MB; the limit is 16 MiB a file
