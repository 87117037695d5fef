"""Plumbing shared by the Sudoku sweep experiments (oscillator_size, heads, gamma_table, regularization).

Each sweep trains a few model variants over seeds (or takes trained models given with ``--checkpoints``:
shipped names, ``.npz`` files or run directories), then reads numbers off the trained models:
OOD test-time-scaling curves, Lyapunov exponents of the trained pure step, learned RMSNorm gamma.
The pieces here do that and nothing else::

    sets = load_sets(args.data_dir, train=400, id=100, ood=100)
    runs = train_variant(base_cfg, out / "runs" / "itrsa_H4", [0, 1], sets["train"], sets["id"])
    for seed, model, run_dir in runs:
        le = model_lyapunov(model, *lyapunov_puzzle(sets["ood"]), T=16, k=8, key=jax.random.PRNGKey(seed))
        ev = evaluate_boards(model, sets["ood"], t_eval)
    given = load_checkpoints(args.checkpoints)   # [(label, model, train_config)] instead of training

Runs live in ``run_dir/seed_<s>``; re-running resumes an unfinished run and reuses a finished one
(``retrain=True`` starts afresh). Several seeds train in one vmapped program
(``rsa_jax.multiseed``), one seed with ``rsa_jax.train.train``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsa_jax.configs import OSCILLATOR_CPU, OSCILLATOR_FULL, apply_preset  # noqa: F401  (re-exported)
from rsa_jax.data.sudoku import SudokuSet, load_or_generate
from rsa_jax.lyapunov import lyapunov_spectrum, max_lyapunov, mean_lyapunov, null_directions
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.tasks.sudoku import sudoku_task
from rsa_jax.train import TrainConfig, train

#: help text of the experiments' --checkpoint / --checkpoints flags
CHECKPOINT_HELP = "shipped model name (rsa_jax.pretrained.names()), .npz file or run directory"

#: split name -> (generated stand-in seed, stand-in size when no limit is given)
SPLITS = {"train": ("satnet_train", 0, 500), "id": ("satnet_test", 1, 200), "ood": ("rrn_test", 2, 200),
          "valid": ("rrn_valid", 3, 200)}


def load_sets(data_dir: str | None, **limits: int | None) -> dict:
    """Loads the named splits, each cut to its limit.

    Args:
      data_dir: Sudoku data directory (None: ``$RSA_JAX_SUDOKU_DIR`` or the repository's data/sudoku;
        ``"synthetic"``: generated stand-ins, with a loud warning).
      **limits: ``train``, ``id`` (SATNet test), ``ood`` (RRN test), ``valid`` (RRN valid) -> number
        of puzzles (None: all). Only the splits named are loaded.

    Returns:
      ``{name: SudokuSet}``.
    """
    out = {}
    for name, limit in limits.items():
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLITS)}")
        split, seed, fallback = SPLITS[name]
        out[name] = load_or_generate(split, data_dir, n_fallback=limit or fallback, seed=seed, limit=limit)
    return out


def train_variant(base: TrainConfig, run_dir, seeds: Sequence[int], train_set: SudokuSet, id_set: SudokuSet, *,
                  penalties: Sequence = (), retrain: bool = False, trajectory: bool = False) -> list:
    """Trains ``base`` once per seed under ``run_dir/seed_<s>`` (or picks the runs up).

    Args:
      base: training config (``seed`` and ``out`` are replaced).
      run_dir: parent folder of the per-seed runs.
      seeds: training seeds; more than one trains them in one vmapped program.
      train_set, id_set: training puzzles and the puzzles of the in-training evaluation.
      penalties: regularizer objects (``rsa_jax.regularizers``); their states are checkpointed.
      retrain: delete earlier checkpoints and train afresh.
      trajectory: give penalties the visited states (``aux["xs"]``; needed by ``JacobianPenalty``).

    Returns:
      ``[(seed, model, run_dir_of_seed)]`` with the EMA models.
    """
    base = dataclasses.replace(base, out=str(Path(run_dir)))
    task = lambda c: sudoku_task(c, train_set, id_set, trajectory=trajectory)
    if len(seeds) > 1:
        from rsa_jax.multiseed import seed_config, train_multiseed
        models, _ = train_multiseed(base, task, seeds, penalties=penalties, resume=not retrain)
        return [(s, m, seed_config(base, s).out) for s, m in zip(seeds, models)]
    out = []
    for s in seeds:
        cfg = dataclasses.replace(base, seed=s, out=str(Path(run_dir) / f"seed_{s}"))
        model, _ = train(cfg, task(cfg), penalties, resume=not retrain)
        out.append((s, model, cfg.out))
    return out


def load_checkpoint(spec, flag: str = "--checkpoint"):
    """``(model, train_config)`` of a trained model given by ``spec`` (``rsa_jax.pretrained.load_checkpoint``:
    a shipped name, a ``.npz`` file, a folder or a run directory); a bad ``spec`` exits naming ``flag``."""
    from rsa_jax import pretrained
    try:
        return pretrained.load_checkpoint(spec)
    except (FileNotFoundError, KeyError, pretrained.PretrainedError) as e:
        raise SystemExit(f"{flag} {spec}: {e}") from None


def load_checkpoints(specs: Sequence, flag: str = "--checkpoints") -> list:
    """``[(label, model, train_config)]`` of the trained models ``specs`` (see :func:`load_checkpoint`);
    the label is the spec as given (a shipped name or a path)."""
    return [(str(spec), *load_checkpoint(spec, flag)) for spec in specs]


def model_group(mcfg) -> str:
    """Group of a given model in a sweep's output, from its config: ``"itrsa norm=rmsnorm"`` (and
    ``norm_n=...`` for chunked RMSNorm)."""
    norm_n = getattr(mcfg, "norm_n", None)
    return f"{mcfg.kind} norm={mcfg.norm}" + (f" norm_n={norm_n}" if norm_n else "")


def adopt_checkpoint_settings(args, loaded: list, names: Sequence[str] = ("t_train",)) -> list:
    """Sets ``args.<name>`` to the value that all ``loaded`` checkpoints share (read from the training
    config, else the model config; e.g. ``t_train``, ``d``), so that labels, plot marks and ``args.t_eval``
    (which gets ``t_train``) fit the given models. Returns the names whose values differ (left as they were)."""
    mixed = []
    for name in names:
        values = {getattr(cfg, name) if hasattr(cfg, name) else getattr(model.config, name)
                  for _, model, cfg in loaded}
        if len(values) == 1:
            setattr(args, name, values.pop())
        else:
            mixed.append(name)
    if "t_train" not in mixed and isinstance(getattr(args, "t_eval", None), list) and args.t_train not in args.t_eval:
        args.t_eval = sorted(set(args.t_eval) | {args.t_train})
    return mixed


def lyapunov_puzzle(sudoku_set: SudokuSet, index: int = 0):
    """``(digits (81,) int32, given (81,) bool)`` of one puzzle, the start of the Lyapunov analysis."""
    if not 0 <= index < len(sudoku_set):
        raise IndexError(f"puzzle {index} out of range for a set of {len(sudoku_set)}")
    return sudoku_set.puzzles[index].astype(np.int32), sudoku_set.givens[index]


def model_lyapunov(model, digits, given, *, T: int = 16, k: int | None = 16, sweeps: int = 1, key) -> dict:
    """Lyapunov exponents of a trained Sudoku model's pure step at horizon ``T`` on one puzzle.

    The state starts at the model's ``X0`` for the puzzle (``key`` draws the blanks' noise); the
    null (radial) directions of the normalization are excluded when they can be among the
    computed exponents.

    Args:
      model: a ``SudokuModel`` (anything with ``condition`` and ``pure_step``).
      digits, given: ``(81,)`` puzzle (see :func:`lyapunov_puzzle`).
      T: horizon of the finite-time exponents.
      k: leading exponents computed (None: the full spectrum of ``81 D``).
      sweeps: refinement sweeps of ``lyapunov_spectrum``.
      key: PRNG key.

    Returns:
      ``{"max_le", "mean_le", "exponents", "num_null", "dropped"}``: ``mean_le`` is the paper's mean
      LE (over the ``M = n - num_null`` non-null exponents) for the full spectrum, and the mean of the
      leading ``k`` otherwise; ``dropped`` is how many computed exponents were null directions.
    """
    step, params = model.pure_step()
    c, x0 = model.condition(jnp.asarray(digits)[None], jnp.asarray(given)[None], key)
    c, x0 = c[0], x0[0]
    cfg = model.config
    num_null = null_directions(x0.shape, cfg.state_chunk, cfg.norm)
    k = x0.size if k is None else min(k, x0.size)
    drop = max(0, k - (x0.size - num_null))  # a random leading-k start holds no null direction otherwise

    @jax.jit
    def spectrum(params, x0, c):
        return lyapunov_spectrum(lambda x: step(params, x, c), x0, T, k, sweeps=sweeps,
                                 key=jax.random.PRNGKey(1)).exponents

    ex = np.asarray(spectrum(params, x0, c))
    if drop >= k:
        nan = float("nan")
        return {"max_le": nan, "mean_le": nan, "exponents": ex.tolist(), "num_null": num_null, "dropped": drop}
    return {"max_le": float(max_lyapunov(ex)), "mean_le": float(mean_lyapunov(ex, drop)),
            "exponents": ex.tolist(), "num_null": num_null, "dropped": drop}


def learned_gamma(model) -> dict | None:
    """``{"gamma_abs_mean", "gamma_abs_max"}`` of the RMSNorm gain (Table S.1); None without RMSNorm."""
    params = model.pure_step()[1]
    if "gamma" not in params:
        return None
    g = np.abs(np.asarray(params["gamma"], np.float64))
    return {"gamma_abs_mean": float(g.mean()), "gamma_abs_max": float(g.max())}


def mean_std(values) -> tuple:
    """``(mean, std)`` over axis 0 (seeds) as NumPy arrays (floats for scalars)."""
    v = np.asarray(values, np.float64)
    m, s = v.mean(0), v.std(0)
    return (float(m), float(s)) if v.ndim == 1 else (m, s)


def plot_curve(ax, t_eval, acc, label: str, color=None, marker: str = "o"):
    """Mean curve of ``acc`` ``(seeds, len(t_eval))`` in percent, with a +-1 std band over seeds."""
    acc = 100 * np.asarray(acc, np.float64)
    m, s = acc.mean(0), acc.std(0)
    line, = ax.plot(t_eval, m, marker + "-", ms=3, color=color, label=label)
    if acc.shape[0] > 1:
        ax.fill_between(t_eval, m - s, m + s, color=line.get_color(), alpha=0.15)
    return line


def add_training_flags(parser, cpu: dict, full: dict, *, seeds: bool = True):
    """Adds the training flags of a Sudoku sweep, named as in ``experiments.oscillator_size`` (so its
    ``train_config(args, ...)`` reads them): ``--data-dir``, ``--seeds``, ``--epochs``, ``--batch-size``,
    ``--lr``, ``--t-train``, ``--train-limit``, ``--id-limit``, ``--retrain``.

    Defaults are None, filled by ``rsa_jax.configs.apply_preset`` from ``cpu`` or ``full`` (``--full``);
    the help texts show both. Keys needed in the presets: ``epochs, batch_size, lr, train_limit, id_limit``
    (and ``seeds`` with ``seeds=True``); ``t_train`` comes from the presets if they have it, else 16.

    Args:
      parser: an ``argparse`` parser or argument group.
      cpu, full: the presets (``rsa_jax.configs`` presets or dicts).
      seeds: add ``--seeds`` (a list of training seeds).
    """
    both = lambda k, fmt=str: f"[cpu {fmt(cpu[k])}, full {fmt(full[k])}]"
    everything = lambda v: "all" if v is None else v
    parser.add_argument("--data-dir", default=None,
                        help="Sudoku data directory (default: $RSA_JAX_SUDOKU_DIR, else the repository's data/sudoku; "
                             "`synthetic`: generated stand-ins, with a warning)")
    if seeds:
        parser.add_argument("--seeds", nargs="+", type=int, default=None,
                            help=f"training seeds; several are trained at once with rsa_jax.multiseed {both('seeds')}")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs {both('epochs')}")
    parser.add_argument("--batch-size", type=int, default=None, help=f"training batch size {both('batch_size')}")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam learning rate {both('lr', lambda v: 'per-kind default' if v is None else v)} "
                             "(per-kind default: rsa_jax.train.DEFAULT_LR)")
    if "t_train" in cpu:
        parser.add_argument("--t-train", type=int, default=None,
                            help=f"recurrent steps T in training {both('t_train')}")
    else:
        parser.add_argument("--t-train", type=int, default=16, help="recurrent steps T in training (default: 16)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help=f"first N SATNet training puzzles {both('train_limit', everything)}")
    parser.add_argument("--id-limit", type=int, default=None,
                        help=f"first N SATNet test puzzles (ID) {both('id_limit', everything)}")
    parser.add_argument("--retrain", action="store_true", help="delete and redo existing runs under <out>/runs")


def add_ood_eval_flags(parser, cpu: dict, full: dict):
    """Adds ``--t-eval``, ``--eval-limit`` (RRN test puzzles) and ``--eval-batch-size``; the presets need
    ``t_eval`` and ``eval_limit``."""
    parser.add_argument("--t-eval", nargs="+", type=int, default=None,
                        help=f"T_eval values, all read out of one rollout [cpu {cpu['t_eval']}, full {full['t_eval']}]")
    parser.add_argument("--eval-limit", type=int, default=None,
                        help=f"first N RRN test puzzles (OOD) [cpu {cpu['eval_limit']}, full all 18000]")
    parser.add_argument("--eval-batch-size", type=int, default=100, help="puzzles per evaluation batch (default: 100)")


# --- oscillator-size sweeps (experiments.oscillator_size, experiments.gamma_table share runs) ----
OSCILLATOR_MODELS = {
    "itrsa": ("ItrSA (RMSNorm_N)", lambda d, h, n: ModelConfig(kind="itrsa", d=d, heads=h, n=n, norm="rmsnorm",
                                                                 norm_n=n)),
    "akorn": ("AKOrN (Pi_N)", lambda d, h, n: ModelConfig(kind="akorn", d=d, heads=h, n=n, norm="pi")),
    "akorn_rmsnorm": ("AKOrN + RMSNorm_N", lambda d, h, n: ModelConfig(kind="akorn", d=d, heads=h, n=n,
                                                                         norm="rmsnorm")),
}

#: experiments.oscillator_size (and gamma_table, which shares its runs): CPU default (a few minutes) and
#: paper (--full) settings, explicit flags override either: ``rsa_jax.configs.OSCILLATOR_CPU`` / ``_FULL``.

def oscillator_train_config(args, key: str, n: int) -> TrainConfig:
    """Training config of model variant ``key`` at oscillator size ``n``."""
    return TrainConfig(model=OSCILLATOR_MODELS[key][1](args.d, args.heads, n), t_train=args.t_train,
                       batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, progress=False, eval_every=0,
                       checkpoint_every=0, keep_checkpoints=1, log_every=10, data_dir=args.data_dir)


def norm_chunk(mcfg) -> int:
    """N of a model in the oscillator-size figures: the chunk its state normalization acts on (AKOrN's ``n``,
    ItrSA's ``norm_n``; D for ItrSA's RMSNorm over the whole token)."""
    return mcfg.state_chunk or mcfg.d


def oscillator_key(mcfg) -> str:
    """Key of ``OSCILLATOR_MODELS`` whose kind and normalization a given model has (at its own D, H, N),
    else :func:`model_group` of it."""
    for key, (_, make) in OSCILLATOR_MODELS.items():
        ref = make(mcfg.d, mcfg.heads, mcfg.n)
        if all(getattr(mcfg, f, None) == getattr(ref, f) for f in ("kind", "norm", "norm_n")):
            return key
    return model_group(mcfg)
