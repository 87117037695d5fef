"""Small helpers shared by the experiment and benchmark scripts: CLI, JSON/PNG output, tables.

No library logic lives here. Typical use::

    parser = make_parser("lyapunov", __doc__)
    parser.add_argument("--T", type=int, default=16, help="...")
    args = parse(parser)            # applies --float64
    ...
    announce([save_json(result, args.out / "lyapunov.json"), save_figure(fig, args.out / "lyapunov.png")])
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def make_parser(name: str, description: str | None = None, *, out_root: str = "outputs",
                float64: bool = False) -> argparse.ArgumentParser:
    """Argument parser with the common flags ``--out``, ``--seed``, ``--float64`` (and ``--float32``).

    Args:
      name: experiment name; the default output folder is ``<out_root>/<name>``.
      description: help text (usually the module docstring).
      out_root: parent of the default output folder.
      float64: default precision of this script (``--float64`` / ``--float32`` override it).

    Returns:
      An ``argparse.ArgumentParser`` to which the script adds its own flags.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(out_root) / name,
                   help=f"output folder for JSON and PNG files (default: {out_root}/{name})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    default = "float64" if float64 else "float32"
    p.add_argument("--float64", action="store_true", default=float64, help=f"64-bit JAX arrays (default: {default})")
    p.add_argument("--float32", dest="float64", action="store_false", help=f"32-bit JAX arrays (default: {default})")
    return p


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses ``argv`` and switches JAX to float64 when ``--float64`` is given."""
    args = parser.parse_args(argv)
    if getattr(args, "float64", False):
        import jax

        jax.config.update("jax_enable_x64", True)
    return args


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # NumPy / JAX arrays and scalars
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def save_json(obj, path) -> Path:
    """Writes ``obj`` (dicts, lists, arrays, scalars) as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    return path


def save_figure(fig, path, dpi: int = 130) -> Path:
    """Saves a Matplotlib figure (Agg backend) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def format_table(rows: Iterable[Sequence], headers: Sequence[str]) -> str:
    """Fixed-width text table; floats get 4 significant digits."""
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in cells])


def print_table(rows: Iterable[Sequence], headers: Sequence[str]) -> None:
    """Prints ``format_table(rows, headers)``."""
    print(format_table(rows, headers))


def announce(paths: Iterable) -> None:
    """Prints where the outputs went."""
    for p in paths:
        print(f"wrote {Path(p).resolve()}")
