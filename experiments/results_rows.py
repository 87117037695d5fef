"""The RESULTS.md rows of shipped models, printed from their manifests (nothing is computed).

When the claims queue ships a model, its numbers go into several tables of RESULTS.md: the summary, the
LE-vs-OOD table, the contribution index, the SATNet test to T_eval 1,024, and its learning curve. This prints
each row in the tables' column order, from ``pretrained/NAME/manifest.json`` and ``metrics.jsonl``, so that no
number is copied by hand:

    python -m experiments.results_rows sudoku-akorn-spec-cpu
    python -m experiments.results_rows sudoku-akorn-spec-cpu sudoku-akorn-cpu --every 360

A part the manifest lacks (not yet evaluated) prints ``-`` in its cells. The link and the "what" text of the
summary row are left as ``NAME`` and ``...``: they are prose.

``--write RESULTS.md`` puts the numbers into the file's existing rows of the model (each table's prose cells
kept); ``--keep-old LABEL`` first keeps a copy of each old row (but the summary's), its name prefixed by LABEL
(``--keep-old pre-parity`` when a retrained model replaces an old one). A table without a row of the model is
reported, and its row is left for a person to place.
"""

from __future__ import annotations

from pathlib import Path

from experiments.common import make_parser, parse
from rsa_jax import pretrained
from rsa_jax.models.sudoku import CELLS


TABLES = ("summary", "le_vs_ood", "contribution", "id_long")   # the per-model tables of RESULTS.md
PROSE = {"summary": 2}   # leading cells that are prose (the name; the summary's "what"), not numbers


def _pct(x, nd: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{nd}f}"


def _at(curve: dict | None, key: str, step: int):
    """``curve[key]`` at T_eval ``step`` (None where the curve or the step is missing)."""
    if not curve or step not in curve["steps"]:
        return None
    return curve[key][curve["steps"].index(step)]


def _le(x) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _mean(x) -> str:
    """A mean LE: three decimals, or five where it would read 0 (the unnormalized model's -0.00003)."""
    return f"{x:.3f}" if abs(x) >= 5e-4 else f"{x:.5f}"


def rows(m: dict, metrics: list | None = None, every: int = 360) -> dict:
    """The markdown rows of one manifest ``m`` (and its ``metrics.jsonl`` records), by table.

    Returns:
      ``{"summary", "le_vs_ood", "contribution", "id_long", "curve"}``: one row (or a two-line table,
      ``curve``) each.
    """
    name = m["name"]
    acc = m.get("accuracy") or {}
    idc, ood, idl = acc.get("id"), acc.get("ood"), m.get("id_long")
    le, long, pe = m.get("lyapunov") or {}, m.get("lyapunov_long") or {}, m.get("pseudo_energy")
    if ood and any(ood["board_acc"]):   # the tables write a model that solves no OOD board as 0.0
        b = max(range(len(ood["board_acc"])), key=ood["board_acc"].__getitem__)
        first_best = f"{_pct(ood['board_acc'][0])} / {_pct(ood['board_acc'][b])} (T {ood['steps'][b]})"
        ood_boards, ood_b = first_best, f"{first_best} / {_pct(ood['board_acc'][-1])}"
    else:
        ood_boards, ood_b = ("0.0", "0.0 / 0.0 / 0.0") if ood else ("-", "-")
    long_txt = _le(long.get("max_le")) if long else "-"
    summary = (f"| [`{name}`](#NAME) | ... | {_pct(_at(idc, 'board_acc', 16))} ({_pct(_at(idc, 'cell_acc', 16))}) | "
               f"{ood_boards} | {_pct(_at(ood, 'cell_acc', 16))} | {_le(le.get('max_le'))} ({long_txt}) |")
    d = (m.get("model") or {}).get("d")
    m_count = (CELLS * d - le["mean_le_num_null"]) if d and "mean_le_num_null" in le else None
    mean = "-" if le.get("mean_le") is None else _mean(le["mean_le"]) + (f" (M = {m_count:,})" if m_count else "")
    long_cell = "-" if not long else (f"{_le(long['max_le'])} ({long['T']} after {long.get('warmup', 0)}"
                                      + (", float64)" if long.get("float64") else ")"))
    last_t = ood["steps"][-1] if ood else None
    ood_c = " / ".join(_pct(_at(ood, "cell_acc", t)) for t in (16, 128, last_t or 1024))
    le_vs_ood = (f"| `{name}` (...) | {_le(le.get('max_le'))} | {long_cell} | {mean} | "
                 f"{_le(le.get('mean_le_leading_k'))} | {ood_b} | {ood_c} | "
                 f"{_pct(_at(idc, 'board_acc', 16))} (cells {_pct(_at(idc, 'cell_acc', 16))}) |")
    if pe:
        c = pe["contribution"]
        contribution = (f"| `{name}` | {_pct(c[0])}% | {' / '.join(_pct(x) for x in c[1:])} | "
                        f"{_pct(pe['contribution_late_mean'])}% | {_pct(pe['contribution_max'])}% |")
    else:
        contribution = f"| `{name}` | - | - | - | - |"
    per_t = [_at(idl, "board_acc", t) for t in (16, 32, 128, 256, 1024)]
    boards = ("0" if idl and not any(idl["board_acc"])                  # the table writes no board at all as 0
              else " / ".join("-" if x is None else f"{100 * x:.0f}" for x in per_t))
    id_long = f"| `{name}` | {boards} | {_pct(_at(idl, 'cell_acc', 16))} / {_pct(_at(idl, 'cell_acc', 1024))} |"
    evals = {r["step"]: r for r in metrics or () if "eval/board_acc" in r}
    steps = sorted({s for s in evals if s % every == 0} | set(sorted(evals)[-1:]))   # and the last evaluation
    curve = ("| step | " + " | ".join(f"{s:,}" for s in steps) + " |\n"
             + "| EMA cells % | " + " | ".join(_pct(evals[s]["eval/cell_acc"]) for s in steps) + " |\n"
             + "| EMA boards % | " + " | ".join(_pct(evals[s]["eval/board_acc"]) for s in steps) + " |")
    return {"summary": summary, "le_vs_ood": le_vs_ood, "contribution": contribution, "id_long": id_long,
            "curve": curve}


