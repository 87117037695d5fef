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
import itertools
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsa_jax.train import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, Task, TrainConfig, TrainingDiverged,
                           _checkpoint_manager, _config_record, _finite, _read_history, _restore, _save,
                           _scalars, _tqdm, init_train_state, make_optimizer, make_train_step, merge_model,
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

    with jax.default_matmul_precision(cfg.matmul_precision):
        models = [t.init_model(nnx.Rngs(s)) for t, s in zip(tasks, seeds)]
        graphdef, _, rest = split_model(models[0])
        tx = make_optimizer(cfg)
        states = [init_train_state(m, tx, jax.random.PRNGKey(s), penalties) for m, s in zip(models, seeds)]
        mngrs = [_checkpoint_manager(d / CHECKPOINT_DIR, cfg.keep_checkpoints) for d in dirs]
        try:
            start = 0
            common = set.intersection(*(set(m.all_steps()) for m in mngrs)) if resume else set()
            if common:
                start = max(common)
                restored = [_restore(m, start, st) for m, st in zip(mngrs, states)]
                states = [r[0] for r in restored]
                start = int(restored[0][1]["step"])
            histories = [_read_history(d / METRICS_FILE, start) for d in dirs]
            for d, c, t, m in zip(dirs, cfgs, tasks, models):
                d.mkdir(parents=True, exist_ok=True)
                (d / CONFIG_FILE).write_text(json.dumps(_config_record(c, t, m), indent=2) + "\n")
            (out / MULTISEED_FILE).write_text(json.dumps(
                {"seeds": seeds, "runs": [str(d) for d in dirs]}, indent=2) + "\n")
            del models
            state = stack_trees(states)
            del states
            if start < stop:
                step_fn = make_multiseed_train_step(graphdef, tasks[0], tx, penalties, cfg=cfg, rest=rest)
                state = _loop(cfg, tasks, seeds, state, step_fn, mngrs, start, stop, spe, histories, dirs,
                              graphdef, rest)
        finally:
            for m in mngrs:
                m.close()
    return [merge_model(graphdef, unstack_tree(state.ema_params, i), rest) for i in range(len(seeds))], histories


def _loop(cfg, tasks, seeds, state, step_fn, mngrs, start, stop, spe, histories, dirs, graphdef, rest):
    t0 = time.time()
    n = len(seeds)
    pending: list = []                  # (step, stacked device metrics)
    checked: list = [[] for _ in seeds]  # per seed: host scalar metrics not yet logged
    last_saved = [m.latest_step() for m in mngrs]
    bar = _tqdm(stop, start, cfg.progress)

    def write(i, rec):
        histories[i].append(rec)
        with open(dirs[i] / METRICS_FILE, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def check():
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host):
            for i in range(n):
                mi = {k: np.asarray(v)[i] for k, v in m.items()}
                if not _finite(mi):
                    pending.clear()
                    err = TrainingDiverged(s, _scalars(mi), last_saved[i])
                    err.seed = seeds[i]
                    err.add_note(f"in seed {seeds[i]} of the multi-seed run {seeds}")
                    raise err
                checked[i].append(_scalars(mi))
        pending.clear()

    def log(step, epoch):
        check()
        for i in range(n):
            if checked[i]:
                mean = {k: float(np.mean([m[k] for m in checked[i]])) for k in checked[i][-1]}
                checked[i].clear()
                write(i, {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3), **mean})

    def save(step, epoch, pos):
        check()
        for i, m in enumerate(mngrs):
            if last_saved[i] != step:
                _save(m, unstack_tree(state, i), {"step": step, "epoch": epoch, "batch_in_epoch": pos})
                last_saved[i] = step

    step = start
    try:
        for epoch in range(start // spe, math.ceil(stop / spe)):
            pos0 = step - epoch * spe
            its = [itertools.islice(iter(t.train_batches(epoch)), pos0, None) for t in tasks]
            for pos, batches in enumerate(zip(*its), start=pos0 + 1):
                state, metrics = step_fn(state, stack_batches(batches))
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
                raise RuntimeError(f"train_batches({epoch}) of some seed yielded {step - epoch * spe} batches, "
                                   f"steps_per_epoch says {spe}")
            log(step, epoch)
            epoch_done = step == (epoch + 1) * spe
            if cfg.eval_every > 0 and epoch_done and ((epoch + 1) % cfg.eval_every == 0 or step >= stop):
                for i, t in enumerate(tasks):
                    if t.evaluate is not None:
                        ev = t.evaluate(merge_model(graphdef, unstack_tree(state.ema_params, i), rest))
                        write(i, {"step": step, "epoch": epoch, "time": round(time.time() - t0, 3),
                                  **{f"eval/{k}": float(v) for k, v in ev.items() if np.ndim(v) == 0}})
            if step >= stop:
                save(step, epoch if not epoch_done else epoch + 1, 0 if epoch_done else step - epoch * spe)
                break
    finally:
        bar.close()
    return state


def main(argv=None):
    """``python -m rsa_jax.multiseed --seeds 0 1 2 3 4 [--model-kind itrsa] [--out DIR] ...``: Sudoku, S seeds."""
    import argparse

    from rsa_jax.tasks.sudoku import load_sets, sudoku_task
    from rsa_jax.train import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(description="Train several seeds of a looped Sudoku solver in one program.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    add_dataclass_args(parser, TrainConfig, exclude=("seed",))
    parser.add_argument("--no-resume", action="store_true", help="start afresh, deleting old checkpoints")
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(args, TrainConfig)
    tr, ev = load_sets(cfg)
    _, histories = train_multiseed(cfg, lambda c: sudoku_task(c, tr, ev["satnet_test"]), args.seeds,
                                   resume=not args.no_resume)
    last = {}
    for seed, hist in zip(args.seeds, histories):
        evals = [r for r in hist if any(k.startswith("eval/") for k in r)]
        last[seed] = evals[-1] if evals else hist[-1] if hist else {}
    print(json.dumps(last, indent=2))


if __name__ == "__main__":
    main()
