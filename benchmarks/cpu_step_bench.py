"""The Sudoku train step at the CPU protocol's size, as a fraction of the float32 matmul peak (issue 12).

    python -m benchmarks.cpu_step_bench --out outputs/bench/cpu_step.json
    python -m benchmarks.cpu_step_bench --models itrsa --iters 3 --devices 2

For each model of ``rsa_jax.configs.SUDOKU_CPU`` (D=128, H=4, N=4, T=16, batch 100, S=81) it times the
step of ``rsa_jax.train.make_train_step`` (Adam, clipping, EMA) in variants, round-robin in one
process so that load on a shared machine hits each alike:

  base   one XLA CPU device (XLA's intra-op thread pool over all cores);
  dp<n>  the batch split over ``n`` host devices (``rsa_jax.parallel``, what ``--data-parallel`` does),
         so that the per-example work of each half runs on its own core.

Reported: ms/step, the model's FLOPs per step ``3 T B (8 S D^2 + 4 S^2 D)`` (forward matmuls times
three for forward + backward; readout and elementwise work not counted) over the time, as a fraction
of the float32 matmul peak measured in the same process (a chain of n x n matmuls), and XLA's own
FLOP count of the unrolled program. Host devices are forced with
``--xla_force_host_platform_device_count`` before JAX starts (this module sets it).
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    _n = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), None)
    if _n is None and "--devices" in sys.argv:
        _n = sys.argv[sys.argv.index("--devices") + 1]
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={_n or 2}").strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import compile_stats, environment, matmul_peak, write_json  # noqa: E402
from benchmarks.train_bench import random_boards  # noqa: E402
from rsa_jax import parallel  # noqa: E402
from rsa_jax.configs import SUDOKU_CPU  # noqa: E402
from rsa_jax.tasks.sudoku import sudoku_task  # noqa: E402
from rsa_jax.train import init_train_state, make_optimizer, make_train_step, split_model  # noqa: E402

S = 81


def model_flops(cfg) -> float:
    """``3 T B (8 S D^2 + 4 S^2 D)``: the attention matmuls of forward and backward."""
    d = cfg.model.d
    return 3.0 * cfg.t_train * cfg.batch_size * (8 * S * d * d + 4 * S * S * d)


#: a size for smoke tests of the harnesses (``prepare(..., tiny=True)``), not for timings
TINY = {"d": 16, "heads": 2, "batch_size": 8, "t_train": 2}


def prepare(kind: str, variant: str, devices: int, tiny: bool = False) -> dict:
    cfg = dataclasses.replace(SUDOKU_CPU, model=SUDOKU_CPU.model.with_kind(kind), progress=False)
    if tiny:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d=TINY["d"], heads=TINY["heads"]),
                                  batch_size=TINY["batch_size"], t_train=TINY["t_train"])
    boards = random_boards(cfg.batch_size)
    task = sudoku_task(cfg, boards, boards)
    with jax.default_matmul_precision(cfg.matmul_precision):
        model = task.init_model(nnx.Rngs(0))
        graphdef, _, rest = split_model(model)
        tx = make_optimizer(cfg)
        state = init_train_state(model, tx, jax.random.PRNGKey(0))
        pure = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest, jit=False)
        batch = next(iter(task.train_batches(0)))
        if variant == "base":
            compiled, stats = compile_stats(pure, state, jax.device_put(batch), jit_kwargs={"donate_argnums": 0})
            step = compiled
        else:
            mesh = parallel.make_mesh(jax.devices()[:devices])
            step = parallel.make_sharded_train_step(pure, mesh, donate=True)
            state, batch = parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh)
            t0 = time.perf_counter()
            jax.block_until_ready(step(state, batch))      # compiles (state is donated: rebuild it)
            stats = {"compile_s": time.perf_counter() - t0, "flops": None}
            state = parallel.replicate(init_train_state(model, tx, jax.random.PRNGKey(0)), mesh)
    holder = [state]

    def call():
        holder[0], metrics = step(holder[0], batch)
        return metrics["loss"]

    jax.block_until_ready(call())
    return {"model": kind, "variant": variant, "cfg": cfg, "call": call, "stats": stats, "times": []}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["itrsa", "akorn"], choices=["itrsa", "akorn"])
    p.add_argument("--devices", type=int, default=2, help="host devices of the data-parallel variant (default 2)")
    p.add_argument("--variants", nargs="+", default=["base", "dp"], choices=["base", "dp"])
    p.add_argument("--iters", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--peak-n", type=int, default=2048, help="matmul size of the peak (default 2048)")
    p.add_argument("--out", default=None, help="JSON output path")
    a = p.parse_args(argv)
    peak = matmul_peak(a.peak_n, precision="float32")
    rows = []
    for kind in a.models:
        entries = [prepare(kind, v, a.devices) for v in a.variants]
        for _ in range(a.iters):
            for e in entries:
                t0 = time.perf_counter()
                jax.block_until_ready(e["call"]())
                e["times"].append(time.perf_counter() - t0)
        base_ms = None
        for e in entries:
            ms = float(np.median(e["times"]) * 1e3)
            base_ms = base_ms or ms
            f = model_flops(e["cfg"])
            rows.append({"model": kind, "variant": e["variant"] if e["variant"] == "base" else f"dp{a.devices}",
                         "ms_per_step": ms, "ms_all": [round(t * 1e3, 1) for t in e["times"]],
                         "model_flops_per_step": f, "xla_flops_per_step": e["stats"].get("flops"),
                         "compile_s": e["stats"]["compile_s"],
                         "model_fraction_of_matmul_peak": f / (ms / 1e3) / peak["flops_per_s"],
                         "speedup_vs_first": base_ms / ms})
            r = rows[-1]
            print(f"{kind:6s} {r['variant']:5s} {ms:8.0f} ms/step  {100 * r['model_fraction_of_matmul_peak']:5.1f}% "
                  f"of the {peak['flops_per_s'] / 1e9:.0f} GFLOP/s matmul peak  x{r['speedup_vs_first']:.2f}",
                  flush=True)
    payload = {"benchmark": "cpu_step", "config": dataclasses.asdict(SUDOKU_CPU), "matmul_peak": peak,
               "environment": environment(), "results": rows}
    write_json(a.out, payload)
    return payload


if __name__ == "__main__":
    main()
