"""Pseudo-energy monitoring (sec. 6.3): energy along a trajectory, its quadratic-form reading.

Paper, sec. 6.3: ``E_pseudo(t) = -Tr(X_t^T (C + MSA(X_t)))``. Writing ``J_t`` for the Jacobian of the map
``X -> MSA(X)`` at ``X_t`` (flattened row-major, ``(S*D, S*D)``), ``vec(MSA(X_t)) ~ J_t x_t``, so the
attention part of the pseudo-energy is ``-x_t^T J_t x_t = -x_t^T S_t x_t / 2`` with the symmetric
``S_t = J_t + J_t^T``. The *contribution index* is the share of ``||x_t||^2`` on the eigenvectors
of ``S_t`` with the top ``top_frac`` (2%) largest (algebraic) eigenvalues: the dynamics behave like
power iteration on ``S_t`` when it rises (to ~40% in the paper).

Caveats of the linear reading (see ``msa_cosine`` to measure it): softmax attention is not
homogeneous in X, so ``MSA(X) != J X`` in general; the output bias ``b^O`` and the conditioning
term ``-Tr(X^T C)`` are not part of the quadratic form.

Functions taking a map ``g`` work for any pure map (e.g. the whole update step instead of MSA).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from rsa_jax.attention import msa
from rsa_jax.energy import pseudo_energy
from rsa_jax.jacobian import dense_jacobian, linear_operators, top_symmetric_eigenpairs

Map = Callable[[jnp.ndarray], jnp.ndarray]


def pseudo_energy_trajectory(attn: dict, xs: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """``E_pseudo`` at every state of a trajectory.

    Args:
      attn: attention parameters.
      xs: ``(T, ..., S, D)`` states (e.g. ``rollout(..., trajectory=True)``).
      c: ``(..., S, D)`` conditioning, shared by all steps.

    Returns:
      ``(T, ...)``. AKOrN's voting energy of a run is its sum over ``T``.
    """
    if xs.shape[1:] != c.shape:
        raise ValueError(f"xs must be (T, *c.shape) = (T, {', '.join(map(str, c.shape))}); got {xs.shape}")
    return jax.vmap(lambda x: pseudo_energy(attn, x, c))(xs)


def symmetric_jacobian(g: Map, x: jnp.ndarray) -> jnp.ndarray:
    """``S = J + J^T`` with ``J = dg/dx`` at ``x`` (dense, flattened; ``g`` must map x's shape to itself).

    Cost: ``n = x.size`` forward-mode JVPs (``jax.jacfwd``) and ``n^2`` memory.
    """
    j = dense_jacobian(g, x)
    if j.shape[0] != j.shape[1]:
        raise ValueError(f"g must map x's shape {x.shape} to itself; Jacobian is {j.shape}")
    return j + j.T


def top_count(n: int, top_frac: float) -> int:
    """Number of eigenvectors in the top fraction: ``max(1, ceil(top_frac * n))``."""
    if not 0.0 < top_frac <= 1.0:
        raise ValueError(f"top_frac must be in (0, 1]; got {top_frac}")
    return max(1, math.ceil(top_frac * n - 1e-9))


class KrylovContribution(NamedTuple):
    """Output of ``krylov_contribution_index`` (scalars).

    Attributes:
      index: the contribution index from the top ``k`` Ritz vectors.
      residual: ``max_i ||S q_i - theta_i q_i||`` over them, relative to ``|theta_1|``.
      gap: ``(theta_k - theta_{k+1}) / |theta_1|``, the Ritz gap at the cut. ``residual / gap`` well
        below 1 says the Ritz subspace has settled at the cut (a Davis-Kahan-type diagnostic, not a
        certificate: ``theta_{k+1}`` is itself a Ritz value, and the bound on the subspace angle uses
        all k residuals).
    """

    index: jnp.ndarray
    residual: jnp.ndarray
    gap: jnp.ndarray


def krylov_contribution_index(g: Map, x: jnp.ndarray, top_frac: float = 0.02, krylov_dim: int | None = None,
                              key: jax.Array | None = None) -> KrylovContribution:
    """``contribution_index`` matrix-free: Lanczos on ``v -> J v + J^T v`` (one JVP and one VJP per step).

    No dense ``S`` and no ``O(n^3)`` eigh: ``krylov_dim`` products and ``O(krylov_dim^2 n)``
    orthogonalization, so the index is cheap at every step of a rollout and feasible at the paper's
    width (D = 512: ``n = 41,472``). The ``k + 1`` largest Ritz pairs give the index and its
    diagnostics (``KrylovContribution``). Jittable (``top_frac``, ``krylov_dim`` static).

    Args:
      g: map from x's shape to itself.
      x: state, any shape, ``n = x.size``.
      top_frac: fraction of eigenvectors counted (2% in the paper); ``k = top_count(n, top_frac)``.
      krylov_dim: Lanczos steps (``k < krylov_dim < n``); default ``min(n - 1, max(6 k, 40))``.
      key: PRNG key of the random start vector (default ``PRNGKey(0)``).

    Returns:
      ``KrylovContribution(index, residual, gap)``.
    """
    n = x.size
    k = top_count(n, top_frac)
    m = min(n - 1, max(6 * k, 40)) if krylov_dim is None else krylov_dim
    if not k < m < n:
        raise ValueError(f"need k = {k} < krylov_dim < n = {n}; got krylov_dim={m}")
    flat = x.reshape(-1)
    _, jvp, vjp = linear_operators(lambda z: g(z.reshape(x.shape)).reshape(-1), flat)
    v0 = jax.random.normal(jax.random.PRNGKey(0) if key is None else key, (n,), x.dtype)
    top = top_symmetric_eigenpairs(lambda v: jvp(v) + vjp(v), v0, k + 1, m)
    proj = top.eigenvectors[:, :k].T @ flat
    scale = jnp.abs(top.eigenvalues[0])
    return KrylovContribution(jnp.sum(proj ** 2) / jnp.sum(flat * flat), jnp.max(top.residuals[:k]) / scale,
                              (top.eigenvalues[k - 1] - top.eigenvalues[k]) / scale)


def contribution_index(g: Map, x: jnp.ndarray, top_frac: float = 0.02, *,
                       krylov_dim: int | None = None) -> jnp.ndarray:
    """Share of ``||x||^2`` on the top eigenvectors of ``S = J + J^T``, ``J = dg/dx`` at ``x``.

    ``sum_{i <= k} (q_i^T x)^2 / ||x||^2`` with ``q_i`` the eigenvectors of S sorted by decreasing
    (algebraic) eigenvalue and ``k = max(1, ceil(top_frac * n))``, ``n = x.size``. For the paper's
    index pass ``g = lambda z: msa(attn, z)`` (see ``msa_contribution_index``) and one sample
    ``x`` of shape ``(S, D)``; vmap over a batch.

    Cost (``krylov_dim=None``, exact): dense S (``n`` JVPs, ``n^2`` memory) and ``jnp.linalg.eigh``
    (``O(n^3)``): fine up to a few thousand dimensions (S = 81 cells with D <= 64: n <= 5184), minutes
    per call at D = 128 on a CPU and not possible at D = 512 (n = 41,472: a 7 GB float32 matrix).
    With ``krylov_dim`` set: ``krylov_contribution_index`` (Lanczos; its diagnostics are dropped here).

    Args:
      g: map from x's shape to itself.
      x: state, any shape.
      top_frac: fraction of eigenvectors counted (2% in the paper).
      krylov_dim: Lanczos steps, or None for the dense eigh.

    Returns:
      Scalar in ``[0, 1]``.
    """
    if krylov_dim is not None:
        return krylov_contribution_index(g, x, top_frac, krylov_dim).index
    s = symmetric_jacobian(g, x)
    k = top_count(s.shape[0], top_frac)
    _, q = jnp.linalg.eigh(s)  # ascending eigenvalues
    proj = q[:, -k:].T @ x.reshape(-1)
    return jnp.sum(proj ** 2) / jnp.sum(x * x)


def msa_contribution_index(attn: dict, x: jnp.ndarray, top_frac: float = 0.02) -> jnp.ndarray:
    """``contribution_index`` with ``J_t`` the Jacobian of ``X -> MSA(X)`` (paper, sec. 6.3); ``x`` is ``(S, D)``."""
    return contribution_index(lambda z: msa(attn, z), x, top_frac)


def msa_cosine(attn: dict, x: jnp.ndarray) -> jnp.ndarray:
    """Cosine similarity between ``vec(MSA(X))`` and ``J_t x`` (how linear the pseudo-energy reading is).

    ``J_t x`` is one ``jax.jvp`` with tangent ``x``; no dense Jacobian. Leading batch axes are
    independent samples (attention never mixes them).

    Args:
      attn: attention parameters.
      x: ``(..., S, D)``.

    Returns:
      ``(...)``.
    """
    f = lambda z: msa(attn, z)
    y, jx = jax.jvp(f, (x,), (x,))
    dot = jnp.sum(y * jx, axis=(-2, -1))
    return dot / (jnp.linalg.norm(y, axis=(-2, -1)) * jnp.linalg.norm(jx, axis=(-2, -1)))