def model_rows(lines: list[str], name: str, table: str, row: str) -> list[int]:
    """Indices of the lines of ``lines`` that are ``name``'s row in ``table`` (the row's width: ``row``'s)."""
    width = len(row.split(" | "))
    return [i for i, line in enumerate(lines) if line.startswith((f"| `{name}`", f"| [`{name}`]"))
            and len(line.split(" | ")) == width]


def write(path: str | Path, name: str, got: dict, keep_old: str | None = None) -> list[str]:
    """Write ``got`` (``rows`` of ``name``) into the file's rows of ``name``, keeping each row's prose cells.

    Args:
      path: a markdown file (RESULTS.md).
      name: the model.
      got: its rows, from ``rows``.
      keep_old: if given, each old row but the summary's stays below the new one, ``name`` prefixed by it.

    Returns:
      The tables that have no row (or several) of ``name``: nothing was written there.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    skipped = []
    for table in TABLES:
        k = PROSE.get(table, 1)
        found = model_rows(lines, name, table, got[table])
        if len(found) > 1:   # another table of the same width: tell them apart by the " / " in each number cell
            def shape(row):
                return [c.count(" / ") for c in row.split(" | ")[k:]]
            found = [i for i in found if shape(lines[i]) == shape(got[table])]
        if len(found) != 1:
            skipped.append(table)
            continue
        i = found[0]
        old = lines[i].split(" | ")
        lines[i] = " | ".join(old[:k] + got[table].split(" | ")[k:])
        if keep_old and table != "summary" and lines[i] != " | ".join(old):
            lines.insert(i + 1, " | ".join(old).replace(f"`{name}`", f"{keep_old} `{name}`", 1))
    path.write_text("\n".join(lines) + "\n")
    return skipped


def main(argv=None) -> dict:
    p = make_parser("results_rows", __doc__)
    p.add_argument("names", nargs="+", metavar="NAME", help="shipped model names (rsa_jax.pretrained.names())")
    p.add_argument("--every", type=int, default=360, help="learning-curve columns every this many steps")
    p.add_argument("--write", metavar="FILE", help="write the numbers into FILE's rows of each model (RESULTS.md)")
    p.add_argument("--keep-old", metavar="LABEL", help="with --write: keep each old row, its name prefixed by LABEL")
    args = parse(p, argv)
    out = {}
    for name in args.names:
        folder = pretrained.path(name)
        metrics = pretrained.read_metrics(folder) if (folder / "metrics.jsonl").exists() else []
        out[name] = rows(pretrained.manifest(name), metrics, args.every)
        for table, row in out[name].items():
            print(f"[{name}] {table}:\n{row}\n")
        if args.write:
            for table in write(args.write, name, out[name], args.keep_old):
                print(f"[{name}] {table}: no single row in {args.write}; place the row above by hand")
    return out


if __name__ == "__main__":
    main()
