"""The training state and the pure pieces that act on it: optimizer, EMA, model split/merge, the train step.

    tx = make_optimizer(cfg)                                   # clip + Adam(W), optionally flattened
    graphdef, params, rest = split_model(model)
    state = init_train_state(model, tx, jax.random.PRNGKey(0))
    step = make_train_step(graphdef, task, tx, cfg=cfg, rest=rest)
    state, metrics = step(state, batch)

The loop that drives these (logging, NaN checks, resume, evaluation) is :mod:`rsa_jax.train`; the
checkpoints of the state are :mod:`rsa_jax.runs`. ``rsa_jax.train`` re-exports every name here.
``cfg`` is a :class:`rsa_jax.train_config.TrainConfig` (any object with its optimizer and EMA fields works);
``task`` anything with ``loss_fn`` (:class:`rsa_jax.train_config.Task`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rsa_jax.train_config import Task, TrainConfig



class TrainState(NamedTuple):
    """Everything a step reads and writes (a pytree; all leaves are arrays).

    Attributes:
      params: pure dict of the model's ``nnx.Param`` values.
      ema_params: their exponential moving average (same structure).
      opt_state: optax state.
      step: int32 scalar, optimizer steps done.
      key: raw uint32 PRNG key, split once per step.
      extra: tuple of penalty states, one per penalty.
    """

    params: Any
    ema_params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    extra: tuple = ()


# ------------------------------------------------------------------------------- pure pieces
def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm(grad_clip)`` then Adam (or AdamW) at ``cfg.resolved_lr()``
    (wrapped in ``optax.flatten`` when ``cfg.flatten_optimizer``)."""
    lr = cfg.resolved_lr()
    if cfg.optimizer == "adam":
        opt = optax.adam(lr)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {cfg.optimizer!r}")
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt) if cfg.grad_clip > 0 else opt
    return optax.flatten(tx) if cfg.flatten_optimizer else tx


def make_penalties(cfg: TrainConfig) -> tuple:
    """The penalty objects ``cfg.penalty`` names (empty for ``"none"``), at weight ``cfg.penalty_lam``.

    Recorded in ``config.json`` with the run (unlike penalty objects handed to ``train``), so a shipped
    model says which regularizer it was trained with. ``e_multi`` is R_E-multi (the paper pairs it
    with orthogonal W^V, W^O: ``ModelConfig.orthogonal_vo``); ``e_single`` needs one head.
    """
    from rsa_jax.regularizers import EnergyPenalty, SpecPenalty
    name, lam = cfg.penalty, float(cfg.penalty_lam)
    if name not in ("none", "spec", "e_multi", "e_single"):
        raise ValueError(f"penalty must be 'none', 'spec', 'e_multi' or 'e_single'; got {name!r}")
    if name == "none":
        if lam != 0.0:
            raise ValueError(f"penalty_lam={lam:g} without a penalty; set --penalty (spec, e_multi, e_single)")
        return ()
    if not lam > 0.0:
        raise ValueError(f"penalty {name!r} needs penalty_lam > 0; got {lam:g}")
    if name == "spec":
        return (SpecPenalty(lam, layout=cfg.spec_layout),)
    heads = getattr(cfg.model, "heads", 1)
    if name == "e_single" and heads != 1:
        raise ValueError(f"penalty 'e_single' (R_E-single) is defined for one head; model has heads={heads}")
    return (EnergyPenalty(lam, kind=name.removeprefix("e_")),)


