"""Table S.1: the learned RMSNorm gain gamma of ItrSA with oscillator-wise RMSNorm, for N = 4 .. 512.

Claim (paper appendix, Table S.1): the trained models have small gains, ``max_j |gamma_j| < 1``
(Prop. 5.1 then bounds the Jacobian of the normalization by ``max_j |gamma_j| / R``).

For every model variant, oscillator size N and seed this script reads the run
``<runs-from>/<model>_N<N>/seed_<s>`` (the layout of ``experiments.oscillator_size``, loaded with
``rsa_jax.train.load_model``, EMA parameters) and trains only the missing ones, with
``experiments.sudoku_sweep.oscillator_train_config`` (that of ``experiments.oscillator_size``) so that
both scripts share runs. It reports ``mean_j |gamma_j|`` and ``max_j |gamma_j|`` over the D channels
(mean ± std over seeds) beside the paper's values.

Scale convention: ``rsa_jax.ops.rms_norm`` is the paper's definition, ``gamma * Y_i / ||Y_i||`` (unit
chunks at gamma = 1, the init). PyTorch's ``nn.RMSNorm`` (``weight * Y_i / rms(Y_i)``, weight 1 at init)
is the same map with ``weight = gamma / sqrt(N)``; if the paper's code used it (its ItrSA comes from the
AKOrN code, whose Transformer block uses ``nn.LayerNorm``, of the same scale) its Table S.1 gains are
``weight``s. The records also give ``max_j |gamma_j| / sqrt(N)`` (``gamma_abs_max_rms``), and its
value at init (``gamma_init / sqrt(N)``: ``1 / sqrt(N)`` by default, 1 for a model initialized at
nn.RMSNorm's scale, ``ModelConfig.gamma_init = sqrt(N)``), so that both readings can be compared.
``--checkpoints NAME_OR_PATH ...`` reads given trained models instead (shipped names, ``.npz`` files or
run directories; grouped by kind, norm and N as their configs say; nothing is trained).

Model variants (``--models``; those of ``experiments.oscillator_size`` with a gamma):

* ``itrsa``         ``ModelConfig(kind="itrsa", n=N, norm="rmsnorm", norm_n=N)`` (the table's model)
* ``akorn_rmsnorm`` ``ModelConfig(kind="akorn", n=N, norm="rmsnorm")``: AKOrN with Pi_N replaced by RMSNorm_N

A loaded run whose training or model config differs from the one these flags would train is used
as it is, with a warning and ``config_matches: false`` in the JSON.

Outputs under ``--out``: ``gamma_table.json``, ``gamma_table.png`` (mean and max |gamma| vs N, log2
x, the paper's values as a second series) and the Markdown table on stdout.

    python -m experiments.gamma_table                                          # CPU default, trains N = 4, 8, 16
    python -m experiments.gamma_table --runs-from outputs/oscillator_size/runs  # reuse oscillator_size's runs
    python -m experiments.gamma_table --full --runs-from outputs/oscillator_size/runs
    python -m experiments.gamma_table --checkpoints sudoku-itrsa-cpu   # given trained models (shipped name, .npz
                                                                       # or run dir) by kind, norm and N
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

from experiments import common
from experiments.sudoku_sweep import (CHECKPOINT_HELP, OSCILLATOR_MODELS, add_training_flags, learned_gamma,
                                      load_checkpoints, load_sets, mean_std, norm_chunk, oscillator_key,
                                      oscillator_train_config, train_variant)
from rsa_jax.configs import OSCILLATOR_CPU, OSCILLATOR_FULL, apply_preset
from rsa_jax.runs import latest_step
from rsa_jax.train import load_model

#: Table S.1 of the paper (appendix OCR, /work/shared/reference/paper_appendix_ocr.txt), ItrSA with
#: oscillator-wise RMSNorm: N -> ((mean |gamma|, std), (max |gamma|, std)) over seeds. Copied as the
#: OCR reads them (N = 8: mean 0.031 but max 0.052 with std 0.0000; N = 512: "0.8114+0.0002" read as
#: 0.811 ± 0.0002).
PAPER = {4: ((0.229, 0.0004), (0.229, 0.0004)), 8: ((0.031, 0.0017), (0.052, 0.0000)),
         16: ((0.098, 0.0062), (0.098, 0.0062)), 32: ((0.348, 0.0004), (0.348, 0.0004)),
         64: ((0.489, 0.0006), (0.489, 0.0006)), 128: ((0.841, 0.0000), (0.841, 0.0000)),
         256: ((0.738, 0.0004), (0.738, 0.0004)), 512: ((0.811, 0.0002), (0.811, 0.0002))}
CLAIM = "paper (Table S.1): trained ItrSA has small gains, max_j |gamma_j| < 1"

MODELS = {k: OSCILLATOR_MODELS[k] for k in ("itrsa", "akorn_rmsnorm")}
_KEYS = ("d", "heads", "ns", "seeds", "epochs", "batch_size", "lr", "train_limit", "id_limit")
#: the presets of experiments.oscillator_size (shared runs need the same training settings)
CPU = {k: OSCILLATOR_CPU[k] for k in _KEYS}
FULL = {k: OSCILLATOR_FULL[k] for k in _KEYS}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.make_parser("gamma_table", __doc__ + "\nDefaults are CPU-sized and equal to "
                           "experiments.oscillator_size's (so runs are shared); [cpu X, full Y] as there.")
    p.add_argument("--full", action="store_true",
                   help="paper settings (those of oscillator_size --full): D=512, H=8, N=4..512, 100 epochs, "
                        "all data, 5 seeds (accelerator)")
    p.add_argument("--runs-from", type=Path, default=None, metavar="DIR",
                   help="read runs DIR/<model>_N<N>/seed_<s> (as experiments.oscillator_size writes them under "
                        "<its out>/runs) and train the missing ones there (default: <out>/runs)")
    g = p.add_argument_group("models")
    g.add_argument("--models", nargs="+", choices=list(MODELS), default=["itrsa"],
                   help="itrsa = ItrSA with oscillator-wise RMSNorm (Table S.1); akorn_rmsnorm = AKOrN with "
                        "RMSNorm_N in place of Pi_N (default: itrsa)")
    g.add_argument("--ns", nargs="+", type=int, default=None,
                   help=f"oscillator sizes N (even, dividing D) [cpu {CPU['ns']}, full {FULL['ns']}]")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--heads", type=int, default=None,
                   help=f"attention heads H [cpu {CPU['heads']}, full {FULL['heads']}]")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="NAME_OR_PATH",
                   help=f"trained models to read instead of the --models x --ns runs ({CHECKPOINT_HELP}); grouped "
                        "by kind and norm, then by N, as their configs say; models without an RMSNorm gamma are "
                        "skipped with a note")
    g = p.add_argument_group("training (only for missing runs)")
    add_training_flags(g, CPU, FULL)
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the presets and checks N against D."""
    apply_preset(args, FULL if args.full else CPU)
    if args.runs_from is None:
        args.runs_from = Path(args.out) / "runs"
    bad = [n for n in args.ns if n < 2 or args.d % n or n % 2]
    if bad:
        raise SystemExit(f"oscillator sizes {bad} must be even and divide D={args.d}")
    if args.d % args.heads:
        raise SystemExit(f"--heads {args.heads} must divide D={args.d}")
    return args


