"""The README's Python examples run as written (those that need a GPU run only where CuPy is usable).

The helpers here (:func:`python_blocks`, :func:`run_block`) also run the docs pages' examples
(``tests/tools/test_docs_examples.py``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from arrayrnn.backend import BACKEND_NAMES, backend_status

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: the README is the front door; the details live in docs/
README_MAX_BYTES = 15_000


def python_blocks(path: Path) -> list[str]:
    """Every ```python block of a Markdown file: each is a complete program (snippets are ```text)."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def _needs(code: str) -> list[str]:
    needs = []
    if re.search(r"^import cupy|\bcupy as\b", code, flags=re.M):
        needs.append("cupy")
    if re.search(r"^import torch", code, flags=re.M):
        needs.append("torch")
    if re.search(r"^\s*(import onnx|from onnx\b)", code, flags=re.M):
        needs.append("onnx")
    if "dask" in code:
        needs.append("dask")
    if "dask_cuda" in code:
        needs.append("dask_cuda")
    return needs


def _missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) is not None else "not installed"


def run_block(code: str, label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one example in ``tmp_path``, or skip when it needs a backend or library that is not usable here."""
    for name in _needs(code):
        problem = backend_status(name) if name in BACKEND_NAMES else _missing_module(name)
        if problem is not None:
            pytest.skip(f"{label} needs {name}: {problem}")
    monkeypatch.chdir(tmp_path)
    # examples that start worker processes guard with `if __name__ == "__main__":`; run their body too
    exec(compile(code, label, "exec"), {"__name__": "__main__"})


BLOCKS = python_blocks(README)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2  # NumPy and CuPy


def test_readme_is_a_front_door():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details into docs/ (limit {README_MAX_BYTES})"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    run_block(BLOCKS[index], f"README.md example {index}", tmp_path, monkeypatch)
