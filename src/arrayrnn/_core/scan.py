"""The time loop, written once for every cell: lengths or a mask, reverse and state carrying.

Step ``t`` of sequence ``b`` is valid when ``t < lengths[b]`` (or ``mask[t, b]``); a padded step writes 0 (or with
``padding="carry"`` the carried ``h``) to ``y`` and keeps the state; ``reverse=True`` runs each sequence backwards
over its own valid steps, outputs staying in place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from .masking import valid_at

Array = Any
#: step(gx_t (B, G*H), state tuple) -> new state tuple; the output is new_state[0]
Step = Callable[[Array, tuple[Array, ...]], tuple[Array, ...]]


def scan(
    xp: Any,
    step: Step,
    gx: Array,
    state: Sequence[Array],
    lengths: Optional[Array] = None,
    reverse: bool = False,
    mask: Optional[Array] = None,
    padding: str = "zeros",
) -> tuple[Array, tuple[Array, ...]]:
    """Run ``step`` over the time axis of ``gx (T, B, G*H)`` from ``state``.

    ``T >= 1`` (the public functions check it). Returns ``y (T, B, H_out)`` (the first state
    component at every step) and the final state. ``mask (T, B)`` (instead of ``lengths``): the steps that run;
    ``padding="carry"``: a skipped step outputs the carried ``h`` (see ``masking.py``).
    """
    steps = gx.shape[0]
    state = tuple(state)
    outputs: list[Array] = [None] * steps  # type: ignore[list-item]
    zero_output = xp.zeros_like(state[0])
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        new_state = step(gx[t, ...], state)
        valid = valid_at(xp, lengths, mask, t)
        if valid is None:
            state = new_state
            outputs[t] = new_state[0]
        else:
            state = tuple(xp.where(valid, new, old) for new, old in zip(new_state, state))
            outputs[t] = state[0] if padding == "carry" else xp.where(valid, new_state[0], zero_output)
    return xp.stack(outputs, axis=0), state
