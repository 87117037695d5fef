"""Lyapunov exponents of the T-fold composition of a pure map ``f: x -> x`` (appendix B.3).

Definition (B.3, eqs. 89-90): with ``J^(T) = d f^T(x0) / d x0`` and ``alpha_i`` the eigenvalues of
``J^(T)T J^(T)``,

    lambda_i = (1 / 2T) ln alpha_i = (1 / T) ln sigma_i(J^(T)),

i.e. finite-time exponents at horizon T (the paper uses T = 16 and one sample). ``x`` may have any
shape; it is flattened row-major to ``n = x.size`` coordinates.

Two estimators of the spectrum, and one of its non-null sum (the paper's mean LE):

* ``lyapunov_spectrum``: the Benettin QR method. ``k`` tangent vectors are pushed through
  ``jax.linearize(f, x_t)`` (vmapped over the columns, the dense Jacobian is never formed) and
  re-orthonormalized by QR; ``lambda_i`` is the time average of ``ln |R_ii|``. Memory ``O(n k)``.
  With ``sweeps = 0`` this is the classical estimator, which converges to the same limit as
  ``T -> inf`` but at finite T gives the growth rates of nested volumes of ``J^(T) Q0``, not its
  singular values (only the sum of the full spectrum, ``ln|det J^(T)| / T``, agrees exactly).
  With ``sweeps > 0`` the start ``Q0`` is first refined: a forward pass gives
  ``J^(T) Q0 = Q_T B`` (``B`` the product of the R factors) and ``Q0`` is rotated onto the right
  singular vectors of ``B`` (Rayleigh-Ritz); further sweeps first replace ``span Q0`` by
  ``span J^(T)T J^(T) Q0`` with a backward (vjp) pass (subspace iteration, QR at every step, so
  nothing over- or underflows). After the rotation ``J^(T) Q0`` has orthogonal columns, so the
  measuring pass's accumulated ``|R_ii|`` are the singular values themselves, summed in log
  space. For the full spectrum one sweep reproduces the B.3 definition (up to the SVD accuracy
  of ``B``: directions with ``sigma_i < eps sigma_1`` keep nested-volume values); for leading
  ``k`` the error decays like ``(sigma_{k+1} / sigma_i)^(2 sweeps)``.
* ``lyapunov_exact``: the definition itself, from the dense Jacobian of the composition
  (``O(n^2)`` memory, small systems only). It resolves only exponents within about
  ``ln(1 / null_rtol) / T`` of the largest (the SVD's absolute accuracy is ``eps * sigma_1``).
* ``nonnull_exponent_sum``: the sum of the non-null exponents without any single one, exactly
  (Benettin started on ``(ker J_1)^perp``): the paper's mean LE at half the cost of the full spectrum.

Null directions. A normalization layer (Pi, RMSNorm; whole-token or per N-chunk) kills the
radial direction of every normalized chunk, so ``J`` has ``S * D / N`` zero singular values
(``S`` for whole-token normalization) and ``ln alpha = -inf``. Both estimators call a singular
value null when it is below ``null_rtol`` times the largest (per QR step for the QR method;
default ``default_null_rtol``) and report its exponent as exactly ``NULL_FLOOR``; any other
per-step ``ln |R_ii|`` is also clamped at ``NULL_FLOOR``. Summaries (``max_lyapunov``,
``mean_lyapunov``) drop the ``num_null`` smallest exponents, counted by ``null_directions``:
the "mean LE" of a whole-token-normalized model averages over ``M = S (D - 1)`` exponents,
not ``S D`` (``M = S D (N - 1) / N`` for N-chunk normalization).

Everything is pure and jit/vmap-able (``T``, ``k``, ``reorth_every``, ``sweeps`` static):
``jax.vmap(lambda x0: lyapunov_spectrum(f, x0, T, k).exponents)(batch)``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rsa_jax.jacobian import dense_jacobian, push_columns

Map = Callable[[jnp.ndarray], jnp.ndarray]

#: Exponent reported for a null direction, and lower clamp of every per-step ``ln |R_ii|``.
NULL_FLOOR = -30.0


class LyapunovResult(NamedTuple):
    """Output of ``lyapunov_spectrum``.

    Attributes:
      exponents: ``(k,)`` exponents sorted descending (paper normalization ``ln sigma / T``).
      history: ``(T // reorth_every [+1], k)`` running estimates (sum of logs so far divided by
        the steps so far), one row after each re-orthonormalization (every step for
        ``reorth_every = 1``; the last row is at step T), each row sorted descending; None unless
        requested.
    """

    exponents: jnp.ndarray
    history: jnp.ndarray | None


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

    ``b`` accumulates the product of the R factors, rescaled to max-abs 1 (only its singular
    vectors are used). Returns ``(x, Q, b, |diag R| (k,), visited states (steps, *shape))``.
    """
    xs = []
    for _ in range(steps):
        xs.append(x)
        x, jvp = jax.linearize(f, x)
        q = push_columns(jvp, q, chunk)
    q, r = _qr(q)
    b = r @ b
    b = b / jnp.maximum(jnp.max(jnp.abs(b)), jnp.finfo(b.dtype).tiny)
    return x, q, b, jnp.abs(jnp.diagonal(r)), jnp.stack(xs)


