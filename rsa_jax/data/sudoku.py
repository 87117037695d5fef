"""Sudoku data: loaders for the SATNet / RRN sets, checksums, batches and metrics.

The puzzle generator and solver live in :mod:`rsa_jax.data.sudoku_generator`; ``solve``,
``count_solutions`` and ``generate_puzzles`` (a ``SudokuSet`` of generated puzzles) are here too.

Boards are flattened row-major to 81 cells. Puzzles hold digits 0..9 with 0 = blank,
solutions hold digits 1..9. NumPy only (no jax, no torch).

Files in the data directory (see :func:`default_data_dir`; the repository ships them xz-compressed in
``data/sudoku/``), each line ``<81-char puzzle>,<81-char solution>``; each may be a plain ``.csv`` or a
``.csv.xz`` (read through the standard library's ``lzma``):

* ``satnet.csv``    10,000 SATNet puzzles (31-42 givens); first 9,000 train, last 1,000 test.
* ``rrn_valid.csv`` 18,000 RRN "sudoku-hard" validation puzzles (17-34 givens).
* ``rrn_test.csv``  18,000 RRN "sudoku-hard" test puzzles (17-34 givens).
* ``SHA256SUMS``    checksums (``sha256sum`` format) of the files as stored and, for ``.xz`` files, of the
  decompressed CSVs too; verified by :func:`load_split`.

Generated stand-in puzzles are used only when asked for: ``data_dir="synthetic"`` (``--data-dir synthetic``,
``RSA_JAX_SUDOKU_DIR=synthetic``) in :func:`load_or_generate`, with a loud warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import lzma
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from rsa_jax.data.sudoku_generator import count_solutions, generate, solve  # noqa: F401  (re-exported)

ENV_VAR = "RSA_JAX_SUDOKU_DIR"
#: the Sudoku sets committed with the repository (xz-compressed, data/sudoku/README.md)
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "sudoku"
#: the data directory that asks :func:`load_or_generate` for generated stand-in puzzles
SYNTHETIC = "synthetic"
#: split name -> (file name, row slice)
SPLITS = {
    "satnet_train": ("satnet.csv", slice(0, 9000)),
    "satnet_test": ("satnet.csv", slice(9000, None)),
    "rrn_valid": ("rrn_valid.csv", slice(None)),
    "rrn_test": ("rrn_test.csv", slice(None)),
}
_LINE = 164  # 81 + ',' + 81 + '\n'
_VERIFIED: dict = {}  # (path, mtime_ns, size) -> True, so repeated loads skip hashing


class SudokuFormatError(ValueError):
    """A malformed line / row in a Sudoku file (message names file and 1-based line)."""


class SudokuChecksumError(ValueError):
    """A data file whose SHA256 does not match ``SHA256SUMS``."""


def default_data_dir(data_dir: Union[str, os.PathLike, None] = None) -> Path:
    """Resolve the data dir: explicit arg > ``$RSA_JAX_SUDOKU_DIR`` > the repository's ``data/sudoku``."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return REPO_DATA_DIR


@dataclasses.dataclass(frozen=True)
class SudokuSet:
    """A set of puzzles with their solutions.

    Attributes:
        puzzles: (n, 81) uint8, digits 0..9 with 0 = blank.
        solutions: (n, 81) uint8, digits 1..9.
        name: label used in messages.
    """

    puzzles: np.ndarray
    solutions: np.ndarray
    name: str = ""

    @property
    def givens(self) -> np.ndarray:
        """(n, 81) bool, True where the puzzle gives the digit."""
        return self.puzzles != 0

    @property
    def num_givens(self) -> np.ndarray:
        """(n,) int, number of givens per puzzle."""
        return self.givens.sum(axis=1)

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])

    def subset(self, idx) -> "SudokuSet":
        """Rows ``idx`` (slice, int array or bool mask) as a new set."""
        return SudokuSet(self.puzzles[idx], self.solutions[idx], self.name)


