"""The CuPy backend's process state: every cache (compiled kernels, placeholders, plans, cuBLAS handles) by name.

Modules take their caches from :data:`RUNTIME` (:func:`cache`, :func:`lock`); :func:`reset` empties them all in
place (a test installing a stand-in CuPy, a benchmark dropping the plans of earlier problems).
"""

from __future__ import annotations

import collections
import threading
from typing import Any


class Runtime:
    """Named caches (ordered dicts, made on first use) and one lock per cache."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._caches: dict[str, collections.OrderedDict[Any, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}

    def _entry(self, name: str) -> tuple[collections.OrderedDict[Any, Any], threading.Lock]:
        with self._guard:
            if name not in self._caches:
                self._caches[name] = collections.OrderedDict()
                self._locks[name] = threading.Lock()
            return self._caches[name], self._locks[name]

    def cache(self, name: str) -> collections.OrderedDict[Any, Any]:
        """The cache ``name`` (the same dict for the life of the process: :meth:`reset` empties it in place)."""
        return self._entry(name)[0]

    def lock(self, name: str) -> threading.Lock:
        """The lock that guards cache ``name`` (held while an entry is made, and by :meth:`reset`)."""
        return self._entry(name)[1]

    def reset(self, prefix: str = "") -> None:
        """Empty every cache whose name starts with ``prefix`` (all of them by default)."""
        with self._guard:
            chosen = [(self._caches[n], self._locks[n]) for n in self._caches if n.startswith(prefix)]
        for found, guard in chosen:
            with guard:
                found.clear()


#: the process's caches; names: "kernels", "kernel_names", "placeholders", "resident_blocks", "plans.<path>", and
#: the experimental paths' own ("persistent.allowed_shared", "cluster.shared_limits", "cluster.non_portable",
#: "blas.handles")
RUNTIME = Runtime()
#: the prefix of every plan cache's name (``reset(PLANS)`` drops the plans and keeps the compiled kernels)
PLANS = "plans."


def cache(name: str) -> collections.OrderedDict[Any, Any]:
    """``RUNTIME.cache(name)``."""
    return RUNTIME.cache(name)


def lock(name: str) -> threading.Lock:
    """``RUNTIME.lock(name)``."""
    return RUNTIME.lock(name)


def reset(prefix: str = "") -> None:
    """``RUNTIME.reset(prefix)``: empty every cache (or those whose name starts with ``prefix``)."""
    RUNTIME.reset(prefix)
