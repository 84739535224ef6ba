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
    """One Elman RNN step: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (``torch.nn.RNNCell``).

    ``act`` is ``tanh`` or ``relu``. The namespace comes from the inputs; nothing is moved between backends.

    Parameters
    ----------
    x : array, shape (B, I) or unbatched (I,)
        The input of this step, floating point, in the dtype of ``params``.
    h : array, shape (B, H) or unbatched (H,)
        The previous hidden state, batched like ``x``.
    params : RNNParams
        ``weight_ih (H, I)``, ``weight_hh (H, H)``, ``bias_ih, bias_hh (H,)`` or ``None`` (see :func:`init_rnn`).
    nonlinearity : {"tanh", "relu"}, optional
        The activation ``act``. Default ``"tanh"``.

    Returns
    -------
    h_new : array, shape (B, H) or unbatched (H,)
        The new hidden state, on the inputs' backend and device.

    Raises
    ------
    TypeError
        ``params`` is not an :class:`RNNParams`; ``x`` or ``h`` is not a floating-point array, or is a NumPy masked
        array or matrix (pass ``np.asarray(...)``); dtypes differ.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``nonlinearity`` is neither
        ``"tanh"`` nor ``"relu"``.
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> x = np.ones((2, 3), dtype="float32")
    >>> h = np.zeros((2, 4), dtype="float32")
    >>> h = ar.rnn_cell(x, h, params)
    >>> h.shape, h.dtype
    ((2, 4), dtype('float32'))
    >>> ar.rnn_cell(x[0], h[0], params, nonlinearity="relu").shape  # unbatched
    (4,)
    """
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

    With ``z = x W_ih^T + b_ih + h W_hh^T + b_hh`` split into the gate blocks ``i, f, g, o`` (PyTorch order)::

        i = sigmoid(z_i + p_i * c)      f = sigmoid(z_f + p_f * c)     (f = 1 - i with coupled=True)
        g = tanh(z_g)                   c' = f * c + i * g
        o = sigmoid(z_o + p_o * c')     h' = o * tanh(c')              (then h' W_hr^T with a projection)

    The peephole terms ``p_* (H,)`` (ONNX semantics: ``i, f`` see ``c``, ``o`` sees ``c'``) are there only when
    ``params`` has peepholes. With ``clip``, every gate pre-activation is clipped to ``[-clip, clip]`` before its
    activation (ONNX ``clip``).

    Parameters
    ----------
    x : array, shape (B, I) or unbatched (I,)
        The input of this step, floating point, in the dtype of ``params``.
    state : tuple (h, c) of arrays
        ``h (B, H)`` (``(B, P)`` with a projection) and ``c (B, H)``; unbatched ``(H,)`` / ``(P,)``.
    params : LSTMParams
        ``weight_ih (4H, I)``, ``weight_hh (4H, H or P)``, optional biases, projection and peepholes
        (see :func:`init_lstm`).
    coupled : bool, optional
        Coupled input-forget gate, ``f = 1 - i`` (CIFG; ONNX ``input_forget``). Default ``False``.
    clip : float or None, optional
        A positive bound for every gate pre-activation; ``None`` (default) does not clip. A bound beyond the
        dtype's range clips at the dtype's largest finite value.

    Returns
    -------
    h_new : array, shape (B, H) or (B, P) with a projection; unbatched (H,) or (P,)
        The new hidden state.
    c_new : array, shape (B, H) or unbatched (H,)
        The new cell state.

    Raises
    ------
    TypeError
        ``params`` is not an :class:`LSTMParams`; ``state`` is not a pair ``(h, c)``; an argument is not a
        floating-point array, or is a NumPy masked array or matrix (pass ``np.asarray(...)``); dtypes differ;
        ``coupled`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``clip`` is not ``None``
        or a positive number.
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_lstm(3, 4, seed=0)
    >>> x = np.ones((2, 3), dtype="float32")
    >>> h = c = np.zeros((2, 4), dtype="float32")
    >>> h, c = ar.lstm_cell(x, (h, c), params, clip=3.0)
    >>> h.shape, c.shape
    ((2, 4), (2, 4))

    With a projection ``P = 2``, ``h`` is ``(B, P)``:

    >>> params = ar.init_lstm(3, 4, proj_size=2, seed=0)
    >>> h, c = ar.lstm_cell(x, (np.zeros((2, 2), "float32"), np.zeros((2, 4), "float32")), params)
    >>> h.shape, c.shape
    ((2, 2), (2, 4))
    """
    options = {"coupled": coupled, "clip": clip}
    p = prepare_cell("lstm", x, state, params, options, "state")  # bounds clip to the dtype's range
    xp = p.xp
    h_new, c_new = lstm_step(
        xp, linear(xp, p.x, params.weight_ih, params.bias_ih), p.state[0], p.state[1], params, coupled, options["clip"]
    )
    return _unbatch(xp, h_new, p.unbatched), _unbatch(xp, c_new, p.unbatched)


def gru_cell(x: Array, h: Array, params: GRUParams, *, linear_before_reset: bool = True) -> Array:
    """One GRU step (``torch.nn.GRUCell``; ``linear_before_reset=False`` is the ONNX default variant).

    With ``gx = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` split into the gate blocks ``r, z, n`` (PyTorch
    order)::

        r = sigmoid(gx_r + gh_r)        z = sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)       h' = (1 - z) * n + z * h

    ``linear_before_reset=False`` (ONNX's default, Keras ``reset_after=False``) applies the reset gate before the
    recurrent product instead: ``n = tanh(gx_n + (r * h) W_hn^T + b_hn)``.

    Parameters
    ----------
    x : array, shape (B, I) or unbatched (I,)
        The input of this step, floating point, in the dtype of ``params``.
    h : array, shape (B, H) or unbatched (H,)
        The previous hidden state, batched like ``x``.
    params : GRUParams
        ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, ``bias_ih, bias_hh (3H,)`` or ``None`` (see :func:`init_gru`).
    linear_before_reset : bool, optional
        ``True`` (default): PyTorch's GRU; ``False``: the reset gate before the recurrent product.

    Returns
    -------
    h_new : array, shape (B, H) or unbatched (H,)
        The new hidden state, on the inputs' backend and device.

    Raises
    ------
    TypeError
        ``params`` is not a :class:`GRUParams`; ``x`` or ``h`` is not a floating-point array, or is a NumPy masked
        array or matrix (pass ``np.asarray(...)``); dtypes differ; ``linear_before_reset`` is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected).
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_gru(3, 4, seed=0)
    >>> x = np.ones((2, 3), dtype="float32")
    >>> h = np.zeros((2, 4), dtype="float32")
    >>> ar.gru_cell(x, h, params).shape
    (2, 4)
    >>> ar.gru_cell(x, h, params, linear_before_reset=False).shape
    (2, 4)
    """
    p = prepare_cell("gru", x, h, params, {"linear_before_reset": linear_before_reset}, "h")
    xp = p.xp
    h_new = gru_step(xp, linear(xp, p.x, params.weight_ih, params.bias_ih), p.state[0], params, linear_before_reset)
    return _unbatch(xp, h_new, p.unbatched)
