"""Every ```python block of the Markdown docs pages runs as written, with the README's skip rules."""

from __future__ import annotations

import pytest

from tests.tools.test_readme import ROOT, python_blocks, run_block

DOCS = ROOT / "docs"
#: pages whose ```python blocks are signatures, not programs (not ours to rewrite as ```text)
SIGNATURE_PAGES = {"architecture.md"}

PAGES = sorted(
    path
    for path in DOCS.rglob("*.md")
    if "_build" not in path.parts and "generated" not in path.parts and path.name not in SIGNATURE_PAGES
)
EXAMPLES = [(path, index, code) for path in PAGES for index, code in enumerate(python_blocks(path))]


def test_docs_have_examples():
    pages = {path.relative_to(DOCS).as_posix() for path, _, _ in EXAMPLES}
    for page in ("getting-started.md", "user-guide/interop.md", "user-guide/training.md", "user-guide/dask.md"):
        assert page in pages, f"docs/{page} lost its examples"


@pytest.mark.parametrize(
    "path, index, code",
    EXAMPLES,
    ids=[f"{path.relative_to(DOCS).as_posix()}-{index}" for path, index, _ in EXAMPLES],
)
def test_docs_example_runs(path, index, code, tmp_path, monkeypatch):
    run_block(code, f"docs/{path.relative_to(DOCS).as_posix()} example {index}", tmp_path, monkeypatch)
