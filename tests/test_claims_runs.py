"""experiments.claims_runs: planned models train in order, ship with a manifest, park and resume across sessions."""

from __future__ import annotations

import dataclasses
import json
import shlex
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


def _data_dir(folder, monkeypatch, **splits):
    """A Sudoku data folder with ``splits`` ({name: number of generated puzzles}), checksummed, as the default;
    the other files are the repository's committed ones (missing files are an error, not stand-ins)."""
    import shutil

    from rsa_jax.data import sudoku as S
    folder.mkdir(exist_ok=True)
    committed = [f for f in ("satnet.csv", "rrn_valid.csv", "rrn_test.csv") if f[:-4] not in splits]
    for f in committed:
        shutil.copy(S.REPO_DATA_DIR / f"{f}.xz", folder / f"{f}.xz")
    for i, (name, n) in enumerate(splits.items()):
        puzzles = S.generate_puzzles(n, 30, seed=7 + i)
        (folder / f"{name}.csv").write_text("".join("".join(map(str, p)) + "," + "".join(map(str, q)) + "\n"
                                                    for p, q in zip(puzzles.puzzles, puzzles.solutions)))
    (folder / "SHA256SUMS").write_text("".join(f"{S.sha256(folder / f'{name}.csv')}  {name}.csv\n" for name in splits)
                                       + "".join(f"{S.sha256(folder / f'{f}.xz')}  {f}.xz\n" for f in committed))
    monkeypatch.setenv(S.ENV_VAR, str(folder))


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path / "pre"))
    monkeypatch.setattr(claims_runs, "PLAN", PLAN)
    monkeypatch.setattr(claims_runs, "base_config", lambda: TINY)
    monkeypatch.setattr(claims_runs, "LONG_LE", ("--k", "2", "--T", "4", "--warmup", "3"))
    monkeypatch.setattr(claims_runs, "PSEUDO_ENERGY", ("--steps", "2", "--puzzles", "2", "--contribution-every", "2",
                                                       "--contribution-puzzles", "1"))
    with jax.enable_x64(False):
        yield tmp_path


def test_train_ships_evaluates_parks_and_resumes(setup, capsys, monkeypatch):
    tmp = setup
    monkeypatch.setenv("LD_PRELOAD", "/nowhere/libfake.so")   # recorded, not loaded (read after start)
    # ID_LONG reads a real split, never stand-ins: here a small file of its own (satnet_test is rows 9,000... of
    # satnet.csv); the other splits are the committed files
    _data_dir(tmp / "data", monkeypatch, rrn_valid=3)
    monkeypatch.setattr(claims_runs, "ID_LONG", ("rrn_valid", 2))
    runs = tmp / "runs"
    flags = ["--runs-dir", str(runs), "--out", str(tmp / "o"), "--steps", "2"]
    assert claims_runs.main(["status", *flags]) == {e.name: "not started" for e in PLAN}
    # the first planned model: trained, shipped, evaluated (ID / OOD curves, LE) into its manifest
    eval_args = "--id-limit 2 --ood-limit 2 --t-eval 2 --id-t-eval 2 --vote-k 0"
    assert claims_runs.main(["train", "--only", "t-itrsa-spec", "--eval-args", eval_args, *flags]) == ["t-itrsa-spec"]
    m = pretrained.manifest("t-itrsa-spec")
    assert m["steps"] == 2 and m["plan_entry"]["train"] == {"penalty": "spec", "penalty_lam": 1e-2}
    assert "accuracy" in m and m["lyapunov"]["k"] == 32 and m["lyapunov"]["mean_le_method"].startswith("nonnull")
    assert (m["lyapunov"]["T"], m["lyapunov_long"]["T"], m["lyapunov_long"]["warmup"]) == (16, 4, 3)
    pe = m["pseudo_energy"]
    assert pe["t"] == [0, 2] and pe["contribution_start"] == pe["contribution"][0] and 0 < pe["contribution_max"] <= 1
    assert m["id_long"]["split"] == ["rrn_valid", 2] and m["id_long"]["steps"] == [16, 32, 64, 128, 256, 512, 1024]
    assert set(m["evaluation_seconds"]) == {"accuracy", "id_long", "lyapunov", "lyapunov_long", "pseudo_energy"}
    assert all(s > 0 for s in m["evaluation_seconds"].values())
    assert m["command"].startswith("python -m experiments.claims_runs train --only t-itrsa-spec ")
    assert [(i["command"], i["start_step"], i["preload"]) for i in m["invocations"]] == [
        (m["command"], 0, "/nowhere/libfake.so")]
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
    (inv,) = pretrained.manifest("t-akorn-h1")["invocations"]   # step 1 came from a direct train() call
    assert inv["start_step"] == 1 and inv["command"].endswith("--only t-akorn-h1 --no-evaluate " + shlex.join(flags))
    assert claims_runs.status(PLAN[2], runs) == "shipped, not evaluated"
    # the next `train` evaluates it first; a budget too small to train anything then stops at once
    assert claims_runs.main(["train", "--budget", "1", "--eval-args", eval_args, *flags]) == []
    rows = claims_runs.main(["status", *flags])
    assert rows == {"t-itrsa": "not started", "t-itrsa-spec": "shipped", "t-akorn-h1": "shipped"}
    with pytest.raises(SystemExit):
        claims_runs.main(["train", "--only", "t-unknown", *flags])


