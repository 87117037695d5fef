"""Energies of self-attention dynamics (appendix A.2, A.3) and AKOrN's (pseudo-)energy.

All take attention parameters in the layout of ``rsa_jax.attention`` and states ``(..., S, D)``
and return one value per leading index ``(...)``. Biases are ignored by the exponential
energies, which are defined for bias-free attention.
"""

from __future__ import annotations

import jax.numpy as jnp

from rsa_jax.attention import _beta, check_attention, msa


def _head_logits(attn: dict, x: jnp.ndarray, beta: float | None) -> jnp.ndarray:
    check_attention(attn, x)
    q = jnp.einsum("...sd,hde->...hse", x, attn["wq"])
    k = jnp.einsum("...sd,hde->...hse", x, attn["wk"])
    return _beta(attn, beta) * jnp.einsum("...hse,...hte->...hst", q, k)


def e_multi(attn: dict, x: jnp.ndarray, beta: float | None = None) -> jnp.ndarray:
    """``E_multi(X) = -sum_h sum_{i,j} exp(beta X_i^T W^Q_h W^K_h^T X_j)`` (eq. 46).

    Args:
      attn: attention parameters (``wq, wk`` used).
      x: ``(..., S, D)``.
      beta: inverse temperature, default ``1 / sqrt(D_H)``.

    Returns:
      ``(...)``.
    """
    return -jnp.exp(_head_logits(attn, x, beta)).sum(axis=(-3, -2, -1))


def e_single(attn: dict, x: jnp.ndarray, beta: float | None = None) -> jnp.ndarray:
    """``E_single(X) = -sum_{i,j} exp(beta X_i^T W^Q W^K^T X_j)`` (eq. 30); needs H = 1."""
    if attn["wq"].shape[0] != 1:
        raise ValueError(f"E_single is defined for one head; W^Q has shape {attn['wq'].shape}")
    return e_multi(attn, x, beta)


def pseudo_energy(attn: dict, x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """``E_pseudo(X) = -Tr(X^T (C + MSA(X))) = -sum X (.) (C + MSA(X))`` (sec. 6.3).

    This is also the energy AKOrN uses for voting over random initial states.

    Args:
      attn: attention parameters.
      x: ``(..., S, D)`` state.
      c: ``(..., S, D)`` conditioning.

    Returns:
      ``(...)``.
    """
    return -jnp.sum(x * (c + msa(attn, x)), axis=(-2, -1))


akorn_energy = pseudo_energy
