"""NumPy's own OpenBLAS through ctypes: its file, its functions, and a thread limit local to a call.

The limit is process-wide in OpenBLAS, so callers share it: the first caller in saves the count it finds and sets
one thread, the last one out restores that count exactly (under one lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np


def _library_path() -> Optional[str]:
    """The file of the OpenBLAS that NumPy's wheels bundle (already loaded by NumPy), or ``None``."""
    root = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(root, os.pardir, "numpy.libs", "libscipy_openblas64_*"),
        os.path.join(root, ".dylibs", "libscipy_openblas64_*"),
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                ctypes.CDLL(path)
            except OSError:
                continue
            return path
    return None


PATH = _library_path()


def function(symbol: str, argtypes: list[Any], restype: Any) -> Any:
    """``symbol`` of NumPy's OpenBLAS as a ctypes function; ImportError if NumPy has no such OpenBLAS."""
    if PATH is None:
        raise ImportError("NumPy's bundled OpenBLAS was not found")
    found = getattr(ctypes.CDLL(PATH), symbol, None)
    if found is None:
        raise ImportError(f"NumPy's bundled OpenBLAS has no {symbol}")
    found.argtypes = argtypes
    found.restype = restype
    return found


try:
    get_num_threads = function("scipy_openblas_get_num_threads64_", [], ctypes.c_int)
    set_num_threads = function("scipy_openblas_set_num_threads64_", [ctypes.c_int], None)
except ImportError:  # another BLAS under NumPy: no limit (threadpoolctl-style control is the caller's then)
    get_num_threads = set_num_threads = None

_lock = threading.Lock()
_callers = [0]
_saved = [0]


def enter_single_thread() -> None:
    """One more caller wants NumPy's BLAS on one thread (pair with :func:`leave_single_thread`)."""
    if set_num_threads is None:
        return
    with _lock:
        if _callers[0] == 0:
            _saved[0] = get_num_threads()
            set_num_threads(1)
        _callers[0] += 1


def leave_single_thread() -> None:
    """A caller is done: the last one out gives BLAS back the count the first one found."""
    if set_num_threads is None:
        return
    with _lock:
        _callers[0] -= 1
        if _callers[0] == 0:
            set_num_threads(_saved[0])


@contextlib.contextmanager
def single_thread(active: bool = True) -> Iterator[None]:
    """NumPy's BLAS on one thread inside the block when ``active``; the caller's count restored after."""
    if not active:
        yield
        return
    enter_single_thread()
    try:
        yield
    finally:
        leave_single_thread()


#: a per-step recurrent product of at most this many multiply-adds (``G*H * H_out * B``) runs on one BLAS thread:
#: spreading it over threads gains nothing at that size and loses the cores to any other busy thread pool in
#: the process (torch's spinning OpenMP threads: +3 ms a call); the input GEMM over all steps keeps every thread
SMALL_PRODUCT = 1 << 20
#: for one sequence (B = 1, a matrix-vector product) the bound is lower: OpenBLAS's threaded gemv pays off sooner
#: (LSTM H = 256: 16 % faster on two threads)
SMALL_GEMV = 1 << 17


#: and when the input GEMM of a chunk (``G*H * I * steps * B``) is at most this too, the whole call runs on one
#: BLAS thread: waking the pool for that one GEMM costs the same few milliseconds beside a busy pool
SMALL_INPUT = 1 << 24


def small_product(rows: int, out_size: int, batch: int) -> bool:
    """Whether a per-step product ``(rows, out_size) @ (out_size, batch)`` should run on one BLAS thread."""
    return rows * out_size * batch <= (SMALL_GEMV if batch == 1 else SMALL_PRODUCT)


def small_call(rows: int, out_size: int, features: int, chunk: int, batch: int) -> bool:
    """Whether a whole call (its per-step products and the input GEMM of ``chunk`` steps) should run on one thread."""
    return small_product(rows, out_size, batch) and rows * features * chunk * batch <= SMALL_INPUT


def row_threads() -> int:
    """Threads the batch-major kernels split a batch over: ``ARRAYRNN_ROW_THREADS`` (default 1: no split).

    More than 1 splits the batch into slices of rows that run in parallel, each on single-threaded BLAS. On a quiet
    machine that was slower than one slice on multi-threaded BLAS (the per-step products get smaller), but it
    degrades far less when the cores are oversubscribed (no BLAS thread pool spin-waiting at every step).
    """
    value = os.environ.get("ARRAYRNN_ROW_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"ARRAYRNN_ROW_THREADS must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"ARRAYRNN_ROW_THREADS must be a positive integer, got {value!r}")
    return threads
