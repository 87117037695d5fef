"""Fig. 5: regularizers vs. test-time scaling on Sudoku (ItrSA with RMSNorm, AKOrN).

Claims (paper Fig. 5, SPEC "Sudoku protocol"): the spectral regularizer R_Spec improves test-time
scaling (OOD board accuracy as T_eval grows 16 -> 2048), most of all for AKOrN; the energy
regularizer R_E-multi (with orthogonal W^V, W^O) lowers it; R_E-single fails. This script trains
the variants, selects each regularizer's weight lambda on RRN valid, reports the OOD curves on RRN
test and prints whether each claim holds in this run (decided on board accuracy; on cell accuracy,
marked so, where the board accuracies tie, e.g. at 0 for a CPU-sized model).

Variants (``--variants``; loss = CE + lambda R):

* ``none``      no regularizer (lambda = 0).
* ``spec``      R_Spec = sum_W (sigma_max(W)^2 - 1)^2 + sum_b ||b||^4 over W^Q, W^K, W^V, W^O and the
                attention biases (``rsa_jax.regularizers.SpecPenalty``; paper: 1e-4 ItrSA, 1e-5 AKOrN);
                ``--spec-layout fused`` penalizes W_qkv and W^O as the AKOrN code stores them instead.
* ``jacobian``  THIS PROJECT'S EXTENSION, not in the paper (which regularizes weights only):
                mean (||J_t||_2 - 1)^2 of the state Jacobian J_t = d step / d x at --jac-samples
                random steps of the training trajectory (``JacobianPenalty``).
* ``e_multi``   R_E-multi = sum_h ||W^V_h W^O_h - (W^V_h W^O_h)^T||_F^2 with W^V, W^O kept orthogonal
                by the model's parametrization (``ModelConfig.orthogonal_vo``, --orthogonal; paper: 1e-4).
* ``e_single``  R_E-single = ||W^V W^O - (W^V W^O)^T||_F^2, defined for ONE head only: this variant
                is always trained with H = 1, whatever --heads says (a note is printed; paper: 1e-6).

Protocol. Every variant but ``none`` is trained for every lambda of its grid (paper: chosen from
{1e-8, ..., 1e-1}). lambda is selected on RRN valid, never on test: by default the lambda with the
best validation board accuracy averaged over the T_eval grid and the seeds, ties broken by cell
accuracy averaged the same way, then by the smaller lambda (--select-by). Only the selected lambda's
models are evaluated on RRN test (OOD), at every T_eval of one rollout (``evaluate_boards``); mean
and std over seeds.

Outputs under --out: ``regularization.json`` (every lambda's validation curves and score, the
selection, the per-seed test curves, the claim checks, the settings), ``regularization.png`` (OOD
board accuracy vs T_eval, one panel per model, one curve per variant, +-1 std bands over seeds; cell
accuracy in the second row) and a printed table. Training runs live in
``<out>/runs/<model>_<variant>_lam<lambda>/seed_<s>`` (``<model>_none`` for ``none``); re-running
resumes unfinished runs and reuses finished ones (--retrain starts afresh).

Defaults are a CPU smoke size (minutes on 2 cores, almost all of it XLA compiles, one per training
run: 2 lambdas for spec, the paper's pick for e_multi and e_single; board accuracies stay at 0 and
cell accuracies near chance, so it checks the pipeline, not the claims); --full is the paper's size for a
GPU (D=512, H=8, T=16, batch 100, 100 epochs on all SATNet train, 3 seeds, all RRN valid/test, T_eval
16..2048, lambda grids around the paper's picks). Every preset value can be overridden by its flag.

    python -m experiments.regularization                              # CPU default
    python -m experiments.regularization --full                       # paper size (accelerator)
    python -m experiments.regularization --models akorn --variants none spec --lam-spec 1e-5 1e-4
    python -m experiments.regularization --checkpoints sudoku-itrsa-cpu   # given trained models (shipped name,
                                  # .npz or run dir): OOD curves only, as "baseline (given checkpoint)"; no training
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from experiments import common
from experiments.sudoku_sweep import (CHECKPOINT_HELP, adopt_checkpoint_settings, add_training_flags, load_checkpoints,
                                      load_sets, mean_std, plot_curve, train_variant)
from rsa_jax.configs import apply_preset
from rsa_jax.evaluate import PAPER_STEPS, evaluate_boards
from rsa_jax.models.sudoku import CELLS, ModelConfig
from rsa_jax.regularizers import SPEC_LAYOUTS, JacobianPenalty
from rsa_jax.train import TrainConfig

MODELS = {"itrsa": "ItrSA (RMSNorm)", "akorn": "AKOrN"}
VARIANTS = {"none": "none", "spec": "R_Spec", "jacobian": "state-Jacobian (ext.)", "e_multi": "R_E-multi",
            "e_single": "R_E-single (H=1)"}
REGULARIZED = [v for v in VARIANTS if v != "none"]

#: CPU smoke size and the paper's size (--full); explicit flags override either.
CPU = dict(d=16, heads=2, n=4, t_train=4, seeds=[0], epochs=2, batch_size=20, lr=3e-3, train_limit=300,
           id_limit=50, valid_limit=100, test_limit=100, t_eval=[16, 32, 64, 128, 256], eval_batch_size=100,
           checkpoint_every=0, eval_every=0,
           lambdas={"spec": [1e-4, 1e-2], "jacobian": [1e-2], "e_multi": [1e-4], "e_single": [1e-6]})
FULL = dict(d=512, heads=8, n=4, t_train=16, seeds=[0, 1, 2], epochs=100, batch_size=100, lr=None, train_limit=None,
            id_limit=None, valid_limit=None, test_limit=None, t_eval=list(PAPER_STEPS), eval_batch_size=500,
            checkpoint_every=900, eval_every=10,
            lambdas={"spec": [1e-6, 1e-5, 1e-4, 1e-3], "jacobian": [1e-4, 1e-3, 1e-2, 1e-1],
                     "e_multi": [1e-6, 1e-5, 1e-4, 1e-3], "e_single": [1e-7, 1e-6, 1e-5, 1e-4]})

#: --select-by: name -> (help, score of one lambda's validation curves (seeds, T) -> sortable tuple)
CRITERIA = {
    "board_mean": ("board accuracy averaged over T_eval and seeds, ties by cell accuracy averaged the same way",
                   lambda b, c: (b.mean(), c.mean())),
    "cell_mean": ("cell accuracy averaged over T_eval and seeds, ties by board accuracy",
                  lambda b, c: (c.mean(), b.mean())),
    "board_best": ("best seed-mean board accuracy over T_eval, ties by best seed-mean cell accuracy",
                   lambda b, c: (b.mean(0).max(), c.mean(0).max())),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.make_parser("regularization", __doc__ + "\nWhere a flag shows [cpu X, full Y], --full switches to "
                           "the paper's value. --seed offsets the PRNG keys of the evaluation noise (training "
                           "seeds: --seeds).")
    p.add_argument("--full", action="store_true",
                   help="paper settings: D=512, H=8, T=16, batch 100, 100 epochs on all 9,000 SATNet puzzles, "
                        "3 seeds, all RRN valid/test puzzles, T_eval 16..2048, 4 lambdas per variant (accelerator)")
    g = p.add_argument_group("models and variants")
    g.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="itrsa = ItrSA with RMSNorm, akorn = AKOrN with Pi_N (default: both)")
    g.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="none, spec (R_Spec), jacobian (state-Jacobian penalty, this project's extension), "
                        "e_multi (R_E-multi + orthogonal W^V, W^O), e_single (R_E-single, always trained with "
                        "H=1) (default: all)")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--heads", type=int, default=None,
                   help=f"attention heads H of every variant but e_single (always H=1) "
                        f"[cpu {CPU['heads']}, full {FULL['heads']}]")
    g.add_argument("--n", type=int, default=None, help=f"oscillator size N (even, divides D) [cpu {CPU['n']}, "
                                                       f"full {FULL['n']}]")
    g.add_argument("--orthogonal", choices=("cayley", "qr"), default="cayley",
                   help="parametrization keeping W^V, W^O orthogonal for e_multi (default: cayley)")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="NAME_OR_PATH",
                   help=f"trained models whose OOD (RRN test) curves are reported instead of training the variants "
                        f"({CHECKPOINT_HELP}); each is labelled 'baseline (given checkpoint)' (its penalty is "
                        "unknown), grouped by kind; no lambda selection, no claim checks")
    g = p.add_argument_group("regularizer weights lambda (a variant's own flag wins over --lambdas)")
    g.add_argument("--lambdas", nargs="+", type=float, default=None,
                   help="one lambda grid for every regularized variant (default: the per-variant grids below)")
    for v in REGULARIZED:
        g.add_argument(f"--lam-{v.replace('_', '-')}", dest=f"lam_{v}", nargs="+", type=float, default=None,
                       help=f"lambda grid of {v} [cpu {CPU['lambdas'][v]}, full {FULL['lambdas'][v]}]")
    g.add_argument("--select-by", choices=list(CRITERIA), default="board_mean",
                   help="validation criterion (RRN valid) choosing lambda; " + "; ".join(
                       f"{k}: {v[0]}" for k, v in CRITERIA.items()) + "; remaining ties: the smaller lambda "
                   "(default: board_mean)")
    g.add_argument("--spec-layout", choices=SPEC_LAYOUTS, default="separate",
                   help="matrices R_Spec penalizes: separate (W^Q, W^K, W^V, W^O taken apart), fused (W_qkv and W^O, "
                        "as the AKOrN code stores them; a lambda means something else there) or per_head "
                        "(default: separate)")
    g.add_argument("--jac-samples", type=int, default=1,
                   help="jacobian: trajectory steps penalized per training step, K <= T (default: 1)")
    g.add_argument("--jac-target", type=float, default=1.0, help="jacobian: target spectral norm (default: 1)")
    g = p.add_argument_group("training")
    add_training_flags(g, CPU, FULL)
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop every run after this many steps (default: all epochs)")
    g.add_argument("--eval-every", type=int, default=None,
                   help=f"in-training ID evaluation every this many epochs, 0: never [cpu {CPU['eval_every']}, "
                        f"full {FULL['eval_every']}]")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"checkpoint every this many steps, 0: only at the end [cpu {CPU['checkpoint_every']}, "
                        f"full {FULL['checkpoint_every']}]")
    g = p.add_argument_group("evaluation")
    g.add_argument("--t-eval", nargs="+", type=int, default=None,
                   help=f"T_eval values, read out of one rollout [cpu {CPU['t_eval']}, full {FULL['t_eval']}]")
    g.add_argument("--valid-limit", type=int, default=None,
                   help=f"first N RRN valid puzzles (lambda selection) [cpu {CPU['valid_limit']}, full all]")
    g.add_argument("--test-limit", type=int, default=None,
                   help=f"first N RRN test puzzles (OOD report) [cpu {CPU['test_limit']}, full all 18000]")
    g.add_argument("--eval-batch-size", type=int, default=None,
                   help=f"puzzles per evaluation batch [cpu {CPU['eval_batch_size']}, full {FULL['eval_batch_size']}]")
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the CPU or --full preset and checks them."""
    preset = FULL if args.full else CPU
    apply_preset(args, {k: v for k, v in preset.items() if k != "lambdas"})
    args.lambdas = {v: getattr(args, f"lam_{v}") or args.lambdas or preset["lambdas"][v] for v in REGULARIZED}
    bad = {v: lams for v, lams in args.lambdas.items() if any(lam < 0 for lam in lams)}
    if bad:
        raise SystemExit(f"lambdas must be >= 0; got {bad}")
    if args.d % args.heads or args.d % args.n or args.n % 2:
        raise SystemExit(f"need H | D and an even N | D; got D={args.d}, H={args.heads}, N={args.n}")
    if "jacobian" in args.variants and not 1 <= args.jac_samples <= args.t_train:
        raise SystemExit(f"--jac-samples must be in 1..T_train={args.t_train}; got {args.jac_samples}")
    if "e_single" in args.variants and args.heads != 1 and not args.checkpoints:
        print(f"note: e_single (R_E-single) is defined for one head and is trained with H=1; the other variants "
              f"use H={args.heads}")
    return args


