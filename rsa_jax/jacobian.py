"""Jacobians of any pure map ``f: x -> y``: dense, matrix-free, spectral norm, eigenvalues.

Nothing here knows which model produced ``f``: close a step over its parameters and
conditioning, ``f = lambda x: step(params, x, c)``, and pass it in. Arrays of any shape are
flattened row-major, so for ``x`` of shape ``(S, D)`` the dense Jacobian is ``(S*D, S*D)``
with token-major blocks, matching the block-diagonal formulas of Lemmas A.2/A.3.
"""

from __future__ import annotations

import operator
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsa_jax.ops import _chunks, chunk_norm

Map = Callable[[jnp.ndarray], jnp.ndarray]


def static_int(value, name: str) -> int:
    """``value`` as a Python int, or a ``TypeError`` naming ``name`` (e.g. a traced ``T`` under jit)."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a static Python int, not a traced array: under jax.jit pass it through "
                        f"static_argnames=({name!r},) or close over it")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None


def check_state_map(f: Map, x: jnp.ndarray, name: str = "f") -> None:
    """Raises a ``ValueError`` naming ``name`` unless ``f`` maps ``x``'s shape and dtype to themselves.

    The Lyapunov and eigenvalue tools need a state update ``x -> x`` (a square Jacobian); a map that
    changes the shape would otherwise fail deep inside a reshape or ``lax.scan``.
    """
    out = jax.eval_shape(f, x)
    if not hasattr(out, "shape") or out.shape != x.shape or out.dtype != x.dtype:
        got = f"{out.dtype}{tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"{name} must map the state to one of the same shape and dtype (an update x -> x), "
                         f"{x.dtype}{tuple(x.shape)} here; {name}(x) is {got}")


def dense_jacobian(f: Map, x: jnp.ndarray, chunk: int | None = None) -> jnp.ndarray:
    """Dense Jacobian ``df/dx`` by forward mode, flattened.

    Args:
      f: map from arrays shaped like ``x`` to arrays of any shape.
      x: evaluation point, any shape with ``n = x.size``.
      chunk: None: all ``n`` tangents at once (``jax.jacfwd``: the map's intermediates ``n`` times
        over, ~5 GB for a Sudoku step at D = 128); an int: one linearization, then the basis
        vectors pushed ``chunk`` at a time (``lax.map``), which bounds that memory.

    Returns:
      ``(f(x).size, n)``.
    """
    g = lambda flat: f(flat.reshape(x.shape)).reshape(-1)
    flat = x.reshape(-1)
    if chunk is None:
        return jax.jacfwd(g)(flat)
    _, jvp = jax.linearize(g, flat)
    n = flat.shape[0]
    return push_columns(lambda i: jvp(jax.nn.one_hot(i, n, dtype=flat.dtype)), jnp.arange(n), chunk).T


def push_columns(fn: Map, xs: jnp.ndarray, chunk: int | None = None) -> jnp.ndarray:
    """``vmap(fn)(xs)``, or ``lax.map`` in batches of ``chunk`` leading rows to bound memory."""
    if chunk is None or chunk >= xs.shape[0]:
        return jax.vmap(fn)(xs)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 or None; got {chunk}")
    return lax.map(fn, xs, batch_size=chunk)


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
    check_state_map(f, x)
    return eigenvalues_by_modulus(np.asarray(dense_jacobian(f, x), dtype=np.float64))


def eigenvalues_by_modulus(j: np.ndarray) -> np.ndarray:
    """Eigenvalues of a dense square matrix on the host (LAPACK ``geev``).

    Args:
      j: ``(n, n)`` NumPy array, e.g. a dense Jacobian in float64.

    Returns:
      ``(n,)`` complex NumPy array, sorted by decreasing modulus (stable for ties).
    """
    ev = np.linalg.eigvals(j)
    return ev[np.argsort(-np.abs(ev), kind="stable")]


class LeadingEigenvalues(NamedTuple):
    """Output of ``leading_eigenvalues``.

    Attributes:
      eigenvalues: ``(k,)`` complex Ritz values, by decreasing modulus.
      residuals: ``(k,)`` bound on ``||J v - theta v||`` of each unit Ritz vector ``v`` (Arnoldi's
        ``|h_{m+1,m}| |e_m^T y|``, plus the norms discarded at breakdowns): small means the value is an
        eigenvalue of ``J`` to that accuracy
        (for a non-normal ``J``, within about ``residual * cond(eigenvector)``).
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray


