"""Lyapunov exponents of the T-fold composition of a pure map ``f: x -> x`` (appendix B.3).

Definition (appendix B.3, eqs. 89-90): with ``J^(T) = d f^T(x0) / d x0`` and ``alpha_i`` the
eigenvalues of ``J^(T)T J^(T)``,

    lambda_i = (1 / 2T) ln alpha_i = (1 / T) ln sigma_i(J^(T)),

i.e. finite-time exponents at horizon T (the paper uses T = 16 and one sample). ``x`` may have any
shape; it is flattened row-major to ``n = x.size`` coordinates. Estimators:

* ``lyapunov_spectrum`` (default ``method="svd"``): **the B.3 definition**, matrix-free: ``k``
  tangent columns pushed by ``jax.linearize`` (QR after every step, so nothing over- or underflows),
  Rayleigh-Ritz on ``J^(T) Q0 = Q_T B`` and, for ``k < n``, subspace iteration on
  ``J^(T)T J^(T)`` (backward vjp passes) until the exponents change by less than ``tol``
  (``LyapunovResult.residual``, ``converged``; a ``LyapunovWarning`` if ``max_sweeps`` stops it).
  A last pass from the converged right singular vectors sums ``ln |R_ii| = ln sigma_i`` in log space.
* ``lyapunov_spectrum(method="qr")`` (alias ``"benettin"``, or ``sweeps=0``): the classical Benettin
  estimator, the time average of ``ln |R_ii|`` from ``Q0`` without refinement. Same limit as
  ``T -> inf``, but at finite T the growth rates of nested volumes of ``J^(T) Q0``, not singular
  values: on a non-normal map even the sign of the largest can differ. Only the sum of the full
  spectrum, ``ln|det J^(T)| / T``, agrees exactly.
* ``lyapunov_exact``: the definition from the dense Jacobian of the composition (small systems
  only); resolves exponents within about ``ln(1 / null_rtol) / T`` of the largest.
* ``nonnull_exponent_sum``: the sum of the non-null exponents without any single one, exactly
  (Benettin started on ``(ker J_1)^perp``): the paper's mean LE at half the cost of the full spectrum.

Null directions. A normalization layer (Pi, RMSNorm; whole-token or per N-chunk) kills the
radial direction of every normalized chunk, so ``J`` has ``S * D / N`` zero singular values
(``S`` for whole-token normalization) and ``ln alpha = -inf``. Both estimators call a singular
value null when it is below ``null_rtol`` times the largest (per QR step for the QR passes;
default ``default_null_rtol``) and report its exponent as exactly ``NULL_FLOOR``; any other
per-step ``ln |R_ii|`` is also clamped at ``NULL_FLOOR``. ``mean_lyapunov`` drops the null
exponents, counted by ``null_directions``: the "mean LE" of a whole-token-normalized model averages
over ``M = S (D - 1)`` exponents, not ``S D`` (``M = S D (N - 1) / N`` for N-chunk normalization).
The largest exponent (``max_lyapunov``) is never a null one, so it needs no count. These three
summaries live in :mod:`rsa_jax.exponents` and are re-exported here.

Everything is pure and jit/vmap-able (``T``, ``k``, ``reorth_every``, ``sweeps``, ``max_sweeps``
static): ``jax.vmap(lambda x0: lyapunov_spectrum(f, x0, T, k).exponents)(batch)``.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsa_jax.exponents import max_lyapunov, mean_lyapunov, null_directions  # noqa: F401 (re-exported)
from rsa_jax.jacobian import check_state_map, dense_jacobian, push_columns, static_int

Map = Callable[[jnp.ndarray], jnp.ndarray]

#: Exponent reported for a null direction, and lower clamp of every per-step ``ln |R_ii|``.
NULL_FLOOR = -30.0

#: ``method`` names of ``lyapunov_spectrum``: the B.3 definition, and the classical estimator.
METHODS = ("svd", "qr", "benettin")


class LyapunovWarning(RuntimeWarning):
    """The subspace iteration of ``lyapunov_spectrum`` stopped at ``max_sweeps`` before ``tol``."""


class LyapunovResult(NamedTuple):
    """Output of ``lyapunov_spectrum``.

    Attributes:
      exponents: ``(k,)`` exponents sorted descending (paper normalization ``ln sigma / T``).
      history: ``(T // reorth_every [+1], k)`` running estimates of the last (measuring) pass (sum of
        logs so far divided by the steps so far), one row after each re-orthonormalization, each row
        sorted descending; None unless requested. Only the last row is the definition's value.
      sweeps: refinement sweeps run (int32; 0 for the classical estimator).
      residual: the convergence diagnostic: the largest change of an exponent (``ln sigma / T``, Ritz
        values of ``J^(T) Q0``) in the last sweep, over exponents within ``ln(1 / null_rtol) / T`` of
        the largest; 0 for ``k = n`` (one sweep is exact), ``inf`` after a single sweep with ``k < n``;
        None for the classical estimator. With a small spectral gap the error can exceed it.
      converged: ``residual <= tol`` (bool); None for the classical estimator.
    """

    exponents: jnp.ndarray
    history: jnp.ndarray | None = None
    sweeps: jnp.ndarray | None = None
    residual: jnp.ndarray | None = None
    converged: jnp.ndarray | None = None


def default_null_rtol(dtype) -> float:
    """``max(1000 eps(dtype), 1e-8)``: singular values below this fraction of the largest are null.

    The ``1e-8`` covers the regularized normalization of ``rsa_jax.ops.pi`` (``y / sqrt(|y|^2 +
    1e-12)``), whose radial derivative is ``~1e-12 / |y|^2`` rather than exactly zero. So float64
    gives ``1e-8`` and float32 ``1000 * 2^-23 ~ 1.2e-4``. Half precision (bfloat16, float16) raises
    ``ValueError``: its ``1000 eps`` exceeds 1, and the QR / SVD behind the exponents need float32+.
    """
    eps = float(jnp.finfo(dtype).eps)
    if eps > 1e-6:
        raise ValueError(f"Lyapunov exponents need float32 or float64 states (LAPACK QR/SVD); got {jnp.dtype(dtype)}")
    return max(1000.0 * eps, 1e-8)


def default_tol(dtype) -> float:
    """``max(1000 eps(dtype), 1e-7)``: the default ``tol`` of ``lyapunov_spectrum`` (exponent units)."""
    return max(1000.0 * float(jnp.finfo(dtype).eps), 1e-7)


def _qr(q: jnp.ndarray):
    """QR of the columns stored as rows: ``q`` ``(k, *shape)`` -> (``Q`` like ``q``, ``R`` ``(k, k)``)."""
    k = q.shape[0]
    qm, r = jnp.linalg.qr(q.reshape(k, -1).T)
    return qm.T.reshape(q.shape), r


def _log_stretch(rdiag: jnp.ndarray, steps, rtol: float) -> jnp.ndarray:
    """``ln |R_ii|`` of a block of ``steps`` steps; nulls -> and others clamped at ``steps * NULL_FLOOR``."""
    floor = steps * NULL_FLOOR
    null = rdiag <= rtol * jnp.max(rdiag)
    logs = jnp.log(jnp.maximum(rdiag, jnp.finfo(rdiag.dtype).tiny))
    return jnp.where(null, floor, jnp.maximum(logs, floor))


def _forward_block(f: Map, x: jnp.ndarray, q: jnp.ndarray, b: jnp.ndarray, steps: int, chunk: int | None = None):
    """Pushes ``x`` and the tangent rows ``q`` ``(k, *shape)`` through ``steps`` steps, then QR.

    ``b`` ``(B, ln scale)`` accumulates the product of the R factors, rescaled to max-abs 1, and the
    log of the scale taken out. Returns ``(x, Q, b, |diag R| (k,), visited states (steps, *shape))``.
    """
    xs = []
    for _ in range(steps):
        xs.append(x)
        x, jvp = jax.linearize(f, x)
        q = push_columns(jvp, q, chunk)
    q, r = _qr(q)
    bm = r @ b[0]
    scale = jnp.maximum(jnp.max(jnp.abs(bm)), jnp.finfo(bm.dtype).tiny)
    return x, q, (bm / scale, b[1] + jnp.log(scale)), jnp.abs(jnp.diagonal(r)), jnp.stack(xs)


def _forward(f: Map, x0: jnp.ndarray, q0: jnp.ndarray, T: int, m: int, chunk: int | None = None):
    """Forward pass in blocks of ``m`` steps (plus a shorter last block if ``m`` does not divide T);
    the tangent rows are pushed ``chunk`` at a time (``push_columns``).

    Returns ``(Q_T, (B, ln scale), |diag R| per block (blocks, k), block lengths (blocks,), states (T,
    *shape))`` with ``J^(T) Q0 = Q_T B exp(ln scale)``.
    """
    nb, rem = divmod(T, m)

    def body(carry, _):
        x, q, b, rd, xs = _forward_block(f, *carry, m, chunk)
        return (x, q, b), (rd, xs)

    b0 = (jnp.eye(q0.shape[0], dtype=q0.dtype), jnp.zeros((), q0.dtype))
    (x, q, b), (rds, xss) = lax.scan(body, (x0, q0, b0), None, length=nb)
    xss = xss.reshape(nb * m, *x0.shape)
    lengths = [m] * nb
    if rem:
        x, q, b, rd, xs = _forward_block(f, x, q, b, rem, chunk)
        rds, xss = jnp.concatenate([rds, rd[None]]), jnp.concatenate([xss, xs])
        lengths.append(rem)
    return q, b, rds, np.asarray(lengths), xss


def _backward(f: Map, xs: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """``w <- orth(J_t^T w)`` for ``t = T-1, ..., 0`` (vjp at the stored states ``xs``)."""
    def body(w, x):
        _, vjp = jax.vjp(f, x)
        return _qr(jax.vmap(lambda u: vjp(u)[0])(w))[0], None

    return lax.scan(body, w, xs, reverse=True)[0]


def _warn_short(converged, residual, tol: float, max_sweeps: int):
    """Host callback: a ``LyapunovWarning`` when any (vmapped) spectrum did not converge."""
    if not np.all(converged):
        warnings.warn(f"lyapunov_spectrum: the subspace iteration stopped at max_sweeps={max_sweeps} with residual "
                      f"{float(np.max(residual)):.3g} > tol={tol:.3g}; the exponents may not have converged to "
                      "ln sigma_i(J^(T)) / T: raise max_sweeps, or k (a wider subspace converges faster)",
                      LyapunovWarning, stacklevel=2)


def lyapunov_spectrum(f: Map, x0: jnp.ndarray, T: int, k: int | None = None, *, method: str = "svd",
                      tol: float | None = None, max_sweeps: int = 50, sweeps: int | None = None,
                      reorth_every: int = 1, key: jax.Array | None = None, return_history: bool = False,
                      null_rtol: float | None = None) -> LyapunovResult:
    """Leading ``k`` (or all) Lyapunov exponents of ``f^T`` at ``x0``: ``ln sigma_i(J^(T)) / T`` (B.3).

    Args:
      f: pure map from arrays shaped like ``x0`` to the same shape and dtype.
      x0: initial state, any shape, ``n = x0.size``.
      T: number of steps (a static int).
      k: number of exponents (static); None for all ``n`` (``Q0 = I``); ``k < n`` starts from a
        random orthonormal ``Q0`` (Gaussian from ``key``, or a fixed NumPy ``default_rng(0)`` draw).
      method: ``"svd"`` (default): the definition of appendix B.3, eq. 90, the singular values of
        ``J^(T)`` by Rayleigh-Ritz and, for ``k < n``, subspace iteration on ``J^(T)T J^(T)`` (JVP
        forward and VJP backward passes). ``"qr"`` or ``"benettin"``: the classical QR estimator,
        nested-volume growth rates of ``J^(T) Q0``; the same ``T -> inf`` limit, not the definition
        at finite T (only the full spectrum's sum agrees).
      tol: ``method="svd"``, ``k < n``, ``sweeps=None``: sweep until no exponent within ``ln(1/null_rtol)/T``
        of the largest changes by more than ``tol`` (default ``default_tol(x0.dtype)``: ``1e-7`` in float64,
        ``1.2e-4`` in float32); those below come from per-step QRs and ``converged`` says nothing of them.
      max_sweeps: cap on the sweeps of that iteration; reaching it before ``tol`` issues a
        ``LyapunovWarning`` (also under jit, by a host callback) and sets ``converged`` False.
      sweeps: a fixed number of sweeps instead of ``tol`` (no warning; ``residual`` still reports the
        last sweep's change); ``0`` is the classical estimator (as ``method="qr"``). For ``k = n`` one
        sweep is exact and further ones are not run; for ``k < n`` the error decays like
        ``(sigma_{k+1} / sigma_i)^(2 sweeps)``.
      reorth_every: QR every this many steps (a shorter last block if it does not divide T).
      key: PRNG key for the random start (None: the fixed NumPy draw, which keeps
        ``jax.random`` out of the compiled graph).
      return_history: also return the running estimates of the last pass.
      null_rtol: a per-step ``|R_ii|`` below ``null_rtol * max_j |R_jj|`` is a null direction
        and contributes ``NULL_FLOOR`` per step; default ``default_null_rtol(x0.dtype)``.

    Returns:
      ``LyapunovResult(exponents (k,) descending, history, sweeps, residual, converged)``.

    Raises:
      TypeError: ``T`` or ``k`` not a static int (e.g. traced under jit).
      ValueError: ``f`` changes the state's shape or dtype; ``k``, ``T``, ``method`` out of range.

    Examples:
      A non-normal linear map ``x -> A x``: the exponents are ``ln sigma_i(A^T) / T``, which the
      classical estimator (``method="qr"``) misses at finite T:

      >>> import numpy as np, jax.numpy as jnp
      >>> from rsa_jax.lyapunov import lyapunov_spectrum
      >>> a = jnp.array([[0.5, 3.0], [0.0, 0.8]], jnp.float32)
      >>> want = np.log(np.linalg.svd(np.linalg.matrix_power(np.asarray(a, float), 5))[1]) / 5
      >>> res = lyapunov_spectrum(lambda x: a @ x, jnp.ones(2, jnp.float32), T=5)
      >>> [round(float(e), 3) for e in res.exponents], [round(float(e), 3) for e in want]
      ([0.219, -1.135], [0.219, -1.135])
      >>> top = lyapunov_spectrum(lambda x: a @ x, jnp.ones(2, jnp.float32), T=5, k=1)
      >>> round(float(top.exponents[0]), 3), bool(top.converged)
      (0.219, True)
      >>> qr = lyapunov_spectrum(lambda x: a @ x, jnp.ones(2, jnp.float32), T=5, method="qr")
      >>> [round(float(e), 3) for e in qr.exponents]          # ln 0.8, ln 0.5: even the sign differs
      [-0.223, -0.693]
    """
    T, n = static_int(T, "T"), x0.size
    k = n if k is None else static_int(k, "k")
    check_state_map(f, x0)
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, n={n}] for x0 of shape {x0.shape}; got {k}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} ('svd': the B.3 definition; 'qr'/'benettin': the "
                         f"classical estimator); got {method!r}")
    if method != "svd":
        if sweeps:
            raise ValueError(f"method={method!r} is the classical estimator, without refinement; got sweeps={sweeps}")
        sweeps = 0
    sweeps = None if sweeps is None else static_int(sweeps, "sweeps")
    max_sweeps = static_int(max_sweeps, "max_sweeps")
    if T < 1 or reorth_every < 1 or (sweeps or 0) < 0 or max_sweeps < 1:
        raise ValueError(f"need T >= 1, reorth_every >= 1, sweeps >= 0, max_sweeps >= 1; got T={T}, "
                         f"reorth_every={reorth_every}, sweeps={sweeps}, max_sweeps={max_sweeps}")
    m = min(reorth_every, T)
    rtol = default_null_rtol(x0.dtype) if null_rtol is None else null_rtol
    tol = default_tol(x0.dtype) if tol is None else float(tol)
    if k == n:
        q0 = jnp.eye(n, dtype=x0.dtype).reshape(n, *x0.shape)
    else:
        if key is None:  # a constant start: no PRNG in the traced graph
            g = jnp.asarray(np.random.default_rng(0).standard_normal((k, *x0.shape)), x0.dtype)
        else:
            g = jax.random.normal(key, (k, *x0.shape), x0.dtype)
        q0 = _qr(g)[0]
    done = residual = converged = None
    if sweeps != 0:
        def ritz(q):
            q_t, (b, lscale), _, _, xs = _forward(f, x0, q, T, m)
            _, s, v = jnp.linalg.svd(b)  # rows of v: right singular vectors of B, descending
            est = jnp.where(s <= rtol * s[0], NULL_FLOOR,
                            jnp.maximum((jnp.log(jnp.maximum(s, jnp.finfo(s.dtype).tiny)) + lscale) / T, NULL_FLOOR))
            return jnp.tensordot(v, q, axes=1), q_t, xs, est

        def sweep(carry):
            q, q_t, xs, est, _, i = carry
            q, q_t, xs, new = ritz(_backward(f, xs, q_t))
            return q, q_t, xs, new, jnp.max(jnp.abs(new - est)), i + 1

        zero, inf = jnp.zeros((), jnp.int32), jnp.full((), jnp.inf, x0.dtype)
        carry = (*ritz(q0), jnp.zeros((), x0.dtype) if k == n else inf, zero + 1)
        if k < n and sweeps is None:
            carry = lax.while_loop(lambda c: (c[5] < max_sweeps) & (c[4] > tol), sweep, carry)
        elif k < n and sweeps > 1:
            carry = lax.scan(lambda c, _: (sweep(c), None), carry, None, length=sweeps - 1)[0]
        q0, residual, done = carry[0], carry[4], carry[5]
        converged = residual <= tol
        if k < n and sweeps is None:
            jax.debug.callback(lambda c, r: _warn_short(c, r, tol, max_sweeps), converged, residual)
    _, _, rds, lengths, _ = _forward(f, x0, q0, T, m)
    logs = jax.vmap(_log_stretch, in_axes=(0, 0, None))(rds, jnp.asarray(lengths, x0.dtype), rtol)
    exponents = -jnp.sort(-logs.sum(0) / T)
    history = None
    if return_history:
        history = -jnp.sort(-jnp.cumsum(logs, 0) / np.cumsum(lengths)[:, None].astype(x0.dtype), axis=-1)
    return LyapunovResult(exponents, history, jnp.zeros((), jnp.int32) if done is None else done, residual, converged)


def lyapunov_exact(f: Map, x0: jnp.ndarray, T: int, *, null_rtol: float | None = None) -> jnp.ndarray:
    """The B.3 definition from the dense Jacobian of ``f^T`` (small systems only).

    ``alpha_i`` (eigenvalues of ``J^T J``) are computed as squared singular values of ``J``,
    which is the same quantity with half the dynamic range.

    Args:
      f: pure map from arrays shaped like ``x0`` to the same shape.
      x0: initial state, ``n = x0.size``.
      T: number of steps (static).
      null_rtol: singular values below ``null_rtol * sigma_1`` are null (exponent ``NULL_FLOOR``);
        default ``default_null_rtol(x0.dtype)``.

    Returns:
      ``(n,)`` exponents ``(1 / 2T) ln alpha_i``, descending, clamped at ``NULL_FLOOR``.
    """
    T = static_int(T, "T")
    check_state_map(f, x0)
    rtol = default_null_rtol(x0.dtype) if null_rtol is None else null_rtol
    compose = lambda x: lax.scan(lambda y, _: (f(y), None), x, None, length=T)[0]
    s = jnp.linalg.svd(dense_jacobian(compose, x0), compute_uv=False)
    lam = jnp.log(jnp.maximum(s, jnp.finfo(s.dtype).tiny)) / T
    return jnp.where(s <= rtol * s[0], NULL_FLOOR, jnp.maximum(lam, NULL_FLOOR))


class ExponentSum(NamedTuple):
    """Output of ``nonnull_exponent_sum``.

    Attributes:
      total: ``sum_{i <= M} lambda_i = (1/T) ln pdet J^(T)`` over the ``M = n - num_null`` non-null
        exponents (scalar); ``total / M`` is the paper's mean LE.
      kept_pivot: ``|R_MM| / |R_11|`` of the pivoted QR of ``J_1^T``: the smallest kept direction
        (0 when ``num_null = 0``: no QR is needed then).
      dropped_pivot: ``|R_{M+1,M+1}| / |R_11|`` (0 when ``num_null = 0``): should be at rounding
        level, far below ``kept_pivot``; if not, ``num_null`` does not match the map's null space.
      min_stretch: smallest ``|R_ii| / max_j |R_jj|`` of the forward pass's QRs (one per block of
        ``reorth_every`` steps): near rounding level means a later step lost a direction too (the sum
        is then not the pseudo-determinant's); strongly contracting directions also make it small.
    """

    total: jnp.ndarray
    kept_pivot: jnp.ndarray
    dropped_pivot: jnp.ndarray
    min_stretch: jnp.ndarray


def nonnull_exponent_sum(f: Map, x0: jnp.ndarray, T: int, num_null: int = 0, *,
                         reorth_every: int = 1, chunk: int | None = None) -> ExponentSum:
    """The sum of the ``M = n - num_null`` non-null exponents of ``f^T`` at ``x0``, exactly.

    The paper's mean LE is this sum over ``M`` (B.3 with the null directions excluded). It needs no
    single exponent: ``J^(T)`` has rank ``M`` with ``ker J^(T) = ker J_1`` (a normalization layer
    kills the same number of directions at every step, and generically no step kills one more), so
    the Benettin pass started from an orthonormal basis ``Q0`` of ``(ker J_1)^perp = range J_1^T``
    measures the volume growth of exactly the subspace on which ``J^(T)`` is injective, and the
    accumulated ``sum ln |R_ii|`` over its ``M`` columns is ``ln pdet J^(T) = sum_{i <= M} ln sigma_i``
    (the product of the per-step R factors' diagonals is ``|det R|``, whatever the per-column split).
    ``Q0`` comes from a column-pivoted QR of the dense ``J_1^T`` (``Q0 = I`` without null directions),
    then one forward pass of ``M`` columns: half the work of the full spectrum (two passes and an SVD).
    Unlike the summaries of a full spectrum, nothing is clamped at ``NULL_FLOOR``: for a map that
    contracts some directions by more than ``e^30`` per step the two means differ.

    Args:
      f: pure map from arrays shaped like ``x0`` to the same shape.
      x0: initial state, ``n = x0.size``.
      T: number of steps (static).
      num_null: null directions of every step (``null_directions``; 0 for an unnormalized map,
        where the sum is ``ln |det J^(T)| / T``).
      reorth_every: QR every this many steps.
      chunk: tangent columns pushed at once (``dense_jacobian`` and the forward pass); None: all
        ``n`` (fastest; ~5 GB for a Sudoku step at D = 128, ``n = 10,368``, and ~16x that at D = 512).
        Same result either way.

    Returns:
      ``ExponentSum(total, kept_pivot, dropped_pivot, min_stretch)``.

    Examples:
      A rank-one-deficient linear map ``x -> A x``: its exponents are ``ln`` of the non-zero
      ``|eig(A)|`` for a diagonal ``A``:

      >>> import jax.numpy as jnp
      >>> from rsa_jax.lyapunov import nonnull_exponent_sum
      >>> a = jnp.diag(jnp.array([3.0, 0.5, 0.0]))
      >>> res = nonnull_exponent_sum(lambda x: a @ x, jnp.ones(3), T=4, num_null=1)
      >>> round(float(res.total), 4), float(res.dropped_pivot)  # ln 3 + ln 0.5
      (0.4055, 0.0)
    """
    T, n = static_int(T, "T"), x0.size
    check_state_map(f, x0)
    m_kept = n - num_null
    if not 0 <= num_null < n or T < 1 or reorth_every < 1:
        raise ValueError(f"need 0 <= num_null < n = {n}, T >= 1, reorth_every >= 1; got {num_null}, {T}, "
                         f"{reorth_every}")
    if num_null:
        j1 = dense_jacobian(f, x0, chunk)
        q, r, _ = jax.scipy.linalg.qr(j1.T, mode="economic", pivoting=True)
        rd = jnp.abs(jnp.diagonal(r))
        kept, dropped = rd[m_kept - 1] / rd[0], rd[m_kept] / rd[0]
        q0 = q[:, :m_kept].T.reshape(m_kept, *x0.shape)
    else:   # any orthonormal basis spans everything: the sum is ln |det J^(T)| / T
        kept = dropped = jnp.zeros((), x0.dtype)
        q0 = jnp.eye(n, dtype=x0.dtype).reshape(n, *x0.shape)
    _, _, rds, _, _ = _forward(f, x0, q0, T, min(reorth_every, T), chunk)
    tiny = jnp.finfo(rds.dtype).tiny
    total = jnp.sum(jnp.log(jnp.maximum(rds, tiny))) / T
    stretch = jnp.min(rds / jnp.maximum(jnp.max(rds, axis=1, keepdims=True), tiny))
    return ExponentSum(total, kept, dropped, stretch)
