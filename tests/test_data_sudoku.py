"""Tests for rsa_jax.data.sudoku, on the Sudoku sets committed in data/sudoku (xz) and on small files of their own."""
import hashlib
import lzma
import shutil

import numpy as np
import pytest

from rsa_jax.data import sudoku as S

SIZES = {"satnet_train": 9000, "satnet_test": 1000, "rrn_valid": 18000, "rrn_test": 18000}
FILES = {"satnet.csv": 10000, "rrn_valid.csv": 18000, "rrn_test.csv": 18000}
REPO_DATA = S.Path(__file__).resolve().parents[1] / "data" / "sudoku"


@pytest.fixture(scope="module")
def real_dir():
    """The committed data: the default directory, never a folder beside the repository."""
    d = S.default_data_dir()
    assert d == REPO_DATA == S.REPO_DATA_DIR or "RSA_JAX_SUDOKU_DIR" in S.os.environ
    return REPO_DATA


@pytest.fixture(scope="module")
def small():
    """Six generated puzzles (no real data needed)."""
    return S.generate_puzzles(6, 40, seed=123)


def _lines(s):
    return ["".join(map(str, p)) + "," + "".join(map(str, q)) for p, q in zip(s.puzzles, s.solutions)]


def _write(path, lines, sums=True, digest=None):
    path.write_text("\n".join(lines) + "\n")
    if sums:
        digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
        (path.parent / "SHA256SUMS").write_text(f"{digest}  {path.name}\n")
    return path