# ------------------------------------------------------------------------------------- pieces
def model_config(args, kind: str, variant: str) -> ModelConfig:
    """Architecture of ``kind`` for ``variant``: e_single forces H = 1, e_multi makes W^V, W^O orthogonal."""
    return ModelConfig(kind=kind, d=args.d, heads=1 if variant == "e_single" else args.heads, n=args.n,
                       norm="rmsnorm" if kind == "itrsa" else "pi",
                       orthogonal_vo=args.orthogonal if variant == "e_multi" else None)


def train_config(args, kind: str, variant: str, lam: float = 0.0) -> TrainConfig:
    """Training config of one run; the paper's penalties are config fields (recorded in config.json)."""
    named = variant in ("spec", "e_multi", "e_single") and lam > 0
    return TrainConfig(model=model_config(args, kind, variant), t_train=args.t_train, batch_size=args.batch_size,
                       epochs=args.epochs, lr=args.lr, max_steps=args.max_steps, progress=False,
                       eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, keep_checkpoints=1,
                       log_every=10, data_dir=args.data_dir, penalty=variant if named else "none",
                       penalty_lam=lam if named else 0.0,
                       spec_layout=args.spec_layout if variant == "spec" else "separate")


def make_penalties(args, variant: str, lam: float) -> list:
    """Penalty objects that are not config fields: the state-Jacobian extension (none otherwise)."""
    if variant != "jacobian":
        return []
    # fixed-shape state: checkpoints restore without a shape change
    return [JacobianPenalty(lam, target=args.jac_target, num_samples=args.jac_samples,
                            like_shape=(args.batch_size, CELLS, args.d))]


