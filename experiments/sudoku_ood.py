"""Sudoku in- and out-of-distribution accuracy and test-time scaling (SPEC "Sudoku protocol").

By default (a CPU, no training flags) it evaluates the shipped trained models of ``rsa_jax.pretrained``
(``sudoku-itrsa-cpu``, ``sudoku-akorn-cpu``; a shipped ``-gpu`` model of the same kind wins, then a ``-long-cpu``
one, trained on past the claims budget while it improved) and prints
where each came from (its manifest: training command, steps, wall time, device, date). --checkpoints
names other models (shipped names, ``.npz`` files or run directories), one per --models entry.

--retrain trains each model of --models (ItrSA with RMSNorm, AKOrN) with the CPU protocol (RESULTS.md:
D=128, H=4, N=4, T=16, batch 100, Adam lr 1e-3, EMA updated every step, all 9,000 SATNet puzzles;
each model stops at --time-budget seconds, default 2 h, and resumes exactly when run again) in
<out>/runs/<model>/seed_<s>, then evaluates it. --full is the paper's configuration for a GPU: D=512,
H=8, T=16, batch 100, 100 epochs, all data, T_eval 16..2048, K=100 voting, the AKOrN code's learning
rates (AKOrN 1e-3, ItrSA 5e-4). --eval-only evaluates the runs already in <out>/runs.

Evaluation (EMA parameters):
  ID   SATNet test, board accuracy (all blank cells right) at T_eval = T_train (and the T_eval curve);
  OOD  RRN test ("sudoku-hard", 17-34 givens) along T_eval (CPU: 16..1024 on the first 500 puzzles);
  vote AKOrN's energy voting on OOD: K random initial states per puzzle, the run with the lowest
       pseudo-energy summed over its steps wins (at T_eval = --vote-steps; CPU: K=8 on 100 puzzles).

Each T_eval curve comes from one rollout of max(T_eval) steps read out along the way. Outputs in
--out: sudoku_ood.json (every number, per seed, plus mean/std and each model's provenance),
sudoku_ood.png (board and cell accuracy vs T_eval, log2 axis, ID and OOD).
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

from rsa_jax import pretrained
from rsa_jax.data.sudoku import load_or_generate
from rsa_jax.configs import SUDOKU_CPU, SUDOKU_EVAL_CPU, SUDOKU_EVAL_FULL, SUDOKU_FULL, SudokuEvalConfig
from rsa_jax.evaluate import energy_voting, evaluate_boards
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, add_dataclass_args, dataclass_from_args, train

try:
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
except ImportError:  # pragma: no cover - run as a file outside the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json

MODELS = ("itrsa", "akorn")
LABELS = {"itrsa": "ItrSA (RMSNorm)", "akorn": "AKOrN"}


def cpu_config() -> TrainConfig:
    """The CPU protocol (``rsa_jax.configs.SUDOKU_CPU``; RESULTS.md)."""
    return SUDOKU_CPU


def full_config() -> TrainConfig:
    """The paper's Sudoku configuration (``rsa_jax.configs.SUDOKU_FULL``): D=512, H=8, T=16, batch 100, 100 epochs."""
    return SUDOKU_FULL


def eval_config(args) -> SudokuEvalConfig:
    """``SUDOKU_EVAL_CPU`` (or ``_FULL`` with --full) with the evaluation flags given (a limit of 0: all)."""
    base = SUDOKU_EVAL_FULL if args.full else SUDOKU_EVAL_CPU
    given = {k: getattr(args, k) for k in base.keys() if getattr(args, k, None) is not None}
    given.update({k: None for k in ("id_limit", "ood_limit", "vote_limit") if given.get(k) == 0})
    for k in ("t_eval", "id_t_eval"):
        if k in given:
            given[k] = tuple(given[k])
    return base.replace(**given)


def default_checkpoint(kind: str) -> str:
    """The shipped model used for ``kind`` when none is named: the first of ``sudoku-<kind>-gpu``, ``-long-cpu``
    and ``-cpu`` that is shipped."""
    shipped = pretrained.names()
    return next((n for n in (f"sudoku-{kind}-gpu", f"sudoku-{kind}-long-cpu", f"sudoku-{kind}-cpu") if n in shipped),
                f"sudoku-{kind}-cpu")