# ------------------------------------------------------------------------------------- pieces
def run_dir(args, key: str, n: int, seed: int) -> Path:
    """``<runs-from>/<key>_N<n>/seed_<seed>``."""
    return Path(args.runs_from) / f"{key}_N{n}" / f"seed_{seed}"


def _differences(cfg, expected) -> list:
    """Settings of a loaded run's ``TrainConfig`` that differ from ``expected`` (model fields included)."""
    keys = ("t_train", "batch_size", "epochs", "lr")
    diff = [f"{k}: {getattr(cfg, k)!r} (expected {getattr(expected, k)!r})" for k in keys
            if getattr(cfg, k) != getattr(expected, k)]
    got, want = dataclasses.asdict(cfg.model), dataclasses.asdict(expected.model)
    return diff + [f"model.{k}: {got.get(k)!r} (expected {v!r})" for k, v in want.items() if got.get(k) != v]


def load_existing(args, key: str, n: int) -> dict:
    """``{seed: record}`` of the runs of ``(key, n)`` that exist (config.json and a checkpoint)."""
    expected = oscillator_train_config(args, key, n)
    found = {}
    for s in args.seeds:
        path = run_dir(args, key, n, s)
        if args.retrain or latest_step(path) is None:
            continue
        try:
            model, cfg = load_model(path)
        except FileNotFoundError:
            continue
        diff = _differences(cfg, expected)
        if diff:
            warnings.warn(f"{path} was trained with other settings, used as it is: " + "; ".join(diff), stacklevel=2)
        found[s] = gamma_record(model, s, path, "loaded", step=latest_step(path), config_matches=not diff,
                                differences=diff, model_config=dataclasses.asdict(cfg.model))
    return found


