"""Which implementation runs a sequence function: a registered fast path or the generic core.

A fast path is registered for a (cell kind, backend name) pair by naming the module that defines
it, so nothing is imported until a call on that backend needs it. Every fast path has the same
signature as the generic functions in ``_core/sequence.py`` and must agree with them to float
tolerance. ``impl="generic"`` (keyword) or ``ARRAYRNN_IMPL=generic`` turns fast paths off, so a
difference can always be bisected.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, Optional

from .._core.sequence import GENERIC

#: (kind, backend) -> (module path, function name) of the fast path
_REGISTRY: dict[tuple[str, str], tuple[str, str]] = {}

IMPLS = ("auto", "generic", "fast")


def register(kind: str, backend: str, module: str, function: str) -> None:
    """Declare that ``module.function`` runs ``kind`` sequences on ``backend``."""
    _REGISTRY[(kind, backend)] = (module, function)


def select(kind: str, backend: str, impl: Optional[str] = None) -> Callable[..., Any]:
    """The function that runs ``kind`` on ``backend`` for the requested ``impl``.

    ``impl``: ``None`` (use ``$ARRAYRNN_IMPL``, default ``"auto"``), ``"auto"`` (the fast path
    when one is registered, else generic), ``"generic"``, or ``"fast"`` (error if none exists).
    """
    chosen = impl if impl is not None else os.environ.get("ARRAYRNN_IMPL", "auto")
    if chosen not in IMPLS:
        source = "impl" if impl is not None else "ARRAYRNN_IMPL"
        raise ValueError(f"{source} must be one of {', '.join(IMPLS)}, got {chosen!r}")
    if chosen == "generic":
        return GENERIC[kind]
    entry = _REGISTRY.get((kind, backend))
    if entry is None:
        if chosen == "fast":
            raise ValueError(f"impl='fast' was asked for, but no fast path for {kind} exists on {backend}")
        return GENERIC[kind]
    module, function = entry
    return getattr(importlib.import_module(module, package=__package__), function)


# Built-in fast paths (modules are imported on first use, not here).
for _kind in ("rnn", "lstm", "gru"):
    register(_kind, "numpy", ".numpy_loop", f"{_kind}_sequence")
