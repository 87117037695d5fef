"""Looped attention on images (paper B.6, Fig. S.2): test accuracy and Lyapunov exponents.

Trains each model of --models on --dataset (``rsa_jax.tasks.vision`` through the generic trainer
``rsa_jax.train`` / ``rsa_jax.multiseed``), or picks up the run already in
``<out>/runs/<model>[_lr<lr>]/seed_<s>`` (unfinished runs resume, finished ones are just loaded;
--retrain starts afresh), or loads trained models given with --checkpoint (shipped names of
``rsa_jax.pretrained``, ``.npz`` files of ``pretrained.save`` or run directories). For every
trained (EMA) model it then reports

* test accuracy at T = T_train (``rsa_jax.tasks.vision.evaluate_images``);
* Lyapunov exponents ``lambda_i = (1/T) ln sigma_i(d f^T / d X0)`` of the trained map at X0 of
  --le-samples random test images (``rsa_jax.lyapunov.lyapunov_spectrum``: full spectrum with one Ritz
  sweep by default, the B.3 definition; --le-k for the leading k only), max LE and mean LE with the
  null directions of the normalization excluded (``null_directions``: one per token, or per
  oscillator for AKOrN), under the same sweeps as ``experiments/lyapunov.py`` for Sudoku:
  --scale (the composition and the rollout start from ``s * X0``), --eta (overrides the learned
  step size), --wv-norm / --wo-norm (all ``W^V_h`` / ``W^O_h`` rescaled by one factor so that the
  concatenated matrix has this spectral norm); all combinations are run;
* the test accuracy of the map under each sweep setting (same modification, rollout of T_train
  steps), so LE can be read against accuracy.

Models (normalization on / off, as in the paper's Lyapunov experiments):

* ``itrsa``        ItrSA with RMSNorm (whole token),     ``VisionConfig(kind="itrsa", norm="rmsnorm")``
* ``itrsa_nonorm`` ItrSA without normalization,          ``VisionConfig(kind="itrsa", norm="none")``
* ``akorn``        AKOrN with Pi_N (N = 4),              ``VisionConfig(kind="akorn", norm="pi")``
* ``akorn_nonorm`` AKOrN without normalization,          ``VisionConfig(kind="akorn", norm="none")``

As in the paper (B.3), models without normalization are trained for --nonorm-epochs (1) epoch
only. All models: 4 x 4 patches (64 tokens on CIFAR-10, 49 on Fashion-MNIST), GTA positions,
X0 = Pi_N(C) (see ``rsa_jax.models.vision``).

--dataset defaults to fashion_mnist (the Debian package's files) because CIFAR-10 cannot be
downloaded here; for cifar10 put ``cifar-10-python.tar.gz`` in --data-dir (or
``$RSA_JAX_CIFAR10_DIR``). Default: a CPU smoke configuration (D = 32, H = 4, T = 4, 2048 training
and 500 test images, batch 64, 1 epoch, LE at T = 4 on one image); to keep the full Lyapunov
spectrum cheap it uses a 4 x 4 grid of patches (7 x 7 pixels on Fashion-MNIST, 8 x 8 on CIFAR-10;
n = 16 D = 512) instead of the paper's 4 x 4-pixel patches (--patch 4: 49 / 64 tokens, about 15x
slower spectra on CPU). The numbers are far from the paper's. --full is the paper's configuration for
a GPU: D = 384, H = 8, T = 16, batch 128, 200 epochs on the whole training set (crop + flip
augmentation on CIFAR-10), the whole test set, LE at T = 16 (full spectrum of n = 64 x 384 = 24,576
exponents per setting: use --le-k to cut it down). --lrs tunes the learning rate as the paper did
(grid {1e-5, 5e-5, ..., 1e-3}, best test accuracy at T = 16).

Outputs in --out: ``<dataset>.json`` (every number and the settings), ``<dataset>_accuracy.png``
(test accuracy per model, with the max / mean LE at the default setting as a table),
``<dataset>_lyapunov.png`` (max LE, mean LE and accuracy vs the first swept variable, one line per
model), and the run directories under ``runs/``.

    python -m experiments.cifar10                                    # CPU smoke run, Fashion-MNIST
    python -m experiments.cifar10 --dataset cifar10 --data-dir ~/data/cifar10 --full --seeds 0 1 2
    python -m experiments.cifar10 --checkpoint outputs/cifar10/runs/itrsa/seed_0 --scale 0.5 1 2 4
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rsa_jax.attention import with_spectral_norms
from rsa_jax.configs import apply_preset
from rsa_jax.dynamics import rollout
from rsa_jax.lyapunov import lyapunov_spectrum, max_lyapunov, mean_lyapunov, null_directions
from rsa_jax.models.vision import VisionConfig
from rsa_jax.tasks.vision import DATASET_SHAPES, VisionTrainConfig, load_sets, vision_task
from rsa_jax.pretrained import load_checkpoint
from rsa_jax.train import train

try:
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json
except ImportError:  # pragma: no cover - run as a file outside the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.common import announce, make_parser, parse, print_table, save_figure, save_json

MODELS = {
    "itrsa": ("ItrSA (RMSNorm)", dict(kind="itrsa", norm="rmsnorm")),
    "itrsa_nonorm": ("ItrSA (no norm)", dict(kind="itrsa", norm="none")),
    "akorn": ("AKOrN (Pi_N)", dict(kind="akorn", norm="pi")),
    "akorn_nonorm": ("AKOrN (no norm)", dict(kind="akorn", norm="none")),
}
SWEEPS = ("scale", "eta", "wv_norm", "wo_norm")

#: CPU smoke preset and paper preset (--full); explicit flags override either.
CPU = dict(d=32, heads=4, n=4, patch="cpu", t_train=4, epochs=1, nonorm_epochs=1, batch_size=64, train_limit=2048,
           eval_limit=500, lr=3e-3, augment=False, le_t=4, le_samples=1, scale=[0.5, 1.0, 2.0])
FULL = dict(d=384, heads=8, n=4, patch=4, t_train=16, epochs=200, nonorm_epochs=1, batch_size=128,
            train_limit=None, eval_limit=None, lr=None, augment=None, le_t=16, le_samples=1,
            scale=[0.25, 0.5, 1.0, 2.0, 4.0])


# ------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = make_parser("cifar10", __doc__)
    g = p.add_argument_group("data and models")
    g.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATASET_SHAPES),
                   help="image data set (default fashion_mnist; CIFAR-10 needs its archive in --data-dir)")
    g.add_argument("--data-dir", default=None, help="data folder (default: rsa_jax.data.images' default)")
    g.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                   help="model variants (default: all four)")
    g.add_argument("--checkpoint", nargs="+", default=None, metavar="NAME_OR_PATH",
                   help="trained VisionModels: shipped model name (rsa_jax.pretrained.names()), .npz file or "
                        "run directory, one or more; if given, no training: these models replace --models")
    g.add_argument("--full", action="store_true", help="the paper's settings (for a GPU)")
    g.add_argument("--d", type=int, default=None, help=f"width D [cpu {CPU['d']}, full {FULL['d']}]")
    g.add_argument("--heads", type=int, default=None, help=f"heads H [cpu {CPU['heads']}, full {FULL['heads']}]")
    g.add_argument("--n", type=int, default=None, help="oscillator size N (AKOrN, readout) [4]")
    g.add_argument("--patch", type=int, default=None,
                   help="patch side [cpu: image side / 4, i.e. 16 tokens (7 on Fashion-MNIST, 8 on CIFAR-10); full 4]")
    g = p.add_argument_group("training")
    g.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="training seeds; several are trained at once with rsa_jax.multiseed (default 0)")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs [cpu {CPU['epochs']}, full {FULL['epochs']}]")
    g.add_argument("--nonorm-epochs", type=int, default=None,
                   help="epochs of the models without normalization [1, as in the paper]")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size [cpu {CPU['batch_size']}, full {FULL['batch_size']}]")
    g.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate [cpu {CPU['lr']}; full: rsa_jax.train.DEFAULT_LR per kind]")
    g.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="learning-rate grid: train each, keep the best test accuracy (paper: 1e-5 5e-5 1e-4 "
                        "5e-4 1e-3)")
    g.add_argument("--t-train", type=int, default=None, help=f"steps T [cpu {CPU['t_train']}, full {FULL['t_train']}]")
    g.add_argument("--train-limit", type=int, default=None, help=f"first N training images [cpu {CPU['train_limit']}]")
    g.add_argument("--eval-limit", type=int, default=None, help=f"first N test images [cpu {CPU['eval_limit']}]")
    g.add_argument("--augment", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="crop + flip augmentation [cpu off; full: on for CIFAR-10]")
    g.add_argument("--retrain", action="store_true", help="delete and redo existing runs under <out>/runs")
    g.add_argument("--eval-batch-size", type=int, default=500, help="test images per evaluation batch")
    g = p.add_argument_group("Lyapunov exponents (sweeps as experiments/lyapunov.py)")
    g.add_argument("--le-t", type=int, default=None, help=f"horizon T [cpu {CPU['le_t']}, full {FULL['le_t']}]")
    g.add_argument("--le-samples", type=int, default=None,
                   help="random test images (seeded by --seed) [1, as in the paper]")
    g.add_argument("--le-k", type=int, default=None, help="leading exponents only (default: full spectrum)")
    g.add_argument("--le-sweeps", type=int, default=None,
                   help="refinement sweeps of lyapunov_spectrum (default 1 for the full spectrum, 10 with --le-k)")
    g.add_argument("--scale", type=float, nargs="+", default=None,
                   help=f"X0 multipliers [cpu {CPU['scale']}, full {FULL['scale']}]")
    g.add_argument("--eta", type=float, nargs="+", default=[None], help="step sizes eta (default: the model's)")
    g.add_argument("--wv-norm", type=float, nargs="+", default=[None], help="spectral norms of W^V (default: as is)")
    g.add_argument("--wo-norm", type=float, nargs="+", default=[None], help="spectral norms of W^O (default: as is)")
    args = parse(p, argv)
    apply_preset(args, FULL if args.full else CPU)
    if args.patch == "cpu":  # a 4 x 4 grid of tokens keeps the full Lyapunov spectrum cheap (n = 16 D)
        args.patch = DATASET_SHAPES[args.dataset][0] // 4
    if args.augment is None:
        args.augment = bool(args.full and args.dataset.startswith("cifar10"))
    args.le_sweeps = (1 if args.le_k is None else 10) if args.le_sweeps is None else args.le_sweeps
    return args


# ---------------------------------------------------------------------------------- training
def base_config(args, key: str, lr) -> VisionTrainConfig:
    size, channels = DATASET_SHAPES[args.dataset]
    mcfg = VisionConfig(d=args.d, heads=args.heads, n=args.n, patch=args.patch, image_size=size, channels=channels,
                        **MODELS[key][1])
    epochs = args.nonorm_epochs if MODELS[key][1]["norm"] == "none" else args.epochs
    name = key if args.lrs is None else f"{key}_lr{lr:g}"
    return VisionTrainConfig(model=mcfg, dataset=args.dataset, data_dir=args.data_dir, t_train=args.t_train,
                             batch_size=args.batch_size, epochs=epochs, lr=lr, augment=args.augment,
                             train_limit=args.train_limit, eval_limit=args.eval_limit,
                             eval_batch_size=args.eval_batch_size, out=str(Path(args.out) / "runs" / name),
                             progress=False, eval_every=0, checkpoint_every=500, keep_checkpoints=1,
                             log_every=10, seed=args.seeds[0])


def train_seeds(args, base: VisionTrainConfig, train_set, eval_set):
    """``[(seed, model, run_dir)]`` for every seed of ``args.seeds``."""
    resume = not args.retrain
    if len(args.seeds) > 1:
        from rsa_jax.multiseed import seed_config, train_multiseed
        models, _ = train_multiseed(base, lambda c: vision_task(c, train_set, eval_set), args.seeds, resume=resume)
        return [(s, m, seed_config(base, s).out) for s, m in zip(args.seeds, models)]
    out = []
    for s in args.seeds:
        cfg = dataclasses.replace(base, seed=s, out=str(Path(base.out) / f"seed_{s}"))
        model, _ = train(cfg, vision_task(cfg, train_set, eval_set), resume=resume)
        out.append((s, model, cfg.out))
    return out


# ------------------------------------------------------------------------------ sweep pieces
def modified_params(base: dict, eta=None, wv_norm=None, wo_norm=None) -> dict:
    """The step parameters with eta overridden and W^V / W^O rescaled."""
    attn = with_spectral_norms(base["attn"], wv_norm=wv_norm, wo_norm=wo_norm if "wo" in base["attn"] else None)
    return dict(base, attn=attn, **({} if eta is None else {"eta": jnp.asarray(eta, jnp.float32)}))


@functools.partial(jax.jit, static_argnames=("step", "T", "k", "sweeps"))
def spectra(step, params, x0, c, T: int, k, sweeps: int):
    """Exponents ``(B, k)`` of ``x -> step(params, x, c_b)`` composed T times, at each ``x0_b``."""
    def one(x, cc):
        return lyapunov_spectrum(lambda y: step(params, y, cc), x, T, k, sweeps=sweeps).exponents

    return jax.vmap(one)(x0, c)


@functools.partial(jax.jit, static_argnames=("graphdef", "T"))
def _batch_right(graphdef, state, params, images, labels, mask, scale, key, T: int):
    model = nnx.merge(graphdef, state)
    step, _ = model.pure_step()
    c, x0 = model.condition(images, key)
    logits = model.readout(rollout(step, params, scale * x0, c, T))
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)


def setting_accuracy(model, params, ds, T: int, scale: float, batch_size: int) -> float:
    """Accuracy of the model's readout after T steps of ``step(params, .)`` from ``scale * X0``."""
    from rsa_jax.data.images import batch_iterator
    graphdef, state = nnx.split(model)
    bs, right = min(batch_size, len(ds)), 0.0
    key = jax.random.PRNGKey(0)  # initial-state noise of init="noise" models (unused otherwise)
    for b, batch in enumerate(batch_iterator(ds, bs, seed=0, epoch=0, drop_last=False)):
        n = len(batch["label"])
        pad = lambda a: np.concatenate([a, np.repeat(a[-1:], bs - n, axis=0)]) if n < bs else a
        mask = (np.arange(bs) < n).astype(np.float32)
        right += float(_batch_right(graphdef, state, params, pad(batch["image"]), pad(batch["label"]), mask,
                                    jnp.float32(scale), jax.random.fold_in(key, b), T=T))
    return right / len(ds)


