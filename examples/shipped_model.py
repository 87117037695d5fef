"""A shipped model: solve puzzles, its Lyapunov exponents, pseudo-energy and contribution index along inference.

    python examples/shipped_model.py             # sudoku-itrsa-cpu, 3 puzzles, 64 steps, leading 8 exponents
    python examples/shipped_model.py --tiny      # fewer (the test suite)
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np

import rsa_jax
from rsa_jax import pretrained
from rsa_jax.data.sudoku_generator import generate
from rsa_jax.evaluate import monitor_rollout
from rsa_jax.lyapunov import lyapunov_spectrum, max_lyapunov, null_directions

TINY = "--tiny" in sys.argv
NAME = "sudoku-itrsa-cpu"
PUZZLES, STEPS, K, T = (2, 16, 2, 4) if TINY else (3, 64, 8, 16)
TOP = 0.002 if TINY else 0.02          # contribution index: share on the top 2% eigenvectors (paper) of J + J^T

# 1. Solve: puzzles from the built-in generator (unique solutions), T_eval from the model's manifest
puzzles, solutions = generate(PUZZLES, 45, seed=0)
res = rsa_jax.solve(["".join(map(str, p)) for p in puzzles], model=NAME)
right = np.all(res.solutions == solutions, axis=1)
print(f"{NAME}: T_eval = {res.steps} (best on SATNet test, from its manifest); valid {res.valid.tolist()}, "
      f"equal to the generator's solution {right.tolist()}")

# 2. Lyapunov exponents of its update map at the first puzzle's initial state: ln sigma_i(J^(T)) / T
model, _ = pretrained.load(NAME)
step, params = model.pure_step()
digits = jnp.asarray(puzzles[:1], jnp.int32)
c, x0 = model.condition(digits, digits != 0, jax.random.PRNGKey(0))
f = lambda x: step(params, x, c[0])                 # (81, D) -> (81, D)
le = lyapunov_spectrum(f, x0[0], T, k=K, max_sweeps=20)
cfg = model.config
nulls = null_directions(x0[0].shape, cfg.state_chunk, cfg.norm)
print(f"leading {K} exponents at T = {T}: {' '.join(f'{v:+.4f}' for v in np.asarray(le.exponents))}; max LE "
      f"{float(max_lyapunov(le.exponents)):+.4f} (residual {float(le.residual):.1e}; {nulls} of the "
      f"{x0[0].size} directions are null: {cfg.norm} per token)")

# 3. Pseudo-energy -Tr(X^T (C + MSA(X))) and the contribution index along inference (sec. 6.3)
mon = monitor_rollout(model, puzzles, puzzles != 0, STEPS, jax.random.PRNGKey(0), solutions=solutions,
                      contribution_every=STEPS // 2, top_frac=TOP, krylov_dim=64 if TINY else 0)  # Lanczos
ci = {int(t): float(v) for t, v in zip(mon["contribution_t"], mon["contribution"])}
for t in sorted(ci):
    print(f"t = {t:3d}: pseudo-energy {float(mon['energy'][t]):+.2f}, board acc {float(mon['board_acc'][t]):.2f}, "
          f"contribution index (top {TOP:.1%}) {ci[t]:.3f}")
