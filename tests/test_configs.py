"""rsa_jax.configs: named frozen presets, apply_preset; CoreConfig.with_kind for deriving variants."""

import argparse
import dataclasses

import pytest

from rsa_jax import configs
from rsa_jax.models.sudoku import ModelConfig
from rsa_jax.train import TrainConfig


def test_presets_are_frozen_and_typed():
    assert isinstance(configs.SUDOKU_CPU, TrainConfig) and isinstance(configs.SUDOKU_FULL, TrainConfig)
    assert configs.SUDOKU_FULL.model == ModelConfig(kind="akorn", d=512, heads=8, n=4)
    for preset in (configs.SUDOKU_CPU, configs.SUDOKU_EVAL_FULL, configs.OSCILLATOR_CPU, configs.TRAIN_BENCH_SMALL,
                   configs.INFERENCE_BENCH_PAPER):
        with pytest.raises(dataclasses.FrozenInstanceError):
            preset.batch_size = 1
    # the paper-size benchmark step is the paper's training configuration
    paper = configs.TRAIN_BENCH_PAPER
    assert (paper.d, paper.heads, paper.n, paper.t, paper.batch) == (512, 8, 4, 16, 100)
    assert configs.SUDOKU_EVAL_FULL.t_eval[-1] == 2048 and configs.SUDOKU_EVAL_FULL.vote_k == 100


def test_presets_read_like_mappings():
    p = configs.OSCILLATOR_CPU
    assert p["d"] == p.d == 16 and "ns" in p and "t_train" not in p
    assert dict(p.items())["seeds"] == (0,)
    with pytest.raises(KeyError):
        p["t_train"]
    assert p.replace(d=32).d == 32 and p.d == 16


def test_apply_preset_fills_only_unset_values():
    args = argparse.Namespace(d=None, heads=3, full=False)
    out = configs.apply_preset(args, configs.OSCILLATOR_CPU)
    assert out is args and args.d == 16 and args.heads == 3
    assert args.ns == [4, 8, 16] and isinstance(args.ns, list)      # fresh lists, not the preset's tuples
    args.ns.append(32)
    assert configs.OSCILLATOR_CPU.ns == (4, 8, 16)
    assert configs.apply_preset(argparse.Namespace(k=None), {"k": [1, 2]}).k == [1, 2]   # a plain dict too


def test_with_kind_resets_the_derived_norm():
    akorn = ModelConfig(kind="akorn", d=16, heads=2)
    assert akorn.norm == "pi"
    itrsa = akorn.with_kind("itrsa")
    assert type(itrsa) is ModelConfig and itrsa.kind == "itrsa" and itrsa.norm == "rmsnorm"
    assert (itrsa.d, itrsa.heads) == (16, 2)
    assert akorn.with_kind("itrsa", norm="pi").norm == "pi"
    assert dataclasses.replace(akorn, kind="itrsa").norm == "pi"     # replace keeps the resolved value
    assert configs.SUDOKU_CPU.model.with_kind("itrsa").norm == "rmsnorm"
