"""Sec. 6.3: pseudo-energy and the contribution index along the inference of a trained Sudoku model.

Claim (paper sec. 6.3): with ``S_t = J_t + J_t^T``, ``J_t`` the Jacobian of ``X -> MSA(X)`` at the
state ``X_t``, the pseudo-energy reads ``E_pseudo = -Tr(X^T (C + MSA(X))) ~ -x^T S_t x / 2 - Tr(X^T C)``,
and the *contribution index* (share of ``||x_t||^2`` on the eigenvectors of the top 2% eigenvalues
of ``S_t``) rises during inference, to about 40%: the recurrence acts like a power iteration on S_t.

For a trained model (``--checkpoint NAME_OR_PATH``: a shipped model name of ``rsa_jax.pretrained``, a
``.npz`` file or a run directory; else a small ItrSA or AKOrN trained with the CPU preset under
``<out>/runs/<model>``, reused on re-runs) the script rolls out ``--steps`` updates
on the first ``--puzzles`` RRN test puzzles and records, per step t
(``rsa_jax.evaluate.monitor_rollout``):

* ``E_pseudo(t)`` (mean ± std over the puzzles; ``rsa_jax.energy.pseudo_energy``),
* the contribution index on the first ``--contribution-puzzles`` puzzles, at every
  ``--contribution-every``-th step only (dense ``(81 D)^2`` Jacobian and an eigh per step: ~5 s at
  D = 16 on a CPU; at D = 512 a 7 GB matrix per step, hence the sparse default of --full),
* the cosine between ``vec(MSA(X_t))`` and ``J_t x_t`` (how linear the quadratic reading is),
* board and cell accuracy of the readout at that step.

What "MSA(X)" is: both update maps (``rsa_jax.dynamics.itrsa_step``: ``Norm(X + eta (C + MSA(X)))``;
``akorn_step``: ``Norm_N(X + eta (Omega X + Proj_X(C + MSA(X))))``) evaluate the attention at the
current state ``X_t`` itself, so ``MSA(X) = msa(params["attn"], X_t)`` for both models. For AKOrN,
``E_pseudo`` is AKOrN's own energy; the rotation Omega X and the tangent projection are not part of
``J_t`` (it is the Jacobian of the attention alone, as in the paper).

Model variants (for training, ``--model``):

* ``itrsa`` ``ModelConfig(kind="itrsa", norm="rmsnorm")``: ItrSA with whole-token RMSNorm
* ``akorn`` ``ModelConfig(kind="akorn", norm="pi")``: AKOrN (Pi_N)

Outputs under ``--out``: ``pseudo_energy.json`` (per-step arrays and settings), ``pseudo_energy.png``
(four panels vs t) and a printed table at t = 0, powers of two and T_eval.

    python -m experiments.pseudo_energy                           # CPU default: trains ItrSA D=16, T_eval=64
    python -m experiments.pseudo_energy --model akorn
    python -m experiments.pseudo_energy --full --checkpoint outputs/oscillator_size/runs/itrsa_N4/seed_0
    python -m experiments.pseudo_energy --checkpoint sudoku-itrsa-cpu     # a shipped model, no training
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from experiments import common
from experiments.sudoku_sweep import CHECKPOINT_HELP, add_training_flags, load_checkpoint, load_sets, train_variant
from rsa_jax.configs import apply_preset
from rsa_jax.evaluate import monitor_rollout
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.train import TrainConfig

MODELS = {
    "itrsa": ("ItrSA (RMSNorm)", lambda d, h, n: ModelConfig(kind="itrsa", d=d, heads=h, n=n, norm="rmsnorm")),
    "akorn": ("AKOrN (Pi_N)", lambda d, h, n: ModelConfig(kind="akorn", d=d, heads=h, n=n, norm="pi")),
}

#: CPU default (a few minutes) and paper (--full) settings; explicit flags override either.
CPU = dict(d=16, heads=2, n=4, seeds=[0], epochs=2, batch_size=20, lr=3e-3, train_limit=400, id_limit=100,
           steps=64, puzzles=100, contribution_every=2, contribution_puzzles=1)
FULL = dict(d=512, heads=8, n=4, seeds=[0], epochs=100, batch_size=100, lr=None, train_limit=None, id_limit=None,
            steps=2048, puzzles=1000, contribution_every=256, contribution_puzzles=1)

#: Largest n = 81 D for which ``--contribution-method auto`` takes the dense eigh (D = 32).
DENSE_MAX = 2592

CLAIM = "paper (sec. 6.3): the contribution index (top 2% eigenvectors of S_t) rises during inference, to ~40%"


def parse_args(argv=None) -> argparse.Namespace:
    p = common.make_parser("pseudo_energy", __doc__ + "\nDefaults are CPU-sized; where a flag shows [cpu X, full Y], "
                           "--full switches to the paper-sized value. --seed is the PRNG key of the rollouts' "
                           "initial noise.")
    p.add_argument("--full", action="store_true",
                   help="paper sizes: T_eval = 2048 on 1000 RRN puzzles, contribution index every 256 steps; "
                        "without --checkpoint trains D=512, H=8 for 100 epochs on all data (accelerator)")
    p.add_argument("--checkpoint", default=None, metavar="NAME_OR_PATH",
                   help=f"trained model to analyse instead of training one: {CHECKPOINT_HELP}; default: "
                        "train (or reuse) <out>/runs/<model>/seed_<s>")
    g = p.add_argument_group("model trained without --checkpoint")
    g.add_argument("--model", choices=list(MODELS), default="itrsa",
                   help="itrsa = ItrSA with RMSNorm; akorn = AKOrN with Pi_N (default: itrsa)")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--heads", type=int, default=None,
                   help=f"attention heads H [cpu {CPU['heads']}, full {FULL['heads']}]")
    g.add_argument("--n", type=int, default=None,
                   help=f"oscillator size N (readout, AKOrN's Pi_N; even, divides D) "
                        f"[cpu {CPU['n']}, full {FULL['n']}]")
    add_training_flags(g, CPU, FULL)
    g = p.add_argument_group("monitoring")
    g.add_argument("--steps", type=int, default=None,
                   help=f"T_eval: updates rolled out [cpu {CPU['steps']}, full {FULL['steps']}]")
    g.add_argument("--puzzles", type=int, default=None,
                   help=f"first N RRN test puzzles (energy, cosine, accuracy) "
                        f"[cpu {CPU['puzzles']}, full {FULL['puzzles']}]")
    g.add_argument("--contribution-every", type=int, default=None,
                   help="contribution index at t = 0, e, 2e, ... and T_eval only (0: never; dense, O((81 D)^3) "
                        f"per puzzle and step) [cpu {CPU['contribution_every']}, full {FULL['contribution_every']}]")
    g.add_argument("--contribution-puzzles", type=int, default=None,
                   help=f"puzzles (the first ones) of the contribution index [cpu {CPU['contribution_puzzles']}, "
                        f"full {FULL['contribution_puzzles']}]")
    g.add_argument("--top-frac", type=float, default=0.02,
                   help="fraction of the eigenvectors of S_t counted by the contribution index (default: 0.02)")
    g.add_argument("--contribution-method", choices=["auto", "dense", "krylov"], default="auto",
                   help="dense: exact eigh of the (81 D)^2 matrix S_t (minutes per step at D = 128 on a CPU); "
                        "krylov: matrix-free Lanczos with residual and gap diagnostics (seconds); auto: dense up to "
                        f"81 D = {DENSE_MAX}, else krylov (default: auto)")
    g.add_argument("--krylov-dim", type=int, default=None,
                   help="Lanczos steps of --contribution-method krylov (default: 6 k, k = the top 2%% count)")
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the presets; checks the sizes."""
    apply_preset(args, FULL if args.full else CPU)
    if args.d % args.heads or (args.d // args.heads) % 2:
        raise SystemExit(f"--heads {args.heads} must divide D={args.d} with an even head width (GTA)")
    if args.n < 2 or args.d % args.n or args.n % 2:
        raise SystemExit(f"--n {args.n} must be even and divide D={args.d}")
    if args.steps < 1 or args.puzzles < 1 or args.contribution_every < 0 or args.contribution_puzzles < 1:
        raise SystemExit("need --steps >= 1, --puzzles >= 1, --contribution-every >= 0, --contribution-puzzles >= 1")
    if not 0 < args.top_frac <= 1:
        raise SystemExit(f"--top-frac must be in (0, 1]; got {args.top_frac}")
    if args.krylov_dim is not None and (args.krylov_dim < 1 or args.contribution_method == "dense"):
        raise SystemExit("--krylov-dim must be >= 1, and it is for --contribution-method krylov/auto only")
    return args


def lanczos_note(residual: float, ratio: float) -> str:
    """One line on the Lanczos contribution index's convergence: ``residual`` the largest relative Ritz
    residual, ``ratio`` the largest residual over the eigenvalue gap at the top-2% cut."""
    verdict = ("below 1: the top-2% subspace is resolved" if ratio < 1 else
               "NOT below 1: the cut falls inside a cluster of eigenvalues closer than the residual, so which "
               "of them count as the top 2% is unresolved; raise --krylov-dim, or read the index as uncertain "
               "by that cluster's weight")
    return f"Lanczos: max relative residual {residual:.2e}, max residual/gap {ratio:.2f} ({verdict})"


def krylov_dim(args, d: int) -> int | None:
    """``monitor_rollout``'s ``krylov_dim``: None (dense eigh) or the Lanczos steps (0: the default)."""
    method = args.contribution_method
    if method == "auto":
        method = "dense" if 81 * d <= DENSE_MAX else "krylov"
    return None if method == "dense" else (args.krylov_dim or 0)


def train_config(args) -> TrainConfig:
    """Training config of the model trained without ``--checkpoint``."""
    return TrainConfig(model=MODELS[args.model][1](args.d, args.heads, args.n), t_train=args.t_train,
                       batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, progress=False, eval_every=0,
                       checkpoint_every=0, keep_checkpoints=1, log_every=10, data_dir=args.data_dir)


def get_model(args):
    """``(model, run_dir, t_train)``: the checkpoint's EMA model (``run_dir``: the checkpoint as given), or
    the trained (reused) one."""
    if args.checkpoint is not None:
        model, cfg = load_checkpoint(args.checkpoint)
        return model, args.checkpoint, cfg.t_train
    sets = load_sets(args.data_dir, train=args.train_limit, id=args.id_limit)
    cfg = train_config(args)
    (_, model, run_dir), = train_variant(cfg, Path(args.out) / "runs" / args.model, args.seeds[:1], sets["train"],
                                         sets["id"], retrain=args.retrain)
    return model, Path(run_dir), cfg.t_train


# ------------------------------------------------------------------------------------- output
def summary(mon: dict) -> dict:
    """Start / end / extreme values of the monitors."""
    ci, ct = mon["contribution"], mon["contribution_t"]
    out = {"energy_start": float(mon["energy"][0]), "energy_end": float(mon["energy"][-1]),
           "cosine_mean": float(np.mean(mon["cosine"])), "cosine_end": float(mon["cosine"][-1]),
           "board_acc_end": float(mon["board_acc"][-1]), "board_acc_max": float(np.max(mon["board_acc"]))}
    if len(ci):
        out |= {"contribution_start": float(ci[0]), "contribution_end": float(ci[-1]),
                "contribution_max": float(ci.max()), "contribution_argmax_t": int(ct[int(np.argmax(ci))]),
                "contribution_rises": bool(ci[-1] > ci[0])}
        res, gap = mon["contribution_residual"], mon["contribution_gap"]
        if not np.all(np.isnan(res)):   # Lanczos: the worst residual-to-gap ratio (a convergence diagnostic)
            out |= {"contribution_method": "krylov", "contribution_residual_max": float(np.max(res)),
                    "contribution_residual_over_gap_max": float(np.max(res / gap))}
        else:
            out |= {"contribution_method": "dense"}
    return out


def compact(mon: dict) -> dict:
    """The monitors for the JSON: per-puzzle energy and cosine reduced to their std over puzzles."""
    out = {k: v for k, v in mon.items() if k not in ("energy_per_puzzle", "cosine_per_puzzle")}
    return out | {"energy_std": mon["energy_per_puzzle"].std(1), "cosine_std": mon["cosine_per_puzzle"].std(1)}


def table(mon: dict, steps: int) -> tuple:
    """Rows at t = 0, powers of two and T_eval ("-": no contribution index computed at that step)."""
    ts = sorted({0, steps} | {2 ** i for i in range(int(np.log2(steps)) + 1)})
    ci = dict(zip(mon["contribution_t"].tolist(), mon["contribution"].tolist()))
    rows = [[int(t), f"{mon['energy'][t]:.4g}", f"{100 * ci[t]:.1f}" if t in ci else "-",
             f"{mon['cosine'][t]:.3f}", f"{100 * mon['board_acc'][t]:.1f}", f"{100 * mon['cell_acc'][t]:.1f}"]
            for t in ts]
    return rows, ["t", "E_pseudo (mean)", "contribution [%]", "cos(MSA, Jx)", "board [%]", "cell [%]"]


def plot(mon: dict, title: str, t_train: int, path: Path):
    import matplotlib.pyplot as plt
    t = mon["t"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    e, es = mon["energy"], mon["energy_per_puzzle"].std(1)
    axes[0].plot(t, e, lw=1.2)
    axes[0].fill_between(t, e - es, e + es, alpha=0.2)
    axes[0].set_ylabel("E_pseudo = -Tr(X^T (C + MSA(X)))")
    axes[0].set_title("(a) pseudo-energy (mean ± std over puzzles)", fontsize=9)
    ct, cp = mon["contribution_t"], 100 * mon["contribution_per_puzzle"]
    if len(ct):
        for j in range(cp.shape[1]):
            axes[1].plot(ct, cp[:, j], "o-", ms=3, lw=1, alpha=0.6 if cp.shape[1] > 1 else 1)
    axes[1].axhline(40, color="gray", ls="--", lw=0.8, label="paper: ~40%")
    axes[1].set_ylabel("contribution index [%]")
    axes[1].set_title("(b) share of ||x||^2 on top eigvecs of J+J^T", fontsize=9)
    axes[1].legend(fontsize=7)
    c, cs = mon["cosine"], mon["cosine_per_puzzle"].std(1)
    axes[2].plot(t, c, lw=1.2)
    axes[2].fill_between(t, c - cs, c + cs, alpha=0.2)
    axes[2].set_ylabel("cos(vec MSA(X_t), J_t x_t)")
    axes[2].set_title("(c) linearity of the quadratic reading", fontsize=9)
    axes[3].plot(t, 100 * mon["board_acc"], label="board")
    axes[3].plot(t, 100 * mon["cell_acc"], label="cell")
    axes[3].set_ylabel("accuracy (RRN test) [%]")
    axes[3].set_title("(d) readout accuracy at step t", fontsize=9)
    axes[3].legend(fontsize=7)
    for ax in axes:
        ax.axvline(t_train, color="gray", ls=":", lw=1)
        ax.set_xlabel("inference step t")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    args = resolve(parse_args(argv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    model, run_dir, t_train = get_model(args)
    mcfg = model.config
    ood = load_sets(args.data_dir, ood=args.puzzles)["ood"]
    k = min(args.puzzles, len(ood))
    t0 = time.time()
    mon = monitor_rollout(model, ood.puzzles[:k].astype(np.int32), ood.givens[:k], args.steps,
                          jax.random.PRNGKey(args.seed), solutions=ood.solutions[:k].astype(np.int32),
                          contribution_every=args.contribution_every,
                          contribution_puzzles=args.contribution_puzzles, top_frac=args.top_frac,
                          krylov_dim=krylov_dim(args, mcfg.d))
    t_mon = time.time() - t0
    rows, headers = table(mon, args.steps)
    common.print_table(rows, headers)
    summ = summary(mon)
    n_ci = len(mon["contribution_t"])
    print(f"{mcfg.kind} D={mcfg.d} H={mcfg.heads} N={mcfg.n} norm={mcfg.norm} ({run_dir}); {k} RRN test puzzles, "
          f"T_eval={args.steps}; contribution index on {min(args.contribution_puzzles, k)} puzzle(s) at {n_ci} "
          f"of {args.steps + 1} steps (every {args.contribution_every}); monitors {t_mon:.0f}s")
    print(f"claim: {CLAIM}")
    if n_ci:
        print(f"this run: contribution index {100 * summ['contribution_start']:.1f}% at t=0 -> "
              f"{100 * summ['contribution_end']:.1f}% at t={args.steps} (max {100 * summ['contribution_max']:.1f}% "
              f"at t={summ['contribution_argmax_t']}); mean cosine {summ['cosine_mean']:.3f}")
        if summ["contribution_method"] == "krylov":
            print(lanczos_note(summ["contribution_residual_max"], summ["contribution_residual_over_gap_max"]))
    title = (f"{'ItrSA' if mcfg.kind == 'itrsa' else 'AKOrN'} (norm={mcfg.norm}) D={mcfg.d} H={mcfg.heads}: "
             f"{k} RRN test puzzles, contribution index on "
             f"{min(args.contribution_puzzles, k)} every {args.contribution_every} steps "
             f"({summ.get('contribution_method', 'none')})")
    plot(mon, title, t_train, out / "pseudo_energy.png")
    js = common.save_json({"args": vars(args), "claim": CLAIM, "run_dir": run_dir,
                           "model_config": dataclasses.asdict(mcfg), "t_train": t_train,
                           "msa_input": "the state X_t itself (msa(params['attn'], X_t)), for ItrSA and AKOrN",
                           "summary": summ, "monitors": compact(mon), "table": {"headers": headers, "rows": rows},
                           "monitor_seconds": t_mon, "seconds": time.time() - t_start}, out / "pseudo_energy.json")
    common.announce([js, out / "pseudo_energy.png"])
    print(f"total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
