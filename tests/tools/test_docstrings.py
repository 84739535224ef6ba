"""The public API's docstrings: numpydoc sections where they belong, and examples that run (doctest, on NumPy)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import re

import pytest

import arrayrnn
import arrayrnn.backend
from arrayrnn import optim

#: modules whose docstring examples run here (``python3 -m pytest -q`` runs them; CI too)
DOCTEST_MODULES = (
    "arrayrnn.cells",
    "arrayrnn.sequence",
    "arrayrnn.models",
    "arrayrnn.params",
    "arrayrnn.grad",
    "arrayrnn.io",
    "arrayrnn.backend",
    "arrayrnn.convert",
    "arrayrnn.optim",
    "arrayrnn.tutorial",
)
#: optional packages an example may import; without them that example is skipped
OPTIONAL = ("onnx", "torch", "cupy", "dask", "jax")
#: the public methods of the models and optimizers, besides the callables in ``arrayrnn.__all__``
MODEL_METHODS = ("__call__", "apply", "state_dict", "from_state_dict", "from_params", "to")
OPTIMIZER_METHODS = ("init", "update")


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    tests = []
    for name in DOCTEST_MODULES:
        module = importlib.import_module(name)
        tests += [test for test in finder.find(module, name) if test.examples]
    return sorted(tests, key=lambda test: test.name)


DOCTESTS = _doctests()


def _missing_optional(test: doctest.DocTest) -> str | None:
    for example in test.examples:
        if "doctest: +SKIP" in example.source:
            continue
        match = re.match(r"\s*(?:import|from)\s+(\w+)", example.source)
        if match and match.group(1) in OPTIONAL and importlib.util.find_spec(match.group(1)) is None:
            return match.group(1)
    return None


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples_run(test, monkeypatch):
    missing = _missing_optional(test)
    if missing is not None:
        pytest.skip(f"{test.name} needs {missing}, which is not installed")
    # on NumPy, whatever the environment selects; set_backend in an example must not leak into other tests
    monkeypatch.delenv("ARRAYRNN_BACKEND", raising=False)
    monkeypatch.setattr(arrayrnn.backend, "_global_backend", None)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    test.globs = dict(test.globs)  # each run starts from the module's namespace
    with arrayrnn.use_backend("numpy"):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_every_doctest_module_has_examples():
    without = [name for name in DOCTEST_MODULES if not any(test.name.startswith(name + ".") for test in DOCTESTS)]
    assert without == []


# ----------------------------------------------------------------------------------------------
# numpydoc sections


def _public() -> list[tuple[str, object, bool]]:
    """``(qualified name, object, is_class)`` for every public callable and method that needs full docs."""
    items: list[tuple[str, object, bool]] = []
    for name in arrayrnn.__all__:
        obj = getattr(arrayrnn, name)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        items.append((f"arrayrnn.{name}", obj, inspect.isclass(obj)))
    for name in arrayrnn.convert.__all__:
        items.append((f"arrayrnn.convert.{name}", getattr(arrayrnn.convert, name), False))
    items.append(("arrayrnn.optim.global_norm", optim.global_norm, False))
    for cls in (arrayrnn.RNN, arrayrnn.LSTM, arrayrnn.GRU):
        for method in MODEL_METHODS:
            items.append((f"arrayrnn.{cls.__name__}.{method}", getattr(cls, method), False))
    for cls in (optim.SGD, optim.Adam):
        items.append((f"arrayrnn.optim.{cls.__name__}", cls, True))
        for method in OPTIMIZER_METHODS:
            items.append((f"arrayrnn.optim.{cls.__name__}.{method}", getattr(cls, method), False))
    for name in ("step_forward", "forward", "lstm_step_forward"):
        items.append((f"arrayrnn.tutorial.{name}", getattr(importlib.import_module("arrayrnn.tutorial"), name), False))
    return items


PUBLIC = _public()


def _has_parameters(obj: object) -> bool:
    """Whether the callable takes arguments besides ``self`` / ``cls``."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return True
    return any(name not in ("self", "cls") for name in signature.parameters)


def _section(doc: str, title: str) -> bool:
    return re.search(rf"^\s*{title}\n\s*-{{{len(title)}}}\s*$", doc, flags=re.M) is not None


def required_sections(obj: object, is_class: bool) -> list[str]:
    if is_class:
        return ["Parameters", "Examples"]
    return (["Parameters"] if _has_parameters(obj) else []) + ["Returns", "Examples"]


def missing_sections(obj: object, is_class: bool) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    return [title for title in required_sections(obj, is_class) if not _section(doc, title)]


@pytest.mark.parametrize("name, obj, is_class", PUBLIC, ids=[name for name, _, _ in PUBLIC])
def test_public_docstring_has_numpydoc_sections(name, obj, is_class):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{name}: the docstring must open with a one-line summary"
    assert missing_sections(obj, is_class) == [], f"{name} lacks numpydoc section(s) {missing_sections(obj, is_class)}"


def test_the_section_check_fails_without_a_section():
    def documented(x):
        """Summary.

        Parameters
        ----------
        x : array

        Returns
        -------
        array

        Examples
        --------
        >>> documented(1)
        1
        """
        return x

    def undocumented(x):
        """Summary.

        Parameters
        ----------
        x : array
        """
        return x

    assert missing_sections(documented, False) == []
    assert missing_sections(undocumented, False) == ["Returns", "Examples"]


def test_public_names_are_covered():
    names = {name for name, _, _ in PUBLIC}
    for name in arrayrnn.__all__:
        obj = getattr(arrayrnn, name)
        if callable(obj) and not inspect.ismodule(obj):
            assert f"arrayrnn.{name}" in names
