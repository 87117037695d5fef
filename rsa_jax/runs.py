"""A run directory and its I/O: Orbax checkpoints of the train state, ``config.json``, ``metrics.jsonl``.

    <out>/config.json      training and model configs with their classes (:func:`config_record`)
    <out>/metrics.jsonl    one JSON record per logged interval / evaluation (:func:`read_history`)
    <out>/checkpoints/     Orbax steps: params, EMA, optimizer state, step, PRNG key, penalty states

    model, cfg = load_model("runs/x")       # the EMA parameters of the latest checkpoint

:mod:`rsa_jax.train` writes these (and re-exports every name here). The classes in ``config.json``
are recorded by :func:`rsa_jax.config.class_path`, so a run loads in any process, whichever way the
training command was started.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import jax
import orbax.checkpoint as ocp
from flax import nnx

from rsa_jax.config import class_path, config_from_dict, config_to_dict, import_path
from rsa_jax.train_config import Task, TrainConfig
from rsa_jax.train_state import TrainState, merge_model, split_model


CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


# ------------------------------------------------------------------------------- checkpoints
def checkpoint_manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    """Synchronous Orbax manager of ``directory`` keeping the newest ``keep`` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def latest_step(run_dir) -> Optional[int]:
    """Newest checkpoint step of a run directory, read off the folder names (no Orbax); None if none."""
    steps = [int(p.name) for p in (Path(run_dir) / CHECKPOINT_DIR).glob("*") if p.name.isdigit()]
    return max(steps, default=None)


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


def restore_ema_params(mngr, step: int, template):
    """Only the EMA parameters saved at ``step`` (``template``: a tree of their shapes and dtypes)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return mngr.restore(step, args=ocp.args.Composite(ema_params=ocp.args.StandardRestore(abstract))).ema_params


# ------------------------------------------------------------------------------- run records
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


def config_record(cfg: TrainConfig, task: Task, model: nnx.Module) -> dict:
    """The ``config.json`` of a run: training and model configs with their classes (for ``load_model``)."""
    rec = {"config_class": class_path(cfg), "config": config_to_dict(cfg), "task": task.name,
           "lr": cfg.resolved_lr(), "model_class": class_path(model)}
    mcfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(mcfg):
        rec["model_config_class"] = class_path(mcfg)
        rec["model_config"] = config_to_dict(mcfg)
    return rec


# ------------------------------------------------------------------------------------ loading
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
    cfg = config_from_dict(import_path(rec["config_class"]), rec["config"])
    if init_model is not None:
        model = init_model(cfg)
    elif "model_config_class" in rec:
        mcfg = config_from_dict(import_path(rec["model_config_class"]), rec["model_config"])
        model = import_path(rec["model_class"])(mcfg, rngs=nnx.Rngs(cfg.seed))
    else:
        raise ValueError(f"{path}: the model has no dataclass `config`; pass init_model")
    graphdef, params, rest = split_model(model)
    mngr = checkpoint_manager(path / CHECKPOINT_DIR, cfg.keep_checkpoints)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {path / CHECKPOINT_DIR}")
        ema = restore_ema_params(mngr, step, params)
    finally:
        mngr.close()
    return merge_model(graphdef, ema, rest), cfg
