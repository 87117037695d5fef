"""Timing: matrix-free vs dense Jacobian methods for Lyapunov exponents and the spectral norm.

On an ItrSA step (RMSNorm, untrained ``init_attention``), for growing ``n = S * D``:

* Lyapunov, leading ``k`` exponents over ``T`` steps, QR every step, the same ``Q0``:
  - matrix-free: ``rsa_jax.lyapunov.lyapunov_spectrum(method="qr")``, the classical QR estimator
    (``jax.linearize`` + ``vmap`` over the k tangent columns; its default, the B.3 definition, adds
    backward passes);
  - dense: the full ``n x n`` Jacobian of every step by ``jax.jacfwd``, then ``J @ Q`` and QR.
* Spectral norm of the one-step Jacobian:
  - power iteration (``rsa_jax.jacobian.spectral_norm``, ``--power-iters`` iterations, no early stop);
  - dense: ``jax.jacfwd`` + ``jnp.linalg.svd`` (singular values only).

Every function is jitted; the reported time is the median of ``--repeats`` calls after one warm-up
call (whose time, mostly compilation, is reported separately), with ``jax.block_until_ready``.
Both methods' results are compared (max abs difference of the exponents, relative difference of the
norms). Output: JSON at ``--out`` (default ``outputs/bench/lyapunov.json``) and a log-log PNG of
time vs n next to it.

    python -m benchmarks.lyapunov_bench              # CPU: S in {4, 9, 16}, D in {16, 32, 64}, k=16, T=16
    python -m benchmarks.lyapunov_bench --paper      # accelerator: S=81, D in {64..512}, k=256, H=8
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax

from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
from rsa_jax.attention import init_attention
from rsa_jax.dynamics import itrsa_step
from rsa_jax.jacobian import dense_jacobian, init_power_state, linear_operators, power_iteration
from rsa_jax.lyapunov import lyapunov_spectrum


def dense_lyapunov(f, x0, q0, T):
    """Leading exponents with a dense per-step Jacobian: ``Q <- qr(J_t Q)``, ``q0`` ``(n, k)``."""
    def body(carry, _):
        x, q = carry
        j = dense_jacobian(f, x)
        q, r = jnp.linalg.qr(j @ q)
        return (f(x), q), jnp.log(jnp.abs(jnp.diagonal(r)))

    logs = lax.scan(body, (x0, q0), None, length=T)[1]
    return -jnp.sort(-logs.sum(0) / T)


def matrix_free_norm(f, x, v0, iters):
    _, jvp, vjp = linear_operators(f, x)
    state = power_iteration(jvp, vjp, init_power_state(jax.random.PRNGKey(0), x)._replace(v=v0),
                            max_iters=iters, tol=0.0)
    return state.sigma


def dense_norm(f, x):
    return jnp.linalg.svd(dense_jacobian(f, x), compute_uv=False)[0]


def timed(fn, *args, repeats):
    """(median seconds over ``repeats`` calls after a warm-up, warm-up seconds, result)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    warm = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), warm, out


