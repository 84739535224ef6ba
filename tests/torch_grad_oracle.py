"""Gradients from torch.autograd (an oracle we did not write) for arrayrnn's (NumPy) params.

Two flavours: ``torch.nn`` layers and cells (packed sequences for ``lengths``), and a plain
transcription of the published equations run under autograd for the options ``torch.nn`` lacks
(peepholes, coupled gates, clip, ``linear_before_reset=False``), one sequence at a time.
Both return NumPy gradients keyed ``x``, ``state`` (a list), and ``params.<field>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


def _torch():
    import torch

    return torch


def _tensor(value: Any, dtype: Any, grad: bool = True):
    torch = _torch()
    tensor = torch.tensor(np.asarray(value, dtype=dtype))
    tensor.requires_grad_(grad)
    return tensor


def _states(kind: str, state: Any) -> list:
    return list(state) if kind == "lstm" else [state]


def _flip_within(torch, x, lengths):
    """Reverse each sequence within its own length: a differentiable gather."""
    steps = x.shape[0]
    index = np.tile(np.arange(steps)[:, None], (1, len(lengths)))
    for b, n in enumerate(lengths):
        index[:n, b] = np.arange(n)[::-1]
    index_t = torch.tensor(index)[..., None].expand(-1, -1, x.shape[2])
    return torch.gather(x, 0, index_t)


def layer_grads(
    kind: str,
    params: Any,
    x: np.ndarray,
    state: Any,
    cotangent: tuple[np.ndarray, Any],
    *,
    lengths: Optional[list[int]] = None,
    reverse: bool = False,
    dtype: Any = np.float64,
    nonlinearity: str = "tanh",
) -> dict[str, Any]:
    """``torch.nn.RNN/LSTM/GRU`` (one layer) gradients of ``<cotangent, (y, final_state)>``; time-major ``x``."""
    torch = _torch()
    bias = params.bias_ih is not None
    if kind == "lstm":
        layer = torch.nn.LSTM(params.input_size, params.hidden_size, bias=bias, proj_size=params.proj_size)
    elif kind == "gru":
        layer = torch.nn.GRU(params.input_size, params.hidden_size, bias=bias)
    else:
        layer = torch.nn.RNN(params.input_size, params.hidden_size, bias=bias, nonlinearity=nonlinearity)
    layer = layer.to(torch.float64 if dtype == np.float64 else torch.float32)
    names = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias_ih": "bias_ih_l0", "bias_hh": "bias_hh_l0"}
    if kind == "lstm" and params.weight_hr is not None:
        names["weight_hr"] = "weight_hr_l0"
    with torch.no_grad():
        for ours, theirs in names.items():
            if getattr(params, ours) is not None:
                getattr(layer, theirs).copy_(torch.tensor(np.asarray(getattr(params, ours), dtype=dtype)))
    steps, batch, _ = x.shape
    lengths_list = [steps] * batch if lengths is None else list(lengths)
    x_t = _tensor(x, dtype)
    states = [_tensor(s, dtype) for s in _states(kind, state)]
    inputs = _flip_within(torch, x_t, lengths_list) if reverse else x_t
    torch_state = tuple(s[None] for s in states) if kind == "lstm" else states[0][None]
    if lengths is None:
        y, final = layer(inputs, torch_state)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(inputs, lengths_list, enforce_sorted=False)
        y_packed, final = layer(packed, torch_state)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, total_length=steps)
    if reverse:
        y = _flip_within(torch, y, lengths_list)
    finals = [f[0] for f in final] if kind == "lstm" else [final[0]]
    dy, d_final = cotangent
    loss = (y * torch.tensor(dy)).sum()
    for f, d in zip(finals, _states(kind, d_final)):
        loss = loss + (f * torch.tensor(d)).sum()
    loss.backward()
    grads = {"x": x_t.grad.numpy(), "state": [s.grad.numpy() for s in states]}
    for ours, theirs in names.items():
        if getattr(params, ours) is not None:
            grads[f"params.{ours}"] = getattr(layer, theirs).grad.numpy()
    return grads


def cell_grads(
    kind: str, params: Any, x: np.ndarray, state: Any, cotangent: Any, *, dtype: Any = np.float64, **options: Any
) -> dict[str, Any]:
    """``torch.nn.RNNCell/LSTMCell/GRUCell`` gradients of ``<cotangent, cell(x, state)>``."""
    torch = _torch()
    bias = params.bias_ih is not None
    if kind == "lstm":
        cell = torch.nn.LSTMCell(params.input_size, params.hidden_size, bias=bias)
    elif kind == "gru":
        cell = torch.nn.GRUCell(params.input_size, params.hidden_size, bias=bias)
    else:
        cell = torch.nn.RNNCell(params.input_size, params.hidden_size, bias=bias, **options)
    cell = cell.to(torch.float64 if dtype == np.float64 else torch.float32)
    fields = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    with torch.no_grad():
        for name in fields:
            getattr(cell, name).copy_(torch.tensor(np.asarray(getattr(params, name), dtype=dtype)))
    x_t = _tensor(x, dtype)
    states = [_tensor(s, dtype) for s in _states(kind, state)]
    out = cell(x_t, tuple(states)) if kind == "lstm" else cell(x_t, states[0])
    outs = list(out) if kind == "lstm" else [out]
    loss = sum((o * torch.tensor(d)).sum() for o, d in zip(outs, _states(kind, cotangent)))
    loss.backward()
    grads = {"x": x_t.grad.numpy(), "state": [s.grad.numpy() for s in states]}
    for name in fields:
        grads[f"params.{name}"] = getattr(cell, name).grad.numpy()
    return grads


# ----------------------------------------------------------------------------------------------
# the published equations under autograd (every option), one sequence at a time


def _lstm_step(torch, x, h, c, p, coupled, clip):
    z = x @ p["weight_ih"].T + h @ p["weight_hh"].T
    if "bias_ih" in p:
        z = z + p["bias_ih"] + p["bias_hh"]
    zi, zf, zg, zo = z.chunk(4, dim=-1)

    def cl(a):
        return a if clip is None else torch.clamp(a, -clip, clip)

    if "peephole_i" in p:
        zi = zi + p["peephole_i"] * c
    i = torch.sigmoid(cl(zi))
    if coupled:
        f = 1 - i
    else:
        if "peephole_f" in p:
            zf = zf + p["peephole_f"] * c
        f = torch.sigmoid(cl(zf))
    g = torch.tanh(cl(zg))
    c_new = f * c + i * g
    if "peephole_o" in p:
        zo = zo + p["peephole_o"] * c_new
    o = torch.sigmoid(cl(zo))
    h_new = o * torch.tanh(c_new)
    if "weight_hr" in p:
        h_new = h_new @ p["weight_hr"].T
    return h_new, c_new


def _gru_step(torch, x, h, p, linear_before_reset):
    W_r, W_z, W_n = p["weight_ih"].chunk(3, dim=0)
    R_r, R_z, R_n = p["weight_hh"].chunk(3, dim=0)
    zeros = torch.zeros(3 * R_r.shape[0], dtype=x.dtype)
    b_r, b_z, b_n = p.get("bias_ih", zeros).chunk(3)
    c_r, c_z, c_n = p.get("bias_hh", zeros).chunk(3)
    r = torch.sigmoid(x @ W_r.T + b_r + h @ R_r.T + c_r)
    z = torch.sigmoid(x @ W_z.T + b_z + h @ R_z.T + c_z)
    if linear_before_reset:
        n = torch.tanh(x @ W_n.T + b_n + r * (h @ R_n.T + c_n))
    else:
        n = torch.tanh(x @ W_n.T + b_n + (r * h) @ R_n.T + c_n)
    return (1 - z) * n + z * h


def _rnn_step(torch, x, h, p, nonlinearity):
    z = x @ p["weight_ih"].T + h @ p["weight_hh"].T
    if "bias_ih" in p:
        z = z + p["bias_ih"] + p["bias_hh"]
    return torch.tanh(z) if nonlinearity == "tanh" else torch.relu(z)


def equation_grads(
    kind: str,
    params: Any,
    x: np.ndarray,
    state: Any,
    cotangent: tuple[np.ndarray, Any],
    *,
    lengths: Optional[list[int]] = None,
    reverse: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Autograd through the equations, float64, time-major ``x``; padded steps give zero output."""
    torch = _torch()
    p = {
        f.name: _tensor(getattr(params, f.name), np.float64)
        for f in dataclasses.fields(params)
        if getattr(params, f.name) is not None
    }
    x_t = _tensor(x, np.float64)
    states = [_tensor(s, np.float64) for s in _states(kind, state)]
    steps, batch, _ = x.shape
    lengths = [steps] * batch if lengths is None else list(lengths)
    dy, d_final = cotangent
    loss = 0
    for b in range(batch):
        carry = [s[b] for s in states]
        order = list(range(lengths[b]))
        for t in order[::-1] if reverse else order:
            if kind == "lstm":
                carry = list(
                    _lstm_step(
                        torch, x_t[t, b], carry[0], carry[1], p, options.get("coupled", False), options.get("clip")
                    )
                )
            elif kind == "gru":
                carry = [_gru_step(torch, x_t[t, b], carry[0], p, options.get("linear_before_reset", True))]
            else:
                carry = [_rnn_step(torch, x_t[t, b], carry[0], p, options.get("nonlinearity", "tanh"))]
            loss = loss + (carry[0] * torch.tensor(dy[t, b])).sum()
        for value, d in zip(carry, _states(kind, d_final)):
            loss = loss + (value * torch.tensor(d[b])).sum()
    loss.backward()
    grads = {"x": x_t.grad.numpy(), "state": [s.grad.numpy() for s in states]}
    for name, tensor in p.items():
        grads[f"params.{name}"] = tensor.grad.numpy() if tensor.grad is not None else np.zeros(tensor.shape)
    return grads


