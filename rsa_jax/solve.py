"""Solve Sudoku puzzles with a shipped model: ``rsa_jax.solve(...)`` and ``python -m rsa_jax.solve``.

    import rsa_jax
    res = rsa_jax.solve(["53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"])
    res.solutions[0], res.valid[0], res.steps        # (81,) digits 1..9, True if a valid grid, T used

    python -m rsa_jax.solve 53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79
    python -m rsa_jax.solve PUZZLE [PUZZLE ...] [--model NAME] [--steps T] [--vote K] [--plain]

A puzzle is an 81-character string, row by row, with ``0`` or ``.`` for a blank (whitespace ignored),
or a row of a ``(B, 81)`` integer array (0 = blank). The model runs ``steps`` inference steps from a
random initial state (``rsa_jax.evaluate.predict``); ``steps=None`` takes the T_eval at which the
model's own evaluation (``accuracy.id`` of its manifest: board accuracy on SATNet test) was best.
``vote=K`` runs K random initial states per puzzle and keeps the one of lowest pseudo-energy summed
over the steps (AKOrN's energy voting, ``rsa_jax.evaluate.vote_predictions``). ``valid`` checks the
result independently: every row, column and box holds 1..9 once, and every given digit is kept.
"""

from __future__ import annotations

import argparse
import functools
import sys
import types
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Solutions", "best_steps", "is_valid", "parse_puzzles", "solve", "main"]

DEFAULT_MODEL = "sudoku-itrsa-cpu"


class Solutions(NamedTuple):
    """Output of :func:`solve`: ``solutions (B, 81)`` digits 1..9, ``valid (B,)`` bool (a valid grid
    keeping the givens), ``steps`` (T_eval used) and ``vote`` (K, or None)."""

    solutions: np.ndarray
    valid: np.ndarray
    steps: int
    vote: int | None