def arnoldi(jvp: Map, v0: jnp.ndarray, m: int):
    """``m`` steps of Arnoldi with full (twice-applied classical Gram-Schmidt) reorthogonalization.

    Args:
      jvp: ``v -> J v`` on flat ``(n,)`` vectors.
      v0: ``(n,)`` start vector (normalized here).
      m: Krylov dimension, ``m < n``.

    Returns:
      ``(V (m + 1, n), H (m + 1, m), lost (m,))`` with ``J V[:m].T = V.T H + E`` (orthonormal rows of
      ``V``). On breakdown (``h_{j+1,j}`` below ``1000 eps`` of ``||J v_j||``: an invariant subspace,
      up to rounding) the next vector is a fresh random one orthogonalized against ``V``,
      ``h_{j+1,j} = 0``, and the discarded norm goes to ``lost[j]``; ``E`` is zero but for those
      columns, whose norms are ``lost``, so a Ritz residual bound adds ``sum_j lost_j |y_j|``.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps

    def body(j, carry):
        vs, h, lost = carry
        w = jvp(vs[j])
        basis = vs                      # rows > j are still zero: no mask (and no copy of V per step)
        c = jnp.zeros(m + 1, dtype)
        for _ in range(2):
            d = basis @ w
            w, c = w - basis.T @ d, c + d
        beta = jnp.linalg.norm(w)
        broke = beta <= 1000 * eps * jnp.maximum(jnp.linalg.norm(c), beta)

        def fresh(_):   # only on breakdown: a random vector orthogonalized against V
            r = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), j), (n,), dtype)
            for _ in range(2):
                r = r - basis.T @ (basis @ r)
            return r / jnp.linalg.norm(r)

        w = lax.cond(broke, fresh, lambda w: w / jnp.maximum(beta, jnp.finfo(dtype).tiny), w)
        h = h.at[:, j].set(c.at[j + 1].set(jnp.where(broke, 0.0, beta)))
        return vs.at[j + 1].set(w), h, lost.at[j].set(jnp.where(broke, beta, 0.0))

    vs = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    return lax.fori_loop(0, m, body, (vs, jnp.zeros((m + 1, m), dtype), jnp.zeros(m, dtype)))


def leading_eigenvalues(f: Map, x: jnp.ndarray, k: int, *, krylov_dim: int | None = None,
                        key: jax.Array | None = None) -> LeadingEigenvalues:
    """The ``k`` largest-modulus eigenvalues of the (square) Jacobian of ``f`` at ``x``, matrix-free.

    Arnoldi on ``v -> J v`` (``jax.linearize``, one JVP per Krylov step, the dense ``(n, n)``
    Jacobian is never formed), then the eigenvalues of the small Hessenberg matrix (LAPACK, float64,
    on the host). The outermost eigenvalues converge first, so a Krylov dimension of a few times ``k``
    answers "is the spectrum inside the unit disk" at ``n`` far beyond a dense ``eig``; check the
    residuals before trusting a value.

    Args:
      f: a map from ``x``'s shape to itself.
      x: evaluation point, ``n = x.size``.
      k: number of eigenvalues returned.
      krylov_dim: Arnoldi steps ``m`` (``k <= m < n``); default ``min(max(3 k, 20), n - 1)``.
      key: PRNG key of the start vector (default: a fixed NumPy draw).

    Returns:
      ``LeadingEigenvalues(eigenvalues (k,) complex, residuals (k,))``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rsa_jax.jacobian import leading_eigenvalues
      >>> a = jnp.diag(jnp.arange(1.0, 41.0))                  # eigenvalues 1 ... 40
      >>> res = leading_eigenvalues(lambda x: a @ x, jnp.zeros(40), k=2, krylov_dim=30)
      >>> [round(float(e.real), 4) for e in res.eigenvalues]
      [40.0, 39.0]
    """
    check_state_map(f, x)
    n = x.size
    m = min(max(3 * k, 20), n - 1) if krylov_dim is None else krylov_dim
    if not 0 < k <= m < n:
        raise ValueError(f"need 0 < k <= krylov_dim < n = {n}; got k={k}, krylov_dim={m}")
    if key is None:
        v0 = jnp.asarray(np.random.default_rng(0).standard_normal(n), x.dtype)
    else:
        v0 = jax.random.normal(key, (n,), x.dtype)

    @jax.jit
    def run(x, v0):
        _, jvp = jax.linearize(lambda flat: f(flat.reshape(x.shape)).reshape(-1), x.reshape(-1))
        return arnoldi(jvp, v0, m)[1:]

    h, lost = (np.asarray(a, np.float64) for a in run(x, v0))
    theta, y = np.linalg.eig(h[:m])
    res = (np.abs(h[m, m - 1]) * np.abs(y[m - 1]) + lost @ np.abs(y)) / np.linalg.norm(y, axis=0)
    order = np.argsort(-np.abs(theta), kind="stable")[:k]
    return LeadingEigenvalues(theta[order], res[order])


class TopEigenpairs(NamedTuple):
    """Output of ``top_symmetric_eigenpairs``.

    Attributes:
      eigenvalues: ``(k,)`` Ritz values, decreasing (algebraic).
      eigenvectors: ``(n, k)`` orthonormal Ritz vectors, one column per value.
      residuals: ``(k,)`` ``||A q_i - theta_i q_i||``, computed with ``k`` extra products (not the
        Lanczos bound): each ``theta_i`` is within it of an eigenvalue of ``A``.
    """

    eigenvalues: jnp.ndarray
    eigenvectors: jnp.ndarray
    residuals: jnp.ndarray


def top_symmetric_eigenpairs(matvec: Map, v0: jnp.ndarray, k: int, krylov_dim: int) -> TopEigenpairs:
    """The ``k`` algebraically largest eigenpairs of a symmetric operator, matrix-free (Lanczos).

    Lanczos with full reorthogonalization (``arnoldi``, whose Hessenberg matrix is tridiagonal up to
    rounding for a symmetric operator; it is symmetrized here), Rayleigh-Ritz in the Krylov space,
    and the ``k`` largest Ritz pairs with their true residuals. Jittable (``k``, ``krylov_dim``
    static). Extreme eigenvalues converge first; the ``k``-th from the top needs a Krylov dimension
    of a few ``k``: read the residuals.

    Args:
      matvec: ``v -> A v`` on flat ``(n,)`` vectors, ``A`` symmetric.
      v0: ``(n,)`` start vector (generic: a random one finds every eigenvalue; one Krylov space holds
        one vector per eigenspace, so a multiple eigenvalue is found once).
      k: number of eigenpairs, ``k <= krylov_dim``.
      krylov_dim: Lanczos steps ``m < n``.

    Returns:
      ``TopEigenpairs(eigenvalues (k,), eigenvectors (n, k), residuals (k,))``.
    """
    if not 0 < k <= krylov_dim < v0.shape[0]:
        raise ValueError(f"need 0 < k <= krylov_dim < n = {v0.shape[0]}; got k={k}, krylov_dim={krylov_dim}")
    vs, h, _ = arnoldi(matvec, v0, krylov_dim)
    hm = h[:krylov_dim]
    theta, y = jnp.linalg.eigh(0.5 * (hm + hm.T))            # ascending
    theta, y = theta[::-1][:k], y[:, ::-1][:, :k]
    q = vs[:krylov_dim].T @ y                                 # (n, k)
    aq = jax.vmap(matvec, in_axes=1, out_axes=1)(q)
    return TopEigenpairs(theta, q, jnp.linalg.norm(aq - q * theta, axis=0))


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
