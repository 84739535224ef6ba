"""Backend selection for the test suite (written once, run on every backend).

* ``--backend NAME`` (repeatable) or ``ARRAYRNN_TEST_BACKENDS=numpy,torch`` choose the backends;
  the default is every backend the suite knows that imports here.
* ``ARRAYRNN_REQUIRE_BACKENDS=numpy,array_api_strict,torch`` turns a missing backend (or a missing
  oracle library of that name) into a failure instead of a skip, so CI can never silently test less.

Tests take the ``backend`` fixture (a :class:`tests.support.Backend`): inputs and references are built
in NumPy, and only the function under test runs on the backend.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

# Keras 3 (an oracle) picks its backend when first imported: torch is the one the test setup installs
os.environ.setdefault("KERAS_BACKEND", "torch")

from arrayrnn.backend import BACKEND_NAMES, backend_status
from tests.support import Backend

#: backends the cross-backend suite runs on by default (dask has its own tests: it is lazy)
SUITE_BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "cupy")


def _split(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def required_backends() -> list[str]:
    return _split(os.environ.get("ARRAYRNN_REQUIRE_BACKENDS"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", action="append", default=[], help="run the cross-backend tests on this backend (repeatable)"
    )


def _selected(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--backend") or _split(os.environ.get("ARRAYRNN_TEST_BACKENDS"))
    names = list(chosen) if chosen else list(SUITE_BACKENDS)
    for name in required_backends():
        if name in SUITE_BACKENDS and name not in names:
            names.append(name)
    return names


def _requirement_problem(name: str) -> str | None:
    """Why a required backend or oracle library (e.g. onnxruntime) is unusable, or None."""
    if name in BACKEND_NAMES:
        return backend_status(name)
    return None if importlib.util.find_spec(name) is not None else "not installed"


def pytest_configure(config: pytest.Config) -> None:
    missing = [f"{name}: {_requirement_problem(name)}" for name in required_backends() if _requirement_problem(name)]
    if missing:
        raise pytest.UsageError("ARRAYRNN_REQUIRE_BACKENDS names unusable backends:\n  " + "\n  ".join(missing))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        only = metafunc.definition.get_closest_marker("only_backends")
        if only is not None:  # e.g. the CuPy fast-path tests: parametrised over cupy alone
            names = [name for name in names if name in only.args]
        metafunc.parametrize("backend", names, indirect=True, ids=names)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    name = request.param
    reason = backend_status(name)
    if reason is not None:
        if name in required_backends():
            pytest.fail(f"required backend {name} is unavailable: {reason}")
        pytest.skip(f"backend {name} unavailable: {reason}")
    return Backend(name)


def need(module: str):
    """Import an oracle library, or skip (fail when ``ARRAYRNN_REQUIRE_BACKENDS`` names it)."""
    try:
        return __import__(module)
    except ImportError as error:
        if module in required_backends():
            pytest.fail(f"{module} is required (ARRAYRNN_REQUIRE_BACKENDS) but does not import: {error}")
        pytest.skip(f"{module} not installed")
