"""rsa_jax.solve (function and command) with the shipped ItrSA model, and the clear input errors of issue 33."""

import json
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rsa_jax
from rsa_jax import pretrained
from rsa_jax.data.sudoku import SudokuSet
from rsa_jax.data.sudoku_generator import count_solutions, generate
from rsa_jax.data.sudoku_generator import solve as reference_solve
from rsa_jax.evaluate import evaluate_boards, predict
from rsa_jax.solve import best_steps, is_valid, main, parse_puzzles

MODEL = "sudoku-itrsa-cpu"
EASY = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
EASY_SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


@pytest.fixture(scope="module")
def model():
    return pretrained.load(MODEL)[0]


def test_parse_accepts_strings_and_arrays_and_refuses_malformed():
    a = parse_puzzles(EASY)
    assert a.shape == (1, 81) and a.dtype == np.int32 and a[0, 0] == 5 and a[0, 2] == 0
    np.testing.assert_array_equal(parse_puzzles([EASY.replace(".", "0"), " ".join(EASY)]), np.repeat(a, 2, 0))
    np.testing.assert_array_equal(parse_puzzles(a), a)
    with pytest.raises(ValueError, match="puzzle 1 has 80 cells; expected 81"):
        parse_puzzles(EASY[:-1])
    with pytest.raises(ValueError, match="puzzle 2: character 'x' at position 3"):
        parse_puzzles([EASY, EASY[:2] + "x" + EASY[3:]])
    with pytest.raises(ValueError, match="puzzle 1: digit 5 is given twice in row 1"):
        parse_puzzles(EASY[:2] + "5" + EASY[3:])
    for cells, where in (([0, 27], "column 1"), ([0, 10], "box 1"), ([80, 60], "box 9")):
        grid = np.zeros((2, 81), np.int32)
        grid[1, cells] = 7      # only this unit holds both
        with pytest.raises(ValueError, match=f"puzzle 2: digit 7 is given twice in {where}"):
            parse_puzzles(grid)
    with pytest.raises(ValueError, match=r"puzzles must hold digits 0..9.*\[10, 10\]"):
        parse_puzzles(np.full((1, 81), 10))
    with pytest.raises(ValueError, match=r"puzzles must be \(B, 81\)"):
        parse_puzzles(np.zeros(81, np.int32))


def test_is_valid_against_the_reference_solver():
    puzzle = parse_puzzles(EASY)
    ref = reference_solve(puzzle[0]).astype(np.int32)
    assert "".join(map(str, ref)) == EASY_SOLUTION
    assert is_valid(ref[None], puzzle).tolist() == [True]
    swapped = ref.copy()
    swapped[[2, 3]] = swapped[[3, 2]]          # two blanks swapped: the row still holds 1..9, columns do not
    moved = ref.copy()
    moved[0] = ref[1]                           # a given overwritten
    assert is_valid(np.stack([swapped, moved, np.roll(ref, 9)]), np.repeat(puzzle, 3, 0)).tolist() == [
        False, False, False]
    assert is_valid(np.roll(ref, 27)[None], np.zeros((1, 81), np.int32)).tolist() == [True]  # bands rotated: valid


def test_best_steps_is_the_manifests_best_id_t():
    acc = json.loads((pretrained.path(MODEL) / "manifest.json").read_text())["accuracy"]["id"]
    want = acc["steps"][int(np.argmax(acc["board_acc"]))]
    assert best_steps(MODEL) == want == 32      # ItrSA: 96.2% at T = 32 vs 94.9% at T = 16