def split_model(model: nnx.Module):
    """``(graphdef, params, rest)``: the static graph, a pure dict of ``nnx.Param`` values, other state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), rest


def merge_model(graphdef, params, rest=None) -> nnx.Module:
    """Inverse of :func:`split_model` (``params`` a pure dict or an ``nnx.State``)."""
    if rest is not None and jax.tree.leaves(rest):
        return nnx.merge(graphdef, params, rest)
    return nnx.merge(graphdef, params)


def ema_update(ema, params, step, *, decay: float = 0.995, every: int = 10, after: int = 100,
               power: float = 2 / 3):
    """One EMA update after optimizer step number ``step`` (0-based, traced ok); see
    :class:`rsa_jax.train_config.TrainConfig` (whose defaults these are). The decay is computed in float32
    and cast to each leaf's dtype."""
    step = jnp.asarray(step)
    n = (step - after).astype(jnp.float32)
    d = jnp.minimum(decay, 1.0 - (1.0 + jnp.maximum(n, 0.0)) ** (-power)) if power > 0 else jnp.float32(decay)
    d = jnp.where(step <= after, 0.0, d)           # copy during the first `after` steps
    d = jnp.where(step % every == 0, d, 1.0)        # untouched between updates

    def mix(e, p):
        dd = d.astype(jnp.result_type(e))
        return dd * e + (1 - dd) * p
    return jax.tree.map(mix, ema, params)


def _penalty_name(p, i: int, names: set) -> str:
    name = getattr(p, "name", None) or type(p).__name__
    return f"penalty/{name}" if f"penalty/{name}" not in names else f"penalty/{name}_{i}"


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, key: jax.Array,
                     penalties: Sequence = ()) -> TrainState:
    """Initial :class:`TrainState` (``key`` a raw PRNG key; penalty states from ``penalty.init``).
    Parameters are copied, so donating the state to the step leaves ``model`` usable."""
    _, params, _ = split_model(model)
    key, *pkeys = jax.random.split(key, len(penalties) + 1)
    extra = tuple(p.init(model, k) for p, k in zip(penalties, pkeys))
    copy = lambda t: jax.tree.map(lambda a: jnp.array(a, copy=True), t)   # own buffers: the step donates them
    return TrainState(params=copy(params), ema_params=copy(params), opt_state=tx.init(params),
                      step=jnp.zeros((), jnp.int32), key=key, extra=extra)


def make_train_step(graphdef, task: Task, tx: optax.GradientTransformation, penalties: Sequence = (), *,
                    cfg: Optional[TrainConfig] = None, rest=None, jit: bool = True):
    """Builds ``train_step(state, batch) -> (state, metrics)``.

    Args:
      graphdef: from :func:`split_model`.
      task: supplies ``loss_fn(model, batch, key)``.
      tx: optax transformation (see :func:`make_optimizer`).
      penalties: see the module docstring of :mod:`rsa_jax.train`.
      cfg: EMA settings (default ``TrainConfig()``'s, the defaults of :func:`ema_update`).
      rest: non-``Param`` model state, closed over as a constant.
      jit: wrap in ``jax.jit(donate_argnums=0)``; ``False`` returns the pure function (for vmap/shard).

    Returns:
      The step. ``metrics`` holds the task's scalars (``loss`` is the task loss), ``total_loss``
      (with penalties), ``grad_norm`` (before clipping) and ``penalty/<name>`` values.
    """
    ema_kw = {} if cfg is None else dict(decay=cfg.ema_decay, every=cfg.ema_every, after=cfg.ema_after,
                                         power=cfg.ema_power)
    names: list = []
    for i, p in enumerate(penalties):
        names.append(_penalty_name(p, i, set(names)))

    def objective(params, extra, batch, key):
        model = merge_model(graphdef, params, rest)
        loss, metrics = task.loss_fn(model, batch, key)
        metrics = dict(metrics)
        aux = metrics.pop("aux", None)
        total, new_extra = loss, []
        for name, p, s in zip(names, penalties, extra):
            value, s = p(model, s, aux)
            total = total + value
            metrics[name] = value
            new_extra.append(jax.tree.map(jax.lax.stop_gradient, s))
        metrics["loss"] = loss
        return total, (metrics, tuple(new_extra))

    def train_step(state: TrainState, batch: dict):
        key, sub = jax.random.split(state.key)
        (total, (metrics, extra)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state.extra, batch, sub)
        with jax.numpy_dtype_promotion("standard"):   # optax's Adam computes `b ** count` (float ** int32),
            updates, opt_state = tx.update(grads, state.opt_state, state.params)   # which "strict" refuses
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, state.step, **ema_kw)
        metrics = {**metrics, "total_loss": total, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, ema, opt_state, state.step + 1, key, extra), metrics

    return jax.jit(train_step, donate_argnums=0) if jit else train_step
