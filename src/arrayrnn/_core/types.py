"""What the core needs of a params object: the fields, as structural protocols.

The public layer's frozen dataclasses (``arrayrnn.params``) satisfy these; the core never imports them.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

Array = Any


class RNNParamsLike(Protocol):
    """One Elman layer: ``weight_ih (H, I)``, ``weight_hh (H, H)``, biases ``(H,)`` or ``None``."""

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array]
    bias_hh: Optional[Array]
    #: layer normalisation (``_core/layer_norm.py``), each ``(G*H,)`` or ``None``; read with ``getattr``
    ln_ih_weight: Optional[Array]
    ln_ih_bias: Optional[Array]
    ln_hh_weight: Optional[Array]
    ln_hh_bias: Optional[Array]

    @property
    def hidden_size(self) -> int: ...


class LSTMParamsLike(RNNParamsLike, Protocol):
    """One LSTM layer (gates i, f, g, o): as RNN with ``4H`` rows, plus projection, peepholes and the full gate
    recurrence ``weight_gg (3H, 3H)`` (each or ``None``)."""

    weight_hr: Optional[Array]
    peephole_i: Optional[Array]
    peephole_f: Optional[Array]
    peephole_o: Optional[Array]
    weight_gg: Optional[Array]
    ln_c_weight: Optional[Array]  # (H,): h = o * act(LN_c(c))
    ln_c_bias: Optional[Array]


class GRUParamsLike(RNNParamsLike, Protocol):
    """One GRU layer (gates r, z, n): as RNN with ``3H`` rows."""