def _forward(f: Map, x0: jnp.ndarray, q0: jnp.ndarray, T: int, m: int, chunk: int | None = None):
    """Forward pass in blocks of ``m`` steps (plus a shorter last block if ``m`` does not divide T);
    the tangent rows are pushed ``chunk`` at a time (``push_columns``).

    Returns ``(Q_T, B, |diag R| per block (blocks, k), block lengths (blocks,), states (T, *shape))``
    with ``J^(T) Q0 = Q_T B`` up to the scale of ``B``.
    """
    nb, rem = divmod(T, m)

    def body(carry, _):
        x, q, b, rd, xs = _forward_block(f, *carry, m, chunk)
        return (x, q, b), (rd, xs)

    b0 = jnp.eye(q0.shape[0], dtype=q0.dtype)
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


def lyapunov_spectrum(f: Map, x0: jnp.ndarray, T: int, k: int | None = None, *, reorth_every: int = 1,
                      key: jax.Array | None = None, return_history: bool = False, sweeps: int = 0,
                      null_rtol: float | None = None) -> LyapunovResult:
    """Leading ``k`` (or all) Lyapunov exponents of ``f^T`` at ``x0`` by the QR (Benettin) method.

    Args:
      f: pure map from arrays shaped like ``x0`` to the same shape.
      x0: initial state, any shape, ``n = x0.size``.
      T: number of steps (static).
      k: number of exponents (static); None for all ``n`` (``Q0 = I``); ``k < n`` starts from a
        random orthonormal ``Q0`` (Gaussian from ``key``, or a fixed NumPy ``default_rng(0)`` draw).
      reorth_every: QR every this many steps (a shorter last block if it does not divide T).
      key: PRNG key for the random start (None: the fixed NumPy draw, which keeps
        ``jax.random`` out of the compiled graph).
      return_history: also return the running estimates.
      sweeps: refinement passes before the measuring pass; 0 is the classical estimator. Each
        sweep runs a forward pass and rotates ``Q0`` within its span onto the right singular
        vectors of ``J^(T) Q0`` (Rayleigh-Ritz on the accumulated R product); sweeps after the
        first are preceded by a backward (vjp) pass that replaces ``span Q0`` by
        ``span J^(T)T J^(T) Q0`` (subspace iteration). For ``k = n`` one sweep already gives the
        B.3 definition (``lyapunov_exact``); for ``k < n`` it converges like
        ``(sigma_{k+1} / sigma_k)^(2 sweeps)``.
      null_rtol: a per-step ``|R_ii|`` below ``null_rtol * max_j |R_jj|`` is a null direction
        and contributes ``NULL_FLOOR`` per step; default ``default_null_rtol(x0.dtype)``.

    Returns:
      ``LyapunovResult(exponents (k,) descending, history or None)``; exponents are
      ``(1/T) sum_t ln |R_ii^(t)|``, i.e. ``ln sigma / T`` (= ``(1/2T) ln alpha``).

    Examples:
      A linear map ``x -> A x`` with a symmetric ``A`` has the exponents ``ln |eig(A)|``:

      >>> import jax.numpy as jnp
      >>> from rsa_jax.lyapunov import lyapunov_spectrum
      >>> a = jnp.diag(jnp.array([2.0, 0.5], jnp.float32))
      >>> res = lyapunov_spectrum(lambda x: a @ x, jnp.ones(2, jnp.float32), T=10)
      >>> [round(float(e), 4) for e in res.exponents]          # ln 2, ln 1/2
      [0.6931, -0.6931]
      >>> lyapunov_spectrum(lambda x: a @ x, jnp.ones(2, jnp.float32), T=10, k=1).exponents.shape
      (1,)
    """
    n = x0.size
    k = n if k is None else k
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, n={n}] for x0 of shape {x0.shape}; got {k}")
    if T < 1 or reorth_every < 1 or sweeps < 0:
        raise ValueError(f"need T >= 1, reorth_every >= 1, sweeps >= 0; got {T}, {reorth_every}, {sweeps}")
    m = min(reorth_every, T)
    rtol = default_null_rtol(x0.dtype) if null_rtol is None else null_rtol
    if k == n:
        q0 = jnp.eye(n, dtype=x0.dtype).reshape(n, *x0.shape)
    else:
        if key is None:  # a constant start: no PRNG in the traced graph
            g = jnp.asarray(np.random.default_rng(0).standard_normal((k, *x0.shape)), x0.dtype)
        else:
            g = jax.random.normal(key, (k, *x0.shape), x0.dtype)
        q0 = _qr(g)[0]
    if sweeps:
        def ritz(q):
            q_t, b, _, _, xs = _forward(f, x0, q, T, m)
            v = jnp.linalg.svd(b)[2]  # rows: right singular vectors of B, descending
            return jnp.tensordot(v, q, axes=1), q_t, xs

        q0, q_t, xs = ritz(q0)
        if k < n and sweeps > 1:
            def sweep(carry, _):
                return ritz(_backward(f, carry[2], carry[1])), None

            q0 = lax.scan(sweep, (q0, q_t, xs), None, length=sweeps - 1)[0][0]
    _, _, rds, lengths, _ = _forward(f, x0, q0, T, m)
    logs = jax.vmap(_log_stretch, in_axes=(0, 0, None))(rds, jnp.asarray(lengths, x0.dtype), rtol)
    exponents = -jnp.sort(-logs.sum(0) / T)
    history = None
    if return_history:
        history = -jnp.sort(-jnp.cumsum(logs, 0) / np.cumsum(lengths)[:, None].astype(x0.dtype), axis=-1)
    return LyapunovResult(exponents, history)


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
    ``Q0`` comes from a column-pivoted QR of the dense ``J_1^T`` (``n`` JVPs and one ``n x n`` QR;
    ``Q0 = I`` without null directions), then one forward pass of ``M`` tangent columns: about half the
    work of the full spectrum
    (``lyapunov_spectrum(k=None, sweeps=1)``: two passes of ``n`` columns and an ``n x n`` SVD).
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
    n = x0.size
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


