"""experiments.results_rows: the RESULTS.md rows of a shipped model, from its manifest; and RESULTS.md itself
agrees with every shipped manifest in the four per-model tables."""

from pathlib import Path

import pytest

from experiments.results_rows import PROSE, TABLES, model_rows, rows, write
from rsa_jax import pretrained

REPO = Path(__file__).resolve().parents[1]


def _manifest(ood_boards=(0.004, 0.012, 0.0)):
    return {
        "name": "m", "model": {"d": 8},
        "accuracy": {"id": {"steps": [16, 32], "board_acc": [0.5, 0.1], "cell_acc": [0.9, 0.8]},
                     "ood": {"steps": [16, 32, 1024], "board_acc": list(ood_boards),
                             "cell_acc": [0.6, 0.5, 0.4]}},
        "id_long": {"steps": [16, 32, 128, 256, 1024], "board_acc": [0.5, 0.0, 0.0, 0.0, 0.0],
                    "cell_acc": [0.91, 0.7, 0.6, 0.5, 0.3]},
        "lyapunov": {"max_le": 0.1234, "mean_le": -0.5, "mean_le_num_null": 162, "mean_le_leading_k": -0.01},
        "lyapunov_long": {"max_le": -0.02, "T": 512, "warmup": 128},
        "pseudo_energy": {"contribution": [0.05, 0.1, 0.2], "contribution_late_mean": 0.15,
                          "contribution_max": 0.2},
    }


def test_rows_from_a_manifest():
    """Each row in its table's column order, percentages to one decimal, M = 81 D - nulls."""
    metrics = [{"step": s, "eval/cell_acc": c, "eval/board_acc": b}
               for s, c, b in ((360, 0.5, 0.0), (500, 0.6, 0.0), (720, 0.7, 0.01))]
    r = rows(_manifest(), metrics, every=360)
    assert r["summary"] == "| [`m`](#NAME) | ... | 50.0 (90.0) | 0.4 / 1.2 (T 32) | 60.0 | +0.123 (-0.020) |"
    assert r["le_vs_ood"] == ("| `m` (...) | +0.123 | -0.020 (512 after 128) | -0.500 (M = 486) | -0.010 | "
                              "0.4 / 1.2 (T 32) / 0.0 | 60.0 / - / 40.0 | 50.0 (cells 90.0) |")
    assert r["contribution"] == "| `m` | 5.0% | 10.0 / 20.0 | 15.0% | 20.0% |"
    assert r["id_long"] == "| `m` | 50 / 0 / 0 / 0 / 0 | 91.0 / 30.0 |"
    assert r["curve"].splitlines() == ["| step | 360 | 720 |", "| EMA cells % | 50.0 | 70.0 |",
                                       "| EMA boards % | 0.0 | 1.0 |"]
    assert rows(_manifest(), metrics, every=500)["curve"].splitlines()[0] == "| step | 500 | 720 |"  # + the last


def test_main_prints_the_rows_of_a_shipped_model(tmp_path, capsys):
    from experiments.results_rows import main
    got = main(["sudoku-akorn-seed1-cpu", "--out", str(tmp_path)])["sudoku-akorn-seed1-cpu"]
    text = capsys.readouterr().out
    assert got["id_long"] in text and got["curve"].splitlines()[0].endswith("| 2,520 | 2,880 |")


def test_rows_write_the_tables_zero_and_missing_conventions():
    m = _manifest(ood_boards=(0.0, 0.0, 0.0))
    m["id_long"]["board_acc"] = [0.0] * 5
    r = rows(m)
    assert "| 0.0 | 60.0 |" in r["summary"] and "| 0.0 / 0.0 / 0.0 |" in r["le_vs_ood"]
    assert r["id_long"].startswith("| `m` | 0 | ")
    bare = rows({"name": "x"})
    assert bare["summary"] == "| [`x`](#NAME) | ... | - (-) | - | - | - (-) |"
    assert bare["contribution"] == "| `x` | - | - | - | - |"
    assert bare["id_long"] == "| `x` | - / - / - / - / - | - / - |"


