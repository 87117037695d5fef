"""Jacobians of any pure map ``f: x -> y``: dense, matrix-free, spectral norm, eigenvalues.

Nothing here knows which model produced ``f``: close a step over its parameters and
conditioning, ``f = lambda x: step(params, x, c)``, and pass it in. Arrays of any shape are
flattened row-major, so for ``x`` of shape ``(S, D)`` the dense Jacobian is ``(S*D, S*D)``
with token-major blocks, matching the block-diagonal formulas of Lemmas A.2/A.3.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsa_jax.ops import _chunks, chunk_norm

Map = Callable[[jnp.ndarray], jnp.ndarray]


def dense_jacobian(f: Map, x: jnp.ndarray) -> jnp.ndarray:
    """Dense Jacobian ``df/dx`` by forward mode, flattened.

    Args:
      f: map from arrays shaped like ``x`` to arrays of any shape.
      x: evaluation point, any shape with ``n = x.size``.

    Returns:
      ``(f(x).size, n)``.
    """
    g = lambda flat: f(flat.reshape(x.shape)).reshape(-1)
    return jax.jacfwd(g)(x.reshape(-1))


def linear_operators(f: Map, x: jnp.ndarray):
    """Linearizes ``f`` once at ``x`` and returns its matrix-free Jacobian operators.

    Args:
      f: the map.
      x: evaluation point.

    Returns:
      ``(y, jvp, vjp)``: ``y = f(x)``; ``jvp(v) = J v`` for ``v`` shaped like ``x``;
      ``vjp(u) = J^T u`` for ``u`` shaped like ``y``. Both reuse the single linearization.
    """
    y, jvp = jax.linearize(f, x)
    transpose = jax.linear_transpose(jvp, x)
    return y, jvp, lambda u: transpose(u)[0]


class PowerIterationState(NamedTuple):
    """Explicit state of power iteration on ``J^T J``, reusable across calls (warm starts).

    Attributes:
      v: current unit right-singular-vector estimate, shaped like the map's input.
      sigma: current estimate of ``||J||_2`` (scalar).
      iterations: iterations run in the last call (int32 scalar).
    """

    v: jnp.ndarray
    sigma: jnp.ndarray
    iterations: jnp.ndarray


def init_power_state(key: jax.Array, like: jnp.ndarray) -> PowerIterationState:
    """A random unit starting vector shaped like ``like``."""
    v = jax.random.normal(key, like.shape, like.dtype)
    return PowerIterationState(v / jnp.linalg.norm(v), jnp.zeros((), like.dtype), jnp.zeros((), jnp.int32))


def power_iteration(jvp: Map, vjp: Map, state: PowerIterationState, *, max_iters: int = 200,
                    tol: float = 1e-6) -> PowerIterationState:
    """Top singular value of a linear operator by power iteration on ``J^T J``.

    Stops after ``max_iters`` or once the relative change of sigma is below ``tol``.

    Args:
      jvp: ``v -> J v``.
      vjp: ``u -> J^T u``.
      state: starting state (``init_power_state`` or the state of an earlier call).
      max_iters: iteration cap.
      tol: relative tolerance on sigma; 0 runs exactly ``max_iters`` iterations.

    Returns:
      The new state; ``state.sigma`` estimates ``||J||_2`` from below.
    """
    def step(carry):
        v, sigma_old, _, it = carry
        w = vjp(jvp(v))
        sigma2 = jnp.vdot(v, w)  # = ||J v||^2 for the unit v
        v_new = w / jnp.linalg.norm(w)
        return v_new, jnp.sqrt(jnp.maximum(sigma2, 0.0)), sigma_old, it + 1

    def cond(carry):
        _, sigma, sigma_old, it = carry
        # tol <= 0 must run exactly max_iters: once sigma stops changing in floating point the
        # change test alone would stop early.
        unconverged = (tol <= 0) | (jnp.abs(sigma - sigma_old) > tol * jnp.abs(sigma))
        return (it < max_iters) & ((it < 2) | unconverged)

    v, sigma, _, it = lax.while_loop(cond, step, (state.v, state.sigma, jnp.full_like(state.sigma, jnp.inf),
                                                  jnp.zeros((), jnp.int32)))
    return PowerIterationState(v, jnp.linalg.norm(jvp(v)), it)


def spectral_norm(f: Map, x: jnp.ndarray, state: PowerIterationState | None = None, *,
                  key: jax.Array | None = None, max_iters: int = 200, tol: float = 1e-6):
    """``||df/dx||_2`` at ``x`` by matrix-free power iteration.

    Args:
      f: the map.
      x: evaluation point.
      state: warm-start state; if None one is drawn from ``key`` (default ``PRNGKey(0)``).
      key: PRNG key for a fresh state.
      max_iters: iteration cap.
      tol: relative tolerance on sigma.

    Returns:
      ``(sigma, state)``.

    Examples:
      At ``x = 0`` the Jacobian of ``x -> tanh(A x)`` is ``A``; pass ``state`` back to warm-start:

      >>> import jax.numpy as jnp
      >>> from rsa_jax.jacobian import spectral_norm
      >>> a = jnp.array([[3.0, 1.0], [0.0, 2.0]], jnp.float32)
      >>> f = lambda x: jnp.tanh(a @ x)
      >>> sigma, state = spectral_norm(f, jnp.zeros(2, jnp.float32))
      >>> round(float(sigma), 3)                               # = numpy.linalg.norm(A, 2)
      3.257
      >>> round(float(spectral_norm(f, jnp.zeros(2, jnp.float32), state)[0]), 3)
      3.257
    """
    if state is None:
        state = init_power_state(jax.random.PRNGKey(0) if key is None else key, x)
    _, jvp, vjp = linear_operators(f, x)
    state = power_iteration(jvp, vjp, state, max_iters=max_iters, tol=tol)
    return state.sigma, state


def jacobian_eigenvalues(f: Map, x: jnp.ndarray) -> np.ndarray:
    """Eigenvalues of the dense (square) Jacobian, computed on the host with LAPACK.

    Args:
      f: a map from ``x``'s shape to itself.
      x: evaluation point with ``n = x.size``.

    Returns:
      ``(n,)`` complex NumPy array, sorted by decreasing modulus.
    """
    j = np.asarray(dense_jacobian(f, x), dtype=np.float64)
    ev = np.linalg.eigvals(j)
    return ev[np.argsort(-np.abs(ev), kind="stable")]


# --- Analytic Jacobians of the normalization layers (Lemmas A.2, A.3) ----------------------

def _blockdiag(blocks: jnp.ndarray) -> jnp.ndarray:
    """``(m, k, k)`` blocks -> ``(m*k, m*k)`` block-diagonal matrix."""
    m, k, _ = blocks.shape
    eye = jnp.eye(m, dtype=blocks.dtype)
    return jnp.einsum("ij,iab->iajb", eye, blocks).reshape(m * k, m * k)


def pi_jacobian(y: jnp.ndarray, n: int | None = None) -> jnp.ndarray:
    """Lemma A.2: ``dPi/dY = blockdiag_i((I - y_i y_i^T / ||y_i||^2) / ||y_i||)``.

    Args:
      y: ``(S, D)``.
      n: oscillator size (blocks per N-chunk), or None for whole tokens.

    Returns:
      ``(S*D, S*D)``.
    """
    yc = _chunks(y, n).reshape(-1, _chunks(y, n).shape[-1])  # (S * D/n, n)
    norms = chunk_norm(y, n).reshape(-1, 1, 1)
    u = yc / norms[:, :, 0]
    eye = jnp.eye(yc.shape[-1], dtype=y.dtype)
    return _blockdiag((eye - u[:, :, None] * u[:, None, :]) / norms)


def rmsnorm_jacobian(y: jnp.ndarray, gamma: jnp.ndarray, n: int | None = None) -> jnp.ndarray:
    """Lemma A.3: ``dRMSNorm/dY = blockdiag_i(diag(gamma)(I - y_i y_i^T/||y_i||^2)/||y_i||)``.

    Args:
      y: ``(S, D)``.
      gamma: ``(D,)``.
      n: oscillator size, or None for whole tokens.

    Returns:
      ``(S*D, S*D)``.
    """
    return jnp.tile(gamma, y.shape[0])[:, None] * pi_jacobian(y, n)
