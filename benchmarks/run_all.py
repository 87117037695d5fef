"""Runs the training and inference benchmarks in fresh processes and writes ``<out>/*.json``.

    python -m benchmarks.run_all --out outputs/bench                       # CPU-sized presets
    python -m benchmarks.run_all --out outputs/bench --paper \\
        --precisions float32 tensorfloat32 bfloat16                         # on a GPU

One process per benchmark and precision, run one after the other: ``train_<precision>.json``
(variants base, fused attention, remat, timed round-robin in the same process so that load
drift on a shared machine hits all alike) and ``inference_<precision>.json`` (base, fused).
``summary.json`` collects the headline numbers, the speedups over the base variant, and the
speedup of each precision over float32 (the latter across processes, so noisier on a shared CPU,
where only ratios mean anything). This process never initializes jax, so it holds no
accelerator memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRAIN_VARIANTS = ["base", "fused", "remat"]
INFERENCE_VARIANTS = ["base", "fused"]


def run(module: str, args: list, out: Path, log: list) -> dict | None:
    cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    entry = {"cmd": cmd, "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode:
        entry["stderr_tail"] = proc.stderr[-3000:]
        print(proc.stderr[-3000:], file=sys.stderr)
    log.append(entry)
    return json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else None


def headline(kind: str, r: dict) -> dict:
    if kind == "train":
        return {k: r.get(k) for k in ("ms_per_step", "compile_s", "boards_per_s", "achieved_flops_per_s",
                                      "fraction_of_matmul_peak", "useful_fraction_of_matmul_peak",
                                      "speedup_vs_base")} | {
            "temp_bytes": (r.get("memory_analysis") or {}).get("temp_size_in_bytes")}
    return {"rollout_boards_per_s": r["rollout"]["boards_per_s"],
            "rollout_fraction_of_matmul_peak": r["rollout"].get("fraction_of_matmul_peak"),
            "voting_boards_per_s": r["voting"]["boards_per_s"],
            "voting_candidate_runs_per_s": r["voting"]["candidate_runs_per_s"],
            "rollout_speedup_vs_base": r.get("rollout_speedup_vs_base"),
            "voting_speedup_vs_base": r.get("voting_speedup_vs_base")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/bench")
    p.add_argument("--paper", action="store_true", help="paper sizes (use on a GPU)")
    p.add_argument("--precisions", nargs="+", default=["float32"],
                   choices=["float32", "tensorfloat32", "bfloat16"])
    p.add_argument("--only", nargs="+", default=["train", "inference"], choices=["train", "inference"])
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further flags passed to every benchmark (e.g. --extra --iters 10)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = (["--paper"] if a.paper else []) + list(a.extra)
    log, rows = [], []
    plan = []
    for prec in a.precisions:
        if "train" in a.only:
            plan.append(("train", "benchmarks.train_bench", f"train_{prec}",
                         ["--variants", *TRAIN_VARIANTS, "--precision", prec]))
        if "inference" in a.only:
            plan.append(("inference", "benchmarks.inference_bench", f"inference_{prec}",
                         ["--variants", *INFERENCE_VARIANTS, "--precision", prec]))
    for kind, module, name, args in plan:
        payload = run(module, args + common, out / f"{name}.json", log)
        if payload is None:
            continue
        for r in payload["results"]:
            rows.append({"benchmark": kind, "precision": payload["precision"], "variant": r["variant"],
                         "model": r["model"], "matmul_peak_flops_per_s": (payload.get("matmul_peak") or {}).get(
                             "flops_per_s"), **headline(kind, r)})
    base = {(r["benchmark"], r["model"], r["variant"]): r for r in rows if r["precision"] == "float32"}
    speed_keys = {"train": ("ms_per_step", -1), "inference": ("rollout_boards_per_s", 1)}
    for r in rows:
        b = base.get((r["benchmark"], r["model"], r["variant"]))
        key, sign = speed_keys[r["benchmark"]]
        if b and b is not r and b.get(key) and r.get(key):
            r["speedup_vs_float32"] = (r[key] / b[key]) ** sign
    summary = {"preset": "paper" if a.paper else "small", "rows": rows, "runs": log}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    failed = [e for e in log if e["rc"]]
    if failed:
        sys.exit(f"{len(failed)} benchmark run(s) failed; see {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
