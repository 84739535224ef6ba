"""Deleting ``_backends/cupy/experimental`` leaves a working package: the shipping CuPy paths ("fused", "graph" and
their gradients) and their kernel source need no experimental file; and deleting it together with this folder
(``tests/cupy_backend/experimental``) leaves a passing test suite. Checked on a copy of the package and of the tests
without those folders, in subprocesses, with the CuPy paths on the kernel emulator
(``tests/cupy_backend/fake_cupy.py``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import arrayrnn
from tests.cupy_backend import cuda_emulator

ROOT = pathlib.Path(__file__).resolve().parents[3]

#: the shipping CuPy test files the copy runs (nvcc's ``slow`` tests left out: minutes, and the kernel source they
#: compile is the one ``test_each_part_compiles_on_its_own`` checks); the GPU-only ones skip here, but must import
SHIPPING_TESTS = [
    "tests/cupy_backend/test_cupy_emulated.py",
    "tests/cupy_backend/test_cupy_emulated_grad.py",
    "tests/cupy_backend/test_cuda_emulator_grid.py",
    "tests/cupy_backend/test_cupy_sources.py",
    "tests/cupy_backend/test_cupy_fast.py",
    "tests/cupy_backend/test_cupy_grad.py",
]

# Runs in the copy: NumPy, then per cell one small problem through the fused and graph forward and gradient paths,
# each compared with the generic core (float64, lengths with a zero, reverse).
_SCRIPT = r"""
import importlib.util
import sys

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import sources
from arrayrnn._core import backward as core
from arrayrnn._core.sequence import GENERIC
from arrayrnn.backend import map_arrays
from tests.cupy_backend import fake_cupy
from tests.support import random_params

copy = sys.argv[1]
assert ar.__file__.startswith(copy), ar.__file__
assert importlib.util.find_spec("arrayrnn._backends.cupy.experimental") is None
assert sources.parts() == ("forward", "grad"), sources.parts()
assert cupy_dispatch.paths() == ("fused", "graph"), cupy_dispatch.paths()
for dtype in ("float16", "float32", "float64"):
    assert sources.source(dtype)  # every kernel file it reads is in the copy

params = ar.init_lstm(3, 5, seed=0, dtype="float64")
x = np.random.default_rng(0).standard_normal((4, 2, 3))
y, _ = ar.lstm(x, params)
y_ref, _ = ar.lstm(x, params, impl="generic")
np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)

OPTIONS = {
    "rnn": {"nonlinearity": "tanh"},
    "lstm": {"coupled": False, "clip": None},
    "gru": {"linear_before_reset": True},
}
fake = fake_cupy.asfake


def close(got, want, what):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-11, atol=1e-11, err_msg=what)


for kind, options in OPTIONS.items():
    rng = np.random.default_rng(len(kind))
    params = random_params(kind, 3, 6, seed=len(kind))
    x = rng.standard_normal((4, 3, 3))
    state = tuple(rng.standard_normal((3, 6)) for _ in range(2 if kind == "lstm" else 1))
    lengths = np.array([4, 0, 2])
    dy = rng.standard_normal((4, 3, 6))
    d_final = tuple(rng.standard_normal((3, 6)) for _ in state)
    args = (xp_numpy, x, params, state, lengths, True)
    y_ref, final_ref = GENERIC[kind](*args, **options)
    _, _, tape = core.forward(xp_numpy, kind, x, params, state, lengths, True, options)
    dx_ref, d_params_ref, d_state_ref = core.backward(xp_numpy, tape, dy, d_final)
    for name in ("fused", "graph"):
        what = f"{kind} {name}"
        with pytest.MonkeyPatch.context() as monkeypatch, fake_cupy.installed(monkeypatch):
            fast = (fake(x), map_arrays(fake, params), tuple(fake(s) for s in state), fake(lengths), True)
            y, final = cupy_dispatch.sequence(kind, None, *fast, options, impl=name)
            close(y, y_ref, what)
            for got, want in zip(final, final_ref, strict=True):
                close(got, want, what)
            y, final, backward = cupy_dispatch.sequence_vjp(kind, None, *fast, options, impl=name)
            close(y, y_ref, what)
            dx, d_params, d_state = backward(fake(dy), tuple(fake(d) for d in d_final))
            close(dx, dx_ref, what)
            for got, want in zip(d_state, d_state_ref, strict=True):
                close(got, want, what)
            for field, want in vars(d_params_ref).items():
                if want is None:
                    assert getattr(d_params, field) is None, (what, field)
                else:
                    close(getattr(d_params, field), want, f"{what} d_params.{field}")
print("ok")
"""


pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")


@pytest.fixture(scope="module")
def without_experimental(tmp_path_factory):
    """``(tree, env)``: ``tree/site/arrayrnn`` (the package) and ``tree/tests`` with ``pyproject.toml`` (the tests),
    both without their experimental folders, and the environment that imports them and nothing of this checkout."""
    tree = tmp_path_factory.mktemp("without_experimental")
    package = pathlib.Path(arrayrnn.__file__).resolve().parent
    copy = tree / "site"
    shutil.copytree(package, copy / "arrayrnn", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(copy / "arrayrnn" / "_backends" / "cupy" / "experimental")
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(tree / "tests" / "cupy_backend" / "experimental")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")  # the pytest settings and markers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(tree)])}
    code = "import arrayrnn, tests; print(arrayrnn.__file__); print(tests.__file__)"
    found = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(tree)) for line in found.stdout.split()), found.stdout
    return tree, env


def test_shipping_paths_run_without_the_experimental_folder(without_experimental):
    tree, env = without_experimental
    copy = tree / "site"
    script = tree / "run.py"
    script.write_text(_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(copy)], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert result.stdout.strip().endswith("ok"), result.stdout


def test_shipping_tests_pass_without_the_experimental_folders(without_experimental):
    """The shipping CuPy test files, run on the copy: they import nothing experimental, and what they check of the
    shipping paths holds without it."""
    tree, env = without_experimental
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *SHIPPING_TESTS]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
