"""Training-step benchmark of AKOrN and ItrSA on Sudoku (JSON out; never a test).

    python -m benchmarks.train_bench                         # CPU-sized: D=64, H=4, T=4, batch 8
    python -m benchmarks.train_bench --paper                 # paper size: D=512, H=8, N=4, T=16, batch 100
    python -m benchmarks.train_bench --paper --precision tensorfloat32 --fused --out outputs/bench/train.json
    python -m benchmarks.train_bench --variants base fused remat       # compared in one process

For each model: the step of ``rsa_jax.train.make_train_step`` (Adam, grad clip, EMA; no
penalties) on one fixed random batch, compiled ahead of time; reported are the compile time,
the median wall time of ``--iters`` steps after two warm-up steps, FLOPs per step from XLA's
cost analysis (see ``benchmarks.common`` for why the scan is unrolled to count them), achieved
FLOP/s as a fraction of this device's matmul peak measured in the same run at the same
precision, XLA's memory analysis of the compiled step, and the device's peak memory where the
backend reports it (GPU/TPU; the device peak is cumulative over the models of one run).

``--variants base fused remat`` builds all three in one process and times them round-robin (one
step of each per round), so that load drift on a shared machine hits every variant alike; the
JSON then gives each variant's speedup over the first, and for remat also the "useful" fraction
of peak (the base variant's FLOPs over remat's time; the FLOPs of remat include its recompute).

``--remat`` wraps each recurrent update in ``jax.checkpoint`` (activations of the T updates are
recomputed in the backward pass instead of stored). The trainer has no remat option, so the
benchmark uses a ``SudokuModel`` subclass whose rollout checkpoints the step.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from benchmarks.common import (add_run_args, compile_stats, environment, fill_defaults, matmul_peak,
                               peak_memory_bytes, precision_scope, write_json)
from rsa_jax.configs import TRAIN_BENCH_PAPER as PAPER
from rsa_jax.configs import TRAIN_BENCH_SMALL as SMALL
from rsa_jax.data.sudoku import SudokuSet
from rsa_jax.dynamics import rollout
from rsa_jax.models.sudoku import ModelConfig, SudokuModel
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import Task, TrainConfig, init_train_state, make_optimizer, make_train_step, split_model



class RematSudokuModel(SudokuModel):
    """``SudokuModel`` whose rollout rematerializes every update (``jax.checkpoint``)."""

    def rollout(self, c, x0, steps, *, trajectory=False):
        step, params = self.pure_step()
        return rollout(jax.checkpoint(step), params, x0, c, steps, trajectory=trajectory)


def random_boards(n: int, seed: int = 0, given_frac: float = 0.4) -> SudokuSet:
    """``n`` random boards (not valid Sudoku: timing does not depend on the digits)."""
    rng = np.random.default_rng(seed)
    sol = rng.integers(1, 10, (n, 81)).astype(np.uint8)
    puz = np.where(rng.random((n, 81)) < given_frac, sol, 0).astype(np.uint8)
    return SudokuSet(puz, sol, "random")


def make_task(cfg: TrainConfig, remat: bool) -> Task:
    boards = random_boards(cfg.batch_size)
    task = sudoku_task(cfg, boards, boards)
    if remat:
        task = dataclasses.replace(task, init_model=lambda rngs: RematSudokuModel(cfg.model, rngs=rngs))
    return task


def memory_analysis(compiled) -> dict | None:
    """Bytes of the compiled program's arguments, outputs and temporaries (XLA's static analysis)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
            "generated_code_size_in_bytes")
    return {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}


VARIANTS = {"base": (False, False), "fused": (True, False), "remat": (False, True), "fused+remat": (True, True)}


def prepare(kind: str, variant: str, a: argparse.Namespace) -> dict:
    """Builds and compiles the train step of one (model, variant); returns what timing needs."""
    fused, remat = VARIANTS[variant]
    mcfg = ModelConfig(kind=kind, d=a.d, heads=a.heads, n=a.n, fused=fused)
    cfg = TrainConfig(model=mcfg, t_train=a.t, batch_size=a.batch, matmul_precision=a.precision, progress=False)
    task = make_task(cfg, remat)
    with precision_scope(a.precision):
        model = task.init_model(nnx.Rngs(0))
        graphdef, _, rest = split_model(model)
        tx = make_optimizer(cfg)
        state = init_train_state(model, tx, jax.random.PRNGKey(0))
        step = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest, jit=False)
        batch = jax.device_put(next(iter(task.train_batches(0))))
        compiled, stats = compile_stats(step, state, batch, jit_kwargs={"donate_argnums": 0})
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    holder = [state]

    def call():
        holder[0], metrics = compiled(holder[0], batch)
        return holder[0], metrics["loss"]

    for _ in range(2):
        jax.block_until_ready(call())
    return {"model": kind, "variant": variant, "config": dataclasses.asdict(mcfg), "remat": remat,
            "params": n_params, "stats": stats, "memory_analysis": memory_analysis(compiled), "call": call,
            "times": [], "device_peak_bytes_after_compile": peak_memory_bytes()}


