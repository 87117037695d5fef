"""Lyapunov exponents of Sudoku ItrSA maps (appendix B.3, Figs. 5 / S.1): max and mean LE under sweeps.

For each model and each setting, the exponents ``lambda_i = (1/T) ln sigma_i(d f^T / d X0)`` of the
T-fold composition of one ItrSA step are computed at X0 of a SATNet test puzzle
(``rsa_jax.lyapunov.lyapunov_spectrum``, whose default is the B.3 definition: full spectrum with one Ritz
sweep, which is exact; ``--k`` for the leading k only, by subspace iteration with ``--sweeps`` sweeps; ``--sweeps
0`` would be the classical Benettin QR estimator, which is *not* the definition at finite T). Reported per model
and setting:

* max LE: the largest exponent;
* mean LE: the mean over the non-null exponents. A normalized model (Pi / RMSNorm per token) has one
  null (radial) direction per token, reported by the library at ``NULL_FLOOR`` and excluded, so the
  mean is over ``M = S (D - 1)`` exponents (``S = 81``); unnormalized models average all ``S D``.
  With ``--k`` the mean is over the leading k only (not the paper's mean LE), unless ``--paper-mean``:
  then the paper's mean LE comes exactly from the sum of the ``M`` non-null exponents
  (``rsa_jax.lyapunov.nonnull_exponent_sum``, about half the work of the full spectrum), and the table's
  mean column shows it (the leading-k mean stays in the JSON as ``mean_le``).

Models (``--models``; untrained unless ``--checkpoint``: shipped model names (``rsa_jax.pretrained``),
``.npz`` files or run directories; the paper used fully trained normalized models and models without
normalization / symmetric SA trained for one epoch):

* ``none``, ``pi``, ``rmsnorm``: ``SudokuModel(ModelConfig(kind="itrsa", norm=...))``, the ItrSA step
  ``X <- Norm(X + eta (C + MSA(X)))`` (eq. 9) with, at init: ``none`` no normalization (the state's norm is
  free); ``pi`` every token projected onto the unit sphere, ``Pi(Y)_i = Y_i / ||Y_i||``; ``rmsnorm``
  ``gamma * Pi(Y)_i`` with a learned gain gamma that starts at 1, so *untrained* ``rmsnorm`` is the same map
  as ``pi`` and their rows and curves coincide (they differ only for trained checkpoints, whose gamma moved);
* ``symmetric``: the ``rmsnorm`` model whose attention parameters are replaced by the generalized
  symmetric (energy) parametrization ``rsa_jax.attention.symmetric_multi_head(key, D, H)`` (Prop. 4.2:
  ``W^V_h = A_h`` symmetric, no ``W^O``, no biases); ``--symmetric-norm`` picks its normalization.

Untrained models use an additive position embedding (``position="embedding"``) so that all four
share the conditioning ``C`` (GTA angles do not fit the symmetric parametrization's ``D_V = D``).

Sweeps (each flag takes one or more values; all combinations are run):

* ``--scale s``: the composition starts from ``s * X0``;
* ``--eta``: overrides the learned step size eta;
* ``--wv-norm``: rescales all ``W^V_h`` by one factor so that the concatenated ``W^V`` (``D x H D_V``)
  has this *spectral* norm; ``--wo-norm`` likewise for the concatenated ``W^O`` (``H D_V x D``;
  not applicable to ``symmetric``, which has no ``W^O``);
* ``--heads``: H of the (untrained) models; ``--T``: horizon;
* ``--warmup W``: the composition starts from the state after W inference steps, ``f^W(s * X0)``, so
  the exponents describe where the dynamics has gone (an attractor, a cycle) rather than the first
  T steps from X0 (the paper's definition is W = 0).

Outputs: ``lyapunov.json`` (every setting with max/mean LE and the spectrum), ``lyapunov.png``
(max and mean LE vs the first swept variable with several values, one line per model) under
``--out``; a table on stdout. ``python -m experiments.lyapunov --scale 2.0`` runs in well under a
minute on a CPU (D = 8, H = 2: full spectrum of n = 648).
"""

from __future__ import annotations

import functools
import itertools
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from experiments import blas_threads
from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
from experiments.sudoku_sweep import CHECKPOINT_HELP, load_checkpoint
from rsa_jax.attention import symmetric_multi_head, with_spectral_norms
from rsa_jax.data.sudoku import load_or_generate, to_model_inputs
from rsa_jax.dynamics import itrsa_step, rollout
from rsa_jax.lyapunov import (lyapunov_spectrum, max_lyapunov, mean_lyapunov, nonnull_exponent_sum,
                             null_directions)
