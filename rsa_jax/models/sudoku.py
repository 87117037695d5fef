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
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.attention import init_attention
from rsa_jax.dynamics import akorn_step, itrsa_step, rollout
from rsa_jax.ops import chunk_norm, pi

CELLS = 81


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a looped Sudoku model.

    Attributes:
      kind: ``"itrsa"`` or ``"akorn"``.
      d: width D.
      heads: attention heads H.
      n: oscillator size N (AKOrN's Omega/Proj/Pi chunks; readout chunk size for both).
      norm: ItrSA: ``"none" | "pi" | "rmsnorm"``; AKOrN: ``"pi"`` or ``"rmsnorm"`` (Fig. 4 variant).
      norm_n: chunk size of the ItrSA normalization (None: whole token). AKOrN always uses ``n``.
      position: ``"embedding"`` or ``"gta"``.
      bias: attention biases.
      eta_init: initial step size eta (learned).
      omega_init: initial AKOrN frequency w (learned scalar).
      fused: fused attention kernel (``jax.nn.dot_product_attention``).
    """

    kind: str = "akorn"
    d: int = 512
    heads: int = 8
    n: int = 4
    norm: str | None = None
    norm_n: int | None = None
    position: str = "gta"
    bias: bool = True
    eta_init: float = 1.0
    omega_init: float = 0.5
    fused: bool = False

    def __post_init__(self):
        if self.kind not in ("itrsa", "akorn"):
            raise ValueError(f"kind must be 'itrsa' or 'akorn', got {self.kind!r}")
        if self.position not in ("embedding", "gta"):
            raise ValueError(f"position must be 'embedding' or 'gta', got {self.position!r}")
        if self.d % self.heads or self.d % self.n or self.n % 2:
            raise ValueError(f"need heads | D and even N | D; got D={self.d}, H={self.heads}, N={self.n}")
        if self.norm is None:
            object.__setattr__(self, "norm", "rmsnorm" if self.kind == "itrsa" else "pi")

    @property
    def step_fn(self):
        """The pure step ``(params, x, c) -> x`` with this config's static options bound."""
        if self.kind == "itrsa":
            return functools.partial(itrsa_step, norm=self.norm, n=self.norm_n, fused=self.fused)
        return functools.partial(akorn_step, n=self.n, norm=self.norm, fused=self.fused)

    @property
    def state_chunk(self) -> int | None:
        """Chunk size of the state normalization (X0 and the null directions of the Jacobian)."""
        return self.n if self.kind == "akorn" else self.norm_n


def sinusoidal_2d(d: int) -> jnp.ndarray:
    """``(81, D)`` 2-D sinusoidal table: half the channels encode the row, half the column."""
    rows, cols = jnp.divmod(jnp.arange(CELLS), 9)
    quarter = d // 4
    freq = 1.0 / (100.0 ** (jnp.arange(quarter) / max(quarter, 1)))
    enc = lambda p: jnp.concatenate([jnp.sin(p[:, None] * freq), jnp.cos(p[:, None] * freq)], axis=-1)
    table = jnp.concatenate([enc(rows.astype(jnp.float32)), enc(cols.astype(jnp.float32))], axis=-1)
    return jnp.pad(table, ((0, 0), (0, d - table.shape[1])))


def gta_angles(head_dim: int) -> jnp.ndarray:
    """``(81, D_H/2)`` RoPE-like angles: first half of the pairs rotate with the row, second with the column."""
    rows, cols = jnp.divmod(jnp.arange(CELLS), 9)
    pairs = head_dim // 2
    half = pairs - pairs // 2
    freq = lambda m: math.pi / 9 * (2.0 ** -jnp.arange(m))
    return jnp.concatenate([rows[:, None] * freq(half), cols[:, None] * freq(pairs - half)], axis=-1)


class Readout(nnx.Module):
    """AKOrN readout: ``(..., D) -> (..., 9)`` logits, invariant to each output oscillator's phase."""

    def __init__(self, d: int, n: int, *, rngs: nnx.Rngs):
        self.n = n
        self.proj = nnx.Linear(d, d * n, use_bias=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((d,)))
        self.ff1 = nnx.Linear(d, 2 * d, rngs=rngs)
        self.ff2 = nnx.Linear(2 * d, d, rngs=rngs)
        self.out = nnx.Linear(d, 9, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        m = chunk_norm(self.proj(x), self.n)[..., 0] + self.bias[...]
        h = m + self.ff2(jax.nn.gelu(self.ff1(m)))
        return self.out(jax.nn.relu(h))


class SudokuModel(nnx.Module):
    """ItrSA or AKOrN on 81 cells; see the module docstring."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        cfg = self.config = config
        self.embed = nnx.Embed(10, cfg.d, rngs=rngs)
        attn = init_attention(rngs.params(), cfg.d, cfg.heads, bias=cfg.bias)
        if cfg.position == "gta":
            attn["gta"] = gta_angles(cfg.d // cfg.heads)
        else:
            self.pos = nnx.Param(sinusoidal_2d(cfg.d))
        self.attn = nnx.data({k: nnx.Param(v) for k, v in attn.items()})
        self.eta = nnx.Param(jnp.asarray(cfg.eta_init, jnp.float32))
        if cfg.kind == "akorn":
            self.omega = nnx.Param(jnp.asarray(cfg.omega_init, jnp.float32))
        if cfg.norm == "rmsnorm":
            self.gamma = nnx.Param(jnp.ones((cfg.d,)))
        self.readout = Readout(cfg.d, cfg.n, rngs=rngs)

    def pure_step(self):
        """Returns ``(step, params)``: the pure map ``step(params, x, c) -> x`` and its parameter pytree."""
        params = {"attn": {k: v[...] for k, v in self.attn.items()}, "eta": self.eta[...]}
        for name in ("omega", "gamma"):
            if hasattr(self, name):
                params[name] = getattr(self, name)[...]
        return self.config.step_fn, params

    def condition(self, digits: jnp.ndarray, given: jnp.ndarray, key: jax.Array):
        """Conditioning and initial state.

        Args:
          digits: ``(B, 81)`` int, 0 = blank.
          given: ``(B, 81)`` bool.
          key: PRNG key for the blank cells' random initial state.

        Returns:
          ``(c, x0)``, each ``(B, 81, D)``.
        """
        if digits.shape[-1] != CELLS or given.shape != digits.shape:
            raise ValueError(f"digits and given must both be (B, 81); got {digits.shape} and {given.shape}")
        c = self.embed(digits)
        if hasattr(self, "pos"):
            c = c + self.pos[...]
        noise = jax.random.normal(key, c.shape, c.dtype)
        g = given[..., None].astype(c.dtype)
        return c, pi(g * c + (1 - g) * noise, self.config.state_chunk)

    def rollout(self, c: jnp.ndarray, x0: jnp.ndarray, steps: int, *, trajectory: bool = False):
        """``steps`` updates from ``x0`` (see ``rsa_jax.dynamics.rollout``)."""
        step, params = self.pure_step()
        return rollout(step, params, x0, c, steps, trajectory=trajectory)

    def __call__(self, digits: jnp.ndarray, given: jnp.ndarray, key: jax.Array, steps: int) -> jnp.ndarray:
        """``(B, 81)`` puzzles -> ``(B, 81, 9)`` logits after ``steps`` updates."""
        c, x0 = self.condition(digits, given, key)
        return self.readout(self.rollout(c, x0, steps))
