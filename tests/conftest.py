"""Shared test setup: JAX in float64 for the whole session.

Set at import time (before any test module builds arrays) so that reference comparisons can use
tolerances of 1e-8..1e-12. Tests that care about float32 behaviour must ask for it explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
