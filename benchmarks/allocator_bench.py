"""The CPU train step under each memory allocator: glibc malloc against tcmalloc / jemalloc preloaded.

    python -m benchmarks.allocator_bench --out outputs/bench/allocator.json
    python -m benchmarks.allocator_bench --models akorn --iters 4 --rounds 2

XLA's CPU runtime takes each step's large temporary buffers (hundreds of MB at the CPU protocol's
size) from ``malloc``; glibc serves requests over 32 MB with ``mmap`` and unmaps them on ``free``, so
every step faults the same memory in again page by page (minor faults, kernel time). An allocator
that keeps freed memory (tcmalloc) avoids that. The allocator can only be chosen before the process
starts (``LD_PRELOAD``), so every measurement is a child process (``--child``) timing the step of
``benchmarks.cpu_step_bench`` (the CPU protocol, Adam, EMA; the batch split over ``--devices`` host
devices as the claims runs do); children alternate allocators for ``--rounds`` rounds, so that load
on a shared machine hits each alike. Reported per allocator: the median ms/step, CPU seconds per step
in user and kernel mode, minor page faults per step, and the speed-up over glibc in the same run.
Allocators not installed are skipped (Debian: ``libtcmalloc-minimal4``, ``libjemalloc2``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

# Shared objects to preload, by allocator; the first match of each pattern is used.
ALLOCATORS = {
    "glibc": (),
    "tcmalloc": ("/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4"),
    "jemalloc": ("/usr/lib/*/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2"),
}


def find_preload(name: str) -> str | None:
    """The shared object to preload for allocator ``name``: ``""`` for glibc, ``None`` if not installed."""
    patterns = ALLOCATORS[name]
    if not patterns:
        return ""
    return next((m for pat in patterns for m in sorted(glob.glob(pat))), None)


def child(model: str, iters: int, devices: int) -> dict:
    """Times ``iters`` steps after a warm-up in this process: wall ms, user / system CPU s, minor faults."""
    import resource
    import time

    import jax

    from benchmarks.cpu_step_bench import prepare
    entry = prepare(model, "dp" if devices > 1 else "base", devices)
    jax.block_until_ready(entry["call"]())
    times, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(entry["call"]())
        times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"ms_all": [t * 1e3 for t in times], "user_s_per_step": (r1.ru_utime - r0.ru_utime) / iters,
            "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / iters,
            "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / iters}


def child_env(preload: str, devices: int, extra_flags: tuple = ()) -> dict:
    """This process's environment for a child: ``preload`` (``""``: none) as ``LD_PRELOAD``, ``devices`` host
    devices and ``extra_flags`` in ``XLA_FLAGS``."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}", *extra_flags])
    return env


def run_child(model: str, allocator: str, preload: str, iters: int, devices: int) -> dict:
    env = child_env(preload, devices)
    cmd = [sys.executable, "-m", "benchmarks.allocator_bench", "--child", "--models", model,
           "--iters", str(iters), "--devices", str(devices)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{allocator} child failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(model: str, allocator: str, preload: str, runs: list) -> dict:
    ms = [t for r in runs for t in r["ms_all"]]
    mean = lambda k: statistics.fmean(r[k] for r in runs)  # noqa: E731
    return {"model": model, "allocator": allocator, "preload": preload or None, "ms_per_step": statistics.median(ms),
            "ms_all": [round(t, 1) for t in ms], "user_s_per_step": mean("user_s_per_step"),
            "sys_s_per_step": mean("sys_s_per_step"), "minor_faults_per_step": mean("minor_faults_per_step")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["itrsa", "akorn"], choices=["itrsa", "akorn"])
    p.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    p.add_argument("--iters", type=int, default=3, help="timed steps per child (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="children per allocator, alternating (default 2)")
    p.add_argument("--devices", type=int, default=2, help="host devices the batch is split over (default 2)")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.iters < 1 or a.rounds < 1 or a.devices < 1:
        p.error("--iters, --rounds and --devices must be >= 1")
    if a.child:
        print(json.dumps(child(a.models[0], a.iters, a.devices)), flush=True)
        return {}
    found = {name: find_preload(name) for name in a.allocators}
    skipped = sorted(n for n, path in found.items() if path is None)
    found = {n: path for n, path in found.items() if path is not None}
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", flush=True)
    rows = []
    for model in a.models:
        runs = {n: [] for n in found}
        for r in range(a.rounds):
            order = list(found) if r % 2 == 0 else list(reversed(found))
            for name in order:
                runs[name].append(run_child(model, name, found[name], a.iters, a.devices))
        ref = None
        for name in found:
            row = summarize(model, name, found[name], runs[name])
            ref = ref or (row["ms_per_step"] if name == "glibc" else None)
            row["speedup_vs_glibc"] = ref / row["ms_per_step"] if ref else None
            rows.append(row)
            print(f"{model:6s} {name:9s} {row['ms_per_step']:7.0f} ms/step  user {row['user_s_per_step']:5.2f} s  "
                  f"sys {row['sys_s_per_step']:5.2f} s  {row['minor_faults_per_step']:9.0f} minor faults/step"
                  + (f"  x{row['speedup_vs_glibc']:.2f}" if row["speedup_vs_glibc"] else ""), flush=True)
    from benchmarks.common import environment, write_json
    payload = {"benchmark": "allocator", "devices": a.devices, "iters": a.iters, "rounds": a.rounds,
               "skipped": skipped, "environment": environment(), "results": rows}
    write_json(a.out, payload)
    return payload


if __name__ == "__main__":
    main()
