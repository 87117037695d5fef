"""A hand-written Optax loop with the spectral penalty R_Spec and its power-iteration state (no trainer).

A looped ItrSA (RMSNorm) learns to map random token sets to a target after T steps; the loss adds
lam * R_Spec (paper, sec. 5: R_Spec = sum_W (sigma_max(W)^2 - 1)^2), whose warm-started power
iteration state is carried from step to step like the optimizer's.

    python examples/optax_spectral_penalty.py            # 200 steps
    python examples/optax_spectral_penalty.py --tiny     # 10 steps (the test suite)
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rsa_jax as rsa
from rsa_jax.regularizers import spec_matrices

TINY = "--tiny" in sys.argv
S, D, H, T, B = 8, 16, 2, 4, 16
STEPS, LAM = (10 if TINY else 200), 0.1

k_attn, k_spec, k_w = jax.random.split(jax.random.PRNGKey(0), 3)
params = {"attn": rsa.init_attention(k_attn, D, H), "eta": jnp.asarray(1.0), "gamma": jnp.ones(D)}
target_map = jax.random.normal(k_w, (D, D)) / np.sqrt(D)         # what the loop should learn
spec_state = rsa.spec_init(params["attn"], k_spec)              # R_Spec's power-iteration vectors,
spec_state = rsa.spec_penalty(params["attn"], spec_state, num_iters=30)[1]   # converged once, then 1 per step
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
opt_state = tx.init(params)


def loss_fn(params, spec_state, x0):
    c = x0                                                       # condition on the input itself
    xT = rsa.rollout(lambda p, x, c: rsa.itrsa_step(p, x, c, norm="rmsnorm"), params, x0, c, T)
    task = jnp.mean((xT - rsa.rms_norm(x0 @ target_map, params["gamma"])) ** 2)
    r_spec, spec_state = rsa.spec_penalty(params["attn"], spec_state)
    return task + LAM * r_spec, (task, r_spec, spec_state)


@jax.jit
def train_step(params, opt_state, spec_state, x0):
    (loss, (task, r_spec, spec_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, spec_state, x0)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, spec_state, task, r_spec


def sigmas(attn):
    """Exact top singular values of the penalized W^Q, W^K, W^V, W^O (full matrices), by NumPy's SVD."""
    return [float(np.linalg.norm(np.asarray(w), 2)) for _, w in sorted(spec_matrices(attn).items())]


key = jax.random.PRNGKey(1)
print(f"sigma_max(W^K, W^O, W^Q, W^V) at init: {np.round(sigmas(params['attn']), 3).tolist()}")
for i in range(STEPS):
    key, sub = jax.random.split(key)
    x0 = rsa.pi(jax.random.normal(sub, (B, S, D)))
    params, opt_state, spec_state, task, r_spec = train_step(params, opt_state, spec_state, x0)
    if i % max(STEPS // 5, 1) == 0 or i == STEPS - 1:
        print(f"step {i:4d}: task loss {float(task):.5f}, R_Spec {float(r_spec):.4f}")
print(f"sigma_max after {STEPS} steps: {np.round(sigmas(params['attn']), 3).tolist()} (R_Spec pulls them to 1)")