def _independent_valid(sol):
    g = np.asarray(sol).reshape(9, 9)
    units = [g[i] for i in range(9)] + [g[:, i] for i in range(9)]
    units += [g[r:r + 3, c:c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    return all(sorted(u.tolist()) == list(range(1, 10)) for u in units)


# ----------------------------------------------------------------------------- real data
def test_committed_files_and_checksums():
    """data/sudoku holds the three sets xz-compressed with the sums of the .xz files and of the CSVs,
    no uncompressed CSV; the sums agree with the files."""
    assert sorted(p.name for p in REPO_DATA.iterdir() if p.suffix in (".csv", ".xz")) == sorted(
        f"{f}.xz" for f in FILES)
    sums = dict(reversed(line.split()) for line in (REPO_DATA / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted([*FILES, *(f"{f}.xz" for f in FILES)])
    for f, n in FILES.items():
        raw = (REPO_DATA / f"{f}.xz").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == sums[f"{f}.xz"] == S.sha256(REPO_DATA / f"{f}.xz")
        data = lzma.decompress(raw)
        assert hashlib.sha256(data).hexdigest() == sums[f] and len(data) == 164 * n
    assert "9,000" in (REPO_DATA / "README.md").read_text()


def test_committed_folder_gives_all_puzzles():
    """Loading from the committed folder (no other data anywhere): 10,000 / 18,000 / 18,000 puzzles."""
    for f, n in FILES.items():
        assert len(S.load_rrn_csv(REPO_DATA / f"{f}.xz")) == n
        assert S.load_rrn_csv(REPO_DATA / f"{f}.xz").name == f[:-4]
    got = {name: len(S.load_split(name, REPO_DATA)) for name in SIZES}
    assert got == SIZES and got["satnet_train"] + got["satnet_test"] == 10000


def test_corrupted_xz_is_refused(tmp_path):
    """A changed byte in a committed .xz: the checksum refuses it, naming the file; unverified, lzma's
    error becomes a SudokuFormatError naming the file."""
    for f in ("rrn_test.csv.xz", "SHA256SUMS"):
        shutil.copy(REPO_DATA / f, tmp_path / f)
    raw = bytearray((tmp_path / "rrn_test.csv.xz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "rrn_test.csv.xz").write_bytes(bytes(raw))
    with pytest.raises(S.SudokuChecksumError, match=r"rrn_test.csv.xz.*corrupt"):
        S.load_split("rrn_test", tmp_path)
    with pytest.raises(S.SudokuFormatError, match="rrn_test.csv.xz: not a readable xz file"):
        S.load_split("rrn_test", tmp_path, verify=False)
    # an intact .xz whose decompressed bytes are not the listed CSV's is refused too
    shutil.copy(REPO_DATA / "rrn_test.csv.xz", tmp_path / "rrn_test.csv.xz")
    sums = (tmp_path / "SHA256SUMS").read_text()
    (tmp_path / "SHA256SUMS").write_text(sums.replace(sums.split("\n")[-2].split()[0], "0" * 64))
    with pytest.raises(S.SudokuChecksumError, match=r"rrn_test.csv.xz \(decompressed\)"):
        S.load_split("rrn_test", tmp_path)


def test_plain_csv_dir_and_xz_dir(small, tmp_path):
    """A folder of plain CSVs still works; a .xz with only its CSV's sum listed is checked after decompression."""
    path = _write(tmp_path / "rrn_valid.csv", _lines(small))
    plain = S.load_split("rrn_valid", tmp_path)
    (tmp_path / "xz").mkdir()
    (tmp_path / "xz" / "rrn_valid.csv.xz").write_bytes(lzma.compress(path.read_bytes()))
    shutil.copy(tmp_path / "SHA256SUMS", tmp_path / "xz" / "SHA256SUMS")
    packed = S.load_split("rrn_valid", tmp_path / "xz")
    np.testing.assert_array_equal(plain.puzzles, packed.puzzles)


@pytest.mark.parametrize("name", list(SIZES))
def test_real_split(real_dir, name):
    s = S.load_split(name)
    assert len(s) == SIZES[name] and s.puzzles.shape == (SIZES[name], 81) == s.solutions.shape
    g = s.num_givens
    lo, hi = (31, 42) if name.startswith("satnet") else (17, 34)
    assert lo <= g.min() and g.max() <= hi
    if name.startswith("rrn"):
        assert g.min() == 17 and g.max() == 34
        assert np.all(np.bincount(g)[17:35] == 1000)
    idx = np.random.default_rng(0).choice(len(s), 200, replace=False)
    for p, q in zip(s.puzzles[idx], s.solutions[idx]):
        assert _independent_valid(q) and S.is_valid_solution(q)
        assert np.all((p == 0) | (p == q))
    assert S.is_valid_solution(s.solutions).all()
    assert len(S.load_split(name, limit=7)) == 7


def test_satnet_split_is_ordered(real_dir):
    full = S.load_rrn_csv(real_dir / "satnet.csv.xz")
    tr, te = S.load_split("satnet_train"), S.load_split("satnet_test")
    np.testing.assert_array_equal(full.puzzles[:9000], tr.puzzles)
    np.testing.assert_array_equal(full.solutions[9000:], te.solutions)


def test_solver_real_rrn(real_dir):
    s = S.load_split("rrn_test", limit=20)
    for p, q in zip(s.puzzles, s.solutions):
        np.testing.assert_array_equal(S.solve(p), q)


def test_count_solutions_breaks_uniqueness(real_dir):
    s = S.load_split("rrn_test")
    i = int(np.argmax(s.num_givens == 17))  # 17-clue puzzles are minimal
    p = s.puzzles[i].copy()
    assert S.count_solutions(p) == 1
    p[np.flatnonzero(p)[0]] = 0
    assert S.count_solutions(p) == 2
    assert S.count_solutions(p, limit=5) >= 2


def test_satnet_numpy_roundtrip(real_dir, tmp_path):
    s = S.load_split("satnet_test", limit=5)
    eye = np.eye(10, dtype=np.float32)[:, 1:]  # digit 0 -> all-zero row
    feats = eye[s.puzzles].reshape(5, 9, 9, 9)
    labels = eye[s.solutions].reshape(5, 9, 9, 9)
    np.save(tmp_path / "features.npy", feats)
    np.savez(tmp_path / "labels.npz", labels=labels)
    got = S.load_satnet_numpy(tmp_path / "features.npy", tmp_path / "labels.npz")
    np.testing.assert_array_equal(got.puzzles, s.puzzles)
    np.testing.assert_array_equal(got.solutions, s.solutions)
    labels[2, 0, 0] = 0  # a blank label is an error
    np.save(tmp_path / "bad.npy", labels)
    with pytest.raises(S.SudokuFormatError, match="bad.npy: row 3"):
        S.load_satnet_numpy(tmp_path / "features.npy", tmp_path / "bad.npy")


# ----------------------------------------------------------------------------- files, errors
def test_rrn_csv_dots_and_header(small, tmp_path):
    lines = [ln.replace("0", ".", 81) if i % 2 else ln for i, ln in enumerate(_lines(small))]
    assert "." in lines[1][:81] and "." not in lines[1][82:]
    p = tmp_path / "valid.csv"
    p.write_text("quizzes,solutions\r\n" + "\r\n".join(lines))  # header, CRLF, no final newline
    got = S.load_rrn_csv(p)
    np.testing.assert_array_equal(got.puzzles, small.puzzles)
    np.testing.assert_array_equal(got.solutions, small.solutions)
    assert got.name == "valid"


def test_checksum(small, tmp_path):
    path = _write(tmp_path / "rrn_test.csv", _lines(small))
    assert len(S.load_split("rrn_test", data_dir=tmp_path)) == len(small)
    _write(path, _lines(small), digest="0" * 64)
    with pytest.raises(S.SudokuChecksumError, match="rrn_test.csv"):
        S.load_split("rrn_test", data_dir=tmp_path)
    assert len(S.load_split("rrn_test", data_dir=tmp_path, verify=False)) == len(small)


def test_checksum_cached(small, tmp_path, monkeypatch):
    _write(tmp_path / "rrn_valid.csv", _lines(small))
    S.load_split("rrn_valid", data_dir=tmp_path)
    monkeypatch.setattr(S, "sha256", lambda p: pytest.fail("re-hashed"))
    S.load_split("rrn_valid", data_dir=tmp_path)


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        S.load_split("satnet_train", data_dir=tmp_path / "nope")
    msg = str(e.value)
    for needle in ("RSA_JAX_SUDOKU_DIR", "--data-dir", "satnet.csv", "rrn_valid.csv", "rrn_test.csv",
                   "sudoku.zip", "features.pt", "sudoku-hard.zip", "generate_puzzles", str(tmp_path / "nope"),
                   "git checkout data/sudoku", "--data-dir synthetic"):
        assert needle in msg
    with pytest.raises(FileNotFoundError, match=r"rrn_valid.csv \(or rrn_valid.csv.xz\) is missing"):
        S.load_split("rrn_valid", data_dir=tmp_path)
    with pytest.raises(KeyError):
        S.load_split("bogus", data_dir=tmp_path)


def _corrupt(kind, line):
    p, q = list(line[:81]), list(line[82:])
    if kind == "length":
        return line[:-1]
    if kind == "nondigit":
        p[5] = "x"
    elif kind == "zero_in_solution":
        q[10] = "0"
    elif kind == "invalid_grid":
        q[0], q[1] = q[1], q[0]
        p[0] = p[1] = "0"  # keep givens consistent so only the grid is wrong
    elif kind == "given_mismatch":
        i = next(i for i, c in enumerate(p) if c != "0")
        p[i] = str(int(p[i]) % 9 + 1)
    return "".join(p) + "," + "".join(q)


@pytest.mark.parametrize("kind,needle", [
    ("length", "163"), ("nondigit", "non-digit"), ("zero_in_solution", "solution has a non-digit or 0"),
    ("invalid_grid", "not a valid grid"), ("given_mismatch", "disagrees"),
])
@pytest.mark.parametrize("bad_line", [1, 4])
def test_malformed_lines(small, tmp_path, kind, needle, bad_line):
    lines = _lines(small)
    lines[bad_line - 1] = _corrupt(kind, lines[bad_line - 1])
    path = _write(tmp_path / "satnet.csv", lines, sums=False)
    with pytest.raises(S.SudokuFormatError, match=needle) as e:
        S.load_split("satnet_test", data_dir=tmp_path, verify=False)
    assert str(path) in str(e.value) and f"line {bad_line}:" in str(e.value)
    # with a header line the reported line number shifts by one
    (tmp_path / "h.csv").write_text("quizzes,solutions\n" + "\n".join(lines) + "\n")
    with pytest.raises(S.SudokuFormatError, match=f"h.csv: line {bad_line + 1}: "):
        S.load_rrn_csv(tmp_path / "h.csv")


def test_env_var_override(small, tmp_path, monkeypatch):
    monkeypatch.setenv("RSA_JAX_SUDOKU_DIR", str(tmp_path))
    assert S.default_data_dir() == tmp_path
    assert S.default_data_dir("/x/y") == S.default_data_dir(S.Path("/x/y"))
    assert str(S.default_data_dir("/x/y")) == "/x/y"
    _write(tmp_path / "rrn_test.csv", _lines(small))
    s = S.load_split("rrn_test")
    np.testing.assert_array_equal(s.puzzles, small.puzzles)
    monkeypatch.delenv("RSA_JAX_SUDOKU_DIR")
    assert S.default_data_dir() == REPO_DATA


# ----------------------------------------------------------------------------- solver, generator
def test_solver_and_count_without_data(small):
    for p, q in zip(small.puzzles, small.solutions):
        np.testing.assert_array_equal(S.solve(p.reshape(9, 9)), q)
    assert S.count_solutions(np.zeros(81, np.uint8)) == 2
    bad = np.zeros(81, np.uint8)
    bad[0:2] = 5  # two equal digits in a row: contradiction
    assert S.solve(bad) is None and S.count_solutions(bad) == 0


def test_generator(small):
    assert np.all(small.num_givens == 40)
    assert all(S.count_solutions(p) == 1 for p in small.puzzles)
    assert S.is_valid_solution(small.solutions).all()
    assert np.all((small.puzzles == 0) | (small.puzzles == small.solutions))
    again = S.generate_puzzles(3, 40, seed=123)
    np.testing.assert_array_equal(again.puzzles, small.puzzles[:3])
    other = S.generate_puzzles(3, 40, seed=7)
    assert not np.array_equal(other.puzzles, again.puzzles)
    mixed = S.generate_puzzles(3, [36, 38], seed=1)
    assert mixed.num_givens.tolist() == [36, 38, 36]


def test_load_or_generate(tmp_path, monkeypatch):
    """Generated stand-ins only when asked for ("synthetic"), loudly; a missing file is an error."""
    with pytest.warns(UserWarning, match="SYNTHETIC SUDOKU DATA.*NOT the benchmark"):
        s = S.load_or_generate("rrn_test", data_dir="synthetic", n_fallback=2, num_givens=40, seed=3)
    assert len(s) == 2 and np.all(s.num_givens == 40) and s.name == "synthetic_rrn_test"
    with pytest.raises(FileNotFoundError, match="rrn_test.csv"):
        S.load_or_generate("rrn_test", data_dir=tmp_path / "none", n_fallback=2)
    monkeypatch.setenv("RSA_JAX_SUDOKU_DIR", "synthetic")
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        assert S.load_or_generate("satnet_test", n_fallback=1, num_givens=41).name == "synthetic_satnet_test"
    monkeypatch.delenv("RSA_JAX_SUDOKU_DIR")
    real = S.load_or_generate("satnet_test", limit=3)      # the default: the committed data, no warning
    assert real.name == "satnet_test" and len(real) == 3


# ----------------------------------------------------------------------------- model-facing
def test_model_inputs_and_metrics(small):
    d = S.to_model_inputs(small)
    assert d["digits"].dtype == np.int32 and d["target"].dtype == np.int32 and d["given"].dtype == bool
    assert d["target"].min() >= 0 and d["target"].max() <= 8
    np.testing.assert_array_equal(d["given"], small.puzzles > 0)
    pred = small.solutions.copy()
    assert S.board_accuracy(pred, small) == 1.0 and S.cell_accuracy(pred, small) == 1.0
    i = np.flatnonzero(small.puzzles[0] == 0)[0]
    pred[0, i] = pred[0, i] % 9 + 1
    pred[1, np.flatnonzero(small.puzzles[1])[0]] = 0  # wrong given cells are not counted
    assert S.board_accuracy(pred, small) == pytest.approx(5 / 6)
    assert S.cell_accuracy(pred, small) == pytest.approx(1 - 1 / (6 * 41))
    assert S.is_valid_solution(small.solutions[0].reshape(9, 9)) is True
    assert S.is_valid_solution(small.puzzles[0]) is False


def test_batch_iterator():
    n = 23
    puz = np.zeros((n, 81), np.uint8)
    puz[:, 0], puz[:, 1] = np.arange(n) % 10, np.arange(n) // 10
    s = S.SudokuSet(puz, np.ones((n, 81), np.uint8), "ids")
    ids = lambda b: (b["digits"][:, 0] + 10 * b["digits"][:, 1]).tolist()
    run = lambda **kw: [ids(b) for b in S.batch_iterator(s, 5, **kw)]
    a = run(seed=0, epoch=0)
    assert a == run(seed=0, epoch=0) and len(a) == 4 and all(len(b) == 5 for b in a)
    assert len(set(sum(a, []))) == 20
    full = run(seed=0, epoch=0, drop_last=False)
    assert sorted(sum(full, [])) == list(range(n)) and full[:4] == a
    assert run(seed=0, epoch=1) != a and run(seed=1, epoch=0) != a
    assert len(s.subset(np.arange(3))) == 3


def test_augment_keeps_puzzles_valid_and_is_deterministic():
    s = S.generate_puzzles(12, 30, seed=3)
    a = S.augment(s, np.random.default_rng(0))
    assert S.is_valid_solution(a.solutions.reshape(-1, 9, 9)).all()
    given = a.puzzles != 0
    assert np.array_equal(a.puzzles[given], a.solutions[given])                  # givens agree with the solution
    assert np.array_equal(a.num_givens, s.num_givens)
    assert not np.array_equal(a.solutions, s.solutions)
    assert np.array_equal(S.augment(s, np.random.default_rng(0)).puzzles, a.puzzles)
    # a relabelling permutes the digits: the sorted digit counts of every puzzle are unchanged
    counts = lambda g: np.sort(np.stack([np.bincount(r, minlength=10)[1:] for r in g]), axis=1)
    np.testing.assert_array_equal(counts(a.puzzles), counts(s.puzzles))
    # batches: same (seed, epoch) -> same augmented stream; augmentation off -> the plain puzzles
    batches = lambda **kw: [b["digits"] for b in S.batch_iterator(s, 4, seed=1, epoch=2, **kw)]
    on, off = batches(augment_data=True), batches()
    assert all(np.array_equal(x, y) for x, y in zip(on, batches(augment_data=True)))
    assert not any(np.array_equal(x, y) for x, y in zip(on, off))
    assert [sorted((x != 0).sum(1)) for x in on] == [sorted((x != 0).sum(1)) for x in off]
