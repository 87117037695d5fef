"""One training run on all cores against several at once, one per core: models per hour (issue 32).

    python -m benchmarks.concurrency_bench --out outputs/bench/concurrency.json
    python -m benchmarks.concurrency_bench --models akorn --iters 8 --rounds 2

The claims queue trains one model at a time with the batch split over two host devices (one per core).
The alternative is two runs at once, each on one host device pinned to its own core. Which gives more
models per hour depends on how well one step uses both cores (threads waiting on each other, memory
bandwidth shared), so it is measured, not argued. Every measurement is a child process timing the step
of ``benchmarks.cpu_step_bench`` (the CPU protocol: D = 128, H = 4, N = 4, T = 16, batch 100, Adam,
EMA) with the allocator the queue uses (``--allocator``, default tcmalloc where installed):

  one  one child, the batch split over ``--cores`` host devices, no affinity (``make claims``);
  many ``--cores`` children started together, each one host device pinned to one core
       (``os.sched_setaffinity``); they compile, wait at a barrier, then time their steps together;
  many1 the same with XLA's Eigen thread pool off (``--xla_cpu_multi_thread_eigen=false``), so that a
       child does not run two threads on its one core.

Layouts alternate for ``--rounds`` rounds so that other load hits each alike. Reported per layout: the
median ms/step of each run, and the training steps per hour of the whole machine (the sum over the runs
at once of 3,600 s / their median step); models per hour is that over ``--steps`` (the claims budget,
2,880). Nothing else should run on the machine while it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks.allocator_bench import child_env, find_preload


def child(model: str, iters: int, devices: int, core: int | None, tiny: bool = False) -> dict:
    """Pins this process to ``core`` (if given), compiles the step, says ``ready``, waits for a line on stdin
    (the barrier), then times ``iters`` steps; returns their wall ms."""
    import time

    import jax

    from benchmarks.cpu_step_bench import prepare
    if core is not None:
        os.sched_setaffinity(0, {core})
    entry = prepare(model, "dp" if devices > 1 else "base", devices, tiny)
    jax.block_until_ready(entry["call"]())
    print("ready", flush=True)
    sys.stdin.readline()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(entry["call"]())
        times.append(time.perf_counter() - t0)
    return {"ms_all": [t * 1e3 for t in times], "core": core, "devices": devices}


def run_together(model: str, iters: int, specs: list, preload: str, extra_flags: tuple = (),
                 tiny: bool = False) -> list:
    """Starts one child per ``(devices, core)`` in ``specs`` (``extra_flags``: more ``XLA_FLAGS``), releases
    them together once all are compiled, and returns their results in order."""
    procs = []
    for devices, core in specs:
        env = child_env(preload, devices, extra_flags)
        cmd = [sys.executable, "-m", "benchmarks.concurrency_bench", "--child", "--models", model,
               "--iters", str(iters), "--child-devices", str(devices)] + ([] if core is None else ["--core", str(core)])
        cmd += ["--tiny"] if tiny else []
        log = tempfile.TemporaryFile("w+")   # a file, not a pipe: a chatty child never blocks before the barrier
        procs.append((subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=log, text=True), log))

    def failed(p, log, where):
        log.seek(0)
        return RuntimeError(f"child failed {where} (rc {p.returncode}):\n{log.read()[-2000:]}")

    try:
        for p, log in procs:
            if p.stdout.readline().strip() != "ready":
                p.wait()
                raise failed(p, log, "before the barrier")
        for p, _ in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p, log in procs:
            stdout, _ = p.communicate()
            if p.returncode != 0:
                raise failed(p, log, "after the barrier")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:   # one child failed: the others would wait at the barrier forever
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()


def summarize(model: str, layout: str, rounds: list, steps: int) -> dict:
    """``rounds``: per round, the results of the runs that went at once. Per run position, the median ms/step
    over the rounds; the machine's steps per hour is the sum over positions of 3,600 s / that median."""
    per_run = [statistics.median(t for r in rounds for t in r[i]["ms_all"]) for i in range(len(rounds[0]))]
    steps_per_hour = sum(3.6e6 / ms for ms in per_run)
    return {"model": model, "layout": layout, "runs_at_once": len(per_run), "ms_per_step": per_run,
            "ms_all": [[round(t, 1) for r in rounds for t in r[i]["ms_all"]] for i in range(len(per_run))],
            "steps_per_hour": steps_per_hour, "models_per_hour": steps_per_hour / steps}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["akorn"], choices=["itrsa", "akorn"])
    p.add_argument("--cores", type=int, default=None, help="cores used (default: all this process may use)")
    p.add_argument("--iters", type=int, default=6, help="timed steps per child (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of each layout, alternating (default 2)")
    p.add_argument("--steps", type=int, default=2880, help="steps per model, for models per hour (default 2880)")
    p.add_argument("--allocator", default="tcmalloc", choices=["glibc", "tcmalloc", "jemalloc"],
                   help="preloaded allocator (default tcmalloc; glibc if it is not installed)")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help="a tiny model (cpu_step_bench.TINY): a smoke test, not a timing")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.models[0], a.iters, a.child_devices, a.core, a.tiny)), flush=True)
        return {}
    cores = sorted(os.sched_getaffinity(0))[:a.cores] if a.cores else sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or a.iters < 1 or a.rounds < 1:
        p.error(f"needs >= 2 cores (has {len(cores)}), --iters >= 1 and --rounds >= 1")
    preload = find_preload(a.allocator)
    if preload is None:
        print(f"{a.allocator} not installed: glibc malloc", flush=True)
        preload = ""
    pinned = [(1, c) for c in cores]
    layouts = {"one": ([(len(cores), None)], ()), "many": (pinned, ()),
               "many1": (pinned, ("--xla_cpu_multi_thread_eigen=false",))}
    rows = []
    for model in a.models:
        done = {k: [] for k in layouts}
        for r in range(a.rounds):
            for name in (list(layouts) if r % 2 == 0 else list(reversed(layouts))):
                specs, flags = layouts[name]
                done[name].append(run_together(model, a.iters, specs, preload, flags, a.tiny))
        ref = None
        for name in layouts:
            row = summarize(model, name, done[name], a.steps)
            ref = ref or row["steps_per_hour"]
            row["throughput_vs_one"] = row["steps_per_hour"] / ref
            rows.append(row)
            print(f"{model:6s} {name:5s} x{row['runs_at_once']}: ms/step "
                  + " ".join(f"{ms:.0f}" for ms in row["ms_per_step"])
                  + f"  {row['steps_per_hour']:.0f} steps/h = {row['models_per_hour']:.2f} models/h"
                  + f"  x{row['throughput_vs_one']:.2f}", flush=True)
    from benchmarks.common import environment, write_json
    payload = {"benchmark": "concurrency", "tiny": a.tiny, "cores": cores, "iters": a.iters, "rounds": a.rounds,
               "steps": a.steps,
               "allocator": a.allocator, "preload": preload or None, "environment": environment(), "results": rows}
    write_json(a.out, payload)
    return payload


if __name__ == "__main__":
    main()
