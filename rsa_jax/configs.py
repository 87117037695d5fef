"""Named presets of the Sudoku jobs, frozen, in one place (as Flax's examples keep ``configs/``).

Training presets are frozen :class:`~rsa_jax.train.TrainConfig` instances; what is not training
(an evaluation protocol, a sweep's grid, a benchmark's sizes) is a small frozen dataclass. Derive
variants with ``dataclasses.replace`` (or ``preset.replace(...)``), never by mutation::

    from rsa_jax.configs import SUDOKU_CPU, SUDOKU_EVAL_CPU
    cfg = dataclasses.replace(SUDOKU_CPU, model=SUDOKU_CPU.model.with_kind("itrsa"), out="runs/itrsa")

=========================================== ==============================================================
``SUDOKU_CPU``, ``SUDOKU_FULL``             ``TrainConfig`` of the ID / OOD experiment (``experiments.sudoku_ood``):
                                            the CPU protocol and the paper's (GPU) configuration
``SUDOKU_EVAL_CPU``, ``SUDOKU_EVAL_FULL``   :class:`SudokuEvalConfig`: its T_eval grid, test-set sizes, energy voting
``OSCILLATOR_CPU``, ``OSCILLATOR_FULL``     :class:`OscillatorSweep`: ``experiments.oscillator_size`` / ``gamma_table``
``TRAIN_BENCH_SMALL``, ``TRAIN_BENCH_PAPER`` :class:`TrainBench`: sizes of ``benchmarks.train_bench``
``INFERENCE_BENCH_SMALL``, ``_PAPER``       :class:`InferenceBench`: sizes of ``benchmarks.inference_bench``
=========================================== ==============================================================

Command lines take these as the defaults of flags left unset: :func:`apply_preset`. The preset
dataclasses also read like mappings (``preset["d"]``, ``"d" in preset``, ``preset.items()``), so a
flag helper takes a preset or a plain dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

from rsa_jax.evaluate import PAPER_STEPS
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.train import TrainConfig


class Preset:
    """Base of the frozen preset dataclasses: read-only mapping access and ``replace``."""

    def keys(self) -> list:
        return [f.name for f in dataclasses.fields(self)]

    def items(self) -> list:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def apply_preset(args, preset: Union[Preset, Mapping[str, Any]]):
    """Sets every attribute of ``args`` (an ``argparse.Namespace``) that is None or missing from
    ``preset`` (a :class:`Preset` or a dict; sequences become fresh lists); returns ``args``.

    Pick the preset by the command's own switch: ``apply_preset(args, FULL if args.full else CPU)``.
    """
    for k, v in preset.items():
        if getattr(args, k, None) is None:
            setattr(args, k, list(v) if isinstance(v, (list, tuple)) else v)
    return args


# ------------------------------------------------------------------------ Sudoku ID / OOD (Table 1)
#: The CPU protocol (RESULTS.md): the paper's structure at D=128, H=4, EMA every step, 2 h per model.
SUDOKU_CPU = TrainConfig(model=ModelConfig(kind="akorn", d=128, heads=4, n=4), t_train=16, batch_size=100,
                         epochs=100, lr=1e-3, ema_every=1, ema_after=100, time_budget=7200.0, checkpoint_every=90,
                         keep_checkpoints=1, log_every=20, eval_every=2, eval_live=True, eval_limit=1000)

#: The paper's Sudoku configuration (appendix B.1): D=512, H=8, T=16, batch 100, 100 epochs, all data (a GPU job).
SUDOKU_FULL = TrainConfig(model=ModelConfig(kind="akorn", d=512, heads=8, n=4), t_train=16, batch_size=100,
                          epochs=100, checkpoint_every=900, log_every=30, eval_every=10)


@dataclasses.dataclass(frozen=True)
class SudokuEvalConfig(Preset):
    """How a trained Sudoku model is evaluated (ID / OOD board accuracy, test-time scaling, voting).

    Attributes:
      t_eval: OOD T_eval grid, all read out of one rollout (T_train, 16 and 128 are added by the experiment).
      id_t_eval: ID T_eval grid (T_train is added); shorter on a CPU, where ID rollouts to 1024 cost minutes.
      id_limit: first N in-distribution test puzzles (None: all).
      ood_limit: first N out-of-distribution test puzzles (None: all).
      eval_batch_size: puzzles per evaluation batch.
      vote_k: energy voting: candidates K per puzzle (0: no voting).
      vote_steps: energy voting: T_eval of every candidate.
      vote_chunk: energy voting: candidates run at once (memory).
      vote_limit: energy voting: only the first N OOD puzzles (None: all).
    """

    t_eval: tuple = (16, 32, 64, 128, 256, 512, 1024)
    id_t_eval: tuple = (16, 32, 64, 128)
    id_limit: Optional[int] = None
    ood_limit: Optional[int] = 500
    eval_batch_size: int = 100
    vote_k: int = 8
    vote_steps: int = 64
    vote_chunk: int = 8
    vote_limit: Optional[int] = 100


SUDOKU_EVAL_CPU = SudokuEvalConfig()
SUDOKU_EVAL_FULL = SudokuEvalConfig(t_eval=tuple(PAPER_STEPS), id_t_eval=tuple(PAPER_STEPS), ood_limit=None,
                                    eval_batch_size=500, vote_k=100, vote_steps=128, vote_chunk=10, vote_limit=None)


# ------------------------------------------------------------------ oscillator size (Fig. 4, Table S.1)
@dataclasses.dataclass(frozen=True)
class OscillatorSweep(Preset):
    """Settings of the oscillator-size sweep (``experiments.oscillator_size``; ``experiments.gamma_table``
    shares its runs and so its training settings). ``lr`` None: ``rsa_jax.train.DEFAULT_LR`` per kind;
    limits None: all puzzles."""

    d: int
    heads: int
    ns: tuple
    seeds: tuple
    epochs: int
    batch_size: int
    train_limit: Optional[int]
    eval_limit: Optional[int]
    id_limit: Optional[int]
    lr: Optional[float]
    t_eval: tuple
    lyap_k: int
    lyap_sweeps: int
    chaos_steps: int
    chaos_puzzles: int


#: CPU default (a few minutes)
OSCILLATOR_CPU = OscillatorSweep(d=16, heads=2, ns=(4, 8, 16), seeds=(0,), epochs=2, batch_size=20, train_limit=400,
                                 eval_limit=100, id_limit=100, lr=3e-3, t_eval=(16, 32, 64, 128, 256), lyap_k=8,
                                 lyap_sweeps=1, chaos_steps=1000, chaos_puzzles=4)
#: the paper's settings (``--full``, a GPU job)
OSCILLATOR_FULL = OscillatorSweep(d=512, heads=8, ns=(4, 8, 16, 32, 64, 128, 256, 512), seeds=(0, 1, 2, 3, 4),
                                  epochs=100, batch_size=100, train_limit=None, eval_limit=None, id_limit=None,
                                  lr=None, t_eval=tuple(PAPER_STEPS), lyap_k=16, lyap_sweeps=2, chaos_steps=10_000,
                                  chaos_puzzles=16)


# ----------------------------------------------------------------------------------- benchmarks
@dataclasses.dataclass(frozen=True)
class TrainBench(Preset):
    """Sizes of the train-step benchmark: width, heads, oscillator size, recurrent steps T, batch."""

    d: int
    heads: int
    n: int
    t: int
    batch: int

    @classmethod
    def of(cls, cfg: TrainConfig) -> "TrainBench":
        """The sizes of a training config."""
        return cls(d=cfg.model.d, heads=cfg.model.heads, n=cfg.model.n, t=cfg.t_train, batch=cfg.batch_size)


#: the paper's training step (that of ``SUDOKU_FULL``: D=512, H=8, N=4, T=16, batch 100)
TRAIN_BENCH_PAPER = TrainBench.of(SUDOKU_FULL)
TRAIN_BENCH_SMALL = TrainBench(d=64, heads=4, n=4, t=4, batch=8)


@dataclasses.dataclass(frozen=True)
class InferenceBench(Preset):
    """Sizes of the inference benchmark: model, rollout length ``t_eval`` over ``boards`` boards in
    batches of ``batch``; energy voting with ``k`` candidates of ``vote_steps`` steps on ``vote_boards``
    boards, ``chunk`` candidates at once."""

    d: int
    heads: int
    n: int
    t_eval: int
    boards: int
    batch: int
    k: int
    vote_steps: int
    vote_boards: int
    chunk: int


INFERENCE_BENCH_PAPER = InferenceBench(d=512, heads=8, n=4, t_eval=max(PAPER_STEPS), boards=1000, batch=250, k=100,
                                       vote_steps=128, vote_boards=100, chunk=20)
INFERENCE_BENCH_SMALL = InferenceBench(d=64, heads=4, n=4, t_eval=64, boards=256, batch=64, k=4, vote_steps=16,
                                       vote_boards=32, chunk=4)
