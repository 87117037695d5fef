"""The shape of the code base: no import cycle among the project's modules, library modules of a readable size.

Imports are read from the source: every ``import`` statement, at module level or inside a function,
under ``if TYPE_CHECKING:`` too, and every ``importlib.import_module("rsa_jax...")`` (or
``__import__``) call with a literal module name, so a cycle that only closes when some function runs,
or that is hidden from the interpreter, is found too. (Look-ups by a name held in a variable, as
:mod:`rsa_jax.config` does for recorded class paths, are not imports of a particular module.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rsa_jax", "experiments", "benchmarks")
#: "no library module over ~450 lines" (issue 15), with a small margin before the suite fails
MAX_LIBRARY_LINES = 480


def _modules() -> dict:
    """``{dotted name: path}`` of every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _literal_import(node) -> str | None:
    """The module named by ``importlib.import_module("m")``, ``import_module("m")`` or ``__import__("m")``
    with a literal string, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func, arg = node.func, node.args[0]
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _imports(path: Path, name: str, modules: dict) -> set:
    """Project modules imported by the module ``name`` (file ``path``)."""
    is_pkg = path.name == "__init__.py"
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if (literal := _literal_import(child)) is not None:
                found.update(_parents(literal))
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:   # relative import
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)   # `from pkg import submodule`
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != name}


def _parents(dotted: str) -> list:
    """``a.b.c`` -> ``[a.b.c, a.b]``: importing a module imports its packages (``a`` alone is left out, as
    for import statements: every module is below its top-level package)."""
    parts = dotted.split(".")
    return [".".join(parts[:k]) for k in range(len(parts), 1, -1)]


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _find_cycle(graph: dict):
    """One cycle as a list of modules, or None (iterative DFS with colours)."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in sorted(graph):
        if colour[root] != white:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
                path.pop()
            elif colour[child] == grey:
                return path[path.index(child):] + [child]
            elif colour[child] == white:
                colour[child] = grey
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_checker_counts_hidden_imports(tmp_path):
    """Imports under ``TYPE_CHECKING`` and ``import_module`` / ``__import__`` with a literal name count;
    a look-up by a variable does not."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nimport importlib\n"
                   "if TYPE_CHECKING:\n    from rsa_jax.train import Task\n"
                   "def f(name):\n    importlib.import_module('rsa_jax.tasks.sudoku')\n"
                   "    importlib.import_module(name)\n    return __import__('rsa_jax.multiseed')\n")
    modules = _modules()
    assert _imports(src, "rsa_jax.m", modules) == {"rsa_jax.train", "rsa_jax.tasks.sudoku", "rsa_jax.tasks",
                                                   "rsa_jax.multiseed"}


def test_the_checker_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = _graph()
    assert "rsa_jax.train" in graph and "rsa_jax.tasks.sudoku" in graph
    assert "rsa_jax.train" in graph["rsa_jax.tasks.sudoku"]      # the task builds on the trainer ...
    assert "rsa_jax.tasks.sudoku" not in graph["rsa_jax.train"]  # ... never the reverse
    for low in ("rsa_jax.train_state", "rsa_jax.runs", "rsa_jax.train", "rsa_jax.multiseed"):
        assert "rsa_jax.train_config" in graph[low]               # the training types come from below
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_library_modules_stay_readable():
    long = {name: n for name, path in _modules().items() if name.startswith("rsa_jax")
            and (n := len(path.read_text().splitlines())) > MAX_LIBRARY_LINES}
    assert not long, f"split these modules (over {MAX_LIBRARY_LINES} lines): {long}"


@pytest.mark.parametrize("module", ["rsa_jax.train", "rsa_jax.multiseed"])
def test_trainer_does_not_load_a_task(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('rsa_jax.tasks')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
