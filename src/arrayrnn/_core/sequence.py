"""Generic one-layer sequence functions: input projection in one matmul, then the shared scan.

Every backend path shares their signature: validated, time-major ``x (T, B, I)``, ``state`` a tuple of
``(B, ·)`` arrays, ``lengths (B,)`` or ``None``; the result is ``(y (T, B, H_out), final_state_tuple)``.
"""

from __future__ import annotations

from typing import Any, Optional

from .scan import scan
from .steps import gru_step, lstm_step, project_inputs, rnn_step

Array = Any


def rnn_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    nonlinearity: str = "tanh",
    mask: Optional[Array] = None,
    padding: str = "zeros",
) -> tuple[Array, tuple[Array, ...]]:
    def step(gx_t: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        return (rnn_step(xp, gx_t, carry[0], params, nonlinearity),)

    return scan(xp, step, project_inputs(xp, x, params), state, lengths, reverse, mask, padding)


def lstm_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
    mask: Optional[Array] = None,
    padding: str = "zeros",
    **variant: Any,
) -> tuple[Array, tuple[Array, ...]]:
    """``variant``: the Greff options of :func:`lstm_step`; with ``params.weight_gg`` the state is ``(h, c, g)``."""

    def step(gx_t: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        gates = carry[2] if len(carry) > 2 else None
        return lstm_step(xp, gx_t, carry[0], carry[1], params, coupled, clip, gates=gates, **variant)

    return scan(xp, step, project_inputs(xp, x, params), state, lengths, reverse, mask, padding)


def gru_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    linear_before_reset: bool = True,
    mask: Optional[Array] = None,
    padding: str = "zeros",
) -> tuple[Array, tuple[Array, ...]]:
    def step(gx_t: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        return (gru_step(xp, gx_t, carry[0], params, linear_before_reset),)

    return scan(xp, step, project_inputs(xp, x, params), state, lengths, reverse, mask, padding)


GENERIC = {"rnn": rnn_sequence, "lstm": lstm_sequence, "gru": gru_sequence}
