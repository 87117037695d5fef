"""Inference benchmark: boards/s of long rollouts and of AKOrN's energy voting (JSON out; never a test).

    python -m benchmarks.inference_bench                  # CPU-sized: T_eval=64, 256 boards, K=4 voting
    python -m benchmarks.inference_bench --paper          # T_eval=2048 on 1,000 RRN test boards, K=100 voting
    python -m benchmarks.inference_bench --run runs/akorn # a trained model instead of a random init

Test-time scaling: ``rsa_jax.evaluate.evaluate_boards`` at one ``T_eval`` over the RRN test
boards (``--boards`` of them; the whole set is 18,000), timed after a warm-up call on one batch
that compiles the rollout. Energy voting: ``rsa_jax.evaluate.energy_voting`` with ``K`` random
initial states per board, vmapped over chunks of ``--chunk`` candidates, each run for
``--vote-steps`` updates. Random-init models give meaningless accuracies: only the speeds count.
Where the RRN file is missing (e.g. a fresh accelerator machine) random boards stand in, which
does not change the speed.

FLOPs: XLA's cost analysis of one update on one batch (``flops_per_update``) times the number of
updates; compared with the matmul peak measured in the same run, as in ``train_bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from benchmarks.common import (add_run_args, compile_stats, environment, fill_defaults, matmul_peak, peak_memory_bytes,
                               precision_scope, write_json)
from benchmarks.train_bench import random_boards
from rsa_jax.configs import INFERENCE_BENCH_PAPER as PAPER
from rsa_jax.configs import INFERENCE_BENCH_SMALL as SMALL
from rsa_jax.data.sudoku import load_split
from rsa_jax.evaluate import energy_voting, evaluate_boards
from rsa_jax.models.sudoku import ModelConfig, SudokuModel



def load_boards(n: int, data_dir=None):
    """The first ``n`` RRN test boards, or random stand-ins (``source`` says which)."""
    try:
        return load_split("rrn_test", data_dir, limit=n), "rrn_test"
    except FileNotFoundError:
        return random_boards(n, seed=1, given_frac=0.3), "random"


def update_flops(model: SudokuModel, batch: int) -> float | None:
    """FLOPs of one recurrent update of ``batch`` boards (XLA cost analysis)."""
    step, params = model.pure_step()
    x = jax.ShapeDtypeStruct((batch, 81, model.config.d), np.float32)
    _, stats = compile_stats(lambda p, x, c: step(p, x, c), params, x, x)
    return stats["flops"]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def make_model(kind: str | None, fused: bool, a: argparse.Namespace) -> SudokuModel:
    if a.run:
        from rsa_jax.train import load_model
        model, _ = load_model(a.run)
        if fused != model.config.fused:  # same parameters, other attention kernel
            graphdef, state = nnx.split(model)
            model = SudokuModel(dataclasses.replace(model.config, fused=fused), rngs=nnx.Rngs(0))
            nnx.update(model, state)
        return model
    return SudokuModel(ModelConfig(kind=kind, d=a.d, heads=a.heads, n=a.n, fused=fused), rngs=nnx.Rngs(0))


def bench_model(kind: str | None, a: argparse.Namespace, peak: float | None, boards, voting_boards) -> list:
    """All variants of one model, timed round-robin (``--repeats`` rounds, median)."""
    key = jax.random.PRNGKey(0)
    vb = min(a.batch, len(voting_boards))
    n_batches = -(-len(boards) // a.batch)
    entries = []
    with precision_scope(a.precision):
        for variant in a.variants:
            model = make_model(kind, variant == "fused", a)
            e = {"model": model.config.kind, "variant": variant, "config": dataclasses.asdict(model.config),
                 "m": model, "fpu": update_flops(model, a.batch), "rollout_s": [], "voting_s": []}
            # warm-up calls on one batch with the timed shapes compile the programs
            _, e["rollout_warmup_compile_s"] = timed(lambda: evaluate_boards(
                model, boards.subset(np.arange(min(a.batch, len(boards)))), (a.t_eval,), batch_size=a.batch, key=key))
            _, e["voting_warmup_compile_s"] = timed(lambda: energy_voting(
                model, voting_boards.subset(np.arange(vb)), K=a.chunk, steps=a.vote_steps, key=key, chunk=a.chunk,
                batch_size=vb))
            entries.append(e)
        for _ in range(a.repeats):
            for e in entries:
                e["r"], s = timed(lambda: evaluate_boards(e["m"], boards, (a.t_eval,), batch_size=a.batch, key=key))
                e["rollout_s"].append(s)
            for e in entries:
                e["v"], s = timed(lambda: energy_voting(e["m"], voting_boards, K=a.k, steps=a.vote_steps, key=key,
                                                         chunk=a.chunk, batch_size=vb))
                e["voting_s"].append(s)
    out = []
    for e in entries:
        rs, vs = float(np.median(e["rollout_s"])), float(np.median(e["voting_s"]))
        flops = e["fpu"] * a.t_eval * n_batches if e["fpu"] else None
        res = {"model": e["model"], "variant": e["variant"], "config": e["config"]}
        res["rollout"] = {
            "t_eval": a.t_eval, "boards": len(boards), "batch": a.batch,
            "warmup_compile_s": e["rollout_warmup_compile_s"], "seconds": rs, "seconds_all": e["rollout_s"],
            "boards_per_s": len(boards) / rs, "updates_per_s": len(boards) * a.t_eval / rs,
            "flops_per_update_batch": e["fpu"], "achieved_flops_per_s": flops / rs if flops else None,
            "board_acc": e["r"]["board_acc"][0],
        }
        if peak and flops:
            res["rollout"]["fraction_of_matmul_peak"] = flops / rs / peak
        res["voting"] = {
            "K": a.k, "steps": a.vote_steps, "chunk": a.chunk, "boards": len(voting_boards), "batch": vb,
            "warmup_compile_s": e["voting_warmup_compile_s"], "seconds": vs, "seconds_all": e["voting_s"],
            "boards_per_s": len(voting_boards) / vs, "candidate_runs_per_s": len(voting_boards) * a.k / vs,
            "board_acc": e["v"]["board_acc"], "single_board_acc": e["v"]["single_board_acc"],
        }
        if e is not entries[0]:
            res["rollout_speedup_vs_base"] = float(np.median(entries[0]["rollout_s"])) / rs
            res["voting_speedup_vs_base"] = float(np.median(entries[0]["voting_s"])) / vs
        out.append(res)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper", action="store_true", help=f"paper size {PAPER} (default: {SMALL})")
    p.add_argument("--models", nargs="+", default=["akorn", "itrsa"], choices=["akorn", "itrsa"])
    p.add_argument("--run", default=None, help="a run directory of rsa_jax.train: benchmark that model only")
    for k in ("d", "heads", "n", "t_eval", "boards", "batch", "k", "vote_steps", "vote_boards", "chunk"):
        p.add_argument(f"--{k.replace('_', '-')}", dest=k, type=int, default=None, help="override the preset")
    add_run_args(p)
    p.add_argument("--variants", nargs="+", default=None, choices=["base", "fused"],
                   help="compare these attention kernels in one process, timed round-robin (overrides --fused)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    p.add_argument("--data-dir", default=None, help="Sudoku data directory (default: rsa_jax.data.sudoku's)")
    a = fill_defaults(p.parse_args(argv), PAPER, SMALL)
    if a.variants is None:
        a.variants = ["fused" if a.fused else "base"]
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    boards, source = load_boards(a.boards, a.data_dir)
    voting_boards = boards.subset(np.arange(min(a.vote_boards, len(boards))))
    peak = matmul_peak(a.peak_n, precision=a.precision) if a.peak_n > 0 else None
    kinds = [None] if a.run else a.models
    results = [r for kind in kinds for r in bench_model(kind, a, peak["flops_per_s"] if peak else None, boards,
                                                        voting_boards)]
    payload = {"benchmark": "inference", "preset": "paper" if a.paper else "small", "precision": a.precision,
               "variants": a.variants, "repeats": a.repeats, "boards_source": source, "run": a.run,
               "environment": environment(), "matmul_peak": peak, "device_peak_bytes": peak_memory_bytes(),
               "results": results}
    write_json(a.out, payload)
    return payload


if __name__ == "__main__":
    main()