def gamma_record(model, seed: int, path, source: str, **extra) -> dict:
    """mean / max |gamma| of one model with where it came from."""
    g = learned_gamma(model)
    if g is None:
        raise ValueError(f"{path}: the model has no RMSNorm gamma (norm={model.config.norm!r})")
    root_n = float(np.sqrt(norm_chunk(model.config)))
    return {"seed": seed, "run_dir": str(path), "source": source, **g,
            "gamma_abs_max_rms": g["gamma_abs_max"] / root_n, "gamma_rms_init": model.config.gamma_init / root_n,
            **extra}


def collect(args, key: str, n: int, sets_fn) -> list:
    """Records of every seed of ``(key, n)``: existing runs loaded, missing ones trained."""
    found = load_existing(args, key, n)
    missing = [s for s in args.seeds if s not in found]
    if missing:
        sets = sets_fn()
        cfg = oscillator_train_config(args, key, n)
        for s, model, path in train_variant(cfg, Path(args.runs_from) / f"{key}_N{n}", missing, sets["train"],
                                            sets["id"], retrain=args.retrain):
            found[s] = gamma_record(model, s, path, "trained", step=latest_step(path), config_matches=True,
                                    differences=[], model_config=dataclasses.asdict(cfg.model))
    return [found[s] for s in args.seeds]


def run_checkpoints(given: list) -> tuple:
    """Gamma records of the trained models ``given`` (``[(label, model, train_config)]``), grouped by variant
    (kind and norm, ``oscillator_key``) and N, the chunk of their normalization (``state_chunk``: AKOrN's
    ``n``, ItrSA's ``norm_n``; D for ItrSA's RMSNorm over the whole token), as their configs say. Models are
    pooled as seeds of one row only when their model configs are equal but for N; a variant whose models
    differ otherwise (e.g. in H) gets one group per config, its key followed by what sets it apart (``heads=2``).

    Returns:
      ``(results {group: {N: ...}}, skipped [{"checkpoint", "reason"}])``: models without an RMSNorm gamma are
      skipped.
    """
    groups, skipped = {}, []
    for label, model, cfg in given:
        m = model.config
        if learned_gamma(model) is None:
            skipped.append({"checkpoint": label, "reason": f"no RMSNorm gamma (kind={m.kind}, norm={m.norm})"})
            print(f"note: {label} skipped: {skipped[-1]['reason']}")
            continue
        rec = gamma_record(model, cfg.seed, label, "given", checkpoint=label, model_config=dataclasses.asdict(m))
        print(f"[{label}] N={norm_chunk(m)}: mean |gamma| {rec['gamma_abs_mean']:.4f}, max |gamma| "
              f"{rec['gamma_abs_max']:.4f}; RMS convention (/ sqrt(N)): max {rec['gamma_abs_max_rms']:.4f}, "
              f"init {rec['gamma_rms_init']:.4f}")
        conf = tuple((f, v) for f, v in dataclasses.asdict(m).items() if f not in ("d", "n", "norm_n"))  # N: rows
        groups.setdefault((oscillator_key(m), conf), {}).setdefault(str(norm_chunk(m)), []).append(rec)
    if not groups:
        raise SystemExit("--checkpoints: none of the models has an RMSNorm gamma")
    results = {_group_name(key, dict(conf), [dict(c) for k, c in groups if k == key]): {
        n: {"checkpoints": [r["checkpoint"] for r in recs], "seeds": recs, **summarize(recs)}
        for n, recs in sorted(per_n.items(), key=lambda kv: int(kv[0]))} for (key, conf), per_n in groups.items()}
    return results, skipped


def _group_name(key: str, conf: dict, confs: list) -> str:
    """``key``, or where its variant has several configs ``confs``, ``key`` and the fields in which ``conf``
    differs from another of them."""
    fields = [f for f in conf if any(c[f] != conf[f] for c in confs)]
    return f"{key} ({', '.join(f'{f}={conf[f]}' for f in fields)})" if fields else key


def model_name(key: str) -> str:
    """Display name of a model variant (``OSCILLATOR_MODELS``) or of a group of given checkpoints (its key)."""
    return OSCILLATOR_MODELS[key][0] if key in OSCILLATOR_MODELS else key


def summarize(seeds: list) -> dict:
    """Mean and std over seeds of mean |gamma| and max |gamma|."""
    out = {}
    for k in ("gamma_abs_mean", "gamma_abs_max", "gamma_abs_max_rms"):
        out[k + "_mean"], out[k + "_std"] = mean_std([r[k] for r in seeds])
    return out


