"""Learning parity with the official AKOrN code: the official model trained by a minimal loop, beside ours.

    # the official classes (PyTorch, einops, sympy installed by hand; a checkout of autonomousvision/akorn):
    nohup python -m experiments.akorn_parity official --repo /path/to/akorn --out runs/akorn-official \\
        --time-budget 3600 > runs/akorn-official.log 2>&1 &          # the same command again resumes it
    # ours is the claims queue's sudoku-akorn-cpu run (evaluated every epoch); then the table and the plot:
    python -m experiments.akorn_parity report --runs runs/akorn-official runs/sudoku-akorn-cpu

``official``: ``SudokuAKOrN`` of ``source/models/sudoku/knet.py`` at the CPU protocol (D = 128, H = 4, N = 4,
T = 16; ``use_omega``, ``global_omg``, ``learn_omg``, ``init_omg=0.5`` as the official README's command), its
four GTA matrices cloned apart as ``.cuda()`` does (on a CPU they share one storage), trained as the
official ``train_sudoku.py`` does: cross-entropy over all 81 cells at step T, Adam lr 1e-3, gradient norm
clipped to 1.0, batch 100, the 9,000 SATNet training puzzles reshuffled every epoch (here read by
``rsa_jax.data.sudoku``, the same puzzles as ours). Every epoch (90 steps) it evaluates the live weights on
the 1,000 SATNet test puzzles at T_eval = 16 (cell accuracy on blank cells, boards), as our trainer does,
and checkpoints (model, Adam, RNG, data order), so a run stopped by ``--time-budget`` resumes exactly.
It writes ``metrics.jsonl`` in our trainer's format (``loss`` every 20 steps, ``eval_live/...`` per epoch).

``report``: training loss and SATNet-test cell / board accuracy of the live weights against the step for
each run (ours: ``runs/<name>/metrics.jsonl``), one table (markdown) and one plot.

``export``: an official ``checkpoint.pt`` as a model file of ours, so that ``experiments.sudoku_ood
--checkpoints FILE`` evaluates the official model (its T_eval curves beside ours, at the same step);
``teval`` puts such results side by side (table and plot).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

STEPS_PER_EPOCH = 90


def official_akorn(repo: Path, d: int, heads: int, t: int, seed: int):
    """The official ``SudokuAKOrN`` (N = 4, the README's omega options) from ``torch.manual_seed(seed)``."""
    import torch
    sys.path.insert(0, str(repo))
    stub = sys.modules.setdefault("pandas", types.ModuleType("pandas"))   # imported by the dataset module, unused
    from source.models.sudoku.knet import SudokuAKOrN
    if sys.modules.get("pandas") is stub and not hasattr(stub, "__version__"):
        del sys.modules["pandas"]   # torch's own imports look for the real one
    torch.manual_seed(seed)
    return SudokuAKOrN(n=4, ch=d, L=1, T=t, gamma=1.0, J="attn", use_omega=True, global_omg=True, init_omg=0.5,
                       learn_omg=True, nl=True, heads=heads)


def untie_gta(net) -> None:
    """``mat_q, mat_k, mat_v, mat_o`` as four independent parameters, as after ``net.cuda()`` (on a CPU the
    official code's four share one storage)."""
    import torch
    attn = net.layers[0][0].connectivity
    for name in ("mat_q", "mat_k", "mat_v", "mat_o"):
        setattr(attn, name, torch.nn.Parameter(getattr(attn, name).detach().clone()))


def _official_model(repo: Path, seed: int):
    net = official_akorn(repo, 128, 4, 16, seed)
    untie_gta(net)
    return net


def _torch_batch(puzzles, idx):
    import torch
    digits = torch.as_tensor(puzzles.puzzles[idx].astype(np.int64)).reshape(-1, 9, 9)
    onehot = torch.nn.functional.one_hot(digits, 10)[..., 1:].float()          # the official input format
    given = (digits > 0).int()[..., None]
    target = torch.as_tensor(puzzles.solutions[idx].astype(np.int64) - 1).reshape(-1)
    return onehot, given, target


def _evaluate(net, puzzles, batch: int = 100) -> dict:
    import torch
    net.eval()
    right_cells = blank_cells = right_boards = 0
    with torch.no_grad():
        for start in range(0, len(puzzles), batch):
            onehot, given, target = _torch_batch(puzzles, np.arange(start, min(start + batch, len(puzzles))))
            pred = net(onehot, given).argmax(-1).reshape(len(onehot), 81)
            blank = given.reshape(len(onehot), 81) == 0
            right = pred == target.reshape(len(onehot), 81)
            right_cells += int((right & blank).sum())
            blank_cells += int(blank.sum())
            right_boards += int((right | ~blank).all(-1).sum())
    net.train()
    return {"eval_live/cell_acc": right_cells / blank_cells, "eval_live/board_acc": right_boards / len(puzzles)}


def train_official(args) -> None:
    import torch
    from rsa_jax.data.sudoku import load_split
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = load_split("satnet_train", args.data_dir), load_split("satnet_test", args.data_dir)
    net = _official_model(Path(args.repo), args.seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ckpt, metrics = out / "checkpoint.pt", out / "metrics.jsonl"
    step, wall = 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        step, wall = state["step"], state["wall"]
        print(f"resumed at step {step}", flush=True)
    else:
        metrics.write_text("")
        (out / "config.json").write_text(json.dumps({"official": vars(args) | {"repo": str(args.repo)}}, default=str))
    started, losses = time.time(), []
    criterion = torch.nn.CrossEntropyLoss()
    net.train()
    while step < args.max_steps:
        epoch, within = divmod(step, STEPS_PER_EPOCH)
        order = np.random.default_rng([args.seed, epoch]).permutation(len(train_set))
        if time.time() - started + args.step_estimate > args.time_budget:
            break
        onehot, given, target = _torch_batch(train_set, order[within * 100:(within + 1) * 100])
        loss = criterion(net(onehot, given).reshape(-1, 9), target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        now = wall + time.time() - started
        rec = None
        if step % 20 == 0:
            rec = {"step": step, "epoch": epoch, "loss": float(np.mean(losses)), "wall": now}
            losses = []
        if step % STEPS_PER_EPOCH == 0:
            rec = (rec or {"step": step, "epoch": epoch, "wall": now}) | _evaluate(net, test_set)
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(), "step": step,
                        "wall": wall + time.time() - started}, ckpt)
        if rec:
            with open(metrics, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    print(f"stopped at step {step} ({'done' if step >= args.max_steps else 'time budget'}); a checkpoint is "
          f"written every {STEPS_PER_EPOCH} steps: the same command resumes from the last one", flush=True)


def _read(run: Path) -> dict:
    """``{"loss": {step: v}, "cell": {step: v}, "board": {step: v}}`` of a run's ``metrics.jsonl``."""
    out = {"loss": {}, "cell": {}, "board": {}}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r and "step" in r:
            out["loss"][r["step"]] = r["loss"]
        if "eval_live/cell_acc" in r:
            out["cell"][r["step"]] = r["eval_live/cell_acc"]
            out["board"][r["step"]] = r["eval_live/board_acc"]
    return out


def report(args) -> str:
    runs = {Path(r).name: _read(Path(r)) for r in args.runs}
    if args.max_step is not None:
        runs = {n: {k: {s: x for s, x in c.items() if s <= args.max_step} for k, c in v.items()}
                for n, v in runs.items()}
    steps = sorted(set.union(*(set(v["cell"]) for v in runs.values())))
    head = "| step | " + " | ".join(f"{n} loss | {n} cell % | {n} board %" for n in runs) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(runs))]
    for s in steps:
        cells = []
        for v in runs.values():   # training loss: the mean of the last 20-step record at or before s
            loss = [x for k, x in v["loss"].items() if s - 20 < k <= s]
            cells += [f"{loss[-1]:.3f}" if loss else "",
                      f"{100 * v['cell'][s]:.1f}" if s in v["cell"] else "",
                      f"{100 * v['board'][s]:.1f}" if s in v["board"] else ""]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, v in runs.items():
        for ax, key, label in zip(axes, ("loss", "cell", "board"),
                                  ("training loss", "SATNet-test cell accuracy (live)", "SATNet-test boards (live)")):
            xs = sorted(v[key])
            ax.plot(xs, [v[key][x] for x in xs], label=name, marker="" if key == "loss" else ".")
            ax.set_title(label)
            ax.set_xlabel("optimizer step")
    axes[0].legend()
    fig.suptitle("AKOrN learning parity: official PyTorch code vs rsa_jax, CPU protocol (D=128, H=4, N=4, T=16)")
    return _save(fig, args.plot, table)


