"""Which code runs a sequence call: the backend package's hook, or the generic core (the reference).

Each ``_backends/<name>`` package exposes ``sequence``, ``sequence_vjp``, ``explain`` and ``paths``; ``None`` or
``"generic"`` declines to the core. ``impl="generic"`` always runs the core; every choice is logged at DEBUG."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Optional

from ._core import backward as core_backward
from ._core import regularize as core_regularize
from ._core.sequence import GENERIC

Array = Any

#: ``impl`` values every backend accepts; a backend's hook adds its path names (``paths()``)
IMPLS = ("auto", "generic", "fast")
#: backend name -> the package whose hook runs its fast paths
BACKEND_PACKAGES = {
    "numpy": "arrayrnn._backends.numpy",
    "cupy": "arrayrnn._backends.cupy",
    "jax": "arrayrnn._backends.jax",
    "torch": "arrayrnn._backends.torch",
}
#: the environment variable that sets the default ``impl``
IMPL_ENV = "ARRAYRNN_IMPL"

_logger: Any = None


def _debug_logger() -> Any:
    """The ``arrayrnn`` logger when it records DEBUG, else ``None`` (``logging`` imported on the first call only,
    so ``import arrayrnn`` stays as light as before)."""
    global _logger
    if _logger is None:
        import logging

        _logger = logging.getLogger("arrayrnn")
    return _logger if _logger.isEnabledFor(10) else None  # 10: logging.DEBUG


def hooks(backend: str) -> Optional[ModuleType]:
    """The hook package of ``backend`` (imported on first use), or ``None`` where it has no fast path."""
    name = BACKEND_PACKAGES.get(backend)
    return None if name is None else importlib.import_module(name)


def paths(backend: str) -> tuple[str, ...]:
    """The path names ``impl=`` accepts on ``backend`` besides ``"auto"``, ``"generic"`` and ``"fast"``."""
    package = hooks(backend)
    return () if package is None else package.paths()


def _known_anywhere(name: str) -> bool:
    return any(name in paths(backend) for backend in BACKEND_PACKAGES)


def resolve_impl(kind: str, backend: str, impl: Optional[str]) -> str:
    """The ``impl`` a call runs with: the keyword, else ``$ARRAYRNN_IMPL``, else ``"auto"``; checked.

    The keyword is strict: a name this backend does not have raises ``ValueError``. The environment variable may
    name another backend's path (one setting steers a whole run): it then means ``"auto"`` here.
    """
    chosen = impl if impl is not None else os.environ.get(IMPL_ENV, "auto")
    here = paths(backend)
    if chosen in IMPLS or chosen in here:
        if chosen == "fast" and hooks(backend) is None:
            raise ValueError(f"impl='fast' was asked for, but no fast path for {kind} exists on {backend}")
        return chosen
    if impl is None and _known_anywhere(chosen):
        return "auto"
    source = "impl" if impl is not None else IMPL_ENV
    raise ValueError(f"{source} must be one of {', '.join(IMPLS + here)} for {kind} on {backend}, got {chosen!r}")


def _log(logger: Any, kind: str, backend: str, what: str, path: str, reason: str) -> None:
    logger.debug("%s %s on %s: %s (%s)", what, kind, backend, path, reason)


def _explain(kind: str, backend: str, x: Array, params: Any, options: dict[str, Any], impl: str,
             gradient: bool) -> tuple[str, str]:  # fmt: skip
    if impl == "generic":
        return "generic", "impl='generic' asked for the array-API core"
    package = hooks(backend)
    if package is None:
        return "generic", f"{backend} has no fast path: the array-API core runs"
    return package.explain(kind, x, params, options, impl=impl, gradient=gradient)


def explain(kind: str, backend: str, x: Array, params: Any, options: dict[str, Any], impl: Optional[str],
            gradient: bool = False) -> str:  # fmt: skip
    """``"<backend>: <path> (<reason>)"`` for a validated, time-major call (``x (T, B, I)``)."""
    chosen = resolve_impl(kind, backend, impl)
    path, reason = _explain(kind, backend, x, params, options, chosen, gradient)
    return f"{backend}: {path} ({reason})" if path != "generic" else f"generic: {reason}"


def sequence(
    kind: str,
    xp: Any,
    backend: str,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    impl: Optional[str],
) -> tuple[Array, tuple[Array, ...]]:
    """Run one validated, time-major layer: the backend's hook, else (it declined) the generic core."""
    chosen = resolve_impl(kind, backend, impl)
    logger = _debug_logger()
    if logger is not None:
        _log(logger, kind, backend, "forward", *_explain(kind, backend, x, params, options, chosen, False))
    package = hooks(backend) if chosen != "generic" else None
    if package is not None:
        result = package.sequence(kind, xp, x, params, state, lengths, reverse, options, impl=chosen)
        if result is not None:
            return result
    if options.get("regularize") is not None:  # the dropout family: a wrapper around the recording cells
        return core_regularize.sequence(xp, kind, x, params, state, lengths, reverse, options)
    return GENERIC[kind](xp, x, params, state, lengths, reverse, **options)


def sequence_vjp(
    kind: str,
    xp: Any,
    backend: str,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    impl: Optional[str],
) -> tuple[Array, tuple[Array, ...], Any]:
    """A recording forward pass and its ``backward(dy, d_final) -> (dx, dparams, d_state)``: the backend's
    gradient hook, else (it declined) the generic recording core (``_core/backward.py``)."""
    chosen = resolve_impl(kind, backend, impl)
    logger = _debug_logger()
    if logger is not None:
        _log(logger, kind, backend, "gradient", *_explain(kind, backend, x, params, options, chosen, True))
    package = hooks(backend) if chosen != "generic" else None
    if package is not None:
        recorded = package.sequence_vjp(kind, xp, x, params, state, lengths, reverse, options, impl=chosen)
        if recorded is not None:
            return recorded
    if options.get("regularize") is not None:
        return core_regularize.sequence_vjp(xp, kind, x, params, state, lengths, reverse, options)
    y, final_state, tape = core_backward.forward(xp, kind, x, params, state, lengths, reverse, options)

    def backward(dy: Any, d_final: Any) -> Any:
        return core_backward.backward(xp, tape, dy, d_final)

    return y, final_state, backward
