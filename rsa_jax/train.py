"""Task-agnostic training: config, the training loop (logging, NaN stop, Orbax resume, evaluation), loading.

The training step is a pure function of pytrees,

    train_step(state: TrainState, batch: dict) -> (TrainState, metrics: dict)

so ``jax.vmap`` over seeds (a leading axis on every leaf of ``state``) and ``jax.sharding``
(shard ``batch``, replicate ``state``) apply to it unchanged; ``make_train_step(..., jit=False)``
returns the raw function for such wrapping. A model enters the step as ``nnx.split`` pieces: the
static ``graphdef`` is closed over, the ``nnx.Param`` leaves travel in ``TrainState.params`` as a
pure dict, and any non-``Param`` state (none in this project's models) is a closed-over constant.

The configuration and the task's interface (:class:`TrainConfig`, :class:`Task`) live in
:mod:`rsa_jax.train_config`; the state, the pure step, the optimizer and the EMA in :mod:`rsa_jax.train_state`;
the run directory (checkpoints, ``config.json``, ``metrics.jsonl``, :func:`load_model`) in :mod:`rsa_jax.runs`;
the dataclass <-> JSON / command-line plumbing in :mod:`rsa_jax.config`; all are re-exported here.
A *task* supplies the model, the loss and the data (see :class:`Task`); this module knows nothing
about Sudoku or images and has no command line (the Sudoku training command is
``python -m rsa_jax.tasks.sudoku``). Usage::

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

import dataclasses
import itertools
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from flax import nnx

from rsa_jax.config import (  # noqa: F401  (re-exported: rsa_jax.train.config_to_dict etc. stay importable)
    _class_path, _import_path, add_dataclass_args, class_path, config_from_dict, config_to_dict, dataclass_from_args)
from rsa_jax.runs import (  # noqa: F401  (re-exported)
    CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, checkpoint_manager, config_record, load_model, read_history,
    restore_checkpoint, restore_ema_params, save_checkpoint)
from rsa_jax.train_config import DEFAULT_LR, FALLBACK_LR, Task, TrainConfig  # noqa: F401  (re-exported)
from rsa_jax.train_state import (  # noqa: F401  (re-exported)
    TrainState, ema_update, init_train_state, make_optimizer, make_penalties, make_train_step, merge_model, split_model)


class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradient norm. ``step`` is the 1-based optimizer step that produced it
    (the parameters after step ``step - 1`` were finite); ``last_checkpoint`` is the step of the
    newest checkpoint on disk (never a diverged state), or None."""

    def __init__(self, step: int, metrics: dict, last_checkpoint: Optional[int]):
        self.step, self.metrics, self.last_checkpoint = step, metrics, last_checkpoint
        shown = {k: v for k, v in metrics.items() if k in ("loss", "total_loss", "grad_norm")}
        super().__init__(f"training diverged at step {step}: non-finite {shown}; last good checkpoint: "
                         f"{'none' if last_checkpoint is None else f'step {last_checkpoint}'} (not overwritten)")


# ----------------------------------------------------------------------------------- training
def _finite(m: dict) -> bool:
    return all(np.all(np.isfinite(m[k])) for k in ("loss", "total_loss", "grad_norm") if k in m)


def _scalars(m: dict) -> dict:
    return {k: float(v) for k, v in m.items() if np.ndim(v) == 0}


def _tqdm(total, initial, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not (enabled and sys.stderr.isatty()),
                dynamic_ncols=True, desc="train")


def _config_changes(old: dict, cfg) -> list:
    """``(field, old, new)`` for each field (nested ones dotted: ``model.param_init``) that differs between a run's
    recorded config ``old`` and ``cfg``, bookkeeping fields ignored. ``old`` is read as every record is
    (``config_from_dict``: a missing field takes its default, or its ``WHEN_ABSENT`` value)."""
    ignore = {"epochs", "max_steps", "time_budget", "eval_live", "checkpoint_every", "keep_checkpoints", "log_every",
              "eval_every", "progress", "out", "data_dir", "eval_limit", "data_parallel"}

    def diff(old, new, prefix=""):
        return [c for k in sorted(set(old) | set(new)) if k not in ignore and old.get(k) != new.get(k)
                for c in (diff(old[k], new[k], f"{prefix}{k}.") if isinstance(old.get(k), dict)
                          and isinstance(new.get(k), dict) else [(prefix + k, old.get(k), new.get(k))])]

    return diff(config_to_dict(config_from_dict(type(cfg), old)), config_to_dict(cfg))