def model_grads(
    model: Any,
    x: np.ndarray,
    state: Any,
    cotangent: tuple[np.ndarray, Any],
    *,
    lengths: Optional[list[int]] = None,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    """``torch.nn.RNN/LSTM/GRU`` (stacked, bidirectional, projection) gradients for an arrayrnn model's weights.

    ``x`` in the model's layout; params gradients keyed by torch's names (``weight_ih_l0_reverse``).
    """
    torch = _torch()
    options = {"nonlinearity": model.nonlinearity} if model.kind == "rnn" else {}
    if model.kind == "lstm":
        options["proj_size"] = model.proj_size
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[model.kind]
    layer = cls(
        model.input_size,
        model.hidden_size,
        model.num_layers,
        bias=model.bias,
        batch_first=model.batch_first,
        bidirectional=model.bidirectional,
        **options,
    ).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            getattr(layer, name).copy_(torch.tensor(np.asarray(value, dtype=dtype)))
    x_t = _tensor(x, dtype)
    states = [_tensor(s, dtype) for s in _states(model.kind, state)]
    torch_state = tuple(states) if model.kind == "lstm" else states[0]
    if lengths is None:
        y, final = layer(x_t, torch_state)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, lengths, batch_first=model.batch_first, enforce_sorted=False
        )
        y_packed, final = layer(packed, torch_state)
        steps = x.shape[1] if model.batch_first else x.shape[0]
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=model.batch_first, total_length=steps)
    finals = list(final) if model.kind == "lstm" else [final]
    dy, d_final = cotangent
    loss = (y * torch.tensor(dy)).sum()
    for f, d in zip(finals, _states(model.kind, d_final)):
        loss = loss + (f * torch.tensor(d)).sum()
    loss.backward()
    grads = {"x": x_t.grad.numpy(), "state": [s.grad.numpy() for s in states]}
    for name, parameter in layer.named_parameters():
        grads[name] = parameter.grad.numpy()
    return grads