from rsa_jax.models.sudoku import ModelConfig, SudokuModel

SWEEPS = ("scale", "eta", "wv_norm", "wo_norm", "heads", "T", "warmup")


def build(kind: str, args, heads: int, checkpoint: str | None = None):
    """``(label, step, params, model, null_chunk)`` for one model kind (or a trained checkpoint)."""
    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
        cfg = model.config
        step, params = model.pure_step()
        return f"{checkpoint} ({cfg.kind}-{cfg.norm})", step, params, model, (cfg.norm, cfg.state_chunk)
    norm = args.symmetric_norm if kind == "symmetric" else kind
    cfg = ModelConfig(kind="itrsa", d=args.d, heads=heads, n=args.n, norm=norm, position="embedding")
    model = SudokuModel(cfg, rngs=nnx.Rngs(args.seed))
    step, params = model.pure_step()
    if kind == "symmetric":
        params = dict(params, attn=symmetric_multi_head(jax.random.PRNGKey(args.seed), args.d, heads))
        step = functools.partial(itrsa_step, norm=norm)
    return kind, step, params, model, (norm, None)


@functools.partial(jax.jit, static_argnames=("step", "T", "k", "sweeps"))
def spectra(step, params, c, x0, *, T, k, sweeps):
    """``(exponents (B, k), residual (B,))`` for a batch of puzzles (vmapped; params traced, so sweeps reuse one
    compile); ``residual``: the last sweep's largest change of an exponent (0 for the full spectrum)."""
    def one(x, cc):
        res = lyapunov_spectrum(lambda y: step(params, y, cc), x, T, k, sweeps=sweeps)
        return res.exponents, jnp.zeros((), x.dtype) if res.residual is None else res.residual

    return jax.vmap(one)(x0, c)


def _finite_or_none(v) -> float | None:
    """A residual for JSON: None where no refinement sweep ran (one Ritz pass: not measured, inf)."""
    return float(v) if np.isfinite(v) else None


@functools.partial(jax.jit, static_argnames=("step", "steps"))
def advance(step, params, c, x, *, steps):
    """``f^steps(x)`` for a batch of puzzles: ``x`` ``(B, S, D)``, ``c`` ``(B, S, D)`` -> ``(B, S, D)``."""
    return rollout(jax.vmap(step, in_axes=(None, 0, 0)), params, x, c, steps)


@functools.partial(jax.jit, static_argnames=("step", "T", "num_null", "chunk"))
def exponent_sums(step, params, c, x0, *, T, num_null, chunk=None):
    """``nonnull_exponent_sum`` per puzzle (one after the other: each holds an ``n x n`` Jacobian)."""
    return jax.lax.map(lambda a: nonnull_exponent_sum(lambda y: step(params, y, a[1]), a[0], T, num_null,
                                                      chunk=chunk), (x0, c))