def _ship(name: str, cfg: TrainConfig, seed: int) -> None:
    from flax import nnx
    from rsa_jax.models.sudoku import SudokuModel
    folder = pretrained.root() / name
    pretrained.save(SudokuModel(cfg.model, rngs=nnx.Rngs(seed)), cfg, folder / pretrained.MODEL_FILE)
    pretrained.write_manifest(folder, {"name": name, "steps": 1})


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype")   # the fixture keeps JAX in float32
def test_long_lyapunov_retries_in_float64(setup, monkeypatch):
    tmp = setup
    entry = PLAN[0]
    _ship(entry.name, claims_runs.config(entry, 1, tmp / "runs" / entry.name, None), seed=0)
    add, seen = pretrained.add_lyapunov, []

    def overflow_in_float32(name, results, long=False):    # as a model whose state grows would
        seen.append(json.loads(results.read_text())["config"]["float64"])
        if not seen[-1]:
            raise pretrained.NonFiniteExponent(f"{results}: the max LE of {name} is nan (the state overflowed?)")
        return add(name, results, long=long)

    monkeypatch.setattr(pretrained, "add_lyapunov", overflow_in_float32)
    claims_runs.long_lyapunov(entry.name, tmp / "o")
    assert seen == [False, True] and pretrained.manifest(entry.name)["lyapunov_long"]["warmup"] == 3
    # any other failure, or a non-finite exponent in float64 too, is not retried
    monkeypatch.setattr(pretrained, "add_lyapunov", lambda name, results, long=False: (_ for _ in ()).throw(
        pretrained.NonFiniteExponent("the max LE of x is nan")))
    with pytest.raises(pretrained.NonFiniteExponent):
        claims_runs.long_lyapunov(entry.name, tmp / "o")


def test_select_picks_the_lambda_on_rrn_valid(setup, monkeypatch):
    from rsa_jax.data import sudoku as S
    from rsa_jax.evaluate import evaluate_boards
    tmp = setup
    _data_dir(tmp / "data", monkeypatch, rrn_valid=5)
    grid = (claims_runs.Planned("g-small", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-5}, group="g"),
            claims_runs.Planned("g-big", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-3}, group="g"),
            claims_runs.Planned("g-later", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-1}, group="g"),
            claims_runs.Planned("solo", "itrsa"))
    monkeypatch.setattr(claims_runs, "PLAN", grid)
    for i, e in enumerate(grid[:2] + grid[3:]):
        _ship(e.name, claims_runs.config(e, 1, tmp / "runs" / e.name, None), seed=i)
        pretrained.write_manifest(pretrained.root() / e.name, {**pretrained.manifest(e.name),
                                                               **{k: {} for k in claims_runs.EVALUATION}})
    # a grid member is evaluated only once it has RRN valid curves; a model outside a grid needs none
    assert not claims_runs.evaluated(grid[0]) and claims_runs.evaluated(grid[3])
    # g-big's curves are already there (better boards); g-small's are computed from the file
    pretrained.add_validation("g-big", {"split": ["rrn_valid", 5], "steps": [16, 32], "board_acc": [0.2, 0.4],
                                        "cell_acc": [0.5, 0.6]})
    result = claims_runs.main(["select", "--out", str(tmp / "o")])
    assert result["g"]["selected"] == "g-big" and result["g"]["lam"] == 1e-3
    assert result["g"]["members"]["g-big"]["score"] == [pytest.approx(0.3), pytest.approx(0.55)]
    assert result["g"]["planned"] == ["g-small", "g-big", "g-later"]
    assert json.loads((tmp / "o" / "selection.json").read_text()) == result
    v = pretrained.manifest("g-small")["validation"]
    model, _ = pretrained.load("g-small")
    ref = evaluate_boards(model, S.load_split("rrn_valid"), v["steps"])
    assert v["split"] == ["rrn_valid", 5] and v["steps"] == [16, 32, 64, 128, 256, 512, 1024]
    assert v["cell_acc"] == pytest.approx([float(c) for c in ref["cell_acc"]])
    assert claims_runs.evaluated(grid[0])
    # equal curves: the smaller lambda wins
    pretrained.add_validation("g-big", {**v})
    assert claims_runs.select(grid, tmp / "o")["g"]["selected"] == "g-small"
    with pytest.raises(pretrained.PretrainedError, match="differ in length"):
        pretrained.add_validation("g-big", {**v, "steps": [16]})


