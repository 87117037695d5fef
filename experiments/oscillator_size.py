"""Fig. 4: oscillator size N vs. test-time scaling, for ItrSA, AKOrN and AKOrN + RMSNorm.

Claim (paper Fig. 4): ItrSA with oscillator-wise RMSNorm keeps improving as T_eval grows past the
training T = 16 for every oscillator size N; AKOrN (Pi_N) loses test-time scaling at large N; AKOrN
with oscillator-wise RMSNorm in place of Pi_N restores it.

For every model and N this script

1. trains on SATNet (``rsa_jax.train`` / ``rsa_jax.multiseed`` for several seeds at once),
2. evaluates board (and cell) accuracy on RRN test (OOD) and SATNet test (ID) at every T_eval of one
   rollout (``rsa_jax.evaluate.evaluate_boards``),
3. computes the maximum Lyapunov exponent of the trained map at T = 16 on one RRN puzzle (leading
   ``k`` exponents by the QR method with refinement sweeps, null directions of the normalization
   excluded; ``rsa_jax.lyapunov``),
4. runs the chaos check (paper B.5.4): after ``--chaos-warmup`` = 128 steps the state is perturbed
   by Gaussian noise of standard deviation ``--chaos-std`` = 1e-3 and both trajectories are run on;
   the L1 distance ``sum |X_t - X'_t|`` (over cells and channels, mean over puzzles) is recorded up to
   ``t = --chaos-steps``.

Model variants (``--models``):

* ``itrsa``         ``ModelConfig(kind="itrsa", n=N, norm="rmsnorm", norm_n=N)``: oscillator-wise RMSNorm
* ``akorn``         ``ModelConfig(kind="akorn", n=N, norm="pi")``: AKOrN, Pi_N
* ``akorn_rmsnorm`` ``ModelConfig(kind="akorn", n=N, norm="rmsnorm")``: Pi_N replaced by oscillator-wise RMSNorm

Outputs under ``--out``: ``oscillator_size.json`` (all numbers and the settings),
``oscillator_size_scaling.png`` (accuracy vs T_eval, one panel per model, one curve per N, max LE in
the legend), ``oscillator_size_lyapunov.png`` (max LE vs N) and ``oscillator_size_chaos.png``
(L1 distance vs t, log scale); training runs under ``<out>/runs/<model>_N<N>/seed_<s>`` (re-running
resumes / reuses them; ``--retrain`` starts afresh).

    python -m experiments.oscillator_size                       # CPU default, a few minutes
    python -m experiments.oscillator_size --full                # paper size (accelerator)
    python -m experiments.oscillator_size --chaos-only --checkpoint outputs/oscillator_size/runs/akorn_N16/seed_0
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.sudoku_sweep import OSCILLATOR_MODELS as MODELS
from experiments.sudoku_sweep import (add_ood_eval_flags, add_training_flags, learned_gamma, load_sets,
                                      lyapunov_puzzle, model_lyapunov, oscillator_train_config, train_variant)
from rsa_jax.configs import OSCILLATOR_CPU as CPU
from rsa_jax.configs import OSCILLATOR_FULL as FULL
from rsa_jax.configs import apply_preset
from rsa_jax.evaluate import evaluate_boards
from rsa_jax.train import load_model


def parse_args(argv=None) -> argparse.Namespace:
    p = common.make_parser("oscillator_size", __doc__ + "\nDefaults are CPU-sized; where a flag shows "
                           "[cpu X, full Y], --full switches to the paper's value. --seed offsets the PRNG keys of "
                           "the evaluation noise, the Lyapunov start and the chaos perturbation (training seeds: "
                           "--seeds).")
    p.add_argument("--full", action="store_true",
                   help="paper settings: D=512, H=8, N=4..512, 100 epochs on all 9,000 SATNet puzzles, 5 seeds, "
                        "all 18,000 RRN test puzzles, T_eval up to 2048, chaos up to t=10,000 (accelerator)")
    g = p.add_argument_group("models")
    g.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="model variants: itrsa = ItrSA with oscillator-wise RMSNorm (norm_n = N); akorn = AKOrN "
                        "with Pi_N; akorn_rmsnorm = AKOrN with oscillator-wise RMSNorm in place of Pi_N "
                        "(default: all three)")
    g.add_argument("--ns", nargs="+", type=int, default=None,
                   help=f"oscillator sizes N (even, dividing D) [cpu {CPU['ns']}, full {FULL['ns']}]")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--heads", type=int, default=None,
                   help=f"attention heads H [cpu {CPU['heads']}, full {FULL['heads']}]")
    add_training_flags(p.add_argument_group("training"), CPU, FULL)
    g = p.add_argument_group("evaluation")
    add_ood_eval_flags(g, CPU, FULL)
    g = p.add_argument_group("Lyapunov exponents")
    g.add_argument("--lyap-t", type=int, default=16, help="horizon T of the finite-time exponents (default: 16)")
    g.add_argument("--lyap-k", type=int, default=None,
                   help=f"leading exponents computed (QR method) [cpu {CPU['lyap_k']}, full {FULL['lyap_k']}]")
    g.add_argument("--lyap-sweeps", type=int, default=None,
                   help="forward-backward refinement sweeps of the QR start towards the leading singular vectors "
                        f"of J^(T) (0: classical estimator) [cpu {CPU['lyap_sweeps']}, full {FULL['lyap_sweeps']}]")
    g.add_argument("--lyap-puzzle", type=int, default=0, help="index of the RRN test puzzle used (default: 0)")
    g = p.add_argument_group("chaos check (B.5.4)")
    g.add_argument("--chaos-steps", type=int, default=None,
                   help=f"last time step t of the two trajectories "
                        f"[cpu {CPU['chaos_steps']}, full {FULL['chaos_steps']}]")
    g.add_argument("--chaos-warmup", type=int, default=128, help="steps before the perturbation (default: 128)")
    g.add_argument("--chaos-std", type=float, default=1e-3,
                   help="standard deviation of the Gaussian perturbation of the state (default: 1e-3; the paper "
                        "writes N(0, 1e-3), pass 0.0316 to read that as a variance)")
    g.add_argument("--chaos-puzzles", type=int, default=None,
                   help=f"RRN test puzzles averaged [cpu {CPU['chaos_puzzles']}, full {FULL['chaos_puzzles']}]")
    g.add_argument("--chaos-only", action="store_true",
                   help="only run the chaos check on the trained run directories given by --checkpoint")
    g.add_argument("--checkpoint", nargs="+", default=None, metavar="RUN_DIR",
                   help="run directories of rsa_jax.train (holding config.json and checkpoints/) for --chaos-only")
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the CPU or --full presets."""
    apply_preset(args, FULL if args.full else CPU)
    if args.t_train not in args.t_eval:
        args.t_eval = sorted(set(args.t_eval) | {args.t_train})
    bad = [n for n in args.ns if args.d % n or n % 2]
    if bad:
        raise SystemExit(f"oscillator sizes {bad} must be even and divide D={args.d}")
    if args.chaos_steps <= args.chaos_warmup:
        raise SystemExit(f"--chaos-steps ({args.chaos_steps}) must exceed --chaos-warmup ({args.chaos_warmup})")
    if args.chaos_only and not args.checkpoint:
        raise SystemExit("--chaos-only needs --checkpoint RUN_DIR [RUN_DIR ...]")
    return args