def bench_one(s, d, args, dtype):
    rng = np.random.default_rng(args.seed)
    params = {"attn": init_attention(jax.random.PRNGKey(args.seed), d, args.heads, dtype=dtype), "eta": 1.0,
              "gamma": jnp.ones((d,), dtype)}
    c = jnp.asarray(rng.standard_normal((s, d)), dtype)
    x0 = jnp.asarray(rng.standard_normal((s, d)), dtype)
    x0 = x0 / jnp.linalg.norm(x0, axis=-1, keepdims=True)
    f = lambda x: itrsa_step(params, x, c, norm="rmsnorm")
    n, k = s * d, min(args.k, s * d)
    key = jax.random.PRNGKey(1)
    q0 = jnp.linalg.qr(jax.random.normal(key, (k, s, d), dtype).reshape(k, n).T)[0]  # lyapunov_spectrum's Q0
    v0 = jnp.asarray(rng.standard_normal((s, d)), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    row = {"S": s, "D": d, "n": n, "k": k}

    mf = jax.jit(lambda x: lyapunov_spectrum(f, x, args.T, k, key=key, method="qr").exponents)
    row["le_matfree_s"], row["le_matfree_warmup_s"], le_mf = timed(mf, x0, repeats=args.repeats)
    pw = jax.jit(lambda x: matrix_free_norm(f, x, v0, args.power_iters))
    row["norm_power_s"], row["norm_power_warmup_s"], sig_p = timed(pw, x0, repeats=args.repeats)
    if n <= args.max_dense_n:
        dn = jax.jit(lambda x: dense_lyapunov(f, x, q0, args.T))
        row["le_dense_s"], row["le_dense_warmup_s"], le_d = timed(dn, x0, repeats=args.repeats)
        row["le_max_abs_diff"] = float(jnp.max(jnp.abs(le_mf - le_d)))
        sv = jax.jit(lambda x: dense_norm(f, x))
        row["norm_svd_s"], row["norm_svd_warmup_s"], sig_d = timed(sv, x0, repeats=args.repeats)
        row["norm_rel_diff"] = float(abs(sig_p - sig_d) / sig_d)
        row["le_ratio_dense_over_matfree"] = row["le_dense_s"] / row["le_matfree_s"]
        row["norm_ratio_svd_over_power"] = row["norm_svd_s"] / row["norm_power_s"]
    row["max_exponent"] = float(le_mf[0])
    return row


def main(argv=None):
    p = make_parser("bench", __doc__)
    p.set_defaults(out=Path("outputs/bench/lyapunov.json"))
    p.add_argument("--sizes-s", type=int, nargs="+", default=None, help="numbers of tokens S (CPU: 4 9 16; paper: 81)")
    p.add_argument("--sizes-d", type=int, nargs="+", default=None,
                   help="widths D (CPU: 16 32 64; paper: 64 128 256 512)")
    p.add_argument("--k", type=int, default=None, help="leading exponents (CPU 16, paper 256)")
    p.add_argument("--T", type=int, default=16, help="steps of the composition (default 16)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (CPU 4, paper 8)")
    p.add_argument("--power-iters", type=int, default=100, help="power iterations, no early stop (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up; the median is reported")
    p.add_argument("--max-dense-n", type=int, default=None,
                   help="skip the dense methods above this n (CPU: no limit; paper: 16384)")
    p.add_argument("--paper", action="store_true", help="paper sizes: S=81, D up to 512, k=256, H=8 (accelerator)")
    args = parse(p, argv)
    args.out = args.out if args.out.suffix == ".json" else args.out / "lyapunov.json"
    paper = {"sizes_s": [81], "sizes_d": [64, 128, 256, 512], "k": 256, "heads": 8, "max_dense_n": 16384}
    cpu = {"sizes_s": [4, 9, 16], "sizes_d": [16, 32, 64], "k": 16, "heads": 4, "max_dense_n": 10**12}
    for name, val in (paper if args.paper else cpu).items():
        if getattr(args, name) is None:
            setattr(args, name, val)
    dtype = jnp.float64 if args.float64 else jnp.float32

    rows = []
    for s in args.sizes_s:
        for d in args.sizes_d:
            rows.append(bench_one(s, d, args, dtype))
            r = rows[-1]
            print(f"S={s:3d} D={d:4d} n={r['n']:6d}: LE matrix-free {r['le_matfree_s']:.4f}s"
                  + (f", dense {r['le_dense_s']:.4f}s" if "le_dense_s" in r else ", dense skipped"), flush=True)
    rows.sort(key=lambda r: r["n"])
    g = lambda r, key: r.get(key, float("nan"))
    print_table([(r["S"], r["D"], r["n"], r["le_matfree_s"], g(r, "le_dense_s"), g(r, "le_ratio_dense_over_matfree"),
                  g(r, "le_max_abs_diff"), r["norm_power_s"], g(r, "norm_svd_s"), g(r, "norm_ratio_svd_over_power"),
                  g(r, "norm_rel_diff")) for r in rows],
                ["S", "D", "n", "LE mf [s]", "LE dense [s]", "dense/mf", "|dLE|", "power [s]", "SVD [s]",
                 "SVD/power", "rel dsigma"])

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ns = [r["n"] for r in rows]
    for key, label, style in (("le_matfree_s", f"LE k={args.k}: linearize+vmap QR", "o-"),
                              ("le_dense_s", f"LE k={args.k}: dense jacfwd + QR", "s--"),
                              ("norm_power_s", f"||J||: power iteration ({args.power_iters} it.)", "^-"),
                              ("norm_svd_s", "||J||: dense jacfwd + SVD", "v--")):
        ax.plot(ns, [g(r, key) for r in rows], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="n = S * D", ylabel="seconds (median, jitted)",
           title=f"ItrSA, T={args.T}, H={args.heads}, {jax.devices()[0].platform}")
    ax.legend(fontsize=8)
    out = {"config": vars(args), "device": str(jax.devices()[0]), "dtype": str(jnp.dtype(dtype)), "rows": rows}
    announce([save_json(out, args.out), save_figure(fig, args.out.with_suffix(".png"))])


if __name__ == "__main__":
    main()
