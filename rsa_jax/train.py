"""Task-agnostic training: config, pure train step (optax, EMA, penalties), Orbax resume, CLI helpers.

The training step is a pure function of pytrees,

    train_step(state: TrainState, batch: dict) -> (TrainState, metrics: dict)

so ``jax.vmap`` over seeds (a leading axis on every leaf of ``state``) and ``jax.sharding``
(shard ``batch``, replicate ``state``) apply to it unchanged; ``make_train_step(..., jit=False)``
returns the raw function for such wrapping. A model enters the step as ``nnx.split`` pieces: the
static ``graphdef`` is closed over, the ``nnx.Param`` leaves travel in ``TrainState.params`` as a
pure dict, and any non-``Param`` state (none in this project's models) is a closed-over constant.

A *task* supplies the model, the loss and the data (see :class:`Task`); this module knows nothing
about Sudoku or images. Usage::

    cfg = TrainConfig(out="runs/x")
    task = rsa_jax.tasks.sudoku.sudoku_task(cfg)
    model, history = train(cfg, task)             # resumes from runs/x/checkpoints if present
    model, cfg = load_model("runs/x")              # EMA parameters of the latest checkpoint

Penalties (regularizers with state, e.g. power-iteration vectors) plug in as objects with

    penalty.init(model, key) -> state
    penalty(model, state, aux) -> (value, new_state)

where ``aux`` is ``metrics["aux"]`` of the task's loss (for Sudoku ``{"c", "x0", "x"}``). The step
minimizes ``loss + sum(values)`` (a penalty applies its own weight lambda), carries the states in
``TrainState.extra`` (a tuple, one entry per penalty; gradients are stopped through them) and logs
each value as ``penalty/<name>`` (``penalty.name`` if present, else the class name).

Resume is exact: data order is a function of ``(seed, epoch)`` (the task's ``train_batches``),
the batch position inside the epoch is checkpointed, and the PRNG key lives in the state, so a
killed run restarted from its last checkpoint reproduces the uninterrupted run bit for bit.
Metrics stay on the device until a log / checkpoint / epoch boundary; there they are checked (a
non-finite loss or gradient norm raises :class:`TrainingDiverged` naming the step, before anything
is saved) and averaged into one ``metrics.jsonl`` record, so every step is in exactly one record.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import math
import re
import shutil
import sys
import time
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from rsa_jax.models.sudoku import ModelConfig

#: Learning rates of the AKOrN code base's Sudoku commands (README of autonomousvision/akorn):
#: AKOrN ``--lr=0.001``, ItrSA ``--lr=0.0005``. The paper tuned lr in {1e-5, 5e-5, ..., 1e-3}.
DEFAULT_LR = {"akorn": 1e-3, "itrsa": 5e-4}
FALLBACK_LR = 1e-3
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def _f(default, help: str, **kw):
    """A dataclass field with CLI help text."""
    if isinstance(default, (list, dict, set)) or callable(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training configuration. Defaults are the paper's Sudoku setup (AKOrN code base).

    EMA follows ``ema_pytorch.EMA(beta=0.995, update_every=10, update_after_step=100)`` as used by
    the AKOrN code: every ``ema_every`` steps, the EMA is a copy of the parameters up to step
    ``ema_after``, then ``ema <- d ema + (1 - d) params`` with the warmup decay
    ``d = min(ema_decay, 1 - (1 + n)^(-ema_power))``, ``n = step - ema_after``
    (``ema_power = 0``: constant ``d = ema_decay``).
    """

    model: ModelConfig = _f(lambda: ModelConfig(kind="akorn", d=512, heads=8),
                            "model architecture (nested: --model-d, --model-heads, ...)")
    t_train: int = _f(16, "recurrent steps T of the model during training (used by the task)")
    batch_size: int = _f(100, "training batch size")
    epochs: int = _f(100, "training epochs")
    lr: Optional[float] = _f(None, "Adam learning rate; none: per model kind "
                                   f"({', '.join(f'{k} {v:g}' for k, v in DEFAULT_LR.items())})")
    optimizer: str = _f("adam", "'adam' or 'adamw'")
    weight_decay: float = _f(0.0, "decoupled weight decay (adamw only)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (<= 0: no clipping)")
    flatten_optimizer: bool = _f(True, "run clipping + Adam on one flat vector (optax.flatten): same math, "
                                       "far fewer kernels, several times faster XLA compiles on CPU")
    ema_decay: float = _f(0.995, "EMA decay beta")
    ema_every: int = _f(10, "update the EMA every this many steps")
    ema_after: int = _f(100, "EMA copies the parameters up to this step")
    ema_power: float = _f(2 / 3, "EMA warmup power (0: constant decay)")
    seed: int = _f(0, "seed of the parameters, the data order and the model's noise")
    max_steps: Optional[int] = _f(None, "stop after this many optimizer steps in total (none: all epochs)")
    checkpoint_every: int = _f(500, "checkpoint every this many steps (and at the end; <= 0: only at the end)")
    keep_checkpoints: int = _f(3, "number of checkpoints kept")
    log_every: int = _f(20, "log averaged metrics every this many steps")
    eval_every: int = _f(0, "run the task's evaluation every this many epochs and at the end (0: never)")
    matmul_precision: str = _f("float32", "jax.default_matmul_precision: 'float32', 'tensorfloat32', 'bfloat16'")
    data_parallel: bool = _f(False, "split every batch over all visible devices (rsa_jax.parallel; same numbers "
                                    "up to summation order; batch_size must be divisible by the device count)")
    out: str = _f("outputs/train", "run directory: config.json, metrics.jsonl, checkpoints/")
    progress: bool = _f(True, "tqdm progress bar (off anyway when stderr is not a terminal)")
    data_dir: Optional[str] = _f(None, "data directory (none: the task's default / environment variable)")
    train_limit: Optional[int] = _f(None, "use only the first N training examples (none: all)")
    eval_limit: Optional[int] = _f(None, "use only the first N evaluation examples (none: all)")

    def resolved_lr(self) -> float:
        """``lr``, or the default for ``model.kind``."""
        if self.lr is not None:
            return float(self.lr)
        return DEFAULT_LR.get(getattr(self.model, "kind", None), FALLBACK_LR)


