"""The paper's main picture: max Lyapunov exponent against OOD test-time scaling, one point per trained model.

Claim (paper Sec. 5, Figs. 5 and S.1): trained looped models whose maximum Lyapunov exponent is near
0 (normalized, regularized) keep or gain OOD accuracy as T_eval grows; clearly positive or negative
exponents go with poor test-time scaling. This script reads what the shipped models' manifests
(:mod:`rsa_jax.pretrained`) record, computes nothing, and so runs in seconds:

* ``lyapunov``: max (and mean) LE at T = 16, put there by
  ``python -m experiments.lyapunov --checkpoint NAME --out DIR`` then
  ``python -m rsa_jax.pretrained add-lyapunov NAME DIR/lyapunov.json``;
* ``lyapunov_long`` (optional): the long-horizon max LE, T steps from the state after W, put there by
  ``python -m experiments.lyapunov --checkpoint NAME --k 4 --T 512 --warmup 128 --out DIR`` then
  ``python -m rsa_jax.pretrained add-lyapunov NAME DIR/lyapunov.json --long`` (the T = 16 exponent
  from X0 is a finite-time one; the long-horizon one is what perturbed trajectories follow);
* ``accuracy``: RRN-test board accuracy over T_eval, put there by
  ``python -m experiments.sudoku_ood --checkpoints NAME --out DIR`` then
  ``python -m rsa_jax.pretrained add-accuracy NAME DIR/sudoku_ood.json``.

Per model: x = max LE; y = OOD board accuracy (left) and blank-cell accuracy (right) at the largest
T_eval (filled marker) and the best over T_eval (hollow marker, joined to it), so a model that peaks
and then decays shows a long bar; a second row of panels puts the same accuracies against the
long-horizon max LE, for the models that have it. Models missing an entry are listed with the
commands that fill it.

    python -m experiments.le_vs_ood                                   # every shipped model
    python -m experiments.le_vs_ood --checkpoints sudoku-itrsa-cpu sudoku-akorn-cpu

Outputs under ``--out``: ``le_vs_ood.json`` (one record per model), ``le_vs_ood.png``, a table on stdout.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
from experiments.claims_runs import LONG_LE
from rsa_jax import pretrained


def preparity(model: dict | None) -> bool:
    """Whether a manifest's model config is an AKOrN trained before the official parametrization (issue 32):
    its record lacks the fields that now default to the official choices (``ModelConfig.WHEN_ABSENT``)."""
    from rsa_jax.models.sudoku import ModelConfig
    return bool(model) and model.get("kind") == "akorn" and any(k not in model for k in ModelConfig.WHEN_ABSENT)


def label(name: str, model: dict | None) -> str:
    """``name``, marked " (pre-parity)" where ``model`` (a manifest's model config) is a pre-parity AKOrN."""
    return name + (" (pre-parity)" if preparity(model) else "")


def point(name: str) -> dict:
    """The record of shipped model ``name``: max / mean LE and its OOD curve (``None`` where missing)."""
    m = pretrained.manifest(name)
    le, ood, long = m.get("lyapunov"), (m.get("accuracy") or {}).get("ood"), m.get("lyapunov_long")
    rec = {"name": name, "label": label(name, m.get("model")),
           "kind": (m.get("model") or {}).get("kind"), "norm": (m.get("model") or {}).get("norm"),
           "max_le": le and le["max_le"], "mean_le": le and le.get("mean_le"),
           "mean_le_leading_k": le and le.get("mean_le_leading_k"), "le_T": le and le["T"],
           "le_k": le and le.get("k"), "ood_steps": ood and ood["steps"], "ood_board_acc": ood and ood["board_acc"],
           "ood_split": ood and ood.get("split"), "long_max_le": long and long["max_le"],
           "long_T": long and long["T"], "long_warmup": long and long.get("warmup")}
    if ood:
        accs = ood["board_acc"]
        best = max(range(len(accs)), key=accs.__getitem__)
        rec |= {"ood_last": accs[-1], "t_last": ood["steps"][-1], "ood_best": accs[best], "t_best": ood["steps"][best]}
        cells = ood.get("cell_acc")
        if cells:
            rec |= {"ood_cell_acc": cells, "cell_last": cells[-1], "cell_best": max(cells)}
    return rec


def missing_note(rec: dict) -> str:
    """What to run to fill a record's missing entries ('' if none)."""
    n, todo = rec["name"], []
    if rec["max_le"] is None:
        todo.append(f"python -m experiments.lyapunov --checkpoint {n} --out outputs/lyapunov_{n} && "
                    f"python -m rsa_jax.pretrained add-lyapunov {n} outputs/lyapunov_{n}/lyapunov.json")
    if rec["ood_board_acc"] is None:
        todo.append(f"python -m experiments.sudoku_ood --checkpoints {n} --models {rec['kind']} --out "
                    f"outputs/sudoku_ood_{n} && python -m rsa_jax.pretrained add-accuracy {n} "
                    f"outputs/sudoku_ood_{n}/sudoku_ood.json")
    if rec["long_max_le"] is None:
        todo.append(f"(long-horizon LE) python -m experiments.lyapunov --checkpoint {n} {' '.join(LONG_LE)} "
                    f"--out outputs/lyapunov_long_{n} && python -m rsa_jax.pretrained add-lyapunov {n} "
                    f"outputs/lyapunov_long_{n}/lyapunov.json --long")
    return "; ".join(todo)


def plot(records: list):
    """Board accuracy (left) and blank-cell accuracy (right, where recorded) against max LE at T = 16
    (top) and, for the models that have it, against the long-horizon max LE (bottom)."""
    panels = [("ood", "board")] + ([("cell", "blank-cell")] if any("cell_last" in r for r in records) else [])
    horizons = sorted({r["le_T"] for r in records})
    xs = [("max_le", f"max Lyapunov exponent (T = {', '.join(map(str, horizons))}, from X0)")]
    longs = sorted({(r["long_T"], r["long_warmup"]) for r in records if r["long_max_le"] is not None})
    if longs:
        xs.append(("long_max_le", "long-horizon max LE (" + ", ".join(f"T = {t} after {w} steps" for t, w in longs)
                   + ")"))
    fig, axes = plt.subplots(len(xs), len(panels), figsize=(5.6 * len(panels), 4.0 * len(xs)), squeeze=False)
    t_lasts = {r["t_last"] for r in records}
    largest = f"T_eval {next(iter(t_lasts))}" if len(t_lasts) == 1 else "largest T_eval"
    handles = {}  # one legend for the figure, outside the axes: every model once, no point covered
    for row, (xkey, xlabel) in zip(axes, xs):
        for ax, (key, what) in zip(row, panels):
            for i, r in enumerate(records):
                if f"{key}_last" not in r or r[xkey] is None:
                    continue
                # ten colours, then a new marker shape: every model keeps its own (colour, marker)
                color, marker = f"C{i % 10}", "os^Dv"[i // 10 % 5]
                last, best, x = 100 * r[f"{key}_last"], 100 * r[f"{key}_best"], r[xkey]
                ax.plot([x] * 2, [last, best], color=color, lw=1)
                ax.plot(x, best, marker, mfc="none", color=color)
                label = r["label"] if len(t_lasts) == 1 else f"{r['label']} (T_eval {r['t_last']})"
                handles.setdefault(label, ax.plot(x, last, marker, color=color)[0])
            ax.axvline(0.0, color="gray", lw=0.8)
            ax.set(xlabel=xlabel, ylabel=f"OOD (RRN test) {what} accuracy [%]",
                   title=f"max LE vs OOD {what} accuracy (filled: {largest}; hollow: best)")
            ax.title.set_fontsize(9)
            ax.xaxis.label.set_fontsize(8)
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def main(argv=None) -> dict:
    p = make_parser("le_vs_ood", __doc__)
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="NAME",
                   help="shipped model names (default: every one, rsa_jax.pretrained.names())")
    args = parse(p, argv)
    names = args.checkpoints or pretrained.names()
    if not names:
        raise SystemExit(f"no shipped models under {pretrained.root()}")
    records = [point(n) for n in names]
    ready = [r for r in records if r["max_le"] is not None and r["ood_board_acc"] is not None]
    for r in records:
        note = missing_note(r)
        if note:
            print(f"[{r['name']}] {'incomplete' if r in ready else 'not plotted'}; to fill it: {note}")
    mean = lambda r: (r["mean_le"] if r["mean_le"] is not None
                      else f"{r['mean_le_leading_k']:.4g} (leading {r['le_k']})" if r["mean_le_leading_k"] is not None
                      else "-")
    long = lambda r: ("-" if r["long_max_le"] is None
                      else f"{r['long_max_le']:.4g} (T {r['long_T']} after {r['long_warmup']})")
    rows = [[r["label"], r["kind"], r["norm"], r["max_le"], mean(r), r["le_k"] or "all", long(r),
             f"{100 * r['ood_board_acc'][0]:.1f}", f"{100 * r['ood_best']:.1f} @ {r['t_best']}",
             f"{100 * r['ood_last']:.1f} @ {r['t_last']}"] for r in ready]
    print_table(rows, ["model", "kind", "norm", "max LE", "mean LE", "max LE of (leading k)", "long-horizon max LE",
                       "OOD board (first T)", "OOD best", "OOD last"])
    out = {"records": records, "plotted": [r["name"] for r in ready]}
    paths = [save_json(out, args.out / "le_vs_ood.json")]
    if ready:
        paths.append(save_figure(plot(ready), args.out / "le_vs_ood.png"))
    announce(paths)
    return out


if __name__ == "__main__":
    main()
