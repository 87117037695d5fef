"""rsa_jax.config: class paths that load in any process (never ``__main__``), JSON round trips."""

import dataclasses
import sys
import types

import pytest

from rsa_jax.config import class_path, config_from_dict, config_to_dict, field, import_path
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.train import TrainConfig


def _fake_main(monkeypatch, spec_name):
    main = types.ModuleType("__main__")
    main.__spec__ = None if spec_name is None else types.SimpleNamespace(name=spec_name)
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def _main_class(name, like=None):
    """A dataclass defined "in __main__" (as when its module runs as a script)."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(like)] if like else [("x", int, field(0, "x"))]
    cls = dataclasses.make_dataclass(name, fields)
    cls.__module__ = "__main__"
    return cls


def test_class_path_of_library_classes():
    assert class_path(TrainConfig) == "rsa_jax.train_config:TrainConfig"
    assert import_path("rsa_jax.train_config:TrainConfig") is TrainConfig
    assert class_path(ModelConfig(kind="itrsa", d=8, heads=2)) == "rsa_jax.models.sudoku:ModelConfig"
    assert import_path("rsa_jax.train:TrainConfig") is TrainConfig


def test_python_dash_m_records_the_real_module(monkeypatch):
    """``python -m pkg.mod``: ``__main__.__spec__.name`` is the importable name."""
    _fake_main(monkeypatch, "rsa_jax.train")
    assert class_path(_main_class("TrainConfig", TrainConfig)) == "rsa_jax.train:TrainConfig"
    _fake_main(monkeypatch, "my_pkg.my_script")
    assert class_path(_main_class("Whatever")) == "my_pkg.my_script:Whatever"


def test_plain_script_falls_back_to_a_matching_project_class(monkeypatch):
    _fake_main(monkeypatch, None)
    assert class_path(_main_class("TrainConfig", TrainConfig)) == "rsa_jax.train:TrainConfig"
    assert class_path(_main_class("TrainConfig")) == "__main__:TrainConfig"   # other fields: a user's own class


def test_old_main_paths_resolve(monkeypatch):
    _fake_main(monkeypatch, None)
    assert import_path("__main__:TrainConfig") is TrainConfig
    assert import_path("__main__:ModelConfig") is ModelConfig
    with pytest.raises(AttributeError, match="NoSuchConfig"):
        import_path("__main__:NoSuchConfig")
    main = _fake_main(monkeypatch, None)
    main.Local = local = _main_class("Local")
    assert import_path("__main__:Local") is local                    # a user's class in the running script


def test_json_round_trip_with_nested_and_optional_fields():
    cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=32, heads=4, norm_n=8), lr=None, max_steps=7)
    d = config_to_dict(cfg)
    assert d["model"]["kind"] == "itrsa" and d["lr"] is None
    assert config_from_dict(TrainConfig, d) == cfg
    with pytest.warns(UserWarning, match="unknown config key"):
        assert config_from_dict(TrainConfig, {**d, "retired_option": 1}) == cfg
