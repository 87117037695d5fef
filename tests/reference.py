"""Independent NumPy references shared by the tests (imported as ``from reference import ...``)."""

from __future__ import annotations

import numpy as np


def numpy_attention_params(d: int, h: int, *, out_proj: bool = True, bias: bool = False, seed: int = 0) -> dict:
    """Random MSA parameters in the library layout, drawn with NumPy (``init_attention`` is tested apart).

    Weights are N(0, 1/D): ``wq, wk`` ``(H, D, D/H)``, ``wv`` ``(H, D, D_V)``, ``wo`` ``(H, D_V, D)`` with
    ``D_V = D/H`` (``D`` without ``out_proj``); with ``bias`` N(0, 1) ``bq, bk`` ``(H, D/H)``, ``bv``
    ``(H, D_V)``, ``bo`` ``(D,)``. Returns NumPy float64 arrays.
    """
    rng = np.random.default_rng(seed)
    dh = d // h
    dv = dh if out_proj else d
    p = {"wq": rng.standard_normal((h, d, dh)), "wk": rng.standard_normal((h, d, dh)),
         "wv": rng.standard_normal((h, d, dv))}
    if out_proj:
        p["wo"] = rng.standard_normal((h, dv, d))
    p = {k: v / np.sqrt(d) for k, v in p.items()}
    if bias:
        p |= {"bq": rng.standard_normal((h, dh)), "bk": rng.standard_normal((h, dh)),
              "bv": rng.standard_normal((h, dv))}
        if out_proj:
            p["bo"] = rng.standard_normal(d)
    return p
