"""The seed tutorial's functions, unchanged in meaning, on every backend.

The tutorial keeps the weights of an RNN cell in one matrix acting on the concatenation
``[h, x]``: ``h' = tanh([h, x] @ w + b)`` with ``w (s + n_features, s)`` and ``b (1, s)``. For NumPy
inputs these functions return exactly what the tutorial's NumPy code returns.
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
    """One step: ``tanh([h, x] @ w + b)``. ``x (1, n_features)``, ``h (1, s)`` -> ``(1, s)``."""
    xp, _, _ = namespace_of(x=x, h=h, w=w, b=b)
    _check_step(x, h, s)
    _check_concat_weight(w, b, s, x.shape[1], "w", "b")
    return _step(xp, x, h, w, b)


def _step(xp: Any, x: Array, h: Array, w: Array, b: Array) -> Array:
    concatenated = xp.concat([h, x], axis=-1)
    return xp.tanh(xp.matmul(concatenated, w) + b)


def forward(x: Array, h: Array, s: int, w: Array, b: Array) -> Array:
    """Run ``step_forward`` over the rows of ``x (time_steps, n_features)``; returns the last ``h (1, s)``."""
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
    """One LSTM step in the tutorial's concatenated style; returns ``(h', c')``, each ``(1, s)``.

    ``W_f, W_i, W_o, W_t`` (forget, input, output gates and the tanh layer) are ``(s + n_features, s)``
    acting on ``[h, x]``; biases ``(1, s)``. ``f, i, o = sigmoid(...)``, ``t = tanh(...)``,
    ``c' = f * c + i * t``, ``h' = o * tanh(c')``.
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