# --------------------------------------------------------------------------------------- task
@dataclasses.dataclass
class Task:
    """What the trainer needs from a task (any object with these attributes works).

    Attributes:
      init_model: ``rngs -> nnx.Module``. For :func:`load_model` the module should have a
        dataclass ``config`` attribute and be constructible as ``type(model)(config, rngs=...)``.
      loss_fn: ``(model, batch, key) -> (loss, metrics)``; ``metrics`` is a dict of scalars plus
        an optional ``"aux"`` entry (any pytree) handed to the penalties and not logged.
      train_batches: ``epoch -> iterable of batches`` (dicts of NumPy arrays). Must be
        deterministic in ``epoch`` (and the task's seed) for exact resume.
      steps_per_epoch: number of batches ``train_batches`` yields per epoch.
      evaluate: optional ``model -> dict of scalars`` (called with the EMA parameters).
      name: label stored in ``config.json``.
    """

    init_model: Callable[[nnx.Rngs], nnx.Module]
    loss_fn: Callable[[nnx.Module, dict, jax.Array], tuple]
    train_batches: Callable[[int], Iterable[dict]]
    steps_per_epoch: int
    evaluate: Optional[Callable[[nnx.Module], dict]] = None
    name: str = "task"


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


class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradient norm. ``step`` is the 1-based optimizer step that produced it
    (the parameters after step ``step - 1`` were finite); ``last_checkpoint`` is the step of the
    newest checkpoint on disk (never a diverged state), or None."""

    def __init__(self, step: int, metrics: dict, last_checkpoint: Optional[int]):
        self.step, self.metrics, self.last_checkpoint = step, metrics, last_checkpoint
        shown = {k: v for k, v in metrics.items() if k in ("loss", "total_loss", "grad_norm")}
        super().__init__(f"training diverged at step {step}: non-finite {shown}; last good checkpoint: "
                         f"{'none' if last_checkpoint is None else f'step {last_checkpoint}'} (not overwritten)")


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


def split_model(model: nnx.Module):
    """``(graphdef, params, rest)``: the static graph, a pure dict of ``nnx.Param`` values, other state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), rest


