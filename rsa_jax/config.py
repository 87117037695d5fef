"""Dataclass configs <-> JSON and command lines: the plumbing shared by the trainer, the tasks and the experiments.

    rec = {"config_class": class_path(cfg), "config": config_to_dict(cfg)}     # what config.json holds
    cfg = config_from_dict(import_path(rec["config_class"]), rec["config"])    # and back

    parser = add_dataclass_args(argparse.ArgumentParser(), TrainConfig)        # --lr, --model-d, ...
    cfg = dataclass_from_args(parser.parse_args(), TrainConfig, base)          # base + the flags given

:func:`class_path` never records ``__main__``: a class defined in a module run as a script
(``python -m pkg.mod``) is recorded under that module's real name, so a run directory loads back
in any other process; :func:`import_path` maps the ``__main__:Name`` of older run directories to
the class of that name in the project's config modules (:data:`MAIN_FALLBACK_MODULES`).

This module imports nothing of the project (it is the bottom of the import graph).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
import types
import typing
import warnings
from typing import Sequence

#: where ``import_path("__main__:Name")`` looks for ``Name`` when ``__main__`` does not have it
#: (run directories written by ``python -m rsa_jax.train`` before the fix recorded ``__main__:TrainConfig``)
MAIN_FALLBACK_MODULES = ("rsa_jax.train", "rsa_jax.models.sudoku", "rsa_jax.models.common", "rsa_jax.tasks.vision",
                         "rsa_jax.models.vision", "rsa_jax.tasks.sudoku")


def field(default, help: str, **kw):
    """A dataclass field with CLI help text (``default`` a value, or a factory for lists/dicts/sets)."""
    if isinstance(default, (list, dict, set)) or callable(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


_f = field


# ------------------------------------------------------------------------------ config <-> json
def _main_module_name() -> str | None:
    """The importable name of the module running as ``__main__`` (``python -m pkg.mod`` -> ``pkg.mod``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return name if name and name != "__main__" else None


def class_path(obj_or_cls) -> str:
    """``"module:QualName"`` of a class (or of an instance's class), importable by :func:`import_path`.

    A class of the ``__main__`` module is recorded under the module's real name when it was run
    with ``python -m`` (a console script imports it under its real name anyway); a class of a plain
    script (``python file.py``) falls back to the project module of :data:`MAIN_FALLBACK_MODULES`
    defining a dataclass of that name with the same fields, else stays ``__main__``.
    """
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    module = cls.__module__
    if module == "__main__":
        module = _main_module_name() or _fallback_module(cls.__qualname__, like=cls) or module
    return f"{module}:{cls.__qualname__}"


def _fields(cls):
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else None


def _fallback_module(qualname: str, like=None) -> str | None:
    """First module of :data:`MAIN_FALLBACK_MODULES` defining ``qualname`` (with the fields of ``like``)."""
    for name in MAIN_FALLBACK_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        obj = _lookup(mod, qualname)
        if obj is not None and (like is None or _fields(obj) == _fields(like)):
            return name
    return None


def _lookup(obj, qualname: str):
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def import_path(path: str):
    """The object named by ``"module:QualName"`` (inverse of :func:`class_path`).

    ``__main__:Name`` (written by older versions when the config class lived in the module run as
    a script, e.g. ``python -m rsa_jax.train``) is looked up in the real module now running as
    ``__main__``, then in :data:`MAIN_FALLBACK_MODULES`, then in ``__main__`` itself.
    """
    module, _, name = path.partition(":")
    if module == "__main__":
        main_name = _main_module_name()
        for candidate in ([main_name] if main_name else []) + list(MAIN_FALLBACK_MODULES):
            try:
                obj = _lookup(importlib.import_module(candidate), name)
            except ImportError:
                continue
            if obj is not None:
                return obj
        obj = _lookup(sys.modules.get("__main__"), name)
        if obj is None:
            raise AttributeError(f"{path!r}: no {name!r} in __main__ or in {', '.join(MAIN_FALLBACK_MODULES)}")
        return obj
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


_class_path, _import_path = class_path, import_path


def config_to_dict(cfg) -> dict:
    """A (nested) dataclass as a JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls, d: dict):
    """Inverse of :func:`config_to_dict`; unknown keys are ignored with a warning.

    A key missing from ``d`` takes the class's default, except the fields of the class's
    ``WHEN_ABSENT`` table (``{field: value}``, fields added after records were written): a record
    written before such a field existed is read with the value that reproduces what it was trained with.
    """
    hints = typing.get_type_hints(cls)
    kw = {k: v for k, v in getattr(cls, "WHEN_ABSENT", {}).items() if k not in d}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k, v in d.items():
        if k not in names:
            warnings.warn(f"{cls.__name__}: ignoring unknown config key {k!r}")
            continue
        tp = _base_type(hints[k])
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            v = config_from_dict(tp, v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


# ------------------------------------------------------------------------------------- CLI
def _base_type(tp):
    """``Optional[X]`` / ``X | None`` -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _doc_help(cls) -> dict:
    """``name: text`` entries of the Google-style ``Attributes:`` docstring sections of ``cls`` and its
    bases (a subclass's entry wins)."""
    out = {}
    for base in reversed(cls.__mro__):
        out.update(_attributes_section(base.__doc__ or "") if dataclasses.is_dataclass(base) else {})
    return out


def _attributes_section(doc: str) -> dict:
    out, cur = {}, None
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    for line in section.splitlines():
        if not line.strip():
            if out:
                break           # a blank line ends the section
            continue
        m = re.match(r"\s+(\w+):\s*(.*)", line)
        if m and m.group(1).isidentifier() and not line.startswith(" " * 8):
            cur = m.group(1)
            out[cur] = m.group(2)
        elif cur and line.strip():
            out[cur] += " " + line.strip()
    return out


def _converter(tp, optional: bool, null_words: tuple = ("none", "null")):
    def conv(s: str):
        if optional and s.lower() in null_words:
            return None
        if tp is bool:
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")
        return tp(s)
    conv.__name__ = getattr(tp, "__name__", str(tp))
    return conv


def add_dataclass_args(parser: argparse.ArgumentParser, cls, *, prefix: str = "", defaults=None,
                       exclude: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Adds ``--field-name`` for every field of dataclass ``cls`` (nested dataclasses as
    ``--outer-inner``, e.g. ``--model-d``). Optional fields accept ``none`` (fields in the class's
    ``DERIVED`` table take ``auto`` instead, so that ``--model-norm none`` is a value); booleans are
    ``--flag/--no-flag``. Unset flags are absent from the namespace, so
    :func:`dataclass_from_args` keeps the base config's value.

    Args:
      parser: the parser (or an argument group).
      cls: dataclass type.
      prefix: name prefix (used for nesting).
      defaults: instance whose values the help shows (default ``cls()``).
      exclude: dotted field names to skip (e.g. ``("out", "model.kind")``).
    """
    defaults = cls() if defaults is None else defaults
    hints, docs = typing.get_type_hints(cls), _doc_help(cls)
    for f in dataclasses.fields(cls):
        dotted = (prefix + "." if prefix else "") + f.name
        if not f.init or dotted in exclude:
            continue
        tp, default = _base_type(hints[f.name]), getattr(defaults, f.name)
        flag = "--" + dotted.replace(".", "-").replace("_", "-")
        if dataclasses.is_dataclass(tp):
            add_dataclass_args(parser, tp, prefix=dotted, defaults=default, exclude=exclude)
            continue
        help_ = f.metadata.get("help") or docs.get(f.name, "")
        help_ = f"{help_} (default: {default})".replace("%", "%%")
        if tp is bool and not _is_optional(hints[f.name]):
            parser.add_argument(flag, dest=dotted, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        elif typing.get_origin(tp) in (tuple, list):
            inner = [a for a in typing.get_args(tp) if a is not Ellipsis][0]
            parser.add_argument(flag, dest=dotted, nargs="*", type=_converter(inner, False),
                                default=argparse.SUPPRESS, help=help_)
        else:
            derived = f.name in getattr(cls, "DERIVED", {})  # "none" is a value there; "auto" unsets it
            if derived:
                help_ = help_.replace(" (default:", "; 'auto': derived from the other fields (default:", 1)
            parser.add_argument(flag, dest=dotted, type=_converter(tp, _is_optional(hints[f.name]),
                                                                   ("auto",) if derived else ("none", "null")),
                                default=argparse.SUPPRESS, metavar=getattr(tp, "__name__", "X").upper(),
                                help=help_)
    return parser


def dataclass_from_args(args: argparse.Namespace, cls, base=None, *, prefix: str = ""):
    """``base`` (default ``cls()``) with the fields given on the command line replaced (nested too)."""
    base = cls() if base is None else base
    given = vars(args)
    hints = typing.get_type_hints(cls)
    changes = {}
    for f in dataclasses.fields(cls):
        dotted = (prefix + "." if prefix else "") + f.name
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            inner = getattr(base, f.name)
            if any(k.startswith(dotted + ".") for k in given):
                changes[f.name] = dataclass_from_args(args, tp, inner if inner is not None else tp(), prefix=dotted)
        elif dotted in given:
            v = given[dotted]
            changes[f.name] = tuple(v) if isinstance(v, list) else v
    for name, sources in getattr(cls, "DERIVED", {}).items():  # e.g. norm follows kind unless given
        if name not in changes and any(src in changes for src in sources):
            changes[name] = None
    return dataclasses.replace(base, **changes) if changes else base