def lambda_grid(args, variant: str) -> list:
    """``[0.0]`` for ``none``, else the variant's grid (sorted, duplicates removed)."""
    return [0.0] if variant == "none" else sorted(set(args.lambdas[variant]))


def run_name(kind: str, variant: str, lam: float, spec_layout: str = "separate") -> str:
    if variant == "none":
        return f"{kind}_none"
    layout = f"-{spec_layout}" if variant == "spec" and spec_layout != "separate" else ""
    return f"{kind}_{variant}{layout}_lam{lam:g}"


def evaluate_runs(runs: list, sudoku_set, args, offset: int) -> dict:
    """Curves of every seed's model: ``{"seeds", "steps", "board_acc" (S, T), "cell_acc" (S, T)}``."""
    out = {"seeds": [], "board_acc": [], "cell_acc": []}
    for seed, model, _ in runs:
        ev = evaluate_boards(model, sudoku_set, args.t_eval, batch_size=min(args.eval_batch_size, len(sudoku_set)),
                             key=jax.random.PRNGKey(args.seed * 10_000 + offset + seed))
        out["seeds"].append(seed)
        out["board_acc"].append(ev["board_acc"])
        out["cell_acc"].append(ev["cell_acc"])
    out["steps"] = ev["steps"]
    return out


