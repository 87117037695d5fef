"""The trained models of the claims table (issue 14), trained one after another across sessions.

Every model is the CPU protocol (``rsa_jax.configs.SUDOKU_CPU``: D = 128, H = 4, N = 4, T = 16, batch
100, lr 1e-3, EMA every step) with one change (``PLAN``), for the same number of steps (``--steps``,
default 2,880 = 32 epochs, where the ItrSA baseline reached 94% boards), so that the comparisons of
the paper (Fig. 5 regularizers, Fig. S.1 heads, Fig. 4 oscillator-wise RMSNorm) run at equal budget.

    python -m experiments.claims_runs status              # every planned model: shipped, parked at step k, ...
    XLA_FLAGS=--xla_force_host_platform_device_count=2 nohup python -m experiments.claims_runs train \\
        --budget 7200 > runs/claims_runs.log 2>&1 &       # the next unfinished models, within 2 h
    # (`make claims BUDGET=7200` is the same, with tcmalloc preloaded where installed: ~1.3x faster steps)
    python -m experiments.claims_runs park                # unfinished runs -> pretrained/_resume/ (commit it)
    python -m experiments.claims_runs park --ship-partial # ... and ship their EMA weights now, marked partial
    python -m experiments.claims_runs select              # each lambda grid's pick on RRN valid
    python -m experiments.claims_runs train --budget 0    # only the missing evaluation parts of shipped models

``train`` first evaluates shipped models whose evaluation is missing, then takes the planned models in
order, skips shipped ones, restores a parked run when it is further along than ``runs/<name>``, trains
(resuming exactly) until the model reaches ``--steps`` or the budget ends (``TrainConfig.time_budget``,
minus ``--eval-reserve``), and a finished model is shipped (``pretrained/<name>``, manifest with the
plan entry, device, date and every ``train`` invocation that trained it, ``invocations``), evaluated
(``experiments.sudoku_ood``: ID / OOD curves; SATNet test to T_eval 1,024 on a few puzzles, ``ID_LONG``)
and given its Lyapunov exponents (``experiments.lyapunov
--k 32``, and the long-horizon one, ``LONG_LE``) and its contribution index along inference
(``experiments.pseudo_energy``, ``PSEUDO_ENERGY``), all written into the manifest. A parked run is ~3 MB
(parameters, Adam moments, EMA); it is deleted once the model ships. A parked run resumed on another
machine is exact only with the same device count (``data_parallel`` follows it; summation order). ``park
--ship-partial`` also ships an unfinished model (its manifest says ``partial``: step k of ``--steps``),
so that the experiments can use it meanwhile; ``train`` continues it and replaces it.

A regularizer's weight is chosen from a small grid on RRN valid, never on test: planned models that
share a ``group`` are one grid (same kind and regularizer, one lambda each). Their evaluation adds RRN
valid curves (``validation`` in the manifest: first ``--valid-limit`` puzzles, the OOD T_eval grid),
and ``select`` picks the member with the best curves (``experiments.regularization.select_lambda``:
board accuracy averaged over T_eval, ties by cell accuracy, then the smaller lambda), evaluating any
shipped member whose validation is missing first; it writes ``<out>/selection.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from rsa_jax import pretrained
from rsa_jax.runs import latest_step

RESUME_DIR = "_resume"
#: where a stale shipped model goes when its retrained successor ships (loadable by path, not by name)
PREPARITY_DIR = "_preparity"
# One line per `train` invocation that trained a run ({"command", "date", "device", "start_step", "preload": the
# LD_PRELOAD it ran under, e.g. tcmalloc, or None}): it travels
# with a parked run and goes into the manifest (``invocations``), since a model may take several sessions.
INVOCATIONS = "invocations.jsonl"
# The long-horizon exponent beside the paper's T = 16 one: 512 steps from the state after 128 (the
# T = 16 exponent from X0 is a finite-time one and does not rank long-run behaviour; RESULTS.md).
LONG_LE = ("--k", "4", "--T", "512", "--warmup", "128")
# The pseudo-energy and contribution index along inference (sec. 6.3): 64 steps on 100 RRN test puzzles,
# the index on the first one every 8 steps (Lanczos; at D = 128: 3.6 minutes alone, 7-21 beside a training run).
# SATNet test along the OOD T_eval grid (16 ... 1,024; `accuracy` reads ID only to 128, on all 1,000 puzzles):
# (split, first n puzzles); one rollout of 1,024 steps, 1-3 minutes per model at D = 128 beside a training run.
ID_LONG = ("satnet_test", 100)
# What the queue's evaluation writes into a shipped model's manifest, in order (``evaluate``); members of a
# lambda grid also get "validation" (RRN valid curves).
EVALUATION = ("accuracy", "id_long", "lyapunov", "lyapunov_long", "pseudo_energy")
PSEUDO_ENERGY = ("--steps", "64", "--puzzles", "100", "--contribution-every", "8", "--contribution-puzzles", "1",
                 "--contribution-method", "krylov")


class Planned(NamedTuple):
    """One model of the claims table: its name, kind, changes to the CPU protocol, and why; ``group``
    names the lambda grid it belongs to (members differ only in ``penalty_lam``; ``select`` picks one)."""

    name: str
    kind: str
    model: dict = {}
    train: dict = {}
    claim: str = ""
    group: str = ""
    #: start from the run folder of this planned model (its latest checkpoint, metrics and invocations), not from init
    start_from: str = ""
    #: ``(epochs, gain)``: train ``epochs`` at a time, and stop when the best SATNet-test board accuracy (EMA) of
    #: the last ``epochs`` is less than ``gain`` above the best before them (``max_steps`` caps it)
    until_flat: tuple = ()


# In training order: after the central claim, the models that open a claims-table row (heads, R_E-single,
# learned gamma) come before further members of a lambda grid whose row already has a verdict; the controls
# last: a second AKOrN seed first (it bears on two rows), the one for R_E-multi (whose row has a verdict)
# after the pair that tests why R_Spec fails here.
PLAN = (
    Planned("sudoku-itrsa-cpu", "itrsa", claim="baseline (ItrSA with RMSNorm)"),
    # evaluated every epoch (90 steps): its curve is the learning-parity comparison with the official code
    Planned("sudoku-akorn-cpu", "akorn", train={"eval_every": 1}, claim="baseline (AKOrN)"),
    # issue 32: the baseline trained on from its 2,880 steps while its SATNet-test boards still improve (the claims
    # compare models at 2,880 steps, so this is a model of its own); four epochs at a time, one point of boards
    Planned("sudoku-akorn-long-cpu", "akorn", train={"eval_every": 1, "max_steps": 8640}, start_from="sudoku-akorn-cpu",
            until_flat=(4, 0.01), claim="the AKOrN baseline trained on while its SATNet-test boards improve"),
    Planned("sudoku-itrsa-nonorm-cpu", "itrsa", model={"norm": "none"}, train={"max_steps": 90, "checkpoint_every": 10},
            claim="max LE > 0 without normalization (trained one epoch, as the paper does: it diverges)"),
    Planned("sudoku-itrsa-symmetric-cpu", "itrsa",
            model={"symmetric": True, "bias": False, "position": "embedding", "heads": 1},
            train={"max_steps": 90, "checkpoint_every": 10},
            claim="max LE < 0 for symmetric (energy) SA: W^V = sym(W^Q W^K^T), H = 1, trained one epoch as the "
                  "paper does"),
    Planned("sudoku-itrsa-spec-cpu", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-4},
            claim="R_Spec helps (Fig. 5); the paper's ItrSA lambda, W^Q, W^K, W^V, W^O taken apart",
            group="spec-itrsa"),
    Planned("sudoku-akorn-spec-cpu", "akorn", train={"penalty": "spec", "penalty_lam": 1e-5},
            claim="R_Spec helps most for AKOrN (Fig. 5); the paper's AKOrN lambda", group="spec-akorn"),
    Planned("sudoku-itrsa-emulti-cpu", "itrsa", model={"orthogonal_vo": "cayley"},
            train={"penalty": "e_multi", "penalty_lam": 1e-4}, claim="R_E-multi hurts (Fig. 5)"),
    Planned("sudoku-itrsa-h1-cpu", "itrsa", model={"heads": 1}, claim="H = 1 poor (Fig. S.1)"),
    Planned("sudoku-itrsa-esingle-cpu", "itrsa", model={"heads": 1}, train={"penalty": "e_single", "penalty_lam": 1e-6},
            claim="R_E-single fails (Fig. 5); one head, the paper's lambda"),
    Planned("sudoku-akorn-rms-cpu", "akorn", model={"norm": "rmsnorm"},
            claim="oscillator-wise RMSNorm, learned gamma (Fig. 4, Table S.1: max |gamma| < 1)"),
    Planned("sudoku-itrsa-h2-cpu", "itrsa", model={"heads": 2}, claim="H = 2 poor (Fig. S.1)"),
    Planned("sudoku-itrsa-h8-cpu", "itrsa", model={"heads": 8}, claim="H = 8 (Fig. S.1)"),
    Planned("sudoku-itrsa-spec-lam1e-5-cpu", "itrsa", train={"penalty": "spec", "penalty_lam": 1e-5},
            claim="R_Spec lambda grid (ItrSA): one tenth of the paper's lambda, which slowed learning",
            group="spec-itrsa"),
    Planned("sudoku-akorn-spec-lam1e-6-cpu", "akorn", train={"penalty": "spec", "penalty_lam": 1e-6},
            claim="R_Spec lambda grid (AKOrN): one tenth of the paper's lambda", group="spec-akorn"),
    Planned("sudoku-akorn-n16-cpu", "akorn", model={"n": 16},
            claim="oscillator size (Fig. 4): AKOrN (Pi_N) at N = 16 loses test-time scaling"),
    Planned("sudoku-akorn-rms-n16-cpu", "akorn", model={"norm": "rmsnorm", "n": 16},
            claim="oscillator size (Fig. 4): oscillator-wise RMSNorm at N = 16 restores it"),
    # Both AKOrN + R_Spec models (lambda 1e-5, 1e-6: a weighted penalty of ~1% and ~0.5% of the loss) follow
    # the baseline to step ~1,800 and end ~10 points of cells below it: the penalty, or the spread between
    # seeds of one protocol? A second baseline seed tells (and gives the N comparison of Fig. 4 a spread).
    # evaluated every epoch like the baseline: with official seeds 0 and 1 it is the learning-parity comparison
    Planned("sudoku-akorn-seed1-cpu", "akorn", train={"seed": 1, "eval_every": 1},
            claim="control: the AKOrN baseline with another seed (seed-to-seed spread of the AKOrN rows)"),
    # RMSNorm at nn.RMSNorm's scale (gain init sqrt(D) = sqrt(128): tokens of norm sqrt(D), not 1). At unit
    # tokens the trained ItrSA grows sigma_max(W^Q), sigma_max(W^K) to 29 and 16 for sharp attention, which
    # R_Spec (sigma_max -> 1) forbids (experiments.weight_penalties): does R_Spec still slow learning there?
    Planned("sudoku-itrsa-rmsscale-cpu", "itrsa", model={"gamma_init": 128 ** 0.5},
            claim="control for R_Spec: ItrSA with RMSNorm at nn.RMSNorm's scale (gamma_init sqrt(D))"),
    Planned("sudoku-itrsa-rmsscale-spec-cpu", "itrsa", model={"gamma_init": 128 ** 0.5},
            train={"penalty": "spec", "penalty_lam": 1e-4},
            claim="R_Spec helps (Fig. 5) at nn.RMSNorm's scale (gamma_init sqrt(D)); the paper's ItrSA lambda"),
    Planned("sudoku-itrsa-orthvo-cpu", "itrsa", model={"orthogonal_vo": "cayley"},
            claim="control for R_E-multi: W^V, W^O orthogonal (Cayley) without the penalty, to tell which of the "
                  "two slowed its learning"),
)


def base_config():
    """The protocol every planned model starts from: ``rsa_jax.configs.SUDOKU_CPU``."""
    from rsa_jax.configs import SUDOKU_CPU
    return SUDOKU_CPU


def config(entry: Planned, steps: int, out: Path, budget: float | None):
    """The ``TrainConfig`` of a planned model (:func:`base_config` + the entry's changes)."""
    import jax
    base = base_config()
    model = dataclasses.replace(base.model.with_kind(entry.kind, entry.model.get("norm")),
                                **{k: v for k, v in entry.model.items() if k != "norm"})
    train = {"max_steps": steps, **entry.train}
    data_parallel = jax.device_count() > 1 and base.batch_size % jax.device_count() == 0
    return dataclasses.replace(base, model=model, out=str(out), time_budget=budget, progress=False,
                               data_parallel=data_parallel, **train)


def status(entry: Planned, runs: Path) -> str:
    """``shipped``, ``shipped, not evaluated``, ``run/parked at step k`` or ``not started``."""
    if finished(entry.name, entry):
        return "shipped" if evaluated(entry) else "shipped, not evaluated"
    partial = ("shipped pre-parity (retrain), " if finished(entry.name) else "shipped partial, "
               if entry.name in pretrained.names() else "")
    for where, run in (("run", runs / entry.name), ("parked", pretrained.root() / RESUME_DIR / entry.name)):
        step = latest_step(run)
        if step is not None:
            return f"{partial}{where} at step {step}"
    return f"{partial}not started"


def park(runs: Path, steps: int, ship_partial: bool = False, info: dict | None = None) -> list:
    """Copies every unfinished planned run (config, metrics, latest checkpoint) under
    ``pretrained/_resume/<name>``, and with ``ship_partial`` ships its EMA weights marked partial
    (``info``: further manifest fields, e.g. the command that trained it so far); returns the names parked."""
    parked = []
    for entry in PLAN:
        run, dest = runs / entry.name, pretrained.root() / RESUME_DIR / entry.name
        step = None if finished(entry.name, entry) else latest_step(run)
        if step is None:
            continue
        if ship_partial:
            target = entry.train.get("max_steps", steps)
            fields = {**_info(entry, "python -m experiments.claims_runs train  (continues it)"),
                      "partial": f"step {step} of {target}; `python -m experiments.claims_runs train` continues it",
                      "invocations": _invocations(run), **(info or {})}
            pretrained.export_run(run, pretrained.root() / entry.name, info=fields)
        shutil.rmtree(dest, ignore_errors=True)
        (dest / "checkpoints").mkdir(parents=True)
        for f in ("config.json", "metrics.jsonl", INVOCATIONS):
            if (run / f).is_file():
                shutil.copy2(run / f, dest / f)
        shutil.copytree(run / "checkpoints" / str(step), dest / "checkpoints" / str(step))
        parked.append(entry.name)
    return parked


def finished(name: str, entry: Planned | None = None) -> bool:
    """Whether ``name`` is shipped and not marked partial (and, given its plan ``entry``, not ``stale``)."""
    return (name in pretrained.names() and not pretrained.manifest(name).get("partial")
            and not (entry and stale(entry)))


def stale(entry: Planned) -> bool:
    """Whether shipped ``entry.name`` has another model config than the plan gives now: the AKOrN models
    trained before the parity work (issue 32), whose records lack the fields that now default to the
    official AKOrN parametrization. ``train`` retrains them and retires the old folder to ``PREPARITY_DIR``."""
    from rsa_jax.config import config_from_dict
    from rsa_jax.models.sudoku import ModelConfig
    recorded = pretrained.manifest(entry.name).get("model")
    if recorded is None:   # a manifest without the model config (none shipped so): nothing to compare
        return False
    return config_from_dict(ModelConfig, recorded) != config(entry, 0, Path("."), None).model


def retire(name: str) -> Path:
    """Moves shipped model ``name`` to ``pretrained/PREPARITY_DIR/name`` (``pretrained.load_file`` still reads it)."""
    retired = pretrained.root() / PREPARITY_DIR / name
    shutil.rmtree(retired, ignore_errors=True)
    retired.parent.mkdir(exist_ok=True)
    shutil.move(str(pretrained.root() / name), retired)
    return retired


def evaluated(entry: Planned) -> bool:
    """Whether shipped model ``entry.name``'s manifest has every part of ``EVALUATION`` (accuracy curves,
    SATNet test to T_eval 1,024, Lyapunov exponents at T = 16 and long-horizon, contribution index along
    inference) and, for a member of a lambda grid, its RRN valid curves."""
    m = pretrained.manifest(entry.name)
    return (all(k in m for k in EVALUATION)
            and (not entry.group or "validation" in m))


def curves(name: str, key: str, split: str, limit: int | None, data_dir=None) -> dict:
    """Board and cell accuracy of shipped model ``name`` on the first ``limit`` puzzles (None: all) of
    ``split`` along the OOD T_eval grid (``rsa_jax.configs.SUDOKU_EVAL_CPU``), into its manifest as ``key``.
    The split is read from the data folder, never generated: numbers on stand-ins would mean nothing."""
    from rsa_jax.configs import SUDOKU_EVAL_CPU
    from rsa_jax.data.sudoku import load_split
    from rsa_jax.evaluate import evaluate_boards
    model, _ = pretrained.load(name)
    puzzles = load_split(split, data_dir, limit=limit)
    ev = evaluate_boards(model, puzzles, SUDOKU_EVAL_CPU.t_eval, batch_size=SUDOKU_EVAL_CPU.eval_batch_size)
    rec = {"split": [puzzles.name, len(puzzles)], "steps": list(ev["steps"]),
           "board_acc": [float(x) for x in ev["board_acc"]], "cell_acc": [float(x) for x in ev["cell_acc"]]}
    pretrained.add_curves(name, key, rec)
    print(f"[{name}] {split} ({len(puzzles)}): boards {rec['board_acc']}, cells "
          f"{[round(c, 3) for c in rec['cell_acc']]} at T_eval {rec['steps']}", flush=True)
    return rec


def validate(entry: Planned, limit: int | None = 500, data_dir=None) -> dict:
    """RRN valid curves of shipped model ``entry.name`` (``curves``: first ``limit`` puzzles), into its
    manifest as ``validation``."""
    return curves(entry.name, "validation", "rrn_valid", limit, data_dir)


def select(entries, out: Path, limit: int | None = 500, criterion: str = "board_mean") -> dict:
    """Each lambda grid's pick on RRN valid (members shipped so far; a missing validation is computed
    first): ``{group: {"selected", "lam", "criterion", "members": {name: {"lam", "score"}}, "planned"}}``,
    also written to ``out / "selection.json"``."""
    from experiments.regularization import select_lambda
    groups = {}
    for e in entries:
        if e.group:
            groups.setdefault(e.group, []).append(e)
    result = {}
    for group, members in groups.items():
        done = [e for e in members if finished(e.name, e)]
        per = {}
        for e in done:
            if "validation" not in pretrained.manifest(e.name):
                validate(e, limit)
            v = pretrained.manifest(e.name)["validation"]
            per[e.name] = {"lam": e.train["penalty_lam"], "valid": {"board_acc": [v["board_acc"]],
                                                                     "cell_acc": [v["cell_acc"]]}}
        if not per:
            print(f"[{group}] no member shipped yet ({', '.join(e.name for e in members)})")
            continue
        best, scores = select_lambda(per, criterion)
        result[group] = {"selected": best, "lam": per[best]["lam"], "criterion": criterion,
                         "members": {k: {"lam": per[k]["lam"], "score": list(scores[k])} for k in per},
                         "planned": [e.name for e in members]}
        print(f"[{group}] selected {best} (lambda {per[best]['lam']:g}; {criterion} on RRN valid: "
              + ", ".join(f"{k} {scores[k]}" for k in per)
              + (f"; not shipped yet: {[e.name for e in members if e not in done]}" if len(done) < len(members)
                 else "") + ")", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps(result, indent=2))
    return result


def evaluate(entry: Planned, out: Path, eval_args: list) -> bool:
    """ID / OOD curves (and SATNet test to T_eval 1,024 on a few puzzles, ``ID_LONG``) and Lyapunov
    exponents (max LE from the leading 32, the paper's mean LE exactly: at the CPU protocol's size 9
    minutes with its QRs on both CPUs and nothing beside it, 37 with one OpenBLAS thread; the
    long-horizon max LE, ``LONG_LE``: under a minute to ~3), the
    pseudo-energy and contribution index along inference (``PSEUDO_ENERGY``: 4-21 minutes) of a
    shipped model, and RRN valid curves for a member of a lambda grid, into its manifest, with the
    wall-clock seconds of each part (``evaluation_seconds``); an error is
    printed (the model stays "shipped, not evaluated" and the next ``train`` retries) and gives False."""
    from experiments import lyapunov, pseudo_energy, sudoku_ood

    def accuracy():
        sudoku_ood.main(["--models", entry.kind, "--checkpoints", entry.name, "--out", str(out / "ood"), *eval_args])
        pretrained.add_accuracy(entry.name, out / "ood" / "sudoku_ood.json")

    def exponents():
        lyapunov.main(["--checkpoint", entry.name, "--k", "32", "--paper-mean", "--chunk", "1296",  # ~2 GB, not ~5
                       "--out", str(out / "lyapunov")])
        pretrained.add_lyapunov(entry.name, out / "lyapunov" / "lyapunov.json")

    def energy():
        pseudo_energy.main(["--checkpoint", entry.name, *PSEUDO_ENERGY, "--out", str(out / "pseudo_energy")])
        pretrained.add_pseudo_energy(entry.name, out / "pseudo_energy" / "pseudo_energy.json")

    parts = dict(zip(EVALUATION, (accuracy, lambda: curves(entry.name, "id_long", *ID_LONG), exponents,
                                  lambda: long_lyapunov(entry.name, out / "lyapunov_long"), energy)))
    if entry.group:
        parts["validation"] = lambda: validate(entry)
    try:
        for key, run in parts.items():
            if key not in pretrained.manifest(entry.name):
                started = time.time()
                run()
                pretrained.add_evaluation_seconds(entry.name, key, time.time() - started)
        return True
    except Exception as e:   # noqa: BLE001 (one model's evaluation must not stop the queue)
        print(f"[{entry.name}] evaluation failed: {type(e).__name__}: {e}", flush=True)
        return False


def long_lyapunov(name: str, out: Path) -> None:
    """The long-horizon max LE (``LONG_LE``) of shipped model ``name`` into its manifest: in float32,
    and again in float64 when float32 gives a non-finite exponent (a state that grows, e.g. without
    normalization, overflows float32's squares long before float64's)."""
    from experiments import lyapunov
    for extra in ((), ("--float64",)):
        lyapunov.main(["--checkpoint", name, *LONG_LE, *extra, "--out", str(out)])
        try:
            pretrained.add_lyapunov(name, out / "lyapunov.json", long=True)
            return
        except pretrained.NonFiniteExponent as e:
            if extra:
                raise
            print(f"[{name}] {e}; again in float64", flush=True)


def improving(history: list, window: int, gain: float) -> bool:
    """Whether the best ``eval/board_acc`` (EMA weights) of the evaluations in the last ``window`` steps of
    ``history`` (metric records) is at least ``gain`` above the best one before them (True if none before)."""
    evals = [(r["step"], r["eval/board_acc"]) for r in history if "eval/board_acc" in r]
    if not evals:
        return True
    last = evals[-1][0]
    recent = [a for s, a in evals if s > last - window]
    before = [a for s, a in evals if s <= last - window]
    return not before or max(recent) >= max(before) + gain


def _train_until_flat(entry: Planned, cfg, run: Path, deadline: float) -> dict:
    """Trains ``entry.until_flat[0]`` epochs at a time (exact resumes) until the run stops improving
    (:func:`improving`), reaches ``cfg.max_steps`` or the ``deadline`` (``time.time()``); returns the manifest
    note ``{"stopped": why}`` when it is done, ``{}`` when time ran out."""
    from rsa_jax.runs import read_history
    from rsa_jax.tasks.sudoku import sudoku_task
    from rsa_jax.train import train
    epochs, gain = entry.until_flat
    task = sudoku_task(cfg)   # its data and order do not depend on max_steps / time_budget
    spe = task.steps_per_epoch
    cap = min(cfg.max_steps, cfg.epochs * spe)
    while True:
        have = latest_step(run) or 0
        target = min(cap, (have // spe + epochs) * spe)
        left = deadline - time.time()
        if have >= cap or left <= 0:
            return {"stopped": f"step {have}: the last step planned"} if have >= cap else {}
        train(dataclasses.replace(cfg, max_steps=target, time_budget=left), task)
        if (latest_step(run) or 0) < target:
            return {}
        if not improving(read_history(run / "metrics.jsonl", target), epochs * spe, gain):
            return {"stopped": f"step {target}: the best SATNet-test boards (EMA) of the last {epochs} epochs are "
                               f"less than {100 * gain:g} percentage point(s) above the best before them"}


def _restore(run: Path, parked: Path) -> None:
    """Replaces ``run`` by the parked copy when that is further along (or ``run`` has no checkpoint)."""
    if not parked.is_dir():
        return
    here, there = latest_step(run), latest_step(parked)
    if there is not None and (here is None or there > here):
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(parked, run)
        print(f"[{run.name}] restored the parked run (step {there}) from {parked}")


def _invocations(run: Path) -> list:
    """The ``train`` invocations recorded in ``run`` (``INVOCATIONS``), oldest first."""
    f = run / INVOCATIONS
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def _info(entry: Planned, command: str) -> dict:
    """Manifest fields of a planned model."""
    return {"name": entry.name, "claim": entry.claim, "date": datetime.date.today().isoformat(),
            "device": _device(), "precision": base_config().matmul_precision,
            "protocol": "CPU protocol (rsa_jax.configs.SUDOKU_CPU) with the plan entry's changes",
            "plan_entry": {"kind": entry.kind, "model": entry.model, "train": entry.train}, "command": command}


def _device() -> str:
    import jax
    d = jax.devices()[0]
    return f"{jax.device_count()} x {d.device_kind} ({d.platform}; {platform.processor() or platform.machine()})"


def train_next(args) -> list:
    """Trains the planned models in order within ``args.budget`` seconds; returns the names shipped."""
    from rsa_jax.tasks.sudoku import sudoku_task
    from rsa_jax.train import TrainingDiverged, train
    started, shipped, eval_args = time.time(), [], shlex.split(args.eval_args)
    wanted = [e for e in PLAN if not args.only or e.name in args.only]
    if args.evaluate:   # models shipped earlier whose evaluation did not happen or failed
        for entry in wanted:
            if finished(entry.name, entry) and not evaluated(entry):
                evaluate(entry, args.out / entry.name, eval_args)
    reserve = args.eval_reserve if args.evaluate else 0.0
    for entry in [e for e in wanted if not finished(e.name, e)]:
        left = args.budget - (time.time() - started) - reserve
        if left < args.min_budget:
            print(f"[{entry.name}] {left:.0f}s of the budget left (< {args.min_budget}s): stopping")
            break
        run, parked = args.runs_dir / entry.name, pretrained.root() / RESUME_DIR / entry.name
        if entry.start_from and latest_step(run) is None and latest_step(parked) is None:
            source = args.runs_dir / entry.start_from
            if latest_step(source) is None:
                print(f"[{entry.name}] starts from {entry.start_from}'s run, and {source} has no checkpoint (run "
                      f"folders stay on the machine that trained them: train {entry.start_from} again); next model")
                continue
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(source, run)
            print(f"[{entry.name}] starts from {source} at step {latest_step(run)}", flush=True)
        _restore(run, parked)
        cfg = config(entry, args.steps, run, left)
        print(f"[{entry.name}] training ({entry.claim}); {left:.0f}s left", flush=True)
        command = "python -m experiments.claims_runs " + shlex.join(args.argv)
        run.mkdir(parents=True, exist_ok=True)
        with open(run / INVOCATIONS, "a") as f:
            f.write(json.dumps({"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                                "device": _device(), "start_step": latest_step(run) or 0,
                                "preload": os.environ.get("LD_PRELOAD") or None}) + "\n")
        note = {}
        try:
            if entry.until_flat:
                note = _train_until_flat(entry, cfg, run, started + args.budget - reserve)
            else:
                train(cfg, sudoku_task(cfg))
        except TrainingDiverged as e:   # expected of unnormalized ItrSA: ship the last good state, say so
            print(f"[{entry.name}] {e}")
            if e.last_checkpoint is None:
                print(f"[{entry.name}] nothing to ship (no checkpoint before the divergence); next model")
                continue
            note = {"diverged": f"non-finite loss at step {e.step}; shipped the step-{e.last_checkpoint} checkpoint",
                    "steps": e.last_checkpoint, "examples_seen": e.last_checkpoint * cfg.batch_size}
        step = latest_step(run)
        if not note and (step is None or step < cfg.max_steps):   # note: stopped (until_flat) or diverged
            print(f"[{entry.name}] stopped at step {step} of {cfg.max_steps}: resume with the same command")
            break
        info = {**note, **_info(entry, command), "invocations": _invocations(run)}
        if finished(entry.name):   # a stale model (pre-parity): retire it, keep it loadable by path
            print(f"[{entry.name}] the pre-parity model moved to {retire(entry.name)}", flush=True)
        pretrained.export_run(run, pretrained.root() / entry.name, info=info, step=note.get("steps"))
        shutil.rmtree(parked, ignore_errors=True)
        shipped.append(entry.name)
        print(f"[{entry.name}] shipped as {pretrained.root() / entry.name}", flush=True)
        if args.evaluate:
            evaluate(entry, args.out / entry.name, eval_args)
    return shipped


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.claims_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=("status", "train", "park", "select"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run directories (default: runs)")
    p.add_argument("--steps", type=int, default=2880, help="optimizer steps per model (default 2880 = 32 epochs)")
    p.add_argument("--budget", type=float, default=7200.0, help="train: wall-clock seconds in all (default 7200)")
    p.add_argument("--min-budget", type=float, default=600.0,
                   help="train: do not start a model with less than this many seconds left (default 600)")
    p.add_argument("--only", nargs="+", default=None, help="train: only these planned names")
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                   help="train: ship finished models without the ID / OOD and Lyapunov evaluation")
    p.add_argument("--eval-reserve", type=float, default=600.0,
                   help="train: seconds of the budget kept for evaluating the last model shipped (default 600)")
    p.add_argument("--eval-args", default="", help="train: extra flags of experiments.sudoku_ood (quoted)")
    p.add_argument("--ship-partial", action="store_true",
                   help="park: also ship each unfinished model now (manifest marked partial; train replaces it)")
    p.add_argument("--info", default="{}", help="park --ship-partial: extra manifest fields (a JSON object)")
    p.add_argument("--out", type=Path, default=Path("outputs/claims_runs"), help="evaluation outputs")
    p.add_argument("--valid-limit", type=int, default=500,
                   help="select: first N RRN valid puzzles of a missing validation (default 500; 0: all)")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    unknown = sorted(set(args.only or ()) - {e.name for e in PLAN})
    if unknown:
        p.error(f"--only: not planned: {unknown}; planned: {[e.name for e in PLAN]}")
    if args.cmd == "status":
        rows = {e.name: status(e, args.runs_dir) for e in PLAN}
        w = max(len(x.name) for x in PLAN), max(len(v) for v in rows.values())
        for e in PLAN:
            print(f"{e.name:{w[0]}s}  {rows[e.name]:{w[1]}s}  {e.claim}")
        return rows
    if args.cmd == "select":
        return select(PLAN, args.out, args.valid_limit or None)
    if args.cmd == "park":
        names = park(args.runs_dir, args.steps, args.ship_partial, json.loads(args.info))
        print(f"parked under {pretrained.root() / RESUME_DIR}: {', '.join(names) or 'nothing'}")
        return names
    shipped = train_next(args)
    print(json.dumps({"shipped": shipped}))
    return shipped


if __name__ == "__main__":
    main()
