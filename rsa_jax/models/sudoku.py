"""Looped Sudoku solvers (ItrSA, AKOrN) as Flax NNX modules delegating to the pure maps.

A model holds parameters; the dynamics are ``rsa_jax.dynamics.itrsa_step`` or ``akorn_step``.
``model.pure_step()`` returns ``(step, params)`` with ``step(params, x, c) -> x``, so every
analysis tool runs on a trained model unchanged:

    step, params = model.pure_step()
    c, x0 = model.condition(digits, given, key)
    f = lambda x: step(params, x, c[0])          # one puzzle, (81, D) -> (81, D)

Conditioning follows the AKOrN Sudoku code: ``C = Embed(10, D)(digits)`` (0 = blank), and
``X0 = Pi_N(given * C + (1 - given) * noise)`` with N(0, I) noise on blank cells. Positional
information is either a learned (81, D) embedding added to C, initialized with 2-D sinusoids
(``position="embedding"``), or GTA per-token rotations inside attention with learned angles
initialized RoPE-like from the (row, column) of each cell (``position="gta"``).
The readout (``readout``): ``"akorn"``, the official AKOrN Sudoku code's (``knet.py``:
``ReadOutConv``, ``ResBlock(FF)``, ``BNReLUConv2d``, ``out``)::

    m  = ||W x + b||_N + bias                    (D -> D*N, norm of each N-chunk: D features)
    h  = m + W2 ReLU(W1 ReLU(m) + b1) + b2       (width D, the activation before each linear)
    h3 = W3 ReLU(h) + b3
    logits = Wout ReLU(h3) + bout                (9 logits)

or ``"gelu"``, the readout of the models trained before the AKOrN parity work (ItrSA's default):
``m = ||W x||_N + bias``, ``h = m + W2 GELU(W1 m + b1) + b2`` (width 2D), ``logits = Wout ReLU(h) + bout``.

With ``kind="akorn"`` the defaults are the official model's function and initialization
(``param_init="torch"``, ``gta_param="matrices"``, ``omega_param="vector"``, ``readout="akorn"``;
see ``CoreConfig``); ``rsa_jax.models.official`` maps the official PyTorch weights onto this model.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.models.common import (SUDOKU_GRID, CoreConfig, LoopedCore, PhaseReadout, gta_angles,
                                   gta_matrices, linear, sinusoidal_2d)
from rsa_jax.ops import pi

__all__ = ["AKOrNReadout", "CELLS", "ModelConfig", "Readout", "SudokuModel", "gta_angles", "gta_matrices",
           "sinusoidal_2d"]

CELLS = 81


@dataclasses.dataclass(frozen=True)
class ModelConfig(CoreConfig):
    """Architecture of a looped Sudoku model; the other fields are documented on ``CoreConfig``.

    Validation, ``step_fn`` and ``state_chunk`` come from ``rsa_jax.models.common.CoreConfig``.
    With ``kind="akorn"``, the unset parametrization fields default to the official AKOrN code's.

    Attributes:
      readout: ``"akorn"`` (the official AKOrN Sudoku readout) or ``"gelu"`` (the readout of the
        models before the AKOrN parity work); see the module docstring. ``None``: ``"akorn"`` for
        AKOrN, ``"gelu"`` for ItrSA (whose shipped models were trained with it).
    """

    readout: str | None = None

    DERIVED: ClassVar[dict] = {**CoreConfig.DERIVED, "readout": ("kind",)}
    WHEN_ABSENT: ClassVar[dict] = {**CoreConfig.WHEN_ABSENT, "readout": "gelu"}
    OFFICIAL_AKORN: ClassVar[bool] = True
    CHOICES: ClassVar[dict] = {**CoreConfig.CHOICES, "readout": ("akorn", "gelu")}


class AKOrNReadout(PhaseReadout):
    """The official AKOrN Sudoku readout: ``(..., D) -> (..., 9)`` logits (module docstring)."""

    def __init__(self, d: int, n: int, *, rngs: nnx.Rngs, param_init: str = "torch"):
        super().__init__(d, n, rngs=rngs, proj_bias=True, param_init=param_init)
        self.ff1, self.ff2, self.ff3 = (linear(d, d, rngs, param_init) for _ in range(3))
        self.out = linear(d, 9, rngs, param_init)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        m = self.features(x)
        h = m + self.ff2(jax.nn.relu(self.ff1(jax.nn.relu(m))))
        return self.out(jax.nn.relu(self.ff3(jax.nn.relu(h))))


class Readout(PhaseReadout):
    """The pre-parity readout (``readout="gelu"``): ``(..., D) -> (..., 9)`` logits, invariant to
    each output oscillator's phase."""

    def __init__(self, d: int, n: int, *, rngs: nnx.Rngs):
        super().__init__(d, n, rngs=rngs)
        self.ff1 = nnx.Linear(d, 2 * d, rngs=rngs)
        self.ff2 = nnx.Linear(2 * d, d, rngs=rngs)
        self.out = nnx.Linear(d, 9, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        m = self.features(x)
        h = m + self.ff2(jax.nn.gelu(self.ff1(m)))
        return self.out(jax.nn.relu(h))


class SudokuModel(LoopedCore):
    """ItrSA or AKOrN on 81 cells; see the module docstring."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        cfg = self.config = config
        if cfg.param_init == "torch":   # nn.Embedding's N(0, 1)
            self.embed = nnx.Embed(10, cfg.d, embedding_init=jax.nn.initializers.normal(1.0), rngs=rngs)
        else:
            self.embed = nnx.Embed(10, cfg.d, rngs=rngs)
        self._init_core(cfg, SUDOKU_GRID, rngs)
        if cfg.readout == "akorn":
            self.readout = AKOrNReadout(cfg.d, cfg.n, rngs=rngs, param_init=cfg.param_init)
        else:
            self.readout = Readout(cfg.d, cfg.n, rngs=rngs)

    def condition(self, digits: jnp.ndarray, given: jnp.ndarray, key: jax.Array):
        """Conditioning and initial state.

        Args:
          digits: ``(B, 81)`` int, 0 = blank.
          given: ``(B, 81)`` bool.
          key: PRNG key for the blank cells' random initial state.

        Returns:
          ``(c, x0)``, each ``(B, 81, D)``.
        """
        if digits.ndim != 2 or digits.shape[-1] != CELLS or given.shape != digits.shape:
            raise ValueError(f"digits and given must both be (B, 81) (one puzzle: digits[None]); got {digits.shape} "
                             f"and {given.shape}")
        if not jnp.issubdtype(digits.dtype, jnp.integer):
            raise TypeError(f"digits must be integers 0..9 (0 = blank); got dtype {digits.dtype}")
        if not isinstance(digits, jax.core.Tracer) and digits.size and not (0 <= int(digits.min()) and
                                                                            int(digits.max()) <= 9):
            raise ValueError(f"digits must be 0..9 (0 = blank); got values in [{int(digits.min())}, "
                             f"{int(digits.max())}]")
        c = self.add_position(self.embed(digits))
        noise = jax.random.normal(key, c.shape, c.dtype)
        g = given[..., None].astype(c.dtype)
        return c, pi(g * c + (1 - g) * noise, self.config.state_chunk)

    def __call__(self, digits: jnp.ndarray, given: jnp.ndarray, key: jax.Array, steps: int) -> jnp.ndarray:
        """``(B, 81)`` puzzles -> ``(B, 81, 9)`` logits after ``steps`` updates."""
        c, x0 = self.condition(digits, given, key)
        return self.readout(self.rollout(c, x0, steps))
