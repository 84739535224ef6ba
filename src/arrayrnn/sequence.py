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
    """Elman RNN over a whole sequence: one layer, one direction (``torch.nn.RNN`` with one layer).

    Every step is :func:`rnn_cell`: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, and ``y[t] = h_t``.
    With ``lengths``, step ``t`` of sequence ``b`` is valid when ``t < lengths[b]``; a step past the end writes
    ``0`` to ``y`` and leaves the state unchanged, so ``h_n`` is the state after each sequence's last valid step
    (PyTorch packed sequences and ONNX ``sequence_lens`` agree). ``reverse=True`` runs each sequence backwards
    over its own valid steps, outputs staying at their original time positions. Inputs are never modified. A
    dask ``x`` (chunked over the batch) gives lazy dask results.

    Parameters
    ----------
    x : array, shape (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I)
        The input sequence, floating point, in the dtype of ``params``; ``T >= 1``.
    params : RNNParams
        One layer's weights (see :func:`init_rnn`).
    state : array, shape (B, H) or unbatched (H,), optional
        The initial hidden state (never batch-first). ``None`` (default) means zeros.
    nonlinearity : {"tanh", "relu"}, optional
        The activation. Default ``"tanh"``.
    lengths : integer array or list of int, shape (B,), optional
        Valid steps of each sequence, each in ``[0, T]``; needs batched ``x``. ``None`` (default): all ``T``.
    reverse : bool, optional
        Run backwards in time, over each sequence's own valid steps. Default ``False``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)``; the states stay ``(B, H)``. Default ``False``.
    impl : str, optional
        Which implementation runs: ``"auto"`` (the fastest path for the inputs' backend), ``"generic"`` (the
        array-API reference core), ``"fast"`` (the backend's fast path, ``ValueError`` where there is none) or a
        path name (CuPy: ``"fused"``, ``"graph"``; experimental: ``"fused_graph"``, ``"tiled"``, ``"persistent"``,
        ``"cluster"``). ``None`` (default) takes ``$ARRAYRNN_IMPL``, else ``"auto"``. Results agree to float
        tolerance whichever runs.

    Returns
    -------
    y : array, shape (T, B, H), or (B, T, H) with ``batch_first``, or unbatched (T, H)
        The hidden state of every step (``0`` at steps past a sequence's length).
    h_n : array, shape (B, H) or unbatched (H,)
        The state after each sequence's last valid step.

    Raises
    ------
    TypeError
        ``params`` is not an :class:`RNNParams`; an argument is not an array, or not floating point (``lengths``:
        not integer), or is a NumPy masked array or matrix (the message says what to pass instead: ``x.filled(0)``
        with ``lengths=``, or ``np.asarray(...)``); dtypes differ; ``reverse`` or ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; an unknown ``nonlinearity`` or ``impl``.
    BackendMismatchError
        The arguments live on different backends or devices (nothing is copied implicitly).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    >>> y, h_n = ar.rnn(x, params)
    >>> y.shape, h_n.shape, y.dtype
    ((5, 2, 4), (2, 4), dtype('float32'))

    Ragged batches: sequence 1 has 3 valid steps.

    >>> y, h_n = ar.rnn(x, params, lengths=np.array([5, 3]))
    >>> bool(np.all(y[3:, 1] == 0)), bool(np.allclose(h_n[1], y[2, 1]))
    (True, True)

    Batch-first layout, and the reference core:

    >>> y, h_n = ar.rnn(np.swapaxes(x, 0, 1), params, batch_first=True, impl="generic")
    >>> y.shape, h_n.shape
    ((2, 5, 4), (2, 4))
    """
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
    state: Optional[tuple[Array, ...]] = None,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
    input_gate: bool = True,
    forget_gate: bool = True,
    output_gate: bool = True,
    input_activation: str = "tanh",
    output_activation: str = "tanh",
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
) -> tuple[Array, tuple[Array, ...]]:
    """LSTM over a whole sequence: one layer, one direction (``torch.nn.LSTM`` with one layer).

    Every step is :func:`lstm_cell` (its formulas, peepholes, ``coupled``, ``clip`` and the variants of Greff et
    al. 2015: absent gates, identity activations, the full gate recurrence ``params.weight_gg``), and
    ``y[t] = h_t``. With ``lengths``, step ``t`` of sequence ``b`` is valid when ``t < lengths[b]``; a step past
    the end writes ``0`` to ``y`` and leaves the whole state unchanged, so ``(h_n, c_n)`` are the states after
    each sequence's last valid step (PyTorch packed sequences and ONNX ``sequence_lens`` agree). ``reverse=True``
    runs each sequence backwards over its own valid steps, outputs staying at their original time positions.
    Inputs are never modified. A dask ``x`` (chunked over the batch) gives lazy dask results.

    Parameters
    ----------
    x : array, shape (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I)
        The input sequence, floating point, in the dtype of ``params``; ``T >= 1``.
    params : LSTMParams
        One layer's weights (see :func:`init_lstm`), with optional projection ``weight_hr (P, H)`` and peepholes.
    state : tuple (h_0, c_0) of arrays, or (h_0, c_0, g_0) with ``params.weight_gg``, optional
        ``h_0 (B, H)`` (``(B, P)`` with a projection), ``c_0 (B, H)`` and, with the full gate recurrence, the gate
        activations ``g_0 (B, 3H)`` (``[i, f, o]``); unbatched ``(H,)`` / ``(P,)`` / ``(3H,)``; never
        batch-first. ``None`` (default) means zeros.
    coupled : bool, optional
        Coupled input-forget gate, ``f = 1 - i`` (ONNX ``input_forget``). Default ``False``.
    clip : float or None, optional
        A positive bound for every gate pre-activation used (ONNX ``clip``); ``None`` (default) does not clip. A
        bound beyond the dtype's range (e.g. ``1e300`` in float32) clips at the dtype's largest finite value.
    input_gate, forget_gate, output_gate : bool, optional
        ``False``: that gate is absent (is 1; Greff et al.'s NIG, NFG, NOG). Default ``True``.
    input_activation, output_activation : {"tanh", "identity"}, optional
        The activation of the block input ``g`` and of ``c_t`` in ``h_t`` (``"identity"``: NIAF, NOAF). Default
        ``"tanh"``. A call with any of these options changed, or with ``params.weight_gg``, runs the array-API
        core (the fast paths decline it; :func:`explain` says so).
    lengths : integer array or list of int, shape (B,), optional
        Valid steps of each sequence, each in ``[0, T]``; needs batched ``x``. ``None`` (default): all ``T``.
    reverse : bool, optional
        Run backwards in time, over each sequence's own valid steps. Default ``False``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)``; the states stay ``(B, ·)``. Default ``False``.
    impl : str, optional
        Which implementation runs: ``"auto"`` (the fastest path for the inputs' backend), ``"generic"`` (the
        array-API reference core), ``"fast"`` (the backend's fast path, ``ValueError`` where there is none) or a
        path name (CuPy: ``"fused"``, ``"graph"``; experimental: ``"fused_graph"``, ``"tiled"``, ``"persistent"``,
        ``"cluster"``). ``None`` (default) takes ``$ARRAYRNN_IMPL``, else ``"auto"``. Results agree to float
        tolerance whichever runs.

    Returns
    -------
    y : array, shape (T, B, H_out), or (B, T, H_out) with ``batch_first``, or unbatched (T, H_out)
        ``h`` of every step (``0`` at steps past a sequence's length); ``H_out`` is ``P`` with a projection,
        else ``H``.
    (h_n, c_n) : tuple of arrays, shapes (B, H_out) and (B, H); unbatched (H_out,) and (H,)
        The states after each sequence's last valid step; ``(h_n, c_n, g_n)`` with ``params.weight_gg``, ``g_n``
        ``(B, 3H)``.

    Raises
    ------
    TypeError
        ``params`` is not an :class:`LSTMParams`; ``state`` is not ``None`` or a pair ``(h_0, c_0)`` (a triple
        ``(h_0, c_0, g_0)`` with ``params.weight_gg``); an argument is not an array, or not floating point
        (``lengths``: not integer), or is a NumPy masked array or matrix (the message says what to pass instead:
        ``x.filled(0)`` with ``lengths=``, or ``np.asarray(...)``); dtypes differ; ``coupled``, a gate flag,
        ``reverse`` or ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; ``clip`` not positive; an unknown activation or
        ``impl``; ``coupled=True`` with ``input_gate=False`` or ``forget_gate=False``; ``params.weight_gg`` with an
        absent gate.
    BackendMismatchError
        The arguments live on different backends or devices (nothing is copied implicitly).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_lstm(3, 4, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    >>> y, (h_n, c_n) = ar.lstm(x, params)
    >>> y.shape, h_n.shape, c_n.shape
    ((5, 2, 4), (2, 4), (2, 4))

    Backwards over ragged sequences, from a given state:

    >>> state = (np.zeros((2, 4), "float32"), np.ones((2, 4), "float32"))
    >>> y, (h_n, c_n) = ar.lstm(x, params, state, lengths=[5, 2], reverse=True)
    >>> bool(np.all(y[2:, 1] == 0)), bool(np.allclose(h_n[1], y[0, 1]))
    (True, True)

    With a projection (``P = 2``) and ONNX-style options:

    >>> params = ar.init_lstm(3, 4, proj_size=2, seed=0)
    >>> y, (h_n, c_n) = ar.lstm(x, params, coupled=True, clip=5.0)
    >>> y.shape, h_n.shape, c_n.shape
    ((5, 2, 2), (2, 2), (2, 4))

    Greff et al.'s variants: no forget gate; the full gate recurrence (the state gains ``g``):

    >>> y, (h_n, c_n) = ar.lstm(x, params, forget_gate=False)
    >>> params = ar.init_lstm(3, 4, gate_recurrence=True, seed=0)
    >>> y, (h_n, c_n, g_n) = ar.lstm(x, params)
    >>> g_n.shape
    (2, 12)
    """
    options = {
        "coupled": coupled,
        "clip": clip,
        "input_gate": input_gate,
        "forget_gate": forget_gate,
        "output_gate": output_gate,
        "input_activation": input_activation,
        "output_activation": output_activation,
    }
    y, final_state = run_sequence(
        "lstm",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        options=options,
    )
    return y, tuple(final_state)


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
    """GRU over a whole sequence: one layer, one direction (``torch.nn.GRU`` with one layer).

    Every step is :func:`gru_cell` (PyTorch's GRU, or with ``linear_before_reset=False`` the reset gate before
    the recurrent product), and ``y[t] = h_t``. With ``lengths``, step ``t`` of sequence ``b`` is valid when
    ``t < lengths[b]``; a step past the end writes ``0`` to ``y`` and leaves the state unchanged, so ``h_n`` is the
    state after each sequence's last valid step (PyTorch packed sequences and ONNX ``sequence_lens`` agree).
    ``reverse=True`` runs each sequence backwards over its own valid steps, outputs staying at their original
    time positions. Inputs are never modified. A dask ``x`` (chunked over the batch) gives lazy dask results.

    Parameters
    ----------
    x : array, shape (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I)
        The input sequence, floating point, in the dtype of ``params``; ``T >= 1``.
    params : GRUParams
        One layer's weights (see :func:`init_gru`).
    state : array, shape (B, H) or unbatched (H,), optional
        The initial hidden state (never batch-first). ``None`` (default) means zeros.
    linear_before_reset : bool, optional
        ``True`` (default): PyTorch's GRU; ``False``: ONNX's default, Keras ``reset_after=False``.
    lengths : integer array or list of int, shape (B,), optional
        Valid steps of each sequence, each in ``[0, T]``; needs batched ``x``. ``None`` (default): all ``T``.
    reverse : bool, optional
        Run backwards in time, over each sequence's own valid steps. Default ``False``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)``; the states stay ``(B, H)``. Default ``False``.
    impl : str, optional
        Which implementation runs: ``"auto"`` (the fastest path for the inputs' backend), ``"generic"`` (the
        array-API reference core), ``"fast"`` (the backend's fast path, ``ValueError`` where there is none) or a
        path name (CuPy: ``"fused"``, ``"graph"``; experimental: ``"fused_graph"``, ``"tiled"``, ``"persistent"``,
        ``"cluster"``). ``None`` (default) takes ``$ARRAYRNN_IMPL``, else ``"auto"``. Results agree to float
        tolerance whichever runs.

    Returns
    -------
    y : array, shape (T, B, H), or (B, T, H) with ``batch_first``, or unbatched (T, H)
        The hidden state of every step (``0`` at steps past a sequence's length).
    h_n : array, shape (B, H) or unbatched (H,)
        The state after each sequence's last valid step.

    Raises
    ------
    TypeError
        ``params`` is not a :class:`GRUParams`; an argument is not an array, or not floating point (``lengths``:
        not integer), or is a NumPy masked array or matrix (the message says what to pass instead: ``x.filled(0)``
        with ``lengths=``, or ``np.asarray(...)``); dtypes differ; ``linear_before_reset``, ``reverse`` or
        ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; an unknown ``impl``.
    BackendMismatchError
        The arguments live on different backends or devices (nothing is copied implicitly).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_gru(3, 4, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    >>> y, h_n = ar.gru(x, params)
    >>> y.shape, h_n.shape
    ((5, 2, 4), (2, 4))
    >>> y, h_n = ar.gru(x[:, 0], params, linear_before_reset=False)  # unbatched (T, I)
    >>> y.shape, h_n.shape
    ((5, 4), (4,))
    """
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
