"""``ar.explain`` says which path a call takes, and the call then takes that path (checked by watching it run)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends import numpy as numpy_backend
from tests.support import random_params

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
DRIVERS = {
    "_run": "NumPy loop",
    "_run_compiled": "numba feature-major kernels",
    "_run_rows": "numba batch-major kernels",
}


def _watch_drivers(monkeypatch) -> list[str]:
    """Record which NumPy driver runs (the loop, or the feature-/batch-major numba drivers)."""
    ran: list[str] = []
    for name, label in DRIVERS.items():
        real = getattr(numpy_backend, name)
        monkeypatch.setattr(
            numpy_backend, name, lambda *a, real=real, label=label, **k: ran.append(label) or real(*a, **k)
        )
    return ran


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch", [1, 5, 64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("numba", ["1", "0"])
def test_explain_names_the_numpy_path_that_runs(monkeypatch, kind, batch, dtype, numba):
    monkeypatch.setenv("ARRAYRNN_NUMBA", numba)
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    params = random_params(kind, 3, 4, seed=1, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((5, batch, 3)).astype(dtype)
    text = ar.explain(FUNCTIONS[kind], x, params)
    ran = _watch_drivers(monkeypatch)
    FUNCTIONS[kind](x, params)
    assert len(ran) == 1 and text.startswith(f"numpy: {ran[0]} ("), (text, ran)


def test_explain_reasons(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    x = np.zeros((4, 2, 3), np.float32)
    params = ar.init_lstm(3, 4, seed=0)
    assert ar.explain(ar.lstm, x, params, impl="generic") == "generic: impl='generic' asked for the array-API core"
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    assert ar.explain(ar.lstm, x, params) == "numpy: NumPy loop (ARRAYRNN_NUMBA=0)"
    half = ar.init_gru(3, 4, seed=0, dtype="float16")
    assert ar.explain(ar.gru, x.astype("float16"), half).startswith("generic: float16 is not supported")
    said = ar.explain(ar.vjp, ar.lstm, x, params)
    assert said == "numpy: NumPy gradient loop (B = 2, NumPy ufuncs: ARRAYRNN_NUMBA=0)"
    assert ar.explain(ar.lstm_cell, x[0], (np.zeros((2, 4), np.float32),) * 2, params).startswith("generic: cells")
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    assert ar.explain(ar.lstm, x, params).startswith("generic: impl='generic'")


def test_explain_a_model_layer_by_layer(monkeypatch):
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    model = ar.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = np.zeros((6, 5, 3), np.float32)  # (B, T, I)
    lines = ar.explain(model, x).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "layer 0 (forward)", "layer 0 (reverse)", "layer 1 (forward)", "layer 1 (reverse)"
    ]  # fmt: skip
    assert all(line.endswith("numpy: NumPy loop (ARRAYRNN_NUMBA=0)") for line in lines)
    assert ar.explain(model.apply, model.params, x) == "\n".join(lines)
    assert ar.explain(ar.vjp, model.apply, model.params, x).count("NumPy gradient loop") == 4


def test_explain_checks_the_call_like_the_call(monkeypatch):
    params = ar.init_lstm(3, 4, seed=0)
    with pytest.raises(ValueError, match="x has 5 features"):
        ar.explain(ar.lstm, np.zeros((4, 2, 5), np.float32), params)
    with pytest.raises(ValueError, match="impl must be one of auto, generic, fast for lstm on numpy"):
        ar.explain(ar.lstm, np.zeros((4, 2, 3), np.float32), params, impl="graph")
    with pytest.raises(TypeError, match="explain supports"):
        ar.explain(print, 1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ar.explain(ar.lstm, np.zeros((4, 2, 3), np.float32), params, bogus=1)


def test_every_dispatch_logs_its_choice(caplog, monkeypatch):
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    params = ar.init_rnn(3, 4, seed=0)
    x = np.zeros((4, 2, 3), np.float32)
    with caplog.at_level(logging.DEBUG, logger="arrayrnn"):
        ar.rnn(x, params)
        ar.vjp(ar.rnn, x, params)
    messages = [r.getMessage() for r in caplog.records if r.name == "arrayrnn"]
    assert messages == [
        "forward rnn on numpy: NumPy loop (ARRAYRNN_NUMBA=0)",
        "gradient rnn on numpy: NumPy gradient loop (B = 2, NumPy ufuncs: ARRAYRNN_NUMBA=0)",
    ]


def test_explain_a_dask_call():
    da = pytest.importorskip("dask.array")
    params = ar.init_lstm(3, 4, seed=0)
    x = da.from_array(np.zeros((5, 64, 3), np.float32), chunks=(5, 16, 3))
    text = ar.explain(ar.lstm, x, params)
    assert text.startswith("dask: one task per batch block; the first block (B = 16) runs numpy: ")