# ----------------------------------------------------------------------------- validation
def _grids_ok(sol: np.ndarray) -> np.ndarray:
    """(n, 81) digits -> (n,) bool: every row/col/box is a permutation of 1..9."""
    g = np.asarray(sol, dtype=np.int64).reshape(-1, 9, 9)
    if g.size and (g.min() < 1 or g.max() > 9):
        return np.all((g >= 1) & (g <= 9), axis=(1, 2)) & _grids_ok(np.clip(g, 1, 9))
    bits = np.left_shift(1, g)
    boxes = bits.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 9)
    full = 0b1111111110
    return np.all(
        (np.bitwise_or.reduce(bits, axis=2) == full)
        & (np.bitwise_or.reduce(bits, axis=1) == full)
        & (np.bitwise_or.reduce(boxes, axis=2) == full),
        axis=1,
    )


def is_valid_solution(grid) -> Union[bool, np.ndarray]:
    """True if ``grid`` ((81,) or (9, 9); or (n, 81) -> (n,) bool) is a complete valid Sudoku."""
    g = np.asarray(grid)
    ok = _grids_ok(g.reshape(-1, 81))
    return bool(ok[0]) if g.shape in ((81,), (9, 9)) else ok


def _check(puz, sol, where, line_no, unit="line") -> None:
    """Raise SudokuFormatError at the first bad row; ``line_no[i]`` labels row i."""
    checks = [
        (np.any(puz > 9, axis=1), "puzzle has a non-digit character"),
        (np.any((sol < 1) | (sol > 9), axis=1), "solution has a non-digit or 0 (blank) cell"),
        (~_grids_ok(np.clip(sol, 1, 9)),
         "solution is not a valid grid (a row/column/box is not a permutation of 1..9)"),
        (np.any((puz != 0) & (puz != sol), axis=1), "a given disagrees with the solution"),
    ]
    bad = [(int(np.argmax(m)), k, msg) for k, (m, msg) in enumerate(checks) if m.any()]
    if bad:
        i, _, msg = min(bad)  # first bad row; the earliest (most specific) check for it
        raise SudokuFormatError(f"{where}: {unit} {int(line_no[i])}: {msg}")


def _parse_bytes(data: bytes, where: str):
    """Parse ``<puzzle>,<solution>`` lines ('0' or '.' = blank; optional header) -> uint8 arrays."""
    offset = 0
    if data[:1] and data[:1] not in b"0123456789.":  # header line such as "quizzes,solutions"
        nl = data.find(b"\n")
        data, offset = (data[nl + 1 :] if nl >= 0 else b""), 1
    if data and not data.endswith(b"\n"):
        data += b"\n"
    a = np.frombuffer(data, dtype=np.uint8)
    if len(a) % _LINE == 0 and np.all(a[_LINE - 1 :: _LINE] == 10) and np.all(a[81::_LINE] == 44):
        rows = a.reshape(-1, _LINE)
        line_no = np.arange(len(rows)) + 1 + offset
    else:  # slow path: find the offending line, tolerate CRLF and blank lines
        keep, line_no = [], []
        for k, raw in enumerate(data.split(b"\n"), start=1 + offset):
            line = raw.rstrip(b"\r")
            if not line.strip():
                continue
            if len(line) != 163 or line[81:82] != b",":
                raise SudokuFormatError(
                    f"{where}: line {k}: expected '<81 chars>,<81 chars>' (163 chars), got {len(line)} chars"
                )
            keep.append(line + b"\n")
            line_no.append(k)
        rows = np.frombuffer(b"".join(keep), dtype=np.uint8).reshape(-1, _LINE)
        line_no = np.asarray(line_no)
    puz = rows[:, :81].copy()
    puz[puz == ord(".")] = ord("0")
    puz, sol = puz - 48, rows[:, 82:163] - 48  # uint8 wrap: non-digits become > 9
    _check(puz, sol, where, line_no)
    return puz, sol


def sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decompress(raw: bytes, path: Path) -> bytes:
    try:
        return lzma.decompress(raw)
    except lzma.LZMAError as e:
        raise SudokuFormatError(f"{path}: not a readable xz file ({e}); the file is corrupt or truncated "
                                f"(in the repository: `git checkout -- data/sudoku/{path.name}` restores it)") from e


