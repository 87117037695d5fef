"""Timing harnesses (``make bench``); see ``experiments/__init__.py`` for the OpenBLAS thread setting."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
