"""rsa_jax.multiseed: the vmapped multi-seed run equals separate single-seed runs of rsa_jax.train."""

import dataclasses
import json

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
        jax.tree.map(np.testing.assert_array_equal, unstack_tree(stacked, i), trees[i])
    assert stack_batches([{"x": np.zeros((4, 81))}] * 2)["x"].shape == (2, 4, 81)


@pytest.mark.parametrize("kind", ["akorn", "itrsa"])
def test_multiseed_equals_single_seed_runs(tmp_path, puzzles, kind):
    tr, ev = puzzles
    cfg = _cfg(tmp_path / "multi", model=ModelConfig(kind=kind, d=16, heads=2, n=4))
    factory = lambda c: sudoku_task(c, tr, ev)  # noqa: E731  (per-seed data order: batch_iterator(seed=c.seed))
    penalties = (SpecPenalty(1e-2),)
    models, histories = train_multiseed(cfg, factory, SEEDS, penalties)
    assert json.loads((tmp_path / "multi" / "multiseed.json").read_text())["seeds"] == list(SEEDS)
    for seed, model, hist in zip(SEEDS, models, histories):
        cs = dataclasses.replace(seed_config(cfg, seed), out=str(tmp_path / f"single_{seed}"))
        ref, ref_hist = train(cs, sudoku_task(cs, tr, ev), penalties)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     _params(model), _params(ref))
        assert [r["step"] for r in hist] == [r["step"] for r in ref_hist] == [1, 2, 3, 4, 5]
        for r, q in zip(hist, ref_hist):
            for k in ("loss", "grad_norm", "penalty/SpecPenalty"):
                np.testing.assert_allclose(r[k], q[k], rtol=1e-5, err_msg=f"seed {seed} step {r['step']} {k}")
        # the per-seed directory is an ordinary run directory
        loaded, lcfg = load_model(tmp_path / "multi" / f"seed_{seed}")
        assert lcfg.seed == seed
        jax.tree.map(np.testing.assert_array_equal, _params(loaded), _params(model))
    # different seeds really differ
    a, b = (jax.tree.leaves(_params(m))[0] for m in models)
    assert not np.allclose(a, b)


def test_multiseed_resume(tmp_path, puzzles):
    tr, ev = puzzles
    factory = lambda c: sudoku_task(c, tr, ev)  # noqa: E731
    full, _ = train_multiseed(_cfg(tmp_path / "full"), factory, SEEDS)
    train_multiseed(_cfg(tmp_path / "cut", max_steps=3), factory, SEEDS)  # checkpoint at step 3
    resumed, hist = train_multiseed(_cfg(tmp_path / "cut"), factory, SEEDS)
    assert [r["step"] for r in hist[0]] == [1, 2, 3, 4, 5]
    for m, r in zip(full, resumed):
        jax.tree.map(np.testing.assert_array_equal, _params(m), _params(r))


def test_shared_task_and_bad_seeds(tmp_path, puzzles):
    tr, ev = puzzles
    cfg = _cfg(tmp_path / "shared", max_steps=2)
    models, hist = train_multiseed(cfg, sudoku_task(cfg, tr, ev), [0, 1])
    assert len(models) == 2 and len(hist[1]) == 2
    with pytest.raises(ValueError, match="distinct"):
        train_multiseed(cfg, sudoku_task(cfg, tr, ev), [1, 1])
