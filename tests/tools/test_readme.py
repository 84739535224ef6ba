"""The README's Python examples run as written (those that need a GPU run only where CuPy is usable)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from arrayrnn.backend import BACKEND_NAMES, backend_status

README = Path(__file__).resolve().parents[2] / "README.md"
# every ```python block is a program, except the tutorial's signature summary
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    if "= step_forward(x, h, s, w, b)" not in block
]


def _needs(code: str) -> list[str]:
    needs = []
    if re.search(r"^import cupy|\bcupy as\b", code, flags=re.M):
        needs.append("cupy")
    if re.search(r"^import torch", code, flags=re.M):
        needs.append("torch")
    if "dask" in code:
        needs.append("dask")
    if "dask_cuda" in code:
        needs.append("dask_cuda")
    return needs


def _missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) is not None else "not installed"


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    for name in _needs(code):
        problem = backend_status(name) if name in BACKEND_NAMES else _missing_module(name)
        if problem is not None:
            pytest.skip(f"README example {index} needs {name}: {problem}")
    monkeypatch.chdir(tmp_path)
    # examples that start worker processes guard with `if __name__ == "__main__":`; run their body too
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__main__"})
