"""Several seeds as one compiled program: ``jax.vmap`` of the whole train step over a seed axis.

Every leaf of :class:`rsa_jax.train.TrainState` (parameters, optimizer state, EMA, step, PRNG
key, penalty states) gets a leading axis of size ``len(seeds)``, and so does every batch (the
per-seed batches of the same step, each in its own seed's data order, stacked). One jitted
``vmap(train_step)`` then advances all seeds at once: on an accelerator the S small programs
become one program with S-times larger matmuls.

Seed ``s`` of ``train_multiseed(cfg, task, seeds)`` is the run ``train(cfg_s, task_s)`` with
``cfg_s = replace(cfg, seed=s, out=<cfg.out>/seed_<s>)`` (:func:`seed_config`): the same
parameter init (``nnx.Rngs(s)``), PRNG key (``PRNGKey(s)``), data order and EMA; the results
agree up to floating-point rounding (``tests/test_multiseed.py``). Each ``<cfg.out>/seed_<s>``
is written as an ordinary run directory (``config.json``, ``metrics.jsonl``, ``checkpoints/``), so
``rsa_jax.train.load_model(<cfg.out>/seed_<s>)`` loads it and ``train(cfg_s, task_s)`` could
continue it alone. Resume picks the newest step checkpointed in every seed directory.

    from rsa_jax.multiseed import train_multiseed
    from rsa_jax.tasks.sudoku import load_sets, sudoku_task
    tr, ev = load_sets(cfg)
    models, histories = train_multiseed(cfg, lambda c: sudoku_task(c, tr, ev["satnet_test"]),
                                        seeds=range(5))

``task`` is a task factory ``cfg_s -> Task`` (per-seed data order, as above) or one ``Task``
shared by all seeds (same data order for every seed; only the init and the noise differ). The
tasks of the seeds must share the model architecture and the loss; only their data may differ.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsa_jax.runs import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, checkpoint_manager, config_record, read_history,
                          restore_checkpoint)
from rsa_jax.train import RunLane, run_loop
from rsa_jax.train_config import Task, TrainConfig
from rsa_jax.train_state import (init_train_state, make_optimizer, make_penalties, make_train_step, merge_model,
                                 split_model)

MULTISEED_FILE = "multiseed.json"


def seed_config(cfg: TrainConfig, seed: int) -> TrainConfig:
    """The single-seed config that seed ``seed`` of a multi-seed run reproduces."""
    return dataclasses.replace(cfg, seed=int(seed), out=str(Path(cfg.out) / f"seed_{int(seed)}"))


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stacks structurally identical pytrees along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def unstack_tree(tree: Any, i: int) -> Any:
    """Entry ``i`` of the leading axis of every leaf."""
    return jax.tree.map(lambda a: a[i], tree)


def stack_batches(batches: Sequence[dict]) -> dict:
    """Per-seed batches (dicts of NumPy arrays, same shapes) -> one dict of ``(S, ...)`` arrays."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def make_multiseed_train_step(graphdef, task: Task, tx, penalties: Sequence = (), *, cfg: TrainConfig | None = None,
                              rest=None, jit: bool = True) -> Callable:
    """``vmap`` of :func:`rsa_jax.train.make_train_step` over a leading seed axis.

    The returned ``step(states, batches) -> (states, metrics)`` takes a stacked
    :class:`~rsa_jax.train.TrainState` and stacked batches (:func:`stack_batches`) and returns
    metrics with a leading seed axis. ``jit=True`` wraps it in ``jax.jit(donate_argnums=0)``.
    """
    step = jax.vmap(make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest, jit=False))
    return jax.jit(step, donate_argnums=0) if jit else step


def _is_task(obj) -> bool:
    return all(hasattr(obj, a) for a in ("init_model", "loss_fn", "train_batches", "steps_per_epoch"))


