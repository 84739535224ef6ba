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