def null_directions(shape: Sequence[int], n: int | None = None, norm: str = "pi") -> int:
    """Number of null directions a normalization layer gives a state of this shape.

    Args:
      shape: state shape ``(..., S, D)`` of one system (leading axes count as more tokens).
      n: oscillator size (the normalization acts on each ``n``-chunk); None for whole tokens.
      norm: ``"none"`` (0 nulls), ``"pi"`` or ``"rmsnorm"`` (one per normalized chunk).

    Returns:
      ``prod(shape[:-1]) * D / n``: ``S`` for whole-token normalization, ``S * D / N`` per oscillator.
    """
    if norm == "none":
        return 0
    if norm not in ("pi", "rmsnorm"):
        raise ValueError(f"unknown normalization {norm!r}; expected 'none', 'pi' or 'rmsnorm'")
    d = shape[-1]
    n = d if n is None else n
    if d % n:
        raise ValueError(f"oscillator size n={n} must divide D={d}")
    return math.prod(shape[:-1]) * (d // n)


def _kept(exponents: jnp.ndarray, num_null: int) -> jnp.ndarray:
    k = exponents.shape[-1]
    if not 0 <= num_null < k:
        raise ValueError(f"num_null={num_null} must be in [0, {k}) for {k} exponents")
    return (-jnp.sort(-exponents, axis=-1))[..., :k - num_null]


def max_lyapunov(exponents: jnp.ndarray, num_null: int = 0) -> jnp.ndarray:
    """Largest exponent after dropping the ``num_null`` smallest ones.

    Args:
      exponents: ``(..., k)``.
      num_null: null directions among these exponents (``null_directions``; 0 for a leading-k
        spectrum with ``k <= n - num_null``, which contains none).

    Returns:
      ``(...)``.
    """
    return _kept(exponents, num_null)[..., 0]


def mean_lyapunov(exponents: jnp.ndarray, num_null: int = 0) -> jnp.ndarray:
    """Mean over the ``M = k - num_null`` largest exponents (``M = S (D - 1)`` for a full spectrum
    with whole-token normalization).

    Args:
      exponents: ``(..., k)``.
      num_null: null directions among these exponents.

    Returns:
      ``(...)``.
    """
    return jnp.mean(_kept(exponents, num_null), axis=-1)