def train_multiseed(cfg: TrainConfig, task: Union[Task, Callable[[TrainConfig], Task]], seeds: Sequence[int],
                    penalties: Sequence = (), resume: bool = True):
    """Trains one model per seed, all seeds in one vmapped, jitted step (see the module docstring).

    Args:
      cfg: shared configuration; ``cfg.seed`` is ignored, ``cfg.out`` holds one ``seed_<s>``
        run directory per seed and ``multiseed.json``.
      task: a factory ``cfg_s -> Task`` (called with :func:`seed_config`) or one shared ``Task``.
      seeds: distinct integer seeds.
      penalties: as for :func:`rsa_jax.train.train` (shared objects, per-seed states).
      resume: continue from the newest step checkpointed in every seed directory; ``False``
        deletes old checkpoints and metrics first.

    Returns:
      ``(models, histories)``: per seed, the model holding its EMA parameters and its list of
      metric records (as :func:`rsa_jax.train.train` returns for one seed).

    Raises:
      TrainingDiverged: a seed produced a non-finite loss or gradient norm (``err.seed`` names
        it); nothing is saved for that step.
    """
    started = time.time()
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = [seed_config(cfg, s) for s in seeds]
    tasks = [task] * len(seeds) if _is_task(task) else [task(c) for c in cfgs]
    spe = int(tasks[0].steps_per_epoch)
    if spe <= 0 or any(int(t.steps_per_epoch) != spe for t in tasks):
        raise ValueError(f"every seed's task needs the same positive steps_per_epoch; got "
                         f"{[t.steps_per_epoch for t in tasks]}")
    dirs = [Path(c.out) for c in cfgs]
    if not resume:
        for d in dirs:
            shutil.rmtree(d / CHECKPOINT_DIR, ignore_errors=True)
            (d / METRICS_FILE).unlink(missing_ok=True)
    total = cfg.epochs * spe
    stop = total if cfg.max_steps is None else min(total, int(cfg.max_steps))
    penalties = (*penalties, *make_penalties(cfg))

    with jax.default_matmul_precision(cfg.matmul_precision):
        models = [t.init_model(nnx.Rngs(s)) for t, s in zip(tasks, seeds)]
        graphdef, _, rest = split_model(models[0])
        tx = make_optimizer(cfg)
        states = [init_train_state(m, tx, jax.random.PRNGKey(s), penalties) for m, s in zip(models, seeds)]
        mngrs = [checkpoint_manager(d / CHECKPOINT_DIR, cfg.keep_checkpoints) for d in dirs]
        try:
            start = 0
            common = set.intersection(*(set(m.all_steps()) for m in mngrs)) if resume else set()
            if common:
                start = max(common)
                restored = [restore_checkpoint(m, start, st) for m, st in zip(mngrs, states)]
                states = [r[0] for r in restored]
                start = int(restored[0][1]["step"])
            histories = [read_history(d / METRICS_FILE, start) for d in dirs]
            for d, c, t, m in zip(dirs, cfgs, tasks, models):
                d.mkdir(parents=True, exist_ok=True)
                (d / CONFIG_FILE).write_text(json.dumps(config_record(c, t, m), indent=2) + "\n")
            (out / MULTISEED_FILE).write_text(json.dumps(
                {"seeds": seeds, "runs": [str(d) for d in dirs]}, indent=2) + "\n")
            del models
            state = stack_trees(states)
            del states
            if start < stop:
                step_fn = make_multiseed_train_step(graphdef, tasks[0], tx, penalties, cfg=cfg, rest=rest)
                lanes = [RunLane(t, m, h, d / METRICS_FILE, s)
                         for t, m, h, d, s in zip(tasks, mngrs, histories, dirs, seeds)]
                state = run_loop(cfg, lanes, state, step_fn, start, stop, spe, graphdef, rest, pick=unstack_tree,
                                 combine=stack_batches, started=started)
        finally:
            for m in mngrs:
                m.close()
    return [merge_model(graphdef, unstack_tree(state.ema_params, i), rest) for i in range(len(seeds))], histories


if __name__ == "__main__":   # the old command: say where it went instead of exiting silently
    raise SystemExit(f"python -m {__spec__.name if __spec__ else 'rsa_jax'} has no command line; train with "
                     "python -m rsa_jax.tasks.sudoku (same flags; --seeds for several seeds)")
