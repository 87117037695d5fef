"""Multi-head self-attention as a pure function of a parameter dict, and its parametrizations.

Parameters are a plain dict with per-head blocks (H heads, head width D_H, value width D_V):

  ``wq, wk``: ``(H, D, D_H)``  -- W^Q_h, W^K_h (the h-th column blocks of W^Q, W^K)
  ``wv``:     ``(H, D, D_V)``  -- W^V_h
  ``wo``:     ``(H, D_V, D)``  -- W^O_h, the h-th row block of W^O (optional)
  ``bq, bk``: ``(H, D_H)``, ``bv``: ``(H, D_V)``, ``bo``: ``(D,)`` (all optional)
  ``gta``:    ``(S, D_H/2)`` per-token rotation angles (optional; GTA positions, see ``sa_heads``)
  ``gta_mats``: ``(4, S, D_H/2, 2, 2)`` per-token 2x2 matrices for q, k, v and the output (optional;
              the official AKOrN code's GTA, learned unconstrained; see ``sa_heads``)

  SA_h(X) = softmax(beta (X W^Q_h + b^Q_h)(X W^K_h + b^K_h)^T) (X W^V_h + b^V_h)
  MSA(X)  = sum_h SA_h(X) W^O_h + b^O       (without ``wo``: sum_h SA_h(X), needs D_V = D)

with ``beta = 1 / sqrt(D_H)`` unless given. Standard MSA has D_V = D_H = D / H; the energy-based
forms of Props. 4.1/4.2 use D_V = D and no W^O. Inputs may carry leading batch axes ``(..., S, D)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Params = dict


def init_attention(key: jax.Array, d: int, heads: int, *, bias: bool = False, out_proj: bool = True,
                   dtype=jnp.float32, std: float | None = None, dist: str = "normal") -> Params:
    """Random MSA parameters with ``D_H = D_V = D / heads``, entries N(0, std^2).

    ``dist="torch"`` draws as PyTorch's default ``nn.Linear`` / 1x1 ``nn.Conv2d`` initialization
    does (the official AKOrN code's ``W_qkv``, ``W_o``): weights *and* biases U(-1/sqrt(D), 1/sqrt(D));
    ``std`` must then be None.

    Args:
      key: PRNG key.
      d: model width D.
      heads: number of heads H, must divide D.
      bias: include ``bq, bk, bv, bo`` (zeros; drawn like the weights with ``dist="torch"``).
      out_proj: include ``wo``; without it D_V = D.
      dtype: parameter dtype.
      std: weight scale; default ``1 / sqrt(D)``.
      dist: ``"normal"`` or ``"torch"`` (see above).

    Returns:
      The parameter dict described in the module docstring.
    """
    if heads <= 0 or d % heads:
        raise ValueError(f"heads={heads} must divide D={d}")
    if dist not in ("normal", "torch") or (dist == "torch" and std is not None):
        raise ValueError(f"dist must be 'normal' or 'torch' (the latter without std); got {dist!r}, std={std}")
    dh = d // heads
    dv = dh if out_proj else d
    std = 1.0 / math.sqrt(d) if std is None else std
    if dist == "torch":
        kq, kk, kv, ko, kb = jax.random.split(key, 5)
        draw = lambda k, shape: torch_uniform(k, shape, d, dtype)   # fan_in = D for W_qkv and W_o
    else:   # the draws of every earlier version
        kq, kk, kv, ko = jax.random.split(key, 4)
        draw = lambda k, shape: std * jax.random.normal(k, shape, dtype)
    p = {"wq": draw(kq, (heads, d, dh)), "wk": draw(kk, (heads, d, dh)), "wv": draw(kv, (heads, d, dv))}
    if out_proj:
        p["wo"] = draw(ko, (heads, dv, d))
    if bias:
        shapes = {"bq": (heads, dh), "bk": (heads, dh), "bv": (heads, dv)} | ({"bo": (d,)} if out_proj else {})
        if dist == "torch":
            p |= {k: draw(kk_, shape) for (k, shape), kk_ in zip(shapes.items(), jax.random.split(kb, 4))}
        else:
            p |= {k: jnp.zeros(shape, dtype) for k, shape in shapes.items()}
    return p


def torch_uniform(key: jax.Array, shape, fan_in: int, dtype=jnp.float32) -> jnp.ndarray:
    """PyTorch's default ``nn.Linear`` / ``nn.Conv2d`` draw for weights and biases: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def check_attention(params: Params, x: jnp.ndarray) -> None:
    """Raises ValueError naming the shapes when ``params`` and ``x`` (..., S, D) do not fit."""
    shapes = {k: tuple(v.shape) for k, v in params.items() if hasattr(v, "shape")}
    if x.ndim < 2:
        raise ValueError(f"X must have shape (..., S, D); got {x.shape}")
    for k in ("wq", "wk", "wv"):
        if k not in params or params[k].ndim != 3:
            raise ValueError(f"attention params need {k} of shape (H, D, D_H); got {shapes}")
    h, d, dh = params["wq"].shape
    if x.shape[-1] != d:
        raise ValueError(f"X has D={x.shape[-1]} (shape {x.shape}) but W^Q expects D={d} (shape {(h, d, dh)})")
    if params["wk"].shape != (h, d, dh) or params["wv"].shape[:2] != (h, d):
        raise ValueError(f"inconsistent attention shapes (H={h}, D={d}, D_H={dh}): {shapes}")
    dv = params["wv"].shape[2]
    if "wo" in params:
        if params["wo"].shape != (h, dv, d):
            raise ValueError(f"wo must have shape (H, D_V, D) = {(h, dv, d)}; got {shapes['wo']}")
    elif dv != d:
        raise ValueError(f"without wo the heads are summed directly, so D_V must equal D={d}; got D_V={dv}")
    if "gta" in params and (params["gta"].shape != (x.shape[-2], dh // 2) or dv != dh):
        raise ValueError(f"gta angles must have shape (S, D_H/2) = {(x.shape[-2], dh // 2)} with D_V = D_H; "
                         f"got {shapes['gta']} and D_V={dv}")
    if "gta_mats" in params and (params["gta_mats"].shape != (4, x.shape[-2], dh // 2, 2, 2) or dv != dh):
        raise ValueError(f"gta_mats must have shape (4, S, D_H/2, 2, 2) = {(4, x.shape[-2], dh // 2, 2, 2)} with "
                         f"D_V = D_H; got {shapes['gta_mats']} and D_V={dv}")


def _beta(params: Params, beta: float | None) -> float:
    return 1.0 / math.sqrt(params["wq"].shape[-1]) if beta is None else beta


def _qkv(params: Params, x: jnp.ndarray):
    q = jnp.einsum("...sd,hde->...hse", x, params["wq"])
    k = jnp.einsum("...sd,hde->...hse", x, params["wk"])
    v = jnp.einsum("...sd,hde->...hse", x, params["wv"])
    if "bq" in params:
        q, k, v = (a + b[:, None, :] for a, b in ((q, params["bq"]), (k, params["bk"]), (v, params["bv"])))
    if "gta" in params:  # GTA: express q, k, v in each token's own frame, rho_i^T a_i
        q, k, v = (rotate_pairs(a, -params["gta"]) for a in (q, k, v))
    if "gta_mats" in params:  # official AKOrN GTA: free 2x2 matrices per token and channel pair
        q, k, v = (mul_pairs(a, m) for a, m in zip((q, k, v), params["gta_mats"][:3]))
    return q, k, v


def mul_pairs(a: jnp.ndarray, mats: jnp.ndarray) -> jnp.ndarray:
    """Multiplies channel pairs ``(2p, 2p+1)`` of each token by a per-token 2x2 matrix.

    Args:
      a: ``(..., S, E)`` with even E.
      mats: ``(S, E // 2, 2, 2)``.

    Returns:
      ``(..., S, E)``: pair ``p`` of token ``s`` becomes ``mats[s, p] @ (a[2p], a[2p+1])``.
    """
    ap = a.reshape(*a.shape[:-1], -1, 2)
    return jnp.einsum("spij,...spj->...spi", mats, ap).reshape(a.shape)


def rotate_pairs(a: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
    """Rotates channel pairs ``(2p, 2p+1)`` of each token by per-token angles.

    Args:
      a: ``(..., S, E)`` with even E.
      angles: ``(S, E // 2)``.

    Returns:
      ``(..., S, E)``: ``(a0, a1) -> (cos t a0 - sin t a1, sin t a0 + cos t a1)``.
    """
    ap = a.reshape(*a.shape[:-1], -1, 2)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    out = jnp.stack([cos * ap[..., 0] - sin * ap[..., 1], sin * ap[..., 0] + cos * ap[..., 1]], axis=-1)
    return out.reshape(a.shape)


def attention_weights(params: Params, x: jnp.ndarray, beta: float | None = None) -> jnp.ndarray:
    """Softmax attention matrices.

    Args:
      params: attention parameters.
      x: ``(..., S, D)``.
      beta: inverse temperature, default ``1 / sqrt(D_H)``.

    Returns:
      ``(..., H, S, S)``, rows summing to one.
    """
    check_attention(params, x)
    q, k, _ = _qkv(params, x)
    return jax.nn.softmax(_beta(params, beta) * jnp.einsum("...hse,...hte->...hst", q, k), axis=-1)


def sa_heads(params: Params, x: jnp.ndarray, beta: float | None = None, *, fused: bool = False) -> jnp.ndarray:
    """Per-head outputs ``SA_h(X)``.

    With a ``gta`` entry ``(S, D_H/2)`` of per-token angles (GTA positional encoding, RoPE-like),
    ``SA_h(X)_i = rho_i sum_j a_ij rho_j^T v_j`` with logits ``q_i^T rho_i rho_j^T k_j``. With a
    ``gta_mats`` entry ``(4, S, D_H/2, 2, 2)`` = ``(M^Q, M^K, M^V, M^O)`` (the official AKOrN code's
    form), ``SA_h(X)_i = M^O_i sum_j a_ij M^V_j v_j`` with logits ``(M^Q_i q_i)^T (M^K_j k_j)``.

    Args:
      params: attention parameters.
      x: ``(..., S, D)``.
      beta: inverse temperature, default ``1 / sqrt(D_H)``.
      fused: use ``jax.nn.dot_product_attention`` (cuDNN flash attention on GPUs) for the
        softmax-weighted sum; same values up to rounding. Requires D_V = D_H.

    Returns:
      ``(..., H, S, D_V)``.
    """
    check_attention(params, x)
    q, k, v = _qkv(params, x)
    if fused:
        to_bshe = lambda a: jnp.swapaxes(a.reshape(-1, *a.shape[-3:]), -3, -2)  # (B, S, H, E)
        # jax's XLA implementation promotes the logits to at least float32 on purpose (a float64
        # input stays float64); under jax_numpy_dtype_promotion="strict" that promotion would raise
        with jax.numpy_dtype_promotion("standard"):
            out = jax.nn.dot_product_attention(to_bshe(q), to_bshe(k), to_bshe(v), scale=_beta(params, beta))
        out = jnp.swapaxes(out, -3, -2).reshape(v.shape)
    else:
        a = jax.nn.softmax(_beta(params, beta) * jnp.einsum("...hse,...hte->...hst", q, k), axis=-1)
        out = jnp.einsum("...hst,...htv->...hsv", a, v)
    if "gta_mats" in params:
        return mul_pairs(out, params["gta_mats"][3])
    return rotate_pairs(out, params["gta"]) if "gta" in params else out


def msa(params: Params, x: jnp.ndarray, beta: float | None = None, *, fused: bool = False) -> jnp.ndarray:
    """Multi-head self-attention ``MSA(X) = sum_h SA_h(X) W^O_h + b^O``.

    Args:
      params: attention parameters.
      x: ``(..., S, D)``.
      beta: inverse temperature, default ``1 / sqrt(D_H)``.
      fused: see ``sa_heads``.

    Returns:
      ``(..., S, D)``.
    """
    heads = sa_heads(params, x, beta, fused=fused)
    if "wo" not in params:
        return heads.sum(axis=-3)
    y = jnp.einsum("...hsv,hvd->...sd", heads, params["wo"])
    return y + params["bo"] if "bo" in params else y


def full_matrices(params: Params) -> dict:
    """Concatenated D x D-style matrices: ``W^Q, W^K, W^V`` ``(D, H*D_H)`` and ``W^O`` ``(H*D_V, D)``."""
    cat_cols = lambda w: jnp.concatenate(list(w), axis=-1)
    out = {k.upper(): cat_cols(params[k]) for k in ("wq", "wk", "wv")}
    if "wo" in params:
        out["WO"] = jnp.concatenate(list(params["wo"]), axis=0)
    return out


def with_spectral_norms(params: Params, *, wv_norm: float | None = None, wo_norm: float | None = None) -> Params:
    """``params`` with all ``W^V_h`` (all ``W^O_h``) scaled by one factor so that the concatenated
    ``W^V`` ``(D, H*D_V)`` (``W^O`` ``(H*D_V, D)``) has the given spectral norm (None: unchanged).

    The Lyapunov sweeps over ``||W^V||`` and ``||W^O||`` (appendix B.3) use it. The norm is taken in
    the parameters' precision (at least float32, which the SVD needs) and the result keeps their dtype.
    """
    full = full_matrices(params)
    out = dict(params)
    for name, target in (("wv", wv_norm), ("wo", wo_norm)):
        if target is None:
            continue
        if name not in params:
            raise ValueError(f"cannot set the norm of {name}: the parameters have none")
        w = full[name.upper()]
        wide = w.dtype if jnp.finfo(w.dtype).bits >= 32 else jnp.float32
        sigma = jnp.linalg.norm(w.astype(wide), ord=2)
        out[name] = params[name] * (target / sigma).astype(params[name].dtype)
    return out


# --- Parametrizations with an energy (Props. 4.1, 4.2) -------------------------------------

def _random_orthonormal(key: jax.Array, d: int, k: int, dtype) -> jnp.ndarray:
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, k), dtype))
    return q * jnp.sign(jnp.diagonal(r))


def symmetric_single_head(key: jax.Array, d: int, *, scale: float = 1.0, dtype=jnp.float32) -> Params:
    """Single-head weights for which E_single decreases along eq. 3 (Prop. 4.1).

    ``W^K = W^Q P`` with P symmetric, so ``A = W^Q W^K^T = W^Q P W^Q^T`` is symmetric, and
    ``W^V = (A + A^T) / 2 = A``; no W^O. The proof (appendix A.2, "A = A^T") uses the symmetry of
    A itself, not only of W^V: see ``tests/test_energy.py`` for a counter-example without it.

    Args:
      key: PRNG key.
      d: model width D (= D_H = D_V).
      scale: multiplies W^Q (the energy landscape sharpness grows with scale^2).
      dtype: parameter dtype.

    Returns:
      Attention parameters with ``wq, wk, wv`` of shape ``(1, D, D)``.
    """
    kq, kp = jax.random.split(key)
    wq = scale * jax.random.normal(kq, (d, d), dtype) / math.sqrt(d)
    p = jax.random.normal(kp, (d, d), dtype) / math.sqrt(d)
    wk = wq @ ((p + p.T) / 2)
    a = wq @ wk.T
    return {"wq": wq[None], "wk": wk[None], "wv": ((a + a.T) / 2)[None]}


def symmetric_multi_head(key: jax.Array, d: int, heads: int, *, scale: float = 1.0, dtype=jnp.float32) -> Params:
    """Multi-head weights for which E_multi decreases along dX/dt = sum_h SA_h(X) (Prop. 4.2).

    Orthonormal, mutually orthogonal blocks ``U_{1h}, U_{2h}`` ``(D, D/(2H))`` (one QR of a
    D x D Gaussian); ``W^Q_h = s [U_1h, U_2h]``, ``W^K_h = s [U_2h, U_1h]``, so
    ``A_h = W^Q_h W^K_h^T = s^2 (U_1h U_2h^T + U_2h U_1h^T)`` is symmetric with ``A_h A_h' = 0``
    for ``h != h'``, and ``W^V_h = A_h``; no W^O.

    Args:
      key: PRNG key.
      d: model width D; ``2 * heads`` must divide it.
      heads: H.
      scale: s above.
      dtype: parameter dtype.

    Returns:
      Attention parameters: ``wq, wk`` ``(H, D, D/H)``, ``wv`` ``(H, D, D)``.
    """
    if d % (2 * heads):
        raise ValueError(f"2 * heads = {2 * heads} must divide D = {d}")
    m = d // (2 * heads)
    u = _random_orthonormal(key, d, d, dtype).reshape(d, heads, 2, m)
    u1, u2 = jnp.moveaxis(u[:, :, 0], 1, 0), jnp.moveaxis(u[:, :, 1], 1, 0)  # (H, D, m)
    wq = scale * jnp.concatenate([u1, u2], axis=-1)
    wk = scale * jnp.concatenate([u2, u1], axis=-1)
    a = jnp.einsum("hde,hfe->hdf", wq, wk)
    return {"wq": wq, "wk": wk, "wv": (a + jnp.swapaxes(a, 1, 2)) / 2}


# --- Orthogonal parametrization of W^V, W^O (paired with R_E-multi) -----------------------------

def orthogonal(a: jnp.ndarray, method: str = "cayley") -> jnp.ndarray:
    """Maps free parameters ``(..., D, D)`` to orthogonal matrices ``(..., D, D)``, differentiably.

    Methods:
      ``"cayley"`` (default): ``A = a - a^T`` (skew), ``Q = (I + A)^{-1} (I - A)``. Smooth and
        surjective onto SO(D) minus the matrices with eigenvalue -1; ``a = 0`` gives ``I`` and
        ``orthogonal(-a) = orthogonal(a)^T``. One D x D solve.
      ``"qr"``: Q of ``a = QR`` with the signs fixed so that ``diag(R) > 0`` (unique; covers all of
        O(D)); differentiable where ``a`` has full rank, gradients scale like ``1/sigma_min(a)``.

    Args:
      a: free parameters.
      method: ``"cayley"`` or ``"qr"``.

    Returns:
      ``Q`` with ``Q^T Q = I``.
    """
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"orthogonal needs square matrices; got {a.shape}")
    if method == "cayley":
        skew = a - jnp.swapaxes(a, -1, -2)
        eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        return jnp.linalg.solve(eye + skew, eye - skew)
    if method == "qr":
        q, r = jnp.linalg.qr(a)
        sign = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(a.dtype)
        return q * sign[..., None, :]
    raise ValueError(f"method must be 'cayley' or 'qr'; got {method!r}")


def split_value_heads(w: jnp.ndarray, heads: int) -> jnp.ndarray:
    """Full ``W^V`` ``(D, H*D_V)`` -> per-head column blocks ``(H, D, D_V)`` (inverse of ``full_matrices``)."""
    d, hv = w.shape
    if hv % heads:
        raise ValueError(f"heads={heads} must divide the column count of {w.shape}")
    return jnp.moveaxis(w.reshape(d, heads, hv // heads), 1, 0)


def split_output_heads(w: jnp.ndarray, heads: int) -> jnp.ndarray:
    """Full ``W^O`` ``(H*D_V, D)`` -> per-head row blocks ``(H, D_V, D)`` (inverse of ``full_matrices``)."""
    hv, d = w.shape
    if hv % heads:
        raise ValueError(f"heads={heads} must divide the row count of {w.shape}")
    return w.reshape(heads, hv // heads, d)


def orthogonal_value_output(free_v: jnp.ndarray, free_o: jnp.ndarray, heads: int,
                            method: str = "cayley") -> dict:
    """``{"wv": (H, D, D/H), "wo": (H, D/H, D)}`` from free ``(D, D)`` parameters, with orthogonal full W^V, W^O.

    Merge into the attention dict: ``attn | orthogonal_value_output(a_v, a_o, H)``. With
    ``free_o = -free_v`` (Cayley) ``W^O = W^V^T`` and every ``W^V_h W^O_h`` is a symmetric
    projector, so ``r_e_multi = 0``.
    """
    return {"wv": split_value_heads(orthogonal(free_v, method), heads),
            "wo": split_output_heads(orthogonal(free_o, method), heads)}