def select_lambda(per_lambda: dict, criterion: str = "board_mean") -> tuple:
    """The lambda whose RRN valid curves score best; test numbers are never read.

    Args:
      per_lambda: ``{lam_key: {"lam": float, "valid": {"board_acc": (S, T), "cell_acc": (S, T)}, ...}}``
        (other entries, e.g. ``"test"``, are ignored).
      criterion: a key of ``CRITERIA``.

    Returns:
      ``(lam_key, {lam_key: score tuple})``; exact score ties go to the smaller lambda.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}; got {criterion!r}")
    score = CRITERIA[criterion][1]
    scores = {k: tuple(round(float(x), 12) for x in score(np.asarray(r["valid"]["board_acc"], np.float64),
                                                          np.asarray(r["valid"]["cell_acc"], np.float64)))
              for k, r in per_lambda.items()}
    best = max(per_lambda, key=lambda k: (scores[k], -per_lambda[k]["lam"]))
    return best, scores


def summarize(test: dict) -> dict:
    """Mean/std over seeds of the OOD test curves, and their averages over the T_eval grid."""
    out = {}
    for m in ("board_acc", "cell_acc"):
        mean, std = mean_std(test[m])
        out[m] = {"mean": mean, "std": std, "grid_mean": mean_std(np.mean(test[m], axis=1))}
    return out


CLAIMS = (("spec_helps", "spec", "> none", "R_Spec raises OOD test-time scaling"),
          ("e_multi_lowers", "e_multi", "< none", "R_E-multi lowers it"),
          ("e_single_fails", "e_single", "< none", "R_E-single fails (below no regularizer)"))


def check_claims(results: dict) -> list:
    """The paper's claims on the grid-averaged OOD accuracy of each model (where the variants ran).

    A comparison is decided on board accuracy, on cell accuracy where the board accuracies tie.
    """
    def delta(kind, variant):
        s, n = results[kind][variant]["summary"], results[kind]["none"]["summary"]
        return (s["board_acc"]["grid_mean"][0] - n["board_acc"]["grid_mean"][0],
                s["cell_acc"]["grid_mean"][0] - n["cell_acc"]["grid_mean"][0])

    def verdict(d, sign):
        if max(abs(d[0]), abs(d[1])) <= 1e-12:
            return "undecided (equal accuracies)"
        value, by = (d[0], "board") if abs(d[0]) > 1e-12 else (d[1], "cell")
        ok = value > 0 if sign > 0 else value < 0
        return ("holds" if ok else "does not hold") + ("" if by == "board" else " (by cell acc.; boards tie)")

    checks = []
    for name, variant, rel, text in CLAIMS:
        for kind in results:
            if variant in results[kind] and "none" in results[kind]:
                d = delta(kind, variant)
                checks.append({"claim": name, "text": text, "model": kind, "delta_board": d[0], "delta_cell": d[1],
                               "verdict": verdict(d, 1 if rel.startswith(">") else -1)})
    if all(k in results and {"spec", "none"} <= set(results[k]) for k in ("itrsa", "akorn")):
        da, di = delta("akorn", "spec"), delta("itrsa", "spec")
        d = (da[0] - di[0], da[1] - di[1])
        checks.append({"claim": "spec_most_for_akorn", "text": "the R_Spec gain is larger for AKOrN than ItrSA",
                       "model": "akorn-itrsa", "delta_board": d[0], "delta_cell": d[1], "verdict": verdict(d, 1)})
    return checks


# ------------------------------------------------------------------------------------- output
def plot(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    kinds = list(results)
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.8 * len(kinds), 7.2), squeeze=False, sharey="row")
    for j, kind in enumerate(kinds):
        for r, (metric, label) in enumerate((("board_acc", "OOD board acc. (RRN test) [%]"),
                                             ("cell_acc", "OOD cell acc. (RRN test) [%]"))):
            ax = axes[r, j]
            for i, (variant, res) in enumerate(results[kind].items()):
                lam = f", λ={res['selected_lam']:g}" if variant in REGULARIZED and "selection" in res else ""
                plot_curve(ax, res["test"]["steps"], res["test"][metric], f"{res['label']}{lam}", color=f"C{i}")
            if min(args.t_eval) <= args.t_train <= max(args.t_eval):
                ax.axvline(args.t_train, color="gray", ls=":", lw=1)
            if metric == "board_acc":
                ax.set_ylim(-2, max(10.0, ax.get_ylim()[1]))
            ax.set_xscale("log", base=2)
            ax.set_xlabel("T_eval")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(label)
            if r == 0:
                ax.set_title(MODELS.get(kind, kind))
                ax.legend(fontsize=7)
    how = "given checkpoints" if args.checkpoints else f"λ selected on RRN valid by {args.select_by}"
    fig.suptitle(f"Regularization vs test-time scaling (D={args.d}, H={args.heads}, T_train={args.t_train}, "
                 f"{len(args.seeds)} seed(s); {how})", fontsize=10)
    fig.tight_layout()
    return common.save_figure(fig, path)


def table_rows(results: dict, args) -> list:
    tmin, tmax = min(args.t_eval), max(args.t_eval)
    pct = lambda ms: f"{100 * ms[0]:.1f}" + (f"±{100 * ms[1]:.1f}" if len(args.seeds) > 1 else "")
    rows = []
    for kind, per_variant in results.items():
        for variant, res in per_variant.items():
            s = res["summary"]
            at = lambda m, i: (s[m]["mean"][i], s[m]["std"][i])
            rows.append([MODELS.get(kind, kind), res["label"], res["heads"],
                         f"{res['selected_lam']:g}" if variant in REGULARIZED and "selection" in res else "-",
                         "/".join(f"{x:.3f}" for x in res["selection"]["scores"][res["selected"]]) if "selection" in res
                         else "-",
                         pct(at("board_acc", 0)), pct(at("board_acc", -1)), pct(s["board_acc"]["grid_mean"]),
                         pct(at("cell_acc", 0)), pct(at("cell_acc", -1)), pct(s["cell_acc"]["grid_mean"])])
    headers = ["model", "variant", "H", "λ", f"valid {args.select_by}", f"board@{tmin}", f"board@{tmax}",
               "board mean", f"cell@{tmin}", f"cell@{tmax}", "cell mean"]
    return rows, headers


# ------------------------------------------------------------------------------------- main
def run_variant(args, kind: str, variant: str, sets: dict) -> dict:
    """Trains every lambda of ``variant``, selects one on RRN valid, evaluates it on RRN test."""
    per_lambda, kept = {}, {}
    for lam in lambda_grid(args, variant):
        t0 = time.time()
        run_dir = Path(args.out) / "runs" / run_name(kind, variant, lam, args.spec_layout)
        runs = train_variant(train_config(args, kind, variant, lam), run_dir,
                             args.seeds, sets["train"], sets["id"], penalties=make_penalties(args, variant, lam),
                             retrain=args.retrain, trajectory=variant == "jacobian")
        t_train = time.time() - t0
        key = f"{lam:g}"
        per_lambda[key] = {"lam": lam, "run_dirs": [str(r[2]) for r in runs], "train_seconds": round(t_train, 1),
                           "valid": evaluate_runs(runs, sets["valid"], args, offset=1000)}
        kept[key] = runs
        v = per_lambda[key]["valid"]
        print(f"[{kind} {variant} λ={key}] valid board {100 * np.mean(v['board_acc']):.1f}%, cell "
              f"{100 * np.mean(v['cell_acc']):.1f}% (mean over T_eval); trained in {t_train:.0f}s", flush=True)
    selected, scores = select_lambda(per_lambda, args.select_by)
    test = evaluate_runs(kept[selected], sets["test"], args, offset=2000)
    cfg = model_config(args, kind, variant)
    return {"label": VARIANTS[variant], "heads": cfg.heads, "orthogonal_vo": cfg.orthogonal_vo,
            "lambdas": per_lambda, "selected": selected, "selected_lam": per_lambda[selected]["lam"],
            "selection": {"criterion": args.select_by, "scores": scores}, "test": test, "summary": summarize(test)}


def run_checkpoints(given: list, sets: dict, args) -> dict:
    """OOD (RRN test) curves of the trained models ``given`` (``[(label, model, train_config)]``), each as a
    "baseline (given checkpoint)" entry ``results[kind][label]`` (its penalty, if any, is unknown)."""
    results = {}
    for label, model, cfg in given:
        test = evaluate_runs([(cfg.seed, model, label)], sets["test"], args, offset=2000)
        m = model.config
        results.setdefault(m.kind, {})[label] = {
            "label": f"{label}: baseline (given checkpoint)", "checkpoint": label, "heads": m.heads,
            "orthogonal_vo": m.orthogonal_vo, "model_config": dataclasses.asdict(m), "test": test,
            "summary": summarize(test)}
        print(f"[{label}] OOD board {100 * np.mean(test['board_acc']):.1f}%, cell "
              f"{100 * np.mean(test['cell_acc']):.1f}% (mean over T_eval)", flush=True)
    return results


def main(argv=None):
    args = resolve(parse_args(argv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    given = load_checkpoints(args.checkpoints) if args.checkpoints else None
    if given:
        adopt_checkpoint_settings(args, given, ("t_train", "d", "heads"))
        sets = load_sets(args.data_dir, ood=args.test_limit)
    else:
        sets = load_sets(args.data_dir, train=args.train_limit, id=args.id_limit, valid=args.valid_limit,
                         ood=args.test_limit)
    sets["test"] = sets.pop("ood")  # RRN test
    print("data: " + ", ".join(f"{k} {s.name} {len(s)}" for k, s in sets.items()), flush=True)
    results = run_checkpoints(given, sets, args) if given else {}
    record = {"args": vars(args), "results": results,
              "data": {k: [s.name, len(s)] for k, s in sets.items()}}
    if not given:
        for kind in args.models:
            results[kind] = {}
            for variant in args.variants:
                results[kind][variant] = run_variant(args, kind, variant, sets)
                common.save_json(record, out / "regularization.json")  # partial results survive a crash
    record["claims"] = check_claims(results) if not given else []
    record["seconds"] = round(time.time() - t_start, 1)
    rows, headers = table_rows(results, args)
    record["table"] = {"headers": headers, "rows": rows}
    how = "given checkpoints" if given else f"λ selected on RRN valid ({args.select_by})"
    print(f"\nOOD (RRN test) accuracy in % over {len(args.seeds)} seed(s), {how}; 'mean' = average over T_eval "
          f"{args.t_eval}")
    common.print_table(rows, headers)
    print("\npaper's claims (grid-averaged OOD accuracy vs. no regularizer):")
    common.print_table([[c["claim"], c["model"], f"{100 * c['delta_board']:+.2f}", f"{100 * c['delta_cell']:+.2f}",
                         c["verdict"]] for c in record["claims"]],
                       ["claim", "model", "Δboard (pp)", "Δcell (pp)", "verdict"])
    paths = [common.save_json(record, out / "regularization.json"), plot(results, args, out / "regularization.png")]
    common.announce(paths)
    print(f"total {record['seconds']:.0f}s")
    return record


if __name__ == "__main__":
    main()
