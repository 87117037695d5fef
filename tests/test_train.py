"""Tests of rsa_jax.train (+ rsa_jax.tasks.sudoku): loss decrease, exact resume, divergence, loading, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsa_jax.data.sudoku import load_or_generate, to_model_inputs
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.tasks.sudoku import sudoku_metrics, sudoku_task
from rsa_jax.train import (Task, TrainConfig, TrainingDiverged, add_dataclass_args, dataclass_from_args,
                           ema_update, load_model, split_model, train)


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles(tmp_path_factory):
    """Compile cache shared by the repeated train() calls (each builds a fresh jitted step with the
    same HLO), and the non-partitionable threefry PRNG, whose CPU compile is several times faster.
    Both only change speed / which random numbers are drawn, not what is tested; restored after."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes", "jax_threefry_partitionable")
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_threefry_partitionable", False)
    yield
    for n, v in old.items():
        jax.config.update(n, v)


@pytest.fixture(scope="module", autouse=True)
def _float32():
    """The trainer runs in float32 (the paper's precision); tests/conftest.py turns on x64."""
    with jax.enable_x64(False):
        yield


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(model=ModelConfig(kind="akorn", d=16, heads=2, n=4), t_train=2, batch_size=8, epochs=2,
                lr=1e-2, ema_every=1, ema_after=1, checkpoint_every=3, log_every=2, progress=False, out=str(out))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def puzzles():
    return load_or_generate("satnet_train", n_fallback=32, limit=32, warn=False)


tree_equal = chex.assert_trees_all_equal   # same structure, bit-equal leaves


# ------------------------------------------------------------------------------------ Sudoku
def test_sudoku_loss_decreases_on_fixed_batch(tmp_path, puzzles):
    cfg = tiny_cfg(tmp_path, epochs=1, log_every=1, checkpoint_every=0)
    task = sudoku_task(cfg, puzzles, puzzles)
    batch = to_model_inputs(puzzles.subset(slice(0, 8)))
    fixed = dataclasses.replace(task, train_batches=lambda epoch: iter([batch] * 25), steps_per_epoch=25)
    _, history = train(cfg, fixed)
    losses = [r["loss"] for r in history if "loss" in r]
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
    assert {"cell_acc", "board_acc", "grad_norm", "total_loss"} <= set(history[0])


class Killed(Exception):
    pass


def killing(task, at_step, spe):
    """The task, raising Killed instead of yielding the batch of (1-based) step ``at_step``."""
    def batches(epoch):
        for i, b in enumerate(task.train_batches(epoch)):
            if epoch * spe + i + 1 == at_step:
                raise Killed(at_step)
            yield b
    return dataclasses.replace(task, train_batches=batches)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, puzzles):
    """Uninterrupted run of 2 epochs x 4 steps; returns (cfg, model, history, checkpointed state)."""
    out = tmp_path_factory.mktemp("ref")
    cfg = tiny_cfg(out)
    task = sudoku_task(cfg, puzzles, puzzles)
    assert task.steps_per_epoch == 4
    model, history = train(cfg, task)
    return cfg, task, model, history


def _final_state(out):
    """(latest step, raw restored items) of a run directory."""
    import orbax.checkpoint as ocp
    items = ("params", "ema_params", "opt_state", "misc")
    m = ocp.CheckpointManager((Path(out) / "checkpoints").resolve())
    try:
        step = m.latest_step()
        r = m.restore(step, args=ocp.args.Composite(**{k: ocp.args.StandardRestore() for k in items}))
        return step, {k: r[k] for k in items}
    finally:
        m.close()


