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
The readout is AKOrN's: linear D -> D*N, norm of each N-chunk plus bias, a residual
feed-forward block, ReLU, linear to 9 logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.models.common import (SUDOKU_GRID, CoreConfig, LoopedCore, PhaseReadout, gta_angles,
                                   sinusoidal_2d)
from rsa_jax.ops import pi

__all__ = ["CELLS", "ModelConfig", "Readout", "SudokuModel", "gta_angles", "sinusoidal_2d"]

CELLS = 81


@dataclasses.dataclass(frozen=True)
class ModelConfig(CoreConfig):
    """Architecture of a looped Sudoku model; the fields are documented on ``CoreConfig``.

    Validation, ``step_fn`` and ``state_chunk`` come from ``rsa_jax.models.common.CoreConfig``.
    """


class Readout(PhaseReadout):
    """AKOrN readout: ``(..., D) -> (..., 9)`` logits, invariant to each output oscillator's phase."""

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
        self.embed = nnx.Embed(10, cfg.d, rngs=rngs)
        self._init_core(cfg, SUDOKU_GRID, rngs)
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
