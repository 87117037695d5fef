"""Sudoku puzzle generator and solver (NumPy only; no data files, no jax).

    puzzles, solutions = generate(100, range(31, 43), seed=0)   # unique solutions, (100, 81) uint8
    solve(puzzles[0])                                          # (81,) digits 1..9, or None
    count_solutions(puzzles[0], limit=2)                       # 1 for a proper puzzle

Boards are flattened row-major to 81 cells, 0 = blank. The loaders of :mod:`rsa_jax.data.sudoku`
use :func:`generate` for their stand-in puzzles when the data files are missing and re-export
``solve``, ``count_solutions`` and ``generate_puzzles`` (which returns a ``SudokuSet``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

# ----------------------------------------------------------------------------- solver
_UNITS = [[r * 9 + c for c in range(9)] for r in range(9)] + [[r * 9 + c for r in range(9)] for c in range(9)]
_UNITS += [[(br + i) * 9 + bc + j for i in range(3) for j in range(3)] for br in (0, 3, 6) for bc in (0, 3, 6)]
_CELL_UNITS = [[u for u in _UNITS if s in u] for s in range(81)]
_PEERS = [sorted(set(sum(_CELL_UNITS[s], [])) - {s}) for s in range(81)]
_ALL = 0x1FF  # candidate bitmask, bit d-1 <-> digit d


def _assign(c: list, s: int, bit: int) -> bool:
    other = c[s] & ~bit
    while other:
        b = other & -other
        if not _eliminate(c, s, b):
            return False
        other ^= b
    return True


def _eliminate(c: list, s: int, bit: int) -> bool:
    if not c[s] & bit:
        return True
    c[s] &= ~bit
    v = c[s]
    if v == 0:
        return False
    if v & (v - 1) == 0:  # naked single: remove from peers
        for p in _PEERS[s]:
            if not _eliminate(c, p, v):
                return False
    for u in _CELL_UNITS[s]:  # hidden single: the digit has one place left in the unit
        places = [t for t in u if c[t] & bit]
        if not places:
            return False
        if len(places) == 1 and c[places[0]] != bit and not _assign(c, places[0], bit):
            return False
    return True


def _init(puzzle) -> Optional[list]:
    c = [_ALL] * 81
    for s, d in enumerate(np.asarray(puzzle).reshape(81).tolist()):
        if d and not _assign(c, s, 1 << (d - 1)):
            return None
    return c


def _search(c: Optional[list], out: list, limit: int, rng=None) -> bool:
    """DFS with propagation + MRV; appends solved candidate lists to ``out``; True when ``limit`` hit."""
    if c is None:
        return False
    best, bn = -1, 10
    for s in range(81):
        n = c[s].bit_count()
        if 1 < n < bn:
            best, bn = s, n
            if n == 2:
                break
    if best < 0:
        out.append(c)
        return len(out) >= limit
    bits = [1 << k for k in range(9) if c[best] >> k & 1]
    if rng is not None:
        bits = [bits[i] for i in rng.permutation(len(bits))]
    for b in bits:
        c2 = c.copy()
        if _assign(c2, best, b) and _search(c2, out, limit, rng):
            return True
    return False


def _to_digits(c: list) -> np.ndarray:
    return np.array([v.bit_length() for v in c], dtype=np.uint8)


def solve(puzzle, rng: Optional[np.random.Generator] = None) -> Optional[np.ndarray]:
    """Solve a puzzle ((81,) or (9, 9), 0 = blank) -> (81,) uint8 solution, or None if unsolvable.

    Backtracking with constraint propagation (naked + hidden singles) and the MRV heuristic.
    With ``rng`` the branch order is randomized (used to generate random full grids).
    """
    out: list = []
    _search(_init(puzzle), out, 1, rng)
    return _to_digits(out[0]) if out else None


def count_solutions(puzzle, limit: int = 2) -> int:
    """Number of solutions of ``puzzle`` ((81,), 0 = blank), counting stops at ``limit``."""
    out: list = []
    _search(_init(puzzle), out, limit)
    return len(out)


def _has_other_solution(puzzle: np.ndarray, s: int, d: int) -> bool:
    """Does ``puzzle`` have a solution with cell ``s`` != ``d``?"""
    c = _init(puzzle)
    if c is None or not _eliminate(c, int(s), 1 << (int(d) - 1)):
        return False
    return _search(c, [], 1)


def generate(n: int, num_givens: Union[int, Sequence[int]], seed: int = 0,
             max_tries: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` puzzles with unique solutions, deterministic in ``seed``.

    Each puzzle: a random full grid (randomized solver on an empty board), then cells are removed
    in random order, skipping a removal that would make the solution non-unique, until
    ``num_givens`` remain; if the puzzle gets stuck (minimal) above that, retry with a new grid.
    Puzzle i depends only on (seed, i). Greedy removal rarely gets below ~22 givens.

    Args:
        n: number of puzzles.
        num_givens: int, or a sequence cycled over puzzles (e.g. ``range(31, 43)``).
        seed: random seed.
        max_tries: grids tried per puzzle before raising RuntimeError.

    Returns:
        ``(puzzles, solutions)``: (n, 81) uint8 arrays, puzzles with 0 = blank (the loaders'
        ``rsa_jax.data.sudoku.generate_puzzles`` wraps them in a ``SudokuSet``).
    """
    counts = [int(num_givens)] * n if np.isscalar(num_givens) else [int(k) for k in num_givens]
    puz, sol = np.zeros((n, 81), np.uint8), np.zeros((n, 81), np.uint8)
    for i in range(n):
        target = counts[i % len(counts)]
        if not 17 <= target <= 81:
            raise ValueError(f"num_givens must be in 17..81 (no unique puzzle has fewer), got {target}")
        rng = np.random.default_rng([seed, i])
        for _ in range(max_tries):
            full = solve(np.zeros(81, np.uint8), rng)
            p = full.copy()
            left = 81
            for s in rng.permutation(81):
                if left == target:
                    break
                p[s] = 0
                if _has_other_solution(p, s, full[s]):
                    p[s] = full[s]
                else:
                    left -= 1
            if left == target:
                puz[i], sol[i] = p, full
                break
        else:
            raise RuntimeError(f"could not reach {target} givens in {max_tries} tries (puzzle {i})")
    return puz, sol
