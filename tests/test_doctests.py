"""The ``Examples:`` of the entry points' docstrings run (doctest), with and without x64."""

import doctest

import jax
import pytest

from rsa_jax import dynamics, jacobian, lyapunov

ENTRY_POINTS = [lyapunov.lyapunov_spectrum, lyapunov.max_lyapunov, jacobian.spectral_norm, dynamics.rollout]


@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_docstring_examples(fn, x64):
    assert "Examples:" in fn.__doc__ and ">>>" in fn.__doc__
    tests = doctest.DocTestFinder(recurse=False).find(fn, f"{fn.__module__}.{fn.__name__}", globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list = []
    with jax.enable_x64(x64):
        for t in tests:
            runner.run(t, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, "".join(report)