def merge_model(graphdef, params, rest=None) -> nnx.Module:
    """Inverse of :func:`split_model` (``params`` a pure dict or an ``nnx.State``)."""
    return nnx.merge(graphdef, params, rest) if rest is not None and jax.tree.leaves(rest) else nnx.merge(graphdef, params)


def ema_update(ema, params, step, *, decay: float = 0.995, every: int = 10, after: int = 100,
               power: float = 2 / 3):
    """One EMA update after optimizer step number ``step`` (0-based, traced ok); see :class:`TrainConfig`."""
    step = jnp.asarray(step)
    n = (step - after).astype(jnp.float32)
    d = jnp.minimum(decay, 1.0 - (1.0 + jnp.maximum(n, 0.0)) ** (-power)) if power > 0 else jnp.float32(decay)
    d = jnp.where(step <= after, 0.0, d)           # copy during the first `after` steps
    d = jnp.where(step % every == 0, d, 1.0)        # untouched between updates
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


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
      penalties: see the module docstring.
      cfg: EMA settings (default ``TrainConfig()``'s).
      rest: non-``Param`` model state, closed over as a constant.
      jit: wrap in ``jax.jit(donate_argnums=0)``; ``False`` returns the pure function (for vmap/shard).

    Returns:
      The step. ``metrics`` holds the task's scalars (``loss`` is the task loss), ``total_loss``
      (with penalties), ``grad_norm`` (before clipping) and ``penalty/<name>`` values.
    """
    cfg = cfg or TrainConfig()
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
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, state.step, decay=cfg.ema_decay, every=cfg.ema_every,
                         after=cfg.ema_after, power=cfg.ema_power)
        metrics = {**metrics, "total_loss": total, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, ema, opt_state, state.step + 1, key, extra), metrics

    return jax.jit(train_step, donate_argnums=0) if jit else train_step


# ------------------------------------------------------------------------------ config <-> json
def _class_path(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_path(path: str):
    module, _, name = path.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def config_to_dict(cfg) -> dict:
    """A (nested) dataclass as a JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls, d: dict):
    """Inverse of :func:`config_to_dict`; unknown keys are ignored with a warning."""
    hints = typing.get_type_hints(cls)
    kw = {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k, v in d.items():
        if k not in names:
            warnings.warn(f"{cls.__name__}: ignoring unknown config key {k!r}")
            continue
        tp = _base_type(hints[k])
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            v = config_from_dict(tp, v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


# ----------------------------------------------------------------------------------- training
def _finite(m: dict) -> bool:
    return all(np.all(np.isfinite(m[k])) for k in ("loss", "total_loss", "grad_norm") if k in m)


def _scalars(m: dict) -> dict:
    return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def _tqdm(total, initial, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()),
                dynamic_ncols=True, desc="train")


def read_history(path: Path, upto_step: int) -> list:
    """Records of ``metrics.jsonl`` with ``step <= upto_step`` (the file is rewritten to match)."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= upto_step:
            keep.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return keep


def checkpoint_manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    """Synchronous Orbax manager of ``directory`` keeping the newest ``keep`` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.resolve(), options=options)


def save_checkpoint(mngr, state: TrainState, meta: dict) -> None:
    """Saves ``state`` (params, EMA, optimizer, step, key, penalty states) and ``meta`` at ``meta["step"]``."""
    mngr.save(int(meta["step"]), args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        ema_params=ocp.args.StandardSave(state.ema_params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        misc=ocp.args.StandardSave({"step": state.step, "key": state.key, "extra": state.extra}),
        meta=ocp.args.JsonSave(meta)), force=True)


