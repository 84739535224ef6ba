"""The documentation site builds with zero warnings, and its API reference covers the public API."""

from __future__ import annotations

import re
import subprocess
import sys

import arrayrnn
import arrayrnn.convert
import arrayrnn.optim
import arrayrnn.tutorial
from tests.conftest import need
from tests.tools.test_readme import ROOT

DOCS = ROOT / "docs"


def _documented() -> set[str]:
    """Names listed in the autosummary tables of docs/api.rst, as ``module.name``."""
    names, module = set(), None
    for line in (DOCS / "api.rst").read_text(encoding="utf-8").splitlines():
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = match.group(1)
        elif match := re.fullmatch(r"   ([A-Za-z_][A-Za-z0-9_]*)", line):
            names.add(f"{module}.{match.group(1)}")
    return names


def test_api_reference_lists_every_public_name():
    documented = _documented()
    public = {f"arrayrnn.{name}" for name in arrayrnn.__all__ if name not in ("__version__", "convert", "optim")}
    for module in (arrayrnn.convert, arrayrnn.optim, arrayrnn.tutorial):
        public |= {f"{module.__name__}.{name}" for name in module.__all__}
    assert public - documented == set(), "add these to docs/api.rst"


def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "numpydoc", "myst_parser", "pydata_sphinx_theme"):
        need(module)
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"docs build failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert "WARNING" not in result.stderr, result.stderr[-8000:]
    for page in ("index", "getting-started", "api", "benchmarks", "architecture", "security", "user-guide/index"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    generated = tmp_path / "html" / "generated"
    assert (generated / "arrayrnn.lstm.html").is_file()
    # the class template documents methods (a template autosummary cannot find falls back silently to none)
    assert 'id="arrayrnn.LSTM.from_state_dict"' in (generated / "arrayrnn.LSTM.html").read_text(encoding="utf-8")
    assert 'id="arrayrnn.optim.Adam.update"' in (generated / "arrayrnn.optim.Adam.html").read_text(encoding="utf-8")
