"""Sudoku in- and out-of-distribution accuracy and test-time scaling (SPEC "Sudoku protocol").

Trains each model of --models (ItrSA with RMSNorm, AKOrN) on SATNet train for each seed, or picks up
the run already in <out>/runs/<model>/seed_<s> (an unfinished run resumes from its last checkpoint,
a finished one is just loaded; --retrain starts afresh, --eval-only never trains). Then it evaluates
the EMA model:

  ID   SATNet test, board accuracy (all blank cells right) at T_eval = T_train;
  OOD  RRN test ("sudoku-hard", 17-34 givens) at T_eval = 16, 128 and the best T_eval of the grid;
  vote AKOrN's energy voting on OOD: K random initial states per puzzle, the run with the lowest
       pseudo-energy summed over its steps wins (at T_eval = --vote-steps).

Each T_eval curve comes from one rollout of max(T_eval) steps read out along the way. Outputs in
--out: sudoku_ood.json (every number, per seed, plus mean/std), sudoku_ood.png (board and cell
accuracy vs T_eval, log2 axis, ID and OOD), and the run directories.

Default: a CPU-sized smoke configuration (a few minutes on 2 idle cores): D=64, H=4, T=8, 600
training puzzles, batch 50, 6 epochs (72 steps) at lr 3e-3 (so that blank-cell accuracy leaves
chance), 200 ID / 200 OOD puzzles, T_eval 8..256, K=8 voting on the first 100 OOD puzzles. It checks
the pipeline end to end; its board accuracies stay at 0. --full is the paper's configuration for a
GPU: D=512, H=8, T=16, batch 100, 100 epochs on all 9,000 SATNet puzzles, all 1,000 ID and 18,000
OOD test puzzles, T_eval 16..2048, K=100, and the per-model learning rates of the AKOrN code
(AKOrN 1e-3, ItrSA 5e-4). Every training field can be overridden (--lr, --epochs, --model-d, ...).
Reference (AKOrN README, 5 seeds): AKOrN ID 100.0, OOD 51.7 (T_eval=128), 81.6 (K=100);
ItrSA (older form) 95.7 / 34.4.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rsa_jax.data.sudoku import load_or_generate
from rsa_jax.evaluate import PAPER_STEPS, energy_voting, evaluate_boards
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, add_dataclass_args, dataclass_from_args, load_model, train

try:
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
except ImportError:  # pragma: no cover - run as a file outside the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json

MODELS = ("itrsa", "akorn")
LABELS = {"itrsa": "ItrSA (RMSNorm)", "akorn": "AKOrN"}


def cpu_config() -> TrainConfig:
    """Smoke-test size for a 2-core CPU (minutes, not the paper's numbers)."""
    return TrainConfig(model=ModelConfig(kind="akorn", d=64, heads=4, n=4), t_train=8, batch_size=50, epochs=6,
                       lr=3e-3, train_limit=600, eval_limit=200, checkpoint_every=50, log_every=4, eval_every=0)


def full_config() -> TrainConfig:
    """The paper's Sudoku configuration (SPEC): D=512, H=8, T=16, batch 100, 100 epochs, all data."""
    return TrainConfig(model=ModelConfig(kind="akorn", d=512, heads=8, n=4), t_train=16, batch_size=100,
                       epochs=100, checkpoint_every=900, log_every=30, eval_every=10)


def model_config(kind: str, base: ModelConfig, norm_given: bool) -> ModelConfig:
    """``base`` with ``kind`` swapped in; the normalization goes back to the kind's default
    (ItrSA: RMSNorm, AKOrN: Pi) unless --model-norm was given."""
    fields = dataclasses.asdict(base)
    fields["kind"] = kind
    if not norm_given:
        fields["norm"] = None
    return ModelConfig(**fields)


def build_parser():
    p = make_parser("sudoku_ood", __doc__)
    p.add_argument("--full", action="store_true",
                   help="the paper's configuration (GPU): D=512, H=8, T=16, batch 100, 100 epochs, all data, "
                        "T_eval up to 2048, K=100")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="models to train and evaluate (default: itrsa akorn)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds, run one after another (default: the single --seed)")
    p.add_argument("--t-eval", nargs="+", type=int, default=None,
                   help="T_eval grid (default: CPU 8 16 32 64 128 256; --full 16 32 ... 2048; T_train, 16 and "
                        "128 are always added)")
    p.add_argument("--vote-k", type=int, default=None, help="energy voting: candidates K (default: CPU 8, --full 100)")
    p.add_argument("--vote-steps", type=int, default=128, help="energy voting: T_eval of every candidate (default: 128)")
    p.add_argument("--vote-chunk", type=int, default=None,
                   help="energy voting: candidates run at once (memory; default: CPU 8, --full 10)")
    p.add_argument("--vote-limit", type=int, default=None,
                   help="energy voting: only the first N OOD puzzles (default: CPU 100, --full all)")
    p.add_argument("--vote-models", nargs="*", choices=MODELS, default=["akorn"],
                   help="models evaluated with energy voting (default: akorn; none: skip voting)")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="puzzles per evaluation batch (default: CPU 100, --full 500)")
    p.add_argument("--id-split", default="satnet_test", help="in-distribution test split (default: satnet_test)")
    p.add_argument("--ood-split", default="rrn_test",
                   help="out-of-distribution split (default: rrn_test; rrn_valid for model selection)")
    p.add_argument("--retrain", action="store_true", help="delete earlier runs in --out and train afresh")
    p.add_argument("--eval-only", action="store_true", help="only evaluate the runs already in --out")
    g = p.add_argument_group("training (rsa_jax.train.TrainConfig; defaults shown are the CPU ones; --model-norm "
                             "applies to every model, unset it is each kind's default: itrsa rmsnorm, akorn pi)")
    add_dataclass_args(g, TrainConfig, defaults=cpu_config(), exclude=("out", "seed", "model.kind"))
    return p


