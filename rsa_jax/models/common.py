"""Pieces shared by the looped models (Sudoku, vision): config, position tables, core, readout.

A looped model = a conditioning map (task specific) + the recurrent core (attention params,
eta, omega, gamma; the pure step of ``rsa_jax.dynamics``) + a readout (task specific).
``LoopedCore`` holds the core and gives every model the same ``pure_step`` / ``rollout``:

    step, params = model.pure_step()           # step(params, x, c) -> x, the analysis entry point
    x_T = model.rollout(c, x0, steps)

Position information lives on a 2-D grid of tokens (9 x 9 Sudoku cells, 8 x 8 or 7 x 7 image
patches): either a learned additive embedding initialized with ``sinusoidal_2d(d, grid)``, or
GTA rotation angles inside attention initialized with ``gta_angles(head_dim, grid)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.attention import init_attention, orthogonal_value_output, torch_uniform
from rsa_jax.dynamics import akorn_step, itrsa_step, rollout
from rsa_jax.ops import chunk_norm

SUDOKU_GRID = (9, 9)


@dataclasses.dataclass(frozen=True)
class CoreConfig:
    """Recurrent core shared by all looped models (see ``rsa_jax.models.sudoku.ModelConfig``).

    Attributes:
      kind: ``"itrsa"`` or ``"akorn"``.
      d: width D.
      heads: attention heads H.
      n: oscillator size N (AKOrN's Omega/Proj/Pi chunks; readout chunk size for both).
      norm: ItrSA: ``"none" | "pi" | "rmsnorm"``; AKOrN: ``"pi"`` or ``"rmsnorm"``.
        ``None`` picks ``"rmsnorm"`` for ItrSA and ``"pi"`` for AKOrN.
      norm_n: chunk size of the ItrSA normalization (None: whole token). AKOrN always uses ``n``.
      position: ``"embedding"`` or ``"gta"``.
      bias: attention biases.
      eta_init: initial step size eta (learned).
      omega_init: initial AKOrN frequency w (learned scalar).
      gamma_init: initial RMSNorm gain, every channel (learned). 1 (default): unit-norm chunks at init,
        the paper's definition ``gamma * Y / ||Y||``; ``sqrt(N)`` (N the normalization's chunk, D for
        the whole token) is PyTorch's ``nn.RMSNorm`` at init (``Y / rms(Y)``, weight 1), the scale of
        the PyTorch code the paper's models come from.
      fused: fused attention kernel (``jax.nn.dot_product_attention``).
      orthogonal_vo: keep the full W^V, W^O orthogonal through a parametrization (with R_E-multi):
        ``None`` (free weights), ``"cayley"`` or ``"qr"`` (``rsa_jax.attention.orthogonal``).
      param_init: how the parameters are drawn. ``"torch"``: PyTorch's defaults, as the official AKOrN
        code (embedding N(0, 1); attention and readout weights and biases U(+-1/sqrt(fan_in)));
        ``"normal"``: N(0, 1/D) weights, zero biases, Flax's default embedding N(0, 1/D) (every model
        before the AKOrN parity work). ``None``: ``"torch"`` for a Sudoku AKOrN, else ``"normal"``.
      gta_param: GTA's parametrization. ``"matrices"``: the official AKOrN code's (run on a GPU, the
        paper's): four free 2x2 matrices per token and channel pair, for q, k, v and the output,
        started at rotations by ``coord * 10000^(-f/F)`` (F = D_H/4, row and column pairs interleaved,
        raw coordinates 0..8; the output's the inverse rotation). ``"angles"``: one learned angle per
        token and pair shared by q, k, v and the output, started at ``pi/9 * 2^-m`` (rows, then
        columns; the models before the parity work). ``None``: ``"matrices"`` for a Sudoku AKOrN.
      omega_param: AKOrN's frequency. ``"vector"``: ``omega = ||w||`` of a learned 2-vector started at
        ``omega_init / sqrt(2) * (1, 1)`` (the official ``OmegaLayer``, global); ``"scalar"``: omega
        itself learned. ``None``: ``"vector"`` for a Sudoku AKOrN.
      symmetric: symmetric (energy) self-attention, ItrSA only: each head's value matrix is
        ``W^V_h = (W^Q_h W^K_h^T + W^K_h W^Q_h^T) / 2`` ``(D, D)``, built from the learned ``W^Q, W^K``,
        with no ``W^O`` and no biases (needs ``bias=False``, ``position="embedding"``). For H = 1 this
        is the condition under which E_single decreases along the attention flow (eq. 3, Prop. 4.1); for
        H > 1, E_multi also needs Prop. 4.2's mutually orthogonal heads, which training does not keep.
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
    gamma_init: float = 1.0
    fused: bool = False
    orthogonal_vo: str | None = None
    symmetric: bool = False
    param_init: str | None = None
    gta_param: str | None = None
    omega_param: str | None = None

    #: fields filled from others when unset: ``dataclass_from_args`` resets them to None when the
    #: fields they derive from change on the command line (``--model-kind itrsa`` gives RMSNorm).
    #: ``dataclasses.replace(cfg, kind=...)`` keeps the resolved value; :meth:`with_kind` resets it.
    DERIVED: ClassVar[dict] = {"norm": ("kind",), "param_init": ("kind",), "gta_param": ("kind",),
                               "omega_param": ("kind",)}
    #: values of fields added later, for records that lack them (``rsa_jax.config.config_from_dict``):
    #: checkpoints written before the AKOrN parity work load as they were trained
    WHEN_ABSENT: ClassVar[dict] = {"param_init": "normal", "gta_param": "angles", "omega_param": "scalar"}
    #: whether ``kind="akorn"`` defaults to the official AKOrN code's parametrization (Sudoku models)
    OFFICIAL_AKORN: ClassVar[bool] = False
    CHOICES: ClassVar[dict] = {"param_init": ("torch", "normal"), "gta_param": ("matrices", "angles"),
                               "omega_param": ("vector", "scalar")}

    def __post_init__(self):
        if self.kind not in ("itrsa", "akorn"):
            raise ValueError(f"kind must be 'itrsa' or 'akorn', got {self.kind!r}")
        if self.position not in ("embedding", "gta"):
            raise ValueError(f"position must be 'embedding' or 'gta', got {self.position!r}")
        if self.d % self.heads or self.d % self.n or self.n % 2:
            raise ValueError(f"need heads | D and even N | D; got D={self.d}, H={self.heads}, N={self.n}")
        if not self.gamma_init > 0:
            raise ValueError(f"gamma_init must be > 0, got {self.gamma_init}")
        if self.orthogonal_vo not in (None, "cayley", "qr"):
            raise ValueError(f"orthogonal_vo must be None, 'cayley' or 'qr', got {self.orthogonal_vo!r}")
        if self.symmetric and (self.kind != "itrsa" or self.bias or self.position != "embedding"
                               or self.orthogonal_vo is not None):
            raise ValueError("symmetric attention needs kind='itrsa', bias=False, position='embedding' and no "
                             f"orthogonal_vo; got kind={self.kind!r}, bias={self.bias}, position={self.position!r}, "
                             f"orthogonal_vo={self.orthogonal_vo!r}")
        if self.norm is None:
            object.__setattr__(self, "norm", "rmsnorm" if self.kind == "itrsa" else "pi")
        official = self.OFFICIAL_AKORN and self.kind == "akorn"
        for name, (official_value, other) in self.CHOICES.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, official_value if official else other)
            elif getattr(self, name) not in (official_value, other):
                raise ValueError(f"{name} must be {official_value!r} or {other!r}, got {getattr(self, name)!r}")

    def with_kind(self, kind: str, norm: str | None = None):
        """This config with ``kind`` swapped in. Following :attr:`DERIVED`, the fields derived from
        ``kind`` (the normalization) go back to the new kind's default (ItrSA: RMSNorm, AKOrN: Pi)
        unless given: ``norm`` (``None``: the default)."""
        reset = {name: None for name, sources in self.DERIVED.items() if "kind" in sources}
        return dataclasses.replace(self, **{**reset, "kind": kind, **({} if norm is None else {"norm": norm})})

    @property
    def step_fn(self):
        """The pure step ``(params, x, c) -> x`` with this config's static options bound.

        Equal options give the *same* object, so it can be a static argument of ``jax.jit``
        without recompiling for every model instance.
        """
        if self.kind == "itrsa":
            return _bound_step("itrsa", self.norm, self.norm_n, self.fused)
        return _bound_step("akorn", self.norm, self.n, self.fused)

    @property
    def state_chunk(self) -> int | None:
        """Chunk size of the state normalization (X0 and the null directions of the Jacobian)."""
        return self.n if self.kind == "akorn" else self.norm_n


@functools.lru_cache(maxsize=None)
def _bound_step(kind: str, norm: str, n: int | None, fused: bool):
    step = itrsa_step if kind == "itrsa" else akorn_step
    return functools.partial(step, norm=norm, n=n, fused=fused)


def _grid_coords(grid: tuple[int, int]):
    rows_n, cols_n = grid
    return jnp.divmod(jnp.arange(rows_n * cols_n), cols_n)


def sinusoidal_2d(d: int, grid: tuple[int, int] = SUDOKU_GRID) -> jnp.ndarray:
    """``(R*C, D)`` 2-D sinusoidal table for a row-major ``grid = (R, C)`` of tokens.

    Half the channels encode the row, half the column (sin and cos of ``p / 100^(i/(D/4))``);
    channels beyond ``4 * (D // 4)`` are zero.
    """
    rows, cols = _grid_coords(grid)
    quarter = d // 4
    freq = 1.0 / (100.0 ** (jnp.arange(quarter, dtype=jnp.float32) / max(quarter, 1)))
    enc = lambda p: jnp.concatenate([jnp.sin(p[:, None] * freq), jnp.cos(p[:, None] * freq)], axis=-1)
    table = jnp.concatenate([enc(rows.astype(jnp.float32)), enc(cols.astype(jnp.float32))], axis=-1)
    return jnp.pad(table, ((0, 0), (0, d - table.shape[1])))


def gta_matrices(head_dim: int, grid: tuple[int, int] = SUDOKU_GRID) -> jnp.ndarray:
    """``(4, R*C, D_H/2, 2, 2)`` the official AKOrN code's GTA matrices at init (``gta.make_SO2mats``).

    Channel pair ``p = 2f + a`` of token ``(r, c)`` rotates by ``theta = (r, c)[a] * 10000^(-f/F)``,
    ``F = ceil(D_H / 4)``: the frequency pairs interleave rows (``a = 0``) and columns, raw coordinates.
    Entries 0..2 (q, k, v) are ``R(theta)``, entry 3 (the output) ``R(theta)^T``.
    """
    rows, cols = (a.astype(jnp.float32) for a in _grid_coords(grid))
    nf = -(-head_dim // 4)
    freqs = 10000.0 ** (-jnp.arange(nf, dtype=jnp.float32) / nf)
    theta = jnp.stack([rows[:, None] * freqs, cols[:, None] * freqs], axis=-1).reshape(len(rows), 2 * nf)
    theta = theta[:, : head_dim // 2]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rot = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)   # (S, P, 2, 2)
    return jnp.stack([rot, rot, rot, jnp.swapaxes(rot, -1, -2)])


def linear(d_in: int, d_out: int, rngs: nnx.Rngs, param_init: str = "normal", *, use_bias: bool = True):
    """``nnx.Linear`` drawn by ``param_init``: ``"normal"`` (Flax's defaults) or ``"torch"``."""
    if param_init == "torch":
        init = lambda key, shape, dtype=jnp.float32: torch_uniform(key, shape, d_in, dtype)
        return nnx.Linear(d_in, d_out, use_bias=use_bias, kernel_init=init, bias_init=init, rngs=rngs)
    return nnx.Linear(d_in, d_out, use_bias=use_bias, rngs=rngs)


def gta_angles(head_dim: int, grid: tuple[int, int] = SUDOKU_GRID) -> jnp.ndarray:
    """``(R*C, D_H/2)`` RoPE-like GTA angles for a row-major ``grid = (R, C)`` of tokens.

    The first half of the channel pairs rotates with the row, the second with the column, at
    frequencies ``pi / R * 2^-m`` (rows) and ``pi / C * 2^-m`` (columns).
    """
    rows, cols = (a.astype(jnp.float32) for a in _grid_coords(grid))
    pairs = head_dim // 2
    half = pairs - pairs // 2
    freq = lambda m, size: math.pi / size * (2.0 ** -jnp.arange(m, dtype=jnp.float32))
    return jnp.concatenate([rows[:, None] * freq(half, grid[0]), cols[:, None] * freq(pairs - half, grid[1])],
                           axis=-1)


class LoopedCore(nnx.Module):
    """Base class holding the recurrent core; subclasses call ``_init_core`` in ``__init__``.

    Creates ``self.attn`` (dict of Params, with a ``"gta_mats"`` or ``"gta"`` entry for GTA positions,
    by ``cfg.gta_param``), ``self.pos`` (``position="embedding"``), ``self.eta``, ``self.omega``
    (AKOrN: a 2-vector whose norm is omega, or the scalar, by ``cfg.omega_param``) and ``self.gamma``
    (RMSNorm). The random draws are those of ``init_attention(rngs.params(), ..., dist=cfg.param_init)``.
    All parameters are float32, also under ``jax_enable_x64``. With ``cfg.orthogonal_vo``,
    ``self.attn`` has no ``wv, wo``: ``self.vo_free = {"v", "o"}`` (free ``(D, D)`` Params, a random
    orthogonal start) and ``pure_step`` builds them with ``orthogonal_value_output``. With
    ``cfg.symmetric`` it has no ``wv, wo`` either: ``pure_step`` builds ``wv`` from ``wq, wk``.
    """

    config: CoreConfig

    def _init_core(self, cfg: CoreConfig, grid: tuple[int, int], rngs: nnx.Rngs) -> None:
        attn = init_attention(rngs.params(), cfg.d, cfg.heads, bias=cfg.bias, dist=cfg.param_init)
        if cfg.position == "gta" and cfg.gta_param == "matrices":
            attn["gta_mats"] = gta_matrices(cfg.d // cfg.heads, grid)
        elif cfg.position == "gta":
            attn["gta"] = gta_angles(cfg.d // cfg.heads, grid).astype(jnp.float32)
        else:
            self.pos = nnx.Param(sinusoidal_2d(cfg.d, grid).astype(jnp.float32))
        if cfg.symmetric or cfg.orthogonal_vo is not None:   # pure_step builds W^V (and W^O) from other params
            del attn["wv"], attn["wo"]
        if cfg.orthogonal_vo is not None:
            # Cayley: N(0, 1/D) entries give a spread-out random rotation; QR: any Gaussian is Haar
            std = 1.0 / math.sqrt(cfg.d) if cfg.orthogonal_vo == "cayley" else 1.0
            free = std * jax.random.normal(rngs.params(), (2, cfg.d, cfg.d), jnp.float32)
            self.vo_free = nnx.data({"v": nnx.Param(free[0]), "o": nnx.Param(free[1])})
        self.attn = nnx.data({k: nnx.Param(v) for k, v in attn.items()})
        self.eta = nnx.Param(jnp.asarray(cfg.eta_init, jnp.float32))
        if cfg.kind == "akorn" and cfg.omega_param == "vector":   # omega = ||w||
            self.omega = nnx.Param(jnp.full((2,), cfg.omega_init / math.sqrt(2), jnp.float32))
        elif cfg.kind == "akorn":
            self.omega = nnx.Param(jnp.asarray(cfg.omega_init, jnp.float32))
        if cfg.norm == "rmsnorm":
            self.gamma = nnx.Param(jnp.full((cfg.d,), cfg.gamma_init, jnp.float32))

    def add_position(self, c: jnp.ndarray) -> jnp.ndarray:
        """``c + pos`` with an additive position embedding; ``c`` unchanged with GTA."""
        return c + self.pos[...] if hasattr(self, "pos") else c

    def pure_step(self):
        """Returns ``(step, params)``: the pure map ``step(params, x, c) -> x`` and its parameter pytree."""
        params = {"attn": {k: v[...] for k, v in self.attn.items()}, "eta": self.eta[...]}
        if hasattr(self, "vo_free"):  # orthogonal W^V, W^O from free params (gradients reach those)
            params["attn"] |= orthogonal_value_output(self.vo_free["v"][...], self.vo_free["o"][...],
                                                      self.config.heads, self.config.orthogonal_vo)
        if self.config.symmetric:
            a = jnp.einsum("hde,hfe->hdf", params["attn"]["wq"], params["attn"]["wk"])
            params["attn"]["wv"] = (a + jnp.swapaxes(a, 1, 2)) / 2
        for name in ("omega", "gamma"):
            if hasattr(self, name):
                params[name] = getattr(self, name)[...]
        if self.config.kind == "akorn" and self.config.omega_param == "vector":
            params["omega"] = jnp.linalg.norm(params["omega"])
        return self.config.step_fn, params

    def rollout(self, c: jnp.ndarray, x0: jnp.ndarray, steps: int, *, trajectory: bool = False):
        """``steps`` updates from ``x0`` (see ``rsa_jax.dynamics.rollout``)."""
        step, params = self.pure_step()
        return rollout(step, params, x0, c, steps, trajectory=trajectory)

    def rollout_aux(self, c: jnp.ndarray, x0: jnp.ndarray, steps: int, *, trajectory: bool = False):
        """``(x_T, aux)`` for a task loss: ``aux = {"c", "x0", "x"}`` (each ``(B, S, D)``), with
        ``trajectory`` also ``aux["xs"]`` ``(T, B, S, D)`` (alias ``"trajectory"``), the visited states
        that ``rsa_jax.regularizers.JacobianPenalty`` reads."""
        if trajectory:
            x, xs = self.rollout(c, x0, steps, trajectory=True)
            return x, {"c": c, "x0": x0, "x": x, "xs": xs, "trajectory": xs}
        x = self.rollout(c, x0, steps)
        return x, {"c": c, "x0": x0, "x": x}


class PhaseReadout(nnx.Module):
    """AKOrN's phase-invariant features: ``||W x (+ b)||`` of each N-chunk, plus a bias.

    ``(..., D) -> (..., D)``: linear ``D -> D*N`` (with a bias for ``proj_bias``, as the official
    ``ReadOutConv``), the norm of each consecutive N-chunk of its output, plus a learned ``(D,)`` bias
    (zeros at init). Without ``proj_bias``, invariant to rotating any output oscillator of the linear map.
    """

    def __init__(self, d: int, n: int, *, rngs: nnx.Rngs, proj_bias: bool = False, param_init: str = "normal"):
        self.n = n
        self.proj = linear(d, d * n, rngs, param_init, use_bias=proj_bias)
        self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        return chunk_norm(self.proj(x), self.n)[..., 0] + self.bias[...]

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.features(x)
