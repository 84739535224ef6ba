"""Run torch.nn layers and cells with arrayrnn's (NumPy) params: the oracle we did not write."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def _torch():
    import torch

    return torch


def load_layer(kind: str, params: Any, *, nonlinearity: str = "tanh"):
    """A one-layer torch.nn.RNN/LSTM/GRU (float64) holding ``params``."""
    torch = _torch()
    input_size, hidden = params.input_size, params.hidden_size
    bias = params.bias_ih is not None
    if kind == "lstm":
        layer = torch.nn.LSTM(input_size, hidden, bias=bias, proj_size=params.proj_size)
    elif kind == "gru":
        layer = torch.nn.GRU(input_size, hidden, bias=bias)
    else:
        layer = torch.nn.RNN(input_size, hidden, bias=bias, nonlinearity=nonlinearity)
    layer = layer.double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(np.asarray(params.weight_ih, dtype=np.float64)))
        layer.weight_hh_l0.copy_(torch.from_numpy(np.asarray(params.weight_hh, dtype=np.float64)))
        if bias:
            layer.bias_ih_l0.copy_(torch.from_numpy(np.asarray(params.bias_ih, dtype=np.float64)))
            layer.bias_hh_l0.copy_(torch.from_numpy(np.asarray(params.bias_hh, dtype=np.float64)))
        if kind == "lstm" and params.weight_hr is not None:
            layer.weight_hr_l0.copy_(torch.from_numpy(np.asarray(params.weight_hr, dtype=np.float64)))
    return layer


def run_layer(
    kind: str,
    params: Any,
    x: np.ndarray,
    state: Any = None,
    lengths: Optional[np.ndarray] = None,
    reverse: bool = False,
    dtype: Any = np.float64,
    **options: Any,
):
    """torch's answer for a time-major batch; ``reverse`` by flipping each sequence within its length."""
    torch = _torch()
    layer = load_layer(kind, params, **options)
    if dtype == np.float32:
        layer = layer.float()
    steps, batch, _ = x.shape
    lengths_list = [steps] * batch if lengths is None else [int(n) for n in lengths]
    x_t = torch.from_numpy(np.array(x, dtype=dtype))
    if reverse:
        x_t = _flip_within(torch, x_t, lengths_list)
    torch_state = None
    if state is not None:
        if kind == "lstm":
            torch_state = tuple(torch.from_numpy(np.array(s, dtype=dtype))[None] for s in state)
        else:
            torch_state = torch.from_numpy(np.array(state, dtype=dtype))[None]
    with torch.no_grad():
        if lengths is None:
            y, final = layer(x_t, torch_state)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, lengths_list, enforce_sorted=False)
            y_packed, final = layer(packed, torch_state)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, total_length=steps)
    if reverse:
        y = _flip_within(torch, y, lengths_list)
    if kind == "lstm":
        return y.numpy(), (final[0][0].numpy(), final[1][0].numpy())
    return y.numpy(), final[0].numpy()


def _flip_within(torch, x, lengths):
    out = x.clone()
    for b, n in enumerate(lengths):
        out[:n, b] = torch.flip(x[:n, b], dims=[0])
    return out


def run_cell(kind: str, params: Any, x: np.ndarray, state: Any, dtype: Any = np.float64, **options: Any):
    """torch.nn.RNNCell/LSTMCell/GRUCell with ``params`` (no projection, peepholes or ONNX options)."""
    torch = _torch()
    input_size, hidden = params.input_size, params.hidden_size
    bias = params.bias_ih is not None
    if kind == "lstm":
        cell = torch.nn.LSTMCell(input_size, hidden, bias=bias)
    elif kind == "gru":
        cell = torch.nn.GRUCell(input_size, hidden, bias=bias)
    else:
        cell = torch.nn.RNNCell(input_size, hidden, bias=bias, **options)
    cell = cell.double() if dtype == np.float64 else cell.float()
    to = lambda a: torch.from_numpy(np.array(a, dtype=dtype))  # noqa: E731
    with torch.no_grad():
        cell.weight_ih.copy_(to(params.weight_ih))
        cell.weight_hh.copy_(to(params.weight_hh))
        if bias:
            cell.bias_ih.copy_(to(params.bias_ih))
            cell.bias_hh.copy_(to(params.bias_hh))
        if kind == "lstm":
            h, c = cell(to(x), (to(state[0]), to(state[1])))
            return h.numpy(), c.numpy()
        return cell(to(x), to(state)).numpy()
