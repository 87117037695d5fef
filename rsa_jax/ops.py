"""Token- and oscillator-wise operators: Pi, Proj, RMSNorm and the Omega rotation.

Every operator acts on the last axis of an array ``(..., D)``. With ``n=None`` it acts on
the whole token (``N = D``); with an integer ``n`` it acts on each consecutive ``n``-channel
chunk ("oscillator") of a token independently, as in AKOrN. All functions are pure and
jit/vmap/jacfwd-able.

Conventions (the paper's notation; appendix A.1, Lemmas A.2/A.3):
  Pi(Y)_i      = Y_i / ||Y_i||
  Proj_X(Y)_i  = (I - X_i X_i^T) Y_i
  RMSNorm(Y)_i = gamma * Y_i / ||Y_i||        (Pi is the case gamma = 1)
  Omega x      : per channel pair (2p, 2p+1), (x0, x1) -> (w x1, -w x0)

RMSNorm follows the paper's definition (unit-norm direction times gamma); the conventional
``sqrt(N)`` factor of an RMS statistic is absorbed in gamma.
"""

from __future__ import annotations

import jax.numpy as jnp

NORMS = ("none", "pi", "rmsnorm")


def _chunks(y: jnp.ndarray, n: int | None) -> jnp.ndarray:
    """Reshapes ``(..., D)`` to ``(..., D // n, n)`` (``n=None``: ``(..., 1, D)``)."""
    d = y.shape[-1]
    n = d if n is None else n
    if n <= 0 or d % n:
        raise ValueError(f"oscillator size n={n} must divide the channel dimension D={d} (shape {y.shape})")
    return y.reshape(*y.shape[:-1], d // n, n)


def chunk_norm(y: jnp.ndarray, n: int | None = None, eps: float = 0.0) -> jnp.ndarray:
    """Euclidean norm of each ``n``-chunk.

    Args:
      y: ``(..., D)``.
      n: oscillator size dividing D, or None for the whole token.
      eps: added under the square root.

    Returns:
      ``(..., D // n, 1)`` norms, broadcastable against ``_chunks(y, n)``.
    """
    yc = _chunks(y, n)
    return jnp.sqrt(jnp.sum(yc * yc, axis=-1, keepdims=True) + eps)


def pi(y: jnp.ndarray, n: int | None = None, eps: float = 1e-12) -> jnp.ndarray:
    """Projects each token (or ``n``-chunk) onto the unit sphere: ``y / ||y||``.

    Args:
      y: ``(..., D)``.
      n: oscillator size, or None for whole tokens.
      eps: added to ``||y||^2`` so that a zero chunk maps to zero instead of NaN.

    Returns:
      ``(..., D)``.
    """
    yc = _chunks(y, n)
    return (yc / chunk_norm(y, n, eps)).reshape(y.shape)


def proj(x: jnp.ndarray, y: jnp.ndarray, n: int | None = None) -> jnp.ndarray:
    """Tangent projection ``(I - x x^T) y`` per token (or ``n``-chunk).

    ``x`` is used as given (the formula assumes unit chunks, as after ``pi``).

    Args:
      x: ``(..., D)`` base point.
      y: ``(..., D)`` vector to project.
      n: oscillator size, or None for whole tokens.

    Returns:
      ``(..., D)``.
    """
    xc, yc = _chunks(x, n), _chunks(y, n)
    return (yc - xc * jnp.sum(xc * yc, axis=-1, keepdims=True)).reshape(y.shape)


def rms_norm(y: jnp.ndarray, gamma: jnp.ndarray, n: int | None = None, eps: float = 1e-12) -> jnp.ndarray:
    """RMSNorm as in the paper: ``gamma * Pi(y)`` per token (or ``n``-chunk).

    Args:
      y: ``(..., D)``.
      gamma: ``(D,)`` per-channel gain.
      n: oscillator size, or None for whole tokens.
      eps: see ``pi``.

    Returns:
      ``(..., D)``.
    """
    if gamma.shape != y.shape[-1:]:
        raise ValueError(f"gamma has shape {gamma.shape}, expected ({y.shape[-1]},) for input {y.shape}")
    return gamma * pi(y, n, eps)


def normalize(y: jnp.ndarray, kind: str, gamma: jnp.ndarray | None = None, n: int | None = None) -> jnp.ndarray:
    """Dispatches to the normalization ``kind`` in ``NORMS``.

    Args:
      y: ``(..., D)``.
      kind: ``"none"``, ``"pi"`` or ``"rmsnorm"``.
      gamma: ``(D,)``, required for ``"rmsnorm"``.
      n: oscillator size, or None for whole tokens.

    Returns:
      ``(..., D)``.
    """
    if kind == "none":
        return y
    if kind == "pi":
        return pi(y, n)
    if kind == "rmsnorm":
        if gamma is None:
            raise ValueError("rmsnorm needs gamma of shape (D,)")
        return rms_norm(y, gamma, n)
    raise ValueError(f"unknown normalization {kind!r}; expected one of {NORMS}")


def omega_rotation(x: jnp.ndarray, w: jnp.ndarray | float) -> jnp.ndarray:
    """Applies the pairwise rotation generator: ``(x0, x1) -> (w x1, -w x0)`` per channel pair.

    Pairs are channels ``(2p, 2p + 1)``, so with even oscillator size they never straddle
    oscillators. ``Omega`` is antisymmetric, and ``I + eta Omega`` has eigenvalues ``1 +- i eta w``.

    Args:
      x: ``(..., D)`` with even D.
      w: scalar frequency, or ``(D // 2,)`` one frequency per pair.

    Returns:
      ``(..., D)``.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"Omega pairs channels: D={d} must be even (input shape {x.shape})")
    xp = x.reshape(*x.shape[:-1], d // 2, 2)
    rot = jnp.stack([xp[..., 1], -xp[..., 0]], axis=-1)
    w = jnp.asarray(w, x.dtype)
    w = w[:, None] if w.ndim else w
    return (w * rot).reshape(x.shape)
