"""One time step of each cell, written only against the array API standard.

Each step takes ``gx = x_t W_ih^T + b_ih`` ``(B, G*H)`` (the caller projects all steps in one matmul).
"""

from __future__ import annotations

from typing import Any, Optional

from .types import GRUParamsLike, LSTMParamsLike, RNNParamsLike

Array = Any


def sigmoid(xp: Any, z: Array) -> Array:
    # tanh form: no exp overflow for large |z| (no warnings at |z| ~ 1e4), exact in float arithmetic.
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def linear(xp: Any, x: Array, weight: Array, bias: Optional[Array] = None) -> Array:
    """``x @ weight^T + bias`` for ``x (N, In)``, ``weight (Out, In)``, ``bias (Out,)``."""
    out = xp.matmul(x, xp.matrix_transpose(weight))
    return out if bias is None else out + bias


def project_inputs(xp: Any, x: Array, params: Any) -> Array:
    """Input projection of every time step at once: ``x (T, B, I)`` -> ``(T, B, G*H)``, one matmul."""
    steps, batch, features = x.shape
    flat = xp.reshape(x, (steps * batch, features))
    projected = linear(xp, flat, params.weight_ih, params.bias_ih)
    return xp.reshape(projected, (steps, batch, projected.shape[-1]))


def _split(xp: Any, z: Array, parts: int) -> list[Array]:
    size = z.shape[-1] // parts
    return [z[..., k * size : (k + 1) * size] for k in range(parts)]


def rnn_step(xp: Any, gx: Array, h: Array, params: RNNParamsLike, nonlinearity: str = "tanh") -> Array:
    """``h' = act(gx + h W_hh^T + b_hh)``; ``gx, h (B, H)``."""
    z = gx + linear(xp, h, params.weight_hh, params.bias_hh)
    return xp.tanh(z) if nonlinearity == "tanh" else xp.maximum(z, xp.zeros_like(z))


def _clipped(xp: Any, z: Array, clip: Optional[float]) -> Array:
    return z if clip is None else xp.clip(z, -clip, clip)


def lstm_step(
    xp: Any,
    gx: Array,
    h: Array,
    c: Array,
    params: LSTMParamsLike,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, Array]:
    """One LSTM step (PyTorch formulas; peepholes, ``coupled`` and ``clip`` as ONNX/onnxruntime).

    ``gx (B, 4H)``, ``h (B, P or H)``, ``c (B, H)`` -> ``(h', c')``.
    Peepholes: the input and forget gates see ``c_{t-1}``, the output gate sees ``c_t``.
    ``coupled``: ``f = 1 - i``. ``clip``: every gate pre-activation is clipped to [-clip, clip].
    """
    z = gx + linear(xp, h, params.weight_hh, params.bias_hh)
    zi, zf, zg, zo = _split(xp, z, 4)
    if params.peephole_i is not None:
        zi = zi + params.peephole_i * c
    input_gate = sigmoid(xp, _clipped(xp, zi, clip))
    if coupled:
        forget_gate = 1.0 - input_gate
    else:
        if params.peephole_f is not None:
            zf = zf + params.peephole_f * c
        forget_gate = sigmoid(xp, _clipped(xp, zf, clip))
    cell_gate = xp.tanh(_clipped(xp, zg, clip))
    c_new = forget_gate * c + input_gate * cell_gate
    if params.peephole_o is not None:
        zo = zo + params.peephole_o * c_new
    output_gate = sigmoid(xp, _clipped(xp, zo, clip))
    h_new = output_gate * xp.tanh(c_new)
    if params.weight_hr is not None:
        h_new = linear(xp, h_new, params.weight_hr)
    return h_new, c_new


def gru_step(xp: Any, gx: Array, h: Array, params: GRUParamsLike, linear_before_reset: bool = True) -> Array:
    """One GRU step, gates r, z, n (PyTorch). ``gx (B, 3H)``, ``h (B, H)`` -> ``h'``.

    ``linear_before_reset=True`` (PyTorch): ``n = tanh(gx_n + r * (h W_hn^T + b_hn))``.
    ``linear_before_reset=False`` (ONNX default, Keras ``reset_after=False``):
    ``n = tanh(gx_n + (r * h) W_hn^T + b_hn)``.
    """
    hidden = h.shape[-1]
    gx_r, gx_z, gx_n = _split(xp, gx, 3)
    weight_hh = params.weight_hh
    bias_hh = params.bias_hh
    if linear_before_reset:
        gh_r, gh_z, gh_n = _split(xp, linear(xp, h, weight_hh, bias_hh), 3)
        reset = sigmoid(xp, gx_r + gh_r)
        update = sigmoid(xp, gx_z + gh_z)
        candidate = xp.tanh(gx_n + reset * gh_n)
    else:
        gates_bias = None if bias_hh is None else bias_hh[: 2 * hidden]
        gh_r, gh_z = _split(xp, linear(xp, h, weight_hh[: 2 * hidden, :], gates_bias), 2)
        reset = sigmoid(xp, gx_r + gh_r)
        update = sigmoid(xp, gx_z + gh_z)
        candidate_bias = None if bias_hh is None else bias_hh[2 * hidden :]
        candidate = xp.tanh(gx_n + linear(xp, reset * h, weight_hh[2 * hidden :, :], candidate_bias))
    return (1.0 - update) * candidate + update * h
