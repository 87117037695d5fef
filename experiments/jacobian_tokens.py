"""Fig. 1: spectral norm of the Jacobian of an untrained SA, and of Norm(SA), as the number of tokens S grows.

For each S, ``--samples`` windows of S consecutive words are embedded as tokens of norm ``--radius``
(R = 100 in the paper) and width ``--d`` (D = 256 in the paper), and ``||dF/dX||_2`` is measured by
matrix-free power iteration (``rsa_jax.jacobian.spectral_norm``) for

  F = SA:        X -> MSA(X)            (one untrained layer, ``init_attention``, ``--heads`` heads)
  F = Norm(SA):  X -> Pi(MSA(X))        (Pi: each output token scaled to unit norm)

Text. The paper uses the CCDV arXiv-summarization corpus (B.4); no corpus can be downloaded here,
so the words come from real English text that ships with Python itself: the docstrings of a fixed,
sorted list of standard-library modules (``TEXT_MODULES``), read from their source files with
``ast`` (nothing is imported), concatenated, lower-cased and split on ``[a-z]+``. Each word is
embedded by a Gaussian vector seeded with ``zlib.crc32(word)`` (so repeated words give identical
tokens, as in real text) and scaled to norm R. A sample is a window of S consecutive words at a
random offset. The word stream is deterministic for a given Python version.

Defaults run in well under a minute on a CPU (D = 64, 20 samples); the paper's setting is
``--d 256 --samples 500 --sizes 8 16 32 64 128 256 512`` (GPU). ``--check`` compares power
iteration with the dense SVD on a few small cases. The table and JSON give mean, std and median
per S (the distribution is heavy-tailed: near-ties between attention logits, e.g. repeated words,
give large Jacobians); the plot shows mean +- std, the lower bar clipped at 10% of the mean so it
stays on the log axis.
"""

from __future__ import annotations

import ast
import re
import sysconfig
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
from rsa_jax.attention import init_attention, msa
from rsa_jax.jacobian import dense_jacobian, spectral_norm
from rsa_jax.ops import pi

TEXT_MODULES = ("argparse", "collections/__init__", "difflib", "email/message", "functools", "inspect",
                "json/__init__", "logging/__init__", "pathlib", "pickle", "shutil", "subprocess", "tarfile",
                "textwrap", "threading", "typing", "unittest/case", "zipfile")


def stdlib_words(modules=TEXT_MODULES) -> list[str]:
    """Lower-cased words of all docstrings (module, classes, functions) of the given stdlib files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    words = []
    for name in sorted(modules):
        path = root / f"{name}.py"
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    words += re.findall(r"[a-z]+", doc.lower())
    return words


def embed_words(words: list[str], d: int, radius: float) -> np.ndarray:
    """``(len(words), d)`` hash-seeded Gaussian embeddings, each of norm ``radius``."""
    cache = {}
    for w in set(words):
        v = np.random.default_rng(zlib.crc32(w.encode())).standard_normal(d)
        cache[w] = radius * v / np.linalg.norm(v)
    return np.stack([cache[w] for w in words])


def sample_windows(emb: np.ndarray, s: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(samples, s, d)`` windows of ``s`` consecutive tokens at random offsets."""
    starts = rng.integers(0, len(emb) - s, size=samples)
    return np.stack([emb[i:i + s] for i in starts])


def maps(params):
    """The two maps of Fig. 1 on one sample ``(S, D)``."""
    return {"SA": lambda x: msa(params, x), "Norm(SA)": lambda x: pi(msa(params, x))}


def spectral_norms(fs: dict, xs: jnp.ndarray, iters: int) -> dict:
    """``{name: ||d f/dx||_2 per sample}`` for a batch ``xs`` (power iteration, vmapped, one jit)."""
    one = lambda x: {name: spectral_norm(f, x, max_iters=iters, tol=1e-6)[0] for name, f in fs.items()}
    out = jax.jit(jax.vmap(one))(xs)
    return {name: np.asarray(out[name]) for name in fs}  # keep the caller's order (jax sorts dict keys)