def _mean_std(values):
    v = np.asarray([x for x in values if x is not None], float)
    return (float(v.mean()), float(v.std())) if v.size else (None, None)


def _fmt(ms, pct=True):
    m, s = ms
    if m is None:
        return "-"
    k = 100.0 if pct else 1.0
    return f"{k * m:.1f}" + (f" ± {k * s:.1f}" if s else "")


def evaluate_run(model, sets: dict, t_eval, args, cfg: TrainConfig, seed: int, vote: bool) -> dict:
    """ID/OOD curves (and voting) of one trained model."""
    key = jax.random.PRNGKey(10_000 + seed)
    out = {}
    for name, s in sets.items():
        t0 = time.time()
        out[name] = evaluate_boards(model, s, steps_list=t_eval, batch_size=min(args.eval_batch_size, len(s)), key=key)
        out[name]["seconds"] = round(time.time() - t0, 2)
    if vote:
        t0 = time.time()
        ood = sets["ood"] if args.vote_limit is None else sets["ood"].subset(slice(0, args.vote_limit))
        r = energy_voting(model, ood, K=args.vote_k, steps=args.vote_steps, key=key, chunk=args.vote_chunk,
                          batch_size=min(args.eval_batch_size, len(ood)))
        out["vote"] = {"K": args.vote_k, "steps": args.vote_steps, "puzzles": len(ood),
                       "seconds": round(time.time() - t0, 2),
                       **{k: r[k] for k in ("board_acc", "cell_acc", "single_board_acc", "oracle_board_acc")}}
    return out


def summarize(per_seed: dict, t_train: int) -> dict:
    """Mean and std over seeds of the table's numbers."""
    runs = list(per_seed.values())
    at = lambda r, split, t, key="board_acc": r[split][key][r[split]["steps"].index(t)]
    best = [max(zip(r["ood"]["board_acc"], r["ood"]["steps"]), key=lambda a: (a[0], -a[1])) for r in runs]
    return {
        "id": _mean_std(at(r, "id", t_train) for r in runs),
        "id_cell": _mean_std(at(r, "id", t_train, "cell_acc") for r in runs),
        "ood_16": _mean_std(at(r, "ood", 16) for r in runs),
        "ood_128": _mean_std(at(r, "ood", 128) for r in runs),
        "ood_best": _mean_std(b[0] for b in best),
        "ood_best_t": [b[1] for b in best],
        "ood_cell_128": _mean_std(at(r, "ood", 128, "cell_acc") for r in runs),
        "vote": _mean_std(r["vote"]["board_acc"] if "vote" in r else None for r in runs),
    }


