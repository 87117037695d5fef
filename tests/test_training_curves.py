"""experiments.training_curves: one figure for a few runs (train batches, EMA, live) and for many (EMA only)."""

import matplotlib

from experiments import training_curves

matplotlib.use("Agg")


def _curve(shift: float) -> dict:
    train = [{"step": s, "wall": 2.0 * s, "cell_acc": 0.2 + shift + s / 1000} for s in (20, 40, 60)]
    ev = [{"step": s, "wall": 2.0 * s, "eval/cell_acc": 0.3 + shift, "eval/board_acc": 0.0,
           "eval_live/cell_acc": 0.31 + shift, "eval_live/board_acc": 0.01} for s in (30, 60)]
    return {"train": train, "eval": ev}


def test_plot_few_and_many_runs(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    figs, save = [], training_curves.save_figure
    monkeypatch.setattr(training_curves, "save_figure", lambda fig, path: figs.append(fig) or save(fig, path))
    for n in (2, 12):
        curves = {f"run{i}": _curve(i / 100) for i in range(n)}
        training_curves.plot(curves, tmp_path / f"c{n}.png")
        fig = figs[-1]
        labels = [line.get_label() for line in fig.axes[0].get_lines()]
        # a few runs: train batches + EMA + live per run; many: one EMA line per run, named by the run
        assert len(labels) == (3 * n if n <= 4 else n)
        assert (labels[:n] == [f"run{i}" for i in range(n)]) is (n > 4)
        plt.close("all")
        assert any(tmp_path.glob(f"c{n}*"))


def test_label_marks_preparity_models(tmp_path):
    import json

    from rsa_jax.models.sudoku import ModelConfig
    now = {"kind": "akorn", **{k: None for k in ModelConfig.WHEN_ABSENT}}
    for name, model, want in (("a", now, "a"), ("b", {"kind": "akorn"}, "b (pre-parity)"), ("c", None, "c")):
        folder = tmp_path / name
        folder.mkdir()
        if model is not None:
            (folder / "manifest.json").write_text(json.dumps({"model": model}))
        assert training_curves.label(folder, name) == want
