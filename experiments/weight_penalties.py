"""The regularizers of Fig. 5 at trained weights: how far training moved what each penalty measures.

A weight penalty lambda R can only matter if lambda R is not negligible beside the loss, and it has
acted only if the trained weights have a smaller R than those trained without it. For every given
model (shipped name, ``.npz`` or run directory) this script evaluates, exactly, at its weights (the
EMA ones) and at its initialization (the same config and seed, ``SudokuModel(config, nnx.Rngs(seed))``,
what training starts from):

* ``r_spec``: R_Spec = sum_W (sigma_max(W)^2 - 1)^2 + sum_b ||b||^4 over W^Q, W^K, W^V, W^O taken apart
  (``rsa_jax.regularizers.spec_matrices``, layout ``separate``; sigma_max by SVD, not power iteration),
  ``r_spec_fused`` the same over W_qkv and W^O as the AKOrN code stores them, and ``sigma_max`` of each
  matrix;
* ``r_e``: sum_h ||A_h - A_h^T||_F^2 with A_h = W^V_h W^O_h (R_E-multi; for H = 1 it is R_E-single),
  and ``asymmetry`` = r_e / (2 sum_h ||A_h||_F^2), a scale-free measure: 0 for symmetric A_h, about 1
  for random ones, 2 for antisymmetric ones;
* the penalty the model was trained with and its lambda (from its training config), and lambda R.

Outputs under ``--out``: ``weight_penalties.json`` and a table on stdout; seconds on a CPU.

    python -m experiments.weight_penalties --checkpoints sudoku-itrsa-h1-cpu sudoku-itrsa-esingle-cpu
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from experiments.common import announce, make_parser, parse, print_table, save_json
from experiments.sudoku_sweep import CHECKPOINT_HELP, load_checkpoints
from rsa_jax.models.sudoku import SudokuModel
from rsa_jax.regularizers import r_e_multi, spec_biases, spec_matrices, value_output_products


def penalties(attn: dict) -> dict:
    """Exact R_Spec (separate and fused layouts, with each sigma_max) and R_E of attention parameters."""
    out = {}
    for layout, key in (("separate", "r_spec"), ("fused", "r_spec_fused")):
        sig = {name: float(np.linalg.norm(np.asarray(w, np.float64), 2)) for name, w in
               spec_matrices(attn, layout).items()}
        out[key] = float(sum((s ** 2 - 1.0) ** 2 for s in sig.values()) + float(spec_biases(attn, layout)))
        if layout == "separate":
            out["sigma_max"] = sig
    r_e = float(r_e_multi(attn))
    prods = np.asarray(value_output_products(attn), np.float64)
    out["r_e"] = r_e
    out["asymmetry"] = r_e / (2.0 * float(np.sum(prods ** 2)))
    return out


def record(label: str, model, cfg) -> dict:
    """The penalties of one trained model, of its initialization, and its training penalty."""
    init = SudokuModel(model.config, rngs=nnx.Rngs(cfg.seed))
    trained, at_init = penalties(model.pure_step()[1]["attn"]), penalties(init.pure_step()[1]["attn"])
    lam, penalty = float(cfg.penalty_lam), cfg.penalty
    value = {"spec": trained["r_spec_fused" if cfg.spec_layout == "fused" else "r_spec"],
             "e_single": trained["r_e"], "e_multi": trained["r_e"]}.get(penalty)
    return {"checkpoint": label, "heads": model.config.heads, "model_config": dataclasses.asdict(model.config),
            "penalty": penalty, "lam": lam, "lam_r": None if value is None else lam * value,
            "trained": trained, "init": at_init}


def main(argv=None) -> dict:
    p = make_parser("weight_penalties", __doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="NAME_OR_PATH", help=CHECKPOINT_HELP)
    args = parse(p, argv)
    records = [record(label, model, cfg) for label, model, cfg in load_checkpoints(args.checkpoints)]
    f = lambda r, k: f"{r['trained'][k]:.4g} ({r['init'][k]:.4g})"
    rows = [[r["checkpoint"], r["heads"], r["penalty"] + (f" {r['lam']:g}" if r["penalty"] != "none" else ""),
             "-" if r["lam_r"] is None else f"{r['lam_r']:.3g}", f(r, "r_spec"), f(r, "r_spec_fused"),
             f"{max(r['trained']['sigma_max'].values()):.3f} ({max(r['init']['sigma_max'].values()):.3f})",
             f(r, "r_e"), f(r, "asymmetry")] for r in records]
    print_table(rows, ["model", "H", "trained with", "lambda R", "R_Spec (init)", "R_Spec fused (init)",
                       "max sigma_max (init)", "R_E (init)", "asymmetry (init)"])
    out = {"records": records}
    announce([save_json(out, args.out / "weight_penalties.json")])
    return out


if __name__ == "__main__":
    main()