def test_a_pre_parity_akorn_is_stale_and_retired(setup):
    """A shipped AKOrN whose manifest predates the official parametrization (issue 32) is retrained; an ItrSA
    with the same record is not (its defaults did not change); ``retire`` keeps the old one loadable by path."""
    import json

    from rsa_jax.config import config_to_dict
    tmp = setup
    for kind, want_stale in (("akorn", True), ("itrsa", False)):
        entry = claims_runs.Planned(f"x-{kind}", kind)
        cfg = claims_runs.config(entry, 1, tmp / "runs" / entry.name, None)
        _ship(entry.name, cfg, seed=0)
        manifest = pretrained.root() / entry.name / pretrained.MANIFEST_FILE
        rec = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(rec | {"model": config_to_dict(cfg.model)}))
        assert not claims_runs.stale(entry) and claims_runs.finished(entry.name, entry)
        old = {k: v for k, v in config_to_dict(cfg.model).items()
               if k not in ("param_init", "gta_param", "omega_param", "readout")}
        manifest.write_text(json.dumps(rec | {"model": old}))
        assert claims_runs.stale(entry) is want_stale
        assert claims_runs.finished(entry.name, entry) is not want_stale
        assert claims_runs.status(entry, tmp / "runs").startswith("shipped pre-parity") is want_stale
    retired = claims_runs.retire("x-akorn")
    assert "x-akorn" not in pretrained.names() and retired.parent.name == claims_runs.PREPARITY_DIR
    model, _ = pretrained.load_file(retired)
    assert model.config.kind == "akorn"


def test_improving_compares_the_last_window_with_the_best_before():
    ev = lambda s, a: {"step": s, "eval/board_acc": a}   # noqa: E731
    hist = [ev(90, 0.10), {"step": 100, "loss": 1.0}, ev(180, 0.50), ev(270, 0.45), ev(360, 0.52)]
    assert claims_runs.improving(hist, 180, 0.01)           # last window {270, 360}: 0.52 >= 0.50 + 0.01
    assert not claims_runs.improving(hist, 180, 0.03)       # ... but not 3 points above
    assert not claims_runs.improving(hist[:4], 90, 0.0)     # window {270}: 0.45 < 0.50, the best before
    assert claims_runs.improving(hist[:1], 180, 0.5) and claims_runs.improving([], 90, 0.0)   # nothing before


def test_a_model_started_from_another_trains_on_until_flat(setup, monkeypatch):
    """``start_from`` copies the source's run (checkpoint, metrics), ``until_flat`` trains epochs at a time and
    ships once the boards stop improving; the source run is untouched, a missing source is said."""
    tmp = setup
    base = claims_runs.Planned("t-base", "akorn", train={"eval_every": 1}, claim="baseline")
    long = claims_runs.Planned("t-long", "akorn", train={"eval_every": 1, "max_steps": 40, "epochs": 10},
                               start_from="t-base",
                               until_flat=(1, 0.01), claim="on while it improves")
    monkeypatch.setattr(claims_runs, "PLAN", (base, long))
    flags = ["--runs-dir", str(tmp / "runs"), "--out", str(tmp / "o"), "--steps", "4", "--no-evaluate"]
    assert claims_runs.main(["train", "--only", "t-long", *flags]) == []          # no source run yet: skipped
    assert claims_runs.main(["train", *flags]) == ["t-base", "t-long"]
    m = pretrained.manifest("t-long")
    # 4 steps per epoch (32 puzzles, batch 8); the base's evaluation at step 4 comes before the first chunk, and a
    # tiny model solves no board, so that chunk (to step 8) is already flat
    assert m["steps"] == 8 and m["stopped"].startswith("step 8:")
    steps = [json.loads(line)["step"] for line in (tmp / "runs" / "t-long" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and max(steps) == 8                                      # the base's records come along
    assert claims_runs.latest_step(tmp / "runs" / "t-base") == 4 and pretrained.manifest("t-base")["steps"] == 4
