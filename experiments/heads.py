"""Fig. S.1: number of attention heads H vs. Lyapunov exponents and OOD accuracy (ItrSA with RMSNorm).

The claims about H, which this script checks:

* the paper's text (appendix, Fig. S.1a): "the number of heads has little to no impact on the
  Lyapunov exponents" (SPEC.md, "Lyapunov exponents": heads barely move the LE but matter for
  accuracy; an earlier SPEC.md read "more heads -> higher mean LE and accuracy").

The paper also claims (Fig. S.1b) that H = 1, 2 perform poorly on OOD Sudoku and H = 8 or 16 best.

For every model variant and H this script

1. trains on SATNet (``experiments.sudoku_sweep.train_variant``; several seeds at once),
2. computes the maximum and the mean Lyapunov exponent of the trained pure step at T = 16 on one
   RRN test puzzle (``model_lyapunov``: QR method with refinement sweeps, the radial null directions
   of the normalization excluded). The paper's *mean LE* needs the full spectrum of ``81 D``
   exponents: ``--lyap-k full`` (the CPU default, small D) computes it; a number ``k`` (the --full
   default, D = 512 has 41,472 exponents) computes the leading ``k`` and ``mean_le`` is then the mean
   of those ``k`` only, which the output states (``mean_le_over``),
3. evaluates OOD board and cell accuracy on RRN test at every T_eval of one rollout, and ID
   (SATNet test) accuracy (``rsa_jax.evaluate.evaluate_boards``).

Model variants (``--models``):

* ``itrsa`` ``ModelConfig(kind="itrsa", heads=H, n=N, norm="rmsnorm", norm_n=--norm-n)``: ItrSA with
  RMSNorm over the whole token by default (``--norm-n`` for oscillator-wise RMSNorm)
* ``akorn`` ``ModelConfig(kind="akorn", heads=H, n=N, norm="pi")``: AKOrN (Pi_N)

Positions are GTA rotations of channel pairs inside each head, so the head width D/H must be even.

Outputs under ``--out``: ``heads.json`` (all numbers, settings, exponents), ``heads.png`` (a: max
and mean LE vs H, log2 x; b, c: OOD board and cell accuracy vs T_eval, one curve per H), a
printed table; training runs under ``<out>/runs/<model>_H<H>/seed_<s>`` (re-running reuses them;
``--retrain`` starts afresh).

    python -m experiments.heads                  # CPU default: D=16, H in {1, 2, 4, 8}, full spectrum
    python -m experiments.heads --full           # paper size (accelerator)
    python -m experiments.heads --checkpoints sudoku-itrsa-cpu   # given trained models (shipped name, .npz or
                                                                 # run dir), grouped by their H; no training
    python -m experiments.heads --manifests sudoku-itrsa-cpu sudoku-itrsa-h1-cpu   # shipped models' manifests

``--manifests`` computes nothing: it reads what ``experiments.claims_runs`` wrote into the manifests of
shipped models (max LE and the paper's mean LE at T = 16 on SATNet test puzzle 0, ID and OOD curves
of ``experiments.sudoku_ood``), groups them by kind, norm and regularizer, then by H, and draws the same
figure in seconds. Their exponents are those of ``experiments.lyapunov`` (``--k 32 --paper-mean``),
not this script's ``--lyap-*`` settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from experiments import common
from experiments.sudoku_sweep import (CHECKPOINT_HELP, add_ood_eval_flags, add_training_flags,
                                      adopt_checkpoint_settings, load_checkpoints, load_sets, lyapunov_puzzle,
                                      mean_std, model_group, model_lyapunov, plot_curve, train_variant)
from rsa_jax.configs import apply_preset
from rsa_jax.evaluate import evaluate_boards
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.train import TrainConfig

MODELS = {
    "itrsa": ("ItrSA (RMSNorm)", lambda d, h, n, norm_n: ModelConfig(kind="itrsa", d=d, heads=h, n=n,
                                                                       norm="rmsnorm", norm_n=norm_n)),
    "akorn": ("AKOrN (Pi_N)", lambda d, h, n, norm_n: ModelConfig(kind="akorn", d=d, heads=h, n=n, norm="pi")),
}

#: CPU default (a few minutes; the full spectrum of 81 D = 1296 exponents takes ~15 s per model with one
#: OpenBLAS thread) and paper (--full) settings. H = 8 needs D >= 16 (the head width D/H must be even).
CPU = dict(d=16, heads=[1, 2, 4, 8], seeds=[0], epochs=2, batch_size=20, lr=3e-3, train_limit=400, id_limit=100,
           eval_limit=100, t_eval=[16, 32, 64, 128], lyap_k="full", lyap_sweeps=1)
FULL = dict(d=512, heads=[1, 2, 4, 8, 16, 32], seeds=[0, 1, 2], epochs=100, batch_size=100, lr=None,
            train_limit=None, id_limit=None, eval_limit=None, t_eval=[16, 32, 64, 128, 256, 512, 1024, 2048],
            lyap_k=64, lyap_sweeps=2)

CLAIMS = ("paper text (Fig. S.1a): the number of heads has little to no impact on the Lyapunov exponents",
          "paper (Fig. S.1b): H = 1, 2 perform poorly, H = 8 or 16 best (OOD accuracy)")


def _lyap_k(s: str):
    if s.lower() in ("full", "none", "all"):
        return "full"
    k = int(s)
    if k < 1:
        raise argparse.ArgumentTypeError(f"--lyap-k must be >= 1 or 'full'; got {s}")
    return k


def parse_args(argv=None) -> argparse.Namespace:
    p = common.make_parser("heads", __doc__ + "\nDefaults are CPU-sized; where a flag shows [cpu X, full Y], "
                           "--full switches to the paper's value. --seed offsets the PRNG keys of the evaluation "
                           "noise and the Lyapunov start (training seeds: --seeds).")
    p.add_argument("--full", action="store_true",
                   help="paper settings: D=512, H in {1,...,32}, 100 epochs on all 9,000 SATNet puzzles, 3 seeds, "
                        "all 18,000 RRN test puzzles, T_eval up to 2048, leading 64 exponents (accelerator)")
    g = p.add_argument_group("models")
    g.add_argument("--models", nargs="+", choices=list(MODELS), default=["itrsa"],
                   help="itrsa = ItrSA with RMSNorm (the figure's model); akorn = AKOrN with Pi_N (default: itrsa)")
    g.add_argument("--heads", nargs="+", type=int, default=None,
                   help=f"head counts H swept; each must divide D with D/H even "
                        f"[cpu {CPU['heads']}, full {FULL['heads']}]")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--n", type=int, default=4,
                   help="oscillator size N: readout chunks of both models, AKOrN's Pi_N (even, divides D; default: 4)")
    g.add_argument("--norm-n", type=int, default=None,
                   help="ItrSA: chunk size of the RMSNorm (default: the whole token, the paper's ItrSA)")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="NAME_OR_PATH",
                   help=f"trained models to analyse instead of training --models x --heads ({CHECKPOINT_HELP}); "
                        "grouped by kind and norm, then by H, as their configs say; T_train and D are theirs")
    g.add_argument("--manifests", nargs="+", default=None, metavar="NAME",
                   help="shipped models (rsa_jax.pretrained names) whose manifests hold their exponents and "
                        "curves: draw the figure from those, computing nothing")
    g = p.add_argument_group("training")
    add_training_flags(g, CPU, FULL)
    g = p.add_argument_group("evaluation")
    add_ood_eval_flags(g, CPU, FULL)
    g = p.add_argument_group("Lyapunov exponents")
    g.add_argument("--lyap-t", type=int, default=16, help="horizon T of the finite-time exponents (default: 16)")
    g.add_argument("--lyap-k", type=_lyap_k, default=None,
                   help="'full' = the whole spectrum of 81*D exponents (the paper's mean LE; O((81 D)^3) per "
                        "step), or the number k of leading exponents (then mean LE = mean of those k) "
                        f"[cpu {CPU['lyap_k']}, full {FULL['lyap_k']}]")
    g.add_argument("--lyap-sweeps", type=int, default=None,
                   help="refinement sweeps of the QR start (1 gives the exact B.3 spectrum for 'full') "
                        f"[cpu {CPU['lyap_sweeps']}, full {FULL['lyap_sweeps']}]")
    g.add_argument("--lyap-puzzle", type=int, default=0, help="index of the RRN test puzzle used (default: 0)")
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the CPU or --full presets and checks H, N against D."""
    apply_preset(args, FULL if args.full else CPU)
    if args.t_train not in args.t_eval and not args.checkpoints:  # with --checkpoints: their T_train, in main
        args.t_eval = sorted(set(args.t_eval) | {args.t_train})
    bad = [h for h in args.heads if h < 1 or args.d % h or (args.d // h) % 2]
    if bad:
        raise SystemExit(f"head counts {bad} must divide D={args.d} with an even head width D/H "
                         "(GTA positions rotate channel pairs)")
    for name, n in (("--n", args.n), ("--norm-n", args.norm_n)):
        if n is not None and (n < 2 or args.d % n or n % 2):
            raise SystemExit(f"{name} {n} must be even and divide D={args.d}")
    return args


def train_config(args, key: str, heads: int) -> TrainConfig:
    """Training config of model variant ``key`` with ``heads`` heads."""
    return TrainConfig(model=MODELS[key][1](args.d, heads, args.n, args.norm_n), t_train=args.t_train,
                       batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, progress=False, eval_every=0,
                       checkpoint_every=0, keep_checkpoints=1, log_every=10, data_dir=args.data_dir)


def mean_le_over(args) -> str:
    """What ``mean_le`` averages, in words."""
    if args.lyap_k == "full":
        return "full spectrum: mean of the M = 81 D - (null directions) exponents (the paper's mean LE, B.3)"
    return (f"leading k={args.lyap_k} exponents only (of 81 D = {81 * args.d}; not the paper's full-spectrum "
            "mean LE, which needs --lyap-k full)")


# ------------------------------------------------------------------------------------- pieces
def evaluate_seed(model, s: int, sets: dict, args) -> dict:
    """OOD / ID accuracies and Lyapunov exponents of one trained model (seed ``s``)."""
    key = lambda offset: jax.random.PRNGKey(args.seed * 10_000 + offset + s)
    ev = evaluate_boards(model, sets["ood"], args.t_eval, batch_size=args.eval_batch_size, key=key(1000))
    ev_id = evaluate_boards(model, sets["id"], [args.t_train], batch_size=args.eval_batch_size, key=key(2000))
    digits, given = lyapunov_puzzle(sets["ood"], args.lyap_puzzle)
    le = model_lyapunov(model, digits, given, T=args.lyap_t, k=None if args.lyap_k == "full" else args.lyap_k,
                        sweeps=args.lyap_sweeps, key=key(3000))
    return {"seed": s, "t_eval": ev["steps"], "ood_board_acc": ev["board_acc"], "ood_cell_acc": ev["cell_acc"],
            "id_board_acc": ev_id["board_acc"][0], "id_cell_acc": ev_id["cell_acc"][0], **le}


def summarize(seeds: list) -> dict:
    """Mean and std over seeds of the LEs and accuracies of one (model, H)."""
    out = {}
    for k in ("max_le", "mean_le", "id_board_acc", "id_cell_acc"):
        out[k + "_mean"], out[k + "_std"] = mean_std([r[k] for r in seeds])
    for k in ("ood_board_acc", "ood_cell_acc"):
        m, s = mean_std([r[k] for r in seeds])
        out[k + "_mean"], out[k + "_std"] = np.atleast_1d(m).tolist(), np.atleast_1d(s).tolist()
    return out


def trend(hs, values) -> float:
    """Least-squares slope of ``values`` against ``log2 H`` (0 for a single H)."""
    x = np.log2(np.asarray(hs, np.float64))
    return float(np.polyfit(x, np.asarray(values, np.float64), 1)[0]) if len(set(hs)) > 1 else 0.0


def model_name(key: str) -> str:
    """Display name of a model variant (``MODELS``) or of a group of given checkpoints (its key)."""
    return MODELS[key][0] if key in MODELS else key


def check_claims(results: dict, args) -> list:
    """One line per model: LE trends against log2 H and the H with the best OOD accuracy at max T_eval."""
    lines = []
    for key, per_h in results.items():
        hs = sorted(per_h, key=int)
        mx = [per_h[h]["max_le_mean"] for h in hs]
        mn = [per_h[h]["mean_le_mean"] for h in hs]
        board = [per_h[h]["ood_board_acc_mean"][-1] for h in hs]
        cell = [per_h[h]["ood_cell_acc_mean"][-1] for h in hs]
        lines.append(f"{model_name(key)}: max LE {min(mx):+.3f}..{max(mx):+.3f} (slope {trend(hs, mx):+.4f} per "
                     f"doubling of H), mean LE {min(mn):+.3f}..{max(mn):+.3f} (slope {trend(hs, mn):+.4f}); "
                     f"best OOD at T={max(args.t_eval)}: board H={hs[int(np.argmax(board))]} "
                     f"({100 * max(board):.1f}%), cell H={hs[int(np.argmax(cell))]} ({100 * max(cell):.1f}%)")
    return lines


# ------------------------------------------------------------------------------------- plot
def plot(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    keys = list(results)
    fig, axes = plt.subplots(len(keys), 3, figsize=(14, 3.8 * len(keys)), squeeze=False)
    for r, key in enumerate(keys):
        hs = sorted(results[key], key=int)
        ax = axes[r, 0]
        for metric, label, marker in (("max_le", "max LE", "o"), ("mean_le", "mean LE", "s")):
            les = np.asarray([[s[metric] for s in results[key][h]["seeds"]] for h in hs])
            ax.errorbar([int(h) for h in hs], les.mean(1), yerr=les.std(1) if les.shape[1] > 1 else None,
                        marker=marker, capsize=3, label=label)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(h) for h in hs], [str(h) for h in hs])
        ax.set_xlabel("attention heads H")
        ax.set_ylabel(f"Lyapunov exponent (T={args.lyap_t})")
        k = "full spectrum" if args.lyap_k == "full" else f"mean of leading {args.lyap_k}"
        ax.set_title(f"(a) {model_name(key)}: LEs vs H (mean LE: {k})", fontsize=9)
        ax.legend(fontsize=8)
        for c, (metric, label) in enumerate((("ood_board_acc", "(b) OOD board acc."),
                                             ("ood_cell_acc", "(c) OOD cell acc.")), start=1):
            ax = axes[r, c]
            for i, h in enumerate(hs):
                res = results[key][h]
                curve = f"H={h}" + (f" ({', '.join(res['checkpoints'])})" if "checkpoints" in res else "")
                plot_curve(ax, res["seeds"][0]["t_eval"], [s[metric] for s in res["seeds"]], curve,
                           color=plt.get_cmap("viridis")(0.1 + 0.8 * i / max(len(hs) - 1, 1)))
            ax.axvline(args.t_train, color="gray", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("T_eval")
            ax.set_ylabel(label[4:] + " (RRN test) [%]")
            ax.set_title(f"{label}, {model_name(key)}", fontsize=9)
            ax.legend(fontsize=7)
        for ax in axes[r]:
            ax.grid(alpha=0.3)
    fig.suptitle(f"Number of heads H (D={args.d}, T_train={args.t_train}, {len(args.seeds)} seed(s))", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


# ------------------------------------------------------------------------------------- main
def _pm(res: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    """``mean±std`` of ``res[key + "_mean" / "_std"]`` (std only over several seeds)."""
    m, s = scale * res[key + "_mean"], scale * res[key + "_std"]
    return f"{m:{fmt}}" + (f"±{s:.2g}" if len(res["seeds"]) > 1 else "")


def run_model(key: str, sets: dict, args) -> tuple:
    """Trains and analyses one model variant at every H; returns ``(results {H: ...}, table rows)``."""
    results, rows = {}, []
    for h in args.heads:
        t0 = time.time()
        runs = train_variant(train_config(args, key, h), Path(args.out) / "runs" / f"{key}_H{h}", args.seeds,
                             sets["train"], sets["id"], retrain=args.retrain)
        t_train = time.time() - t0
        seeds = [dict(evaluate_seed(model, s, sets, args), run_dir=str(run_dir)) for s, model, run_dir in runs]
        res = results[str(h)] = {"seeds": seeds, **summarize(seeds), "train_seconds": t_train,
                                 "seconds": time.time() - t0}
        report(rows, MODELS[key][0], key, h, args.d // h, res, args)
    return results, rows


def run_checkpoints(given: list, sets: dict, args) -> tuple:
    """Analyses the trained models ``given`` (``[(label, model, train_config)]``, no training), grouped by
    kind and norm, then by H, as their configs say; returns ``(results {group: {H: ...}}, table rows)``."""
    groups = {}
    for label, model, cfg in given:
        groups.setdefault(model_group(model.config), {}).setdefault(model.config.heads, []).append((label, model, cfg))
    results, rows = {}, []
    for key, per_h in groups.items():
        results[key] = {}
        for h in sorted(per_h):
            t0 = time.time()
            seeds = [dict(evaluate_seed(model, cfg.seed, sets, args), checkpoint=label,
                          model_config=dataclasses.asdict(model.config)) for label, model, cfg in per_h[h]]
            names = [label for label, _, _ in per_h[h]]
            res = results[key][str(h)] = {"checkpoints": names, "seeds": seeds, **summarize(seeds),
                                          "seconds": time.time() - t0}
            report(rows, f"{', '.join(names)} ({key})", ", ".join(names), h, per_h[h][0][1].config.d // h, res,
                   args)
    return results, rows


def group_of(m: dict) -> str:
    """Group of a shipped model in the figure, from its manifest: kind, norm and regularizer (``model_group``
    plus `` R_<penalty> lam=<lambda>`` when trained with one); models of one group differ in H only."""
    group = model_group(ModelConfig(**m["model"]))
    mc, t = m["model"], m.get("training") or {}
    group += "".join(f" {k}={mc[k]}" for k in ("orthogonal_vo", "symmetric") if mc.get(k))
    group += f" gamma_init={mc['gamma_init']:g}" if mc.get("gamma_init", 1.0) != 1.0 else ""
    return group + (f" R_{t['penalty']} lam={t['penalty_lam']:g}" if t.get("penalty", "none") != "none" else "")


def manifest_record(name: str, m: dict) -> dict:
    """One model's entry (the ``seeds`` record of ``evaluate_seed``) from its manifest, or SystemExit naming
    the commands that fill what is missing."""
    from experiments.le_vs_ood import missing_note, point
    le, acc = m.get("lyapunov"), m.get("accuracy") or {}
    if not le or "ood" not in acc or "id" not in acc:
        raise SystemExit(f"{name}: the manifest lacks {'lyapunov' if not le else 'accuracy'}; to fill it: "
                         f"{missing_note(point(name)) or f'python -m experiments.claims_runs train --only {name}'}")
    t_train, ids = m["training"]["t_train"], acc["id"]
    if t_train not in ids["steps"]:
        raise SystemExit(f"{name}: no ID accuracy at T_train = {t_train} (steps {ids['steps']})")
    i = ids["steps"].index(t_train)
    ood = acc["ood"]
    return {"seed": m["training"].get("seed", 0), "checkpoint": name, "t_eval": ood["steps"],
            "ood_board_acc": ood["board_acc"], "ood_cell_acc": ood["cell_acc"], "id_board_acc": ids["board_acc"][i],
            "id_cell_acc": ids["cell_acc"][i], "max_le": le["max_le"],
            "mean_le": le.get("mean_le", le.get("mean_le_leading_k")), "le_T": le["T"], "le_k": le.get("k"),
            "paper_mean": "mean_le" in le}


def run_manifests(args) -> tuple:
    """The figure's results from the manifests of the shipped models ``args.manifests`` (grouped by
    ``group_of``, then by H); sets ``args`` (D, T_train, T_eval, LE horizon and k) from them. Returns
    ``(results {group: {H: ...}}, table rows)``."""
    from rsa_jax import pretrained
    groups, shared = {}, {}
    for name in args.manifests:
        try:
            m = pretrained.manifest(name)
        except KeyError as e:
            raise SystemExit(e.args[0]) from None
        rec = manifest_record(name, m)
        for key, value in (("d", m["model"]["d"]), ("t_train", m["training"]["t_train"]),
                           ("t_eval", rec["t_eval"]), ("lyap_t", rec["le_T"]), ("paper_mean", rec["paper_mean"])):
            if shared.setdefault(key, value) != value:
                raise SystemExit(f"--manifests: {name} has {key} = {value}, the others {shared[key]}; "
                                 "draw such models in separate runs")
        groups.setdefault(group_of(m), {}).setdefault(m["model"]["heads"], []).append(rec)
    args.d, args.t_train, args.t_eval, args.lyap_t = shared["d"], shared["t_train"], shared["t_eval"], shared["lyap_t"]
    args.lyap_k = "full" if shared["paper_mean"] else rec["le_k"]
    args.seeds = sorted({r["seed"] for per_h in groups.values() for recs in per_h.values() for r in recs})
    args.heads = sorted({h for per_h in groups.values() for h in per_h})
    results, rows = {}, []
    for key, per_h in groups.items():
        results[key] = {}
        for h in sorted(per_h):
            names = [r["checkpoint"] for r in per_h[h]]
            res = results[key][str(h)] = {"checkpoints": names, "seeds": per_h[h], **summarize(per_h[h]),
                                          "seconds": 0.0}
            report(rows, f"{', '.join(names)} ({key})", ", ".join(names), h, args.d // h, res, args)
    return results, rows


def report(rows: list, name: str, tag: str, h: int, head_width: int, res: dict, args):
    """Appends the table row of one (model, H) result ``res`` to ``rows`` and prints its line (``[tag H=h]``)."""
    ob, oc = res["ood_board_acc_mean"], res["ood_cell_acc_mean"]
    rows.append([name, h, head_width, _pm(res, "max_le", "+.3f"), _pm(res, "mean_le", "+.3f"),
                 _pm(res, "id_board_acc", ".1f", 100),
                 f"{100 * ob[0]:.1f}", f"{100 * ob[-1]:.1f}", f"{100 * oc[0]:.1f}", f"{100 * oc[-1]:.1f}",
                 f"{res['seconds']:.0f}"])
    print(f"[{tag} H={h}] max LE {res['max_le_mean']:+.3f}, mean LE {res['mean_le_mean']:+.3f}; OOD board "
          f"{np.round(100 * np.asarray(ob), 1).tolist()}, cell {np.round(100 * np.asarray(oc), 1).tolist()} "
          f"at T={args.t_eval}; {res['seconds']:.0f}s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.manifests and args.checkpoints:
        raise SystemExit("--manifests and --checkpoints exclude each other (read the manifests, or recompute)")
    if args.manifests:
        apply_preset(args, CPU)
    else:
        args = resolve(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if args.manifests:
        return finish(args, *run_manifests(args), t_start)
    given = load_checkpoints(args.checkpoints) if args.checkpoints else None
    if given and "t_train" in adopt_checkpoint_settings(args, given, ("t_train", "d")):
        raise SystemExit("--checkpoints: the models were trained with different T_train; ID accuracy is read at "
                         "one T_train, so analyse them in separate runs")
    limits = dict(id=args.id_limit, ood=args.eval_limit) if given else dict(train=args.train_limit, id=args.id_limit,
                                                                             ood=args.eval_limit)
    sets = load_sets(args.data_dir, **limits)
    print(f"data: {', '.join(f'{k} {len(v)}' for k, v in sets.items())} puzzles; mean LE = {mean_le_over(args)}")
    if given:
        results, rows = run_checkpoints(given, sets, args)
    else:
        results, rows = {}, []
        for key in args.models:
            results[key], r = run_model(key, sets, args)
            rows += r
    return finish(args, results, rows, t_start)


def finish(args, results: dict, rows: list, t_start: float) -> dict:
    """Prints the table and the claims, draws ``heads.png``, writes ``heads.json``; returns its content."""
    out = Path(args.out)
    tmax = max(args.t_eval)
    headers = ["model", "H", "D/H", f"maxLE(T={args.lyap_t})", "meanLE" + ("" if args.lyap_k == "full" else
                                                                            f"(top {args.lyap_k})"),
               f"ID board@{args.t_train}", f"OOD board@{args.t_train}", f"OOD board@{tmax}",
               f"OOD cell@{args.t_train}", f"OOD cell@{tmax}", "sec"]
    common.print_table(rows, headers)
    print(f"mean LE: {mean_le_over(args)}")
    print("claims:\n  " + "\n  ".join(CLAIMS))
    verdict = check_claims(results, args)
    print("this run:\n  " + "\n  ".join(verdict))
    plot(results, args, out / "heads.png")
    record = {"args": vars(args), "mean_le_over": mean_le_over(args), "claims": CLAIMS, "this_run": verdict,
              "results": results, "table": {"headers": headers, "rows": rows}, "seconds": time.time() - t_start}
    js = common.save_json(record, out / "heads.json")
    common.announce([js, out / "heads.png"])
    print(f"total {time.time() - t_start:.0f}s")
    return record


if __name__ == "__main__":
    main()