def test_accuracy(model, ds, args) -> float:
    """Test accuracy at T_train (the unmodified map from X0; same compiled code as the sweep, equal to
    ``rsa_jax.tasks.vision.evaluate_images(...)["acc"]``)."""
    return setting_accuracy(model, model.pure_step()[1], ds, args.t_train, 1.0, args.eval_batch_size)


def lyapunov_sweep(model, images, args, dtype) -> list:
    """Max / mean LE of the model's map for every sweep setting (see the module docstring)."""
    step, base = model.pure_step()
    c, x0 = model.condition(jnp.asarray(images), jax.random.PRNGKey(args.seed))  # key: init="noise" only
    c, x0 = c.astype(dtype), x0.astype(dtype)
    cfg = model.config
    num_null = null_directions(x0.shape[1:], cfg.state_chunk, cfg.norm) if args.le_k is None else 0
    out = []
    for scale, eta, wv, wo in itertools.product(args.scale, args.eta, args.wv_norm, args.wo_norm):
        params = modified_params(base, eta, wv, wo)
        t0 = time.perf_counter()
        ex = np.asarray(spectra(step, params, scale * x0, c, T=args.le_t, k=args.le_k, sweeps=args.le_sweeps))
        mx, mn = np.asarray(max_lyapunov(ex)), np.asarray(mean_lyapunov(ex, num_null))
        out.append({"scale": scale, "eta": float(params["eta"]), "wv_norm": wv, "wo_norm": wo, "T": args.le_t,
                    "num_null": num_null, "M": ex.shape[-1] - num_null, "max_le": float(mx.mean()),
                    "mean_le": float(mn.mean()), "max_le_per_sample": mx, "mean_le_per_sample": mn,
                    "seconds": time.perf_counter() - t0, "exponents": ex, "params": params})
    return out


