"""One runnable module per figure or table: ``python -m experiments.NAME --help``.

Importing the package (``python -m experiments.NAME`` does, before the module) limits OpenBLAS to
one thread unless ``OPENBLAS_NUM_THREADS`` is set: its worker threads (behind NumPy and the CPU LAPACK
kernels of ``jnp.linalg.qr`` / ``eigh``) fight XLA's own thread pool, and on a 2-core machine a
648 x 648 QR took 3-5 s instead of 0.04 s (a full Lyapunov spectrum: 160 s instead of 6 s).
``blas_threads`` lifts the limit around work made of a few large LAPACK calls (the paper's mean LE:
QRs of 10,368 x 10,287 matrices), where the threads pay.
"""

import contextlib
import ctypes
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _openblas():
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS behind SciPy's LAPACK (which jaxlib's CPU
    kernels call), or None where it cannot be found (not Linux, another BLAS)."""
    import scipy.linalg.cython_lapack  # noqa: F401  (loads the library)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            if hasattr(lib, f"{prefix}_set_num_threads") and hasattr(lib, f"{prefix}_get_num_threads"):
                return getattr(lib, f"{prefix}_set_num_threads"), getattr(lib, f"{prefix}_get_num_threads")
    return None


@contextlib.contextmanager
def blas_threads(n: int | None = None):
    """Runs the block with ``n`` OpenBLAS threads (default: every CPU), then restores the count.

    A no-op where the library is not found. Yields the count in force (None where unknown)."""
    fns = _openblas()
    if fns is None:
        yield None
        return
    set_threads, get_threads = fns
    before = get_threads()
    set_threads(int(n or os.cpu_count() or 1))
    try:
        yield get_threads()
    finally:
        set_threads(before)
