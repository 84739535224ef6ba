"""One recurrent layer over a whole sequence: the public, validated entry points ``rnn``, ``lstm`` and ``gru``."""

from __future__ import annotations

from typing import Any, Optional

from array_api_compat import is_dask_array

from . import _dispatch
from ._dropout import add_request, refuse_dask_training, resolve
from ._masking import prepare_masking
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
    mask: Any = None,
    padding: str = "zeros",
) -> tuple[Array, tuple[Array, ...]]:
    """Validate, pick the implementation, run, and restore the caller's layout."""
    if is_dask_array(x):  # lazy: every batch block runs this same function on its NumPy/CuPy chunk
        from ._dask import run_dask

        refuse_dask_training(options)
        layout = {"reverse": reverse, "batch_first": batch_first}
        masking = {"mask": mask, "padding": padding} if mask is not None or padding != "zeros" else {}
        return run_dask(
            run_sequence, kind, x, params, state, lengths=lengths, impl=impl, options=options, **layout, **masking
        )
    prepared: Prepared = prepare_sequence(kind, x, params, state, lengths, batch_first, reverse, options)
    xp = prepared.xp
    options = resolve(kind, options, prepared)  # the dropout family: its masks drawn for this call
    masking = prepare_masking(prepared, mask, padding, lengths, batch_first)
    run_options = {**options, **masking} if masking else options
    y, final_state = _dispatch.sequence(
        kind, xp, prepared.backend, prepared.x, params, prepared.state, prepared.lengths, reverse, run_options, impl
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
    mask: Any = None,
    padding: str = "zeros",
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    train: bool = False,
    seed: Any = None,
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
    mask : boolean array or list of bool, shape (T, B), or (B, T) with ``batch_first``, or unbatched (T,), optional
        Which steps run (``True``), instead of ``lengths``: a masked step leaves the whole state unchanged, so
        leading padding and holes are allowed; with ``reverse=True`` each sequence visits its unmasked steps from
        last to first. On the backend of ``x`` (a list on any). ``None`` (default): every step runs.
    padding : {"zeros", "carry"}, optional
        What a masked or padded step (``mask`` or ``lengths``) writes to ``y``: ``"zeros"`` (default; PyTorch,
        ONNX) or ``"carry"``, the carried ``h`` (Keras). Calls with ``mask`` or ``padding="carry"`` run the
        array-API core (the fast paths decline them; :func:`explain` says so).
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
    recurrent_dropout : float in [0, 1), optional
        Training only (Gal & Ghahramani 2016, Keras's ``recurrent_dropout``): one mask ``(B, H_out)`` per call
        multiplies ``h_{t-1}`` where the step reads it, the same at every step, kept units scaled by ``1/(1-p)``
        (the LSTM: the ``h`` fed to ``W_hh``, peepholes see ``c``; the GRU: the products with ``W_hh``, not the
        mix ``z * h_{t-1}``, as Keras). Default ``0.0``; the identity at inference.
    zoneout : float in [0, 1), optional
        Krueger et al. 2017: in training each unit of the state keeps its previous value with probability ``p`` at
        every step, ``h_t = m_t h_{t-1} + (1 - m_t) h~_t`` (the LSTM: ``h`` and ``c``, each its own mask); at
        inference the expectation ``h_t = p h_{t-1} + (1 - p) h~_t``. ``y[t]`` is the new ``h_t``. Default ``0.0``.
    train : bool, optional
        Draw and apply the training masks. Default ``False``.
    seed : int or numpy.random.Generator, optional
        Needed with ``train=True`` and a rate above 0 (there is no global random state): the masks are float64
        uniforms ``u`` of ``numpy.random.default_rng(seed)`` drawn on the host, so one seed gives the same masks on
        every backend: first ``u (B, H_out)`` for recurrent dropout (kept where ``u >= p``), then ``u (T, B, H_out)``
        for zoneout of ``h`` and, for the LSTM, ``u (T, B, H)`` for ``c`` (kept previous where ``u < p``); time-major
        whatever ``batch_first`` (``B = 1`` unbatched). Any of these active runs the array-API core (:func:`explain`
        says so); a rate outside ``[0, 1)`` or ``train=True`` without ``seed`` raises ``ValueError``, a ``train``
        that is not a bool ``TypeError``; training on dask arrays and ``mask=`` / ``padding="carry"`` are refused.

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
        not integer; ``mask``: not boolean), or is a NumPy masked array or matrix (the message says what to pass
        instead: ``x.filled(0)`` with ``lengths=``, or ``np.asarray(...)``); dtypes differ; ``reverse`` or
        ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; ``mask`` of the wrong shape or given with ``lengths``;
        ``padding`` not ``"zeros"`` or ``"carry"``; an unknown ``nonlinearity`` or ``impl``.
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

    A mask may skip any steps (step 1 of sequence 0 here); a skipped step keeps the state and, with
    ``padding="carry"``, writes it to ``y``:

    >>> mask = np.array([[True, True], [False, True], [True, True], [True, False], [True, True]])
    >>> y, h_n = ar.rnn(x, params, mask=mask, padding="carry")
    >>> bool(np.all(y[1, 0] == y[0, 0])), bool(np.all(y[3, 1] == y[2, 1]))
    (True, True)

    Batch-first layout, and the reference core:

    >>> y, h_n = ar.rnn(np.swapaxes(x, 0, 1), params, batch_first=True, impl="generic")
    >>> y.shape, h_n.shape
    ((2, 5, 4), (2, 4))
    """
    options = {"nonlinearity": nonlinearity}
    add_request(options, recurrent_dropout, zoneout, train, seed)
    y, (h_n,) = run_sequence(
        "rnn",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        mask=mask,
        padding=padding,
        options=options,
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
    mask: Any = None,
    padding: str = "zeros",
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    train: bool = False,
    seed: Any = None,
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
    mask : boolean array or list of bool, shape (T, B), or (B, T) with ``batch_first``, or unbatched (T,), optional
        Which steps run (``True``), instead of ``lengths``: a masked step leaves the whole state unchanged, so
        leading padding and holes are allowed; with ``reverse=True`` each sequence visits its unmasked steps from
        last to first. On the backend of ``x`` (a list on any). ``None`` (default): every step runs.
    padding : {"zeros", "carry"}, optional
        What a masked or padded step (``mask`` or ``lengths``) writes to ``y``: ``"zeros"`` (default; PyTorch,
        ONNX) or ``"carry"``, the carried ``h`` (Keras). Calls with ``mask`` or ``padding="carry"`` run the
        array-API core (the fast paths decline them; :func:`explain` says so).
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
    recurrent_dropout : float in [0, 1), optional
        Training only (Gal & Ghahramani 2016, Keras's ``recurrent_dropout``): one mask ``(B, H_out)`` per call
        multiplies ``h_{t-1}`` where the step reads it, the same at every step, kept units scaled by ``1/(1-p)``
        (the LSTM: the ``h`` fed to ``W_hh``, peepholes see ``c``; the GRU: the products with ``W_hh``, not the
        mix ``z * h_{t-1}``, as Keras). Default ``0.0``; the identity at inference.
    zoneout : float in [0, 1), optional
        Krueger et al. 2017: in training each unit of the state keeps its previous value with probability ``p`` at
        every step, ``h_t = m_t h_{t-1} + (1 - m_t) h~_t`` (the LSTM: ``h`` and ``c``, each its own mask); at
        inference the expectation ``h_t = p h_{t-1} + (1 - p) h~_t``. ``y[t]`` is the new ``h_t``. Default ``0.0``.
    train : bool, optional
        Draw and apply the training masks. Default ``False``.
    seed : int or numpy.random.Generator, optional
        Needed with ``train=True`` and a rate above 0 (there is no global random state): the masks are float64
        uniforms ``u`` of ``numpy.random.default_rng(seed)`` drawn on the host, so one seed gives the same masks on
        every backend: first ``u (B, H_out)`` for recurrent dropout (kept where ``u >= p``), then ``u (T, B, H_out)``
        for zoneout of ``h`` and, for the LSTM, ``u (T, B, H)`` for ``c`` (kept previous where ``u < p``); time-major
        whatever ``batch_first`` (``B = 1`` unbatched). Any of these active runs the array-API core (:func:`explain`
        says so); a rate outside ``[0, 1)`` or ``train=True`` without ``seed`` raises ``ValueError``, a ``train``
        that is not a bool ``TypeError``; training on dask arrays and ``mask=`` / ``padding="carry"`` are refused.

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
        (``lengths``: not integer; ``mask``: not boolean), or is a NumPy masked array or matrix (the message says
        what to pass instead: ``x.filled(0)`` with ``lengths=``, or ``np.asarray(...)``); dtypes differ;
        ``coupled``, a gate flag, ``reverse`` or ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; ``mask`` of the wrong shape or given with ``lengths``;
        ``padding`` not ``"zeros"`` or ``"carry"``; ``clip`` not positive; an unknown activation or
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

    A mask with a hole and leading padding; ``padding="carry"`` repeats the carried ``h`` at masked steps (Keras):

    >>> mask = np.array([[True, False], [True, False], [True, True], [True, True], [False, True]])
    >>> y, (h_n, c_n) = ar.lstm(x, params, mask=mask, padding="carry")
    >>> bool(np.all(y[:2, 1] == 0)), bool(np.all(y[4, 0] == y[3, 0])), bool(np.all(h_n[0] == y[3, 0]))
    (True, True, True)

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

    Training with recurrent dropout and zoneout: one seed, the same masks (on every backend):

    >>> params = ar.init_lstm(3, 4, seed=0)
    >>> y1, _ = ar.lstm(x, params, recurrent_dropout=0.25, zoneout=0.1, train=True, seed=7)
    >>> y2, _ = ar.lstm(x, params, recurrent_dropout=0.25, zoneout=0.1, train=True, seed=7)
    >>> bool(np.array_equal(y1, y2))
    True
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
    add_request(options, recurrent_dropout, zoneout, train, seed)
    y, final_state = run_sequence(
        "lstm",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        mask=mask,
        padding=padding,
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
    mask: Any = None,
    padding: str = "zeros",
    reverse: bool = False,
    batch_first: bool = False,
    impl: Optional[str] = None,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    train: bool = False,
    seed: Any = None,
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
    mask : boolean array or list of bool, shape (T, B), or (B, T) with ``batch_first``, or unbatched (T,), optional
        Which steps run (``True``), instead of ``lengths``: a masked step leaves the whole state unchanged, so
        leading padding and holes are allowed; with ``reverse=True`` each sequence visits its unmasked steps from
        last to first. On the backend of ``x`` (a list on any). ``None`` (default): every step runs.
    padding : {"zeros", "carry"}, optional
        What a masked or padded step (``mask`` or ``lengths``) writes to ``y``: ``"zeros"`` (default; PyTorch,
        ONNX) or ``"carry"``, the carried ``h`` (Keras). Calls with ``mask`` or ``padding="carry"`` run the
        array-API core (the fast paths decline them; :func:`explain` says so).
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
    recurrent_dropout : float in [0, 1), optional
        Training only (Gal & Ghahramani 2016, Keras's ``recurrent_dropout``): one mask ``(B, H_out)`` per call
        multiplies ``h_{t-1}`` where the step reads it, the same at every step, kept units scaled by ``1/(1-p)``
        (the LSTM: the ``h`` fed to ``W_hh``, peepholes see ``c``; the GRU: the products with ``W_hh``, not the
        mix ``z * h_{t-1}``, as Keras). Default ``0.0``; the identity at inference.
    zoneout : float in [0, 1), optional
        Krueger et al. 2017: in training each unit of the state keeps its previous value with probability ``p`` at
        every step, ``h_t = m_t h_{t-1} + (1 - m_t) h~_t`` (the LSTM: ``h`` and ``c``, each its own mask); at
        inference the expectation ``h_t = p h_{t-1} + (1 - p) h~_t``. ``y[t]`` is the new ``h_t``. Default ``0.0``.
    train : bool, optional
        Draw and apply the training masks. Default ``False``.
    seed : int or numpy.random.Generator, optional
        Needed with ``train=True`` and a rate above 0 (there is no global random state): the masks are float64
        uniforms ``u`` of ``numpy.random.default_rng(seed)`` drawn on the host, so one seed gives the same masks on
        every backend: first ``u (B, H_out)`` for recurrent dropout (kept where ``u >= p``), then ``u (T, B, H_out)``
        for zoneout of ``h`` and, for the LSTM, ``u (T, B, H)`` for ``c`` (kept previous where ``u < p``); time-major
        whatever ``batch_first`` (``B = 1`` unbatched). Any of these active runs the array-API core (:func:`explain`
        says so); a rate outside ``[0, 1)`` or ``train=True`` without ``seed`` raises ``ValueError``, a ``train``
        that is not a bool ``TypeError``; training on dask arrays and ``mask=`` / ``padding="carry"`` are refused.

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
        not integer; ``mask``: not boolean), or is a NumPy masked array or matrix (the message says what to pass
        instead: ``x.filled(0)`` with ``lengths=``, or ``np.asarray(...)``); dtypes differ; ``linear_before_reset``,
        ``reverse`` or ``batch_first`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``T == 0``; ``lengths``
        outside ``[0, T]`` or given with unbatched ``x``; ``mask`` of the wrong shape or given with ``lengths``;
        ``padding`` not ``"zeros"`` or ``"carry"``; an unknown ``impl``.
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
    options = {"linear_before_reset": linear_before_reset}
    add_request(options, recurrent_dropout, zoneout, train, seed)
    y, (h_n,) = run_sequence(
        "gru",
        x,
        params,
        state,
        lengths=lengths,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        mask=mask,
        padding=padding,
        options=options,
    )
    return y, h_n
