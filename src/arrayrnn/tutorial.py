"""The seed tutorial's functions, unchanged in meaning, on every backend.

The weights act on the concatenation ``[h, x]``: ``h' = tanh([h, x] @ w + b)``; for NumPy inputs the results
are exactly those of the tutorial's NumPy code.
"""

from __future__ import annotations

from typing import Any

from ._core.steps import sigmoid
from ._validate import shape_text
from .backend import namespace_of

__all__ = ["forward", "lstm_step_forward", "step_forward"]

Array = Any


def _check_concat_weight(w: Array, b: Array, s: int, features: int, w_name: str, b_name: str) -> None:
    if tuple(w.shape) != (s + features, s):
        raise ValueError(
            f"{w_name} must have shape (s + n_features, s) = ({s + features}, {s}), got {shape_text(w.shape)}"
        )
    if tuple(b.shape) not in ((1, s), (s,)):
        raise ValueError(f"{b_name} must have shape (1, s) = (1, {s}), got {shape_text(b.shape)}")


def _check_step(x: Array, h: Array, s: int) -> None:
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"s (the hidden size) must be a positive integer, got {s!r}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (1, n_features), got {shape_text(x.shape)}")
    if h.ndim != 2 or h.shape[1] != s or h.shape[0] != x.shape[0]:
        raise ValueError(f"h must have shape (1, s) = ({x.shape[0]}, {s}), got {shape_text(h.shape)}")


def step_forward(x: Array, h: Array, s: int, w: Array, b: Array) -> Array:
    """One RNN step in the tutorial's style: ``tanh([h, x] @ w + b)``.

    For NumPy inputs the result is exactly what the tutorial's NumPy code returns; any backend works, the
    result on the inputs' backend.

    Parameters
    ----------
    x : array, shape (1, n_features)
        The input of this step.
    h : array, shape (1, s)
        The previous hidden state.
    s : int
        The hidden size.
    w : array, shape (s + n_features, s)
        Weights acting on the concatenation ``[h, x]`` (hidden rows first).
    b : array, shape (1, s)
        The bias (``(s,)`` works too).

    Returns
    -------
    array, shape (1, s)
        The new hidden state.

    Raises
    ------
    ValueError
        ``s`` is not a positive integer, or a shape does not fit (the message names the argument).
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrnn.tutorial import step_forward
    >>> s, n_features = 4, 3
    >>> rng = np.random.default_rng(0)
    >>> w, b = rng.standard_normal((s + n_features, s)), np.zeros((1, s))
    >>> x, h = np.ones((1, n_features)), np.zeros((1, s))
    >>> h_new = step_forward(x, h, s, w, b)
    >>> h_new.shape
    (1, 4)
    >>> bool(np.array_equal(h_new, np.tanh(np.concatenate([h, x], axis=1) @ w + b)))
    True
    """
    xp, _, _ = namespace_of(x=x, h=h, w=w, b=b)
    _check_step(x, h, s)
    _check_concat_weight(w, b, s, x.shape[1], "w", "b")
    return _step(xp, x, h, w, b)


def _step(xp: Any, x: Array, h: Array, w: Array, b: Array) -> Array:
    concatenated = xp.concat([h, x], axis=-1)
    return xp.tanh(xp.matmul(concatenated, w) + b)


