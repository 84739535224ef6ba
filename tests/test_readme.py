"""The README's Python examples run as written (those that need a GPU run only where CuPy is usable)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arrayrnn.backend import backend_status

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _needs(code: str) -> list[str]:
    needs = []
    if re.search(r"^import cupy|\bcupy as\b", code, flags=re.M):
        needs.append("cupy")
    if re.search(r"^import torch", code, flags=re.M):
        needs.append("torch")
    if "dask" in code:
        needs.append("dask")
    return needs


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    for name in _needs(code):
        if backend_status(name) is not None:
            pytest.skip(f"README example {index} needs {name}: {backend_status(name)}")
    if "from arrayrnn.tutorial import" in code and "= step_forward(x, h, s, w, b)" in code:
        pytest.skip("the tutorial signature summary is not a program")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})