def check(params, emb, rng, iters):
    """Power iteration vs dense SVD on a few small windows; returns rows (map, S, power, svd, rel. err)."""
    rows = []
    for s in (4, 8):
        xs = jnp.asarray(sample_windows(emb, s, 3, rng))
        powers = spectral_norms(maps(params), xs, iters)
        for name, f in maps(params).items():
            power = powers[name]
            dense = np.array([np.linalg.svd(np.asarray(dense_jacobian(f, x), np.float64), compute_uv=False)[0]
                              for x in xs])
            rows += [(name, s, p, q, abs(p - q) / q) for p, q in zip(power, dense)]
    return rows


def main(argv=None):
    p = make_parser("jacobian_tokens", __doc__)
    p.add_argument("--d", type=int, default=64, help="token width D (paper: 256; default 64)")
    p.add_argument("--heads", type=int, default=1, help="attention heads of the untrained SA (default 1)")
    p.add_argument("--radius", type=float, default=100.0, help="token norm R (default 100, as in the paper)")
    p.add_argument("--samples", type=int, default=20, help="windows per S (paper: 500; default 20)")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128],
                   help="numbers of tokens S (default: 8 16 32 64 128)")
    p.add_argument("--iters", type=int, default=300, help="power-iteration cap (default 300, tol 1e-6)")
    p.add_argument("--check", action="store_true", help="also compare power iteration with the dense SVD")
    args = parse(p, argv)

    dtype = jnp.float64 if args.float64 else jnp.float32
    words = stdlib_words()
    emb = embed_words(words, args.d, args.radius).astype(dtype)
    rng = np.random.default_rng(args.seed)
    params = init_attention(jax.random.PRNGKey(args.seed), args.d, args.heads, dtype=dtype)
    print(f"{len(words)} words ({len(set(words))} distinct) from {len(TEXT_MODULES)} stdlib docstring sources; "
          f"D={args.d}, H={args.heads}, R={args.radius}, {args.samples} samples per S")

    results = {name: {"mean": [], "std": [], "median": [], "values": []} for name in maps(params)}
    rows = []
    for s in args.sizes:
        xs = jnp.asarray(sample_windows(emb, s, args.samples, rng))
        t0 = time.perf_counter()
        row = [s]
        for name, v in spectral_norms(maps(params), xs, args.iters).items():
            for stat, val in (("values", v), ("mean", v.mean()), ("std", v.std()), ("median", np.median(v))):
                results[name][stat].append(val)
            row += [v.mean(), v.std(), np.median(v)]
        rows.append(row + [time.perf_counter() - t0])
        print(f"S={s}: median ||J_SA|| {row[3]:.4g}, median ||J_Norm(SA)|| {row[6]:.4g} ({rows[-1][-1]:.1f}s)",
              flush=True)
    print_table(rows, ["S", "SA mean", "std", "median", "Norm(SA) mean", "std", "median", "seconds"])

    out = {"config": vars(args), "num_words": len(words), "text_modules": list(TEXT_MODULES),
           "sizes": args.sizes, "results": results}
    if args.check:
        crow = check(params, emb, rng, args.iters)
        print("\npower iteration vs dense SVD")
        print_table(crow, ["map", "S", "power", "dense SVD", "rel. err"])
        out["check"] = [dict(zip(["map", "S", "power", "svd", "rel_err"], r)) for r in crow]

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for name, r in results.items():
        mean, std = np.asarray(r["mean"]), np.asarray(r["std"])
        yerr = [np.minimum(std, 0.9 * mean), std]  # lower bar clipped to stay on the log axis
        ax.errorbar(args.sizes, mean, yerr=yerr, marker="o", capsize=3, label=f"{name} (mean $\\pm$ std)")
    ax.set(xscale="log", yscale="log", xlabel="number of tokens S", ylabel=r"$\|J\|_2$",
           title=f"Untrained SA, D={args.d}, R={args.radius:g}")
    ax.set_xticks(args.sizes, [str(s) for s in args.sizes])
    ax.legend()
    announce([save_json(out, args.out / "jacobian_tokens.json"), save_figure(fig, args.out / "jacobian_tokens.png")])


if __name__ == "__main__":
    main()