# ------------------------------------------------------------------------------------- pieces
def chaos_distance(model, digits, given, *, warmup: int, steps: int, std: float, key) -> np.ndarray:
    """L1 distance ``sum |X_t - X'_t|`` (mean over puzzles) for ``t = warmup, ..., steps``; the copy
    ``X'`` is ``X_warmup + std * N(0, I)``."""
    step, params = model.pure_step()
    kc, kp = jax.random.split(key)
    c, x0 = model.condition(jnp.asarray(digits), jnp.asarray(given), kc)

    @jax.jit
    def run(params, x0, c):
        x = jax.lax.scan(lambda x, _: (step(params, x, c), None), x0, None, length=warmup)[0]
        xp = x + std * jax.random.normal(kp, x.shape, x.dtype)
        l1 = lambda a, b: jnp.mean(jnp.sum(jnp.abs(a - b), axis=(-2, -1)))

        def body(carry, _):
            a, b = step(params, carry[0], c), step(params, carry[1], c)
            return (a, b), l1(a, b)

        _, d = jax.lax.scan(body, (x, xp), None, length=steps - warmup)
        return jnp.concatenate([l1(x, xp)[None], d])

    return np.asarray(run(params, x0, c))


# ------------------------------------------------------------------------------------- plots
def _color(i, m):
    import matplotlib.pyplot as plt
    return plt.get_cmap("viridis")(0.1 + 0.8 * i / max(m - 1, 1))


