"""One time step of each cell: the public, validated entry points.

Shapes: ``x (B, I)`` or unbatched ``(I,)``; states ``(B, H)`` or ``(H,)`` (an LSTM ``h`` with a
projection is ``(B, P)``). The namespace comes from the inputs; nothing is moved between backends.
"""

from __future__ import annotations

from typing import Any, Optional

from ._core.steps import gru_step, linear, lstm_step, rnn_step
from ._validate import prepare_cell
from .params import GRUParams, LSTMParams, RNNParams

__all__ = ["gru_cell", "lstm_cell", "rnn_cell"]

Array = Any


def _unbatch(xp: Any, array: Array, unbatched: bool) -> Array:
    return xp.reshape(array, (array.shape[-1],)) if unbatched else array


def rnn_cell(x: Array, h: Array, params: RNNParams, *, nonlinearity: str = "tanh") -> Array:
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, ``act`` = tanh or relu (``torch.nn.RNNCell``)."""
    p = prepare_cell("rnn", x, h, params, {"nonlinearity": nonlinearity}, "h")
    xp = p.xp
    h_new = rnn_step(xp, linear(xp, p.x, params.weight_ih, params.bias_ih), p.state[0], params, nonlinearity)
    return _unbatch(xp, h_new, p.unbatched)


def lstm_cell(
    x: Array,
    state: tuple[Array, Array],
    params: LSTMParams,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, Array]:
    """One LSTM step (``torch.nn.LSTMCell``, plus ONNX peepholes, ``coupled`` and ``clip``).

    ``state = (h, c)`` with ``h (B, P or H)``, ``c (B, H)``; returns ``(h', c')`` of the same shapes.
    """
    p = prepare_cell("lstm", x, state, params, {"coupled": coupled, "clip": clip}, "state")
    xp = p.xp
    h_new, c_new = lstm_step(
        xp, linear(xp, p.x, params.weight_ih, params.bias_ih), p.state[0], p.state[1], params, coupled, clip
    )
    return _unbatch(xp, h_new, p.unbatched), _unbatch(xp, c_new, p.unbatched)


def gru_cell(x: Array, h: Array, params: GRUParams, *, linear_before_reset: bool = True) -> Array:
    """One GRU step (``torch.nn.GRUCell``; ``linear_before_reset=False`` is the ONNX default variant)."""
    p = prepare_cell("gru", x, h, params, {"linear_before_reset": linear_before_reset}, "h")
    xp = p.xp
    h_new = gru_step(xp, linear(xp, p.x, params.weight_ih, params.bias_ih), p.state[0], params, linear_before_reset)
    return _unbatch(xp, h_new, p.unbatched)
