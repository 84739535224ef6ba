"""One time step of each cell, written only against the array API standard.

Each step takes ``gx = x_t W_ih^T + b_ih`` ``(B, G*H)`` (the caller projects all steps in one matmul).
"""

from __future__ import annotations

from typing import Any, Optional

from .layer_norm import cell_output, input_projection, recurrent_projection
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
    """Input projection of every time step at once: ``x (T, B, I)`` -> ``(T, B, G*H)``, one matmul (and, with
    ``params.ln_ih_weight``, layer normalisation of each row before ``b_ih``)."""
    steps, batch, features = x.shape
    flat = xp.reshape(x, (steps * batch, features))
    projected = input_projection(xp, flat, params)
    return xp.reshape(projected, (steps, batch, projected.shape[-1]))


def _split(xp: Any, z: Array, parts: int) -> list[Array]:
    size = z.shape[-1] // parts
    return [z[..., k * size : (k + 1) * size] for k in range(parts)]


def rnn_step(xp: Any, gx: Array, h: Array, params: RNNParamsLike, nonlinearity: str = "tanh") -> Array:
    """``h' = act(gx + h W_hh^T + b_hh)``; ``gx, h (B, H)``."""
    z = gx + recurrent_projection(xp, h, params)
    return xp.tanh(z) if nonlinearity == "tanh" else xp.maximum(z, xp.zeros_like(z))


def _clipped(xp: Any, z: Array, clip: Optional[float]) -> Array:
    return z if clip is None else xp.clip(z, -clip, clip)


#: the Greff et al. (2015) options of the LSTM and their defaults (the vanilla LSTM)
LSTM_VARIANT_DEFAULTS: dict[str, Any] = {
    "input_gate": True,
    "forget_gate": True,
    "output_gate": True,
    "input_activation": "tanh",
    "output_activation": "tanh",
}
#: the activations ``input_activation`` / ``output_activation`` may name
LSTM_ACTIVATIONS = ("tanh", "identity")


def lstm_variant_changes(params: Any, options: dict[str, Any]) -> list[str]:
    """What of a call departs from the LSTM the fast paths implement: each non-default Greff option as
    ``"name=value"``, and ``"weight_gg (full gate recurrence)"``; empty for every other call."""
    changes = [
        f"{name}={options[name]!r}"
        for name, default in LSTM_VARIANT_DEFAULTS.items()
        if name in options and options[name] != default
    ]
    if getattr(params, "weight_gg", None) is not None:
        changes.append("weight_gg (full gate recurrence)")
    return changes