def test_results_md_agrees_with_every_shipped_manifest():
    """Every shipped model has a row in each per-model table of RESULTS.md (summary, LE vs OOD, contribution
    index, SATNet test to 1,024), and its numbers are those of its manifest: a hand-copied number that
    differs, or a model that ships without its rows, fails here."""
    lines = (REPO / "RESULTS.md").read_text().splitlines()
    bad = []
    for name in pretrained.names():
        got = rows(pretrained.manifest(name))
        for table in TABLES:
            want, k = got[table].split(" | "), PROSE.get(table, 1)
            mine = [lines[i].split(" | ") for i in model_rows(lines, name, table, got[table])]
            if not any(cells[k:] == want[k:] for cells in mine):
                bad.append(f"{name} {table}: RESULTS.md {[' | '.join(c[k:]) for c in mine] or 'has no row'}; "
                           f"the manifest gives {' | '.join(want[k:])}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("table", TABLES)
def test_the_agreement_check_can_fail(table, monkeypatch):
    """A number changed in one manifest makes the check above fail (it is not vacuous)."""
    name = "sudoku-akorn-seed1-cpu"
    real = pretrained.manifest

    def changed(n):
        m = real(n)
        if n == name:
            m["lyapunov"]["max_le"] += 0.01                       # summary, le_vs_ood
            m["pseudo_energy"]["contribution_max"] += 0.01         # contribution
            m["id_long"]["cell_acc"][-1] += 0.01                   # id_long
        return m

    monkeypatch.setattr(pretrained, "manifest", changed)
    with pytest.raises(AssertionError, match=f"{name} {table}"):
        test_results_md_agrees_with_every_shipped_manifest()


def test_write_puts_the_numbers_into_the_rows_and_keeps_the_prose(tmp_path):
    """--write replaces the number cells of the model's row in each table, keeps the prose cells, keeps the old
    row (relabelled) with keep_old but the summary's, and reports a table with no row of the model."""
    got = rows(_manifest())
    md = tmp_path / "R.md"
    md.write_text("intro\n"
                  "| [`m`](#sec) | AKOrN, old | 1.0 (2.0) | 0.0 | 3.0 | +0.500 (+0.100) |\n"
                  "| `m` (old prose) | +0.5 | a | b | c | d | e | f |\n"
                  "| `m` | 1% | 2 / 3 | 4% | 5% |\n"
                  "| `mm` | 1% | 2 / 3 | 4% | 5% |\n"
                  "| `m` (another table) | 8.3 | 1.2 (t = 155) | 8.7 | 66.4 |\n")
    assert write(md, "m", got, keep_old="pre-parity") == ["id_long"]
    lines = md.read_text().splitlines()
    assert lines[1] == "| [`m`](#sec) | AKOrN, old | 50.0 (90.0) | 0.4 / 1.2 (T 32) | 60.0 | +0.123 (-0.020) |"
    assert lines[2] == ("| `m` (old prose) | +0.123 | -0.020 (512 after 128) | -0.500 (M = 486) | -0.010 | "
                        "0.4 / 1.2 (T 32) / 0.0 | 60.0 / - / 40.0 | 50.0 (cells 90.0) |")
    assert lines[3] == "| pre-parity `m` (old prose) | +0.5 | a | b | c | d | e | f |"
    assert lines[4:] == ["| `m` | 5.0% | 10.0 / 20.0 | 15.0% | 20.0% |", "| pre-parity `m` | 1% | 2 / 3 | 4% | 5% |",
                         "| `mm` | 1% | 2 / 3 | 4% | 5% |",
                         "| `m` (another table) | 8.3 | 1.2 (t = 155) | 8.7 | 66.4 |"]
    before = md.read_text()
    assert write(md, "m", got) == ["id_long"] and md.read_text() == before   # written rows: nothing changes
