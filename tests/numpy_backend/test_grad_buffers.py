"""The kept tape and scratch buffers of the NumPy gradient kernels (``_backends/numpy/buffers.py``): a later call
reuses them, never while a pullback that reads them is alive, and stale contents never reach a result.

Oracle: the same call's results from fresh memory (the first call, and ``impl="generic"``, the recording core).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends.numpy import buffers, grad_loop
from tests.conftest import need
from tests.support import random_params

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}


@pytest.fixture(autouse=True)
def fused(monkeypatch):
    need("numba")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    buffers.clear()
    yield
    buffers.clear()


def _case(kind, seed):
    params = random_params(kind, 3, 5, seed=seed, dtype="float32")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 4, 3)).astype("float32")
    dy = rng.standard_normal((6, 4, 5)).astype("float32")
    assert grad_loop.fused_kernels(kind, x.dtype, params, {}) is not None
    return params, x, dy


def _poison():
    """Fill every kept buffer with NaN: a kernel that read a stale value would put NaN in a result."""
    with buffers._lock:
        for stack in buffers._free.values():
            for array in stack:
                array.fill(np.nan)


def _run(kind, params, x, dy, lengths):
    (y, final), pullback = ar.vjp(FUNCTIONS[kind], x, params, lengths=lengths)
    dx, dparams = pullback((dy, None))
    return [np.array(a) for a in (y, dx, dparams.weight_ih, dparams.weight_hh, dparams.bias_hh)]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_later_call_reuses_the_buffers_and_gives_the_same_results(kind):
    params, x, dy = _case(kind, seed=5)
    lengths = [6, 0, 3, 5]
    first = _run(kind, params, x, dy, lengths)
    gc.collect()
    kept = buffers.kept_bytes()
    assert kept > 0  # the tape and the scratch are kept once the pullback is gone
    _poison()
    again = _run(kind, params, x, dy, lengths)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)  # bit for bit: the kept buffers' contents never reach a result
    gc.collect()
    assert buffers.kept_bytes() == kept  # the same buffers came back, no more
    (y, _), pullback = ar.vjp(FUNCTIONS[kind], x, params, lengths=lengths, impl="generic")
    dx, dparams = pullback((dy, None))
    np.testing.assert_allclose(first[0], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first[1], dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first[3], dparams.weight_hh, rtol=1e-5, atol=1e-6)


def test_a_live_pullback_keeps_its_tape():
    params, x, dy = _case("lstm", seed=6)
    expected = _run("lstm", params, x, dy, None)
    gc.collect()
    _poison()
    (y, _), pullback = ar.vjp(ar.lstm, x, params)  # takes the kept tape
    for _ in range(3):  # other calls of the same shape while that pullback is alive: their own buffers
        _run("lstm", params, x + 1, dy, None)
        gc.collect()
        _poison()
    dx, dparams = pullback((dy, None))
    np.testing.assert_array_equal(dx, expected[1])
    np.testing.assert_array_equal(dparams.weight_hh, expected[3])
    again = pullback((dy, None))  # and may run again
    np.testing.assert_array_equal(again[0], expected[1])


def test_kept_bytes_stay_under_the_bound(monkeypatch):
    params, x, dy = _case("gru", seed=7)
    monkeypatch.setattr(buffers, "MAX_KEPT_BYTES", 1000)
    _run("gru", params, x, dy, None)
    gc.collect()
    assert 0 < buffers.kept_bytes() <= 1000
    monkeypatch.setattr(buffers, "MAX_KEPT_BYTES", 0)
    buffers.clear()
    _run("gru", params, x, dy, None)
    gc.collect()
    assert buffers.kept_bytes() == 0