def lstm_base_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the Greff options (for the fast paths, which run only calls where those are defaults)."""
    return {name: value for name, value in options.items() if name not in LSTM_VARIANT_DEFAULTS}


def _activation(xp: Any, z: Array, name: str) -> Array:
    return xp.tanh(z) if name == "tanh" else z


def lstm_step(
    xp: Any,
    gx: Array,
    h: Array,
    c: Array,
    params: LSTMParamsLike,
    coupled: bool = False,
    clip: Optional[float] = None,
    *,
    input_gate: bool = True,
    forget_gate: bool = True,
    output_gate: bool = True,
    input_activation: str = "tanh",
    output_activation: str = "tanh",
    gates: Optional[Array] = None,
) -> tuple[Array, ...]:
    """One LSTM step (PyTorch formulas; peepholes, ``coupled`` and ``clip`` as ONNX/onnxruntime; the variants of
    Greff et al. 2015).

    ``gx (B, 4H)``, ``h (B, P or H)``, ``c (B, H)`` -> ``(h', c')``; with ``params.weight_gg`` (full gate
    recurrence) also ``gates (B, 3H)``, the previous step's ``[i, f, o]``, and the result is ``(h', c', gates')``.
    Peepholes: the input and forget gates see ``c_{t-1}``, the output gate sees ``c_t``.
    ``coupled``: ``f = 1 - i`` (and with ``weight_gg`` the previous ``f`` is ``1 - i_{t-1}``). ``clip``: every gate
    pre-activation used is clipped to [-clip, clip]. ``input_gate`` / ``forget_gate`` / ``output_gate=False``: that
    gate is 1. ``input_activation`` (of the block input ``g``) and ``output_activation`` (of ``c'`` in ``h'``):
    ``"tanh"`` or ``"identity"``. Layer normalisation (``params.ln_*``, ``_core/layer_norm.py``): ``gx`` holds
    ``LN_ih(x W_ih^T) + b_ih``, the recurrent term is ``LN_hh(h W_hh^T) + b_hh`` and ``h' = o * act(LN_c(c'))``.
    """
    z = gx + recurrent_projection(xp, h, params)
    zi, zf, zg, zo = _split(xp, z, 4)
    weight_gg = getattr(params, "weight_gg", None)
    if weight_gg is not None:
        hidden = c.shape[-1]
        previous = gates
        if coupled:  # the previous forget gate is 1 - i_{t-1}, whatever the state holds there
            previous = xp.concat([gates[..., :hidden], 1.0 - gates[..., :hidden], gates[..., 2 * hidden :]], axis=-1)
        ri, rf, ro = _split(xp, linear(xp, previous, weight_gg), 3)
        zi, zf, zo = zi + ri, zf + rf, zo + ro
    if input_gate:
        if params.peephole_i is not None:
            zi = zi + params.peephole_i * c
        input_value = sigmoid(xp, _clipped(xp, zi, clip))
    else:
        input_value = None
    if coupled:
        forget_value = 1.0 - input_value
    elif forget_gate:
        if params.peephole_f is not None:
            zf = zf + params.peephole_f * c
        forget_value = sigmoid(xp, _clipped(xp, zf, clip))
    else:
        forget_value = None
    cell_gate = _activation(xp, _clipped(xp, zg, clip), input_activation)
    kept = c if forget_value is None else forget_value * c
    c_new = kept + (cell_gate if input_value is None else input_value * cell_gate)
    if output_gate:
        if params.peephole_o is not None:
            zo = zo + params.peephole_o * c_new
        output_value = sigmoid(xp, _clipped(xp, zo, clip))
        h_new = output_value * _activation(xp, cell_output(xp, c_new, params), output_activation)
    else:
        output_value = None
        h_new = _activation(xp, cell_output(xp, c_new, params), output_activation)
    if params.weight_hr is not None:
        h_new = linear(xp, h_new, params.weight_hr)
    if weight_gg is None:
        return h_new, c_new
    return h_new, c_new, xp.concat([input_value, forget_value, output_value], axis=-1)


#: why a GRU with ``linear_before_reset=False`` refuses ``ln_hh_*``
LN_HH_BEFORE_RESET = (
    "layer normalisation of the recurrent projection (params.ln_hh_weight) needs linear_before_reset=True: with "
    "linear_before_reset=False the candidate's recurrent term (r * h) W_hn^T is no part of one projection W_hh h"
)


def gru_step(xp: Any, gx: Array, h: Array, params: GRUParamsLike, linear_before_reset: bool = True) -> Array:
    """One GRU step, gates r, z, n (PyTorch). ``gx (B, 3H)``, ``h (B, H)`` -> ``h'``.

    ``linear_before_reset=True`` (PyTorch): ``n = tanh(gx_n + r * (h W_hn^T + b_hn))``.
    ``linear_before_reset=False`` (ONNX default, Keras ``reset_after=False``):
    ``n = tanh(gx_n + (r * h) W_hn^T + b_hn)``.
    With ``params.ln_hh_weight`` (linear before reset only) ``h W_hh^T`` is layer-normalised before ``b_hh``.
    """
    hidden = h.shape[-1]
    gx_r, gx_z, gx_n = _split(xp, gx, 3)
    weight_hh = params.weight_hh
    bias_hh = params.bias_hh
    if linear_before_reset:
        gh_r, gh_z, gh_n = _split(xp, recurrent_projection(xp, h, params), 3)
        reset = sigmoid(xp, gx_r + gh_r)
        update = sigmoid(xp, gx_z + gh_z)
        candidate = xp.tanh(gx_n + reset * gh_n)
    else:
        if getattr(params, "ln_hh_weight", None) is not None:
            raise ValueError(LN_HH_BEFORE_RESET)
        gates_bias = None if bias_hh is None else bias_hh[: 2 * hidden]
        gh_r, gh_z = _split(xp, linear(xp, h, weight_hh[: 2 * hidden, :], gates_bias), 2)
        reset = sigmoid(xp, gx_r + gh_r)
        update = sigmoid(xp, gx_z + gh_z)
        candidate_bias = None if bias_hh is None else bias_hh[2 * hidden :]
        candidate = xp.tanh(gx_n + linear(xp, reset * h, weight_hh[2 * hidden :, :], candidate_bias))
    return (1.0 - update) * candidate + update * h
