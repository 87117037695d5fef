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


def test_docstrings_cite_the_paper_not_spec():
    """The docstrings cite the paper's equations, lemmas and sections, not the project's SPEC.md."""
    hits = {str(p.relative_to(ROOT)): i for p in sorted((ROOT / "rsa_jax").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bSPEC\b(?!_)", line)}
    assert not hits, hits


def test_readme_snippet_prints_the_papers_exponent():
    """The README's "library in one screen" snippet, run as a user would (float32), prints ln sigma_1(J^(T)) / T."""
    import sys
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## The library in one screen.*?```python\n(.*?)```", readme, re.S).group(1)
    assert "lyapunov_spectrum(f, x0, T=16" in block
    check = ("\nfrom rsa_jax.lyapunov import lyapunov_exact\n"
             "print('EXACT', float(lyapunov_exact(f, x0, 16)[0]))\n"
             "print('QR', float(lyapunov_spectrum(f, x0, T=16, k=8, method='qr').exponents[0]))\n")
    r = subprocess.run([sys.executable, "-c", block + check], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    printed = float(re.match(r"\s*(-?[\d.]+)", lines[0]).group(1))
    exact = float(lines[-2].split()[1])
    qr = float(lines[-1].split()[1])
    assert abs(printed - exact) < 1e-3 and "True" in lines[0]
    assert abs(qr - exact) > 0.1          # the old default (classical QR) printed -1.319 here, the definition -1.145


def _github_slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _broken_links(text: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)   # a "# comment" in a code block is no heading
    slugs, seen = set(), {}
    for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        s = _github_slug(h)
        slugs.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return sorted({a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in slugs})


def test_in_page_links_of_the_docs_resolve():
    root = Path(__file__).resolve().parent.parent
    for doc in ("README.md", "RESULTS.md"):
        assert _broken_links((root / doc).read_text()) == [], doc


def test_the_link_check_can_fail():
    text = "## AKOrN + R_Spec, retrained: `m` (issue 32, part 5)\n## A\n## A\n"
    assert _broken_links(text + "[x](#akorn--r_spec-retrained-m-issue-32-part-5) [y](#a-1)") == []
    assert _broken_links(text + "[x](#akorn-r_spec-retrained-m-issue-32-part-5) [y](#a-2)") == [
        "a-2", "akorn-r_spec-retrained-m-issue-32-part-5"]
    assert _broken_links("```bash\n# run it\n```\n[z](#run-it)") == ["run-it"]
