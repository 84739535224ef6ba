"""``ARRAYRNN_ROW_THREADS``: the batch-major numba driver sets NumPy's BLAS to one thread while it splits the batch
over threads, and gives the caller's thread count back exactly, however many callers run at once."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends import numpy as numpy_backend
from tests.support import random_params

threadpoolctl = pytest.importorskip("threadpoolctl")

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
CALLERS = 8


NUMPY_DIRS = tuple(os.path.realpath(os.path.dirname(np.__file__)) + suffix for suffix in ("", ".libs"))


def _blas_threads() -> int:
    """The thread count of NumPy's own BLAS (the one the numba kernels call) as threadpoolctl reads it; other BLAS
    libraries loaded in the process (torch's, scipy's) are not it."""
    counts = [
        info["num_threads"]
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas" and os.path.realpath(info["filepath"]).startswith(NUMPY_DIRS)
    ]
    assert len(counts) == 1, threadpoolctl.threadpool_info()
    return counts[0]


@pytest.fixture
def split_rows(monkeypatch):
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "2")
    if numpy_backend.compiled_kernels() is None:
        pytest.skip("numba not installed (pip install '.[numba]')")
    with threadpoolctl.threadpool_limits(limits=4, user_api="blas"):  # a count that is neither 1 nor the default
        if _blas_threads() < 2:
            pytest.skip("NumPy's BLAS runs one thread here: a count left at 1 could not be told apart")
        yield


def _problem(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    params = random_params(kind, 3, 8, seed=seed, dtype="float32")
    batch = max(numpy_backend.ROWS_MIN_BATCH, 2 * numpy_backend.ROWS_PER_THREAD)  # batch-major, split in two slices
    x = rng.standard_normal((6, batch, 3)).astype("float32")
    lengths = rng.integers(0, 7, size=batch)
    return params, x, lengths


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_concurrent_callers_restore_the_blas_thread_count(split_rows, kind):
    params, x, lengths = _problem(kind, seed=3)
    said = ar.explain(FUNCTIONS[kind], x, params, lengths=lengths)
    assert said == f"numpy: numba batch-major kernels (B = {x.shape[1]} >= {numpy_backend.ROWS_MIN_BATCH})", said
    expected = FUNCTIONS[kind](x, params, lengths=lengths)[0]
    before = _blas_threads()
    start = threading.Barrier(CALLERS)
    results: list = [None] * CALLERS
    errors: list = []

    def caller(k: int) -> None:
        try:
            start.wait()
            for _ in range(20):
                results[k] = FUNCTIONS[kind](x, params, lengths=lengths)[0]
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert _blas_threads() == before
    for got in results:  # concurrent callers share the slice pool: every result is still exact
        np.testing.assert_array_equal(got, expected)


def test_the_count_is_the_callers_even_when_set_between_calls(split_rows):
    params, x, lengths = _problem("lstm", seed=4)
    for limit in (3, 2, 4):
        with threadpoolctl.threadpool_limits(limits=limit, user_api="blas"):
            before = _blas_threads()
            ar.lstm(x, params, lengths=lengths)
            assert _blas_threads() == before