def train(cfg: TrainConfig, task: Task, penalties: Sequence = (), resume: bool = True):
    """Trains ``task`` under ``cfg``, checkpointing to ``<cfg.out>/checkpoints``.

    Args:
      cfg: configuration; ``cfg.out`` is the run directory.
      task: see :class:`Task`.
      penalties: see the module docstring; their states are checkpointed with the rest. The penalty
        named by ``cfg.penalty`` (``make_penalties``) is added to these.
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
    started = time.time()
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
    penalties = (*penalties, *make_penalties(cfg))

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
                changed = _config_changes(json.loads(old.read_text()).get("config", {}), cfg) if old.exists() else []
                said = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
                if changed:
                    warnings.warn("resuming with a changed config: " + said, stacklevel=2)
                try:
                    state, meta = restore_checkpoint(mngr, latest, state)
                except ValueError as e:   # orbax: the saved tree is not this model's
                    flags = " ".join(f"--{k.replace('.', '-').replace('_', '-')} {a}" for k, a, _ in changed)
                    raise ValueError(
                        f"{ckpt_dir}: the step-{latest} checkpoint does not fit the model this config builds "
                        f"(changed: {said or 'no recorded field'}). Resume with the options it was trained with "
                        f"(its {CONFIG_FILE}{': ' + flags if flags else ''}) or start afresh (resume=False, "
                        "--no-resume)") from e
                start = int(meta["step"])
            history = read_history(metrics_path, start)
            (out / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if start < stop:
                combine = None
                if cfg.data_parallel:
                    from rsa_jax.parallel import make_mesh, make_sharded_train_step, replicate, shard_batch
                    mesh = make_mesh()
                    pure = make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest, jit=False)
                    step_fn = make_sharded_train_step(pure, mesh, donate=True)
                    state = replicate(state, mesh)
                    combine = lambda batches: shard_batch(batches[0], mesh)
                else:
                    step_fn = make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest)
                state = run_loop(cfg, [RunLane(task, mngr, history, metrics_path)], state, step_fn, start, stop,
                                 spe, graphdef, rest, combine=combine, started=started)
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
             graphdef, rest, *, pick: Optional[Callable] = None, combine: Optional[Callable] = None,
             started: Optional[float] = None):
    """Steps ``start -> stop`` with logging, NaN checks, checkpoints and evaluation; returns the state.

    One lane is a plain run (``pick``/``combine`` None). Several lanes share one stacked state
    (``rsa_jax.multiseed``): ``pick(tree, i)`` takes lane ``i``'s part of a stacked pytree and
    ``combine(batches)`` stacks the lanes' batches of a step (a plain run may pass ``combine`` alone,
    e.g. to shard its batch over devices). Metrics are fetched from the device
    only when logged or checkpointed, so the host never waits on every step; a non-finite loss or
    gradient norm raises :class:`TrainingDiverged` before anything of that step is saved.

    With ``cfg.time_budget``, the loop stops at the first step boundary where another step (at the
    pace of the recent steps, twice over for safety) would pass ``started + cfg.time_budget``
    (``started``: ``time.time()`` when the caller began, default now), checkpoints, evaluates
    (if ``cfg.eval_every``) and writes a ``{"event": "time_budget"}`` record. Without a terminal the
    progress bar is replaced by one line on stderr per logged record (at most one per 30 s).
    """
    single = pick is None
    deadline = None if cfg.time_budget is None else (started or time.time()) + float(cfg.time_budget)
    recent: list = []                     # wall times of the last steps, for the deadline check
    last_line = [0.0]
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
                if bar.disable and time.time() - last_line[0] >= 30:
                    last_line[0] = time.time()
                    print(f"train step {step}/{stop} epoch {epoch} {time.time() - t0:.0f}s "
                          + " ".join(f"{k} {v}" for k, v in post.items()), file=sys.stderr, flush=True)

    def save(step, epoch, pos):
        log(step, epoch)    # every step lands in exactly one record, so resumed histories match
        for i, lane in enumerate(lanes):
            if last_saved[i] != step:
                save_checkpoint(lane.mngr, pick(state, i), {"step": step, "epoch": epoch, "batch_in_epoch": pos})
                last_saved[i] = step

    def evaluate(step, epoch):
        for i, lane in enumerate(lanes):
            if lane.task.evaluate is None:
                continue
            trees = [("eval", state.ema_params)] + ([("eval_live", state.params)] if cfg.eval_live else [])
            rec = {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3)}
            for prefix, tree in trees:
                ev = lane.task.evaluate(merge_model(graphdef, pick(tree, i), rest))
                rec.update({f"{prefix}/{k}": float(v) for k, v in ev.items() if np.ndim(v) == 0})
            write(i, rec)
            if i == 0 and bar.disable:
                print("evaluation " + " ".join(f"{k} {v:.4f}" for k, v in rec.items() if "/" in k),
                      file=sys.stderr, flush=True)

    def out_of_time() -> bool:
        if deadline is None:
            return False
        recent.append(time.time())
        del recent[:-11]
        pace = (recent[-1] - recent[0]) / (len(recent) - 1) if len(recent) > 1 else 0.0
        return time.time() + 2 * pace >= deadline

    step = start
    timed_out = deadline is not None and time.time() >= deadline
    try:
        for epoch in range(start // spe, math.ceil(stop / spe)):
            if timed_out:
                break
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
                if step < stop and out_of_time():
                    timed_out = True
                    break
                if step >= stop or pos >= spe:
                    break
            if timed_out:
                epoch_done = step == (epoch + 1) * spe
                save(step, epoch + 1 if epoch_done else epoch, 0 if epoch_done else step - epoch * spe)
                if cfg.eval_every > 0:
                    evaluate(step, epoch)
                for i in range(len(lanes)):
                    write(i, {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3), "event": "time_budget"})
                print(f"time budget of {cfg.time_budget:g} s reached: stopped at step {step}/{stop} and saved a "
                      f"checkpoint; run the same command again to resume", file=sys.stderr, flush=True)
                break
            if step - epoch * spe < spe and step < stop:
                raise RuntimeError(f"train_batches({epoch}) yielded {step - epoch * spe} batches, "
                                   f"steps_per_epoch says {spe}")
            log(step, epoch)
            epoch_done = step == (epoch + 1) * spe
            if cfg.eval_every > 0 and (step >= stop or epoch_done and (epoch + 1) % cfg.eval_every == 0):
                evaluate(step, epoch)
            if step >= stop:
                save(step, epoch if not epoch_done else epoch + 1, 0 if epoch_done else step - epoch * spe)
                break
    finally:
        bar.close()
    return state


if __name__ == "__main__":   # the old command: say where it went instead of exiting silently
    raise SystemExit(f"python -m {__spec__.name if __spec__ else 'rsa_jax'} has no command line; train with "
                     "python -m rsa_jax.tasks.sudoku (same flags; --seeds for several seeds)")