def _read(path: Path, verify: bool) -> bytes:
    """The CSV bytes of ``path`` (a ``.xz`` decompressed), checked against ``SHA256SUMS`` beside it when
    ``verify``: the file as stored, then (for ``.xz``) the decompressed bytes, where listed. Cached per
    path + mtime + size."""
    xz = path.suffix == ".xz"
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if not verify or key in _VERIFIED:
        return _decompress(path.read_bytes(), path) if xz else path.read_bytes()
    sums_path = path.parent / "SHA256SUMS"
    if not sums_path.exists():
        warnings.warn(f"{sums_path} not found; {path.name} not verified (pass verify=False to silence)")
        return _decompress(path.read_bytes(), path) if xz else path.read_bytes()
    sums = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, fname = line.split(None, 1)
            sums[fname.strip().lstrip("*")] = digest.lower()
    csv_name = path.name[:-3] if xz else path.name
    if path.name not in sums and csv_name not in sums:
        warnings.warn(f"{path.name} is not listed in {sums_path}; not verified")
        return _decompress(path.read_bytes(), path) if xz else path.read_bytes()

    def check(name, got, what):
        if name in sums and got != sums[name]:
            raise SudokuChecksumError(
                f"checksum mismatch for {what}: SHA256 {got}, expected {sums[name]} (from {sums_path}). "
                "The file is corrupt or not the expected version; refusing to read it.")

    check(path.name, sha256(path), path)
    data = path.read_bytes()
    if xz:
        data = _decompress(data, path)
        check(csv_name, hashlib.sha256(data).hexdigest(), f"{path} (decompressed)")
    _VERIFIED[key] = True
    return data


def _missing_message(data_dir: Path, what: str) -> str:
    return "\n".join([
        f"Sudoku data not found: {what}",
        f"  looked in: {data_dir}",
        f"  the repository ships the three sets xz-compressed in {REPO_DATA_DIR} (the default; a checkout",
        "  that lacks them: `git checkout data/sudoku`); another directory: the env var",
        f"  {ENV_VAR}=/path/to/sudoku or the --data-dir flag.",
        "  expected files: satnet.csv (10,000 lines), rrn_valid.csv, rrn_test.csv (18,000 lines each), each",
        "  plain or .csv.xz, and SHA256SUMS; each line '<81-char puzzle, 0=blank>,<81-char solution>'.",
        "  originals: SATNet's sudoku.zip (features.pt / labels.pt one-hot tensors; export to .npy and",
        "  read with load_satnet_numpy) and RRN's sudoku-hard.zip (train/valid/test.csv; load_rrn_csv).",
        f"  generated stand-ins (not the benchmark): --data-dir {SYNTHETIC} (load_or_generate) or generate_puzzles.",
    ])