def plot_scaling(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    keys = [k for k in args.models if k in results]
    fig, axes = plt.subplots(2, len(keys), figsize=(4.6 * len(keys), 7.2), squeeze=False, sharey="row")
    for j, key in enumerate(keys):
        for r, (metric, label) in enumerate((("ood_board_acc", "OOD board acc. (RRN test)"),
                                             ("ood_cell_acc", "OOD cell acc. (RRN test)"))):
            ax = axes[r, j]
            ns = sorted(results[key], key=int)
            for i, n in enumerate(ns):
                res = results[key][n]
                acc = np.asarray([s[metric] for s in res["seeds"]]) * 100
                mean, sd = acc.mean(0), acc.std(0)
                le = res["max_le_mean"]
                ax.plot(res["t_eval"], mean, "o-", ms=3, color=_color(i, len(ns)),
                        label=f"N={n} (max LE {le:+.3f})")
                if len(acc) > 1:
                    ax.fill_between(res["t_eval"], mean - sd, mean + sd, color=_color(i, len(ns)), alpha=0.15)
            ax.axvline(args.t_train, color="gray", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("T_eval")
            if j == 0:
                ax.set_ylabel(label + " [%]")
            if r == 0:
                ax.set_title(MODELS[key][0])
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Test-time scaling vs oscillator size N (D={args.d}, H={args.heads}, T_train={args.t_train}, "
                 f"{len(args.seeds)} seed(s))", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


def plot_lyapunov(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key in args.models:
        if key not in results:
            continue
        ns = sorted(results[key], key=int)
        les = np.asarray([[s["max_le"] for s in results[key][n]["seeds"]] for n in ns])
        ax.errorbar([int(n) for n in ns], les.mean(1), yerr=les.std(1) if les.shape[1] > 1 else None, marker="o",
                    capsize=3, label=MODELS[key][0])
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("oscillator size N")
    ax.set_ylabel(f"max Lyapunov exponent (T={args.lyap_t})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    common.save_figure(fig, path)


def plot_chaos(curves: list, args, path: Path):
    """``curves``: list of ``(label, group, distances (steps - warmup + 1,))``; one panel per group."""
    import matplotlib.pyplot as plt
    groups = list(dict.fromkeys(g for _, g, _ in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, g in zip(axes[0], groups):
        mine = [(lab, d) for lab, gg, d in curves if gg == g]
        for i, (lab, d) in enumerate(mine):
            t = np.arange(args.chaos_warmup, args.chaos_warmup + len(d))
            ax.plot(t, np.maximum(d, 1e-30), lw=1, color=_color(i, len(mine)), label=lab)
        ax.set_yscale("log")
        ax.set_xlabel("t (perturbed at t = %d)" % args.chaos_warmup)
        ax.set_title(g, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("L1 distance  sum |X_t - X'_t|")
    fig.suptitle(f"Chaos check: perturbation N(0, {args.chaos_std:g}^2) after {args.chaos_warmup} steps", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


# ------------------------------------------------------------------------------------- main
def chaos_only(args):
    ood = load_sets(args.data_dir, ood=args.chaos_puzzles)["ood"]
    digits, given = ood.puzzles[: args.chaos_puzzles].astype(np.int32), ood.givens[: args.chaos_puzzles]
    curves, record = [], {}
    for run in args.checkpoint:
        t0 = time.time()
        model, cfg = load_model(run)
        m = model.config
        group = f"{m.kind} norm={m.norm}"
        d = chaos_distance(model, digits, given, warmup=args.chaos_warmup, steps=args.chaos_steps,
                           std=args.chaos_std, key=jax.random.PRNGKey(args.seed))
        curves.append((f"{Path(run).parent.name}/{Path(run).name} N={m.n}", group, d))
        record[str(run)] = {"model_config": dataclasses.asdict(m), "l1": d.tolist(),
                            "t": list(range(args.chaos_warmup, args.chaos_steps + 1)), "seconds": time.time() - t0}
        print(f"{run}: L1 at t={args.chaos_warmup}: {d[0]:.3g}, t={args.chaos_steps}: {d[-1]:.3g} "
              f"({time.time() - t0:.1f}s)")
    out = Path(args.out)
    plot_chaos(curves, args, out / "oscillator_size_chaos.png")
    common.announce([common.save_json({"args": vars(args), "chaos": record}, out / "oscillator_size_chaos.json"),
                     out / "oscillator_size_chaos.png"])


def main(argv=None):
    args = resolve(parse_args(argv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.chaos_only:
        return chaos_only(args)
    t_start = time.time()
    sets = load_sets(args.data_dir, train=args.train_limit, id=args.id_limit, ood=args.eval_limit)
    train_set, id_set, ood = sets["train"], sets["id"], sets["ood"]
    print(f"data: train {len(train_set)}, ID {len(id_set)}, OOD {len(ood)} puzzles")
    lyap_digits, lyap_given = lyapunov_puzzle(ood, args.lyap_puzzle)
    cp = min(args.chaos_puzzles, len(ood))
    chaos_digits, chaos_given = ood.puzzles[:cp].astype(np.int32), ood.givens[:cp]

    results, curves, rows = {}, [], []
    for key in args.models:
        results[key] = {}
        for n in args.ns:
            t0 = time.time()
            runs = train_variant(oscillator_train_config(args, key, n), Path(args.out) / "runs" / f"{key}_N{n}",
                                 args.seeds, train_set, id_set, retrain=args.retrain)
            t_train = time.time() - t0
            seeds = []
            for s, model, run_dir in runs:
                ev = evaluate_boards(model, ood, args.t_eval, batch_size=args.eval_batch_size,
                                     key=jax.random.PRNGKey(args.seed * 10_000 + 1000 + s))
                ev_id = evaluate_boards(model, id_set, args.t_eval, batch_size=args.eval_batch_size,
                                        key=jax.random.PRNGKey(args.seed * 10_000 + 2000 + s))
                le = model_lyapunov(model, lyap_digits, lyap_given, T=args.lyap_t, k=args.lyap_k,
                                    sweeps=args.lyap_sweeps, key=jax.random.PRNGKey(args.seed * 10_000 + 3000 + s))
                rec = {"seed": s, "run_dir": str(run_dir), "ood_board_acc": ev["board_acc"],
                       "ood_cell_acc": ev["cell_acc"], "id_board_acc": ev_id["board_acc"],
                       "id_cell_acc": ev_id["cell_acc"], **le}
                rec.update(learned_gamma(model) or {})
                if s == args.seeds[0]:
                    d = chaos_distance(model, chaos_digits, chaos_given, warmup=args.chaos_warmup,
                                       steps=args.chaos_steps, std=args.chaos_std,
                                       key=jax.random.PRNGKey(args.seed * 10_000 + 4000 + s))
                    rec["chaos_l1"] = d.tolist()
                    curves.append((f"N={n}", MODELS[key][0], d))
                seeds.append(rec)
            les = np.asarray([r["max_le"] for r in seeds])
            results[key][str(n)] = {"t_eval": ev["steps"], "seeds": seeds, "max_le_mean": float(les.mean()),
                                    "max_le_std": float(les.std()), "train_seconds": t_train,
                                    "seconds": time.time() - t0}
            ood_b = np.mean([r["ood_board_acc"] for r in seeds], 0) * 100
            ood_c = np.mean([r["ood_cell_acc"] for r in seeds], 0) * 100
            id_b = np.mean([r["id_board_acc"] for r in seeds], 0) * 100
            chaos_end = seeds[0]["chaos_l1"][-1]
            rows.append([MODELS[key][0], n, f"{les.mean():+.3f}" + (f"±{les.std():.3f}" if len(les) > 1 else ""),
                         f"{id_b[0]:.1f}", f"{ood_b[0]:.1f}", f"{ood_b[-1]:.1f}", f"{ood_c[0]:.1f}",
                         f"{ood_c[-1]:.1f}", f"{chaos_end:.2e}", f"{time.time() - t0:.0f}"])
            print(f"[{key} N={n}] max LE {les.mean():+.3f}; OOD board {ood_b.round(1).tolist()}; "
                  f"OOD cell {ood_c.round(1).tolist()} at T={ev['steps']}; {time.time() - t0:.0f}s", flush=True)

    tmax = max(args.t_eval)
    headers = ["model", "N", f"maxLE(T={args.lyap_t})", f"ID board@{args.t_train}", f"OOD board@{args.t_train}",
               f"OOD board@{tmax}", f"OOD cell@{args.t_train}", f"OOD cell@{tmax}", f"L1@t={args.chaos_steps}",
               "sec"]
    common.print_table(rows, headers)
    plot_scaling(results, args, out / "oscillator_size_scaling.png")
    plot_lyapunov(results, args, out / "oscillator_size_lyapunov.png")
    plot_chaos(curves, args, out / "oscillator_size_chaos.png")
    js = common.save_json({"args": vars(args), "results": results, "table": {"headers": headers, "rows": rows},
                           "chaos_t": list(range(args.chaos_warmup, args.chaos_steps + 1)),
                           "seconds": time.time() - t_start}, out / "oscillator_size.json")
    common.announce([js] + [out / f"oscillator_size_{x}.png" for x in ("scaling", "lyapunov", "chaos")])
    print(f"total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
