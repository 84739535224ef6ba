"""The house rules of the package layout, checked on the source (no imports run but the last test's).

Layers: the public modules, ``_dispatch``/``_dask``, ``_core`` (array API only) and ``_backends/<name>``. No import
cycles; ``_core`` imports nothing outside itself; no module reaches a private name of another backend's modules; no
CUDA ``__global__`` in Python; ``import arrayrnn`` imports no GPU library, torch, jax, dask or numba.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "src" / "arrayrnn"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> list[tuple[str, str]]:
    """``(module, imported name or "")`` for every import of an arrayrnn module in ``name`` (function-level too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("arrayrnn")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("arrayrnn"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, "") if submodule in MODULES else (target, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in _imports(name) if target in MODULES} - {name} for name in MODULES}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_core_imports_nothing_above_it():
    for name in MODULES:
        if name.startswith("arrayrnn._core"):
            outside = [t for t, _ in _imports(name) if not t.startswith("arrayrnn._core")]
            assert not outside, f"{name} imports {outside}: the core may import only the core"


def test_no_private_name_of_another_backend():
    for name in MODULES:
        for target, imported in _imports(name):
            if not target.startswith("arrayrnn._backends.") or not imported.startswith("_"):
                continue
            backend = target.split(".")[2]
            assert name.startswith(f"arrayrnn._backends.{backend}"), f"{name} imports {target}.{imported}"


def test_no_cuda_kernels_in_python():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "__global__" in p.read_text()]
    assert not offenders, f"CUDA __global__ functions belong in kernels/*.cu, found in {offenders}"


def test_the_experimental_package_is_imported_by_no_shipping_module_at_import_time():
    for name in MODULES:
        if ".experimental" in name:
            continue
        tree = ast.parse(MODULES[name].read_text())
        for node in tree.body:  # module level only: a path may load an experimental one lazily, by name
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                text = ast.unparse(node)
                assert "experimental" not in text, f"{name}: {text}"


@pytest.mark.parametrize("heavy", ["cupy", "torch", "jax", "dask", "numba", "onnx", "onnxruntime"])
def test_import_arrayrnn_stays_light(heavy):
    code = f"import sys, arrayrnn; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"import arrayrnn imported {heavy}"


def test_module_docstrings_say_what_the_module_is_for_in_five_lines():
    too_long = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        first = tree.body[0] if tree.body else None
        has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
        if not has_doc:
            too_long.append(f"{name}: no module docstring")
        elif first.end_lineno - first.lineno + 1 > 5:
            too_long.append(f"{name}: {first.end_lineno - first.lineno + 1} lines")
    assert not too_long, "module docstrings (at most 5 lines; history goes to benchmarks/NOTES.md): " + ", ".join(
        too_long
    )