def restore_checkpoint(mngr, step: int, template: TrainState):
    """``(state, meta)`` saved at ``step``; ``template`` gives the tree structure, shapes and dtypes."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    r = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        ema_params=ocp.args.StandardRestore(abstract.ema_params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state),
        misc=ocp.args.StandardRestore({"step": abstract.step, "key": abstract.key, "extra": abstract.extra}),
        meta=ocp.args.JsonRestore()))
    misc = r.misc
    state = TrainState(r.params, r.ema_params, r.opt_state, misc["step"], misc["key"],
                       tuple(misc["extra"]) if isinstance(misc["extra"], (list, tuple)) else misc["extra"])
    return state, dict(r.meta)


def config_record(cfg: TrainConfig, task: Task, model: nnx.Module) -> dict:
    """The ``config.json`` of a run: training and model configs with their classes (for ``load_model``)."""
    rec = {"config_class": _class_path(cfg), "config": config_to_dict(cfg), "task": task.name,
           "lr": cfg.resolved_lr(), "model_class": _class_path(model)}
    mcfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(mcfg):
        rec["model_config_class"] = _class_path(mcfg)
        rec["model_config"] = config_to_dict(mcfg)
    return rec


def _warn_config_change(old: dict, new: dict) -> None:
    ignore = {"epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every",
              "progress", "out", "data_dir", "eval_limit", "data_parallel"}
    changed = [k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k)]
    if changed:
        warnings.warn("resuming with a changed config: " + ", ".join(
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(changed)), stacklevel=3)


def train(cfg: TrainConfig, task: Task, penalties: Sequence = (), resume: bool = True):
    """Trains ``task`` under ``cfg``, checkpointing to ``<cfg.out>/checkpoints``.

    Args:
      cfg: configuration; ``cfg.out`` is the run directory.
      task: see :class:`Task`.
      penalties: see the module docstring; their states are checkpointed with the rest.
      resume: continue from the newest checkpoint in ``cfg.out`` if there is one (a finished run
        is just loaded). ``False`` deletes the old checkpoints and metrics and starts afresh.

    Returns:
      ``(model, history)``: the model holding the EMA parameters, and the list of records of
      ``metrics.jsonl`` (training averages every ``log_every`` steps with ``step``, ``epoch``,
      ``time``; evaluation records with ``eval/...`` keys), including those of earlier runs
      resumed from.

    Raises:
      TrainingDiverged: non-finite loss or gradient norm; the state is not saved, the last
        checkpoint stays the last good one.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir, metrics_path = out / CHECKPOINT_DIR, out / METRICS_FILE
    if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    spe = int(task.steps_per_epoch)
    if spe <= 0:
        raise ValueError(f"task {task.name!r} has steps_per_epoch={spe}; need at least one batch per epoch "
                         f"(fewer examples than batch_size={cfg.batch_size}?)")
    total = cfg.epochs * spe
    stop = total if cfg.max_steps is None else min(total, int(cfg.max_steps))

    with jax.default_matmul_precision(cfg.matmul_precision):
        model = task.init_model(nnx.Rngs(cfg.seed))
        graphdef, _, rest = split_model(model)
        tx = make_optimizer(cfg)
        state = init_train_state(model, tx, jax.random.PRNGKey(cfg.seed), penalties)
        record = config_record(cfg, task, model)
        mngr = checkpoint_manager(ckpt_dir, cfg.keep_checkpoints)
        try:
            start = 0
            latest = mngr.latest_step()
            if resume and latest is not None:
                old = out / CONFIG_FILE
                if old.exists():
                    _warn_config_change(json.loads(old.read_text()).get("config", {}), record["config"])
                state, meta = restore_checkpoint(mngr, latest, state)
                start = int(meta["step"])
            history = read_history(metrics_path, start)
            (out / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if start < stop:
                combine = None
                if cfg.data_parallel:
                    from rsa_jax import parallel
                    mesh = parallel.make_mesh()
                    pure = make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest, jit=False)
                    step_fn = parallel.make_sharded_train_step(pure, mesh, donate=True)
                    state = parallel.replicate(state, mesh)
                    combine = lambda batches: parallel.shard_batch(batches[0], mesh)
                else:
                    step_fn = make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest)
                state = run_loop(cfg, [RunLane(task, mngr, history, metrics_path)], state, step_fn, start, stop,
                                 spe, graphdef, rest, combine=combine)
        finally:
            mngr.close()
    return merge_model(graphdef, state.ema_params, rest), history


