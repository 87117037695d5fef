"""Shared test setup: JAX in float64 with strict dtype promotion for the whole session, cheap XLA compilation.

Set at import time (before any test module builds arrays) so that reference comparisons can use
tolerances of 1e-8..1e-12. Tests that care about float32 behaviour must ask for it explicitly.

The test programs are tiny, so compilation dominates the suite's time: unless ``XLA_FLAGS`` already
says otherwise, XLA's CPU backend compiles without its expensive LLVM passes (the arithmetic is the
same; about 20% less CPU time for the suite). OpenBLAS gets one thread (its threads fight XLA's
pool; see ``experiments/__init__.py``). Subprocesses started by tests inherit both settings.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Strict dtype promotion (as equinox's tests): mixing float32 and float64 arrays, or ints and floats,
# raises instead of silently promoting, so a float32 intermediate in a float64 computation (or the
# reverse) is found. Python scalars stay weakly typed. Code that promotes on purpose casts explicitly.
jax.config.update("jax_numpy_dtype_promotion", "strict")
