"""The linter's configuration (``[tool.ruff]`` in pyproject.toml) holds for the whole code base."""

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATHS = ("rsa_jax", "experiments", "benchmarks", "tests")


def _ruff():
    if find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    return [exe] if exe else None


def test_ruff_is_clean():
    cmd = _ruff()
    if cmd is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    proc = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff check {' '.join(PATHS)}:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