@dataclasses.dataclass
class RunLane:
    """One run directory served by :func:`run_loop`: a seed's task, checkpoints and metrics.

    Attributes:
      task: the seed's task (its data order).
      mngr: its Orbax ``CheckpointManager`` (:func:`checkpoint_manager`).
      history: its metric records so far (appended to).
      metrics_path: its ``metrics.jsonl``.
      seed: set in multi-seed runs; named by :class:`TrainingDiverged`.
    """

    task: Task
    mngr: Any
    history: list
    metrics_path: Path
    seed: Optional[int] = None


def run_loop(cfg: TrainConfig, lanes: Sequence[RunLane], state, step_fn, start: int, stop: int, spe: int,
             graphdef, rest, *, pick: Optional[Callable] = None, combine: Optional[Callable] = None):
    """Steps ``start -> stop`` with logging, NaN checks, checkpoints and evaluation; returns the state.

    One lane is a plain run (``pick``/``combine`` None). Several lanes share one stacked state
    (``rsa_jax.multiseed``): ``pick(tree, i)`` takes lane ``i``'s part of a stacked pytree and
    ``combine(batches)`` stacks the lanes' batches of a step (a plain run may pass ``combine`` alone,
    e.g. to shard its batch over devices). Metrics are fetched from the device
    only when logged or checkpointed, so the host never waits on every step; a non-finite loss or
    gradient norm raises :class:`TrainingDiverged` before anything of that step is saved.
    """
    single = pick is None
    pick = pick or (lambda tree, i: tree)
    combine = combine or (lambda batches: batches[0])
    t0 = time.time()
    pending: list = []                    # (step, device metrics) not yet checked
    checked: list = [[] for _ in lanes]   # per lane: host metrics checked finite, not yet logged
    last_saved = [lane.mngr.latest_step() for lane in lanes]
    bar = _tqdm(stop, start, cfg.progress)

    def write(i, rec):
        lanes[i].history.append(rec)
        with open(lanes[i].metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def check():
        """Fetch pending metrics; raise TrainingDiverged at the first non-finite step."""
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host):
            for i, lane in enumerate(lanes):
                mi = m if single else {k: np.asarray(v)[i] for k, v in m.items()}
                if not _finite(mi):
                    pending.clear()
                    err = TrainingDiverged(s, _scalars(mi), last_saved[i])
                    if lane.seed is not None:
                        err.seed = lane.seed
                        err.add_note(f"in seed {lane.seed} of the multi-seed run {[la.seed for la in lanes]}")
                    raise err
                checked[i].append(_scalars(mi))
        pending.clear()

    def log(step, epoch):
        check()
        for i in range(len(lanes)):
            if not checked[i]:
                continue
            mean = {k: float(np.mean([m[k] for m in checked[i]])) for k in checked[i][-1]}
            checked[i].clear()
            write(i, {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3), **mean})
            if i == 0:
                post = {"loss": f"{mean['loss']:.4f}"}
                post.update({k: f"{mean[k]:.3f}" for k in ("cell_acc", "acc", "board_acc") if k in mean})
                bar.set_postfix(post, refresh=False)

    def save(step, epoch, pos):
        log(step, epoch)    # every step lands in exactly one record, so resumed histories match
        for i, lane in enumerate(lanes):
            if last_saved[i] != step:
                save_checkpoint(lane.mngr, pick(state, i), {"step": step, "epoch": epoch, "batch_in_epoch": pos})
                last_saved[i] = step

    step = start
    try:
        for epoch in range(start // spe, math.ceil(stop / spe)):
            pos0 = step - epoch * spe
            its = [itertools.islice(iter(lane.task.train_batches(epoch)), pos0, None) for lane in lanes]
            for pos, batches in enumerate(zip(*its), start=pos0 + 1):
                state, metrics = step_fn(state, combine(batches))
                step += 1
                pending.append((step, metrics))
                bar.update(1)
                if cfg.log_every > 0 and step % cfg.log_every == 0:
                    log(step, epoch)
                if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0:
                    save(step, epoch, pos)
                if step >= stop or pos >= spe:
                    break
            if step - epoch * spe < spe and step < stop:
                raise RuntimeError(f"train_batches({epoch}) yielded {step - epoch * spe} batches, "
                                   f"steps_per_epoch says {spe}")
            log(step, epoch)
            epoch_done = step == (epoch + 1) * spe
            if cfg.eval_every > 0 and epoch_done and ((epoch + 1) % cfg.eval_every == 0 or step >= stop):
                for i, lane in enumerate(lanes):
                    if lane.task.evaluate is not None:
                        ev = lane.task.evaluate(merge_model(graphdef, pick(state.ema_params, i), rest))
                        write(i, {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3),
                                  **{f"eval/{k}": float(v) for k, v in ev.items() if np.ndim(v) == 0}})
            if step >= stop:
                save(step, epoch if not epoch_done else epoch + 1, 0 if epoch_done else step - epoch * spe)
                break
    finally:
        bar.close()
    return state


