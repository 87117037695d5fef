"""`make docs` builds the API reference (pdoc) from the docstrings, every module included."""

import pkgutil
import re
import subprocess
from pathlib import Path

import rsa_jax

ROOT = Path(__file__).resolve().parents[1]


def test_make_docs_builds_every_module(tmp_path):
    r = subprocess.run(["make", "-s", "docs", f"DOCS={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "rsa_jax.html").is_file()
    for m in pkgutil.walk_packages(rsa_jax.__path__, "rsa_jax."):
        page = tmp_path / (m.name.replace(".", "/") + ".html")
        assert page.is_file(), f"no page for {m.name}"
    lyap = (tmp_path / "rsa_jax" / "lyapunov.html").read_text()
    assert "lyapunov_spectrum" in lyap and "Benettin" in lyap and "B.3" in lyap
    assert re.search(r"method.{0,200}qr", lyap, re.S)


#: modules another change is rewriting as this test is written (issue 33); each must still hold a citation
#: of SPEC, so the list cannot go stale: fix the citation and drop the file from here
PENDING = {"rsa_jax/configs.py", "rsa_jax/models/common.py"}


def test_docstrings_cite_the_paper_not_spec():
    """The docstrings cite the paper's equations, lemmas and sections, not the project's SPEC.md."""
    hits = {str(p.relative_to(ROOT)): i for p in sorted((ROOT / "rsa_jax").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bSPEC\b(?!_)", line)}
    assert set(hits) <= PENDING, {f: i for f, i in hits.items() if f not in PENDING}
    assert set(hits) == PENDING, f"no SPEC citation left in {PENDING - set(hits)}: remove it from PENDING"
