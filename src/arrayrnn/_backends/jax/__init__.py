"""JAX fast path: the core's own step functions inside ``jax.lax.scan``, jitted once per configuration and cached
(``compiled.py``). Works on concrete arrays and on tracers (inside a user's ``jax.jit`` / ``grad`` / ``vmap``);
the dropout family declines to the core."""

from __future__ import annotations

from typing import Any, Optional

from ..._core.regularize import regularization_changes, without_regularization

Array = Any

#: named paths ``impl=`` may ask for on JAX (none: ``"auto"`` / ``"fast"`` run the one path)
PATHS: tuple[str, ...] = ()
#: the path's name in :func:`explain`
PATH = "lax.scan, jit-cached"


def paths() -> tuple[str, ...]:
    """The path names ``impl=`` accepts on this backend besides ``"auto"``, ``"generic"`` and ``"fast"``."""
    return PATHS


def _decline_reason(options: dict[str, Any]) -> Optional[str]:
    regularized = regularization_changes(options)
    if regularized:
        return f"{', '.join(regularized)}: not in the lax.scan path, the array-API core runs"
    return None


def _prepare(kind: str, options: dict[str, Any], reverse: bool, lengths: Any) -> Optional[tuple]:
    if _decline_reason(options) is not None:
        return None
    from . import compiled  # imports jax: only once a call on JAX arrays is here

    return compiled.make_key(kind, without_regularization(options), reverse, lengths is not None)


def sequence(
    kind: str,
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    *,
    impl: str = "auto",
) -> Optional[tuple[Array, tuple[Array, ...]]]:
    """Run one validated, time-major layer in the cached jitted ``lax.scan``; ``None`` (the core runs) for the
    dropout family."""
    key = _prepare(kind, options, reverse, lengths)
    if key is None:
        return None
    from . import compiled

    return compiled.forward(key)(x, params, tuple(state), lengths, options.get("mask"))


def sequence_vjp(kind: str, xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool,
                 options: dict[str, Any], *, impl: str = "auto") -> Optional[tuple[Array, tuple, Any]]:  # fmt: skip
    """``(y, final_state, backward)`` from ``jax.vjp`` of the same loop; ``backward(dy, d_final)`` returns
    ``(dx, dparams, d_state)`` as the generic recording core does (``None`` cotangents are zeros)."""
    key = _prepare(kind, options, reverse, lengths)
    if key is None:
        return None
    from . import compiled

    (y, final_state), pullback = compiled.recording(key)(x, params, tuple(state), lengths, options.get("mask"))

    def backward(dy: Any, d_final: Any) -> tuple[Array, Any, tuple[Array, ...]]:
        dy = xp.zeros_like(y) if dy is None else xp.astype(dy, y.dtype)
        d_final = tuple(xp.zeros_like(s) if d is None else xp.astype(d, s.dtype) for d, s in zip(d_final, final_state))
        dx, dparams, d_state = compiled.pull(pullback, (dy, d_final))
        return dx, dparams, tuple(d_state)

    return y, tuple(final_state), backward


def explain(kind: str, x: Array, params: Any, options: dict[str, Any], *, impl: str = "auto",
            gradient: bool = False) -> tuple[str, str]:  # fmt: skip
    """``(path, reason)`` for a validated, time-major call: the choice :func:`sequence` makes, in words."""
    declined = _decline_reason(options)
    if declined is not None:
        return "generic", declined
    if _prepare(kind, options, False, None) is None:
        return "generic", "an option is not hashable, so no compiled loop can be cached for it: the core runs"
    what = "the core's step in one lax.scan, compiled once per cell, options, direction and masking"
    return PATH, f"jax.vjp of {what}" if gradient else what