def forward(x: Array, h: Array, s: int, w: Array, b: Array) -> Array:
    """Run :func:`step_forward` over the rows of ``x`` and return the last hidden state.

    Parameters
    ----------
    x : array, shape (time_steps, n_features)
        The sequence, one row per step (at least one).
    h : array, shape (1, s)
        The initial hidden state.
    s : int
        The hidden size.
    w : array, shape (s + n_features, s)
        Weights acting on ``[h, x]``.
    b : array, shape (1, s)
        The bias.

    Returns
    -------
    array, shape (1, s)
        The hidden state after the last step.

    Raises
    ------
    ValueError
        ``x`` is not 2-D or has no rows, ``s`` is not a positive integer, or a shape does not fit.
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrnn.tutorial import forward, step_forward
    >>> s, n_features = 4, 3
    >>> rng = np.random.default_rng(0)
    >>> w, b = rng.standard_normal((s + n_features, s)), np.zeros((1, s))
    >>> x = rng.standard_normal((10, n_features))
    >>> h_last = forward(x, np.zeros((1, s)), s, w, b)
    >>> h_last.shape
    (1, 4)
    >>> h = np.zeros((1, s))
    >>> for t in range(10):
    ...     h = step_forward(x[t : t + 1], h, s, w, b)
    >>> bool(np.array_equal(h, h_last))
    True
    """
    xp, _, _ = namespace_of(x=x, h=h, w=w, b=b)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (time_steps, n_features), got {shape_text(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x must have at least one time step (the tutorial's loop never runs for 0 steps)")
    _check_step(x[0:1, :], h, s)
    _check_concat_weight(w, b, s, x.shape[1], "w", "b")
    hidden = h
    for t in range(x.shape[0]):
        hidden = _step(xp, xp.reshape(x[t, :], (1, -1)), hidden, w, b)
    return hidden


def lstm_step_forward(
    x: Array,
    h: Array,
    c: Array,
    W_f: Array,
    W_i: Array,
    W_o: Array,
    W_t: Array,
    b_f: Array,
    b_i: Array,
    b_o: Array,
    b_t: Array,
) -> tuple[Array, Array]:
    """One LSTM step in the tutorial's concatenated style, with the tutorial's weight names.

    With ``z = [h, x]``::

        f = sigmoid(z @ W_f + b_f)      i = sigmoid(z @ W_i + b_i)      o = sigmoid(z @ W_o + b_o)
        t = tanh(z @ W_t + b_t)         c' = f * c + i * t              h' = o * tanh(c')

    Parameters
    ----------
    x : array, shape (1, n_features)
        The input of this step.
    h, c : array, shape (1, s)
        The previous hidden and cell states.
    W_f, W_i, W_o, W_t : array, shape (s + n_features, s)
        Forget, input and output gates and the tanh layer, acting on ``[h, x]``.
    b_f, b_i, b_o, b_t : array, shape (1, s)
        Their biases.

    Returns
    -------
    h_new : array, shape (1, s)
        The new hidden state.
    c_new : array, shape (1, s)
        The new cell state.

    Raises
    ------
    ValueError
        A shape does not fit (the message names the argument).
    BackendMismatchError
        The arguments live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrnn.tutorial import lstm_step_forward
    >>> s, n_features = 4, 3
    >>> rng = np.random.default_rng(0)
    >>> W = [rng.standard_normal((s + n_features, s)) for _ in range(4)]
    >>> biases = [np.zeros((1, s))] * 4
    >>> h, c = lstm_step_forward(np.ones((1, n_features)), np.zeros((1, s)), np.zeros((1, s)), *W, *biases)
    >>> h.shape, c.shape
    ((1, 4), (1, 4))
    """
    arrays = dict(x=x, h=h, c=c, W_f=W_f, W_i=W_i, W_o=W_o, W_t=W_t, b_f=b_f, b_i=b_i, b_o=b_o, b_t=b_t)
    xp, _, _ = namespace_of(**arrays)
    s = h.shape[-1] if h.ndim == 2 else 0
    _check_step(x, h, s)
    if tuple(c.shape) != tuple(h.shape):
        raise ValueError(f"c must have the shape of h {shape_text(h.shape)}, got {shape_text(c.shape)}")
    for gate in "fiot":
        _check_concat_weight(arrays[f"W_{gate}"], arrays[f"b_{gate}"], s, x.shape[1], f"W_{gate}", f"b_{gate}")
    concatenated = xp.concat([h, x], axis=-1)
    forget_gate = sigmoid(xp, xp.matmul(concatenated, W_f) + b_f)
    input_gate = sigmoid(xp, xp.matmul(concatenated, W_i) + b_i)
    output_gate = sigmoid(xp, xp.matmul(concatenated, W_o) + b_o)
    candidate = xp.tanh(xp.matmul(concatenated, W_t) + b_t)
    c_new = forget_gate * c + input_gate * candidate
    return output_gate * xp.tanh(c_new), c_new