def _units() -> np.ndarray:
    """``(27, 9)`` cell indices of the rows, columns and 3x3 boxes."""
    g = np.arange(81).reshape(9, 9)
    boxes = [g[r:r + 3, c:c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    return np.concatenate([g, g.T, np.stack(boxes)])


_UNITS, _UNIT_NAMES = _units(), [f"{kind} {i + 1}" for kind in ("row", "column", "box") for i in range(9)]


def parse_puzzles(puzzles) -> np.ndarray:
    """Puzzles as a ``(B, 81)`` int32 array (0 = blank), or a ``ValueError`` saying which puzzle and why.

    Args:
      puzzles: an 81-character string (``0`` or ``.`` blank, whitespace ignored), a sequence of such
        strings, or a ``(B, 81)`` integer array.

    Raises:
      ValueError: a wrong length, a character other than 1-9, 0 and ``.``, a digit outside 0..9, or a
        digit given twice in a row, column or box. TypeError: non-integer arrays.
    """
    from rsa_jax.evaluate import check_puzzles
    if isinstance(puzzles, str):
        puzzles = [puzzles]
    if len(puzzles) == 0:
        raise ValueError("no puzzles given: pass 81-character strings or a (B, 81) array")
    if len(puzzles) and all(isinstance(p, str) for p in puzzles):
        rows = []
        for i, p in enumerate(puzzles):
            s = "".join(p.split())
            bad = next((j for j, ch in enumerate(s) if ch not in "0123456789."), None)
            if bad is not None:
                raise ValueError(f"puzzle {i + 1}: character {s[bad]!r} at position {bad + 1}; expected 1-9, or 0 "
                                 "or . for a blank")
            if len(s) != 81:
                raise ValueError(f"puzzle {i + 1} has {len(s)} cells; expected 81 (row by row, 0 or . for a blank)")
            rows.append([0 if ch == "." else int(ch) for ch in s])
        digits = np.asarray(rows, np.int32)
    else:
        digits = check_puzzles(puzzles, name="puzzles")
    for i, d in enumerate(digits):
        for unit, name in zip(d[_UNITS], _UNIT_NAMES):
            given = unit[unit > 0]
            if len(set(given.tolist())) != len(given):
                twice = next(v for v in given if np.sum(given == v) > 1)
                raise ValueError(f"puzzle {i + 1}: digit {twice} is given twice in {name}")
    return digits


def is_valid(solutions: np.ndarray, puzzles: np.ndarray) -> np.ndarray:
    """``(B,)`` bool: each row of ``solutions`` is a valid grid (every unit holds 1..9 once) that keeps
    the non-zero digits of the matching row of ``puzzles``."""
    sol, puz = np.asarray(solutions), np.asarray(puzzles)
    units_ok = np.all(np.sort(sol[:, _UNITS], axis=-1) == np.arange(1, 10), axis=(1, 2))
    return units_ok & np.all((puz == 0) | (sol == puz), axis=1)


def best_steps(name: str) -> int:
    """The T_eval at which shipped model ``name``'s evaluation had the best SATNet-test board accuracy
    (``accuracy.id`` of its manifest, the smallest T on ties); its training T if it has none."""
    from rsa_jax.pretrained import manifest
    m = manifest(name)
    curve = (m.get("accuracy") or {}).get("id") or m.get("id_long")
    if curve and curve.get("steps"):
        acc = np.asarray(curve["board_acc"], float)
        return int(np.asarray(curve["steps"])[int(np.argmax(acc))])
    return int((m.get("training") or {}).get("t_train", 16))


@functools.lru_cache(maxsize=4)
def _load(name: str):
    from rsa_jax.pretrained import load_checkpoint
    return load_checkpoint(name)[0]


def solve(puzzles, model=DEFAULT_MODEL, steps: int | None = None, vote: int | None = None, *,
          key=None) -> Solutions:
    """Solves Sudoku puzzles with a trained looped model.

    Args:
      puzzles: see :func:`parse_puzzles` (strings or a ``(B, 81)`` array; 0 or ``.`` = blank).
      model: a shipped model's name (``rsa_jax.pretrained.names()``), a checkpoint path, or a loaded
        ``SudokuModel``.
      steps: inference steps T_eval; None: :func:`best_steps` of the shipped model (required for a
        path or a model object).
      vote: K >= 1 for energy voting over K random initial states; None: one initial state.
      key: PRNG key of the initial states (default ``PRNGKey(0)``).

    Returns:
      ``Solutions(solutions (B, 81), valid (B,), steps, vote)``.
    """
    import jax

    from rsa_jax.evaluate import predict, vote_predictions
    digits = parse_puzzles(puzzles)
    if steps is None:
        if not isinstance(model, str):
            raise ValueError("steps=None reads the best T_eval from a shipped model's manifest; pass steps= for a "
                             "model object")
        from rsa_jax.pretrained import names
        if model not in names():
            from pathlib import Path
            if not Path(model).exists():
                raise ValueError(f"{model!r} is neither a shipped model ({', '.join(names())}) nor a checkpoint file")
            raise ValueError(f"steps=None reads the best T_eval from a shipped model's manifest; give the steps "
                             f"(steps=, or --steps on the command line) for the checkpoint {model!r}")
        steps = best_steps(model)
    if int(steps) < 1 or (vote is not None and int(vote) < 1):
        raise ValueError(f"steps and vote must be >= 1; got steps={steps}, vote={vote}")
    net = _load(model) if isinstance(model, str) else model
    key = jax.random.PRNGKey(0) if key is None else key
    given = digits != 0
    if vote is None:
        out = predict(net, digits, given, key, int(steps))
    else:
        out = vote_predictions(net, digits, given, int(vote), int(steps), key)[0]
    out = np.where(given, digits, out).astype(np.int32)   # the model's readout predicts givens too
    return Solutions(out, is_valid(out, digits), int(steps), None if vote is None else int(vote))


def format_grid(grid: np.ndarray) -> str:
    """A 9 x 9 grid with box separators."""
    rows = [" ".join("".join(map(str, grid[r * 9 + c: r * 9 + c + 3])) for c in (0, 3, 6)) for r in range(9)]
    return "\n".join(rows[i] + ("\n" if i in (2, 5) else "") for i in range(9))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rsa_jax.solve", description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 if every solution is valid, 1 if some is not, 2 for a "
                                       "malformed puzzle or bad option.")
    p.add_argument("puzzles", nargs="+", metavar="PUZZLE", help="81 characters, row by row; 0 or . for a blank")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"shipped model name or checkpoint path ({DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=None, help="inference steps T (default: the best T_eval of the "
                                                            "model's evaluation, from its manifest)")
    p.add_argument("--vote", type=int, default=None, metavar="K", help="energy voting over K random initial states")
    p.add_argument("--plain", action="store_true", help="print each solution as 81 digits on one line")
    args = p.parse_args(argv)
    try:
        res = solve(args.puzzles, args.model, args.steps, args.vote)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, (grid, ok) in enumerate(zip(res.solutions, res.valid)):
        status = "valid" if ok else "NOT valid"
        if args.plain:
            print("".join(map(str, grid)), status)
        else:
            vote = f", vote K={res.vote}" if res.vote else ""
            print(f"puzzle {i + 1} (T={res.steps}{vote}): {status}\n{format_grid(grid)}\n")
    return 0 if bool(np.all(res.valid)) else 1


class _CallableModule(types.ModuleType):
    """``rsa_jax.solve`` is this module once imported; calling it calls :func:`solve`."""

    def __call__(self, *args, **kwargs) -> Solutions:
        return solve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
