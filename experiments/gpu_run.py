"""One prepared GPU run: the paper-size Sudoku results from one command under a wall-clock budget.

    python3 -m experiments.gpu_run --out OUT        # on one H100/H200, at most --budget seconds (default 540)
    python3 -m experiments.gpu_run --dry-run        # the same code path at tiny sizes on a CPU (1-2 minutes)

Phases, in this order, each within its share of --budget; gpu_run.json is rewritten after every phase
(a run cut short keeps what it finished), and a failing phase records its error and the next one runs:

  env       JAX must see a GPU, else a clear message and exit status 2 (no CPU fallback; skipped in
            --dry-run); device, versions, data.
  bench     the paper-size train step (D=512, H=8, N=4, T=16, batch 100) of AKOrN and ItrSA in TF32 and
            float32 matmuls: compile time apart, ms/step, FLOPs/step, fraction of the matmul peak measured
            here at the same precision; then the step of 4 vmapped seeds (for the plan).
  train     AKOrN, then ItrSA, on SATNet train (9,000 puzzles, 100 epochs or as many as fit): the shares
            of the budget follow the measured step times; several seeds are vmapped (rsa_jax.multiseed)
            where that keeps >= 90% of the epochs. Orbax runs live in --work-dir; the EMA model of the
            first seed goes to OUT/<kind>.npz (``rsa_jax.pretrained.load_file`` reads it on a CPU).
  eval      ID: all 1,000 SATNet test puzzles; OOD: the first n RRN test puzzles (n a multiple of 1,000,
            all 18,000 if they fit), both at T_eval 16, 32, 64, 128, 256 from one rollout; energy voting,
            K=100 at T_eval=128, on the first m <= 1,000 RRN test puzzles (multiple of 100; first seed).
            n and m are in the JSON. Matmuls at the training precision.
  lyapunov  leading 256 Lyapunov exponents (T=16, float32 matmuls) of each model on RRN test puzzle 0.

Files in --out (flat, 5): gpu_run.json (every number, device, versions, epochs done, seconds per
phase), gpu_run.png, gpu_run.log, akorn.npz, itrsa.npz.
"""

from __future__ import annotations

import time

T0 = time.time()  # the budget counts from here (before JAX is imported)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import cost_flops, matmul_peak, unrolled_scans  # noqa: E402
from experiments.common import save_figure, save_json  # noqa: E402
from experiments.sudoku_sweep import lyapunov_puzzle, model_lyapunov  # noqa: E402
from rsa_jax import pretrained  # noqa: E402
from rsa_jax.data.sudoku import SudokuSet, default_data_dir, load_or_generate, load_split  # noqa: E402
from rsa_jax.evaluate import energy_voting, evaluate_boards  # noqa: E402
from rsa_jax.models.sudoku import ModelConfig  # noqa: E402
from rsa_jax.multiseed import (make_multiseed_train_step, seed_config, stack_batches, stack_trees,  # noqa: E402
                               train_multiseed)
from rsa_jax.tasks.sudoku import sudoku_task  # noqa: E402
from rsa_jax.train import (TrainConfig, init_train_state, load_model, make_optimizer, make_train_step,  # noqa: E402
                           split_model, train)

KINDS = ("akorn", "itrsa")
PHASES = ("bench", "train", "eval", "lyapunov")
SHARES = {"bench": 0.14, "eval": 0.15, "lyapunov": 0.06, "write": 0.02}   # of --budget; train gets the rest
#: one H100, official PyTorch AKOrN code (ms/step), and the AKOrN README's accuracies (5 seeds)
ANCHORS = {"pytorch_ms_per_step": {"akorn": {"float32": 84.9, "tensorfloat32": 66.0},
                                   "itrsa": {"float32": 33.5, "tensorfloat32": 23.0}},
           "akorn_readme": {"akorn": {"id": 1.0, "ood_t128": 0.517, "vote_k100": 0.816},
                            "itrsa": {"id": 0.957, "ood_t128": 0.344}},
           "tflop_per_akorn_step": 0.88}