# ----------------------------------------------------------------------------------- loading
def load_model(path, step: Optional[int] = None, init_model: Optional[Callable] = None):
    """Rebuilds a trained model from a run directory.

    Args:
      path: the run directory (``cfg.out``, holding ``config.json`` and ``checkpoints/``).
      step: checkpoint step (default: the latest).
      init_model: ``cfg -> nnx.Module`` building the architecture; default: the saved model class
        called as ``ModelClass(model_config, rngs=nnx.Rngs(seed))``.

    Returns:
      ``(model, cfg)`` with the EMA parameters of that checkpoint loaded.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path / CONFIG_FILE} not found: not a run directory of rsa_jax.train")
    rec = json.loads((path / CONFIG_FILE).read_text())
    cfg = config_from_dict(_import_path(rec["config_class"]), rec["config"])
    if init_model is not None:
        model = init_model(cfg)
    elif "model_config_class" in rec:
        mcfg = config_from_dict(_import_path(rec["model_config_class"]), rec["model_config"])
        model = _import_path(rec["model_class"])(mcfg, rngs=nnx.Rngs(cfg.seed))
    else:
        raise ValueError(f"{path}: the model has no dataclass `config`; pass init_model")
    graphdef, params, rest = split_model(model)
    mngr = checkpoint_manager(path / CHECKPOINT_DIR, cfg.keep_checkpoints)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {path / CHECKPOINT_DIR}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
        ema = mngr.restore(step, args=ocp.args.Composite(ema_params=ocp.args.StandardRestore(abstract))).ema_params
    finally:
        mngr.close()
    return merge_model(graphdef, ema, rest), cfg


# ------------------------------------------------------------------------------------- CLI
def _base_type(tp):
    """``Optional[X]`` / ``X | None`` -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _doc_help(cls) -> dict:
    """``name: text`` entries of the Google-style ``Attributes:`` docstring sections of ``cls`` and its
    bases (a subclass's entry wins)."""
    out = {}
    for base in reversed(cls.__mro__):
        out.update(_attributes_section(base.__doc__ or "") if dataclasses.is_dataclass(base) else {})
    return out


def _attributes_section(doc: str) -> dict:
    out, cur = {}, None
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    for line in section.splitlines():
        if not line.strip():
            if out:
                break           # a blank line ends the section
            continue
        m = re.match(r"\s+(\w+):\s*(.*)", line)
        if m and m.group(1).isidentifier() and not line.startswith(" " * 8):
            cur = m.group(1)
            out[cur] = m.group(2)
        elif cur and line.strip():
            out[cur] += " " + line.strip()
    return out


def _converter(tp, optional: bool, null_words: tuple = ("none", "null")):
    def conv(s: str):
        if optional and s.lower() in null_words:
            return None
        if tp is bool:
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")
        return tp(s)
    conv.__name__ = getattr(tp, "__name__", str(tp))
    return conv


