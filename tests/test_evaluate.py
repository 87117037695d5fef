"""Tests of rsa_jax.evaluate against independent references built from the model's own call and rollout."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rsa_jax.data.sudoku import SudokuSet, board_accuracy, cell_accuracy, generate_puzzles
from rsa_jax.energy import pseudo_energy
from rsa_jax.evaluate import candidate_key, energy_voting, evaluate_boards, predict, select_min_energy
from rsa_jax.models.sudoku import ModelConfig, SudokuModel

KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module", autouse=True)
def _float32_fast_prng():
    """The models run in float32 (tests/conftest.py turns on x64 for the session); the
    non-partitionable threefry compiles several times faster on CPU. Restored afterwards."""
    old = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    with jax.enable_x64(False):
        yield
    jax.config.update("jax_threefry_partitionable", old)


@pytest.fixture(scope="module")
def setup():
    s = generate_puzzles(8, range(28, 40), seed=5)      # two batches of 4
    # eta = 3: a quickly moving untrained model, so that T and the initial state change the predictions
    model = SudokuModel(ModelConfig(kind="akorn", d=16, heads=2, n=4, eta_init=3.0), rngs=nnx.Rngs(3))
    return model, s


@functools.partial(jax.jit, static_argnames=("graphdef", "steps"))
def _reference(graphdef, state, digits, given, key, steps):
    model = nnx.merge(graphdef, state)
    pred = jnp.argmax(model(digits, given, key, steps), -1) + 1
    c, x0 = model.condition(digits, given, key)
    _, xs = model.rollout(c, x0, steps, trajectory=True)
    return pred, pseudo_energy(model.pure_step()[1]["attn"], xs, c[None]).sum(0)


def reference_run(model, s: SudokuSet, key, steps):
    """Digits after ``steps`` updates (``model.__call__``) and the pseudo-energy summed over x_1..x_T
    (from the stored trajectory of ``model.rollout``)."""
    out = _reference(*nnx.split(model), jnp.asarray(s.puzzles, jnp.int32), jnp.asarray(s.givens), key, steps)
    return tuple(np.asarray(a) for a in out)


def test_single_rollout_readout_equals_separate_rollouts(setup):
    model, s = setup
    r = evaluate_boards(model, s, steps_list=(3, 1), batch_size=4, key=KEY, return_predictions=True)
    assert r["steps"] == [1, 3]
    for i, t in enumerate(r["steps"]):
        for b, lo in enumerate((0, 4)):           # batches of 4
            sub = s.subset(slice(lo, lo + 4))
            ref, _ = reference_run(model, sub, candidate_key(KEY, b), t)
            np.testing.assert_array_equal(r["predictions"][i, lo:lo + 4], ref)
            if t == 3:
                np.testing.assert_array_equal(predict(model, sub.puzzles, sub.givens, candidate_key(KEY, b), t), ref)
        assert r["board_acc"][i] == board_accuracy(r["predictions"][i], s)
        assert r["cell_acc"][i] == cell_accuracy(r["predictions"][i], s)
    assert np.any(r["predictions"][0] != r["predictions"][1])     # the read-out time matters


def test_voting_with_one_candidate_is_plain_prediction(setup):
    model, s = setup
    plain = evaluate_boards(model, s, steps_list=(3,), batch_size=4, key=KEY, return_predictions=True)
    vote = energy_voting(model, s, K=1, steps=3, key=KEY, chunk=1, batch_size=4)
    np.testing.assert_array_equal(vote["predictions"], plain["predictions"][0])
    assert vote["board_acc"] == plain["board_acc"][0] == vote["single_board_acc"]
    assert vote["cell_acc"] == plain["cell_acc"][0]


def test_voting_picks_the_lowest_summed_energy(setup):
    model, s = setup
    K, steps = 5, 3
    s = s.subset(slice(0, 6))     # batches of 4 + 2 (padded)
    vote = energy_voting(model, s, K=K, steps=steps, key=KEY, chunk=2, batch_size=4)   # chunks 2+2+1 (padded)
    preds, energies = [], []
    for k in range(K):
        p, e = zip(*(reference_run(model, s.subset(idx), candidate_key(KEY, b, k), steps)
                     for b, idx in enumerate(([0, 1, 2, 3], [4, 5, 5, 5]))))
        preds.append(np.concatenate(p)[:6])
        energies.append(np.concatenate(e)[:6])
    preds, energies = np.stack(preds), np.stack(energies)                  # (K, n, 81), (K, n)
    np.testing.assert_allclose(vote["energies"], energies.T, rtol=2e-5, atol=1e-3)
    best = np.argmin(energies, axis=0)
    np.testing.assert_array_equal(vote["chosen"], best)
    np.testing.assert_array_equal(vote["predictions"], preds[best, np.arange(len(s))])
    # the test means something: candidates disagree and the winner is not always candidate 0
    assert np.any(preds != preds[:1]) and np.any(best != 0)
    ok = np.all((preds == s.solutions) | s.givens, axis=-1)
    assert vote["oracle_board_acc"] == np.mean(ok.any(0))


def test_select_min_energy_constructed():
    preds = np.stack([np.full((3, 81), d) for d in (1, 2, 3)])            # candidate k predicts digit k+1
    energies = np.array([[0.0, 5.0, -1.0],
                         [-2.0, 5.0, -1.0],
                         [1.0, 4.0, -1.0]])                                 # (K=3, n=3); ties at puzzle 2
    chosen, idx = select_min_energy(preds, energies)
    np.testing.assert_array_equal(idx, [1, 2, 0])
    np.testing.assert_array_equal(chosen[:, 0], [2, 3, 1])


def test_accuracy_on_known_predictions(setup):
    _, s = setup
    s = s.subset(slice(0, 2))
    pred = s.solutions.astype(np.int32).copy()
    assert board_accuracy(pred, s) == 1.0 and cell_accuracy(pred, s) == 1.0
    g = np.flatnonzero(s.givens[0])[0]
    pred[0, g] = pred[0, g] % 9 + 1                                         # wrong given: not counted
    assert board_accuracy(pred, s) == 1.0 and cell_accuracy(pred, s) == 1.0
    blank = np.flatnonzero(~s.givens[1])
    pred[1, blank[:2]] = pred[1, blank[:2]] % 9 + 1                         # two wrong blanks in board 1
    assert board_accuracy(pred, s) == 0.5
    assert cell_accuracy(pred, s) == pytest.approx(1 - 2 / (~s.givens).sum())
