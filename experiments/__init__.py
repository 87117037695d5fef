"""One runnable module per figure or table: ``python -m experiments.NAME --help``.

Importing the package (``python -m experiments.NAME`` does, before the module) limits OpenBLAS to
one thread unless ``OPENBLAS_NUM_THREADS`` is set: its worker threads (behind NumPy and the CPU LAPACK
kernels of ``jnp.linalg.qr`` / ``eigh``) fight XLA's own thread pool, and on a 2-core machine a
648 x 648 QR took 3-5 s instead of 0.04 s (a full Lyapunov spectrum: 160 s instead of 6 s).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
