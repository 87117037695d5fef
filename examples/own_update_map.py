"""Your own update map: its Jacobian, spectral norm, Lyapunov spectrum and null directions.

Any pure function ``x -> x`` works with the analysis tools; here a gated residual update with a
token-wise normalization (Pi: every token on the unit sphere, so each token has one null direction):

    X <- Pi(X + eta * sigmoid(X W_g) * tanh(X W))

    python examples/own_update_map.py            # S = 6 tokens, D = 8
    python examples/own_update_map.py --tiny     # smaller (the test suite)
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # see README, "Precision"

import jax
import jax.numpy as jnp
import numpy as np

import rsa_jax as rsa
from rsa_jax.lyapunov import lyapunov_exact, lyapunov_spectrum, max_lyapunov, mean_lyapunov, null_directions

jax.config.update("jax_enable_x64", True)            # float64: to compare with dense references
S, D, T = (3, 4, 8) if "--tiny" in sys.argv else (6, 8, 16)

k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
params = {"w": jax.random.normal(k1, (D, D)) / np.sqrt(D), "wg": jax.random.normal(k2, (D, D)) / np.sqrt(D),
          "eta": 0.8}


def step(params, x):
    """One update of the (S, D) state: gated residual, then token-wise Pi."""
    gate = jax.nn.sigmoid(x @ params["wg"])
    return rsa.pi(x + params["eta"] * gate * jnp.tanh(x @ params["w"]))


f = lambda x: step(params, x)                        # the closure every tool takes
x0 = rsa.pi(jax.random.normal(k3, (S, D)))
n = x0.size

# 1. Jacobian of one step: dense, and its spectral norm by matrix-free power iteration (JVP/VJP)
J = rsa.dense_jacobian(f, x0)                        # (S*D, S*D), token-major
sigma, _ = rsa.spectral_norm(f, x0)
svd = np.linalg.svd(np.asarray(J), compute_uv=False)
print(f"one step: J is {J.shape}, ||J||_2 = {float(sigma):.6f} (power iteration) vs {svd[0]:.6f} (SVD)")

# 2. Null directions: Pi kills the radial direction of every token -> S zero singular values
nulls = null_directions(x0.shape, None, "pi")
print(f"null directions: {nulls} predicted, {int(np.sum(svd < 1e-8 * svd[0]))} singular values of J below 1e-8")

# 3. Lyapunov spectrum of the T-fold composition: ln sigma_i(J^(T)) / T (paper, appendix B.3)
res = lyapunov_spectrum(f, x0, T)                    # full spectrum (k = n)
exact = lyapunov_exact(f, x0, T)                     # the same definition from the dense Jacobian of f^T
print(f"T = {T}: max LE {float(max_lyapunov(res.exponents)):+.6f}, mean LE over {n - nulls} non-null "
      f"{float(mean_lyapunov(res.exponents, nulls)):+.6f}; max |spectrum - dense| = "
      f"{float(jnp.max(jnp.abs(res.exponents - exact))):.1e}")
top = lyapunov_spectrum(f, x0, T, k=3)               # leading 3 only: subspace iteration to tol
print(f"leading 3: {np.round(np.asarray(top.exponents), 6).tolist()} after {int(top.sweeps)} sweeps, residual "
      f"{float(top.residual):.1e}, converged {bool(top.converged)}")
classic = lyapunov_spectrum(f, x0, T, method="qr")   # the classical Benettin estimator, for comparison
print(f"classical QR estimator (not the definition at finite T): max {float(classic.exponents[0]):+.6f}")
