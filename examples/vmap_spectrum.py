"""vmap of the Lyapunov spectrum over initial states and over input scales (one compiled program each).

An untrained ItrSA step (RMSNorm); the exponents ln sigma_i(J^(T)) / T (paper, appendix B.3) of many
starts at once, and the max / mean LE against the scale s of the start s * X0 (paper, Fig. 5).

    python examples/vmap_spectrum.py            # S = 8, D = 16, 8 starts, 6 scales
    python examples/vmap_spectrum.py --tiny     # smaller (the test suite)
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np

import rsa_jax as rsa
from rsa_jax.lyapunov import lyapunov_spectrum, max_lyapunov, mean_lyapunov, null_directions

TINY = "--tiny" in sys.argv
S, D, H, T, STARTS = (4, 8, 2, 4, 3) if TINY else (8, 16, 2, 16, 8)
SCALES = np.logspace(-1, 1, 3 if TINY else 6)        # decades: look at them on a log axis

k_attn, k_c, k_x = jax.random.split(jax.random.PRNGKey(0), 3)
params = {"attn": rsa.init_attention(k_attn, D, H), "eta": 1.0, "gamma": jnp.ones(D)}
c = jax.random.normal(k_c, (S, D))
f = lambda x: rsa.itrsa_step(params, x, c, norm="rmsnorm")
nulls = null_directions((S, D), None, "rmsnorm")      # one radial direction per token


@jax.jit
def spectra(x0s):
    """Full spectra ``(B, S*D)`` of a batch of starts; the diagnostics come back batched too."""
    res = jax.vmap(lambda x: lyapunov_spectrum(f, x, T))(x0s)
    return res.exponents, res.converged


x0s = rsa.pi(jax.random.normal(k_x, (STARTS, S, D)))
ex, ok = spectra(x0s)
loop = jnp.stack([lyapunov_spectrum(f, x, T).exponents for x in x0s[:2]])   # the same, one at a time
print(f"{STARTS} starts: spectra {ex.shape}, all converged {bool(jnp.all(ok))}, vmap vs loop max diff "
      f"{float(jnp.max(jnp.abs(ex[:2] - loop))):.1e}")
print("max LE per start:", " ".join(f"{v:+.4f}" for v in np.asarray(max_lyapunov(ex))))


@jax.jit
def by_scale(scales):
    """Max and mean LE (over the S*D - S non-null exponents) for the start ``s * X0``, vmapped over s."""
    ex = jax.vmap(lambda s: lyapunov_spectrum(f, s * x0s[0], T).exponents)(scales)
    return max_lyapunov(ex), mean_lyapunov(ex, nulls)


mx, mn = by_scale(jnp.asarray(SCALES))
for s, a, b in zip(SCALES, np.asarray(mx), np.asarray(mn)):
    print(f"scale {s:7.3f}: max LE {a:+.4f}, mean LE {b:+.4f}")
