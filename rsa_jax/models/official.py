"""The official AKOrN Sudoku weights (PyTorch, autonomousvision/akorn) mapped onto ``SudokuModel``.

    state = dict(np.load("akorn_state.npz"))               # torch state_dict saved as numpy arrays
    model = load_official(state, ModelConfig(kind="akorn", d=512, heads=8, n=4))

``state`` holds the ``state_dict()`` of the official ``SudokuAKOrN`` (``source/models/sudoku/knet.py``,
``L = 1``) as NumPy arrays under the official names (an ``ema_model.`` / ``module.`` prefix is stripped).
The mapped model computes the official function: the same states at every step and the same logits
for the same puzzles and initial noise (``tests/test_official_parity.py`` checks it against states
and logits recorded from the official code).

Layouts. The official attention splits its channels into heads with einops'
``"b (c nh) h w -> b nh (h w) c"``: channel ``c * H + h`` is head ``h``'s channel ``c`` (heads
*interleaved*), for q, k, v and for the input of ``W_o``. Its 1x1 convolutions store
``(out, in, 1, 1)`` weights; ``nnx.Linear`` stores ``(in, out)``. GTA's ``mat_q, mat_k, mat_v, mat_o``
``(81, D_H/2, 2, 2)`` are ``attn["gta_mats"]``; the step size ``gamma`` is ``eta``; ``omg_param`` is
the omega 2-vector. ``x0`` (an unused parameter of the official model) is dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsa_jax.models.sudoku import ModelConfig, SudokuModel

__all__ = ["OFFICIAL_NAMES", "official_to_params", "load_official"]

_K = "layers.0.0.connectivity."
_R = "layers.0.1."
#: official state_dict name -> path in ``SudokuModel``'s parameter tree (``nnx.to_pure_dict``)
OFFICIAL_NAMES = {
    "embedding.weight": ("embed", "embedding"),
    "gamma": ("eta",),
    "layers.0.0.omg.omg_param": ("omega",),
    _K + "W_qkv.weight": ("attn", "wq", "wk", "wv"),
    _K + "W_qkv.bias": ("attn", "bq", "bk", "bv"),
    _K + "W_o.weight": ("attn", "wo"),
    _K + "W_o.bias": ("attn", "bo"),
    **{_K + f"mat_{a}": ("attn", "gta_mats", i) for i, a in enumerate("qkvo")},
    _R + "0.invconv.weight": ("readout", "proj", "kernel"),
    _R + "0.invconv.bias": ("readout", "proj", "bias"),
    _R + "0.bias": ("readout", "bias"),
    _R + "1.fn.fn.0.fn.2.weight": ("readout", "ff1", "kernel"),
    _R + "1.fn.fn.0.fn.2.bias": ("readout", "ff1", "bias"),
    _R + "1.fn.fn.1.fn.2.weight": ("readout", "ff2", "kernel"),
    _R + "1.fn.fn.1.fn.2.bias": ("readout", "ff2", "bias"),
    _R + "2.fn.2.weight": ("readout", "ff3", "kernel"),
    _R + "2.fn.2.bias": ("readout", "ff3", "bias"),
    "out.1.weight": ("readout", "out", "kernel"),
    "out.1.bias": ("readout", "out", "bias"),
}
_UNUSED = ("x0",)


def _heads_in(w: np.ndarray, heads: int, layout: str) -> np.ndarray:
    """``(D_out = H*D_H, ...)`` rows split into heads -> ``(H, D_H, ...)``."""
    dh = w.shape[0] // heads
    if layout == "interleaved":   # row c * H + h
        return np.swapaxes(w.reshape(dh, heads, *w.shape[1:]), 0, 1)
    return w.reshape(heads, dh, *w.shape[1:])   # "contiguous": row h * D_H + c


def official_to_params(state: dict, config: ModelConfig, *, head_layout: str = "interleaved") -> dict:
    """The parameter tree of ``SudokuModel(config)`` (``nnx.to_pure_dict`` form) from an official state_dict.

    Args:
      state: ``{official name: array}`` (see the module docstring).
      config: a Sudoku AKOrN config with the official parametrization (``gta_param="matrices"``,
        ``omega_param="vector"``, ``readout="akorn"``, ``position="gta"``, ``bias=True``).
      head_layout: ``"interleaved"`` (the official code's ``(c nh)``) or ``"contiguous"`` (``(nh c)``;
        wrong for the official code, kept to show that the parity test catches a wrong mapping).

    Returns:
      Nested dict of float32 arrays.
    """
    want = {"kind": "akorn", "gta_param": "matrices", "omega_param": "vector", "readout": "akorn",
            "position": "gta", "bias": True}
    bad = {k: getattr(config, k) for k, v in want.items() if getattr(config, k) != v}
    if bad:
        raise ValueError(f"the official AKOrN maps onto a config with {want}; this one has {bad}")
    if head_layout not in ("interleaved", "contiguous"):
        raise ValueError(f"head_layout must be 'interleaved' or 'contiguous', got {head_layout!r}")
    state = {_strip(k): np.asarray(v, np.float32) for k, v in state.items()}
    missing = sorted(set(OFFICIAL_NAMES) - set(state))
    extra = sorted(set(state) - set(OFFICIAL_NAMES) - set(_UNUSED))
    if missing or extra:
        raise ValueError(f"not the official Sudoku AKOrN (L = 1) state_dict: missing {missing}, unexpected {extra}")
    d, h = config.d, config.heads
    mat = lambda w: w.reshape(w.shape[0], w.shape[1])                 # 1x1 conv (out, in, 1, 1) -> (out, in)
    w3 = mat(state[_K + "W_qkv.weight"]).reshape(3, d, d)             # (q|k|v, out, in)
    b3 = state[_K + "W_qkv.bias"].reshape(3, d)
    attn = {}
    for i, name in enumerate("qkv"):
        attn["w" + name] = np.swapaxes(_heads_in(w3[i], h, head_layout), 1, 2)   # (H, D_H, D) -> (H, D, D_H)
        attn["b" + name] = _heads_in(b3[i], h, head_layout)
    wo = mat(state[_K + "W_o.weight"])                                 # (out, in = H * D_H)
    attn["wo"] = _heads_in(wo.T, h, head_layout)                       # (H, D_H, D)
    attn["bo"] = state[_K + "W_o.bias"]
    attn["gta_mats"] = np.stack([state[_K + f"mat_{a}"] for a in "qkvo"])
    dense = lambda name: {"kernel": mat(state[name + ".weight"]).T, "bias": state[name + ".bias"]}
    readout = {"proj": dense(_R + "0.invconv"), "bias": state[_R + "0.bias"], "ff1": dense(_R + "1.fn.fn.0.fn.2"),
               "ff2": dense(_R + "1.fn.fn.1.fn.2"), "ff3": dense(_R + "2.fn.2"), "out": dense("out.1")}
    return {"attn": attn, "embed": {"embedding": state["embedding.weight"]}, "eta": state["gamma"].reshape(()),
            "omega": state["layers.0.0.omg.omg_param"], "readout": readout}


def load_official(state: dict, config: ModelConfig, *, head_layout: str = "interleaved") -> SudokuModel:
    """``SudokuModel(config)`` holding the official weights ``state`` (see :func:`official_to_params`)."""
    model = SudokuModel(config, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    new = official_to_params(state, config, head_layout=head_layout)
    shapes = lambda t: {k: shapes(v) if isinstance(v, dict) else tuple(np.shape(v)) for k, v in t.items()}
    if shapes(new) != shapes(nnx.to_pure_dict(params)):
        raise ValueError(f"official weights do not fit {config}: {shapes(new)} vs {shapes(nnx.to_pure_dict(params))}")
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, new))
    return nnx.merge(graphdef, params, rest)


def _strip(name: str) -> str:
    for prefix in ("ema_model.", "online_model.", "module."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name
