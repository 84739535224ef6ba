"""The ``forward+backward`` mode of ``arrayrnn bench``: ``arrayrnn.vjp`` against torch autograd.

Registered with :func:`arrayrnn._tools.bench.register_mode`; outputs and gradients must agree before timing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bench_modes import Runner, importable, register_mode

_FIELDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _flattened(outputs: list[np.ndarray], param_grads: list[np.ndarray], terms: int) -> np.ndarray:
    """``y``, ``dx`` and the parameter gradients as one vector for one ``allclose``.

    A parameter gradient sums ``terms = T*B`` products of random-signed cotangents, so it grows like
    ``sqrt(T*B)``: it is divided by that (the same fixed number for both libraries, so a wrong scale
    is still caught) to bring every part to the size the harness's tolerances are meant for.
    """
    scale = 1.0 / np.sqrt(terms)
    parts = [np.asarray(a, dtype=np.float64).ravel() for a in outputs]
    parts += [np.asarray(g, dtype=np.float64).ravel() * scale for g in param_grads]
    return np.concatenate(parts)


def _cotangent(x: np.ndarray, hidden: int) -> np.ndarray:
    steps, batch, _ = x.shape
    return np.random.default_rng(3).standard_normal((steps, batch, hidden), dtype=np.float32)


def _arrayrnn_runner(kind: str, params: Any, x: np.ndarray, backend: str) -> Runner:
    import arrayrnn

    function = {"lstm": arrayrnn.lstm, "gru": arrayrnn.gru, "rnn": arrayrnn.rnn}[kind]
    placed_params = arrayrnn.to_backend(params, backend)
    placed_x = arrayrnn.to_backend(x, backend)
    dy = arrayrnn.to_backend(_cotangent(x, params.hidden_size), backend)

    def call() -> Any:
        (y, _), pullback = arrayrnn.vjp(function, placed_x, placed_params)
        dx, d_params = pullback((dy, None))
        return y, dx, d_params

    def to_numpy(result: Any) -> np.ndarray:
        y, dx, d_params = result
        grads = [arrayrnn.to_numpy(getattr(d_params, name)) for name in _FIELDS]
        return _flattened([arrayrnn.to_numpy(y), arrayrnn.to_numpy(dx)], grads, x.shape[0] * x.shape[1])

    return Runner("arrayrnn", call, to_numpy)


def _torch_runner(kind: str, params: Any, x: np.ndarray, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    layer_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    layer = layer_class(params.input_size, params.hidden_size)
    with torch.no_grad():
        for name in _FIELDS:
            getattr(layer, f"{name}_l0").copy_(torch.from_numpy(np.asarray(getattr(params, name))))
    inputs = torch.from_numpy(x.copy()).requires_grad_(True)
    dy = torch.from_numpy(_cotangent(x, params.hidden_size))
    weights = [getattr(layer, f"{name}_l0") for name in _FIELDS]

    def call() -> Any:
        inputs.grad = None
        for weight in weights:
            weight.grad = None
        y = layer(inputs)[0]
        y.backward(dy)
        return y.detach(), inputs.grad, [weight.grad for weight in weights]

    def to_numpy(result: Any) -> np.ndarray:
        y, dx, grads = result
        return _flattened([y.numpy(), dx.numpy()], [grad.numpy() for grad in grads], x.shape[0] * x.shape[1])

    return Runner("torch", call, to_numpy, lambda: {"torch": torch.get_num_threads()})


def forward_backward_runners(
    kind: str, params: Any, x: np.ndarray, threads: int, backend: str
) -> tuple[list[Runner], dict[str, str]]:
    """The ``forward+backward`` mode's runners: arrayrnn (vjp) and torch autograd when installed."""
    runners = [_arrayrnn_runner(kind, params, x, backend)]
    missing = [module for module in ("onnx", "onnxruntime") if not importable(module)]
    skipped: dict[str, str] = {
        "onnxruntime": f"not installed ({', '.join(missing)}), and it has no backward pass anyway"
        if missing
        else "no backward pass (inference only)"
    }
    if importable("torch"):
        runners.append(_torch_runner(kind, params, x, threads))
    else:
        skipped["torch"] = "not installed (torch)"
    return runners, skipped


register_mode("forward+backward", forward_backward_runners)
