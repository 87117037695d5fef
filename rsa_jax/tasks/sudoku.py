"""The Sudoku task (the paper's protocol, appendix B.1): train on SATNet, cross-entropy over all 81 cells at step T.

    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=64, heads=4), train_limit=500, out="runs/x")
    model, history = train(cfg, sudoku_task(cfg))

Data come from :mod:`rsa_jax.data.sudoku`: ``cfg.data_dir``, else ``$RSA_JAX_SUDOKU_DIR``, else the
repository's committed ``data/sudoku``; missing files are an error, and generated stand-in puzzles are
used only with ``--data-dir synthetic`` (with a loud warning). The data order of epoch ``e`` is the permutation fixed by
``(cfg.seed, e)`` (``batch_iterator``), which makes resumed runs exact.

The command line trains a model (every :class:`~rsa_jax.train.TrainConfig` field is a flag; ``--seeds``
trains several seeds in one vmapped program, :mod:`rsa_jax.multiseed`)::

    python -m rsa_jax.tasks.sudoku --model-kind itrsa --model-d 64 --model-heads 4 --out runs/itrsa
    python -m rsa_jax.tasks.sudoku --seeds 0 1 2 --model-kind akorn --out runs/akorn3     # runs/akorn3/seed_<s>
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from rsa_jax.config import add_dataclass_args, dataclass_from_args
from rsa_jax.data.sudoku import SudokuSet, batch_iterator, load_or_generate
from rsa_jax.models.sudoku import SudokuModel
from rsa_jax.multiseed import train_multiseed
from rsa_jax.train import Task, TrainConfig, train

#: generated stand-in sizes when the data files are missing (``train_limit`` / ``eval_limit`` win)
FALLBACK_TRAIN, FALLBACK_EVAL = 500, 200


def sudoku_metrics(logits: jnp.ndarray, target: jnp.ndarray, given: jnp.ndarray):
    """``(cell_acc, board_acc)`` of ``(B, 81, 9)`` logits: blank cells right, boards with all blanks right."""
    right = jnp.argmax(logits, -1).astype(target.dtype) == target
    blank = ~given
    cell_acc = jnp.sum(right & blank) / jnp.maximum(jnp.sum(blank), 1)
    return cell_acc, jnp.mean(jnp.all(right | given, axis=-1))


def sudoku_loss(model: SudokuModel, batch: dict, key: jax.Array, steps: int, *, trajectory: bool = False):
    """Cross-entropy over all 81 cells after ``steps`` updates, with batch accuracies.

    Args:
      model: a :class:`SudokuModel`.
      batch: ``digits`` (B, 81) int (0 = blank), ``given`` (B, 81) bool, ``target`` (B, 81) int in 0..8.
      key: PRNG key of the blank cells' random initial state.
      steps: T.
      trajectory: also put the visited states ``(T, B, 81, D)`` in ``aux["xs"]`` (alias
        ``aux["trajectory"]``), the key ``rsa_jax.regularizers.JacobianPenalty`` reads.

    Returns:
      ``(loss, metrics)``: ``metrics`` has ``loss``, ``cell_acc`` (blank cells right),
      ``board_acc`` (boards with all blank cells right) and ``aux = {"c", "x0", "x"}``
      (conditioning, initial and final state, each (B, 81, D)) for penalties.
    """
    digits, given, target = jnp.asarray(batch["digits"]), jnp.asarray(batch["given"]), jnp.asarray(batch["target"])
    c, x0 = model.condition(digits, given, key)
    x, aux = model.rollout_aux(c, x0, steps, trajectory=trajectory)
    logits = model.readout(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    cell_acc, board_acc = sudoku_metrics(logits, target, given)
    return loss, {"loss": loss, "cell_acc": cell_acc, "board_acc": board_acc, "aux": aux}


def load_sets(cfg: TrainConfig, *, train: str = "satnet_train", evals=("satnet_test",)):
    """``(train_set, {name: eval_set})`` under ``cfg.data_dir`` / ``train_limit`` / ``eval_limit``,
    generated stand-ins (with a warning) where files are missing."""
    def get(name, limit, fallback, seed):
        return load_or_generate(name, cfg.data_dir, n_fallback=limit or fallback, seed=seed, limit=limit)
    tr = get(train, cfg.train_limit, FALLBACK_TRAIN, 0)
    return tr, {name: get(name, cfg.eval_limit, FALLBACK_EVAL, 1 + i) for i, name in enumerate(evals)}


def sudoku_task(cfg: TrainConfig, train_set: Optional[SudokuSet] = None, eval_set: Optional[SudokuSet] = None,
                *, trajectory: bool = False) -> Task:
    """The Sudoku :class:`~rsa_jax.train.Task` for ``cfg``.

    Args:
      cfg: uses ``model``, ``t_train``, ``batch_size``, ``seed``, ``augment``, ``data_dir``, ``train_limit``,
        ``eval_limit``.
      train_set: training puzzles (default: SATNet train, see :func:`load_sets`).
      eval_set: puzzles for ``evaluate`` (default: SATNet test); evaluation reads out at ``t_train``.
      trajectory: hand the full trajectory to penalties (``aux["xs"]``; memory T x state).

    Returns:
      The task; ``evaluate(model)`` returns ``board_acc`` and ``cell_acc`` on ``eval_set``.
    """
    if train_set is None or eval_set is None:
        tr, ev = load_sets(cfg)
        train_set = tr if train_set is None else train_set
        eval_set = ev["satnet_test"] if eval_set is None else eval_set
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training puzzles < batch_size {cfg.batch_size}")
    t = cfg.t_train

    def evaluate(model):
        from rsa_jax.evaluate import evaluate_boards
        r = evaluate_boards(model, eval_set, steps_list=(t,), batch_size=min(cfg.batch_size, len(eval_set)),
                            key=jax.random.PRNGKey(cfg.seed + 1))
        return {"board_acc": r["board_acc"][0], "cell_acc": r["cell_acc"][0]}

    return Task(
        init_model=lambda rngs: SudokuModel(cfg.model, rngs=rngs),
        loss_fn=lambda model, batch, key: sudoku_loss(model, batch, key, t, trajectory=trajectory),
        train_batches=lambda epoch: batch_iterator(train_set, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                                   augment_data=cfg.augment),
        steps_per_epoch=steps_per_epoch,
        evaluate=evaluate,
        name="sudoku",
    )


# ------------------------------------------------------------------------------------- CLI
def build_parser(default_seeds: Optional[Sequence[int]] = None) -> argparse.ArgumentParser:
    """The parser of :func:`main`: every ``TrainConfig`` field, ``--seeds`` and ``--no-resume``."""
    parser = argparse.ArgumentParser(prog="python -m rsa_jax.tasks.sudoku",
                                     description="Train a looped Sudoku solver (rsa_jax.train on the Sudoku task). "
                                                 "The run directory --out loads back with rsa_jax.train.load_model.")
    add_dataclass_args(parser, TrainConfig)
    shown = " ".join(map(str, default_seeds)) if default_seeds else "none: one run with --seed"
    parser.add_argument("--seeds", type=int, nargs="+", default=None if default_seeds is None else list(default_seeds),
                        help="train these seeds at once in one vmapped program (rsa_jax.multiseed), each in "
                             f"<out>/seed_<s> (default: {shown})")
    parser.add_argument("--no-resume", action="store_true", help="start afresh, deleting old checkpoints")
    return parser


def _last_record(history: list) -> dict:
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    return evals[-1] if evals else history[-1] if history else {}


def main(argv: Optional[Sequence[str]] = None, *, default_seeds: Optional[Sequence[int]] = None) -> dict:
    """``python -m rsa_jax.tasks.sudoku [--model-kind itrsa] [--out DIR] [--seeds 0 1 2] ...``.

    Trains (or resumes, or just loads a finished run in) ``--out`` and prints the last evaluation
    record (per seed with ``--seeds``) as JSON, which it also returns.
    """
    parser = build_parser(default_seeds)
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(args, TrainConfig)
    if args.seeds:
        if "seed" in vars(args):
            parser.error("give --seed (one run) or --seeds (several), not both")
        tr, ev = load_sets(cfg)
        _, histories = train_multiseed(cfg, lambda c: sudoku_task(c, tr, ev["satnet_test"]), args.seeds,
                                       resume=not args.no_resume)
        last = {seed: _last_record(h) for seed, h in zip(args.seeds, histories)}
    else:
        _, history = train(cfg, sudoku_task(cfg), resume=not args.no_resume)
        last = _last_record(history)
    print(json.dumps(last, indent=2))
    return last


if __name__ == "__main__":
    main()
