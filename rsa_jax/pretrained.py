"""Shipped trained models: one-file EMA checkpoints with a manifest, loadable in one call.

    from rsa_jax import pretrained
    pretrained.names()                                   # ['sudoku-akorn-cpu', 'sudoku-itrsa-cpu', ...]
    model, cfg = pretrained.load("sudoku-itrsa-cpu")     # same pair as rsa_jax.train.load_model
    model, cfg = pretrained.load_file("gpu_out/sudoku-akorn-gpu.npz")   # a file or folder from elsewhere
    model, cfg = pretrained.load_checkpoint(name_or_path)  # either (what the experiments' --checkpoint take)
    pretrained.manifest("sudoku-itrsa-cpu")              # training command, data, wall time, accuracy

A shipped model is a folder ``<root>/<name>/`` holding

  ``model.npz``      the EMA parameters (one array per parameter, keyed by its path ``a/b/c``) and,
                     under ``__config__``, the JSON ``config.json`` record of the run (training and
                     model configs with their classes, as :func:`rsa_jax.train.config_record` writes);
  ``metrics.jsonl``  the run's training log (learning curves; ``experiments.training_curves`` plots it);
  ``manifest.json``  how it was made (command, data, steps, wall time, device, date), its ID / OOD
                     accuracy and Lyapunov exponents (``add-accuracy``, ``add-lyapunov``), and the
                     SHA-256 of ``model.npz`` (checked by :func:`load`).

``<root>`` is ``$RSA_JAX_PRETRAINED_DIR`` if set, else the ``pretrained/`` folder at the top of the
repository (beside ``rsa_jax/``). :func:`save` and :func:`export_run` write such files; a single
``.npz`` file written by :func:`save` is self-contained (``load_file`` needs nothing else).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Optional

import jax
import numpy as np
from flax import nnx

from rsa_jax.config import class_path, config_from_dict, config_to_dict, import_path
from rsa_jax.data.sudoku import sha256  # noqa: F401  (re-exported: pretrained.sha256)

MODEL_FILE = "model.npz"
MANIFEST_FILE = "manifest.json"
_CONFIG_KEY = "__config__"
ENV_DIR = "RSA_JAX_PRETRAINED_DIR"


class PretrainedError(RuntimeError):
    """A shipped or exported model is missing, unreadable, corrupt, or does not fit its config."""


class NonFiniteExponent(PretrainedError):
    """A Lyapunov exponent to be stored is NaN or infinite (the state overflowed: rerun in float64)."""


def root() -> Path:
    """The folder of the shipped models (``$RSA_JAX_PRETRAINED_DIR`` or ``<repo>/pretrained``)."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


def names() -> list[str]:
    """Names of the shipped models (folders of :func:`root` holding a ``model.npz``), sorted."""
    base = root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / MODEL_FILE).is_file())


def path(name: str) -> Path:
    """Folder of the shipped model ``name``; ``KeyError`` listing the known names if there is none."""
    if name not in names():
        raise KeyError(f"no shipped model {name!r} under {root()}; available: {names() or 'none'}")
    return root() / name


def manifest(name: str) -> dict:
    """The ``manifest.json`` of shipped model ``name``."""
    p = path(name) / MANIFEST_FILE
    if not p.is_file():
        raise PretrainedError(f"{p} is missing")
    return json.loads(p.read_text())


def load(name: str):
    """Loads shipped model ``name`` after checking its SHA-256 against the manifest.

    Returns:
      ``(model, train_config)``: the model holding the EMA parameters and the run's ``TrainConfig``
      (the pair :func:`rsa_jax.train.load_model` returns).

    Raises:
      KeyError: unknown name (the message lists the shipped ones).
      PretrainedError: checksum mismatch, unreadable file, or parameters that do not fit the config.
    """
    folder = path(name)
    expected = manifest(name).get("sha256")
    actual = sha256(folder / MODEL_FILE)
    if expected and expected != actual:
        raise PretrainedError(f"{folder / MODEL_FILE}: SHA-256 {actual} does not match the manifest's {expected}; "
                              "the file is corrupt or was replaced (git checkout it again)")
    return load_file(folder / MODEL_FILE)


def load_checkpoint(spec):
    """``(model, train_config)`` from a shipped name (:func:`load`) or a path (:func:`load_file`).

    The experiments' ``--checkpoint`` flags take either; a string that is neither names the shipped
    models in its error.
    """
    if isinstance(spec, str) and spec in names():
        return load(spec)
    if not Path(spec).exists():
        raise FileNotFoundError(f"{spec!r} is neither a shipped model ({names() or 'none shipped'}) nor an "
                                "existing file, folder or run directory")
    return load_file(spec)


