"""The training types: :class:`TrainConfig` (what a run is) and :class:`Task` (what a task gives the trainer).

They sit below the trainer in the import graph: :mod:`rsa_jax.train_state`, :mod:`rsa_jax.runs`,
:mod:`rsa_jax.train` and :mod:`rsa_jax.multiseed` import them from here, and :mod:`rsa_jax.train`
re-exports them, so ``from rsa_jax.train import TrainConfig, Task`` keeps working and run directories
whose ``config.json`` names ``rsa_jax.train:TrainConfig`` (every run written before this module
existed) load unchanged (:func:`rsa_jax.config.import_path` finds the re-export).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

import jax
from flax import nnx

from rsa_jax.config import field as _f
from rsa_jax.models.sudoku import ModelConfig

#: Learning rates of the AKOrN code base's Sudoku commands (README of autonomousvision/akorn):
#: AKOrN ``--lr=0.001``, ItrSA ``--lr=0.0005``. The paper tuned lr in {1e-5, 5e-5, ..., 1e-3}.
DEFAULT_LR = {"akorn": 1e-3, "itrsa": 5e-4}
FALLBACK_LR = 1e-3


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
    time_budget: Optional[float] = _f(None, "wall-clock seconds for this invocation (compilation included): stop at "
                                            "a step boundary before it, save a checkpoint and return; running "
                                            "again resumes exactly (none: no limit)")
    checkpoint_every: int = _f(500, "checkpoint every this many steps (and at the end; <= 0: only at the end)")
    keep_checkpoints: int = _f(3, "number of checkpoints kept")
    log_every: int = _f(20, "log averaged metrics every this many steps")
    eval_every: int = _f(0, "run the task's evaluation every this many epochs and at the end (0: never)")
    eval_live: bool = _f(False, "also evaluate the live (non-EMA) parameters, logged as eval_live/...")
    matmul_precision: str = _f("float32", "jax.default_matmul_precision: 'float32', 'tensorfloat32', 'bfloat16'")
    data_parallel: bool = _f(False, "split every batch over all visible devices (rsa_jax.parallel; same numbers "
                                    "up to summation order; batch_size must be divisible by the device count)")
    out: str = _f("outputs/train", "run directory: config.json, metrics.jsonl, checkpoints/")
    progress: bool = _f(True, "tqdm progress bar (off anyway when stderr is not a terminal)")
    data_dir: Optional[str] = _f(None, "data directory (none: the task's default / environment variable)")
    train_limit: Optional[int] = _f(None, "use only the first N training examples (none: all)")
    eval_limit: Optional[int] = _f(None, "use only the first N evaluation examples (none: all)")
    augment: bool = _f(False, "validity-preserving augmentation of the training data, if the task has one (Sudoku: "
                              "digit relabelling, band/stack and row/column permutations, transposition; not in "
                              "the paper)")
    penalty: str = _f("none", "regularizer added to the loss (recorded with the run): 'none', 'spec' (R_Spec), "
                              "'e_multi' (R_E-multi; the paper pairs it with --model-orthogonal-vo), 'e_single' "
                              "(R_E-single, one head)")
    penalty_lam: float = _f(0.0, "weight lambda of --penalty (paper: spec 1e-4 ItrSA / 1e-5 AKOrN, e_multi 1e-4, "
                                 "e_single 1e-6)")
    spec_layout: str = _f("separate", "matrices R_Spec penalizes: 'separate' (W^Q, W^K, W^V, W^O), 'fused' (W_qkv "
                                      "and W^O, as the AKOrN code stores them) or 'per_head'; a lambda means "
                                      "different things under each")

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
