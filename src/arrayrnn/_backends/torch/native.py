"""torch's own recurrent modules run one arrayrnn layer: a weightless ``nn.LSTM``/``nn.GRU``/``nn.RNN`` per
configuration (and thread) is handed the caller's tensors as its weights for the call; ``lengths`` go through
packed sequences, ``reverse`` through a flip or a per-row gather. Autograd (and ``torch.func``) flows through."""

from __future__ import annotations

import threading
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Tensor = torch.Tensor


class _LSTM(nn.LSTM):
    def flatten_parameters(self) -> None:
        # On CUDA, nn.RNNBase compacts its weights into one cuDNN buffer by re-pointing each weight tensor's storage
        # (torch._cudnn_rnn_flatten_weight): done to the caller's tensors, that would change the caller's arrays.
        # Unflattened, cuDNN copies the weights for the call instead (nothing of the caller's is touched).
        return None


class _GRU(nn.GRU):
    flatten_parameters = _LSTM.flatten_parameters


class _RNN(nn.RNN):
    flatten_parameters = _LSTM.flatten_parameters


MODULES: dict[str, type] = {"lstm": _LSTM, "gru": _GRU, "rnn": _RNN}
#: the torch class whose implementation runs, for ``ar.explain``
TORCH_NAMES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}

_local = threading.local()  # one module per configuration and thread: a call sets the module's weights


class Layer:
    """A cached one-layer torch module without weights of its own, and the arrayrnn field behind each weight name."""

    __slots__ = ("module", "names", "fields", "flat", "idle")

    def __init__(self, kind: str, input_size: int, hidden: int, proj: int, bias: bool, relu: bool, dtype: Any):
        options: dict[str, Any] = {"bias": bias, "device": "meta", "dtype": dtype}  # meta: no memory for weights
        if kind == "lstm" and proj:
            options["proj_size"] = proj
        if kind == "rnn":
            options["nonlinearity"] = "relu" if relu else "tanh"
        module = MODULES[kind](input_size, hidden, **options)
        self.names = tuple(name for name, _ in module.named_parameters())
        for name in self.names:  # no weights of its own from now on: each call hands it the caller's tensors
            delattr(module, name)
        self.module = module
        self.fields = tuple(name[: -len("_l0")] for name in self.names)  # weight_ih_l0 -> weight_ih
        # nn.RNNBase.forward runs on its _flat_weights list (what __setattr__ of a weight updates, and what
        # _update_flat_weights leaves alone once no weight attribute exists): setting that list directly saves
        # nn.Module.__setattr__ per weight per call (~10 us, 5 % of a small call); torch versions without it take
        # the public way, a setattr per weight
        self.flat = list(getattr(module, "_flat_weights_names", ())) == list(self.names)
        if self.flat and hasattr(module, "_update_flat_weights"):
            # forward's _update_flat_weights re-reads every weight attribute (four failing hasattr calls, ~20 us a
            # call, 10 % of a small LSTM): here the call itself sets the list, so there is nothing to update
            module.__dict__["_update_flat_weights"] = _nothing_to_update
        self.idle = [None] * len(self.names)

    def __call__(self, weights: list[Tensor], inputs: Any, hx: Any) -> tuple[Any, Any]:
        module = self.module
        if self.flat:
            module.__dict__["_flat_weights"] = weights
            try:
                return module.forward(inputs, hx)  # forward, not __call__: no hooks run on this private module
            finally:
                module.__dict__["_flat_weights"] = self.idle  # hold no reference to the caller's tensors
        for name, weight in zip(self.names, weights):
            setattr(module, name, weight)  # nn.RNNBase.__setattr__ keeps its _flat_weights list in step
        try:
            return module.forward(inputs, hx)
        finally:
            for name in self.names:
                setattr(module, name, None)


def _nothing_to_update() -> None:
    return None


def layer(kind: str, params: Any, relu: bool) -> Layer:
    """The cached :class:`Layer` for ``params``' configuration in this thread."""
    try:
        cache = _local.layers
    except AttributeError:  # this thread's first call
        cache = _local.layers = {}
    weight_ih = params.weight_ih
    bias = params.bias_ih is not None or params.bias_hh is not None
    proj = 0 if kind != "lstm" or params.weight_hr is None else int(params.weight_hr.shape[0])
    key = (kind, weight_ih.shape, proj, bias, relu, weight_ih.dtype)
    found = cache.get(key)
    if found is None:
        found = cache[key] = Layer(kind, params.input_size, params.hidden_size, proj, bias, relu, weight_ih.dtype)
    return found


def _weights(found: Layer, params: Any) -> list[Tensor]:
    weights = []
    for field in found.fields:
        value = getattr(params, field)
        if value is None:  # one bias set, the other not: torch's modules take both or neither
            other = params.bias_hh if field == "bias_ih" else params.bias_ih
            value = torch.zeros_like(other)
        weights.append(value)
    return weights


def reverse_index(lengths: Tensor, steps: int) -> Tensor:
    """``(T, B)`` time index that reverses each row's first ``lengths[b]`` steps and keeps its padding in place."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)
    return torch.where(t < lengths, lengths - 1 - t, t)


def _gather_time(a: Tensor, index: Tensor) -> Tensor:
    return torch.gather(a, 0, index.unsqueeze(2).expand(-1, -1, a.shape[2]))


def run(kind: str, x: Tensor, params: Any, state: tuple[Tensor, ...], lengths: Optional[Tensor], reverse: bool,
        relu: bool) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """One validated, time-major layer (``x (T, B, I)``, ``state`` of ``(B, ·)``) on torch's module."""
    found = layer(kind, params, relu)
    weights = _weights(found, params)
    steps = x.shape[0]
    hx: Any = (state[0].unsqueeze(0), state[1].unsqueeze(0)) if kind == "lstm" else state[0].unsqueeze(0)
    if lengths is not None:
        host = lengths.to(device="cpu", dtype=torch.int64)  # pack_padded_sequence takes host lengths only
        if int(host.min()) == steps:  # every row full: packing would change nothing
            lengths = None
    if lengths is None:
        inputs = x.flip(0) if reverse else x
        y, final = found(weights, inputs, hx)
        if reverse:
            y = y.flip(0)
        return y, _final(kind, final)
    index = reverse_index(lengths.to(torch.int64), steps) if reverse else None
    if index is not None:
        x = _gather_time(x, index)
    empty = host == 0
    if bool(empty.any()):
        # torch refuses empty sequences: run them one step on zero input, then restore the arrayrnn result (zero
        # outputs, the initial state) with where, so no gradient reaches them through that step
        keep = (lengths != 0).reshape(1, -1, 1)
        x = torch.where(keep, x, torch.zeros_like(x))  # NaN padding there must not reach the weight gradients
        packed = pack_padded_sequence(x, host.clamp(min=1), enforce_sorted=False)
    else:
        keep = None
        packed = pack_padded_sequence(x, host, enforce_sorted=False)
    y_packed, final = found(weights, packed, hx)
    y, _ = pad_packed_sequence(y_packed, total_length=steps)
    final = _final(kind, final)
    if keep is not None:
        y = torch.where(keep, y, torch.zeros_like(y))
        final = tuple(torch.where(keep[0], new, old) for new, old in zip(final, state))
    if index is not None:
        y = _gather_time(y, index)
    return y, final


def _final(kind: str, final: Any) -> tuple[Tensor, ...]:
    return (final[0].squeeze(0), final[1].squeeze(0)) if kind == "lstm" else (final.squeeze(0),)