def time_interleaved(entries: list, iters: int, min_time: float) -> None:
    """Round-robin timing: one step of each entry per round, so load drifts on a shared machine
    hit every entry alike. Fills ``entry["times"]`` (seconds)."""
    t_start = time.perf_counter()
    rounds = 0
    while rounds < iters or time.perf_counter() - t_start < min_time * len(entries):
        for e in entries:
            t0 = time.perf_counter()
            jax.block_until_ready(e["call"]())
            e["times"].append(time.perf_counter() - t0)
        rounds += 1


def summarize(e: dict, a: argparse.Namespace, peak_flops: float | None, base: dict | None) -> dict:
    ms = np.array(e["times"]) * 1e3
    median_s = float(np.median(ms)) / 1e3
    flops = e["stats"]["flops"]
    out = {
        "model": e["model"], "variant": e["variant"], "config": e["config"], "remat": e["remat"],
        "t_train": a.t, "batch": a.batch, "params": e["params"],
        "compile_s": e["stats"]["compile_s"], "ms_per_step": float(np.median(ms)), "ms_min": float(ms.min()),
        "ms_p90": float(np.percentile(ms, 90)), "iters": len(ms), "boards_per_s": a.batch / median_s,
        "flops_per_step": flops, "flops_per_step_xla_loop_once": e["stats"]["flops_xla"],
        "achieved_flops_per_s": flops / median_s if flops else None,
        "memory_analysis": e["memory_analysis"],
        "device_peak_bytes_after_compile": e["device_peak_bytes_after_compile"],
        "final_loss": float(e["call"]()[1]),
    }
    if peak_flops and flops:
        out["fraction_of_matmul_peak"] = flops / median_s / peak_flops
    if base is not None and base is not e:
        # useful work = the base variant's FLOPs (remat's recomputation is overhead)
        base_flops = base["stats"]["flops"]
        out["speedup_vs_base"] = float(np.median(base["times"])) / median_s
        if peak_flops and base_flops:
            out["useful_fraction_of_matmul_peak"] = base_flops / median_s / peak_flops
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper", action="store_true", help=f"paper size {PAPER} (default: {SMALL})")
    p.add_argument("--models", nargs="+", default=["akorn", "itrsa"], choices=["akorn", "itrsa"])
    for k in ("d", "heads", "n", "t", "batch"):
        p.add_argument(f"--{k}", type=int, default=None, help="override the size preset")
    add_run_args(p)
    p.add_argument("--remat", action="store_true", help="jax.checkpoint every recurrent update")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="compare these variants in one process, timed round-robin (overrides --fused/--remat; "
                        "ratios to the first)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default 30; 50 with --paper)")
    p.add_argument("--min-time", type=float, default=1.0, help="time at least this many seconds per model")
    a = fill_defaults(p.parse_args(argv), PAPER, SMALL)
    if a.variants is None:
        a.variants = ["+".join(n for n, on in (("fused", a.fused), ("remat", a.remat)) if on) or "base"]
    if a.iters is None:
        a.iters = 50 if a.paper else 30
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    peak = matmul_peak(a.peak_n, precision=a.precision) if a.peak_n > 0 else None
    peak_flops = peak["flops_per_s"] if peak else None
    results = []
    for kind in a.models:
        entries = [prepare(kind, v, a) for v in a.variants]
        time_interleaved(entries, a.iters, a.min_time)
        results += [summarize(e, a, peak_flops, entries[0]) for e in entries]
        del entries
    payload = {"benchmark": "train_step", "preset": "paper" if a.paper else "small", "precision": a.precision,
               "variants": a.variants, "environment": environment(), "matmul_peak": peak,
               "device_peak_bytes": peak_memory_bytes(), "results": results}
    write_json(a.out, payload)
    return payload


if __name__ == "__main__":
    main()
