"""The backend selector, availability reporting, and explicit transfers."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn.backend import backend_name, backend_status


@pytest.fixture(autouse=True)
def _clean_selection(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_BACKEND", raising=False)
    ar.set_backend(None)
    yield
    ar.set_backend(None)


def test_import_needs_numpy_alone_and_imports_no_gpu_library():
    code = (
        "import sys, arrayrnn\n"
        "heavy = [m for m in ('cupy', 'torch', 'jax', 'dask', 'array_api_strict') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_default_is_numpy_and_selection_order(monkeypatch):
    assert ar.get_backend() == "numpy"
    assert "numpy" in ar.available_backends()
    monkeypatch.setenv("ARRAYRNN_BACKEND", "array_api_strict")
    assert ar.get_backend() == "array_api_strict"
    ar.set_backend("torch")
    assert ar.get_backend() == "torch"  # set_backend beats the environment
    with ar.use_backend("numpy"):
        assert ar.get_backend() == "numpy"  # the innermost context beats set_backend
        with ar.use_backend("array_api_strict"):
            assert ar.get_backend() == "array_api_strict"
        assert ar.get_backend() == "numpy"
    assert ar.get_backend() == "torch"


def test_use_backend_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with ar.use_backend("array_api_strict"):
            inside.set()
            release.wait(5)
            seen["worker"] = ar.get_backend()

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    seen["main"] = ar.get_backend()
    release.set()
    thread.join()
    assert seen == {"main": "numpy", "worker": "array_api_strict"}


def test_creation_follows_the_selected_backend():
    with ar.use_backend("array_api_strict"):
        params = ar.init_gru(3, 4, seed=0)
    assert params.backend == "array_api_strict"
    assert ar.init_gru(3, 4, seed=0, backend="torch").backend == "torch"


def test_same_seed_same_numbers_on_every_backend(backend):
    reference = ar.init_lstm(3, 4, seed=42, proj_size=2, peepholes=True, backend="numpy")
    params = ar.init_lstm(3, 4, seed=42, proj_size=2, peepholes=True, backend=backend.name, device=backend.device)
    assert params.backend == backend.name
    for name, value in reference.arrays().items():
        np.testing.assert_array_equal(backend.numpy(getattr(params, name), "float32"), value)


def test_init_matches_torch_bounds_and_properties():
    params = ar.init_lstm(5, 16, seed=1, proj_size=4)
    assert (params.input_size, params.hidden_size, params.proj_size, params.output_size) == (5, 16, 4, 4)
    assert params.weight_ih.shape == (64, 5) and params.weight_hh.shape == (64, 4) and params.weight_hr.shape == (4, 16)
    assert params.dtype == np.float32 and params.backend == "numpy"
    for value in params.arrays().values():
        assert np.all(np.abs(value) <= 1 / np.sqrt(16))
    assert ar.init_rnn(2, 3, bias=False).bias_ih is None
    gru64 = ar.init_gru(2, 3, dtype="float64", seed=0)
    assert gru64.dtype == np.float64 and gru64.weight_ih.shape == (9, 2)
    with pytest.raises(ValueError, match="proj_size must be an integer in"):
        ar.init_lstm(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        ar.init_rnn(2, 0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        ar.init_rnn(2, 3, dtype="int32")


def test_a_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("ARRAYRNN_BACKEND", "bogus")
    with pytest.raises(ar.BackendUnavailableError, match=r"ARRAYRNN_BACKEND='bogus': unknown backend 'bogus'"):
        ar.get_backend()
    with pytest.raises(ar.BackendUnavailableError, match="ARRAYRNN_BACKEND"):
        ar.init_rnn(2, 3)
    with ar.use_backend("numpy"):  # an explicit choice does not read the variable
        assert ar.get_backend() == "numpy"


def test_unknown_and_unavailable_backends_say_why():
    with pytest.raises(ar.BackendUnavailableError, match="unknown backend 'tensorflow'"):
        ar.set_backend("tensorflow")
    with pytest.raises(ar.BackendUnavailableError, match="unknown backend"):
        ar.init_rnn(2, 3, backend="nope")
    assert isinstance(ar.BackendUnavailableError("x"), RuntimeError)
    assert isinstance(ar.BackendMismatchError("x"), TypeError)
    if backend_status("cupy") is not None:
        # not installed: how to install it; installed without a usable GPU/driver: says so (no install hint)
        why = r"backend 'cupy' is unavailable: (not installed.*\.\[cuda12\]|CuPy is installed but)"
        with pytest.raises(ar.BackendUnavailableError, match=why):
            ar.set_backend("cupy")
        assert ar.available_backends().count("cupy") == 0
        with ar.use_backend("auto"):
            assert ar.get_backend() == "numpy"


def test_to_backend_and_to_numpy_keep_structure(backend):
    params = ar.init_rnn(2, 3, seed=0)
    tree = {"params": params, "states": (np.ones((2, 3), "float32"), [np.zeros(3, "float32")])}
    moved = ar.to_backend(tree, backend.name, device=backend.device)
    assert isinstance(moved["params"], ar.RNNParams) and moved["params"].backend == backend.name
    assert backend_name(moved["states"][1][0]) == backend.name
    back = ar.to_numpy(moved)
    np.testing.assert_array_equal(back["params"].weight_hh, params.weight_hh)
    np.testing.assert_array_equal(back["states"][0], np.ones((2, 3)))
    assert isinstance(back["states"], tuple) and isinstance(back["states"][1], list)
    source = np.zeros(3, "float32")
    moved_array = ar.to_backend(source, backend.name, device=backend.device)
    if backend.name == "numpy":
        assert moved_array is source  # already there: returned as it is, no copy
    else:
        source[0] = 5  # a transfer is a copy: it never aliases the caller's NumPy memory
        assert backend.numpy(moved_array)[0] == 0


def test_to_backend_refuses_non_arrays():
    with pytest.raises(TypeError, match="cannot convert str"):
        ar.to_numpy({"a": "text"})


def test_cli_info_lists_every_backend():
    result = subprocess.run([sys.executable, "-m", "arrayrnn", "info"], capture_output=True, text=True, check=True)
    for name in ("numpy", "cupy", "array_api_strict", "torch", "jax", "dask"):
        assert name in result.stdout
    assert "numpy             usable" in result.stdout