LIMITS = {"files": 8, "bytes": 16 << 20, "depth": 2}


@dataclasses.dataclass(frozen=True)
class Sizes:
    d: int = 512
    heads: int = 8
    n: int = 4
    t: int = 16
    batch: int = 100
    epochs: int = 100
    train_n: int | None = None                  # None: all (9,000 / 1,000 / 18,000)
    id_n: int | None = None
    ood_n: int = 18000
    ood_chunk: int = 1000
    t_eval: tuple = (16, 32, 64, 128, 256)
    eval_batch: int = 1000
    vote_k: int = 100
    vote_steps: int = 128
    vote_n: int = 1000
    vote_block: int = 100
    lyap_t: int = 16
    lyap_k: int = 256
    bench_iters: int = 20
    peak_n: int = 8192
    max_seeds: int = 4


DRY = Sizes(d=16, heads=2, n=4, t=2, batch=8, epochs=2, train_n=32, id_n=16, ood_n=16, ood_chunk=8, t_eval=(2, 4, 8),
            eval_batch=8, vote_k=2, vote_steps=4, vote_n=8, vote_block=4, lyap_t=2, lyap_k=4, bench_iters=2,
            peak_n=128, max_seeds=2)


def say(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


class Tee:
    """Writes to a stream and to the log file, flushing both (the log survives a kill)."""

    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, s):
        self.stream.write(s)
        self.stream.flush()
        if not self.file.closed:
            self.file.write(s)
            self.file.flush()
        return len(s)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


# ------------------------------------------------------------------------------------ budget
class Clock:
    """The run's deadline and the seconds kept back for the selected phases still to come."""

    def __init__(self, budget: float, phases):
        self.budget, self.deadline, self.phases = budget, T0 + budget, list(phases)

    def left(self) -> float:
        return self.deadline - time.time()

    def reserve(self, after: str) -> float:
        later = [p for p in PHASES[PHASES.index(after) + 1:] if p in self.phases] + ["write"]
        return sum(SHARES.get(p, 0.0) for p in later) * self.budget

    def share(self, phase: str) -> float:
        """Seconds phase ``phase`` may take now: all that is left minus the reserve of the later phases."""
        return max(0.0, self.left() - self.reserve(phase))


def train_share(kind: str, todo, need: dict, seconds: float) -> float:
    """Seconds for training ``kind`` out of ``seconds`` left for the models ``todo`` (``kind`` first), in
    proportion to each one's need (compile + all epochs of one seed, from the bench; equal shares without
    it). A run that finishes early leaves its rest to the next model and then to the evaluation."""
    if not all(need.get(k) for k in todo):
        return seconds / len(todo)
    return seconds * need[kind] / sum(need[k] for k in todo)


def pick_seeds(share: float, one: dict | None, many: dict | None, steps_per_epoch: int, epochs: int) -> int:
    """Vmapped seeds for a run of ``share`` seconds: the multi-seed step's seeds if it keeps >= 90% of the
    epochs (and at least one) that a single seed gets, else 1. ``one``/``many``: bench entries."""
    if not one or not many:
        return 1
    fit = lambda b: min(epochs, max(0.0, share - b["compile_s"] - 5) / (b["ms_per_step"] / 1e3 * steps_per_epoch))
    return many["seeds"] if fit(many) >= max(1.0, 0.9 * fit(one)) else 1


# ------------------------------------------------------------------------------------ phases
def environment(dry: bool) -> dict:
    env = {"backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()],
           "python": platform.python_version(), "host": platform.node(), "cpu_count": os.cpu_count(),
           "xla_flags": os.environ.get("XLA_FLAGS", "")}
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "jax-cuda13-plugin",
                "jax-cuda12-plugin"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    env["versions"] = versions
    try:
        env["device_memory_bytes"] = jax.devices()[0].memory_stats().get("bytes_limit")
    except Exception:  # noqa: BLE001  (CPU: no stats)
        env["device_memory_bytes"] = None
    env["gpu_check"] = "skipped (dry run)" if dry else ("ok" if env["backend"] in ("gpu", "cuda", "rocm") else "failed")
    return env


