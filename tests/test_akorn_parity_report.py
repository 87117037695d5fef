"""``experiments.akorn_parity report``: the learning-parity table from runs' ``metrics.jsonl`` (no torch)."""

import json

from experiments import akorn_parity


def _run(path, losses, evals):
    path.mkdir()
    recs = [{"step": s, "loss": x} for s, x in losses.items()]
    recs += [{"step": s, "eval_live/cell_acc": c, "eval_live/board_acc": b} for s, (c, b) in evals.items()]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return str(path)


def test_report_table_rows_and_step_limit(tmp_path):
    a = _run(tmp_path / "official", {80: 1.5, 90: 1.25, 180: 0.75}, {90: (0.3, 0.0), 180: (0.5, 0.01)})
    b = _run(tmp_path / "ours", {90: 1.0, 160: 0.9}, {90: (0.35, 0.0), 180: (0.55, 0.02), 270: (0.6, 0.1)})
    table = akorn_parity.main(["report", "--runs", a, b, "--plot", str(tmp_path / "p.png")]).splitlines()
    assert table[0] == ("| step | official loss | official cell % | official board % | ours loss | ours cell % "
                        "| ours board % |")
    # the loss is the last record within the 20 steps up to the evaluation; a missing one stays empty
    assert table[2] == "| 90 | 1.250 | 30.0 | 0.0 | 1.000 | 35.0 | 0.0 |"
    assert table[3] == "| 180 | 0.750 | 50.0 | 1.0 |  | 55.0 | 2.0 |"
    assert table[4] == "| 270 |  |  |  |  | 60.0 | 10.0 |" and (tmp_path / "p.png").is_file()
    limited = akorn_parity.main(["report", "--runs", a, b, "--plot", str(tmp_path / "q.png"), "--max-step", "180"])
    assert [line.split(" | ")[0] for line in limited.splitlines()[2:]] == ["| 90", "| 180"]


def test_teval_table_from_sudoku_ood_results(tmp_path):
    def result(name, id_cells, ood_cells):
        curve = lambda cells: {"steps": [16, 32], "cell_acc": cells, "board_acc": [0.5, 0.0]}   # noqa: E731
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"results": {"akorn": {"seeds": {"0": {"id": curve(id_cells),
                                                                         "ood": curve(ood_cells)}}}}}))
        return f"{name}={path}"
    table = akorn_parity.main(["teval", "--results", result("official", [0.75, 0.5], [0.4, 0.3]),
                               result("ours", [0.9, 0.25], [0.5, 0.1]), "--plot", str(tmp_path / "t.png")])
    lines = table.splitlines()
    assert lines[0] == "| model | split | T 16 | T 32 |" and len(lines) == 6
    assert lines[2] == "| official | id cells (boards) % | 75.0 (50.0) | 50.0 (0.0) |"
    assert lines[5] == "| ours | ood cells (boards) % | 50.0 (50.0) | 10.0 (0.0) |" and (tmp_path / "t.png").is_file()
