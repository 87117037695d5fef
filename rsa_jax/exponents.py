"""Summaries of a Lyapunov spectrum: the null directions a normalization layer adds, the largest
exponent and the paper's mean LE over the non-null ones (appendix B.3).

A normalization layer (Pi, RMSNorm; whole-token or per N-chunk) kills the radial direction of every
normalized chunk, so the Jacobian has ``S * D / N`` zero singular values (``S`` for whole-token
normalization), reported by the estimators of :mod:`rsa_jax.lyapunov` as ``NULL_FLOOR``.
``mean_lyapunov`` drops them, counted by ``null_directions``: the mean LE of a whole-token-normalized
model averages over ``M = S (D - 1)`` exponents, not ``S D``. The largest exponent (``max_lyapunov``)
is never a null one, so it needs no count. :mod:`rsa_jax.lyapunov` re-exports all three.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp


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


def _kept(exponents: jnp.ndarray, num_null: int, n: int | None) -> jnp.ndarray:
    """The exponents sorted descending without the null ones; NaN everywhere if any is NaN."""
    k = exponents.shape[-1]
    if n is not None and n < k:
        raise ValueError(f"n={n} (the state's size) must be >= the number of exponents {k}")
    full = n is None or n == k
    drop = num_null if full else max(0, num_null - (n - k))   # nulls are the n - M smallest of n
    if not 0 <= drop < k:
        raise ValueError(f"num_null={num_null} must be in [0, {k}) for a full spectrum of {k} exponents; for a "
                         "leading-k spectrum pass n=x0.size too (mean_lyapunov(ex, num_null, n=...))")
    kept = (-jnp.sort(-exponents, axis=-1))[..., :k - drop]
    return jnp.where(jnp.any(jnp.isnan(exponents), axis=-1, keepdims=True), jnp.nan, kept)


def max_lyapunov(exponents: jnp.ndarray) -> jnp.ndarray:
    """The largest exponent: of a full or a leading-k spectrum alike (a null exponent is never the
    largest, so no null count applies); NaN if any exponent is NaN.

    Args:
      exponents: ``(..., k)``.

    Returns:
      ``(...)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from rsa_jax.exponents import max_lyapunov
      >>> float(max_lyapunov(jnp.array([-0.25, 0.5, -30.0]))), float(max_lyapunov(jnp.array([jnp.nan, 0.5])))
      (0.5, nan)
    """
    return _kept(exponents, 0, None)[..., 0]


def mean_lyapunov(exponents: jnp.ndarray, num_null: int = 0, *, n: int | None = None) -> jnp.ndarray:
    """Mean over the non-null exponents (``M = S (D - 1)`` of a full spectrum with whole-token
    normalization: the paper's mean LE, appendix B.3); NaN if any exponent is NaN.

    Args:
      exponents: ``(..., k)``: a full spectrum, or the leading ``k`` of ``n`` (then pass ``n``).
      num_null: null directions of the map (``null_directions``), i.e. among all ``n`` exponents.
      n: the state's size ``x0.size`` when ``exponents`` is a leading-k spectrum (``k < n``): only
        ``max(0, num_null - (n - k))`` of the nulls can be among the ``k``; None: a full spectrum.

    Returns:
      ``(...)``.
    """
    return jnp.mean(_kept(exponents, num_null, n), axis=-1)