def markdown_table(rows, headers) -> str:
    """A GitHub-flavoured Markdown table."""
    line = lambda r: "| " + " | ".join(str(c) for c in r) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(r) for r in rows])


def table_rows(results: dict) -> list:
    """Markdown rows: ours (mean ± std over seeds) beside the paper's Table S.1."""
    rows = []
    for key, per_n in results.items():
        for n, res in sorted(per_n.items(), key=lambda kv: int(kv[0])):
            paper = PAPER.get(int(n)) if key == "itrsa" else None
            fmt = lambda m, s: f"{m:.3f} ± {s:.4f}"
            name = f"{', '.join(res['checkpoints'])} ({model_name(key)})" if "checkpoints" in res else model_name(key)
            rows.append([name, n, fmt(res["gamma_abs_mean_mean"], res["gamma_abs_mean_std"]),
                         fmt(res["gamma_abs_max_mean"], res["gamma_abs_max_std"]),
                         f"{fmt(res['gamma_abs_max_rms_mean'], res['gamma_abs_max_rms_std'])} (init "
                         + "/".join(f"{v:.3f}" for v in sorted({r['gamma_rms_init'] for r in res['seeds']})) + ")",
                         fmt(*paper[0]) if paper else "-", fmt(*paper[1]) if paper else "-",
                         "yes" if max(r["gamma_abs_max"] for r in res["seeds"]) < 1 else "no",
                         len(res["seeds"]), ", ".join(sorted({r["source"] for r in res["seeds"]}))])
    return rows


def plot(results: dict, path: Path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (i, stat) in zip(axes, enumerate(("mean", "max"))):
        for key, per_n in results.items():
            ns = sorted(per_n, key=int)
            given = [c for n in ns for c in per_n[n].get("checkpoints", [])]
            ax.errorbar([int(n) for n in ns], [per_n[n][f"gamma_abs_{stat}_mean"] for n in ns],
                        yerr=[per_n[n][f"gamma_abs_{stat}_std"] for n in ns], marker="o", capsize=3,
                        label=f"{model_name(key)} ({', '.join(given) if given else 'this run'})")
        pn = sorted(PAPER)
        ax.errorbar(pn, [PAPER[n][i][0] for n in pn], yerr=[PAPER[n][i][1] for n in pn], marker="s", ls="--",
                    capsize=3, color="gray", label="ItrSA (paper, Table S.1)")
        ax.axhline(1.0, color="red", lw=0.8, ls=":", label="|gamma| = 1")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("oscillator size N")
        ax.set_ylabel(f"{stat}_j |gamma_j|")
        ax.set_title(f"{stat} |gamma| of RMSNorm_N", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, path)


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    args = resolve(parse_args(argv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    cache = {}

    def sets_fn():  # data only when something has to be trained
        if not cache:
            cache.update(load_sets(args.data_dir, train=args.train_limit, id=args.id_limit))
        return cache

    if args.checkpoints:
        results, skipped = run_checkpoints(load_checkpoints(args.checkpoints))
    else:
        results, skipped = {}, []
        for key in args.models:
            results[key] = {}
            for n in args.ns:
                t0 = time.time()
                seeds = collect(args, key, n, sets_fn)
                results[key][str(n)] = {"seeds": seeds, **summarize(seeds), "seconds": time.time() - t0}
                print(f"[{key} N={n}] mean |gamma| {results[key][str(n)]['gamma_abs_mean_mean']:.4f}, max |gamma| "
                      f"{results[key][str(n)]['gamma_abs_max_mean']:.4f} ({', '.join(r['source'] for r in seeds)}; "
                      f"{time.time() - t0:.0f}s)", flush=True)
    headers = ["model", "N", "mean_j abs(gamma_j) (ours)", "max_j abs(gamma_j) (ours)",
               "max_j abs(gamma_j) / sqrt(N) (ours, RMS convention)", "mean (paper)", "max (paper)", "max < 1",
               "seeds", "runs"]
    rows = table_rows(results)
    print(markdown_table(rows, headers))
    held = sum(r[7] == "yes" for r in rows)
    print(f"claim: {CLAIM}\nthis run: max_j |gamma_j| < 1 in {held} of {len(rows)} (model, N) rows (every seed)")
    plot(results, out / "gamma_table.png")
    js = common.save_json({"args": vars(args), "claim": CLAIM, "paper": PAPER, "results": results,
                           "skipped": skipped, "table": {"headers": headers, "rows": rows},
                           "claim_holds_rows": [held, len(rows)],
                           "seconds": time.time() - t_start}, out / "gamma_table.json")
    common.announce([js, out / "gamma_table.png"])
    print(f"total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
