"""Fig. 2c: eigenvalues of the ItrSA Jacobian at T = 16 in the complex plane, with and without normalization.

For one SATNet test puzzle (appendix B.4: "a randomly selected sample"), the Sudoku ItrSA is rolled
out for ``--T`` steps from its initial state X0, and two dense Jacobians are eigen-decomposed
(``rsa_jax.jacobian.dense_jacobian``, ``eigenvalues_by_modulus``; n = 81 D):

* per step: ``J = d f / d X`` of one update ``f: X -> Norm(X + eta (C + MSA(X)))`` at the final state X_T;
* composition: ``d f^T / d X0``. Its eigenvalues ``mu`` are drawn as ``|mu|^(1/T) exp(i arg mu)``
  (per-step geometric-mean modulus, same angle), so the unit circle keeps its meaning; skipped with
  ``--no-composition``. The product has a huge dynamic range, so its small eigenvalues are rounding
  noise: the dotted circle of radius ``(eps ||d f^T / d X0||_2)^(1/T)`` marks where noise starts
  (float64 by default here to keep it small; ``--float32`` to switch).

Models: ``rmsnorm`` (normalized) and ``none`` (unnormalized), untrained unless checkpoints are given
(``--checkpoint`` for the normalized model, ``--checkpoint-none`` for the unnormalized one, each a
shipped model name of ``rsa_jax.pretrained``, a ``.npz`` file or a run directory; the paper used a
fully trained normalized model and an unnormalized model trained for one epoch). The claim:
normalization pulls the complex eigenvalues inside the unit disk, while without it they leave it.
Null (radial) directions of the normalization give eigenvalues at 0.

``--krylov M`` (with ``--k K``) replaces both dense eigendecompositions by the ``K`` outermost
eigenvalues from ``M`` Arnoldi steps on the matrix-free Jacobian (``rsa_jax.jacobian.leading_eigenvalues``;
each step is one JVP of the map, or of the T-fold composition): the trained models' n = 10,368 in
seconds where a dense ``eig`` takes many minutes on a CPU. Only the outermost values are computed,
which is what "inside the unit disk" asks; each comes with its Arnoldi residual ``||J v - mu v||``,
and the summary's fractions are then over those ``K``.

Outputs under ``--out``: ``eigenvalues.json`` (eigenvalues, spectral radius, fraction outside the
unit circle) and ``eigenvalues.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
from experiments.sudoku_sweep import CHECKPOINT_HELP, load_checkpoint
from rsa_jax.data.sudoku import load_or_generate, to_model_inputs
from rsa_jax.dynamics import iterate
from rsa_jax.jacobian import dense_jacobian, eigenvalues_by_modulus, leading_eigenvalues
from rsa_jax.models.sudoku import ModelConfig, SudokuModel


def build(norm: str, args, checkpoint: str | None):
    """A Sudoku ItrSA model: trained from ``checkpoint`` or untrained with normalization ``norm``."""
    if checkpoint:
        return load_checkpoint(checkpoint, "--checkpoint" if norm == "rmsnorm" else "--checkpoint-none")[0]
    cfg = ModelConfig(kind="itrsa", d=args.d, heads=args.heads, n=args.n, norm=norm, position=args.position)
    return SudokuModel(cfg, rngs=nnx.Rngs(args.seed))


def summarize(ev: np.ndarray) -> dict:
    mod = np.abs(ev)
    return {"spectral_radius": float(mod.max()), "frac_outside_unit_circle": float(np.mean(mod > 1 + 1e-6)),
            "frac_complex": float(np.mean(np.abs(ev.imag) > 1e-9))}


def main(argv=None):
    p = make_parser("eigenvalues", __doc__, float64=True)
    p.add_argument("--d", type=int, default=16, help="width D of untrained models (default 16; paper 512)")
    p.add_argument("--heads", type=int, default=4, help="attention heads H of untrained models (default 4; paper 8)")
    p.add_argument("--n", type=int, default=4, help="oscillator size N of the readout (default 4)")
    p.add_argument("--position", default="gta", choices=["gta", "embedding"],
                   help="position encoding of untrained models (default gta)")
    p.add_argument("--T", type=int, default=16, help="steps before the Jacobian is taken (default 16)")
    p.add_argument("--index", type=int, default=0, help="index of the SATNet test puzzle (default 0)")
    p.add_argument("--checkpoint", default=None, metavar="NAME_OR_PATH", help=f"normalized model: {CHECKPOINT_HELP}")
    p.add_argument("--checkpoint-none", default=None, metavar="NAME_OR_PATH",
                   help=f"unnormalized model: {CHECKPOINT_HELP}")
    p.add_argument("--no-composition", action="store_true", help="skip the Jacobian of the T-fold composition")
    p.add_argument("--krylov", type=int, default=None, metavar="M",
                   help="matrix-free: the --k outermost eigenvalues from M Arnoldi steps instead of dense eig")
    p.add_argument("--k", type=int, default=32, help="eigenvalues kept with --krylov (default 32)")
    p.add_argument("--data-dir", default=None, help="Sudoku data folder (default: rsa_jax.data.sudoku's)")
    args = parse(p, argv)
    if args.krylov is not None and not 0 < args.k <= args.krylov:
        p.error(f"--k {args.k} eigenvalues need --krylov >= {args.k} Arnoldi steps; got {args.krylov}")
    dtype = jnp.float64 if args.float64 else jnp.float32

    data = load_or_generate("satnet_test", args.data_dir, n_fallback=args.index + 1, limit=args.index + 1)
    inp = to_model_inputs(data)
    pick = slice(args.index, args.index + 1)
    digits, given = jnp.asarray(inp["digits"][pick]), jnp.asarray(inp["given"][pick])

    results, rows = {}, []
    variants = (("normalized", "rmsnorm", args.checkpoint), ("unnormalized", "none", args.checkpoint_none))
    for name, norm, ckpt in variants:
        t0 = time.perf_counter()
        model = build(norm, args, ckpt)
        step, params = model.pure_step()
        c, x0 = model.condition(digits, given, jax.random.PRNGKey(args.seed))
        c, x0 = c[0].astype(dtype), x0[0].astype(dtype)
        f = lambda x: step(params, x, c)
        x_t = jax.jit(lambda x: iterate(f, x, args.T))(x0)
        res = {"norm": model.config.norm, "checkpoint": ckpt, "d": int(x0.shape[-1]),
               "state_norm_mean": float(jnp.linalg.norm(x_t, axis=-1).mean())}
        compose = lambda x: iterate(f, x, args.T)
        for part, g, at in (("step", f, x_t), ("composition", compose, x0))[:1 if args.no_composition else 2]:
            if args.krylov:
                lead = leading_eigenvalues(g, at, args.k, krylov_dim=args.krylov)
                res[part], res[part + "_residuals"] = lead.eigenvalues, lead.residuals
            else:
                jac = np.asarray(dense_jacobian(g, at), np.float64)
                res[part] = eigenvalues_by_modulus(jac)
                if part == "composition":
                    # eigenvalues below ~eps * ||J^(T)||_2 are rounding noise; in the plot's radius: ^(1/T)
                    res["noise_radius"] = float((np.finfo(dtype).eps * np.linalg.norm(jac, 2)) ** (1.0 / args.T))
            s = res[part + "_summary"] = summarize(res[part])
            if part + "_residuals" in res:
                s["max_residual"] = float(np.max(res[part + "_residuals"]))
            rows.append([name, res["norm"], part, s["spectral_radius"], s["frac_outside_unit_circle"],
                         s["frac_complex"], s.get("max_residual", "dense")])
        res["seconds"] = time.perf_counter() - t0
        results[name] = res
    scope = f" (of {args.k} outermost)" if args.krylov else ""
    print_table(rows, ["model", "norm", "Jacobian", "spectral radius", f"frac |lambda|>1{scope}",
                       f"frac complex{scope}", "max Arnoldi residual"])

    parts = ["step"] + ([] if args.no_composition else ["composition"])
    fig, axes = plt.subplots(len(parts), 2, figsize=(8, 4 * len(parts)), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 400))
    for i, part in enumerate(parts):
        for j, (name, res) in enumerate(results.items()):
            ev = res[part]
            if part == "composition":
                ev = np.abs(ev) ** (1.0 / args.T) * np.exp(1j * np.angle(ev))
            ax = axes[i, j]
            ax.plot(circle.real, circle.imag, "k-", lw=0.8)
            ax.scatter(ev.real, ev.imag, s=6, alpha=0.6, color="C0" if j == 0 else "C3")
            if part == "composition" and "noise_radius" in res:
                r = res["noise_radius"]
                ax.plot(r * circle.real, r * circle.imag, "k:", lw=0.8, label="rounding-noise radius")
                ax.legend(fontsize=7, loc="lower left")
            ax.set_aspect("equal")
            what = (f"one step at $X_{{{args.T}}}$" if part == "step"
                    else f"$|\\mu|^{{1/T}}e^{{i\\arg\\mu}}$ of $df^{{{args.T}}}/dX_0$")
            what += f" ({args.k} outermost)" if args.krylov else ""
            ax.set(title=f"{name} ({res['norm']}, D={res['d']})\n{what}", xlabel="Re", ylabel="Im")
            ax.title.set_fontsize(9)
    fig.suptitle(f"ItrSA Jacobian eigenvalues, T={args.T}", fontsize=10)
    fig.tight_layout()
    out = {"config": vars(args), "data": data.name,
           "results": {k: {kk: ({"real": v.real, "imag": v.imag} if np.iscomplexobj(v) else v)
                           for kk, v in r.items()} for k, r in results.items()}}
    announce([save_json(out, args.out / "eigenvalues.json"), save_figure(fig, args.out / "eigenvalues.png")])


if __name__ == "__main__":
    main()