def test_solve_function(model):
    gen_puzzle, gen_solution = (a[0].astype(np.int32) for a in generate(1, 36, seed=3))
    second = "".join(map(str, gen_puzzle))
    res = rsa_jax.solve([EASY, second])
    assert callable(rsa_jax.solve) and res.steps == 32 and res.vote is None
    assert res.solutions.shape == (2, 81) and res.valid[0]
    assert "".join(map(str, res.solutions[0])) == EASY_SOLUTION
    # both puzzles have one solution, so valid must mean "equals the reference solution"
    assert count_solutions(gen_puzzle) == 1
    assert res.valid.tolist() == [True, bool(np.all(res.solutions[1] == gen_solution))]
    np.testing.assert_array_equal(res.solutions[1][gen_puzzle > 0], gen_puzzle[gen_puzzle > 0])   # givens kept
    voted = rsa_jax.solve(parse_puzzles(EASY), model=model, steps=32, vote=2)
    assert voted.vote == 2 and "".join(map(str, voted.solutions[0])) == EASY_SOLUTION
    with pytest.raises(ValueError, match="pass steps="):
        rsa_jax.solve(EASY, model=model)


def test_solve_command(capsys):
    assert main([EASY, "--plain", "--steps", "32"]) == 0
    assert capsys.readouterr().out == f"{EASY_SOLUTION} valid\n"
    assert main([EASY, "--steps", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("puzzle 1 (T=32): valid\n534 678 912\n") and "\n\n859 761 423\n" in out
    for bad in (EASY[:-1], EASY[:-1] + "a", "55" + EASY[2:]):
        assert main([EASY, bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: puzzle 2") and err.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "rsa_jax.solve", "1" * 81], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: puzzle 1: digit 1 is given twice in row 1\n"


# --- clear errors (issue 33) ---------------------------------------------------------------------

def test_sudoku_model_refuses_bad_digits_and_unbatched_input(model):
    digits = jnp.asarray(parse_puzzles(EASY))
    given, key = digits != 0, jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"digits and given must both be \(B, 81\).*digits\[None\]"):
        model.condition(digits[0], given[0], key)
    with pytest.raises(ValueError, match=r"digits must be 0..9.*\[0, 12\]"):
        model.condition(digits.at[0, 2].set(12), given, key)
    with pytest.raises(ValueError, match=r"digits must be 0..9.*\[-1, 9\]"):
        model(digits.at[0, 2].set(-1), given, key, 2)
    with pytest.raises(TypeError, match="digits must be integers"):
        model.condition(digits.astype(jnp.float32), given, key)
    with pytest.raises(ValueError, match=r"digits must hold digits 0..9.*\[0, 10\]"):
        predict(model, np.where(np.asarray(digits) == 9, 10, np.asarray(digits)), np.asarray(given), key, 2)
    bad = SudokuSet(np.full((1, 81), 11, np.uint8), np.ones((1, 81), np.uint8), "bad")
    with pytest.raises(ValueError, match=r"sudoku_set.puzzles must hold digits 0..9"):
        evaluate_boards(model, bad, [2])
    assert model.condition(digits, given, key)[0].shape == (1, 81, model.config.d)   # good input still works


def test_corrupt_checkpoint_is_refused_without_pickle_advice(tmp_path):
    good = (pretrained.path(MODEL) / "model.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object), __config__=np.array("{}"))
    with zipfile.ZipFile(tmp_path / "badjson.npz", "w") as z:
        z.writestr("__config__.npy", _npy(np.array("{not json")))
    for name in ("half", "junk", "pickled", "badjson"):
        with pytest.raises(pretrained.PretrainedError, match=f"{name}.npz") as e:
            pretrained.load_file(tmp_path / f"{name}.npz")
        assert "allow_pickle" not in str(e.value)
    with pytest.raises(pretrained.PretrainedError, match="will not unpickle"):
        pretrained.load_file(tmp_path / "pickled.npz")


def _npy(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_empty_input_and_unknown_model_say_what_is_wrong():
    from rsa_jax.solve import solve
    with pytest.raises(ValueError, match="no puzzles given"):
        parse_puzzles([])
    with pytest.raises(ValueError, match="neither a shipped model"):
        solve(EASY, model="no-such-model")
