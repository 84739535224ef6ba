"""Which implementation runs a sequence function: a registered fast path or the generic core.

A fast path is registered for a (cell kind, backend name) pair by naming the module that defines
it, so nothing is imported until a call on that backend needs it. Every fast path has the same
signature as the generic functions in ``_core/sequence.py`` and must agree with them to float
tolerance. ``impl="generic"`` (keyword) or ``ARRAYRNN_IMPL=generic`` turns fast paths off, so a
difference can always be bisected.

A backend may also register *named variants* (e.g. CuPy's "fused" and "graph") that ``impl=`` can ask
for directly; its default fast path then chooses among them per call. ``ARRAYRNN_IMPL`` naming a
variant applies where that variant exists and means "auto" elsewhere, so one setting can steer a
whole test run; the ``impl=`` keyword is strict.

Gradients (``ar.vjp`` of a sequence function, and so of a model's layers) have their own, smaller hook:
``register_vjp(kind, backend, ...)`` names a function that runs a recording forward pass and returns a
backward pass (see :func:`register_vjp`); :func:`select_vjp` picks it for every ``impl`` except
``"generic"``, which keeps the generic recording core (``_core/backward.py``, the reference).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, Optional

from ._core.sequence import GENERIC

#: (kind, backend) -> (module path, function name) of the fast path
_REGISTRY: dict[tuple[str, str], tuple[str, str]] = {}
#: (kind, backend, variant) -> (module path, function name) of a named variant
_VARIANTS: dict[tuple[str, str, str], tuple[str, str]] = {}

#: (kind, backend, variant or None for the default) -> (module path, function name) of a gradient fast path
_VJPS: dict[tuple[str, str, Optional[str]], tuple[str, str]] = {}

IMPLS = ("auto", "generic", "fast")


def register(kind: str, backend: str, module: str, function: str, *, variant: Optional[str] = None) -> None:
    """Declare that ``module.function`` runs ``kind`` sequences on ``backend``.

    With ``variant``, register a named alternative that ``impl=variant`` selects instead of the default.
    """
    if variant is None:
        _REGISTRY[(kind, backend)] = (module, function)
    else:
        if variant in IMPLS:
            raise ValueError(f"variant name {variant!r} is reserved")
        _VARIANTS[(kind, backend, variant)] = (module, function)


def variants(kind: str, backend: str) -> tuple[str, ...]:
    """The named variants registered for ``kind`` on ``backend``."""
    return tuple(sorted(v for (k, b, v) in _VARIANTS if k == kind and b == backend))


def _load(entry: tuple[str, str]) -> Callable[..., Any]:
    module, function = entry
    return getattr(importlib.import_module(module, package=__package__), function)


def select(kind: str, backend: str, impl: Optional[str] = None) -> Callable[..., Any]:
    """The function that runs ``kind`` on ``backend`` for the requested ``impl``.

    ``impl``: ``None`` (use ``$ARRAYRNN_IMPL``, default ``"auto"``), ``"auto"`` (the fast path
    when one is registered, else generic), ``"generic"``, ``"fast"`` (error if none exists), or the
    name of a variant registered for this kind and backend.
    """
    chosen = impl if impl is not None else os.environ.get("ARRAYRNN_IMPL", "auto")
    here = variants(kind, backend)
    if chosen not in IMPLS and chosen not in here:
        known_elsewhere = any(v == chosen for (_, _, v) in _VARIANTS)
        if impl is None and known_elsewhere:
            chosen = "auto"  # the environment names another backend's variant
        else:
            source = "impl" if impl is not None else "ARRAYRNN_IMPL"
            raise ValueError(
                f"{source} must be one of {', '.join(IMPLS + here)} for {kind} on {backend}, got {chosen!r}"
            )
    if chosen in here:
        return _load(_VARIANTS[(kind, backend, chosen)])
    if chosen == "generic":
        return GENERIC[kind]
    entry = _REGISTRY.get((kind, backend))
    if entry is None:
        if chosen == "fast":
            raise ValueError(f"impl='fast' was asked for, but no fast path for {kind} exists on {backend}")
        return GENERIC[kind]
    return _load(entry)


def register_vjp(kind: str, backend: str, module: str, function: str, *, variant: Optional[str] = None) -> None:
    """Declare that ``module.function`` runs ``ar.vjp`` of ``kind`` sequences on ``backend``.

    With ``variant``, the gradient path that ``impl=variant`` selects (a forward variant's name: the same
    ``impl`` then steers both); without, the default for every other ``impl`` but ``"generic"``.

    The function takes ``(xp, kind, x, params, state, lengths, reverse, options)`` (validated and
    normalised as for every sequence implementation; ``options`` the cell options) and returns
    ``(y, final_state, backward)`` with ``backward(dy or None, d_final) -> (dx, dparams, d_state)`` as in
    ``_core/backward.backward``, or ``None`` to decline the call (the generic core then runs).
    """
    if variant in IMPLS:
        raise ValueError(f"variant name {variant!r} is reserved")
    _VJPS[(kind, backend, variant)] = (module, function)


def select_vjp(kind: str, backend: str, impl: Optional[str] = None) -> Optional[Callable[..., Any]]:
    """The gradient fast path for ``kind`` on ``backend``, or ``None`` for the generic recording core.

    Call :func:`select` first (it checks ``impl``). ``"generic"`` (keyword or ``$ARRAYRNN_IMPL``) gives
    ``None``; a variant name gives that gradient variant where one is registered; every other choice
    (``"auto"``, ``"fast"``, a variant without a gradient counterpart) gives the default gradient path,
    or ``None`` where the backend has none.
    """
    chosen = impl if impl is not None else os.environ.get("ARRAYRNN_IMPL", "auto")
    if chosen == "generic":
        return None
    entry = _VJPS.get((kind, backend, chosen)) or _VJPS.get((kind, backend, None))
    return None if entry is None else _load(entry)


# CuPy: "auto"/"fast" choose per call (cupy_dispatch); "fused", "fused_graph", "graph", "tiled", "persistent" and
# "cluster" name the paths.
for _kind in ("rnn", "lstm", "gru"):
    register(_kind, "cupy", "._backends.cupy", f"{_kind}_sequence")
    register(_kind, "cupy", "._backends.cupy.fused", f"{_kind}_sequence", variant="fused")
    register(_kind, "cupy", "._backends.cupy.experimental.fused_graph", f"{_kind}_sequence", variant="fused_graph")
    register(_kind, "cupy", "._backends.cupy.graph", f"{_kind}_sequence", variant="graph")
    register(_kind, "cupy", "._backends.cupy.experimental.tiled", f"{_kind}_sequence", variant="tiled")
    register(_kind, "cupy", "._backends.cupy.experimental.persistent", f"{_kind}_sequence", variant="persistent")
    register(_kind, "cupy", "._backends.cupy.experimental.cluster", f"{_kind}_sequence", variant="cluster")
    register_vjp(_kind, "cupy", "._backends.cupy", "sequence_vjp")
    register_vjp(_kind, "cupy", "._backends.cupy.grad_fused", "sequence_vjp", variant="fused")
    register_vjp(_kind, "cupy", "._backends.cupy.experimental.grad_fused_graph", "sequence_vjp", variant="fused_graph")
    register_vjp(_kind, "cupy", "._backends.cupy.grad_graph", "sequence_vjp", variant="graph")
    register_vjp(_kind, "cupy", "._backends.cupy.grad_graph", "sequence_vjp_persistent", variant="persistent")
    register_vjp(_kind, "cupy", "._backends.cupy.experimental.grad_cluster", "sequence_vjp", variant="cluster")


# NumPy: the preallocated, chunked loop (with the optional numba kernels inside it).
for _kind in ("rnn", "lstm", "gru"):
    register(_kind, "numpy", "._backends.numpy", f"{_kind}_sequence")
