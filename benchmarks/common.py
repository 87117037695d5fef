"""Shared helpers of the benchmark harnesses: timing, FLOP counts, matmul peak, memory, JSON.

Nothing here is a test: the harnesses print and write JSON, they never assert on times.

Precision: ``--precision float32 | tensorfloat32 | bfloat16`` sets
``jax.default_matmul_precision`` for everything traced inside :func:`precision_scope`
(the benchmarked program *and* the peak matmul), so the achieved-FLOP/s fraction compares
like with like. Parameters and states stay float32; ``bfloat16`` means bf16 matmul passes
(on CPU all three usually run the same float32 kernels).

FLOPs: ``compiled.cost_analysis()`` counts the body of a ``while`` loop (``lax.scan``) once,
whatever its trip count, so for a T-step rollout it undercounts by about T. We report that raw
number (``flops_xla``) and the count of the same program with every ``lax.scan`` unrolled
(``flops``, from ``lower(...).cost_analysis()`` under :func:`unrolled_scans`, not compiled),
which is the one used for achieved FLOP/s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rsa_jax.configs import apply_preset

PRECISIONS = {"float32": "float32", "tensorfloat32": "tensorfloat32", "bfloat16": "bfloat16"}


def add_run_args(p) -> None:
    """Adds the flags every model harness shares: ``--precision``, ``--fused``, ``--peak-n``, ``--out``."""
    p.add_argument("--precision", default="float32", choices=list(PRECISIONS))
    p.add_argument("--fused", action="store_true", help="fused attention (jax.nn.dot_product_attention)")
    p.add_argument("--peak-n", type=int, default=None,
                   help="matmul size for the peak (default 4096 on accelerators, 1024 on CPU; 0: skip)")
    p.add_argument("--out", default=None, help="JSON output path")


def fill_defaults(a, paper, small):
    """Fills the flags left ``None`` from the ``--paper`` or small preset (``rsa_jax.configs``, via
    ``rsa_jax.configs.apply_preset``) and the default ``--peak-n`` (1024 on CPU, else 4096)."""
    apply_preset(a, paper if a.paper else small)
    if a.peak_n is None:
        a.peak_n = 1024 if jax.default_backend() == "cpu" else 4096
    return a


def precision_scope(precision: str):
    """Context manager setting the default matmul precision (see module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return jax.default_matmul_precision(PRECISIONS[precision])


def block(tree):
    """``block_until_ready`` on every array leaf; returns the tree."""
    return jax.block_until_ready(tree)


def time_calls(fn: Callable[[], Any], *, iters: int = 20, warmup: int = 2, min_time_s: float = 0.0) -> dict:
    """Wall-clock statistics of ``fn()`` (already compiled), each call blocked until ready.

    Args:
      fn: zero-argument callable returning arrays.
      iters: timed calls (at least).
      warmup: untimed calls first.
      min_time_s: keep calling until this much time is spent (then ``iters`` is a minimum).

    Returns:
      ``{"median_ms", "min_ms", "mean_ms", "stdev_ms", "iters"}``.
    """
    for _ in range(warmup):
        block(fn())
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    ms = [1e3 * t for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "mean_ms": statistics.fmean(ms),
            "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0, "iters": len(ms)}


def cost_flops(analysis) -> float | None:
    """The ``flops`` entry of a ``cost_analysis()`` result (a dict, or a list of dicts in older jax)."""
    if analysis is None:
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    f = analysis.get("flops")
    return float(f) if f is not None and f >= 0 else None


@contextlib.contextmanager
def unrolled_scans():
    """Inside this context every ``jax.lax.scan`` traced is fully unrolled (for FLOP counting only)."""
    original = jax.lax.scan

    @functools.wraps(original)
    def scan(*args, **kwargs):
        kwargs["unroll"] = True
        return original(*args, **kwargs)

    jax.lax.scan = scan
    try:
        yield
    finally:
        jax.lax.scan = original


def compile_stats(fun: Callable, *args, jit_kwargs: dict | None = None, **kwargs) -> tuple[Any, dict]:
    """Jits, lowers and compiles ``fun(*args, **kwargs)``; returns ``(compiled, stats)``.

    ``stats``: ``compile_s`` (trace + lower + compile wall time), ``flops_xla`` (compiled cost
    analysis, loop bodies once), ``flops`` (the same program with scans unrolled, lowered but not
    compiled; see the module docstring). ``jit_kwargs`` go to ``jax.jit`` (e.g. shardings).
    """
    jit_kwargs = jit_kwargs or {}
    t0 = time.perf_counter()
    compiled = jax.jit(fun, **jit_kwargs).lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - t0
    flops_xla = cost_flops(compiled.cost_analysis())
    try:
        with unrolled_scans():  # a fresh function object, so jit's trace cache cannot answer
            fresh = functools.partial(fun)
            flops = cost_flops(jax.jit(fresh, **jit_kwargs).trace(*args, **kwargs).lower().cost_analysis())
    except Exception:  # noqa: BLE001  (a backend without lowered cost analysis)
        flops = None
    return compiled, {"compile_s": compile_s, "flops_xla": flops_xla, "flops": flops}


def matmul_peak(n: int = 4096, *, precision: str = "float32", dtype=jnp.float32, iters: int = 10,
                chain: int = 8) -> dict:
    """Measured matmul throughput of this device: a jitted chain of ``chain`` ``n x n`` matmuls.

    The chain keeps the device busy for several matmuls per dispatch, so dispatch overhead does
    not lower the number. FLOPs per call are ``2 n^3 chain``.

    Returns:
      ``{"n", "chain", "precision", "flops_per_s", "median_ms"}``.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype) / jnp.sqrt(n).astype(dtype)
    b = jax.random.normal(key_b, (n, n), dtype)

    with precision_scope(precision):
        @jax.jit
        def f(a, b):
            def body(x, _):
                return x @ a, None
            return jax.lax.scan(body, b, None, length=chain, unroll=True)[0]

        compiled = f.lower(a, b).compile()
    t = time_calls(lambda: compiled(a, b), iters=iters, warmup=1)
    flops = 2.0 * n ** 3 * chain
    return {"n": n, "chain": chain, "precision": precision, "median_ms": t["median_ms"],
            "flops_per_s": flops / (t["median_ms"] / 1e3)}


def peak_memory_bytes() -> int | None:
    """``peak_bytes_in_use`` of the first local device, or None where the backend has no stats (CPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


def environment() -> dict:
    """Device, backend and version facts recorded with every benchmark."""
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    """Prints ``payload`` as JSON and writes it to ``path`` (parents created) if given."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=float)
    print(text)
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
