"""Looped image classifiers (ItrSA, AKOrN) on patch tokens, as Flax NNX modules (paper B.6, Fig. S.2).

Same recurrent core as the Sudoku models (``rsa_jax.models.common.LoopedCore``), so
``model.pure_step()`` returns ``(step, params)`` with ``step(params, x, c) -> x`` and every
analysis tool runs on a trained classifier unchanged:

    step, params = model.pure_step()
    c, x0 = model.condition(images, key)
    f = lambda x: step(params, x, c[0])          # one image, (S, D) -> (S, D)

Tokens: ``patch x patch`` non-overlapping patches in row-major order (``patchify``), so a
32 x 32 CIFAR-10 image gives an 8 x 8 grid (S = 64) and a 28 x 28 Fashion-MNIST image a
7 x 7 grid (S = 49) with ``patch=4``. A linear patch embedding (AKOrN's stride-``patch``
convolution) gives the conditioning ``C`` (B, S, D); positions are a learned additive embedding
initialized with 2-D sinusoids (``position="embedding"``) or GTA rotations with RoPE-like angles
(``position="gta"``) on the patch grid.

Initial state (``init``): ``"condition"`` (default) uses ``X0 = Pi_N(C)``, deterministic, so
the Lyapunov analysis of one image needs no noise sample; ``"noise"`` uses ``X0 = Pi_N(Z)``,
``Z ~ N(0, I)``, as AKOrN's image code does (``knet.py``: ``x = torch.randn_like(c)``).
``N`` is ``config.state_chunk`` (N for AKOrN, ``norm_n`` for ItrSA).

Readout: AKOrN's phase-invariant features per token (linear D -> D*N, norm of each N-chunk plus
bias), mean-pooled over tokens, then a linear classifier to ``num_classes`` logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.models.common import CoreConfig, LoopedCore, PhaseReadout
from rsa_jax.ops import pi


@dataclasses.dataclass(frozen=True)
class VisionConfig(CoreConfig):
    """Architecture of a looped image classifier.

    Core attributes (``kind, d, heads, n, norm, norm_n, position, bias, eta_init, omega_init,
    gamma_init, fused``) as in ``rsa_jax.models.sudoku.ModelConfig``; defaults follow the paper's CIFAR-10
    run (D = 384, H = 8). Image attributes:

    Attributes:
      patch: patch side P (must divide ``image_size``).
      image_size: image side (square images): 32 for CIFAR-10, 28 for Fashion-MNIST.
      channels: image channels.
      num_classes: classifier outputs.
      init: ``"condition"`` (X0 = Pi_N(C)) or ``"noise"`` (X0 = Pi_N(N(0, I))).
    """

    d: int = 384
    patch: int = 4
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    init: str = "condition"

    def __post_init__(self):
        super().__post_init__()
        if self.patch <= 0 or self.image_size % self.patch:
            raise ValueError(f"patch={self.patch} must divide image_size={self.image_size}")
        if self.init not in ("condition", "noise"):
            raise ValueError(f"init must be 'condition' or 'noise', got {self.init!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``."""
        g = self.image_size // self.patch
        return (g, g)

    @property
    def tokens(self) -> int:
        """Number of tokens S."""
        return self.grid[0] * self.grid[1]

    @property
    def patch_dim(self) -> int:
        """Features per patch ``P * P * channels``."""
        return self.patch * self.patch * self.channels


def patchify(images: jnp.ndarray, patch: int) -> jnp.ndarray:
    """Splits images into non-overlapping patches (a pure reshape).

    Args:
      images: ``(..., H, W, C)``, ``patch`` dividing H and W.
      patch: patch side P.

    Returns:
      ``(..., (H/P) * (W/P), P * P * C)``: token ``r * (W/P) + c`` is the patch in grid row r,
      column c; its features are ordered ``(row in patch, column in patch, channel)``.
    """
    *lead, h, w, ch = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h} x {w} (images {images.shape})")
    gh, gw = h // patch, w // patch
    x = images.reshape(*lead, gh, patch, gw, patch, ch)
    x = jnp.moveaxis(x, -4, -3)  # (..., gh, gw, P, P, C)
    return x.reshape(*lead, gh * gw, patch * patch * ch)


def unpatchify(tokens: jnp.ndarray, patch: int, grid: tuple[int, int], channels: int) -> jnp.ndarray:
    """Inverse of ``patchify``: ``(..., R*C, P*P*ch) -> (..., R*P, C*P, ch)``."""
    *lead, s, f = tokens.shape
    gh, gw = grid
    if s != gh * gw or f != patch * patch * channels:
        raise ValueError(f"tokens {tokens.shape} do not match grid {grid}, patch {patch}, channels {channels}")
    x = tokens.reshape(*lead, gh, gw, patch, patch, channels)
    x = jnp.moveaxis(x, -3, -4)  # (..., gh, P, gw, P, C)
    return x.reshape(*lead, gh * patch, gw * patch, channels)


class ClassifierReadout(PhaseReadout):
    """``(..., S, D) -> (..., num_classes)``: phase-invariant features, mean over tokens, linear."""

    def __init__(self, d: int, n: int, num_classes: int, *, rngs: nnx.Rngs):
        super().__init__(d, n, rngs=rngs)
        self.out = nnx.Linear(d, num_classes, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.out(self.features(x).mean(axis=-2))


class VisionModel(LoopedCore):
    """ItrSA or AKOrN classifier on image patches; see the module docstring."""

    def __init__(self, config: VisionConfig, *, rngs: nnx.Rngs):
        cfg = self.config = config
        self.embed = nnx.Linear(cfg.patch_dim, cfg.d, rngs=rngs)
        self._init_core(cfg, cfg.grid, rngs)
        self.readout = ClassifierReadout(cfg.d, cfg.n, cfg.num_classes, rngs=rngs)

    def condition(self, images: jnp.ndarray, key: jax.Array | None = None):
        """Conditioning and initial state.

        Args:
          images: ``(B, H, W, C)`` float images (normalized).
          key: PRNG key for ``init="noise"``; unused (may be None) for ``init="condition"``.

        Returns:
          ``(c, x0)``, each ``(B, S, D)``.
        """
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.channels)
        if images.ndim < 3 or tuple(images.shape[-3:]) != want:
            raise ValueError(f"images must be (B, {want[0]}, {want[1]}, {want[2]}); got {images.shape}")
        c = self.add_position(self.embed(patchify(images, cfg.patch)))
        if cfg.init == "noise":
            if key is None:
                raise ValueError("init='noise' needs a PRNG key")
            return c, pi(jax.random.normal(key, c.shape, c.dtype), cfg.state_chunk)
        return c, pi(c, cfg.state_chunk)

    def __call__(self, images: jnp.ndarray, key: jax.Array | None, steps: int) -> jnp.ndarray:
        """``(B, H, W, C)`` images -> ``(B, num_classes)`` logits after ``steps`` updates."""
        c, x0 = self.condition(images, key)
        return self.readout(self.rollout(c, x0, steps))
