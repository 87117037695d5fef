"""Training penalties: weight spectrum (R_Spec), state-Jacobian spectrum, energy conditions (R_E).

All penalties are pure functions of parameter dicts (layout of ``rsa_jax.attention``) and an
explicit state pytree, so they jit, vmap and differentiate like any loss term. Nothing here
imports a model or Flax; the adapter classes at the bottom use duck typing only.

Weight-spectrum penalty (the paper's spectral regularization, Fig. 5; Lewandowski et al. 2025)::

    R_Spec = sum_{W in W^Q, W^K, W^V, W^O} (sigma_max(W)^2 - 1)^2 + sum_{b in b^Q, b^K, b^V, b^O} ||b||^4

  Which matrices count is the ``layout`` (the appendix does not settle it, and a lambda means
  different things under each; record it with the run, ``TrainConfig.spec_layout``):

  * ``"separate"`` (default): the four *full* matrices with the heads concatenated
    (``W^Q = [W^Q_1, ..., W^Q_H]`` ``(D, H*D_H)``, ``W^O`` the stack of the row blocks
    ``(H*D_V, D)``) and the four biases: the paper's "SA weights" W^Q, W^K, W^V, W^O taken apart.
  * ``"fused"``: the layers as the AKOrN/PyTorch code stores them: one ``W_qkv = [W^Q, W^K, W^V]``
    ``(D, 2 H D_H + H D_V)`` and ``W^O``; biases ``||[b^Q, b^K, b^V]||^4 + ||b^O||^4``.
  * ``"per_head"``: every head block separately (4H terms, ``sum_h ||b_h||^4`` for per-head biases).

  ``gta`` angles and other entries are ignored.
  ``sigma_max`` comes from power iteration whose vectors ``u, v`` live in a ``SpecState`` and are
  warm-started across calls; the value ``sigma = u^T W v`` uses ``stop_gradient(u), stop_gradient(v)``
  so ``d sigma / dW = u v^T`` (Miyato et al. 2018 spectral normalization), which equals the
  true ``d sigma_max / dW = u_1 v_1^T`` once the iteration has converged.

State-Jacobian penalty: ``mean_{t, b} (||J_t||_2 - target)^2`` with ``J_t = d step(x_t) / d x_t``
  at sampled steps of a trajectory, by matrix-free power iteration (jvp + vjp) on stopped
  parameters, then ``sigma = ||J_t v||`` re-evaluated with live parameters (one ``jax.jvp``), so
  the gradient w.r.t. the parameters is ``u^T (dJ_t) v``, again exact at convergence.

Energy penalties (appendix B.2, eq. 88; the conditions of Props. 4.1/4.2, appendix A.2/A.3):
  ``R_E-single = ||W^V W^O - (W^V W^O)^T||_F^2`` (H = 1) and
  ``R_E-multi = sum_h ||W^V_h W^O_h - (W^V_h W^O_h)^T||_F^2`` (each ``W^V_h W^O_h`` is D x D),
  with ``rsa_jax.attention.orthogonal`` (re-exported here) to keep the full W^V, W^O orthogonal.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from rsa_jax.attention import (orthogonal, orthogonal_value_output, split_output_heads,  # noqa: F401 (re-exported)
                               split_value_heads)

_EPS = 1e-12
WEIGHTS = ("wq", "wk", "wv", "wo")
BIASES = ("bq", "bk", "bv", "bo")
SPEC_LAYOUTS = ("separate", "fused", "per_head")
FUSED = "wqkv"  # key of the fused W_qkv in a "fused" SpecState


def _normalize(w: jnp.ndarray) -> jnp.ndarray:
    """Unit vectors along the last axis (zero stays zero)."""
    return w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + _EPS)


# --- Weight-spectrum penalty R_Spec -----------------------------------------------------------

class SpecState(NamedTuple):
    """Power-iteration vectors of ``spec_penalty``, one pair per penalized matrix.

    Attributes:
      u: ``{name: (m,)}`` left singular vector estimates (``(H, m)`` per head).
      v: ``{name: (n,)}`` right singular vector estimates (``(H, n)`` per head).

    ``name`` is the attention key (``"wq", "wk", "wv", "wo"``, or ``"wqkv", "wo"`` when fused); the
    layout is read off the state (:func:`spec_layout`), so it needs no static field.
    """

    u: dict
    v: dict


def spec_layout(state: SpecState) -> str:
    """The layout a ``SpecState`` was made for: ``"fused"``, ``"per_head"`` or ``"separate"``."""
    if FUSED in state.u:
        return "fused"
    return "per_head" if any(u.ndim == 2 for u in state.u.values()) else "separate"


def _check_layout(layout: str) -> None:
    if layout not in SPEC_LAYOUTS:
        raise ValueError(f"spec layout must be one of {SPEC_LAYOUTS}; got {layout!r}")


def spec_matrices(attn: dict, layout: str = "separate") -> dict:
    """The matrices R_Spec penalizes.

    Args:
      attn: attention parameters.
      layout: ``"separate"``, ``"fused"`` or ``"per_head"`` (module docstring).

    Returns:
      ``{name: matrix}``: ``separate``: the present ``wq, wk, wv, wo`` as full matrices ``W^Q, W^K``
      ``(D, H*D_H)``, ``W^V`` ``(D, H*D_V)``, ``W^O`` ``(H*D_V, D)`` (as ``attention.full_matrices``);
      ``fused``: ``wqkv`` ``(D, 2 H D_H + H D_V)`` (the present ones of W^Q, W^K, W^V side by side)
      and ``wo``; ``per_head``: the stored ``(H, ., .)`` blocks.
    """
    _check_layout(layout)
    out = {}
    for name in WEIGHTS:
        if name not in attn:
            continue
        w = attn[name]
        if layout == "per_head":
            out[name] = w
        elif name == "wo":
            out[name] = w.reshape(-1, w.shape[-1])  # stack row blocks: (H*D_V, D)
        else:
            h, d, e = w.shape
            out[name] = jnp.moveaxis(w, 0, 1).reshape(d, h * e)  # concatenate column blocks
    if layout == "fused":
        qkv = [out.pop(name) for name in ("wq", "wk", "wv") if name in out]
        out = {FUSED: jnp.concatenate(qkv, axis=1), **out}
    return out


def spec_biases(attn: dict, layout: str = "separate") -> jnp.ndarray:
    """The bias part of R_Spec: ``sum_b ||b||^4`` over the present ``bq, bk, bv, bo``.

    ``fused`` takes ``[b^Q, b^K, b^V]`` as one vector; ``per_head`` sums ``||b_h||^4`` over heads
    for per-head ``(H, e)`` biases.
    """
    _check_layout(layout)
    sq = {name: jnp.sum(attn[name] * attn[name], axis=-1) for name in BIASES if name in attn}  # ||b_h||^2 or ||b||^2
    dtype = jnp.result_type(*sq.values()) if sq else jnp.float32
    total = jnp.zeros((), dtype)
    if layout == "fused":
        qkv = [jnp.sum(sq.pop(name)) for name in ("bq", "bk", "bv") if name in sq]
        total = total + sum(qkv, jnp.zeros((), dtype)) ** 2
    for v in sq.values():
        total = total + (jnp.sum(v ** 2) if layout == "per_head" else jnp.sum(v) ** 2)
    return total


def spec_init(attn: dict, key: jax.Array, *, layout: str = "separate") -> SpecState:
    """Random unit starting vectors for ``spec_penalty``.

    Args:
      attn: attention parameters (shapes and dtype are read from them).
      key: PRNG key.
      layout: which matrices are penalized (module docstring).

    Returns:
      A ``SpecState``.
    """
    mats = spec_matrices(attn, layout)
    shapes = {}
    for name, w in sorted(mats.items()):
        shapes["u", name], shapes["v", name] = w.shape[:-1], w.shape[:-2] + w.shape[-1:]
    sizes = [math.prod(sh) for sh in shapes.values()]
    dtype = jnp.result_type(*mats.values()) if mats else jnp.float32
    flat = jax.random.normal(key, (sum(sizes),), dtype)  # one draw: one PRNG compile when run eagerly
    offsets = [0, *itertools.accumulate(sizes)]
    out = {"u": {}, "v": {}}
    for (kind, name), sh, lo, hi in zip(shapes, shapes.values(), offsets, offsets[1:]):
        out[kind][name] = _normalize(flat[lo:hi].reshape(sh).astype(mats[name].dtype))
    return SpecState(out["u"], out["v"])


def power_sigma(w: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray, num_iters: int = 1):
    """Top singular value of ``w`` by warm-started power iteration, differentiable in ``w`` only.

    Runs ``num_iters`` rounds of ``v <- W^T u / ||.||``, ``u <- W v / ||.||`` on ``stop_gradient(w)``,
    then returns ``sigma = u^T W v`` with ``u, v`` stopped, so ``d sigma / dW = u v^T``.

    Args:
      w: ``(..., m, n)`` (leading axes: independent matrices, e.g. heads).
      u: ``(..., m)`` starting left vectors.
      v: ``(..., n)`` starting right vectors (used only when ``num_iters = 0``).
      num_iters: power-iteration rounds (static, >= 0).

    Returns:
      ``(sigma (...,), u_new, v_new)``; ``sigma`` underestimates ``sigma_max`` before convergence.
    """
    w0 = lax.stop_gradient(w)

    def body(_, uv):
        u_, _ = uv
        v_ = _normalize(jnp.einsum("...mn,...m->...n", w0, u_))
        return _normalize(jnp.einsum("...mn,...n->...m", w0, v_)), v_

    u, v = lax.fori_loop(0, num_iters, body, (lax.stop_gradient(u), lax.stop_gradient(v)))
    u, v = lax.stop_gradient(u), lax.stop_gradient(v)
    return jnp.einsum("...m,...mn,...n->...", u, w, v), u, v


def spec_penalty(attn: dict, state: SpecState, num_iters: int = 1):
    """``R_Spec = sum_W (sigma_max(W)^2 - 1)^2 + sum_b ||b||^4`` with warm-started power iteration.

    Args:
      attn: attention parameters (``wq, wk, wv`` and optionally ``wo, bq, bk, bv, bo``).
      state: from ``spec_init`` (it fixes the layout: separate, fused or per-head) or an earlier call.
      num_iters: power-iteration rounds this call (1 per training step, as in spectral norm).

    Returns:
      ``(value, new_state)``; ``new_state`` carries no gradient.
    """
    layout = spec_layout(state)
    mats = spec_matrices(attn, layout)
    if set(mats) != set(state.u):
        raise ValueError(f"SpecState holds {sorted(state.u)} but the attention has {sorted(mats)}")
    total = spec_biases(attn, layout).astype(jnp.result_type(*mats.values()))
    new_u, new_v = {}, {}
    for name, w in mats.items():
        sigma, new_u[name], new_v[name] = power_sigma(w, state.u[name], state.v[name], num_iters)
        total = total + jnp.sum((sigma ** 2 - 1.0) ** 2)
    return total, SpecState(new_u, new_v)


# --- State-Jacobian spectral penalty -------------------------------------------------------------

class JacobianPenaltyState(NamedTuple):
    """Power-iteration vectors of ``jacobian_penalty``.

    Attributes:
      v: ``(K, *batch, S, D)`` unit right-singular-vector estimates (unit per sample), one slot per
        sampled step; slot ``k`` warm-starts whichever step is the k-th sampled one.
      key: PRNG key for drawing steps (advanced every call) and for re-drawing ``v``.
      sigma: ``(K, *batch)`` the last call's ``||J_t||_2`` estimates (for logging).
      steps: ``(K,)`` int32, the steps the last call penalized (non-negative indices into ``xs``).
    """

    v: jnp.ndarray
    key: jax.Array
    sigma: jnp.ndarray
    steps: jnp.ndarray


def jacobian_penalty_init(like_x, key: jax.Array, num_samples: int = 1) -> JacobianPenaltyState:
    """Random unit starting vectors for ``jacobian_penalty``.

    Args:
      like_x: an array (or ``jax.ShapeDtypeStruct``) shaped like ONE state ``x_t``: ``(*batch, S, D)``,
        e.g. ``xs[0]`` or the conditioning ``c``.
      key: PRNG key.
      num_samples: K, the number of steps penalized per call.

    Returns:
      A ``JacobianPenaltyState``.
    """
    kv, kk = jax.random.split(key)
    shape = (num_samples, *like_x.shape)
    v = jax.random.normal(kv, shape, like_x.dtype)
    v = v / (jnp.sqrt(jnp.sum(v * v, axis=(-2, -1), keepdims=True)) + _EPS)
    return JacobianPenaltyState(v, kk, jnp.zeros(shape[:-2], like_x.dtype), jnp.zeros((num_samples,), jnp.int32))


def _pick_steps(steps, t: int, k: int, key: jax.Array):
    """Indices ``(K,)`` into the trajectory and the advanced key."""
    key, sub = jax.random.split(key)
    if steps is not None:
        idx = jnp.asarray(steps, jnp.int32).reshape(-1)
        if idx.shape[0] != k:
            raise ValueError(f"{idx.shape[0]} steps given but the state has K={k} vector slots")
        return jnp.where(idx < 0, idx + t, idx), key
    if k > t:
        raise ValueError(f"cannot sample K={k} distinct steps from a trajectory of T={t}")
    if k == t:
        return jnp.arange(t, dtype=jnp.int32), key
    return jnp.sort(jax.random.choice(sub, t, (k,), replace=False)).astype(jnp.int32), key


def jacobian_penalty(step: Callable, params, xs: jnp.ndarray, c: jnp.ndarray, state: JacobianPenaltyState, *,
                     target: float = 1.0, num_iters: int = 1, steps: Sequence[int] | jnp.ndarray | None = None,
                     stop_state_grad: bool = True):
    """``mean_{k, b} (||d step(params, x, c_b)/dx at x_{t_k, b}||_2 - target)^2``.

    Every sample ``b`` of the batch has its own Jacobian ``(S*D, S*D)`` (the map is vmapped over
    the batch, so ``step`` may be any per-example map); the penalty averages over the K sampled
    steps and the batch. Per sample: ``num_iters`` rounds of ``v <- J^T J v / ||.||`` with
    ``jax.linearize``/``linear_transpose`` on stopped parameters, then ``sigma = ||J v||`` from a
    ``jax.jvp`` with the live parameters: the gradient is ``u^T (dJ/dparams) v`` with
    ``u = Jv/||Jv||``, i.e. that of ``sigma_max`` once ``v`` has converged (warm starts across
    calls do the converging, as in spectral normalization).

    Args:
      step: ``step(params, x, c) -> x`` (e.g. ``itrsa_step``), ``x, c`` of shape ``(S, D)``.
      params: its parameters (differentiated).
      xs: ``(T, *batch, S, D)`` visited states; ``J_t`` is evaluated at ``xs[t]`` (for
        ``dynamics.rollout(..., trajectory=True)`` output, ``xs[t] = x_{t+1}``).
      c: ``(*batch, S, D)`` conditioning.
      state: from ``jacobian_penalty_init``; if its vectors do not have shape ``(K, *batch, S, D)``
        (e.g. a lazily initialized adapter state or a new batch size) they are redrawn from
        ``state.key`` (a Python-level shape check: one retrace under jit).
      target: the singular value aimed at (1: critical / edge of chaos).
      num_iters: power-iteration rounds this call (static, >= 0).
      steps: the K steps to penalize (negative indices count from the end); None draws K distinct
        steps at random with ``state.key`` (all of them, in order, when K = T).
      stop_state_grad: treat ``xs`` as data (default). False also lets the gradient move the
        visited states (back through the rollout that produced ``xs``). ``c`` is never stopped:
        the Jacobian depends on it (through the normalization), so its gradient reaches whatever
        produced ``c`` (e.g. the digit embedding); pass ``lax.stop_gradient(c)`` to avoid that.

    Returns:
      ``(value, new_state)``; ``new_state`` carries no gradient.
    """
    xs, c = jnp.asarray(xs), jnp.asarray(c)
    t = xs.shape[0]
    batch_shape = xs.shape[1:-2]
    if c.shape != xs.shape[1:]:
        raise ValueError(f"c must be shaped like one state {xs.shape[1:]}; got {c.shape}")
    k = state.v.shape[0]
    if state.v.shape[1:] != xs.shape[1:] or state.v.dtype != xs.dtype:
        state = jacobian_penalty_init(jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype), state.key, k)
    idx, key = _pick_steps(steps, t, k, state.key)
    x_sel = xs[idx]  # (K, *batch, S, D)
    if stop_state_grad:
        x_sel = lax.stop_gradient(x_sel)
    c_sel = jnp.broadcast_to(c, x_sel.shape)
    s, d = xs.shape[-2:]
    flat = lambda a: a.reshape(-1, s, d)
    p_stop = lax.stop_gradient(params)

    def converge(x, cc, v):
        x, cc = lax.stop_gradient(x), lax.stop_gradient(cc)
        _, jvp = jax.linearize(lambda z: step(p_stop, z, cc), x)
        vjp = jax.linear_transpose(jvp, x)

        def body(_, v_):
            w = vjp(jvp(v_))[0]
            return w / (jnp.sqrt(jnp.sum(w * w)) + _EPS)

        return lax.fori_loop(0, num_iters, body, lax.stop_gradient(v))

    def sigma_of(x, cc, v):
        jv = jax.jvp(lambda z: step(params, z, cc), (x,), (v,))[1]
        return jnp.sqrt(jnp.sum(jv * jv))

    v_new = lax.stop_gradient(jax.vmap(converge)(flat(x_sel), flat(c_sel), flat(state.v)))
    sigma = jax.vmap(sigma_of)(flat(x_sel), flat(c_sel), v_new)
    value = jnp.mean((sigma - target) ** 2)
    new_state = JacobianPenaltyState(v_new.reshape(state.v.shape), key,
                                     lax.stop_gradient(sigma).reshape((k, *batch_shape)), idx)
    return value, new_state


# --- Energy penalties (the orthogonal parametrization lives in rsa_jax.attention) -------------------

def value_output_products(attn: dict) -> jnp.ndarray:
    """``(H, D, D)``: ``W^V_h W^O_h``; without ``wo`` (heads summed directly, D_V = D) ``W^O_h = I``."""
    wv = attn["wv"]
    if "wo" not in attn:
        if wv.shape[1] != wv.shape[2]:
            raise ValueError(f"without wo, W^V_h must be D x D; got wv {wv.shape}")
        return wv
    return jnp.einsum("hdv,hve->hde", wv, attn["wo"])


def _asym_sq(m: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum((m - jnp.swapaxes(m, -1, -2)) ** 2)


def r_e_single(attn: dict) -> jnp.ndarray:
    """``R_E-single = ||W^V W^O - (W^V W^O)^T||_F^2`` (eq. 88); raises unless H = 1.

    Zero makes ``W^V W^O`` symmetric, the value condition of Prop. 4.1 with ``W^V := W^V W^O``
    (appendix B.2). Parameters without ``wo`` use ``W^O = I``.
    """
    if attn["wv"].shape[0] != 1:
        raise ValueError(f"R_E-single is defined for one head; wv has shape {attn['wv'].shape}")
    return _asym_sq(value_output_products(attn)[0])


def r_e_multi(attn: dict) -> jnp.ndarray:
    """``R_E-multi = sum_h ||W^V_h W^O_h - (W^V_h W^O_h)^T||_F^2`` with ``W^V_h W^O_h`` D x D.

    The paper pairs it with orthogonal full ``W^V, W^O`` (see ``orthogonal``). Without ``wo``,
    ``W^O_h = I``.
    """
    return _asym_sq(value_output_products(attn))


# --- Adapters for the Trainer hook ------------------------------------------------------------
# Each adapter has ``init(model, key) -> state`` and ``__call__(model, state, aux) -> (lam * R, new_state)``;
# ``model`` is anything with ``pure_step() -> (step, params)`` and ``params["attn"]`` the attention dict.

class SpecPenalty:
    """``lam * R_Spec`` on ``params["attn"]``; aux keys needed: none.

    Args:
      lam: weight (paper: 1e-4 ItrSA, 1e-5 AKOrN).
      num_iters: power-iteration rounds per call.
      layout: ``"separate"`` (W^Q, W^K, W^V, W^O), ``"fused"`` (W_qkv, W^O as stored by the AKOrN
        code) or ``"per_head"`` (module docstring).
    """

    aux_keys: tuple = ()

    def __init__(self, lam: float, *, num_iters: int = 1, layout: str = "separate"):
        _check_layout(layout)
        self.lam, self.num_iters, self.layout = lam, num_iters, layout

    def init(self, model, key: jax.Array) -> SpecState:
        _, params = model.pure_step()
        return spec_init(params["attn"], key, layout=self.layout)

    def __call__(self, model, state: SpecState, aux: dict | None = None):
        _, params = model.pure_step()
        value, state = spec_penalty(params["attn"], state, self.num_iters)
        return self.lam * value, state


class JacobianPenalty:
    """``lam * mean (||J_t||_2 - target)^2`` over ``num_samples`` random steps of the trajectory.

    aux keys needed: ``"xs"`` ``(T, *batch, S, D)`` the visited states and ``"c"`` ``(*batch, S, D)``.

    Args:
      lam: weight.
      target: singular value aimed at.
      num_samples: K steps per call (drawn without replacement; all steps when K = T).
      num_iters: power-iteration rounds per call.
      steps: fixed steps instead of random ones; when given, K = len(steps) (overrides num_samples).
      like_shape: ``(*batch, S, D)`` of one state, to give ``init`` a fixed-shape state. Without it
        ``init`` returns a placeholder that the first call replaces (the state's shape changes once,
        so a jitted train step retraces once; pass ``like_shape`` if the state must be static,
        e.g. inside ``lax.scan``).
      stop_state_grad: see ``jacobian_penalty``.
    """

    aux_keys: tuple = ("xs", "c")

    def __init__(self, lam: float, target: float = 1.0, num_samples: int = 1, *, num_iters: int = 1,
                 steps: Sequence[int] | None = None, like_shape: Sequence[int] | None = None,
                 stop_state_grad: bool = True):
        if steps is not None and len(steps) != num_samples:
            num_samples = len(steps)
        self.lam, self.target, self.num_samples, self.num_iters = lam, target, num_samples, num_iters
        self.steps, self.like_shape, self.stop_state_grad = steps, like_shape, stop_state_grad

    def init(self, model, key: jax.Array) -> JacobianPenaltyState:
        _, params = model.pure_step()
        dtype = params["attn"]["wq"].dtype
        shape = tuple(self.like_shape) if self.like_shape is not None else (0, 0)
        return jacobian_penalty_init(jax.ShapeDtypeStruct(shape, dtype), key, self.num_samples)

    def __call__(self, model, state: JacobianPenaltyState, aux: dict):
        missing = [k for k in self.aux_keys if k not in aux]
        if missing:
            raise KeyError(f"JacobianPenalty needs aux keys {self.aux_keys}; missing {missing}")
        step, params = model.pure_step()
        value, state = jacobian_penalty(step, params, aux["xs"], aux["c"], state, target=self.target,
                                        num_iters=self.num_iters, steps=self.steps,
                                        stop_state_grad=self.stop_state_grad)
        return self.lam * value, state


class EnergyPenalty:
    """``lam * R_E-multi`` (``kind="multi"``) or ``lam * R_E-single`` (``kind="single"``, H = 1).

    aux keys needed: none. State: ``()``. Keeping W^V, W^O orthogonal (as the paper pairs with R_E-multi, Prop. 4.2)
    is a parametrization of the model (``orthogonal_value_output``), not part of this penalty.
    """

    aux_keys: tuple = ()

    def __init__(self, lam: float, kind: str = "multi"):
        if kind not in ("multi", "single"):
            raise ValueError(f"kind must be 'multi' or 'single'; got {kind!r}")
        self.lam, self.kind = lam, kind

    def init(self, model, key: jax.Array):
        return ()

    def __call__(self, model, state, aux: dict | None = None):
        _, params = model.pure_step()
        r = r_e_multi if self.kind == "multi" else r_e_single
        return self.lam * r(params["attn"]), state