def build_parser():
    p = make_parser("sudoku_ood", __doc__)
    p.add_argument("--full", action="store_true",
                   help="train the paper's configuration (GPU): D=512, H=8, T=16, batch 100, 100 epochs, all data, "
                        "T_eval up to 2048, K=100")
    p.add_argument("--retrain", action="store_true",
                   help="train with the CPU protocol (or --full) in <out>/runs instead of evaluating shipped models; "
                        "earlier runs there are deleted")
    p.add_argument("--resume", action="store_true",
                   help="like --retrain but continue the runs in <out>/runs (a finished run is just loaded)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate the runs already in <out>/runs")
    p.add_argument("--checkpoints", nargs="+", default=None,
                   help="models to evaluate, one per --models entry: shipped names (rsa_jax.pretrained.names()), "
                        ".npz files or run directories (default: the shipped sudoku-<model>-cpu/-gpu)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="models to train and evaluate (default: itrsa akorn)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="training seeds, run one after another (default: the single --seed)")
    p.add_argument("--t-eval", nargs="+", type=int, default=None,
                   help="OOD T_eval grid (default: 16 32 ... 1024 on a CPU, ... 2048 with --full; T_train, 16 and "
                        "128 are always added)")
    p.add_argument("--id-t-eval", nargs="+", type=int, default=None,
                   help="ID T_eval grid (default: CPU 16 32 64 128, --full as --t-eval; T_train is added)")
    p.add_argument("--id-limit", type=int, default=None, help="ID puzzles evaluated (default: all 1,000; 0: all)")
    p.add_argument("--ood-limit", type=int, default=None,
                   help="OOD puzzles evaluated, the first ones (default: CPU 500, --full all 18,000; 0: all)")
    p.add_argument("--vote-k", type=int, default=None,
                   help="energy voting: candidates K (default: CPU 8, --full 100; 0: no voting)")
    p.add_argument("--vote-steps", type=int, default=None,
                   help="energy voting: T_eval of every candidate (default: CPU 64, --full 128)")
    p.add_argument("--vote-chunk", type=int, default=None,
                   help="energy voting: candidates run at once (memory; default: CPU 8, --full 10)")
    p.add_argument("--vote-limit", type=int, default=None,
                   help="energy voting: only the first N OOD puzzles (default: CPU 100, --full all; 0: all)")
    p.add_argument("--vote-models", nargs="*", choices=MODELS, default=list(MODELS),
                   help="models evaluated with energy voting (default: both; ItrSA votes with the same "
                        "pseudo-energy -Tr(X^T (C + MSA(X))); none: skip voting)")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="puzzles per evaluation batch (default: CPU 100, --full 500)")
    p.add_argument("--id-split", default="satnet_test", help="in-distribution test split (default: satnet_test)")
    p.add_argument("--ood-split", default="rrn_test",
                   help="out-of-distribution split (default: rrn_test; rrn_valid for model selection)")
    g = p.add_argument_group("training with --retrain/--resume/--full (rsa_jax.train.TrainConfig; defaults shown are "
                             "the CPU protocol's; --model-norm applies to every model, unset it is each kind's "
                             "default: itrsa rmsnorm, akorn pi)")
    add_dataclass_args(g, TrainConfig, defaults=cpu_config(), exclude=("out", "seed", "model.kind", "eval_limit"))
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


