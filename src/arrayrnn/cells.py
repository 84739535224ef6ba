"""One time step of each cell: the public, validated entry points.

Shapes: ``x (B, I)`` or unbatched ``(I,)``; states ``(B, H)`` or ``(H,)`` (an LSTM ``h`` with a
projection is ``(B, P)``). The namespace comes from the inputs; nothing is moved between backends.
"""

from __future__ import annotations

from typing import Any, Optional

from ._core.layer_norm import input_projection
from ._core.steps import gru_step, lstm_step, rnn_step
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
    h_new = rnn_step(xp, input_projection(xp, p.x, params), p.state[0], params, nonlinearity)
    return _unbatch(xp, h_new, p.unbatched)


def lstm_cell(
    x: Array,
    state: tuple[Array, ...],
    params: LSTMParams,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
    input_gate: bool = True,
    forget_gate: bool = True,
    output_gate: bool = True,
    input_activation: str = "tanh",
    output_activation: str = "tanh",
) -> tuple[Array, ...]:
    """One LSTM step (``torch.nn.LSTMCell``, plus ONNX peepholes, ``coupled`` and ``clip``, and the variants of
    Greff et al. 2015, "LSTM: A Search Space Odyssey").

    With ``z = x W_ih^T + b_ih + h W_hh^T + b_hh`` split into the gate blocks ``i, f, g, o`` (PyTorch order)::

        i = sigmoid(z_i + p_i * c)      f = sigmoid(z_f + p_f * c)     (f = 1 - i with coupled=True)
        g = tanh(z_g)                   c' = f * c + i * g
        o = sigmoid(z_o + p_o * c')     h' = o * tanh(c')              (then h' W_hr^T with a projection)

    The peephole terms ``p_* (H,)`` (ONNX semantics: ``i, f`` see ``c``, ``o`` sees ``c'``) are there only when
    ``params`` has peepholes. With ``clip``, every gate pre-activation used is clipped to ``[-clip, clip]`` before
    its activation (ONNX ``clip``).

    The variants of Greff et al. (2015): ``input_gate=False`` sets ``i = 1`` (NIG), ``forget_gate=False`` sets
    ``f = 1`` (NFG), ``output_gate=False`` sets ``o = 1`` (NOG); ``input_activation="identity"`` replaces the
    ``tanh`` of ``g`` (NIAF) and ``output_activation="identity"`` the ``tanh`` of ``c'`` in ``h'`` (NOAF). The rows
    of an absent gate in the weights and biases, and its peephole, are not used (their gradients are zero). With
    ``params.weight_gg`` (full gate recurrence, FGR) the pre-activations of ``i, f, o`` each get
    ``weight_gg @ [i_prev; f_prev; o_prev]``, and the state is a triple ``(h, c, g)`` with ``g = [i, f, o]``
    ``(B, 3H)`` (with ``coupled=True`` the ``f_prev`` read is ``1 - i_prev``).

    Parameters
    ----------
    x : array, shape (B, I) or unbatched (I,)
        The input of this step, floating point, in the dtype of ``params``.
    state : tuple (h, c) of arrays, or (h, c, g) with ``params.weight_gg``
        ``h (B, H)`` (``(B, P)`` with a projection), ``c (B, H)`` and, with the full gate recurrence, the previous
        gate activations ``g (B, 3H)``; unbatched ``(H,)`` / ``(P,)`` / ``(3H,)``.
    params : LSTMParams
        ``weight_ih (4H, I)``, ``weight_hh (4H, H or P)``, optional biases, projection, peepholes and
        ``weight_gg`` (see :func:`init_lstm`).
    coupled : bool, optional
        Coupled input-forget gate, ``f = 1 - i`` (CIFG; ONNX ``input_forget``). Default ``False``.
    clip : float or None, optional
        A positive bound for every gate pre-activation; ``None`` (default) does not clip. A bound beyond the
        dtype's range clips at the dtype's largest finite value.
    input_gate, forget_gate, output_gate : bool, optional
        ``False``: that gate is absent (is 1). Default ``True``.
    input_activation, output_activation : {"tanh", "identity"}, optional
        The activation of the block input ``g`` and of ``c'`` in ``h'``. Default ``"tanh"``.

    Returns
    -------
    h_new : array, shape (B, H) or (B, P) with a projection; unbatched (H,) or (P,)
        The new hidden state.
    c_new : array, shape (B, H) or unbatched (H,)
        The new cell state.
    g_new : array, shape (B, 3H) or unbatched (3H,)
        Only with ``params.weight_gg``: the gate activations ``[i, f, o]`` of this step.

    Raises
    ------
    TypeError
        ``params`` is not an :class:`LSTMParams`; ``state`` is not a pair ``(h, c)`` (a triple ``(h, c, g)`` with
        ``params.weight_gg``); an argument is not a floating-point array, or is a NumPy masked array or matrix
        (pass ``np.asarray(...)``); dtypes differ; ``coupled``, ``input_gate``, ``forget_gate`` or ``output_gate``
        is not a bool.
    ValueError
        A shape does not fit (the message names the argument and the shape expected); ``clip`` is not ``None``
        or a positive number; an activation is neither ``"tanh"`` nor ``"identity"``; ``coupled=True`` with
        ``input_gate=False`` or ``forget_gate=False``; ``params.weight_gg`` with an absent gate.
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

    Greff et al.'s variants: no output gate, linear output activation; and the full gate recurrence:

    >>> h, c = ar.lstm_cell(x, (h, c), params, output_gate=False, output_activation="identity")
    >>> params = ar.init_lstm(3, 4, gate_recurrence=True, seed=0)
    >>> zeros = np.zeros((2, 4), "float32")
    >>> h, c, g = ar.lstm_cell(x, (zeros, zeros, np.zeros((2, 12), "float32")), params)
    >>> g.shape
    (2, 12)
    """
    variant = {
        "input_gate": input_gate,
        "forget_gate": forget_gate,
        "output_gate": output_gate,
        "input_activation": input_activation,
        "output_activation": output_activation,
    }
    options = {"coupled": coupled, "clip": clip, **variant}
    p = prepare_cell("lstm", x, state, params, options, "state")  # bounds clip to the dtype's range
    xp = p.xp
    gates = p.state[2] if len(p.state) > 2 else None
    new_state = lstm_step(
        xp,
        input_projection(xp, p.x, params),
        p.state[0],
        p.state[1],
        params,
        coupled,
        options["clip"],
        gates=gates,
        **variant,
    )
    return tuple(_unbatch(xp, part, p.unbatched) for part in new_state)


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
        A shape does not fit (the message names the argument and the shape expected); ``params.ln_hh_weight``
        (layer normalisation of ``h W_hh^T``) with ``linear_before_reset=False``.
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
    h_new = gru_step(xp, input_projection(xp, p.x, params), p.state[0], params, linear_before_reset)
    return _unbatch(xp, h_new, p.unbatched)