def load_data(data_dir, S: Sizes, dry: bool) -> tuple[dict, dict]:
    """``{train, id, ood}`` sets from the Sudoku files committed in data/sudoku (or ``data_dir``); the dry run
    takes the first few puzzles, or generated ones with ``--data-dir synthetic``."""
    d = default_data_dir(data_dir)
    names = {"train": ("satnet_train", S.train_n), "id": ("satnet_test", S.id_n), "ood": ("rrn_test", S.ood_n)}
    sets = {}
    for i, (key, (name, n)) in enumerate(names.items()):
        if dry:
            sets[key] = load_or_generate(name, d, n_fallback=n, seed=i, limit=n)
        else:
            try:
                sets[key] = load_split(name, d)
            except FileNotFoundError as e:
                raise SystemExit(f"{e}\n  -> the repository's data/sudoku (committed) must travel with it, "
                                 "or pass --data-dir")
    return sets, {"dir": str(d), **{k: [s.name, len(s)] for k, s in sets.items()}}


def train_config(kind: str, S: Sizes, precision: str, **kw) -> TrainConfig:
    return TrainConfig(model=ModelConfig(kind=kind, d=S.d, heads=S.heads, n=S.n), t_train=S.t, batch_size=S.batch,
                       epochs=S.epochs, matmul_precision=precision, progress=False, eval_every=0, **kw)