def add_dataclass_args(parser: argparse.ArgumentParser, cls, *, prefix: str = "", defaults=None,
                       exclude: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Adds ``--field-name`` for every field of dataclass ``cls`` (nested dataclasses as
    ``--outer-inner``, e.g. ``--model-d``). Optional fields accept ``none`` (fields in the class's
    ``DERIVED`` table take ``auto`` instead, so that ``--model-norm none`` is a value); booleans are
    ``--flag/--no-flag``. Unset flags are absent from the namespace, so
    :func:`dataclass_from_args` keeps the base config's value.

    Args:
      parser: the parser (or an argument group).
      cls: dataclass type.
      prefix: name prefix (used for nesting).
      defaults: instance whose values the help shows (default ``cls()``).
      exclude: dotted field names to skip (e.g. ``("out", "model.kind")``).
    """
    defaults = cls() if defaults is None else defaults
    hints, docs = typing.get_type_hints(cls), _doc_help(cls)
    for f in dataclasses.fields(cls):
        dotted = (prefix + "." if prefix else "") + f.name
        if not f.init or dotted in exclude:
            continue
        tp, default = _base_type(hints[f.name]), getattr(defaults, f.name)
        flag = "--" + dotted.replace(".", "-").replace("_", "-")
        if dataclasses.is_dataclass(tp):
            add_dataclass_args(parser, tp, prefix=dotted, defaults=default, exclude=exclude)
            continue
        help_ = f.metadata.get("help") or docs.get(f.name, "")
        help_ = f"{help_} (default: {default})".replace("%", "%%")
        if tp is bool and not _is_optional(hints[f.name]):
            parser.add_argument(flag, dest=dotted, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        elif typing.get_origin(tp) in (tuple, list):
            inner = [a for a in typing.get_args(tp) if a is not Ellipsis][0]
            parser.add_argument(flag, dest=dotted, nargs="*", type=_converter(inner, False),
                                default=argparse.SUPPRESS, help=help_)
        else:
            derived = f.name in getattr(cls, "DERIVED", {})  # "none" is a value there; "auto" unsets it
            if derived:
                help_ = help_.replace(" (default:", "; 'auto': derived from the other fields (default:", 1)
            parser.add_argument(flag, dest=dotted, type=_converter(tp, _is_optional(hints[f.name]),
                                                                   ("auto",) if derived else ("none", "null")),
                                default=argparse.SUPPRESS, metavar=getattr(tp, "__name__", "X").upper(),
                                help=help_)
    return parser


def dataclass_from_args(args: argparse.Namespace, cls, base=None, *, prefix: str = ""):
    """``base`` (default ``cls()``) with the fields given on the command line replaced (nested too)."""
    base = cls() if base is None else base
    given = vars(args)
    hints = typing.get_type_hints(cls)
    changes = {}
    for f in dataclasses.fields(cls):
        dotted = (prefix + "." if prefix else "") + f.name
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            inner = getattr(base, f.name)
            if any(k.startswith(dotted + ".") for k in given):
                changes[f.name] = dataclass_from_args(args, tp, inner if inner is not None else tp(), prefix=dotted)
        elif dotted in given:
            v = given[dotted]
            changes[f.name] = tuple(v) if isinstance(v, list) else v
    for name, sources in getattr(cls, "DERIVED", {}).items():  # e.g. norm follows kind unless given
        if name not in changes and any(src in changes for src in sources):
            changes[name] = None
    return dataclasses.replace(base, **changes) if changes else base


def main(argv=None):
    """``python -m rsa_jax.train [--model-kind itrsa] [--out DIR] ...``: trains the Sudoku task."""
    from rsa_jax.tasks.sudoku import sudoku_task
    parser = argparse.ArgumentParser(description="Train a looped Sudoku solver (rsa_jax.train).")
    add_dataclass_args(parser, TrainConfig)
    parser.add_argument("--no-resume", action="store_true", help="start afresh, deleting old checkpoints")
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(args, TrainConfig)
    model, history = train(cfg, sudoku_task(cfg), resume=not args.no_resume)
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    print(json.dumps(evals[-1] if evals else history[-1] if history else {}, indent=2))


if __name__ == "__main__":
    main()