def _save(fig, plot, table: str) -> str:
    fig.tight_layout()
    Path(plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"wrote {plot}")
    return table


def teval(args) -> str:
    """ID / OOD cell and board accuracy against T_eval of several ``sudoku_ood.json`` results (``LABEL=PATH``), one
    table (markdown) and one plot: the official model beside ours at about the same step."""
    curves = {}
    for spec in args.results:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--results wants LABEL=PATH, got {spec!r}")
        res = json.loads(Path(path).read_text())["results"]
        (seeds,) = [v["seeds"] for v in res.values()]
        curves[label] = next(iter(seeds.values()))
    lines = ["| model | split | " + " | ".join(f"T {t}" for t in next(iter(curves.values()))["id"]["steps"]) + " |"]
    lines.append("|---|---|" + "---|" * len(next(iter(curves.values()))["id"]["steps"]))
    for label, c in curves.items():
        for split in ("id", "ood"):
            lines.append(f"| {label} | {split} cells (boards) % | " + " | ".join(
                f"{100 * a:.1f} ({100 * b:.1f})" for a, b in zip(c[split]["cell_acc"], c[split]["board_acc"])) + " |")
    table = "\n".join(lines)
    print(table)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for i, (label, c) in enumerate(curves.items()):
        for ax, split in zip(axes, ("id", "ood")):
            ax.plot(c[split]["steps"], [100 * a for a in c[split]["cell_acc"]], marker="o", color=f"C{i}", label=label)
            ax.plot(c[split]["steps"], [100 * a for a in c[split]["board_acc"]], marker="x", ls="--", color=f"C{i}")
    for ax, title in zip(axes, ("SATNet test (ID)", "RRN test (OOD)")):
        ax.set(xscale="log", xlabel="T_eval (T_train = 16)", title=f"{title}: cells (solid), boards (dashed)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].set_ylabel("accuracy [%]")
    axes[0].legend(fontsize=8)
    return _save(fig, args.plot, table)


def export(args) -> Path:
    """The official loop's ``checkpoint.pt`` (live weights) as a model file of ours (``rsa_jax.pretrained.save``;
    mapped by ``rsa_jax.models.official``, the function checked by the parity test), so that our evaluations
    (``experiments.sudoku_ood --checkpoints FILE``) run the official model."""
    import dataclasses

    import torch

    from rsa_jax import pretrained
    from rsa_jax.configs import SUDOKU_CPU
    from rsa_jax.models.official import load_official
    state = torch.load(args.checkpoint, weights_only=False)
    cfg = dataclasses.replace(SUDOKU_CPU, model=dataclasses.replace(SUDOKU_CPU.model.with_kind("akorn"), d=args.d,
                                                                    heads=args.heads))
    model = load_official({k: v.detach().cpu().numpy() for k, v in state["net"].items()}, cfg.model)
    out = pretrained.save(model, cfg, args.out)
    print(f"wrote {out} (official weights at step {state['step']})")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.akorn_parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("official", help="train the official model (needs torch and the official code)")
    o.add_argument("--repo", type=Path, required=True, help="checkout of autonomousvision/akorn")
    o.add_argument("--out", type=Path, default=Path("runs/akorn-official"))
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--max-steps", type=int, default=1080)
    o.add_argument("--time-budget", type=float, default=3600.0, help="seconds of training in this invocation")
    o.add_argument("--step-estimate", type=float, default=30.0,
                   help="seconds kept for the last step and an evaluation (default 30)")
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--data-dir", default=None)
    r = sub.add_parser("report", help="table and plot of runs' learning curves")
    r.add_argument("--runs", nargs="+", required=True, help="run folders holding metrics.jsonl")
    r.add_argument("--plot", default="outputs/akorn_parity/akorn_learning_parity.png")
    r.add_argument("--max-step", type=int, default=None, help="only the steps up to this one (default: all)")
    e = sub.add_parser("export", help="an official checkpoint.pt as a model file of ours (needs torch)")
    e.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt of `official`")
    e.add_argument("--out", type=Path, required=True, help="the .npz to write")
    e.add_argument("--d", type=int, default=128, help="its width (default 128, the CPU protocol's)")
    e.add_argument("--heads", type=int, default=4, help="its heads (default 4)")
    t = sub.add_parser("teval", help="T_eval curves of sudoku_ood results side by side")
    t.add_argument("--results", nargs="+", required=True, metavar="LABEL=PATH", help="sudoku_ood.json files")
    t.add_argument("--plot", default="outputs/akorn_parity/akorn_teval.png")
    args = p.parse_args(argv)
    return {"official": train_official, "report": report, "export": export, "teval": teval}[args.cmd](args)


if __name__ == "__main__":
    main()
