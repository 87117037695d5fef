"""Learning curves of trained Sudoku models: cell and board accuracy against steps and wall time.

    python -m experiments.training_curves                                  # every shipped model
    python -m experiments.training_curves --runs runs/itrsa-cpu pretrained/sudoku-akorn-cpu

Reads ``metrics.jsonl`` of run directories or shipped-model folders (``rsa_jax.pretrained``): the
training averages (live parameters, one record per ``log_every`` steps) and the evaluation records
(``eval/`` = EMA parameters, ``eval_live/`` = live parameters, on the task's evaluation set).
Wall time is summed over resumed invocations. Writes ``training_curves.png`` and a JSON of the
evaluation records under --out and prints a table of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
except ImportError:  # pragma: no cover - run as a file outside the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json

from rsa_jax import pretrained  # noqa: E402


def read_curves(folder) -> dict:
    """``{"train": [...], "eval": [...]}`` records of ``folder/metrics.jsonl`` with a cumulative ``wall`` key."""
    recs = pretrained.read_metrics(folder)
    return {"train": [r for r in recs if "loss" in r],
            "eval": [r for r in recs if any(k.startswith("eval") for k in r)]}


def label(folder: Path, name: str) -> str:
    """``name``, marked " (pre-parity)" where ``folder``'s manifest is of an AKOrN trained before issue 32."""
    from experiments.le_vs_ood import label as marked
    m = folder / pretrained.MANIFEST_FILE
    return marked(name, json.loads(m.read_text()).get("model") if m.is_file() else None)


def plot(curves: dict, path: Path):
    """Cell and board accuracy against step and wall time. Up to 4 runs: train batches, EMA and live
    evaluations each; more: the EMA evaluation only (one line per run, colours and markers cycled), the
    legend beside the axes, so that 16 shipped models stay readable."""
    import matplotlib.pyplot as plt
    many = len(curves) > 4
    fig, axes = plt.subplots(2, 2, figsize=(15 if many else 11, 7))
    markers = "os^vD<>p*hX"
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        for col, xkey, xlabel in ((0, "step", "optimizer step"), (1, "wall", "wall time (min)")):
            scale = 1 / 60 if xkey == "wall" else 1
            tr = c["train"]
            if not many:
                axes[0, col].plot([r[xkey] * scale for r in tr], [100 * r["cell_acc"] for r in tr], color=color,
                                  alpha=0.35, lw=1, label=f"{name}: train batches (live)")
            kinds = (("eval", "-", "EMA"),) if many else (("eval", "-", "EMA"), ("eval_live", "--", "live"))
            for key, line, what in kinds:
                ev = [r for r in c["eval"] if f"{key}/cell_acc" in r]
                if not ev:
                    continue
                x = [r[xkey] * scale for r in ev]
                style = dict(color=color, marker=markers[i // 10] if many else "ox"[key == "eval_live"], ms=4,
                             ls=line, label=name if many else f"{name}: eval ({what})")
                axes[0, col].plot(x, [100 * r[f"{key}/cell_acc"] for r in ev], **style)
                axes[1, col].plot(x, [100 * r[f"{key}/board_acc"] for r in ev], **style)
            for row, what in ((0, "cell (blank) accuracy (%)"), (1, "board accuracy (%)")):
                axes[row, col].set_xlabel(xlabel)
                axes[row, col].set_ylabel(what)
                axes[row, col].grid(alpha=0.3)
    if many:
        axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="EMA evaluation")
    else:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle("Sudoku training (evaluation on SATNet test at T_eval = T_train)")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv=None):
    p = make_parser("training_curves", __doc__)
    p.add_argument("--runs", nargs="+", default=None,
                   help="run directories or shipped-model folders/names (default: every shipped model)")
    args = parse(p, argv)
    specs = args.runs or pretrained.names()
    if not specs:
        raise SystemExit("no runs given and no shipped models found")
    curves = {}
    for spec in specs:
        folder = pretrained.path(spec) if spec in pretrained.names() else Path(spec)
        if not (folder / "metrics.jsonl").is_file():
            raise SystemExit(f"{folder}: no metrics.jsonl")
        curves[label(folder, Path(spec).name)] = read_curves(folder)
    rows = []
    for name, c in curves.items():
        for r in c["eval"]:
            rows.append([name, r["step"], f"{r['wall'] / 60:.1f}",
                         *(f"{100 * r[k]:.1f}" if k in r else "-" for k in
                           ("eval/cell_acc", "eval/board_acc", "eval_live/cell_acc", "eval_live/board_acc"))])
    print_table(rows, ["model", "step", "wall (min)", "EMA cell", "EMA board", "live cell", "live board"])
    out = Path(args.out)
    announce([save_json({k: c["eval"] for k, c in curves.items()}, out / "training_curves.json"),
              plot(curves, out / "training_curves.png")])
    return curves


if __name__ == "__main__":
    main()