# -------------------------------------------------------------------------------------- plots
def plot_accuracy(results: list, args, path: Path) -> Path:
    import matplotlib.pyplot as plt
    labels = [r["label"] for r in results]
    acc = [100 * r["acc_mean"] for r in results]
    err = [100 * r["acc_std"] for r in results]
    fig, (ax, tab) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    ax.bar(range(len(acc)), acc, yerr=err, color=[f"C{i}" for i in range(len(acc))])
    ax.set_xticks(range(len(acc)), labels, rotation=20, fontsize=8)
    ax.set(ylabel="test accuracy (%)", title=f"{args.dataset}, T = {args.t_train}")
    rows = [[r["label"], f"{100 * r['acc_mean']:.1f}", f"{r['le_default']['max_le']:+.3f}",
             f"{r['le_default']['mean_le']:+.3f}"] for r in results]
    tab.axis("off")
    t = tab.table(cellText=rows, colLabels=["model", "acc %", "max LE", "mean LE"], loc="center",
                  colWidths=[0.42, 0.18, 0.2, 0.2])
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.4)
    tab.set_title(f"LE at T = {args.le_t}, scale 1", fontsize=9)
    return save_figure(fig, path)


def plot_lyapunov(results: list, args, path: Path) -> Path:
    import matplotlib.pyplot as plt
    records = [dict(rec, label=r["label"]) for r in results for rec in r["sweep"]]
    swept = [s for s in SWEEPS if len(getattr(args, s)) > 1] or ["scale"]
    x = swept[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, stat, name in zip(axes, ("max_le", "mean_le", "acc"), ("max LE", "mean LE", "test accuracy")):
        for i, label in enumerate(dict.fromkeys(rec["label"] for rec in records)):
            pts = sorted((rec[x], rec[stat]) for rec in records if rec["label"] == label and rec[x] is not None)
            if pts:
                ax.plot(*zip(*pts), "o-", color=f"C{i}", label=label)
        if stat != "acc":
            ax.axhline(0.0, color="gray", lw=0.8)
        ax.set(xlabel={"scale": "input scale s (X0 -> s X0)"}.get(x, x), ylabel=name, title=f"{name} vs {x}")
        if x == "scale":
            ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{args.dataset}: LE at T = {args.le_t}, accuracy at T = {args.t_train}"
                 + (f" (also varied: {', '.join(swept[1:])})" if len(swept) > 1 else ""), fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    dtype = jnp.float64 if args.float64 else jnp.float32
    data_cfg = VisionTrainConfig(dataset=args.dataset, data_dir=args.data_dir, train_limit=args.train_limit,
                                 eval_limit=args.eval_limit)
    train_set, eval_set = load_sets(data_cfg)
    print(f"{args.dataset}: {len(train_set)} training / {len(eval_set)} test images", flush=True)

    # (label, key, [(seed, model, run_dir)])
    groups = []
    if args.checkpoint:
        for path in args.checkpoint:
            model, cfg = load_checkpoint(path)
            mc = model.config
            if not hasattr(mc, "image_size"):
                raise SystemExit(f"{path}: a {type(model).__name__}, not an image model")
            if (mc.image_size, mc.channels) != DATASET_SHAPES[args.dataset]:
                raise SystemExit(f"{path}: model expects {mc.image_size}x{mc.image_size}x{mc.channels} images, "
                                 f"not {args.dataset}; pass the right --dataset")
            args.t_train = getattr(cfg, "t_train", args.t_train)
            groups.append((f"{mc.kind}-{mc.norm} ({Path(path).name})", None, [(cfg.seed, model, str(path))], None))
    else:
        for key in args.models:
            best = None
            for lr in (args.lrs or [args.lr]):
                base = base_config(args, key, lr)
                t0 = time.time()
                runs = train_seeds(args, base, train_set, eval_set)
                accs = [test_accuracy(m, eval_set, args) for _, m, _ in runs]
                print(f"{key} lr={base.resolved_lr():g}: test acc {np.mean(accs):.4f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
                if best is None or np.mean(accs) > np.mean(best[3]):
                    best = (MODELS[key][0], key, runs, accs, base.resolved_lr())
            groups.append(best[:3] + ((best[3], best[4]),))

    # LE samples: --le-samples random test images (a seeded shuffle), normalized as in training
    from rsa_jax.data.images import batch_iterator
    le_images = next(iter(batch_iterator(eval_set, min(args.le_samples, len(eval_set)), seed=args.seed, epoch=0)))
    le_images = le_images["image"]

    results = []
    for label, key, runs, pre in groups:
        accs = pre[0] if pre else [test_accuracy(m, eval_set, args) for _, m, _ in runs]
        per_seed = []
        for (seed, model, run_dir), acc in zip(runs, accs):
            sweep = lyapunov_sweep(model, le_images, args, dtype)
            for rec in sweep:
                params = rec.pop("params")
                rec["acc"] = setting_accuracy(model, params, eval_set, args.t_train, rec["scale"],
                                              args.eval_batch_size)
            per_seed.append({"seed": seed, "run_dir": run_dir, "acc": acc, "sweep": sweep})
        # average the sweep over seeds, setting by setting
        sweep = []
        for i, rec in enumerate(per_seed[0]["sweep"]):
            avg = {k: rec[k] for k in SWEEPS + ("T", "num_null", "M")}
            for stat in ("max_le", "mean_le", "acc"):
                avg[stat] = float(np.mean([p["sweep"][i][stat] for p in per_seed]))
            sweep.append(avg)
        default = min(sweep, key=lambda r: (abs(np.log(r["scale"])) if r["scale"] > 0 else 1e9,
                                            r["wv_norm"] is not None, r["wo_norm"] is not None))
        results.append({"label": label, "model": key, "config": dataclasses.asdict(runs[0][1].config),
                        "lr": pre[1] if pre else None, "acc_mean": float(np.mean(accs)),
                        "acc_std": float(np.std(accs)), "le_default": default, "sweep": sweep, "seeds": per_seed})
        print(f"{label}: acc {np.mean(accs):.4f}, max LE {default['max_le']:+.4f}, mean LE {default['mean_le']:+.4f}",
              flush=True)

    print()
    rows = [[r["label"], f"{100 * r['acc_mean']:.2f}", rec["scale"], rec["eta"], rec["wv_norm"] or "-",
             rec["wo_norm"] or "-", rec["M"], rec["max_le"], rec["mean_le"], f"{100 * rec['acc']:.2f}"]
            for r in results for rec in r["sweep"]]
    print_table(rows, ["model", "acc %", "scale", "eta", "|W^V|_2", "|W^O|_2", "M", "max LE", "mean LE",
                       "acc@setting %"])
    out = Path(args.out)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    paths = [save_json({"dataset": args.dataset, "num_train": len(train_set), "num_test": len(eval_set),
                        "settings": settings, "seconds": time.time() - t_start, "results": results},
                       out / f"{args.dataset}.json"),
             plot_accuracy(results, args, out / f"{args.dataset}_accuracy.png"),
             plot_lyapunov(results, args, out / f"{args.dataset}_lyapunov.png")]
    announce(paths)
    print(f"total {time.time() - t_start:.0f}s")
    return results


if __name__ == "__main__":
    main()