def test_resume_is_exact(tmp_path, reference_run):
    cfg_ref, task, model_ref, hist_ref = reference_run
    step_ref, state_ref = _final_state(Path(cfg_ref.out))
    assert step_ref == 8

    # (a) stopped by max_steps mid-epoch (step 5 = epoch 1, batch 1), then resumed
    cfg = dataclasses.replace(cfg_ref, out=str(tmp_path / "a"), max_steps=5)
    train(cfg, task)
    assert _final_state(tmp_path / "a")[0] == 5
    model_a, hist_a = train(dataclasses.replace(cfg, max_steps=None), task)
    # (b) killed while fetching the batch of step 6: last checkpoint is step 3 (epoch 0, batch 3)
    cfg = dataclasses.replace(cfg_ref, out=str(tmp_path / "b"))
    with pytest.raises(Killed):
        train(cfg, killing(task, 6, 4))
    assert _final_state(tmp_path / "b")[0] == 3
    model_b, hist_b = train(cfg, task)

    strip = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]
    for out, model, hist in ((tmp_path / "a", model_a, hist_a), (tmp_path / "b", model_b, hist_b)):
        step, state = _final_state(out)
        assert step == 8
        tree_equal(state, state_ref)
        tree_equal(nnx.state(model), nnx.state(model_ref))
        assert strip(json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()) == strip(hist)
    # every step is in exactly one record: the killed run's history is the reference's; the stopped
    # run has one more record, at its stop (step 5), which splits the reference's window 5-6
    assert strip(hist_b) == strip(hist_ref)
    assert [r["step"] for r in hist_a] == sorted([r["step"] for r in hist_ref] + [5])
    assert strip(hist_a[:3]) == strip(hist_ref[:3]) and strip(hist_a[-1:]) == strip(hist_ref[-1:])