def load_file(file):
    """Loads a model from a :func:`save` file (``.npz``), a folder holding ``model.npz``, or a run
    directory of ``rsa_jax.train`` (``config.json`` + ``checkpoints/``, EMA of the latest step).

    Returns:
      ``(model, train_config)``.
    """
    p = Path(file)
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            p = p / MODEL_FILE
        elif (p / "config.json").is_file():
            from rsa_jax.train import load_model
            return load_model(p)
        else:
            raise PretrainedError(f"{p} holds neither {MODEL_FILE} nor a run (config.json + checkpoints/)")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        why = ("it holds pickled object arrays, which rsa_jax never writes and will not unpickle: loading them "
               "could run code from the file") if "allow_pickle" in str(e) else f"{type(e).__name__}: {e}"
        raise PretrainedError(f"{p}: not a readable rsa_jax checkpoint ({why}); re-download or re-export it "
                              "(python -m rsa_jax.pretrained export)") from e
    if _CONFIG_KEY not in arrays:
        raise PretrainedError(f"{p}: no {_CONFIG_KEY} entry; not written by rsa_jax.pretrained.save")
    try:
        record = json.loads(str(arrays.pop(_CONFIG_KEY)))
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{p}: its {_CONFIG_KEY} entry is not JSON ({e}); the file is corrupt") from e
    model, cfg = _build(record, p)
    return _assign(model, arrays, p), cfg


def save(model: nnx.Module, cfg, file, *, task: str = "sudoku") -> Path:
    """Writes ``model``'s parameters and ``cfg`` (its ``TrainConfig``) into one ``.npz`` file.

    The model must have a dataclass ``config`` (as ``SudokuModel``) so that it can be rebuilt.
    Returns the path written.
    """
    from rsa_jax.train import split_model
    mcfg = getattr(model, "config", None)
    if mcfg is None:
        raise PretrainedError(f"{type(model).__name__} has no `config`; cannot be rebuilt from a file")
    record = {"config_class": class_path(cfg), "config": config_to_dict(cfg), "task": task,
              "model_class": class_path(model), "model_config_class": class_path(mcfg),
              "model_config": config_to_dict(mcfg)}
    _, params, _ = split_model(model)
    arrays = {k: np.asarray(v) for k, v in _flatten(params).items()}
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "wb") as f:   # np.savez would append .npz to other suffixes
        np.savez_compressed(f, **arrays, **{_CONFIG_KEY: np.asarray(json.dumps(record))})
    return file


def export_run(run_dir, folder, *, info: Optional[dict] = None, step: Optional[int] = None) -> Path:
    """Writes ``folder/model.npz`` (EMA parameters of run ``run_dir``), a copy of its ``metrics.jsonl``
    and ``folder/manifest.json`` (:func:`run_summary`, then ``info``, plus the file's SHA-256 and size).
    Returns the folder."""
    from rsa_jax.train import load_model
    model, cfg = load_model(run_dir, step=step)
    folder = Path(folder)
    save(model, cfg, folder / MODEL_FILE)
    from rsa_jax.train import METRICS_FILE
    if (Path(run_dir) / METRICS_FILE).is_file():   # the learning curves travel with the model
        (folder / METRICS_FILE).write_text((Path(run_dir) / METRICS_FILE).read_text())
    write_manifest(folder, {**run_summary(run_dir), **(info or {})})
    return folder


def read_metrics(folder) -> list:
    """The records of ``folder/metrics.jsonl``, each with ``wall``: seconds since the run began, summed
    over resumed invocations (each restarts its ``time`` at 0)."""
    from rsa_jax.train import METRICS_FILE
    recs = [json.loads(line) for line in (Path(folder) / METRICS_FILE).read_text().splitlines() if line.strip()]
    offset, last = 0.0, 0.0
    for r in recs:
        t = r.get("time", 0.0)
        if t < last:
            offset += last
        last = t
        r["wall"] = offset + t
    return recs


