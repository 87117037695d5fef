"""experiments.claims_runs: planned models train in order, ship with a manifest, park and resume across sessions."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import pytest

from experiments import claims_runs
from rsa_jax import pretrained
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, train

TINY = TrainConfig(model=ModelConfig(kind="akorn", d=16, heads=2, n=4), t_train=2, batch_size=8, epochs=1, lr=1e-2,
                   ema_every=1, ema_after=1, checkpoint_every=1, keep_checkpoints=1, log_every=1, train_limit=32,
                   eval_limit=8, eval_every=0)
PLAN = (claims_runs.Planned("t-itrsa", "itrsa", claim="baseline"),
        claims_runs.Planned("t-itrsa-spec", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-2}, claim="spec"),
        claims_runs.Planned("t-akorn-h1", "akorn", model={"heads": 1}, claim="heads"))


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path / "pre"))
    monkeypatch.setattr(claims_runs, "PLAN", PLAN)
    monkeypatch.setattr(claims_runs, "base_config", lambda: TINY)
    with jax.enable_x64(False):
        yield tmp_path


def test_train_ships_evaluates_parks_and_resumes(setup, capsys):
    tmp = setup
    runs = tmp / "runs"
    flags = ["--runs-dir", str(runs), "--out", str(tmp / "o"), "--steps", "2"]
    assert claims_runs.main(["status", *flags]) == {e.name: "not started" for e in PLAN}
    # the first planned model: trained, shipped, evaluated (ID / OOD curves, LE) into its manifest
    eval_args = "--id-limit 2 --ood-limit 2 --t-eval 2 --id-t-eval 2 --vote-k 0"
    assert claims_runs.main(["train", "--only", "t-itrsa-spec", "--eval-args", eval_args, *flags]) == ["t-itrsa-spec"]
    m = pretrained.manifest("t-itrsa-spec")
    assert m["steps"] == 2 and m["plan_entry"]["train"] == {"penalty": "spec", "penalty_lam": 1e-2}
    assert "accuracy" in m and m["lyapunov"]["k"] == 32 and m["lyapunov"]["mean_le_method"].startswith("nonnull")
    assert m["command"].startswith("python -m experiments.claims_runs train --only t-itrsa-spec ")
    model, cfg = pretrained.load("t-itrsa-spec")
    assert (cfg.penalty, cfg.penalty_lam, cfg.max_steps, model.config.kind) == ("spec", 1e-2, 2, "itrsa")
    # an unfinished run (a session ended) is parked, the run folder is lost, the next session restores it
    cfg = claims_runs.config(PLAN[2], 2, runs / "t-akorn-h1", None)
    train(dataclasses.replace(cfg, max_steps=1), sudoku_task(cfg))
    assert claims_runs.status(PLAN[2], runs) == "run at step 1"
    assert claims_runs.main(["park", "--ship-partial", "--info", '{"command": "earlier"}', *flags]) == ["t-akorn-h1"]
    m = pretrained.manifest("t-akorn-h1")
    assert m["partial"].startswith("step 1 of 2") and m["command"] == "earlier" and m["steps"] == 1
    shutil.rmtree(runs / "t-akorn-h1")
    assert claims_runs.status(PLAN[2], runs) == "shipped partial, parked at step 1"
    capsys.readouterr()
    assert claims_runs.main(["train", "--only", "t-akorn-h1", "--no-evaluate", *flags]) == ["t-akorn-h1"]
    assert "restored the parked run" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (runs / "t-akorn-h1" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2]                              # step 1 before parking, step 2 after the restore
    assert not (tmp / "pre" / claims_runs.RESUME_DIR / "t-akorn-h1").exists()
    assert pretrained.load("t-akorn-h1")[0].config.heads == 1
    assert "partial" not in pretrained.manifest("t-akorn-h1") and pretrained.manifest("t-akorn-h1")["steps"] == 2
    assert claims_runs.status(PLAN[2], runs) == "shipped, not evaluated"
    # the next `train` evaluates it first; a budget too small to train anything then stops at once
    assert claims_runs.main(["train", "--budget", "1", "--eval-args", eval_args, *flags]) == []
    rows = claims_runs.main(["status", *flags])
    assert rows == {"t-itrsa": "not started", "t-itrsa-spec": "shipped", "t-akorn-h1": "shipped"}
    with pytest.raises(SystemExit):
        claims_runs.main(["train", "--only", "t-unknown", *flags])