def evaluate_run(model, sets: dict, t_eval, ev: SudokuEvalConfig, seed: int, vote: bool, t_train: int) -> dict:
    """ID/OOD curves (and voting) of one trained model under the evaluation config ``ev``: OOD along
    ``t_eval``, ID along ``ev.id_t_eval`` and ``t_train``."""
    key = jax.random.PRNGKey(10_000 + seed)
    out = {}
    for name, s in sets.items():
        t0 = time.time()
        steps = t_eval if name == "ood" else sorted(set(ev.id_t_eval) | {t_train})
        out[name] = evaluate_boards(model, s, steps_list=steps, batch_size=min(ev.eval_batch_size, len(s)), key=key)
        out[name]["seconds"] = round(time.time() - t0, 2)
    if vote:
        t0 = time.time()
        ood = sets["ood"] if ev.vote_limit is None else sets["ood"].subset(slice(0, ev.vote_limit))
        r = energy_voting(model, ood, K=ev.vote_k, steps=ev.vote_steps, key=key, chunk=ev.vote_chunk,
                          batch_size=min(ev.eval_batch_size, len(ood)))
        out["vote"] = {"K": ev.vote_k, "steps": ev.vote_steps, "puzzles": len(ood),
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
                label = f"{LABELS[kind]} ({len(runs)} seed{'s' * (len(runs) > 1)})"
                ax.plot(steps, m, "o-", color=f"C{i}", label=label)
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


def provenance(source: str, cfg: TrainConfig) -> dict:
    """Where a model came from: the shipped manifest, or the file / run directory and its config."""
    if source in pretrained.names():
        m = pretrained.manifest(source)
        return {"source": f"shipped model {source} ({pretrained.path(source)})", **m}
    return {"source": str(source), "config": dataclasses.asdict(cfg)}


def describe(kind: str, prov: dict) -> str:
    keys = ("command", "device", "date", "steps", "epochs", "train_seconds")
    extra = ", ".join(f"{k} {prov[k]}" for k in keys[1:] if k in prov)
    cmd = f"\n    trained by: {prov['command']}" if "command" in prov else ""
    partial = f"\n    PARTLY TRAINED: {prov['partial']}" if prov.get("partial") else ""
    return f"[{kind}] {prov['source']}" + (f"; {extra}" if extra else "") + cmd + partial


def main(argv=None):
    parser = build_parser()
    args = parse(parser, argv)
    training = args.retrain or args.resume or args.full
    if training and (args.eval_only or args.checkpoints):
        parser.error("--retrain/--resume/--full train models; they do not combine with --eval-only or --checkpoints")
    if args.checkpoints and len(args.checkpoints) != len(args.models):
        parser.error(f"--checkpoints needs one entry per model of --models {args.models}; got {args.checkpoints}")
    base = dataclass_from_args(args, TrainConfig, full_config() if args.full else cpu_config())
    seeds = args.seeds if args.seeds else [args.seed]
    ev = eval_config(args)
    t_eval = sorted(set(ev.t_eval) | {base.t_train, 16, 128})
    vote_models = args.vote_models if ev.vote_k > 0 else []
    out = Path(args.out)

    t_start = time.time()
    sets = {"id": load_or_generate(args.id_split, base.data_dir, n_fallback=ev.id_limit or 200, seed=1,
                                   limit=ev.id_limit),
            "ood": load_or_generate(args.ood_split, base.data_dir, n_fallback=ev.ood_limit or 200, seed=2,
                                    limit=ev.ood_limit)}
    train_set = None
    if training:
        train_set = load_or_generate("satnet_train", base.data_dir, n_fallback=base.train_limit or 500,
                                     limit=base.train_limit)
    print("data: " + (f"train {train_set.name} {len(train_set)}, " if train_set else "")
          + f"ID {sets['id'].name} {len(sets['id'])}, OOD {sets['ood'].name} {len(sets['ood'])}", flush=True)

    results = {}
    record = {"full": args.full, "mode": "train" if training else "eval-only" if args.eval_only else "shipped",
              "seeds": seeds, "t_eval": t_eval,
              "evaluation": dataclasses.asdict(ev),
              "data": {"id": [sets["id"].name, len(sets["id"])], "ood": [sets["ood"].name, len(sets["ood"])],
                       **({"train": [train_set.name, len(train_set)]} if train_set else {})},
              "results": results}
    for i, kind in enumerate(args.models):
        results[kind] = {"seeds": {}}
        if training or args.eval_only:
            jobs = [(seed, str(out / "runs" / kind / f"seed_{seed}")) for seed in seeds]
        else:
            jobs = [(None, args.checkpoints[i] if args.checkpoints else default_checkpoint(kind))]
        for seed, source in jobs:
            t0 = time.time()
            last = None
            if training:
                norm = base.model.norm if "model.norm" in vars(args) else None   # else the kind's default
                cfg = dataclasses.replace(base, model=base.model.with_kind(kind, norm), seed=seed, out=source)
                print(f"[{kind} seed {seed}] training in {cfg.out} (lr {cfg.resolved_lr():g}"
                      + (f", budget {cfg.time_budget:g} s" if cfg.time_budget else "") + ")", flush=True)
                model, history = train(cfg, sudoku_task(cfg, train_set, sets["id"]), resume=not args.retrain)
                last = next((r for r in reversed(history) if "loss" in r), None)
                prov = {"source": f"trained in {cfg.out}", "config": dataclasses.asdict(cfg),
                        "steps": last["step"] if last else 0, "train_seconds": round(time.time() - t0, 1)}
            else:
                try:
                    model, cfg = pretrained.load_checkpoint(source)
                except (FileNotFoundError, KeyError) as e:
                    if args.checkpoints or args.eval_only:
                        raise SystemExit(f"[{kind}] cannot load {source}: {e}") from None
                    print(f"[{kind}] skipped: no shipped model {source} (shipped: {pretrained.names() or 'none'}); "
                          f"train one with `python -m experiments.sudoku_ood --retrain --models {kind}`", flush=True)
                    continue
                seed = cfg.seed
                prov = provenance(source, cfg)
            print(describe(kind, prov), flush=True)
            r = evaluate_run(model, sets, t_eval, ev, seed, vote=kind in vote_models, t_train=cfg.t_train)
            r["provenance"] = prov
            r["t_train"] = cfg.t_train
            r["final_train_metrics"] = last
            results[kind]["seeds"][seed] = r
            results[kind]["t_train"] = cfg.t_train
            print(f"[{kind}] evaluated ({sum(r[k]['seconds'] for k in ('id', 'ood', 'vote') if k in r):.0f} s)",
                  flush=True)
            save_json(record, out / "sudoku_ood.json")            # partial results survive a crash
        if not results[kind]["seeds"]:
            del results[kind]
            continue
        results[kind]["summary"] = summarize(results[kind]["seeds"], results[kind]["t_train"])
    if not results:
        raise SystemExit("nothing was evaluated: no shipped model for " + ", ".join(args.models)
                         + "; see --checkpoints and --retrain")

    record["seconds"] = round(time.time() - t_start, 1)
    print_results(record, ev, len(sets["ood"]))
    paths = [save_json(record, out / "sudoku_ood.json"), plot(results, out / "sudoku_ood.png", ev.vote_steps)]
    announce(paths)
    print(f"total {record['seconds']:.0f} s")
    return record


def print_results(record: dict, ev: SudokuEvalConfig, n_ood: int) -> None:
    results = record["results"]
    t_trains = sorted({res["t_train"] for res in results.values()})
    headers = ["model", f"ID T={'/'.join(map(str, t_trains))}", "ID cell", "OOD T=16", "OOD T=128",
               "OOD best (T)", "OOD cell T=128"]
    voting = any("vote" in r for res in results.values() for r in res["seeds"].values())
    if voting:
        n_vote = min(ev.vote_limit or n_ood, n_ood)
        headers.insert(6, f"OOD vote K={ev.vote_k} T={ev.vote_steps}"
                          + (f" ({n_vote} puzzles)" if n_vote < n_ood else ""))
    rows = []
    for kind, res in results.items():
        s = res["summary"]
        row = [LABELS[kind], _fmt(s["id"]), _fmt(s["id_cell"]), _fmt(s["ood_16"]), _fmt(s["ood_128"]),
               f"{_fmt(s['ood_best'])} ({'/'.join(map(str, s['ood_best_t']))})", _fmt(s["ood_cell_128"])]
        if voting:
            row.insert(6, _fmt(s["vote"]))
        rows.append(row)
    n = len(next(iter(results.values()))["seeds"]) if results else 0
    print(f"\nboard accuracy (%) over {n} model(s) per row; cell = blank cells right (%); "
          f"OOD on {n_ood} {record['data']['ood'][0]} puzzles")
    print_table(rows, headers)


if __name__ == "__main__":
    main()
