"""Which steps run: ``lengths`` (trailing padding) or a ``(T, B)`` boolean ``mask`` (any steps), and what a skipped
step writes to ``y``: ``padding="zeros"`` (0) or ``"carry"`` (the carried ``h``). The state always carries over.

Both travel in a call's ``options`` as ``"mask"`` and ``"padding"``, present only when not the default.
"""

from __future__ import annotations

from typing import Any, Optional

Array = Any

#: the values ``padding`` may take; the first is the default
PADDINGS = ("zeros", "carry")


def masking_changes(options: dict[str, Any]) -> list[str]:
    """What of a call's masking departs from the fast paths' ``lengths``-only, zero-padding loops: ``"mask="``
    and ``"padding='carry'"``; empty for every other call."""
    changes = []
    if options.get("mask") is not None:
        changes.append("mask=")
    if options.get("padding", "zeros") != "zeros":
        changes.append(f"padding={options['padding']!r}")
    return changes


def without_masking(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less ``mask`` and ``padding``."""
    return {name: value for name, value in options.items() if name not in ("mask", "padding")}


def valid_at(xp: Any, lengths: Optional[Array], mask: Optional[Array], t: int) -> Optional[Array]:
    """``(B, 1)`` booleans: which rows run step ``t``; ``None`` when every row does."""
    if mask is not None:
        return xp.reshape(mask[t, ...], (-1, 1))
    if lengths is not None:
        return xp.reshape(lengths > t, (-1, 1))
    return None


def carried_hidden(xp: Any, y: Array, h0: Array, lengths: Optional[Array], mask: Optional[Array], reverse: bool,
                   carry: bool) -> Array:  # fmt: skip
    """``(T, B, P)``: the hidden state entering each step, from ``y`` and ``h0``: with ``carry`` every ``y[t]`` is
    the state after step ``t``; with zeros a skipped step's state is the one before it."""
    steps = y.shape[0]
    rows: list[Array] = [None] * steps  # type: ignore[list-item]
    previous = h0
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        rows[t] = previous
        if carry:
            previous = y[t, ...]
        else:
            valid = valid_at(xp, lengths, mask, t)
            previous = y[t, ...] if valid is None else xp.where(valid, y[t, ...], previous)
    return xp.stack(rows, axis=0)
