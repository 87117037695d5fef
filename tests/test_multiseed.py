"""rsa_jax.multiseed: the vmapped multi-seed run equals separate single-seed runs of rsa_jax.train."""

import dataclasses
import json
import shutil
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from rsa_jax.data.sudoku import generate_puzzles
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.multiseed import seed_config, stack_batches, stack_trees, train_multiseed, unstack_tree
from rsa_jax.regularizers import SpecPenalty
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, load_model, split_model, train

SEEDS = (3, 11)


@pytest.fixture(autouse=True)
def float32():
    """The trainer runs in float32 (the paper's precision); conftest turns on x64 for the session."""
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def puzzles():
    tr = generate_puzzles(12, range(34, 40), seed=0)
    ev = generate_puzzles(4, range(34, 40), seed=1)
    return tr, ev


def _cfg(out, **kw):
    base = dict(model=ModelConfig(kind="akorn", d=16, heads=2, n=4), t_train=2, batch_size=4, epochs=2,
                max_steps=5, lr=1e-2, ema_after=1, ema_every=1, log_every=1, checkpoint_every=3,
                progress=False, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _params(model):
    return split_model(model)[1]


def test_stack_roundtrip():
    trees = [{"a": np.full((2,), i, np.float32), "b": (np.int32(i),)} for i in range(3)]
    stacked = stack_trees(trees)
    assert stacked["a"].shape == (3, 2) and stacked["b"][0].shape == (3,)
    for i in range(3):
        chex.assert_trees_all_equal(unstack_tree(stacked, i), trees[i])
    assert stack_batches([{"x": np.zeros((4, 81))}] * 2)["x"].shape == (2, 4, 81)


@pytest.fixture(scope="module")
def multi(tmp_path_factory, puzzles):
    """One 2-seed run (AKOrN, a spectral penalty with a power-iteration state), 5 steps."""
    tr, ev = puzzles
    root = tmp_path_factory.mktemp("multiseed")
    with jax.enable_x64(False):
        cfg = _cfg(root / "multi")
        models, histories = train_multiseed(cfg, lambda c: sudoku_task(c, tr, ev), SEEDS, PENALTIES)
    return cfg, models, histories


PENALTIES = (SpecPenalty(1e-2),)


@pytest.mark.slow
def test_multiseed_equals_single_seed_runs(tmp_path, puzzles, multi):
    tr, ev = puzzles
    cfg, models, histories = multi
    assert json.loads((Path(cfg.out) / "multiseed.json").read_text())["seeds"] == list(SEEDS)
    for seed, model, hist in zip(SEEDS, models, histories):
        cs = dataclasses.replace(seed_config(cfg, seed), out=str(tmp_path / f"single_{seed}"))
        ref, ref_hist = train(cs, sudoku_task(cs, tr, ev), PENALTIES)
        chex.assert_trees_all_close(_params(model), _params(ref), rtol=1e-5, atol=1e-6)
        assert [r["step"] for r in hist] == [r["step"] for r in ref_hist] == [1, 2, 3, 4, 5]
        for r, q in zip(hist, ref_hist):
            for k in ("loss", "grad_norm", "penalty/SpecPenalty"):
                np.testing.assert_allclose(r[k], q[k], rtol=1e-5, err_msg=f"seed {seed} step {r['step']} {k}")
        # the per-seed directory is an ordinary run directory
        loaded, lcfg = load_model(Path(cfg.out) / f"seed_{seed}")
        assert lcfg.seed == seed
        chex.assert_trees_all_equal(_params(loaded), _params(model))
    # different seeds really differ
    a, b = (jax.tree.leaves(_params(m))[0] for m in models)
    assert not np.allclose(a, b)


@pytest.mark.slow
def test_multiseed_resume(tmp_path, puzzles, multi):
    """Resuming from the step-3 checkpoints reproduces the uninterrupted run exactly."""
    tr, ev = puzzles
    cfg, models, _ = multi
    cut = tmp_path / "cut"
    shutil.copytree(cfg.out, cut)
    for seed in SEEDS:
        shutil.rmtree(cut / f"seed_{seed}" / "checkpoints" / "5")
    resumed, hist = train_multiseed(_cfg(cut), lambda c: sudoku_task(c, tr, ev), SEEDS, PENALTIES)
    assert [r["step"] for r in hist[0]] == [1, 2, 3, 4, 5]
    for m, r in zip(models, resumed):
        chex.assert_trees_all_equal(_params(m), _params(r))


def test_bad_seeds(tmp_path, puzzles):
    tr, ev = puzzles
    cfg = _cfg(tmp_path / "bad")
    for seeds in ([1, 1], []):
        with pytest.raises(ValueError, match="distinct"):
            train_multiseed(cfg, sudoku_task(cfg, tr, ev), seeds)
