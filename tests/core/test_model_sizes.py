"""Model constructors check every size, and estimate the parameters' memory, before allocating anything."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn import models


def _refused_fast(call, match, error=ValueError):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as raised:
            call()
    finally:
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 0.5 and peak < 2**20, (elapsed, peak)
    return raised.value


def test_ten_million_layers_are_refused_before_any_allocation():
    # was: 20 s of allocation, then MemoryError
    _refused_fast(lambda: ar.LSTM(4, 8, num_layers=10**7), r"num_layers=10000000 is above the limit of 1024 layers")
    _refused_fast(lambda: ar.GRU(4, 8, 1025), r"num_layers=1025 is above the limit of 1024 layers")
    assert ar.RNN(1, 1, num_layers=models.MAX_LAYERS, seed=0).num_layers == 1024


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: ar.LSTM(4, 10**6),
            r"LSTM\(input_size=4, hidden_size=1000000, num_layers=1\) needs 4000024000000 param",
        ),
        (lambda: ar.GRU(10**5, 10**5, 2), r"GRU\(.*\) needs 120001200000 parameters, an estimated 447 GiB \(4 bytes"),
        (lambda: ar.RNN(10**6, 10**4, bidirectional=True), r"RNN\(.*bidirectional=True\) needs .* above the limit"),
        (lambda: ar.LSTM(10**12, 4, dtype="float16"), r"an estimated .* GiB \(2 bytes each\)"),
        (lambda: ar.LSTM(10, 10**6, proj_size=10, num_layers=200), r"proj_size=10\) needs .* check input_size"),
    ],
)
def test_parameter_memory_above_the_limit_is_refused_naming_the_sizes(build, match):
    error = _refused_fast(build, match)
    assert "arrayrnn.models.MAX_PARAMETER_BYTES" in str(error)


def test_the_limit_can_be_changed_and_counts_the_dtype(monkeypatch):
    monkeypatch.setattr(models, "MAX_PARAMETER_BYTES", 4 * 1000)
    assert ar.RNN(10, 10, seed=0).num_layers == 1  # 220 parameters: 880 bytes
    ar.RNN(10, 10, dtype="float64", seed=0)  # 1760 bytes
    _refused_fast(lambda: ar.RNN(10, 30, dtype="float64"), r"needs 1260 parameters, an estimated .* \(8 bytes each\)")


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ar.LSTM(4, 0), r"hidden_size must be a positive integer, got 0"),
        (lambda: ar.LSTM(4, "8"), r"hidden_size must be a positive integer, got '8'"),
        (lambda: ar.GRU(True, 8), r"input_size must be a positive integer, got True"),
        (lambda: ar.RNN(4, 8, 2.0), r"num_layers must be a positive integer, got 2.0"),
        (lambda: ar.LSTM(4, 8, proj_size=8), r"proj_size must be an integer in \[0, hidden_size=8\), got 8"),
        (lambda: ar.LSTM(4, 8, proj_size=-1), r"proj_size must be an integer in \[0, hidden_size=8\), got -1"),
    ],
)
def test_sizes_of_the_wrong_kind_are_named(build, match):
    _refused_fast(build, match)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (ar.LSTM, dict(num_layers=3, bidirectional=True, proj_size=3, peepholes=True)),
        (ar.LSTM, dict(num_layers=2, bias=False)),
        (ar.GRU, dict(num_layers=2, bidirectional=True)),
        (ar.RNN, dict(num_layers=3, bias=False, bidirectional=True)),
    ],
)
def test_parameter_count_is_what_the_constructor_allocates(cls, kwargs):
    model = cls(5, 7, seed=0, **kwargs)
    allocated = sum(int(np.prod(value.shape)) for value in model.state_dict().values())
    estimate = models.parameter_count(
        cls.kind,
        5,
        7,
        kwargs["num_layers"],
        2 if kwargs.get("bidirectional") else 1,
        bias=kwargs.get("bias", True),
        proj_size=kwargs.get("proj_size", 0),
        peepholes=kwargs.get("peepholes", False),
    )
    assert estimate == allocated