def main(argv=None):
    p = make_parser("lyapunov", __doc__)
    p.add_argument("--models", nargs="+", default=["none", "pi", "rmsnorm", "symmetric"],
                   choices=["none", "pi", "rmsnorm", "symmetric"],
                   help="untrained model kinds (default: all four; pi and rmsnorm coincide at init, gamma = 1)")
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="NAME_OR_PATH",
                   help=f"{CHECKPOINT_HELP}, one or more; if given, these trained models replace --models")
    p.add_argument("--d", type=int, default=8, help="width D of untrained models (default 8; paper 512)")
    p.add_argument("--n", type=int, default=4, help="oscillator size N of the readout (default 4)")
    p.add_argument("--symmetric-norm", default="rmsnorm", choices=["none", "pi", "rmsnorm"],
                   help="normalization of the symmetric model (default rmsnorm)")
    p.add_argument("--samples", type=int, default=1, help="SATNet test puzzles (default 1, as in the paper)")
    p.add_argument("--k", type=int, default=None, help="leading exponents only (default: full spectrum)")
    p.add_argument("--paper-mean", action="store_true",
                   help="with --k: also the paper's mean LE over all non-null exponents, exactly, from their sum "
                        "(rsa_jax.lyapunov.nonnull_exponent_sum; minutes at n = 10,368 on a CPU)")
    p.add_argument("--chunk", type=int, default=None,
                   help="--paper-mean pushes this many tangent columns at once (default: all n, ~5 GB at "
                        "n = 10,368; a few hundred bound the memory, same result)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="--paper-mean: OpenBLAS threads for its n x n QRs (default: every CPU; the rest of the "
                        "run keeps one, see experiments/__init__.py)")
    p.add_argument("--sweeps", type=int, default=None,
                   help="refinement sweeps of lyapunov_spectrum (default 1 for the full spectrum: exact; 10 with --k: "
                        "subspace iteration on J^(T)T J^(T), each record's residual (the last sweep's largest change "
                        "of an exponent) says how far it got; 0: the "
                        "classical QR estimator, not the B.3 definition at finite T)")
    p.add_argument("--scale", type=float, nargs="+", default=[1.0], help="X0 multiplier(s) (default 1)")
    p.add_argument("--eta", type=float, nargs="+", default=[None], help="step size(s) eta (default: the model's)")
    p.add_argument("--wv-norm", type=float, nargs="+", default=[None], help="spectral norm(s) of W^V (default: as is)")
    p.add_argument("--wo-norm", type=float, nargs="+", default=[None], help="spectral norm(s) of W^O (default: as is)")
    p.add_argument("--heads", type=int, nargs="+", default=[2],
                   help="attention heads H of untrained models (default 2; paper 8)")
    p.add_argument("--T", type=int, nargs="+", default=[16], help="horizon(s) T (default 16, as in the paper)")
    p.add_argument("--warmup", type=int, nargs="+", default=[0],
                   help="inference steps W run before the T-fold composition, which then starts at f^W(X0) "
                        "(default 0, the paper's definition)")
    p.add_argument("--data-dir", default=None, help="Sudoku data folder (default: rsa_jax.data.sudoku's)")
    args = parse(p, argv)
    args.sweeps = (1 if args.k is None else 10) if args.sweeps is None else args.sweeps
    if min(args.warmup) < 0:
        raise SystemExit(f"--warmup must be >= 0; got {args.warmup}")
    if args.chunk is not None and args.chunk < 1:
        raise SystemExit(f"--chunk must be >= 1; got {args.chunk}")
    if args.blas_threads is not None and args.blas_threads < 1:
        raise SystemExit(f"--blas-threads must be >= 1; got {args.blas_threads}")
    if args.paper_mean and args.k is None:
        print("--paper-mean: the full spectrum's mean already is the paper's mean LE (no --k given)")
    dtype = jnp.float64 if args.float64 else jnp.float32

    data = load_or_generate("satnet_test", args.data_dir, n_fallback=max(args.samples, 1), limit=args.samples)
    inp = to_model_inputs(data)
    digits, given = jnp.asarray(inp["digits"][:args.samples]), jnp.asarray(inp["given"][:args.samples])
    sources = [(None, path) for path in args.checkpoint] if args.checkpoint else [(m, None) for m in args.models]

    records, rows = [], []
    for (kind, ckpt), heads in itertools.product(sources, args.heads if not args.checkpoint else [None]):
        label, step, base, model, (norm, chunk) = build(kind, args, heads, ckpt)
        c, x0 = model.condition(digits, given, jax.random.PRNGKey(args.seed))
        c, x0 = c.astype(dtype), x0.astype(dtype)
        nulls = null_directions(x0.shape[1:], chunk, norm)
        num_null = nulls if args.k is None else 0
        done = set()
        for scale, eta, wv, wo, T, warm in itertools.product(args.scale, args.eta, args.wv_norm, args.wo_norm, args.T,
                                                             args.warmup):
            wo = wo if "wo" in base["attn"] else None  # symmetric SA has no W^O: --wo-norm does not apply
            if (scale, eta, wv, wo, T, warm) in done:
                continue
            done.add((scale, eta, wv, wo, T, warm))
            attn = with_spectral_norms(base["attn"], wv_norm=wv, wo_norm=wo)
            params = dict(base, attn=attn, eta=jnp.asarray(base["eta"] if eta is None else eta, jnp.float32))
            t0 = time.perf_counter()
            start = advance(step, params, c, scale * x0, steps=warm) if warm else scale * x0
            ex, residual = spectra(step, params, c, start, T=T, k=args.k, sweeps=args.sweeps)
            mx, mn = np.asarray(max_lyapunov(ex)), np.asarray(mean_lyapunov(ex, num_null))
            rec = {"model": label, "checkpoint": ckpt, "heads": int(params["attn"]["wq"].shape[0]), "scale": scale,
                   "eta": float(params["eta"]), "eta_overridden": eta is not None, "wv_norm": wv, "wo_norm": wo,
                   "T": T, "warmup": warm, "num_null": num_null, "d": int(x0.shape[-1]),
                   "max_le": mx.mean(), "mean_le": mn.mean(), "max_le_per_sample": mx, "mean_le_per_sample": mn,
                   "seconds": time.perf_counter() - t0, "exponents": np.asarray(ex), "sweeps": args.sweeps,
                   "residual": _finite_or_none(np.max(np.asarray(residual)))}
            if args.paper_mean and args.k is not None:
                t1 = time.perf_counter()
                with blas_threads(args.blas_threads):
                    sums = jax.block_until_ready(exponent_sums(step, params, c, start, T=T, num_null=nulls,
                                                               chunk=args.chunk))
                pm = np.asarray(sums.total) / (x0[0].size - nulls)
                piv = {"kept": np.asarray(sums.kept_pivot), "dropped": np.asarray(sums.dropped_pivot),
                       "min_stretch": np.asarray(sums.min_stretch)}
                rec.update(paper_mean_le=pm.mean(), paper_mean_le_per_sample=pm, paper_mean_num_null=nulls,
                           paper_mean_pivots=piv, paper_mean_seconds=time.perf_counter() - t1)
                if nulls and np.any(piv["dropped"] > 1e-3 * piv["kept"]):
                    print(f"warning: {label}: the Jacobian's null space does not look like the {nulls} directions "
                          f"of its normalization (pivots kept {piv['kept']}, dropped {piv['dropped']}); the paper "
                          "mean may be off", flush=True)
            records.append(rec)
            paper = "paper_mean_le" in rec
            m_used = x0[0].size - nulls if paper else ex.shape[-1] - num_null
            mean = rec["paper_mean_le"] if paper else rec["mean_le"]
            secs = rec["seconds"] + rec.get("paper_mean_seconds", 0.0)
            rows.append([label, rec["heads"], scale, rec["eta"], "-" if wv is None else wv, "-" if wo is None else wo,
                         T, warm, m_used, rec["max_le"], mean, secs])
            print(f"{label}: max LE {rec['max_le']:+.4f}, mean LE {mean:+.4f} over {m_used} exponents "
                  f"({secs:.1f}s)", flush=True)
    print()
    print_table(rows, ["model", "H", "scale", "eta", "|W^V|_2", "|W^O|_2", "T", "W", "M", "max LE", "mean LE", "s"])
    if not args.checkpoint and {"pi", "rmsnorm"} <= set(args.models):
        print("(untrained pi and rmsnorm are the same map: RMSNorm's gain gamma starts at 1)")

    swept = [s for s in SWEEPS if len({str(r[s]) for r in records}) > 1] or ["scale"]
    x = swept[0]
    xs = [r[x] for r in records if r[x] is not None]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 10      # the sweep spans a decade or more
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, stat in zip(axes, ("max_le", "mean_le")):
        for i, label in enumerate(dict.fromkeys(r["model"] for r in records)):
            key = lambda r: "paper_mean_le" if stat == "mean_le" and "paper_mean_le" in r else stat
            pts = sorted((r[x], r[key(r)]) for r in records if r["model"] == label and r[x] is not None)
            if pts:  # markers and dashes differ so that coinciding models (pi = rmsnorm at init) stay visible
                same = label == "rmsnorm" and not args.checkpoint and "pi" in args.models
                ax.plot(*zip(*pts), marker="os^vD"[i % 5], ls=["-", "--", ":", "-."][i % 4], ms=7 - i,
                        label="rmsnorm (= pi at init: gamma = 1)" if same else label)
        if log_x:
            ax.set_xscale("log")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set(xlabel=x, ylabel=stat.replace("_le", " LE"), title=f"{stat.replace('_le', ' LE')} vs {x}")
    axes[0].legend(fontsize=8)
    vals = lambda key: ",".join(str(v) for v in sorted({r[key] for r in records}))
    state = (f"trained: {', '.join(map(str, args.checkpoint))}" if args.checkpoint
             else f"untrained (init, seed {args.seed})")
    estimator = ("classical QR estimator (--sweeps 0)" if args.sweeps == 0
                 else "B.3 exponents ln sigma_i(J^(T))/T")
    title = (f"{estimator}, T={vals('T')}, D={vals('d')}, H={vals('heads')}, {state}; "
             f"X0 from {data.name} ({int(digits.shape[0])} puzzle(s))")
    if len(swept) > 1:
        title += f"\nalso varied: {', '.join(swept[1:])} (points overlap)"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out = {"config": vars(args), "num_samples": int(digits.shape[0]), "data": data.name, "records": records}
    announce([save_json(out, args.out / "lyapunov.json"), save_figure(fig, args.out / "lyapunov.png")])


if __name__ == "__main__":
    main()
