"""Sudoku evaluation: predictions, test-time scaling over T_eval, AKOrN's energy voting, and
pseudo-energy monitors along a rollout (``monitor_rollout``, sec. 6.3).

Random initial states. Puzzles are processed in batches of ``batch_size`` (the last one padded, so
each function compiles once); the noise of batch ``b`` and candidate ``k`` comes from
:func:`candidate_key` ``(key, b, k)``. ``evaluate_boards`` uses candidate 0, so
``energy_voting(K=1)`` reproduces it, and the k-th voting candidate does not depend on ``chunk``.
Accuracies count blank cells only (:func:`rsa_jax.data.sudoku.board_accuracy` / ``cell_accuracy``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsa_jax.data.sudoku import SudokuSet, board_accuracy, cell_accuracy
from rsa_jax.energy import pseudo_energy
from rsa_jax.attention import msa
from rsa_jax.monitor import krylov_contribution_index, msa_contribution_index, msa_cosine

#: the paper's T_eval grid (16 -> 2048)
PAPER_STEPS = (16, 32, 64, 128, 256, 512, 1024, 2048)


def candidate_key(key: jax.Array, batch_index: int, k: int = 0) -> jax.Array:
    """PRNG key of the initial state of candidate ``k`` for the puzzles of batch ``batch_index``."""
    return jax.random.fold_in(jax.random.fold_in(key, batch_index), k)


def check_puzzles(digits, given=None, name: str = "digits"):
    """``digits`` as an int32 ``(B, 81)`` NumPy array, or a ``ValueError`` / ``TypeError`` naming ``name``.

    Digits must be integers 0..9 (0 = blank; the embedding has 10 rows, and other values gave NaN
    logits without an error); ``given``, if passed, must have the same shape.
    """
    a = np.asarray(digits)
    if a.dtype.kind not in "iub":
        raise TypeError(f"{name} must be integers 0..9 (0 = blank); got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[-1] != 81:
        raise ValueError(f"{name} must be (B, 81) (a batch of puzzles; one puzzle: digits[None]); got {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 9):
        raise ValueError(f"{name} must hold digits 0..9 (0 = blank); got values in [{a.min()}, {a.max()}]")
    if given is not None and np.shape(given) != a.shape:
        raise ValueError(f"given must have the shape of {name}, {a.shape}; got {np.shape(given)}")
    return a.astype(np.int32)


def vote_predictions(model, digits, given, K: int, steps: int, key: jax.Array | None = None, chunk: int = 16):
    """Energy voting without solutions: ``(predictions (B, 81), energies (K, B))``, per puzzle the
    lowest-energy of ``K`` candidates (the keys and energies of :func:`energy_voting`, for one batch)."""
    digits = check_puzzles(digits, given)
    if K < 1 or chunk < 1:
        raise ValueError(f"K and chunk must be >= 1, got K={K}, chunk={chunk}")
    key = jax.random.PRNGKey(0) if key is None else key
    graphdef, state = nnx.split(model)
    preds, energies = [], []
    for k0 in range(0, K, chunk):
        keys = jnp.stack([candidate_key(key, 0, k) for k in range(k0, min(k0 + chunk, K))])
        p, e = jax.device_get(_vote_candidates(graphdef, state, jnp.asarray(digits), jnp.asarray(given, bool), keys,
                                               steps=int(steps)))
        preds.append(p)
        energies.append(e)
    energies = np.concatenate(energies)
    return select_min_energy(np.concatenate(preds), energies)[0], energies


def _digits(logits):
    return (jnp.argmax(logits, axis=-1) + 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps"))
def _predict_at(graphdef, state, digits, given, key, steps: tuple):
    """``(len(steps), B, 81)`` predicted digits, read out along one rollout at each T in ``steps`` (sorted)."""
    model = nnx.merge(graphdef, state)
    step, params = model.pure_step()
    c, x = model.condition(digits, given, key)
    preds, t = [], 0
    for T in steps:
        x = jax.lax.scan(lambda x, _: (step(params, x, c), None), x, None, length=T - t)[0]
        t = T
        preds.append(_digits(model.readout(x)))
    return jnp.stack(preds)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps"))
def _vote_candidates(graphdef, state, digits, given, keys, steps: int):
    """For each key: predicted digits ``(k, B, 81)`` after ``steps`` updates and the energy
    ``(k, B)`` summed over the visited states x_1 .. x_T."""
    model = nnx.merge(graphdef, state)
    step, params = model.pure_step()

    energy = lambda x, c: pseudo_energy(params["attn"], x, c)

    def one(key):
        c, x0 = model.condition(digits, given, key)

        def body(carry, _):
            # E(x_t) next to step(x_t): both evaluate MSA(x_t), which XLA computes once (CSE)
            x, e = carry
            return (step(params, x, c), e + energy(x, c)), None

        (x, e), _ = jax.lax.scan(body, (x0, jnp.zeros(x0.shape[:-2], x0.dtype)), None, length=steps)
        return _digits(model.readout(x)), e - energy(x0, c) + energy(x, c)     # x_0..x_{T-1} -> x_1..x_T

    return jax.lax.map(one, keys) if keys.shape[0] == 1 else jax.vmap(one)(keys)


def predict(model, digits, given, key: jax.Array, steps: int) -> np.ndarray:
    """Predicted digits 1..9, ``(B, 81)`` (givens included as the model predicts them).

    Args:
      model: a ``SudokuModel``.
      digits: ``(B, 81)`` int, 0 = blank.
      given: ``(B, 81)`` bool.
      key: PRNG key of the random initial state.
      steps: T_eval.
    """
    digits = check_puzzles(digits, given)
    graphdef, state = nnx.split(model)
    out = _predict_at(graphdef, state, jnp.asarray(digits, jnp.int32), jnp.asarray(given, bool), key,
                      steps=(int(steps),))
    return np.asarray(out[0])


def _batches(s: SudokuSet, batch_size: int):
    """Yields ``(index, lo, digits, given)`` with the last batch padded by repeating its last row."""
    n = len(s)
    for b, lo in enumerate(range(0, n, batch_size)):
        idx = np.minimum(np.arange(lo, lo + batch_size), n - 1)
        yield b, lo, s.puzzles[idx].astype(np.int32), s.puzzles[idx] != 0


def evaluate_boards(model, sudoku_set: SudokuSet, steps_list: Sequence[int] = PAPER_STEPS, batch_size: int = 100,
                    key: jax.Array | None = None, *, return_predictions: bool = False) -> dict:
    """Board and cell accuracy at every T_eval in ``steps_list`` from ONE rollout of max(T) steps.

    Args:
      model: a ``SudokuModel``.
      sudoku_set: puzzles with solutions.
      steps_list: T_eval values (any order; duplicates removed).
      batch_size: puzzles per batch.
      key: PRNG key (default ``PRNGKey(0)``); see the module docstring.
      return_predictions: also return ``predictions`` ``(len(steps), n, 81)``.

    Returns:
      ``{"steps": [T...], "board_acc": [...], "cell_acc": [...]}`` (sorted by T), plus ``predictions``.
    """
    check_puzzles(sudoku_set.puzzles, name="sudoku_set.puzzles")
    steps = tuple(sorted({int(t) for t in steps_list}))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps_list must hold non-negative T values, got {steps_list}")
    key = jax.random.PRNGKey(0) if key is None else key
    graphdef, state = nnx.split(model)
    n = len(sudoku_set)
    preds = np.zeros((len(steps), n, 81), np.int32)
    for b, lo, digits, given in _batches(sudoku_set, batch_size):
        p = _predict_at(graphdef, state, digits, given, candidate_key(key, b), steps=steps)
        hi = min(lo + batch_size, n)
        preds[:, lo:hi] = np.asarray(p)[:, : hi - lo]
    out = {"steps": list(steps),
           "board_acc": [board_accuracy(p, sudoku_set) for p in preds],
           "cell_acc": [cell_accuracy(p, sudoku_set) for p in preds]}
    if return_predictions:
        out["predictions"] = preds
    return out


def select_min_energy(predictions: np.ndarray, energies: np.ndarray):
    """``predictions (K, n, 81)``, ``energies (K, n)`` -> ``(chosen (n, 81), index (n,))``: per puzzle the
    candidate of lowest energy (first one on ties)."""
    idx = np.argmin(np.asarray(energies), axis=0)
    return np.take_along_axis(np.asarray(predictions), idx[None, :, None], axis=0)[0], idx


def energy_voting(model, sudoku_set: SudokuSet, K: int = 100, steps: int = 128, key: jax.Array | None = None,
                  chunk: int = 16, batch_size: int = 100) -> dict:
    """AKOrN's energy-based voting: K random initial states per puzzle, keep the lowest-energy run.

    The energy of a run is the pseudo-energy ``-Tr(X^T (C + MSA(X)))`` (``rsa_jax.energy``) summed
    over the visited states x_1 .. x_T (lowest energy summed over the steps, as in AKOrN's code).

    Args:
      model: a ``SudokuModel``.
      sudoku_set: puzzles with solutions.
      K: candidates per puzzle.
      steps: T_eval of every candidate.
      key: PRNG key (default ``PRNGKey(0)``).
      chunk: candidates run at once (vmapped); memory grows as chunk x batch_size x 81 x D.
      batch_size: puzzles per batch.

    Returns:
      dict with ``board_acc``, ``cell_acc`` (of the voted predictions), ``predictions (n, 81)``,
      ``energies (n, K)``, ``chosen (n,)`` candidate index, and two references: ``single_board_acc``
      (candidate 0 alone, = ``evaluate_boards`` at ``steps``) and ``oracle_board_acc`` (some candidate right).
    """
    check_puzzles(sudoku_set.puzzles, name="sudoku_set.puzzles")
    if K < 1 or chunk < 1:
        raise ValueError(f"K and chunk must be >= 1, got K={K}, chunk={chunk}")
    key = jax.random.PRNGKey(0) if key is None else key
    chunk = min(chunk, K)
    graphdef, state = nnx.split(model)
    n = len(sudoku_set)
    best_pred = np.zeros((n, 81), np.int32)
    energies = np.zeros((n, K), np.float32)
    first = np.zeros((n, 81), np.int32)
    any_right = np.zeros(n, bool)
    sol, blank = sudoku_set.solutions.astype(np.int32), ~sudoku_set.givens
    for b, lo, digits, given in _batches(sudoku_set, batch_size):
        hi = min(lo + batch_size, n)
        m = hi - lo
        best_e = np.full(m, np.inf)
        for k0 in range(0, K, chunk):
            ks = np.minimum(np.arange(k0, k0 + chunk), K - 1)
            keys = jnp.stack([candidate_key(key, b, int(k)) for k in ks])
            p, e = jax.device_get(_vote_candidates(graphdef, state, digits, given, keys, steps=int(steps)))
            valid = ks == np.arange(k0, k0 + chunk)
            p, e = p[valid][:, :m], e[valid][:, :m]
            energies[lo:hi, k0: k0 + len(e)] = e.T
            if k0 == 0:
                first[lo:hi] = p[0]
            ok = np.all((p == sol[None, lo:hi]) | ~blank[None, lo:hi], axis=-1)
            any_right[lo:hi] |= ok.any(0)
            cand, idx = select_min_energy(p, e)
            better = e[idx, np.arange(m)] < best_e          # strict: earlier candidates win ties
            best_pred[lo:hi][better] = cand[better]
            best_e = np.where(better, e[idx, np.arange(m)], best_e)
    return {"board_acc": board_accuracy(best_pred, sudoku_set), "cell_acc": cell_accuracy(best_pred, sudoku_set),
            "predictions": best_pred, "energies": energies, "chosen": np.argmin(energies, axis=1),
            "single_board_acc": board_accuracy(first, sudoku_set), "oracle_board_acc": float(np.mean(any_right))}


# ------------------------------------------------------------------------------ monitoring
def _state_monitors(model, params, x, c, target, blank):
    """Per-puzzle monitors of one state ``x`` ``(B, 81, D)``: pseudo-energy, cosine(MSA(X), J X),
    board right (all blank cells), number of right blank cells."""
    right = (_digits(model.readout(x)) == target) & blank
    return {"energy": pseudo_energy(params["attn"], x, c), "cosine": msa_cosine(params["attn"], x),
            "board": jnp.all(right | ~blank, axis=-1), "cells": jnp.sum(right, axis=-1)}


@functools.partial(jax.jit, static_argnames=("graphdef", "steps"))
def _monitor_segment(graphdef, state, x, c, target, blank, steps: int):
    """``steps`` updates from ``x``: ``(x_end, {name: (steps, B)})`` monitors of the visited states;
    ``steps = 0`` gives the monitors of ``x`` itself ``(1, B)``."""
    model = nnx.merge(graphdef, state)
    step, params = model.pure_step()
    if steps == 0:
        return x, jax.tree.map(lambda a: a[None], _state_monitors(model, params, x, c, target, blank))

    def body(x, _):
        x = step(params, x, c)
        return x, _state_monitors(model, params, x, c, target, blank)

    return jax.lax.scan(body, x, None, length=steps)


@functools.lru_cache(maxsize=None)
def _contribution_fn(top_frac: float, krylov_dim: int | None):
    """Jitted ``(attn, x (81, D)) -> (index, residual, gap)``, one compile per setting (NaN diagnostics if dense)."""
    if krylov_dim is None:
        nan = jnp.full((), jnp.nan)
        return jax.jit(lambda attn, x: (msa_contribution_index(attn, x, top_frac), nan, nan))
    m = None if krylov_dim == 0 else krylov_dim
    return jax.jit(lambda attn, x: tuple(krylov_contribution_index(lambda z: msa(attn, z), x, top_frac, m)))


def monitor_rollout(model, digits, given, steps: int, key: jax.Array, *, solutions=None,
                    contribution_every: int = 1, contribution_puzzles: int = 1, top_frac: float = 0.02,
                    krylov_dim: int | None = None) -> dict:
    """Pseudo-energy monitors along one rollout (sec. 6.3), for the evaluation loop and ``experiments.pseudo_energy``.

    At every state ``X_t``, ``t = 0 .. steps`` (``X_0`` = the model's initial state), with
    ``MSA(X)`` the attention of the pure step evaluated at the state (``msa(params["attn"], X_t)``,
    what ``itrsa_step`` and ``akorn_step`` both compute):

    * ``E_pseudo(t) = -Tr(X_t^T (C + MSA(X_t)))`` (``rsa_jax.energy.pseudo_energy``), every puzzle;
    * the cosine between ``vec(MSA(X_t))`` and ``J_t x_t`` (``rsa_jax.monitor.msa_cosine``), every puzzle;
    * board / cell accuracy of ``model.readout(X_t)`` (blank cells only) when ``solutions`` is given;
    * the contribution index (share of ``||x_t||^2`` on the top ``top_frac`` eigenvectors of
      ``S_t = J_t + J_t^T``, ``rsa_jax.monitor.msa_contribution_index``) on the first
      ``contribution_puzzles`` puzzles at ``t = 0, e, 2e, ...`` and ``t = steps`` (``e =
      contribution_every``). Dense by default: ``(81 D)^2`` memory and an ``O((81 D)^3)`` eigh per
      puzzle and step (about 5 s at D = 16 on a CPU core, minutes at D = 128, a 7 GB matrix at
      D = 512); with ``krylov_dim`` matrix-free Lanczos (``rsa_jax.monitor.krylov_contribution_index``,
      seconds at D = 128) with its residual and gap diagnostics.

    Only ``model.condition``, ``model.pure_step`` and ``model.readout`` are used.

    Args:
      model: a ``SudokuModel`` (or any model with that interface).
      digits: ``(B, 81)`` int, 0 = blank.
      given: ``(B, 81)`` bool.
      steps: T_eval, number of updates.
      key: PRNG key of the blank cells' initial noise (``model.condition(digits, given, key)``; not
        the per-batch keys of :func:`evaluate_boards`, so the same key gives other starts there).
      solutions: ``(B, 81)`` digits 1..9, or None (no accuracies).
      contribution_every: spacing of the contribution-index steps (0: never computed).
      contribution_puzzles: puzzles (the first ones) the contribution index is computed on.
      top_frac: fraction of eigenvectors counted (2% in the paper).
      krylov_dim: None: dense eigh (exact); an int: Lanczos with that many steps (0: Lanczos with its
        default, ``min(n - 1, max(6 k, 40))`` for ``k`` eigenvectors of ``n = 81 D``).

    Returns:
      dict of NumPy arrays: ``t`` ``(steps + 1,)``; ``energy``, ``cosine`` ``(steps + 1,)`` means over
      puzzles and ``energy_per_puzzle``, ``cosine_per_puzzle`` ``(steps + 1, B)``; ``board_acc``,
      ``cell_acc`` ``(steps + 1,)`` (None without ``solutions``); ``contribution_t`` ``(K,)``,
      ``contribution`` ``(K,)`` (mean over the puzzles) and ``contribution_per_puzzle`` ``(K, P)``
      (empty with ``contribution_every = 0``); ``contribution_residual``, ``contribution_gap``
      ``(K, P)`` Lanczos diagnostics relative to the top eigenvalue (NaN when dense).
    """
    if steps < 0 or contribution_every < 0 or contribution_puzzles < 1:
        raise ValueError(f"need steps >= 0, contribution_every >= 0, contribution_puzzles >= 1; got {steps}, "
                         f"{contribution_every}, {contribution_puzzles}")
    digits, given = jnp.asarray(check_puzzles(digits, given)), jnp.asarray(given, bool)
    target = jnp.zeros_like(digits) if solutions is None else jnp.asarray(solutions, jnp.int32)
    blank = ~given
    graphdef, state = nnx.split(model)
    c, x = model.condition(digits, given, key)
    attn = model.pure_step()[1]["attn"]
    marks = sorted(set(range(0, steps + 1, contribution_every)) | {steps}) if contribution_every else []
    p = min(contribution_puzzles, digits.shape[0])
    contribution = _contribution_fn(float(top_frac), krylov_dim)
    records, cis, t = [], [], 0
    for stop in sorted(set(marks) | {0, steps}):
        x, rec = _monitor_segment(graphdef, state, x, c, target, blank, steps=stop - t)
        records.append(jax.device_get(rec))
        t = stop
        if stop in marks:
            cis.append([[float(v) for v in contribution(attn, x[i])] for i in range(p)])
    mon = {k: np.concatenate([r[k] for r in records]) for k in records[0]}
    cis = np.asarray(cis, np.float64).reshape(len(marks), p, 3)
    n_blank = max(int(np.sum(np.asarray(blank))), 1)
    return {"t": np.arange(steps + 1),
            "energy": mon["energy"].mean(1), "energy_per_puzzle": mon["energy"],
            "cosine": mon["cosine"].mean(1), "cosine_per_puzzle": mon["cosine"],
            "board_acc": None if solutions is None else mon["board"].mean(1),
            "cell_acc": None if solutions is None else mon["cells"].sum(1) / n_blank,
            "contribution_t": np.asarray(marks, np.int64), "contribution": cis[..., 0].mean(1),
            "contribution_per_puzzle": cis[..., 0], "contribution_residual": cis[..., 1],
            "contribution_gap": cis[..., 2]}