def run_summary(run_dir) -> dict:
    """Steps, examples seen, wall time (summed over resumed invocations) and the last evaluation of a run,
    read from its ``metrics.jsonl``; the config's model and training fields that matter."""
    recs = read_metrics(run_dir)
    train = [r for r in recs if "loss" in r]
    evals = [r for r in recs if any(k.startswith("eval") for k in r)]
    cfg = json.loads((Path(run_dir) / "config.json").read_text())["config"]
    keep = ("t_train", "batch_size", "lr", "ema_decay", "ema_every", "ema_after", "seed", "train_limit", "max_steps",
            "penalty", "penalty_lam", "spec_layout", "augment")
    steps = train[-1]["step"] if train else 0
    wall = round(recs[-1]["wall"], 1) if recs else 0.0
    return {"steps": steps, "examples_seen": steps * cfg.get("batch_size", 0), "train_seconds": wall,
            "model": cfg["model"],
            "training": {k: cfg[k] for k in keep if k in cfg}, "last_eval": evals[-1] if evals else None}


def write_manifest(folder, info: dict) -> dict:
    """(Re)writes ``folder/manifest.json`` as ``info`` plus the SHA-256 and size of ``folder/model.npz``."""
    folder = Path(folder)
    f = folder / MODEL_FILE
    rec = {**info, "file": MODEL_FILE, "sha256": sha256(f), "bytes": f.stat().st_size}
    (folder / MANIFEST_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def add_accuracy(name: str, results, *, kind: Optional[str] = None) -> dict:
    """Adds ``accuracy`` (ID / OOD T_eval curves, voting) of shipped model ``name`` to its manifest,
    read from a ``sudoku_ood.json`` (``experiments.sudoku_ood``); returns the new manifest."""
    rec = json.loads(Path(results).read_text())
    kind = kind or load(name)[0].config.kind
    runs = rec["results"][kind]["seeds"]
    r = next(iter(runs.values()))
    if name not in r.get("provenance", {}).get("source", ""):
        raise PretrainedError(f"{results}: the {kind} results are not of {name} ({r.get('provenance')})")
    pick = lambda split: {"split": rec["data"][split], **{k: r[split][k] for k in ("steps", "board_acc", "cell_acc")}}
    return _update_manifest(name, "accuracy", {"results": str(results), "id": pick("id"), "ood": pick("ood"),
                                               **({"vote": r["vote"]} if "vote" in r else {})})


def add_lyapunov(name: str, results, *, long: bool = False) -> dict:
    """Adds ``lyapunov`` (max and mean LE at T, X0 unscaled, the model's own eta and weights) of shipped
    model ``name`` to its manifest, read from a ``lyapunov.json`` (``experiments.lyapunov --checkpoint
    NAME``); returns the new manifest. ``mean_le`` is the paper's mean LE only when the full spectrum
    was computed (``k`` is None); with ``--k`` it is the mean of the leading k and is stored as
    ``mean_le_leading_k``; ``--k K --paper-mean`` gives both (the paper's mean from
    ``rsa_jax.lyapunov.nonnull_exponent_sum``).

    With ``long=True`` it adds ``lyapunov_long`` instead: the long-horizon exponent of a composition
    started after a warm-up (``experiments.lyapunov --checkpoint NAME --warmup W --T T``; the record
    with the largest T, then the largest W), which is what perturbed trajectories follow in the long
    run; the paper's definition (``long=False``) starts at X0 and ignores warmed records."""
    rec = json.loads(Path(results).read_text())
    own_eta = rec["config"].get("eta") in (None, [None])    # files written before records said it
    plain = [r for r in rec["records"] if r.get("checkpoint") == name and r["scale"] == 1.0
             and bool(r.get("warmup")) == long and r["wv_norm"] is None and r["wo_norm"] is None
             and not r.get("eta_overridden", not own_eta)]
    if not plain:
        how = "--warmup W --T T " if long else ""
        raise PretrainedError(f"{results}: no unswept {'warmed ' if long else ''}record of {name} "
                              f"(run experiments.lyapunov --checkpoint {name} {how}...)")
    r = max(plain, key=lambda r: (r["T"], r.get("warmup") or 0)) if long else plain[0]
    if not math.isfinite(r["max_le"]):
        raise NonFiniteExponent(f"{results}: the max LE of {name} is {r['max_le']} (the state overflowed? "
                              "rerun experiments.lyapunov with --float64)")
    k = rec["config"].get("k")
    mean_key = "mean_le" if k is None else "mean_le_leading_k"
    le = {"results": str(results), "T": r["T"], "k": k, "samples": rec.get("num_samples"), "num_null": r["num_null"],
          "max_le": r["max_le"], mean_key: r["mean_le"], "float64": rec["config"].get("float64", False)}
    if long:
        le["warmup"] = r["warmup"]
    if "paper_mean_le" in r:
        le.update(mean_le=r["paper_mean_le"], mean_le_num_null=r["paper_mean_num_null"],
                  mean_le_method="nonnull_exponent_sum (exact sum of the non-null exponents)")
    return _update_manifest(name, "lyapunov_long" if long else "lyapunov", le)


def add_pseudo_energy(name: str, results) -> dict:
    """Adds ``pseudo_energy`` (the pseudo-energy and contribution index along inference, sec. 6.3) of
    shipped model ``name`` to its manifest, read from a ``pseudo_energy.json`` (``experiments.pseudo_energy
    --checkpoint NAME``); returns the new manifest. Kept: the steps where the contribution index was
    taken (``t``), its value there (mean over the contribution puzzles), the mean pseudo-energy there,
    and three summaries: ``contribution_start`` (t = 0), ``contribution_late_mean`` (the mean over the
    sampled t >= half the rollout: over whole cycles of an oscillating model, whatever their phase) and
    ``contribution_max``."""
    rec = json.loads(Path(results).read_text())
    args, mon = rec["args"], rec["monitors"]
    if args.get("checkpoint") != name:
        raise PretrainedError(f"{results}: a rollout of {args.get('checkpoint')!r}, not of {name}")
    t, c = [int(v) for v in mon["contribution_t"]], [float(v) for v in mon["contribution"]]
    if not t or len(t) != len(c) or not all(math.isfinite(v) for v in c):
        raise PretrainedError(f"{results}: no finite contribution index (run experiments.pseudo_energy with "
                              "--contribution-every K)")
    late = [v for s, v in zip(t, c) if s >= args["steps"] / 2]
    value = {"results": str(results), "steps": args["steps"], "puzzles": args["puzzles"],
             "contribution_puzzles": args["contribution_puzzles"], "top_frac": args["top_frac"],
             "method": args.get("contribution_method", "dense"), "t": t, "contribution": c,
             "energy": [float(mon["energy"][s]) for s in t], "contribution_start": c[0] if t[0] == 0 else None,
             "contribution_late_mean": sum(late) / len(late) if late else None, "contribution_max": max(c)}
    return _update_manifest(name, "pseudo_energy", value)


def add_curves(name: str, key: str, curves: dict) -> dict:
    """Adds accuracy curves along T_eval of shipped model ``name`` to its manifest under ``key``
    (``{"split": [name, n], "steps": [...], "board_acc": [...], "cell_acc": [...]}``); returns the new manifest."""
    missing = {"split", "steps", "board_acc", "cell_acc"} - set(curves)
    if missing:
        raise PretrainedError(f"{key} curves of {name} lack {sorted(missing)}")
    if not len(curves["steps"]) == len(curves["board_acc"]) == len(curves["cell_acc"]):
        raise PretrainedError(f"{key} curves of {name}: steps, board_acc and cell_acc differ in length")
    return _update_manifest(name, key, {k: curves[k] for k in ("split", "steps", "board_acc", "cell_acc")})


def add_validation(name: str, curves: dict) -> dict:
    """Adds ``validation`` (model-selection curves, e.g. RRN valid board and cell accuracy along T_eval;
    ``add_curves``) of shipped model ``name`` to its manifest; returns the new manifest."""
    return add_curves(name, "validation", curves)


def add_evaluation_seconds(name: str, part: str, seconds: float) -> dict:
    """Records that evaluation ``part`` (a manifest key, e.g. ``"lyapunov"``) of shipped model ``name``
    took ``seconds`` of wall-clock time, in its manifest's ``evaluation_seconds``; returns the new manifest."""
    timings = dict(manifest(name).get("evaluation_seconds", {}), **{part: round(float(seconds), 1)})
    return _update_manifest(name, "evaluation_seconds", timings)


def _update_manifest(name: str, key: str, value) -> dict:
    """Sets ``manifest[key] = value`` of shipped model ``name`` (file fields re-derived)."""
    m = {k: v for k, v in manifest(name).items() if k not in ("sha256", "bytes", "file")}
    m[key] = value
    return write_manifest(path(name), m)


# ------------------------------------------------------------------------------------ helpers
def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _build(record: dict, source: Path):
    try:
        cfg = config_from_dict(import_path(record["config_class"]), record["config"])
        mcfg = config_from_dict(import_path(record["model_config_class"]), record["model_config"])
        model = import_path(record["model_class"])(mcfg, rngs=nnx.Rngs(cfg.seed))
    except (KeyError, AttributeError, ImportError, TypeError, ValueError) as e:
        raise PretrainedError(f"{source}: cannot rebuild the model from its config ({type(e).__name__}: {e})") from e
    return model, cfg


def _assign(model: nnx.Module, arrays: dict, source: Path) -> nnx.Module:
    """``model`` rebuilt with the parameters ``arrays`` (flat ``a/b/c`` keys), after checking that they fit."""
    from rsa_jax.train import merge_model, split_model
    graphdef, params, rest = split_model(model)
    flat = _flatten(params)
    missing, extra = sorted(set(flat) - set(arrays)), sorted(set(arrays) - set(flat))
    if missing or extra:
        raise PretrainedError(f"{source}: parameters do not fit the model; missing {missing}, unexpected {extra}")
    for k, v in flat.items():
        if arrays[k].shape != v.shape or arrays[k].dtype != v.dtype:
            raise PretrainedError(f"{source}: parameter {k} is {arrays[k].dtype}{arrays[k].shape}, "
                                  f"the model expects {v.dtype}{v.shape}")

    def fill(tree, prefix=""):
        return {k: fill(v, f"{prefix}/{k}" if prefix else str(k)) if isinstance(v, dict)
                else jax.numpy.asarray(arrays[f"{prefix}/{k}" if prefix else str(k)]) for k, v in tree.items()}

    return merge_model(graphdef, fill(params), rest)


def main(argv=None):
    """``python -m rsa_jax.pretrained list | show NAME | verify | export RUN_DIR NAME --info FILE_OR_JSON |
    add-accuracy NAME sudoku_ood.json | add-lyapunov NAME lyapunov.json [--long] |
    add-pseudo-energy NAME pseudo_energy.json``."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m rsa_jax.pretrained", description="Shipped trained models.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="names of the shipped models")
    sub.add_parser("verify", help="load every shipped model (SHA-256 checked)")
    show = sub.add_parser("show", help="print a manifest")
    show.add_argument("name")
    exp = sub.add_parser("export", help="ship the EMA parameters of a run directory as <root>/NAME")
    exp.add_argument("run_dir")
    exp.add_argument("name")
    exp.add_argument("--info", default="{}", help="manifest fields: a JSON string or a JSON file")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    acc = sub.add_parser("add-accuracy", help="copy a model's ID/OOD curves from a sudoku_ood.json into its manifest")
    acc.add_argument("name")
    acc.add_argument("results", help="sudoku_ood.json of `python -m experiments.sudoku_ood --checkpoints NAME`")
    acc.add_argument("--kind", default=None, help="results entry (default: the model's kind)")
    lya = sub.add_parser("add-lyapunov", help="copy a model's max / mean LE from a lyapunov.json into its manifest")
    lya.add_argument("name")
    lya.add_argument("results", help="lyapunov.json of `python -m experiments.lyapunov --checkpoint NAME`")
    lya.add_argument("--long", action="store_true",
                     help="the long-horizon exponent (records with --warmup) as lyapunov_long")
    pe = sub.add_parser("add-pseudo-energy",
                        help="copy a model's contribution index along inference from a pseudo_energy.json")
    pe.add_argument("name")
    pe.add_argument("results", help="pseudo_energy.json of `python -m experiments.pseudo_energy --checkpoint NAME`")
    a = parser.parse_args(argv)
    if a.cmd == "list":
        print("\n".join(names()))
    elif a.cmd == "show":
        print(json.dumps(manifest(a.name), indent=2))
    elif a.cmd == "add-accuracy":
        print(json.dumps(add_accuracy(a.name, a.results, kind=a.kind)["accuracy"], indent=2))
    elif a.cmd == "add-lyapunov":
        key = "lyapunov_long" if a.long else "lyapunov"
        print(json.dumps(add_lyapunov(a.name, a.results, long=a.long)[key], indent=2))
    elif a.cmd == "add-pseudo-energy":
        print(json.dumps(add_pseudo_energy(a.name, a.results)["pseudo_energy"], indent=2))
    elif a.cmd == "verify":
        for n in names():
            load(n)
            print(f"{n}: ok ({manifest(n).get('bytes', '?')} bytes)")
    else:
        info = json.loads(Path(a.info).read_text() if Path(a.info).is_file() else a.info)
        folder = export_run(a.run_dir, root() / a.name, info=info, step=a.step)
        print(json.dumps(json.loads((folder / MANIFEST_FILE).read_text()), indent=2))


if __name__ == "__main__":
    main()
