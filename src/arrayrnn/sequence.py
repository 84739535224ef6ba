"""One recurrent layer over a whole sequence: the public, validated entry points ``rnn``, ``lstm`` and ``gru``."""

from __future__ import annotations

from typing import Any, Optional

from array_api_compat import is_dask_array

from . import _dispatch
from ._validate import Prepared, prepare_sequence
from .params import GRUParams, LSTMParams, RNNParams

__all__ = ["gru", "lstm", "rnn", "run_sequence"]

Array = Any


def run_sequence(
    kind: str,
    x: Array,
    params: Any,
    state: Any,
    *,
    lengths: Any,
    reverse: bool,
    batch_first: bool,
    impl: Optional[str],
    options: dict[str, Any],
) -> tuple[Array, tuple[Array, ...]]:
    """Validate, pick the implementation, run, and restore the caller's layout."""
    if is_dask_array(x):  # lazy: every batch block runs this same function on its NumPy/CuPy chunk
        from ._dask import run_dask

        layout = {"reverse": reverse, "batch_first": batch_first}
        return run_dask(run_sequence, kind, x, params, state, lengths=lengths, impl=impl, options=options, **layout)
    prepared: Prepared = prepare_sequence(kind, x, params, state, lengths, batch_first, reverse, options)
    xp = prepared.xp
    y, final_state = _dispatch.sequence(
        kind, xp, prepared.backend, prepared.x, params, prepared.state, prepared.lengths, reverse, options, impl
    )
    if prepared.unbatched:
        y = xp.reshape(y, (y.shape[0], y.shape[2]))
        final_state = tuple(xp.reshape(s, (s.shape[-1],)) for s in final_state)
    elif batch_first:
        y = xp.permute_dims(y, (1, 0, 2))
    return y, final_state


def rnn(
    x: Array,
    params: RNNParams,
    state: Optional[Array] = None,
    *,
    nonlinearity: str = "tanh",
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
) -> tuple[Array, Array]:
    """Elman RNN over a sequence. Returns ``(y, h_n)``; ``h_n (B, H)``."""
    y, (h_n,) = run_sequence(
        "rnn",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        options={"nonlinearity": nonlinearity},
    )
    return y, h_n


def lstm(
    x: Array,
    params: LSTMParams,
    state: Optional[tuple[Array, Array]] = None,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
) -> tuple[Array, tuple[Array, Array]]:
    """LSTM over a sequence. Returns ``(y, (h_n, c_n))``; ``h_n (B, P or H)``, ``c_n (B, H)``."""
    y, (h_n, c_n) = run_sequence(
        "lstm",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        options={"coupled": coupled, "clip": clip},
    )
    return y, (h_n, c_n)


def gru(
    x: Array,
    params: GRUParams,
    state: Optional[Array] = None,
    *,
    linear_before_reset: bool = True,
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
) -> tuple[Array, Array]:
    """GRU over a sequence. Returns ``(y, h_n)``; ``h_n (B, H)``."""
    y, (h_n,) = run_sequence(
        "gru",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        options={"linear_before_reset": linear_before_reset},
    )
    return y, h_n