def bench_step(kind: str, precision: str, seeds: int, S: Sizes, sets: dict, flops: bool) -> dict:
    """Compile and time the train step (``seeds`` > 1: the vmapped multi-seed step) on a real batch."""
    cfg = train_config(kind, S, precision)
    task = sudoku_task(cfg, sets["train"], sets["id"])
    batch = next(iter(task.train_batches(0)))
    with jax.default_matmul_precision(precision):
        tx = make_optimizer(cfg)
        models = [task.init_model(nnx.Rngs(s)) for s in range(seeds)]
        graphdef, _, rest = split_model(models[0])
        states = [init_train_state(m, tx, jax.random.PRNGKey(s)) for s, m in enumerate(models)]
        if seeds == 1:
            step, state = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest), states[0]
        else:
            step, state = make_multiseed_train_step(graphdef, task, tx, cfg=cfg, rest=rest), stack_trees(states)
            batch = stack_batches([batch] * seeds)
        batch = jax.device_put(batch)
        out = {"model": kind, "precision": precision, "seeds": seeds}
        if flops:   # XLA counts a scan body once: count the program with the T steps unrolled
            raw = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest, jit=False)
            try:
                with unrolled_scans():
                    out["flops_per_step"] = cost_flops(jax.jit(raw).trace(state, batch).lower().cost_analysis())
            except Exception as e:  # noqa: BLE001  (a backend without lowered cost analysis)
                say(f"bench: no FLOP count ({type(e).__name__}: {e})")
        t0 = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        out["compile_s"] = time.perf_counter() - t0
        for _ in range(2):
            state, m = compiled(state, batch)
        jax.block_until_ready(m)
        times = []
        for _ in range(S.bench_iters):
            t0 = time.perf_counter()
            state, m = compiled(state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
    ms = 1e3 * np.asarray(times)
    return {**out, "ms_per_step": float(np.median(ms)), "ms_min": float(ms.min()), "iters": len(ms)}


def run_bench(rec: dict, S: Sizes, sets: dict, args, seconds: float) -> None:
    end = time.time() + seconds
    precs = [args.train_precision] + [p for p in ("tensorfloat32", "float32") if p != args.train_precision]
    b = rec["bench"] = {"seconds_planned": round(seconds, 1), "matmul_peak": {}, "steps": []}
    for p in precs:
        try:
            b["matmul_peak"][p] = matmul_peak(S.peak_n, precision=p)
            say(f"bench: matmul peak {p}: {b['matmul_peak'][p]['flops_per_s'] / 1e12:.1f} TFLOP/s")
        except Exception as e:  # noqa: BLE001
            b["matmul_peak"][p] = {"error": f"{type(e).__name__}: {e}"}
    flops, last = {}, 0.0
    items = [(k, p, 1) for p in precs for k in args.models] + [(k, args.train_precision, S.max_seeds)
                                                             for k in args.models if S.max_seeds > 1]
    for kind, prec, seeds in items:
        if time.time() + last > end:
            b["steps"].append({"model": kind, "precision": prec, "seeds": seeds, "skipped": "bench budget"})
            continue
        t0 = time.time()
        try:
            r = bench_step(kind, prec, seeds, S, sets, flops=kind not in flops)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            b["steps"].append({"model": kind, "precision": prec, "seeds": seeds, "error": f"{type(e).__name__}: {e}"})
            continue
        flops.setdefault(kind, r.pop("flops_per_step", None))
        f = flops[kind] and flops[kind] * seeds
        r["flops_per_step"] = f
        if f:
            r["tflop_per_s"] = f / (r["ms_per_step"] / 1e3) / 1e12
            peak = b["matmul_peak"][prec].get("flops_per_s")
            r["fraction_of_matmul_peak"] = peak and f / (r["ms_per_step"] / 1e3) / peak
        anchor = ANCHORS["pytorch_ms_per_step"][kind].get(prec)
        if anchor and seeds == 1:
            r["pytorch_ms_per_step"], r["speedup_vs_pytorch"] = anchor, anchor / r["ms_per_step"]
        b["steps"].append(r)
        last = time.time() - t0
        say(f"bench: {kind} {prec} x{seeds}: {r['ms_per_step']:.2f} ms/step, compile {r['compile_s']:.1f} s, "
            f"{100 * (r.get('fraction_of_matmul_peak') or float('nan')):.1f}% of peak")


def bench_entry(rec: dict, kind: str, precision: str, seeds: int):
    for r in rec.get("bench", {}).get("steps", []):
        if (r["model"], r["precision"], r["seeds"]) == (kind, precision, seeds) and "ms_per_step" in r:
            return r
    return None


def train_one(kind: str, rec: dict, S: Sizes, sets: dict, args, clock: Clock, todo) -> list:
    """Trains ``kind`` within its share (seeds vmapped if they fit), exports OUT/<kind>.npz; the EMA models."""
    spe = len(sets["train"]) // S.batch
    need = {}
    for k in todo:
        e = bench_entry(rec, k, args.train_precision, 1)
        need[k] = e and e["compile_s"] + 1.05 * e["ms_per_step"] / 1e3 * spe * S.epochs + 5
    share = args.time_budget or train_share(kind, todo, need, clock.share("train"))
    seeds = args.seeds or pick_seeds(share, bench_entry(rec, kind, args.train_precision, 1),
                                     bench_entry(rec, kind, args.train_precision, S.max_seeds), spe, S.epochs)
    r = rec["train"][kind] = {"time_budget_s": round(share, 1), "seeds": list(range(seeds)),
                              "need_s": need[kind] and round(need[kind], 1),
                              "epochs_planned": S.epochs, "steps_per_epoch": spe, "precision": args.train_precision}
    cfg = train_config(kind, S, args.train_precision, time_budget=share, checkpoint_every=20 * spe, keep_checkpoints=1,
                       log_every=max(1, spe // 2), out=str(Path(args.work_dir) / kind))
    say(f"train {kind}: {seeds} seed(s), budget {share:.0f} s, lr {cfg.resolved_lr():g}, {spe} steps/epoch")
    t0 = time.time()
    task = lambda c: sudoku_task(c, sets["train"], sets["id"])
    if seeds > 1:
        models, hists = train_multiseed(cfg, task, range(seeds), resume=not args.fresh)
        cfg = seed_config(cfg, 0)
    else:
        model, hist = train(cfg, task(cfg), resume=not args.fresh)
        models, hists = [model], [hist]
    logs = [h for h in hists[0] if "loss" in h]
    steps = max((h["step"] for h in hists[0]), default=0)
    r.update(seconds=round(time.time() - t0, 1), steps_done=steps, epochs_done=round(steps / spe, 2),
             stopped_by_budget=any(h.get("event") == "time_budget" for h in hists[0]),
             final_train_metrics=logs[-1] if logs else None,
             loss_curve=[[h["step"], h["loss"]] for h in logs],
             final_loss_per_seed=[next((h["loss"] for h in reversed(hist) if "loss" in h), None) for hist in hists])
    path = pretrained.save(models[0], cfg, Path(args.out) / f"{kind}.npz")
    r["checkpoint"] = {"file": path.name, "bytes": path.stat().st_size, "seed": 0}
    say(f"train {kind}: {steps} steps = {steps / spe:.1f} epochs in {r['seconds']:.0f} s; wrote {path.name}")
    return models


def load_trained(kind: str, args) -> list:
    """The models of an earlier run: OUT/<kind>.npz, else the run in --work-dir (for --phases without train)."""
    f = Path(args.out) / f"{kind}.npz"
    if f.is_file():
        return [pretrained.load_file(f)[0]]
    run = Path(args.work_dir) / kind
    return [load_model(run if (run / "config.json").is_file() else run / "seed_0")[0]]


def _merge(parts, fields, n_key="n") -> dict:
    """Puzzle-weighted (cell accuracies: blank-weighted) accuracies of chunks ``[(n, blanks, result)]``."""
    out = {n_key: sum(p[0] for p in parts)}
    for f in fields:
        w = [p[1] if f.startswith("cell") else p[0] for p in parts]
        out[f] = (np.sum([np.asarray(p[2][f], float) * wi for p, wi in zip(parts, w)], axis=0) / sum(w)).tolist()
    return out


def _chunks(s: SudokuSet, n_max: int, size: int, end: float):
    """Prefix chunks of ``s`` while the last chunk's time says the next fits before ``end`` (the first always)."""
    n, last = 0, 0.0
    while n < min(n_max, len(s)) and (n == 0 or time.time() + last <= end):
        t0 = time.time()
        yield n // size, s.subset(slice(n, min(n + size, n_max, len(s))))
        n, last = min(n + size, n_max, len(s)), time.time() - t0


def evaluate_one(kind: str, models: list, rec: dict, S: Sizes, sets: dict, args, seconds: float, save) -> None:
    end, r = time.time() + seconds, rec["eval"].setdefault(kind, {})
    keys = [jax.random.PRNGKey(10_000 + s) for s in range(len(models))]
    blanks = lambda s: int((~s.givens).sum())
    curves = ("board_acc", "cell_acc")
    with jax.default_matmul_precision(args.train_precision):
        t0 = time.time()
        ids = [evaluate_boards(m, sets["id"], S.t_eval, min(S.eval_batch, len(sets["id"])), k)
               for m, k in zip(models, keys)]
        r["id"] = {"puzzles": len(sets["id"]), "steps": ids[0]["steps"], "seconds": round(time.time() - t0, 1),
                   **{f: [x[f] for x in ids] for f in curves}}
        save()
        t0, parts = time.time(), [[] for _ in models]
        for i, sub in _chunks(sets["ood"], S.ood_n, S.ood_chunk, t0 + 0.4 * (end - t0)):
            for p, m, k in zip(parts, models, keys):
                p.append((len(sub), blanks(sub), evaluate_boards(m, sub, S.t_eval, min(S.eval_batch, len(sub)),
                                                                 jax.random.fold_in(k, 1 + i))))
        merged = [_merge(p, curves, "puzzles") for p in parts]
        r["ood"] = {"puzzles": merged[0]["puzzles"], "subset": f"first {merged[0]['puzzles']} of {len(sets['ood'])}",
                    "steps": ids[0]["steps"], "seconds": round(time.time() - t0, 1),
                    **{f: [x[f] for x in merged] for f in curves}}
        say(f"eval {kind}: ID T={S.t} {r['id']['board_acc'][0][r['id']['steps'].index(S.t)]:.3f}, OOD on "
            f"{r['ood']['puzzles']} at T={r['ood']['steps']}: {np.round(r['ood']['board_acc'][0], 3).tolist()}")
        save()
        t0, parts = time.time(), []
        fields = ("board_acc", "cell_acc", "single_board_acc", "oracle_board_acc")
        for i, sub in _chunks(sets["ood"], S.vote_n, S.vote_block, end):
            v = energy_voting(models[0], sub, K=S.vote_k, steps=S.vote_steps, chunk=S.vote_k,
                              key=jax.random.fold_in(keys[0], 10_000 + i), batch_size=min(S.vote_block, len(sub)))
            parts.append((len(sub), blanks(sub), v))
        r["vote"] = {"K": S.vote_k, "steps": S.vote_steps, "seed": 0, "seconds": round(time.time() - t0, 1),
                     **_merge(parts, fields, "puzzles")}
        r["vote"]["subset"] = f"first {r['vote']['puzzles']} of {len(sets['ood'])}"
        say(f"eval {kind}: voting K={S.vote_k} on {r['vote']['puzzles']}: {r['vote']['board_acc']:.3f}")


def lyapunov_one(model, S: Sizes, sets: dict) -> dict:
    digits, given = lyapunov_puzzle(sets["ood"], 0)
    t0 = time.time()
    with jax.default_matmul_precision("float32"):
        le = model_lyapunov(model, digits, given, T=S.lyap_t, k=S.lyap_k, key=jax.random.PRNGKey(0))
    return {"T": S.lyap_t, "k": S.lyap_k, "puzzle": f"{sets['ood'].name}[0]", "seconds": round(time.time() - t0, 1),
            **le}


# -------------------------------------------------------------------------------------- output
def plot(rec: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for i, (kind, r) in enumerate(rec.get("eval", {}).items()):
        if "ood" in r:
            y = 100 * np.asarray(r["ood"]["board_acc"])
            ax[0, 0].errorbar(r["ood"]["steps"], y.mean(0), yerr=y.std(0), fmt="o-", color=f"C{i}",
                              label=f"{kind} OOD ({r['ood']['puzzles']} RRN, {len(y)} seed(s))")
        if "id" in r:
            ax[0, 0].plot(r["id"]["steps"], 100 * np.asarray(r["id"]["board_acc"]).mean(0), "s--", color=f"C{i}",
                          alpha=0.5, label=f"{kind} ID (SATNet test)")
        if "vote" in r:
            ax[0, 0].plot([r["vote"]["steps"]], [100 * r["vote"]["board_acc"]], "*", ms=14, color=f"C{i}",
                          label=f"{kind} voting K={r['vote']['K']} ({r['vote']['puzzles']})")
    ax[0, 0].set_xscale("log", base=2)
    ax[0, 0].set_xticks(rec["sizes"]["t_eval"], [str(t) for t in rec["sizes"]["t_eval"]])
    ax[0, 0].set(xlabel="T_eval", ylabel="board accuracy (%)", ylim=(-2, 102), title="Sudoku test-time scaling")
    for i, (kind, r) in enumerate(rec.get("train", {}).items()):
        if r.get("loss_curve"):
            c = np.asarray(r["loss_curve"])
            ax[0, 1].plot(c[:, 0], c[:, 1], color=f"C{i}", label=f"{kind} ({r['epochs_done']} epochs)")
    ax[0, 1].set(xlabel="step", ylabel="training loss", title="training (seed 0)")
    steps = [b for b in rec.get("bench", {}).get("steps", []) if "ms_per_step" in b and b["seeds"] == 1]
    for j, b in enumerate(steps):
        ax[1, 0].bar(j, b["ms_per_step"], color="C0" if b["precision"] == "float32" else "C1")
        if b.get("pytorch_ms_per_step"):
            ax[1, 0].plot([j - 0.4, j + 0.4], [b["pytorch_ms_per_step"]] * 2, "k--")
    ax[1, 0].set_xticks(range(len(steps)), [f"{b['model']}\n{b['precision']}" for b in steps], fontsize=8)
    ax[1, 0].set(ylabel="ms / train step", title="train step (dashed: PyTorch AKOrN code, H100)")
    title = "leading Lyapunov exponents (1 puzzle)"
    for i, (kind, r) in enumerate(rec.get("lyapunov", {}).items()):
        if "exponents" in r:
            title = f"leading {r['k']} Lyapunov exponents (T={r['T']}, 1 puzzle)"
            ax[1, 1].plot(r["exponents"], ".-", ms=3, color=f"C{i}", label=f"{kind}: max {r['max_le']:.3f}")
    ax[1, 1].axhline(0, color="k", lw=0.5)
    ax[1, 1].set(xlabel="index", ylabel="exponent", title=title)
    for a in ax.flat:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle(f"gpu_run on {rec.get('env', {}).get('devices', ['?'])[0]}" + (" (dry run)" if rec["dry_run"] else ""))
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def check_outputs(out: Path) -> dict:
    """The files under ``out`` against the limits of what comes back from the GPU machine."""
    files = [p for p in out.rglob("*") if p.is_file()]
    bad = [str(p.relative_to(out)) for p in files if p.stat().st_size > LIMITS["bytes"]
           or len(p.relative_to(out).parts) > LIMITS["depth"] + 1
           or not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in p.relative_to(out).parts)]
    ok = len(files) <= LIMITS["files"] and not bad
    return {"files": {str(p.relative_to(out)): p.stat().st_size for p in sorted(files)}, "ok": ok, "bad": bad}


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="output folder, 5 files (default outputs/gpu_run; --dry-run: outputs/gpu_run_dry)")
    p.add_argument("--budget", type=float, default=540, help="total wall-clock seconds of the process (default 540)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training per model (default: its share of the budget, from the bench)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, same code path; no GPU check")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="phases to run (default all)")
    p.add_argument("--models", nargs="+", choices=KINDS, default=list(KINDS), help="models (default akorn itrsa)")
    p.add_argument("--seeds", type=int, default=0, help="vmapped seeds per model (default 0: auto, from the bench)")
    p.add_argument("--train-precision", default="tensorfloat32", choices=("float32", "tensorfloat32"),
                   help="matmul precision of training and evaluation (default tensorfloat32)")
    p.add_argument("--data-dir", default=None, help="Sudoku files (default: $RSA_JAX_SUDOKU_DIR, else the repository's "
                                                    "committed data/sudoku; `synthetic`: generated, --dry-run only)")
    p.add_argument("--work-dir", default=None, help="training runs, outside --out (default /tmp/rsa_jax_gpu_run[_dry])")
    p.add_argument("--fresh", action="store_true",
                   help="delete earlier runs in --work-dir (default: resume them; a second call continues training)")
    a = p.parse_args(argv)
    a.out = a.out or f"outputs/gpu_run{'_dry' if a.dry_run else ''}"
    a.work_dir = a.work_dir or f"/tmp/rsa_jax_gpu_run{'_dry' if a.dry_run else ''}"
    if Path(a.work_dir).resolve().is_relative_to(Path(a.out).resolve()):
        p.error("--work-dir must not be inside --out (only the final files go there)")
    return a


def main(argv=None) -> dict:
    global T0
    if __name__ != "__main__":      # called, not run: the budget counts from now
        T0 = time.time()
    args = parse_args(argv)
    S = DRY if args.dry_run else Sizes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = set(args.phases) != set(PHASES) and (out / "gpu_run.json").is_file()   # a rerun of some phases
    log = open(out / "gpu_run.log", "a" if partial else "w")
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))       # still write the JSON when stopped
    clock = Clock(args.budget, args.phases)
    rec = {"command": " ".join(sys.argv), "dry_run": args.dry_run, "budget_s": args.budget,
           "sizes": dataclasses.asdict(S), "phases": {}, "anchors": ANCHORS, "train": {}, "eval": {}, "lyapunov": {}}
    if partial:   # keep the other phases' results of the earlier run
        old = json.loads((out / "gpu_run.json").read_text())
        rec.update({k: old[k] for k in ("phases", "bench", "train", "eval", "lyapunov") if k in old})
    save = lambda: save_json(rec, out / "gpu_run.json")
    code = 0
    try:
        jax.config.update("jax_compilation_cache_dir", str(Path(args.work_dir) / "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        rec["env"] = environment(args.dry_run)
        say(f"JAX {jax.__version__} on {rec['env']['backend']}: {rec['env']['devices']}; budget {args.budget:g} s")
        if rec["env"]["gpu_check"] == "failed":
            code = 2
            rec["error"] = (f"JAX sees no GPU (backend {rec['env']['backend']}, devices {rec['env']['devices']}); "
                            "this command is for a GPU machine. Use --dry-run on a CPU.")
            say("ERROR: " + rec["error"])
            return rec
        sets, rec["data"] = load_data(args.data_dir, S, args.dry_run)
        say(f"data: {rec['data']}")
        models = {}

        def phase(name, fn):
            t0 = time.time()
            try:
                fn()
                failed = [k for k in args.models if "error" in rec.get(name, {}).get(k, {})]
                rec["phases"][name] = {"status": f"error in {', '.join(failed)}" if failed else "ok"}
            except Exception as e:  # noqa: BLE001  (record, go on with the next phase)
                traceback.print_exc()
                rec["phases"][name] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            rec["phases"][name]["seconds"] = round(time.time() - t0, 1)
            rec["phases"][name]["elapsed_s"] = round(time.time() - T0, 1)
            save()

        def per_model(section, fn):
            for kind in args.models:
                rec[section].pop(kind, None)
                try:
                    fn(kind)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    rec[section].setdefault(kind, {})["error"] = f"{type(e).__name__}: {e}"
                save()

        def get(kind):
            if kind not in models:
                models[kind] = load_trained(kind, args)
            return models[kind]

        if "bench" in args.phases:
            seconds = min(SHARES["bench"] * args.budget, clock.share("bench"))
            phase("bench", lambda: run_bench(rec, S, sets, args, seconds))
        if "train" in args.phases:
            def one(kind):
                models[kind] = train_one(kind, rec, S, sets, args, clock, args.models[args.models.index(kind):])
            phase("train", lambda: per_model("train", one))
        if "eval" in args.phases:
            left = lambda kind: clock.share("eval") / (len(args.models) - args.models.index(kind))
            ev = lambda kind: evaluate_one(kind, get(kind), rec, S, sets, args, left(kind), save)
            phase("eval", lambda: per_model("eval", ev))
        if "lyapunov" in args.phases:
            def lyap(kind):
                if clock.left() < 0.5 * SHARES["lyapunov"] * args.budget / len(args.models):
                    rec["lyapunov"][kind] = {"skipped": f"budget: {clock.left():.0f} s left"}
                else:
                    r = rec["lyapunov"][kind] = lyapunov_one(get(kind)[0], S, sets)
                    say(f"lyapunov {kind}: max {r['max_le']:.4f}, mean {r['mean_le']:.4f} ({r['seconds']:.0f} s)")
            phase("lyapunov", lambda: per_model("lyapunov", lyap))
    except SystemExit as e:              # no data, or SIGTERM: a message, not a traceback
        code = e.code if isinstance(e.code, int) else 2
        rec["error"] = "stopped by SIGTERM; the phases finished before are saved" if code == 143 else str(e.code)
        say(f"ERROR: {rec['error']}")
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt too: still write what is done)
        code = 1
        rec["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        if not code and any(rec["phases"].get(p, {}).get("status") != "ok" for p in args.phases):
            code = 1                     # green only when every phase asked for is
        try:
            plot(rec, out / "gpu_run.png")
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        rec["elapsed_s"] = round(time.time() - T0, 1)
        save()
        rec["outputs"] = check_outputs(out)
        save()
        say(f"done in {rec['elapsed_s']:.0f} s (budget {args.budget:g} s); files: {rec['outputs']['files']}"
            + ("" if rec["outputs"]["ok"] else f"; OVER THE LIMITS: {rec['outputs']['bad']}"))
        sys.stdout, sys.stderr = streams
        log.close()
        if code and __name__ == "__main__":
            sys.exit(code)
    return rec


if __name__ == "__main__":
    main()