def load_split(name: str, data_dir=None, verify: bool = True, limit: Optional[int] = None) -> SudokuSet:
    """Load a split: ``satnet_train`` (9,000), ``satnet_test`` (1,000), ``rrn_valid``, ``rrn_test`` (18,000).

    Args:
        name: split name, a key of ``SPLITS``.
        data_dir: directory with the CSVs, plain or ``.csv.xz`` (a plain one is read first; default:
            :func:`default_data_dir`, the repository's ``data/sudoku``).
        verify: check SHA256 against ``SHA256SUMS`` (cached per path + mtime).
        limit: keep only the first ``limit`` rows of the split.

    Returns:
        SudokuSet with (n, 81) uint8 puzzles and solutions.

    Raises:
        FileNotFoundError: data dir or file missing. SudokuFormatError: malformed line, unreadable xz.
        SudokuChecksumError: checksum mismatch.
    """
    if name not in SPLITS:
        raise KeyError(f"unknown Sudoku split {name!r}; choose from {sorted(SPLITS)}")
    fname, rows = SPLITS[name]
    d = default_data_dir(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(_missing_message(d, f"directory {d} does not exist"))
    path = next((p for p in (d / fname, d / f"{fname}.xz") if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(_missing_message(d, f"file {fname} (or {fname}.xz) is missing"))
    puz, sol = _parse_bytes(_read(path, verify), str(path))
    s = SudokuSet(puz[rows], sol[rows], name)
    return s.subset(slice(0, limit)) if limit is not None else s


def load_rrn_csv(path, name: Optional[str] = None) -> SudokuSet:
    """Load an RRN ``sudoku-hard`` CSV (``train/valid/test.csv`` from ``sudoku-hard.zip``).

    Lines are ``<81-char puzzle>,<81-char solution>``; blanks may be ``0`` or ``.``; a header line
    (e.g. ``quizzes,solutions``) is skipped if present. A ``.xz`` file is decompressed (not verified).
    """
    path = Path(path)
    stem = Path(path.stem).stem if path.suffix == ".xz" else path.stem
    return SudokuSet(*_parse_bytes(_read(path, verify=False), str(path)), name or stem)


def _load_array(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if isinstance(arr, np.lib.npyio.NpzFile):
        with arr:
            return arr[arr.files[0]]
    return arr


def load_satnet_numpy(features_path, labels_path, name: str = "satnet") -> SudokuSet:
    """Load NumPy exports of SATNet's ``sudoku.zip`` one-hot tensors.

    Export once with torch (``.npz`` also works; its first array is used)::

        np.save('features.npy', torch.load('features.pt').numpy())
        np.save('labels.npy', torch.load('labels.pt').numpy())

    Args:
        features_path: (n, 9, 9, 9) one-hot over the last axis (digit d -> index d-1);
            an all-zero one-hot row is a blank.
        labels_path: (n, 9, 9, 9) one-hot solutions.

    Returns:
        SudokuSet with (n, 81) puzzles (0 = blank) and solutions (1..9).
    """
    out = []
    for p, blank_ok in ((Path(features_path), True), (Path(labels_path), False)):
        a = _load_array(p)
        if a.ndim < 2 or a.size != a.shape[0] * 729:
            raise SudokuFormatError(f"{p}: expected shape (n, 9, 9, 9), got {a.shape}")
        a = a.reshape(a.shape[0], 81, 9)
        tot = a.sum(-1)
        bad = ~np.all(((a == 0) | (a == 1)), axis=-1) | (tot > 1) | (tot < (0 if blank_ok else 1))
        if bad.any():
            i, c = np.argwhere(bad)[0]
            raise SudokuFormatError(f"{p}: row {i + 1} (1-based), cell {c}: not a one-hot digit")
        out.append(np.where(tot > 0, a.argmax(-1) + 1, 0).astype(np.uint8))
    if out[0].shape != out[1].shape:
        raise SudokuFormatError(f"{features_path} and {labels_path}: shapes differ {out[0].shape} vs {out[1].shape}")
    _check(out[0], out[1], f"{features_path} / {labels_path}", np.arange(len(out[0])) + 1, unit="row")
    return SudokuSet(out[0], out[1], name)


# ----------------------------------------------------------------------------- generator
def generate_puzzles(n: int, num_givens: Union[int, Sequence[int]], seed: int = 0,
                     max_tries: int = 50) -> SudokuSet:
    """:func:`rsa_jax.data.sudoku_generator.generate` (unique solutions, puzzle ``i`` depends only on
    ``(seed, i)``, ``num_givens`` an int or a sequence cycled over puzzles) as a ``SudokuSet`` named
    ``synthetic``."""
    return SudokuSet(*generate(n, num_givens, seed, max_tries), "synthetic")


def load_or_generate(name: str, data_dir=None, n_fallback: int = 200, num_givens=None, seed: int = 0,
                     warn: bool = True, **kwargs) -> SudokuSet:
    """Split ``name`` from the data directory, or, only where that directory is ``"synthetic"``
    (:data:`SYNTHETIC`: ``--data-dir synthetic`` or ``RSA_JAX_SUDOKU_DIR=synthetic``), ``n_fallback``
    generated stand-in puzzles, with a loud warning (``warn=False`` silences it).

    Missing files are an error (:func:`load_split`'s ``FileNotFoundError``), never a silent switch to
    generated puzzles: numbers on stand-ins are not the benchmark's. Default stand-in givens: 31-42
    (cycled) for ``satnet_*``; for ``rrn_*`` 24-34 cycled (17-34 is the real range, but greedy removal
    cannot reach below ~22 givens in reasonable time). ``kwargs`` go to :func:`load_split` (``verify``,
    ``limit``).
    """
    if str(default_data_dir(data_dir)) != SYNTHETIC:
        return load_split(name, data_dir, **kwargs)
    if num_givens is None:
        num_givens = range(31, 43) if name.startswith("satnet") else range(24, 35)
    if warn:
        warnings.warn(f"SYNTHETIC SUDOKU DATA: {n_fallback} puzzles from the built-in generator stand in for "
                      f"{name!r} (data directory {SYNTHETIC!r}); the numbers are NOT the benchmark's "
                      f"(the real sets: the repository's data/sudoku, or {ENV_VAR} / --data-dir)", stacklevel=2)
    s = generate_puzzles(n_fallback, num_givens, seed)
    return SudokuSet(s.puzzles, s.solutions, f"synthetic_{name}")


# ----------------------------------------------------------------------------- model-facing
def to_model_inputs(s: SudokuSet) -> dict:
    """-> ``digits`` (n, 81) int32 (0 = blank), ``given`` (n, 81) bool, ``target`` (n, 81) int32 in 0..8."""
    return {
        "digits": s.puzzles.astype(np.int32),
        "given": s.givens,
        "target": s.solutions.astype(np.int32) - 1,
    }


def augment(s: SudokuSet, rng: np.random.Generator) -> SudokuSet:
    """Each puzzle under an independent random validity-preserving symmetry of Sudoku.

    The symmetry is a relabelling of the digits 1..9, a permutation of the three bands and of the rows
    inside each band, the same for stacks and columns, and a transposition with probability 1/2; a
    valid puzzle/solution pair stays valid and keeps its number of givens. (Not in the paper: its
    models train on the SATNet puzzles as they are.)

    Args:
      s: the puzzles.
      rng: NumPy generator (fixes the draw).

    Returns:
      The transformed set, same order and size.
    """
    n = len(s)

    def lines():   # (n, 9) new -> old row (or column) order: bands permuted, rows permuted within bands
        bands = np.argsort(rng.random((n, 3)), axis=1)
        inner = np.argsort(rng.random((n, 3, 3)), axis=2)
        return (3 * bands[:, :, None] + inner).reshape(n, 9)

    rows, cols = lines(), lines()
    idx = rows[:, :, None] * 9 + cols[:, None, :]                       # (n, 9, 9) old cell of each new cell
    idx = np.where(rng.random(n)[:, None, None] < 0.5, idx, idx.transpose(0, 2, 1)).reshape(n, 81)
    relabel = np.concatenate([np.zeros((n, 1), np.int64), 1 + np.argsort(rng.random((n, 9)), axis=1)], axis=1)

    def move(grid):
        moved = np.take_along_axis(np.asarray(grid, np.int64), idx, axis=1)
        return np.take_along_axis(relabel, moved, axis=1).astype(grid.dtype)

    return SudokuSet(move(s.puzzles), move(s.solutions), s.name)


def batch_iterator(s: SudokuSet, batch_size: int, seed: int = 0, epoch: int = 0,
                   drop_last: bool = True, augment_data: bool = False) -> Iterator[dict]:
    """Yield :func:`to_model_inputs` dicts of ``batch_size`` rows in a permutation fixed by (seed, epoch).

    With ``augment_data`` every batch passes through :func:`augment` with a generator fixed by
    ``(seed, epoch, batch index)``, so the stream stays a function of ``(seed, epoch)`` (exact resume).
    """
    perm = np.random.default_rng([seed, epoch]).permutation(len(s))
    stop = len(s) - len(s) % batch_size if drop_last else len(s)
    for i, lo in enumerate(range(0, stop, batch_size)):
        batch = s.subset(perm[lo : lo + batch_size])
        if augment_data:
            batch = augment(batch, np.random.default_rng([seed, epoch, i, 1]))
        yield to_model_inputs(batch)


def _correct_blank(pred, s: SudokuSet):
    pred = np.asarray(pred).reshape(len(s), 81)
    blank = ~s.givens
    return (pred == s.solutions) & blank, blank


def board_accuracy(pred_digits, s: SudokuSet) -> float:
    """Fraction of boards whose blank cells are all right; ``pred_digits`` (n, 81) digits 1..9."""
    ok, blank = _correct_blank(pred_digits, s)
    return float(np.mean(np.all(ok | ~blank, axis=1)))


def cell_accuracy(pred, s: SudokuSet) -> float:
    """Fraction of blank cells right (over the whole set); ``pred`` (n, 81) digits 1..9."""
    ok, blank = _correct_blank(pred, s)
    return float(ok.sum() / max(int(blank.sum()), 1))
