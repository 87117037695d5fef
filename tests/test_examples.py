"""Every script under examples/ runs (at its --tiny size) and prints what it computed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECT = {
    "own_update_map.py": [r"\|\|J\|\|_2 = ([\d.]+) \(power iteration\) vs \1 \(SVD\)",
                          r"null directions: 3 predicted, 3 singular values",
                          r"max \|spectrum - dense\| = \d\.\de-1[0-9]",
                          r"converged True"],
    "optax_spectral_penalty.py": [r"step    9: task loss [\d.]+, R_Spec [\d.]+", r"sigma_max after 10 steps"],
    "shipped_model.py": [r"sudoku-itrsa-cpu: T_eval = 32", r"leading 2 exponents at T = 4: [+-]",
                         r"t =  16: pseudo-energy [+-][\d.]+, board acc [\d.]+, contribution index"],
    "vmap_spectrum.py": [r"3 starts: spectra \(3, 32\), all converged True, vmap vs loop max diff \d\.\de-0[5-9]",
                         r"scale  10.000: max LE [+-]"],
}


def test_every_example_is_tested_and_short():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(EXPECT)
    for name in scripts:
        assert len((EXAMPLES / name).read_text().splitlines()) <= 100, name


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name):
    r = subprocess.run([sys.executable, str(EXAMPLES / name), "--tiny"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for pattern in EXPECT[name]:
        assert re.search(pattern, r.stdout), f"{pattern!r} not in:\n{r.stdout}"
