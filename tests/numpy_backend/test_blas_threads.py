"""The thread limit local to a call: small recurrent products run on one BLAS thread, the caller's count comes back
exactly (also with concurrent callers), large ones keep every thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends.numpy import openblas

pytestmark = pytest.mark.skipif(openblas.set_num_threads is None, reason="NumPy is not on its bundled OpenBLAS")


@pytest.fixture
def two_threads():
    before = openblas.get_num_threads()
    openblas.set_num_threads(2)
    yield
    openblas.set_num_threads(before)


def _threads_seen(monkeypatch, kind, batch, hidden):
    """The BLAS thread count while the call runs its per-step loop (read inside the NumPy loop's step)."""
    seen = []
    original = openblas.single_thread

    def spy(active=True):
        context = original(active)

        class Watch:
            def __enter__(self):
                context.__enter__()
                seen.append(openblas.get_num_threads())

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Watch()

    monkeypatch.setattr(openblas, "single_thread", spy)
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")  # the NumPy loop: no compile time in this test
    init, run = {"lstm": (ar.init_lstm, ar.lstm), "gru": (ar.init_gru, ar.gru)}[kind]
    run(np.ones((4, batch, hidden), np.float32), init(hidden, hidden, seed=0))
    return seen


def test_small_products_run_on_one_thread_and_the_count_comes_back(monkeypatch, two_threads):
    assert _threads_seen(monkeypatch, "lstm", 4, 16)[-1] == 1
    assert openblas.get_num_threads() == 2


def test_large_products_keep_every_thread(monkeypatch, two_threads):
    assert set(_threads_seen(monkeypatch, "gru", 512, 256)) == {2}  # 768 * 256 * 512 multiply-adds a step
    assert openblas.get_num_threads() == 2


def test_the_bounds_follow_the_measurements():
    assert openblas.small_product(256, 64, 64)  # LSTM H = 64, B = 64: 1M multiply-adds
    assert not openblas.small_product(256, 64, 65)
    assert openblas.small_product(512, 128, 1) and not openblas.small_product(1024, 256, 1)  # gemv


def test_concurrent_callers_share_the_limit_and_the_last_restores_it(two_threads):
    entered, release = threading.Barrier(3), threading.Event()

    def caller():
        with openblas.single_thread():
            entered.wait()
            release.wait()

    workers = [threading.Thread(target=caller) for _ in range(2)]
    for worker in workers:
        worker.start()
    entered.wait()
    assert openblas.get_num_threads() == 1
    release.set()
    for worker in workers:
        worker.join()
    assert openblas.get_num_threads() == 2


def test_results_do_not_depend_on_the_limit(monkeypatch):
    params = ar.init_gru(16, 16, seed=1)
    x = np.random.default_rng(2).standard_normal((30, 3, 16)).astype(np.float32)
    limited, _ = ar.gru(x, params)
    monkeypatch.setattr(openblas, "SMALL_PRODUCT", -1)
    monkeypatch.setattr(openblas, "SMALL_GEMV", -1)
    unlimited, _ = ar.gru(x, params)
    np.testing.assert_allclose(limited, unlimited, rtol=1e-6, atol=1e-7)
