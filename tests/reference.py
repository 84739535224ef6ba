"""An independent float64 NumPy reference, written from the published equations only.

It deliberately shares no code with arrayrnn: one sequence at a time, plain loops, explicit
slicing of each sequence to its own length (and explicit reversal), gate by gate.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def _f64(value: Any) -> Optional[np.ndarray]:
    return None if value is None else np.asarray(value, dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp_z = np.exp(z[~positive])
    out[~positive] = exp_z / (1.0 + exp_z)
    return out


def _bias(params: Any, name: str, size: int) -> np.ndarray:
    value = getattr(params, name)
    return np.zeros(size) if value is None else _f64(value)


def rnn_step(x: np.ndarray, h: np.ndarray, p: Any, nonlinearity: str = "tanh") -> np.ndarray:
    hidden = p.weight_hh.shape[0]
    z = _f64(p.weight_ih) @ x + _bias(p, "bias_ih", hidden) + _f64(p.weight_hh) @ h + _bias(p, "bias_hh", hidden)
    return np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0)


def lstm_step(x, h, c, p, coupled: bool = False, clip: Optional[float] = None):
    hidden = p.weight_ih.shape[0] // 4
    W, R = _f64(p.weight_ih), _f64(p.weight_hh)
    b = _bias(p, "bias_ih", 4 * hidden) + _bias(p, "bias_hh", 4 * hidden)

    def pre(k: int) -> np.ndarray:
        rows = slice(k * hidden, (k + 1) * hidden)
        return W[rows] @ x + R[rows] @ h + b[rows]

    def cl(z: np.ndarray) -> np.ndarray:
        return z if clip is None else np.minimum(np.maximum(z, -clip), clip)

    zi, zf, zg, zo = pre(0), pre(1), pre(2), pre(3)
    if p.peephole_i is not None:
        zi = zi + _f64(p.peephole_i) * c
    i = _sigmoid(cl(zi))
    if coupled:
        f = 1.0 - i
    else:
        if p.peephole_f is not None:
            zf = zf + _f64(p.peephole_f) * c
        f = _sigmoid(cl(zf))
    g = np.tanh(cl(zg))
    c_new = f * c + i * g
    if p.peephole_o is not None:
        zo = zo + _f64(p.peephole_o) * c_new
    o = _sigmoid(cl(zo))
    h_new = o * np.tanh(c_new)
    if p.weight_hr is not None:
        h_new = _f64(p.weight_hr) @ h_new
    return h_new, c_new


def gru_step(x, h, p, linear_before_reset: bool = True):
    hidden = p.weight_hh.shape[1]
    W, R = _f64(p.weight_ih), _f64(p.weight_hh)
    bw, br = _bias(p, "bias_ih", 3 * hidden), _bias(p, "bias_hh", 3 * hidden)
    rows = [slice(k * hidden, (k + 1) * hidden) for k in range(3)]
    r = _sigmoid(W[rows[0]] @ x + bw[rows[0]] + R[rows[0]] @ h + br[rows[0]])
    z = _sigmoid(W[rows[1]] @ x + bw[rows[1]] + R[rows[1]] @ h + br[rows[1]])
    if linear_before_reset:
        n = np.tanh(W[rows[2]] @ x + bw[rows[2]] + r * (R[rows[2]] @ h + br[rows[2]]))
    else:
        n = np.tanh(W[rows[2]] @ x + bw[rows[2]] + R[rows[2]] @ (r * h) + br[rows[2]])
    return (1.0 - z) * n + z * h


def sequence(kind: str, x: np.ndarray, p: Any, state: Any = None, lengths=None, reverse: bool = False, **options):
    """Reference for a time-major batch ``x (T, B, I)``; returns ``(y (T, B, H_out), final states)``."""
    x = _f64(x)
    steps, batch, _ = x.shape
    hidden = p.weight_ih.shape[0] // {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    out_size = p.weight_hr.shape[0] if kind == "lstm" and p.weight_hr is not None else hidden
    if state is None:
        state = (
            (np.zeros((batch, out_size)), np.zeros((batch, hidden))) if kind == "lstm" else np.zeros((batch, hidden))
        )
    lengths = [steps] * batch if lengths is None else [int(n) for n in lengths]
    y = np.zeros((steps, batch, out_size))
    finals_h = np.zeros((batch, out_size))
    finals_c = np.zeros((batch, hidden))
    for b in range(batch):
        order = list(range(lengths[b]))
        if reverse:
            order = order[::-1]
        if kind == "lstm":
            h, c = _f64(state[0])[b], _f64(state[1])[b]
        else:
            h = _f64(state)[b]
        for t in order:
            if kind == "lstm":
                h, c = lstm_step(x[t, b], h, c, p, **options)
            elif kind == "gru":
                h = gru_step(x[t, b], h, p, **options)
            else:
                h = rnn_step(x[t, b], h, p, **options)
            y[t, b] = h
        finals_h[b] = h
        if kind == "lstm":
            finals_c[b] = c
    return y, ((finals_h, finals_c) if kind == "lstm" else finals_h)
