"""Update maps of recurrent self-attention, their T-fold rollouts, and continuous-time fields.

Every discrete map has the signature ``step(params, x, c) -> x`` with ``x, c`` of shape
``(..., S, D)``; options (normalization, oscillator size) are keyword-only and static, so
``functools.partial(itrsa_step, norm="pi")`` is again such a step. The analysis modules
(``jacobian``, ``lyapunov``) take the closure ``lambda x: step(params, x, c)``.

  ItrSA (eq. 9):     X <- Norm(X + eta (C + MSA(X)))
  AKOrN (eqs. 7-8):  X <- Norm_N(X + eta (Omega X + Proj_N,X(C + MSA(X)))),  Norm_N = Pi_N by default
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jax import lax

from rsa_jax.attention import msa
from rsa_jax.ops import normalize, omega_rotation, proj

Step = Callable[[dict, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _check_state(x: jnp.ndarray, c: jnp.ndarray) -> None:
    if x.ndim < 2 or x.shape != c.shape:
        raise ValueError(f"state X and conditioning C must share a shape (..., S, D); got X {x.shape}, C {c.shape}")


def itrsa_step(params: dict, x: jnp.ndarray, c: jnp.ndarray, *, norm: str = "rmsnorm",
               n: int | None = None, fused: bool = False) -> jnp.ndarray:
    """One ItrSA update ``Norm(X + eta (C + MSA(X)))``.

    Args:
      params: ``{"attn": attention params, "eta": scalar, "gamma": (D,) (for rmsnorm)}``.
      x: ``(..., S, D)`` state.
      c: ``(..., S, D)`` conditioning.
      norm: ``"none"``, ``"pi"`` or ``"rmsnorm"``.
      n: oscillator size for the normalization (None: whole token).
      fused: use fused attention (see ``attention.msa``).

    Returns:
      ``(..., S, D)`` next state.
    """
    _check_state(x, c)
    y = x + params["eta"] * (c + msa(params["attn"], x, fused=fused))
    return normalize(y, norm, params.get("gamma"), n)


def akorn_step(params: dict, x: jnp.ndarray, c: jnp.ndarray, *, n: int = 4, norm: str = "pi",
               fused: bool = False) -> jnp.ndarray:
    """One AKOrN update ``Norm_N(X + eta (Omega X + Proj_N,X(C + MSA(X))))``.

    Args:
      params: ``{"attn", "eta": scalar, "omega": scalar or (D/2,), "gamma": (D,) (rmsnorm only)}``.
      x: ``(..., S, D)`` state, unit norm per oscillator.
      c: ``(..., S, D)`` conditioning.
      n: oscillator size N (even, divides D).
      norm: ``"pi"`` (AKOrN) or ``"rmsnorm"`` (oscillator-wise RMSNorm with learned gamma, Fig. 4).
      fused: use fused attention.

    Returns:
      ``(..., S, D)`` next state.
    """
    _check_state(x, c)
    y = c + msa(params["attn"], x, fused=fused)
    dx = omega_rotation(x, params["omega"]) + proj(x, y, n)
    return normalize(x + params["eta"] * dx, norm, params.get("gamma"), n)


def rollout(step: Step, params: dict, x0: jnp.ndarray, c: jnp.ndarray, steps: int, *,
            trajectory: bool = False):
    """Applies ``step`` ``steps`` times with ``lax.scan``.

    Args:
      step: ``step(params, x, c) -> x``.
      params: parameters passed to every step.
      x0: ``(..., S, D)`` initial state.
      c: ``(..., S, D)`` conditioning.
      steps: T, static.
      trajectory: also return the visited states.

    Returns:
      ``x_T`` of shape ``(..., S, D)``; with ``trajectory``, ``(x_T, xs)`` where ``xs`` is
      ``(T, ..., S, D)`` holding ``x_1, ..., x_T``.

    Examples:
      Any ``step(params, x, c) -> x`` works, e.g. ``itrsa_step``; here ``x <- a x + c`` from 0:

      >>> import jax.numpy as jnp
      >>> from rsa_jax.dynamics import rollout
      >>> step = lambda p, x, c: p["a"] * x + c
      >>> x0, c = jnp.zeros((3, 2), jnp.float32), jnp.ones((3, 2), jnp.float32)
      >>> xT, xs = rollout(step, {"a": 0.5}, x0, c, 4, trajectory=True)
      >>> xT.shape, xs.shape
      ((3, 2), (4, 3, 2))
      >>> [float(x[0, 0]) for x in xs]
      [1.0, 1.5, 1.75, 1.875]
    """
    def body(x, _):
        x = step(params, x, c)
        return x, (x if trajectory else None)

    x_final, xs = lax.scan(body, x0, None, length=steps)
    return (x_final, xs) if trajectory else x_final


def iterate(f: Callable[[jnp.ndarray], jnp.ndarray], x0: jnp.ndarray, steps: int) -> jnp.ndarray:
    """The T-fold composition ``f^T(x0)`` of a map ``f: x -> x`` (``lax.scan``)."""
    return lax.scan(lambda x, _: (f(x), None), x0, None, length=steps)[0]


# --- Continuous time ------------------------------------------------------------------------

def projected_sa_field(attn: dict, x: jnp.ndarray, beta: float | None = None) -> jnp.ndarray:
    """Eq. 3: ``dX_i/dt = Proj_{X_i}(SA(X)_i)`` (single head, no W^O, tokens on the sphere)."""
    return proj(x, msa(attn, x, beta))


def msa_field(attn: dict, x: jnp.ndarray, beta: float | None = None) -> jnp.ndarray:
    """``dX/dt = sum_h SA_h(X)`` (multi-head, no projection; use parameters without ``wo``)."""
    return msa(attn, x, beta)


def integrate(field: Callable[[jnp.ndarray], jnp.ndarray], x0: jnp.ndarray, dt: float, steps: int,
              method: str = "rk4") -> jnp.ndarray:
    """Integrates ``dx/dt = field(x)`` with explicit Euler or classical RK4.

    Args:
      field: ``x -> dx/dt``.
      x0: initial state, any shape.
      dt: step size.
      steps: number of steps, static.
      method: ``"euler"`` or ``"rk4"``.

    Returns:
      ``(steps + 1, *x0.shape)`` trajectory including ``x0``.
    """
    if method == "euler":
        advance = lambda x: x + dt * field(x)
    elif method == "rk4":
        def advance(x):
            k1 = field(x)
            k2 = field(x + 0.5 * dt * k1)
            k3 = field(x + 0.5 * dt * k2)
            k4 = field(x + dt * k3)
            return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    else:
        raise ValueError(f"method must be 'euler' or 'rk4', got {method!r}")
    def body(x, _):
        x = advance(x)
        return x, x

    _, xs = lax.scan(body, x0, None, length=steps)
    return jnp.concatenate([x0[None], xs], axis=0)