class BatchClock:
    """Stands in for the ``time`` module of ``rsa_jax.train``: one second passes per batch fetched."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    def ticking(self, task):
        def batches(epoch):
            for b in task.train_batches(epoch):
                self.now += 1.0
                yield b
        return dataclasses.replace(task, train_batches=batches)


def test_time_budget_stops_saves_and_resumes_exactly(tmp_path, reference_run, monkeypatch):
    import rsa_jax.train as train_mod
    cfg_ref, task, model_ref, _ = reference_run
    clock = BatchClock()
    monkeypatch.setattr(train_mod, "time", clock)
    cfg = dataclasses.replace(cfg_ref, out=str(tmp_path / "t"), time_budget=5.5, eval_every=1)
    _, hist = train(cfg, clock.ticking(task))
    # after step k, k seconds have passed at a pace of 1 s/step: k + 2 >= 5.5 first at k = 4 (mid-run,
    # at the end of epoch 0), which is checkpointed, evaluated and marked
    assert _final_state(tmp_path / "t")[0] == 4
    assert hist[-1]["event"] == "time_budget" and hist[-1]["step"] == 4
    assert any("eval/board_acc" in r and r["step"] == 4 for r in hist)
    monkeypatch.undo()
    model, _ = train(dataclasses.replace(cfg, time_budget=None), task)
    step, state = _final_state(tmp_path / "t")
    assert step == 8
    tree_equal(state, _final_state(Path(cfg_ref.out))[1])
    tree_equal(nnx.state(model), nnx.state(model_ref))


def test_finished_run_is_loaded_not_retrained(reference_run):
    cfg, task, model_ref, hist_ref = reference_run

    def boom(epoch):
        raise AssertionError("a finished run must not fetch training data")
    model, hist = train(cfg, dataclasses.replace(task, train_batches=boom))
    tree_equal(nnx.state(model), nnx.state(model_ref))
    assert hist == hist_ref


def test_load_model_round_trip(reference_run):
    cfg, _, model_ref, _ = reference_run
    model, cfg2 = load_model(cfg.out)
    assert cfg2 == cfg
    assert model.config == cfg.model
    tree_equal(nnx.state(model), nnx.state(model_ref))
    # the EMA (not the raw parameters) is what is loaded
    _, state = _final_state(Path(cfg.out))
    tree_equal(split_model(model)[1], state["ema_params"])
    assert json.loads((Path(cfg.out) / "config.json").read_text())["config_class"] == "rsa_jax.train_config:TrainConfig"


@pytest.mark.parametrize("recorded", ["__main__:TrainConfig", "rsa_jax.train:TrainConfig"])
def test_runs_recorded_under_older_class_names_load(tmp_path, reference_run, recorded):
    """Runs of ``python -m rsa_jax.train`` before the fix recorded ``__main__:TrainConfig``; every run written
    before rsa_jax.train_config existed names ``rsa_jax.train:TrainConfig`` (the re-export)."""
    import shutil
    cfg, _, model_ref, _ = reference_run
    old = tmp_path / "old"
    shutil.copytree(cfg.out, old)
    rec = json.loads((old / "config.json").read_text())
    rec["config_class"] = recorded
    (old / "config.json").write_text(json.dumps(rec))
    model, cfg2 = load_model(old)
    assert type(cfg2) is TrainConfig and cfg2 == cfg
    tree_equal(nnx.state(model), nnx.state(model_ref))


CLI_FLAGS = ["--model-kind", "itrsa", "--model-d", "16", "--model-heads", "2", "--t-train", "2", "--batch-size", "20",
             "--epochs", "1", "--train-limit", "40", "--eval-limit", "20", "--eval-every", "1", "--no-progress"]


@pytest.mark.slow
def test_cli_run_loads_back(tmp_path):
    """The issue's reproduction: a run of the training command (``python -m rsa_jax.tasks.sudoku``, a
    separate process) loads with ``load_model``."""
    out = tmp_path / "r"
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    proc = subprocess.run([sys.executable, "-m", "rsa_jax.tasks.sudoku", *CLI_FLAGS, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "eval/board_acc" in json.loads(proc.stdout[proc.stdout.index("{"):])
    rec = json.loads((out / "config.json").read_text())
    assert rec["config_class"] == "rsa_jax.train_config:TrainConfig", rec["config_class"]
    with jax.enable_x64(False):
        model, cfg = load_model(out)
    assert type(cfg) is TrainConfig and cfg.model == ModelConfig(kind="itrsa", d=16, heads=2)
    assert cfg.epochs == 1 and cfg.train_limit == 40 and model.config == cfg.model


# -------------------------------------------------------------------------- toy regression task
class Lin(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (3,)))


def toy_task(poison_step=None, spe=4):
    """Linear regression; the batch of (1-based) step ``poison_step`` makes the loss NaN."""
    def batches(epoch):
        for i in range(spe):
            r = np.random.default_rng([epoch, i])
            x = r.normal(size=(5, 3)).astype(np.float32)
            yield {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], np.float32),
                   "poison": np.float32(epoch * spe + i + 1 == poison_step)}

    def loss_fn(model, batch, key):
        loss = jnp.mean((batch["x"] @ model.w[...] - batch["y"]) ** 2)
        loss = jnp.where(batch["poison"] > 0, jnp.nan, loss)
        return loss, {"aux": {"w": model.w[...]}}

    return Task(init_model=lambda rngs: Lin(rngs), loss_fn=loss_fn, train_batches=batches, steps_per_epoch=spe,
                name="toy")


def test_divergence_raises_and_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(epochs=3, lr=1e-2, checkpoint_every=2, log_every=100, progress=False, out=str(tmp_path))
    with pytest.raises(TrainingDiverged, match="step 7") as e:
        train(cfg, toy_task(poison_step=7))
    assert e.value.step == 7 and e.value.last_checkpoint == 6
    step, state = _final_state(tmp_path)
    assert step == 6
    assert all(np.all(np.isfinite(np.asarray(l))) for l in jax.tree.leaves(state))
    # resuming from the good checkpoint with clean data finishes
    model, _ = train(cfg, toy_task())
    assert np.all(np.isfinite(np.asarray(model.w[...])))


def test_lr_explosion_diverges(tmp_path):
    cfg = TrainConfig(epochs=2, lr=1e30, grad_clip=0.0, checkpoint_every=0, progress=False, out=str(tmp_path))
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, toy_task())
    assert 1 < e.value.step <= 8 and e.value.last_checkpoint is None


class CountingPenalty:
    """lambda ||w||^2 with a state counting its calls (stands in for power-iteration vectors)."""
    name = "l2"

    def __init__(self, lam):
        self.lam = lam

    def init(self, model, key):
        return {"calls": jnp.zeros(()), "v": jax.random.normal(key, (3,))}

    def __call__(self, model, state, aux):
        value = self.lam * jnp.sum(aux["w"] ** 2)
        return value, {"calls": state["calls"] + 1, "v": state["v"]}


def test_penalty_hook_and_state_resume(tmp_path):
    cfg = TrainConfig(epochs=2, lr=1e-2, checkpoint_every=3, log_every=1, progress=False, out=str(tmp_path / "p"))
    pen = (CountingPenalty(0.5),)
    model, hist = train(cfg, toy_task(), penalties=pen)
    rec = hist[0]
    assert rec["total_loss"] == pytest.approx(rec["loss"] + rec["penalty/l2"], rel=1e-6)
    _, state = _final_state(tmp_path / "p")
    assert float(state["misc"]["extra"][0]["calls"]) == 8
    # killed at step 5, resumed from step 3: same final state, counter included
    cfg2 = dataclasses.replace(cfg, out=str(tmp_path / "q"))
    with pytest.raises(Killed):
        train(cfg2, killing(toy_task(), 5, 4), penalties=pen)
    train(cfg2, toy_task(), penalties=pen)
    tree_equal(_final_state(tmp_path / "q")[1], state)


def test_config_penalty_is_the_explicit_penalty_and_is_recorded(tmp_path, puzzles):
    """``TrainConfig.penalty`` trains exactly as the same penalty object handed to ``train`` and lands
    in config.json (so a shipped model says what it was regularized with)."""
    from rsa_jax.regularizers import SpecPenalty
    kw = dict(epochs=1, max_steps=2, checkpoint_every=0, log_every=1)
    named = tiny_cfg(tmp_path / "named", penalty="spec", penalty_lam=1e-2, spec_layout="fused", **kw)
    plain = tiny_cfg(tmp_path / "plain", **kw)
    m1, h1 = train(named, sudoku_task(named, puzzles, puzzles))
    m2, h2 = train(plain, sudoku_task(plain, puzzles, puzzles), penalties=(SpecPenalty(1e-2, layout="fused"),))
    tree_equal(nnx.state(m1, nnx.Param), nnx.state(m2, nnx.Param))
    assert h1[0]["penalty/SpecPenalty"] == h2[0]["penalty/SpecPenalty"] > 0
    rec = json.loads((tmp_path / "named" / "config.json").read_text())["config"]
    assert (rec["penalty"], rec["penalty_lam"], rec["spec_layout"]) == ("spec", 1e-2, "fused")


def test_make_penalties_rejects_bad_names():
    from rsa_jax.train_state import make_penalties
    assert make_penalties(TrainConfig()) == ()
    with pytest.raises(ValueError, match="penalty must be"):
        make_penalties(TrainConfig(penalty="l2"))
    with pytest.raises(ValueError, match="one head"):
        make_penalties(TrainConfig(penalty="e_single", penalty_lam=1.0))   # default model has 8 heads
    with pytest.raises(ValueError, match="layout"):
        make_penalties(TrainConfig(penalty="spec", penalty_lam=1.0, spec_layout="stacked"))
    with pytest.raises(ValueError, match="needs penalty_lam > 0"):
        make_penalties(TrainConfig(penalty="spec"))                        # recorded as 'spec' but no penalty
    with pytest.raises(ValueError, match="without a penalty"):
        make_penalties(TrainConfig(penalty_lam=1e-4))
    (p,) = make_penalties(TrainConfig(penalty="e_multi", penalty_lam=1e-4))
    assert (p.kind, p.lam) == ("multi", 1e-4)


def test_resume_warns_on_changed_config_and_fields_missing_from_old_runs(tmp_path):
    """A resumed run compares configs: a changed field warns; a field an older config.json lacks counts
    as its default (no warning when the new run keeps the default, a warning when it does not)."""
    import warnings
    cfg = TrainConfig(epochs=1, lr=1e-2, checkpoint_every=2, log_every=1, progress=False, out=str(tmp_path))
    with pytest.raises(Killed):
        train(cfg, killing(toy_task(), 3, 4))
    path = tmp_path / "config.json"
    rec = json.loads(path.read_text())
    del rec["config"]["weight_decay"]                       # as written before the field existed
    del rec["config"]["model"]["symmetric"]                 # likewise inside the nested model config
    path.write_text(json.dumps(rec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(dataclasses.replace(cfg, epochs=2, max_steps=5), toy_task())     # ignored fields, default kept
    path.write_text(json.dumps(rec))
    with pytest.warns(UserWarning, match=r"grad_clip: 1\.0 -> 0\.5, weight_decay: 0\.0 -> 0\.1"):
        train(dataclasses.replace(cfg, epochs=2, grad_clip=0.5, weight_decay=0.1), toy_task())


def test_a_pre_parity_run_resumes_with_its_options_and_is_refused_clearly_without(tmp_path):
    """A run written before the official AKOrN parametrization (its config.json lacks the four fields) resumes
    silently with the options it was trained with (``WHEN_ABSENT``), and with today's defaults is refused
    with a message naming the fields, not orbax's tree diff."""
    import warnings
    legacy = dict(param_init="normal", gta_param="angles", omega_param="scalar", readout="gelu")
    old = dataclasses.replace(tiny_cfg(tmp_path), model=ModelConfig(kind="akorn", d=16, heads=2, n=4, **legacy),
                              max_steps=3)
    train(old, sudoku_task(old))
    path = tmp_path / "config.json"
    rec = json.loads(path.read_text())
    for k in legacy:
        del rec["config"]["model"][k]                           # as the code before the change wrote it
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"model\.param_init: 'normal' -> 'torch'.*--model-param-init normal"):
        with pytest.warns(UserWarning, match="model.gta_param: 'angles' -> 'matrices'"):
            new = tiny_cfg(tmp_path, max_steps=4)
            train(new, sudoku_task(new))
    path.write_text(json.dumps(rec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, history = train(dataclasses.replace(old, max_steps=4), sudoku_task(old))
    assert history[-1]["step"] == 4


def test_ema_matches_ema_pytorch_schedule():
    """ema_pytorch.EMA(beta, update_every, update_after_step), power 2/3, inv_gamma 1, written out."""
    beta, every, after, power = 0.9, 3, 4, 2 / 3
    rng = np.random.default_rng(0)
    ema = params = np.zeros(2)
    ema_j = jnp.zeros(2)
    for step in range(20):
        params = rng.normal(size=2)
        if step % every == 0:
            if step <= after:
                ema = params.copy()
            else:
                epoch = step - after
                d = min(beta, 1 - (1 + epoch) ** -power)
                ema = d * ema + (1 - d) * params
        ema_j = ema_update(ema_j, jnp.asarray(params, jnp.float32), step, decay=beta, every=every, after=after,
                           power=power)
        np.testing.assert_allclose(ema_j, ema, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_ema_keeps_the_parameter_dtype(dtype, rtol):
    """The decay is computed in float32 and cast to each leaf (a bfloat16 EMA once became float32)."""
    ema, params = jnp.ones(4, dtype), jnp.full(4, 3.0, dtype)
    out = ema_update({"w": ema}, {"w": params}, 20, decay=0.9, every=10, after=4, power=0.0)["w"]
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), 0.9 * 1.0 + 0.1 * 3.0, rtol=rtol)


# ------------------------------------------------------------------------------------- CLI
def test_cli_dataclass_parsing():
    parser = add_dataclass_args(argparse.ArgumentParser(), TrainConfig, exclude=("seed",))
    args = parser.parse_args(["--lr", "1e-4", "--model-d", "32", "--model-heads", "4", "--model-norm-n", "none",
                              "--max-steps", "7", "--no-progress", "--data-dir", "/x", "--model-fused"])
    base = TrainConfig(model=ModelConfig(kind="itrsa", d=64, heads=2), epochs=3)
    cfg = dataclass_from_args(args, TrainConfig, base)
    assert cfg.lr == 1e-4 and cfg.max_steps == 7 and cfg.progress is False and cfg.data_dir == "/x"
    assert cfg.epochs == 3                                    # untouched flags keep the base values
    assert cfg.model == ModelConfig(kind="itrsa", d=32, heads=4, norm_n=None, fused=True)
    assert dataclass_from_args(parser.parse_args(["--lr", "none"]), TrainConfig).lr is None
    assert dataclass_from_args(parser.parse_args([]), TrainConfig, base) == base
    # the normalization follows the kind unless given (the default model is AKOrN with Pi)
    assert dataclass_from_args(parser.parse_args(["--model-kind", "itrsa"]), TrainConfig).model.norm == "rmsnorm"
    kind_norm = parser.parse_args(["--model-kind", "itrsa", "--model-norm", "pi"])
    assert dataclass_from_args(kind_norm, TrainConfig).model.norm == "pi"
    no_norm = parser.parse_args(["--model-kind", "itrsa", "--model-norm", "none"])
    assert dataclass_from_args(no_norm, TrainConfig).model.norm == "none"   # "none" = no normalization
    assert dataclass_from_args(parser.parse_args(["--model-norm", "auto"]), TrainConfig, base).model.norm == "rmsnorm"
    assert dataclass_from_args(parser.parse_args(["--model-d", "32"]), TrainConfig, base).model.norm == "rmsnorm"
    text = parser.format_help()
    for flag in ("--model-kind", "--matmul-precision", "--ema-decay", "--checkpoint-every", "--batch-size"):
        assert flag in text
    assert "--seed" not in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--model-d", "abc"])


def test_sudoku_batch_metrics_on_known_logits():
    target = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    given = np.array([[True, False, False, False], [False, False, True, True]])
    pred = target.copy()
    pred[0, 0] = 8      # wrong but given: ignored
    pred[1, 1] = 0      # wrong blank cell
    logits = jax.nn.one_hot(pred, 9)
    cell, board = sudoku_metrics(logits, jnp.asarray(target), jnp.asarray(given))
    assert float(cell) == pytest.approx(4 / 5)
    assert float(board) == pytest.approx(0.5)
