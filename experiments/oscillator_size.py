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
    python -m experiments.oscillator_size --checkpoints sudoku-itrsa-cpu sudoku-akorn-cpu  # given trained models
                                                     # (shipped names, .npz or run dirs) by kind, norm, N; no training
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
from experiments.sudoku_sweep import (CHECKPOINT_HELP, add_ood_eval_flags, add_training_flags,
                                      adopt_checkpoint_settings, learned_gamma, load_checkpoints, load_sets,
                                      lyapunov_puzzle, model_lyapunov, norm_chunk, oscillator_key,
                                      oscillator_train_config, train_variant)
from rsa_jax.configs import OSCILLATOR_CPU as CPU
from rsa_jax.configs import OSCILLATOR_FULL as FULL
from rsa_jax.configs import apply_preset
from rsa_jax.evaluate import evaluate_boards


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
    g.add_argument("--checkpoints", "--checkpoint", dest="checkpoints", nargs="+", default=None,
                   metavar="NAME_OR_PATH",
                   help=f"trained models to analyse instead of training --models x --ns ({CHECKPOINT_HELP}); "
                        "grouped by kind and norm, then by N, as their configs say; with --chaos-only: only the "
                        "chaos check on them")
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
                   help="only run the chaos check on the trained models given by --checkpoints")
    return common.parse(p, argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills unset settings from the CPU or --full presets."""
    apply_preset(args, FULL if args.full else CPU)
    if args.t_train not in args.t_eval and not args.checkpoints:  # with --checkpoints: their T_train, in main
        args.t_eval = sorted(set(args.t_eval) | {args.t_train})
    bad = [n for n in args.ns if args.d % n or n % 2]
    if bad:
        raise SystemExit(f"oscillator sizes {bad} must be even and divide D={args.d}")
    if args.chaos_steps <= args.chaos_warmup:
        raise SystemExit(f"--chaos-steps ({args.chaos_steps}) must exceed --chaos-warmup ({args.chaos_warmup})")
    if args.chaos_only and not args.checkpoints:
        raise SystemExit("--chaos-only needs --checkpoints NAME_OR_PATH [NAME_OR_PATH ...]")
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
def model_name(key: str) -> str:
    """Display name of a model variant (``MODELS``) or of a group of given checkpoints (its key)."""
    return MODELS[key][0] if key in MODELS else key


def _color(i, m):
    import matplotlib.pyplot as plt
    return plt.get_cmap("viridis")(0.1 + 0.8 * i / max(m - 1, 1))


def plot_scaling(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    keys = list(results)
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
                given = f"{', '.join(res['checkpoints'])}, " if "checkpoints" in res else ""
                ax.plot(res["t_eval"], mean, "o-", ms=3, color=_color(i, len(ns)),
                        label=f"N={n} ({given}max LE {le:+.3f})")
                if len(acc) > 1:
                    ax.fill_between(res["t_eval"], mean - sd, mean + sd, color=_color(i, len(ns)), alpha=0.15)
            ax.axvline(args.t_train, color="gray", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("T_eval")
            if j == 0:
                ax.set_ylabel(label + " [%]")
            if r == 0:
                ax.set_title(model_name(key))
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Test-time scaling vs oscillator size N (D={args.d}, H={args.heads}, T_train={args.t_train}, "
                 f"{len(args.seeds)} seed(s))", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)


def plot_lyapunov(results: dict, args, path: Path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key in results:
        ns = sorted(results[key], key=int)
        les = np.asarray([[s["max_le"] for s in results[key][n]["seeds"]] for n in ns])
        ax.errorbar([int(n) for n in ns], les.mean(1), yerr=les.std(1) if les.shape[1] > 1 else None, marker="o",
                    capsize=3, label=model_name(key))
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
def analyse(model, s: int, data: dict, args, *, chaos: bool) -> dict:
    """OOD and ID accuracy at every T_eval, max LE, learned gamma and (``chaos``) the chaos curve ``chaos_l1`` of
    one trained model; ``s`` (its training seed) offsets the PRNG keys. ``data``: ``ood``, ``id`` sets and the
    ``lyap`` and ``chaos`` puzzles ``(digits, given)``."""
    key = lambda offset: jax.random.PRNGKey(args.seed * 10_000 + offset + s)
    ev = evaluate_boards(model, data["ood"], args.t_eval, batch_size=args.eval_batch_size, key=key(1000))
    ev_id = evaluate_boards(model, data["id"], args.t_eval, batch_size=args.eval_batch_size, key=key(2000))
    le = model_lyapunov(model, *data["lyap"], T=args.lyap_t, k=args.lyap_k, sweeps=args.lyap_sweeps, key=key(3000))
    rec = {"seed": s, "t_eval": ev["steps"], "ood_board_acc": ev["board_acc"], "ood_cell_acc": ev["cell_acc"],
           "id_board_acc": ev_id["board_acc"], "id_cell_acc": ev_id["cell_acc"], **le}
    rec.update(learned_gamma(model) or {})
    if chaos:
        rec["chaos_l1"] = chaos_distance(model, *data["chaos"], warmup=args.chaos_warmup, steps=args.chaos_steps,
                                         std=args.chaos_std, key=key(4000)).tolist()
    return rec


def group_result(seeds: list, t0: float, **extra) -> dict:
    """The result of one (model, N): its per-seed records, max LE mean and std, ``extra``, seconds since ``t0``."""
    les = np.asarray([r["max_le"] for r in seeds])
    return {"t_eval": seeds[0]["t_eval"], "seeds": seeds, "max_le_mean": float(les.mean()),
            "max_le_std": float(les.std()), **extra, "seconds": time.time() - t0}


def report(rows: list, name: str, tag: str, n: int, res: dict):
    """Appends the table row of one (model, N) result ``res`` to ``rows`` and prints its line (``[tag N=n]``)."""
    seeds = res["seeds"]
    les = np.asarray([r["max_le"] for r in seeds])
    ood_b = np.mean([r["ood_board_acc"] for r in seeds], 0) * 100
    ood_c = np.mean([r["ood_cell_acc"] for r in seeds], 0) * 100
    id_b = np.mean([r["id_board_acc"] for r in seeds], 0) * 100
    rows.append([name, n, f"{les.mean():+.3f}" + (f"±{les.std():.3f}" if len(les) > 1 else ""),
                 f"{id_b[0]:.1f}", f"{ood_b[0]:.1f}", f"{ood_b[-1]:.1f}", f"{ood_c[0]:.1f}",
                 f"{ood_c[-1]:.1f}", f"{seeds[0]['chaos_l1'][-1]:.2e}", f"{res['seconds']:.0f}"])
    print(f"[{tag} N={n}] max LE {les.mean():+.3f}; OOD board {ood_b.round(1).tolist()}; "
          f"OOD cell {ood_c.round(1).tolist()} at T={res['t_eval']}; {res['seconds']:.0f}s", flush=True)


def run_checkpoints(given: list, data: dict, args) -> tuple:
    """Analyses the trained models ``given`` (``[(label, model, train_config)]``, no training), each with its
    chaos curve, grouped by variant (kind and norm, ``oscillator_key``) and N as their configs say.

    Returns:
      ``(results {group: {N: ...}}, chaos curves, table rows)``.
    """
    groups = {}
    for label, model, cfg in given:
        m = model.config
        groups.setdefault(oscillator_key(m), {}).setdefault(norm_chunk(m), []).append((label, model, cfg))
    results, curves, rows = {}, [], []
    for key, per_n in groups.items():
        results[key] = {}
        for n in sorted(per_n):
            t0 = time.time()
            seeds = []
            for label, model, cfg in per_n[n]:
                rec = dict(analyse(model, cfg.seed, data, args, chaos=True), checkpoint=label,
                           model_config=dataclasses.asdict(model.config))
                curves.append((f"{label} N={n}", model_name(key), np.asarray(rec["chaos_l1"])))
                seeds.append(rec)
            names = [label for label, _, _ in per_n[n]]
            res = results[key][str(n)] = group_result(seeds, t0, checkpoints=names)
            report(rows, f"{', '.join(names)} ({model_name(key)})", ", ".join(names), n, res)
    return results, curves, rows


def chaos_only(args):
    ood = load_sets(args.data_dir, ood=args.chaos_puzzles)["ood"]
    digits, given = ood.puzzles[: args.chaos_puzzles].astype(np.int32), ood.givens[: args.chaos_puzzles]
    curves, record = [], {}
    for run, model, cfg in load_checkpoints(args.checkpoints):
        t0 = time.time()
        m = model.config
        group = f"{m.kind} norm={m.norm}"
        d = chaos_distance(model, digits, given, warmup=args.chaos_warmup, steps=args.chaos_steps,
                           std=args.chaos_std, key=jax.random.PRNGKey(args.seed))
        curves.append((f"{'/'.join(Path(run).parts[-2:])} N={norm_chunk(m)}", group, d))
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
    given = load_checkpoints(args.checkpoints) if args.checkpoints else None
    if given:
        adopt_checkpoint_settings(args, given, ("t_train", "d", "heads"))
        sets = load_sets(args.data_dir, id=args.id_limit, ood=args.eval_limit)
    else:
        sets = load_sets(args.data_dir, train=args.train_limit, id=args.id_limit, ood=args.eval_limit)
    ood = sets["ood"]
    print(f"data: {', '.join(f'{k} {len(v)}' for k, v in sets.items())} puzzles")
    cp = min(args.chaos_puzzles, len(ood))
    data = {"ood": ood, "id": sets["id"], "lyap": lyapunov_puzzle(ood, args.lyap_puzzle),
            "chaos": (ood.puzzles[:cp].astype(np.int32), ood.givens[:cp])}

    if given:
        results, curves, rows = run_checkpoints(given, data, args)
    else:
        results, curves, rows = {}, [], []
        for key in args.models:
            results[key] = {}
            for n in args.ns:
                t0 = time.time()
                runs = train_variant(oscillator_train_config(args, key, n), Path(args.out) / "runs" / f"{key}_N{n}",
                                     args.seeds, sets["train"], sets["id"], retrain=args.retrain)
                t_train = time.time() - t0
                seeds = []
                for s, model, run_dir in runs:
                    rec = dict(analyse(model, s, data, args, chaos=s == args.seeds[0]), run_dir=str(run_dir))
                    if "chaos_l1" in rec:
                        curves.append((f"N={n}", MODELS[key][0], np.asarray(rec["chaos_l1"])))
                    seeds.append(rec)
                res = results[key][str(n)] = group_result(seeds, t0, train_seconds=t_train)
                report(rows, MODELS[key][0], key, n, res)

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