def plot(results: dict, path: Path, vote_steps: int):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, (split, title) in enumerate((("id", "ID: SATNet test"), ("ood", "OOD: RRN test"))):
        for row, metric in enumerate(("board_acc", "cell_acc")):
            ax = axes[row, col]
            for i, (kind, res) in enumerate(results.items()):
                runs = list(res["seeds"].values())
                steps = np.asarray(runs[0][split]["steps"])
                y = 100 * np.asarray([r[split][metric] for r in runs])
                m, s = y.mean(0), y.std(0)
                ax.plot(steps, m, "o-", color=f"C{i}", label=f"{LABELS[kind]} ({len(runs)} seed{'s' * (len(runs) > 1)})")
                if len(runs) > 1:
                    ax.fill_between(steps, m - s, m + s, color=f"C{i}", alpha=0.2)
                if split == "ood" and all("vote" in r for r in runs):
                    v = 100 * np.asarray([r["vote"][metric] for r in runs])
                    ax.errorbar([vote_steps], [v.mean()], yerr=[v.std()], fmt="*", ms=12, color=f"C{i}",
                                label=f"{LABELS[kind]}, energy voting K={runs[0]['vote']['K']}"
                                      f" ({runs[0]['vote']['puzzles']} puzzles)")
            ax.set_xscale("log", base=2)
            if metric == "board_acc":
                ax.set_ylim(-2, max(10.0, ax.get_ylim()[1]))
            ax.set_title(title if row == 0 else "")
            ax.set_ylabel(("board" if metric == "board_acc" else "cell (blanks)") + " accuracy (%)")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("T_eval (recurrent steps at test time)")
    axes[0, 1].legend(fontsize=8)
    fig.suptitle("Sudoku test-time scaling")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv=None):
    parser = build_parser()
    args = parse(parser, argv)
    base = dataclass_from_args(args, TrainConfig, full_config() if args.full else cpu_config())
    norm_given = "model.norm" in vars(args)
    seeds = args.seeds if args.seeds else [args.seed]
    grid = args.t_eval or (PAPER_STEPS if args.full else (8, 16, 32, 64, 128, 256))
    t_eval = sorted(set(grid) | {base.t_train, 16, 128})
    args.vote_k = args.vote_k or (100 if args.full else 8)
    args.vote_chunk = args.vote_chunk or (10 if args.full else 8)
    args.eval_batch_size = args.eval_batch_size or (500 if args.full else 100)
    if args.vote_limit is None and not args.full:
        args.vote_limit = 100
    out = Path(args.out)

    t_start = time.time()
    train_set = load_or_generate("satnet_train", base.data_dir, n_fallback=base.train_limit or 500,
                                 limit=base.train_limit)
    sets = {"id": load_or_generate(args.id_split, base.data_dir, n_fallback=base.eval_limit or 200, seed=1,
                                   limit=base.eval_limit),
            "ood": load_or_generate(args.ood_split, base.data_dir, n_fallback=base.eval_limit or 200, seed=2,
                                    limit=base.eval_limit)}
    print(f"data: train {train_set.name} {len(train_set)}, ID {sets['id'].name} {len(sets['id'])}, "
          f"OOD {sets['ood'].name} {len(sets['ood'])}", flush=True)

    results = {}
    record = {"full": args.full, "seeds": seeds, "t_eval": t_eval, "vote": {"K": args.vote_k, "steps": args.vote_steps},
              "data": {"train": [train_set.name, len(train_set)], "id": [sets["id"].name, len(sets["id"])],
                       "ood": [sets["ood"].name, len(sets["ood"])]}, "results": results}
    for kind in args.models:
        results[kind] = {"seeds": {}}
        for seed in seeds:
            cfg = dataclasses.replace(base, model=model_config(kind, base.model, norm_given), seed=seed,
                                      out=str(out / "runs" / kind / f"seed_{seed}"))
            results[kind]["config"] = dataclasses.asdict(cfg)
            t0 = time.time()
            if args.eval_only:
                model, _ = load_model(cfg.out)
                history = []
            else:
                print(f"[{kind} seed {seed}] training in {cfg.out} (lr {cfg.resolved_lr():g})", flush=True)
                model, history = train(cfg, sudoku_task(cfg, train_set, sets["id"]), resume=not args.retrain)
            t_train = time.time() - t0
            last = [r for r in history if "loss" in r]
            if last:
                print(f"[{kind} seed {seed}] step {last[-1]['step']}: loss {last[-1]['loss']:.4f}, "
                      f"cell acc {last[-1].get('cell_acc', float('nan')):.3f} ({t_train:.0f} s)", flush=True)
            r = evaluate_run(model, sets, t_eval, args, cfg, seed, vote=kind in args.vote_models)
            r["train_seconds"] = round(t_train, 1)
            r["final_train_metrics"] = last[-1] if last else None
            results[kind]["seeds"][seed] = r
            print(f"[{kind} seed {seed}] evaluated ({r['id']['seconds'] + r['ood']['seconds'] + r.get('vote', {}).get('seconds', 0):.0f} s)",
                  flush=True)
            save_json(record, out / "sudoku_ood.json")            # partial results survive a crash
        results[kind]["summary"] = summarize(results[kind]["seeds"], base.t_train)

    record["seconds"] = round(time.time() - t_start, 1)
    n_vote = min(args.vote_limit or len(sets["ood"]), len(sets["ood"]))
    headers = ["model", f"ID T={base.t_train}", "ID cell", "OOD T=16", "OOD T=128", "OOD best (T)",
               f"OOD vote K={args.vote_k} T={args.vote_steps}" + (f" ({n_vote} puzzles)" if n_vote < len(sets["ood"]) else ""),
               "OOD cell T=128"]
    rows = []
    for kind, res in results.items():
        s = res["summary"]
        rows.append([LABELS[kind], _fmt(s["id"]), _fmt(s["id_cell"]), _fmt(s["ood_16"]), _fmt(s["ood_128"]),
                     f"{_fmt(s['ood_best'])} ({'/'.join(map(str, s['ood_best_t']))})", _fmt(s["vote"]),
                     _fmt(s["ood_cell_128"])])
    print(f"\nboard accuracy (%) over {len(seeds)} seed(s); cell = blank cells right (%)")
    print_table(rows, headers)
    paths = [save_json(record, out / "sudoku_ood.json"), plot(results, out / "sudoku_ood.png", args.vote_steps)]
    announce(paths)
    print(f"total {record['seconds']:.0f} s")
    return record


if __name__ == "__main__":
    main()
