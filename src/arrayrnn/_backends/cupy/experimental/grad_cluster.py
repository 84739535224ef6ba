"""CuPy gradient path "cluster" (Hopper and later): the recording forward and the backward, each ONE cluster launch.

Supports what ``cluster.py`` does, float32/float64, where the backward's shared memory holds ``W_hh^T`` rows and
two copies of the gate gradients (``ValueError`` naming the paths to use otherwise).
"""

from __future__ import annotations

from typing import Any, Optional

from ..common import (
    cupy_module,
    dtype_name,
    int32,
    lengths_int64,
    options_mask,
    placeholder,
    project_inputs,
    refuse,
    time_order,
)
from ..grad_fused import (
    Backward,
    State,
    gru_param_grads,
    initial_cotangent,
    lstm_param_grads,
    params_like,
    previous_hidden,
    rnn_param_grads,
)
from ..graph import step_arguments
from ..sources import OPTIONS
from . import cluster as cupy_cluster

Array = Any


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why the cluster gradient kernels cannot run a call: what the cluster forward cannot (``cluster.supports``)."""
    return cupy_cluster.supports(kind, params, options)


def sequence_vjp(
    xp: Any,
    kind: str,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, State, Backward]:
    """``(y, final_state, backward)`` as ``grad_fused.sequence_vjp``, on cluster kernels (a direct call is still
    refused what :func:`supports` refuses)."""
    refuse(supports(kind, params, options))
    return _RECORDERS[kind](cupy_module(), x, params, tuple(state), lengths, reverse, **options)


class _Call:
    """Sizes and arguments every kernel of one call shares."""

    def __init__(self, x: Array, hidden: int, reverse: bool, lengths: Optional[Array]) -> None:
        self.dtype = dtype_name(x.dtype)
        self.steps, self.batch, _ = x.shape
        self.hidden, self.reverse = hidden, reverse
        self.lengths = lengths_int64(lengths)
        self.sizes = (int32(self.steps), int32(self.batch), int32(hidden), int32(bool(reverse)))

    def launch(self, base: str, gates: int, backward: bool) -> cupy_cluster.ClusterLaunch:
        """The launch of ``base``: the forward exchanges ``h`` (H columns), the backward the gate gradients."""
        exchanged = gates * self.hidden if backward else None
        return cupy_cluster.plan_launch(base, self.dtype, self.batch, self.hidden, gates, exchanged)

    def empty(self, *shape: int) -> Array:
        return cupy_module().empty(shape, dtype=self.dtype)

    def last_step(self) -> Optional[int]:
        return time_order(self.steps, self.reverse)[-1] if self.steps else None


def _output_cotangent(cp: Any, dy: Optional[Array], dtype: str) -> tuple[Array, int]:
    """``dy`` as the kernels read it (C-contiguous ``(T, B, H)``; the placeholder when absent) and its option bit."""
    if dy is None:
        return placeholder(dtype), 0
    return cp.ascontiguousarray(dy, dtype=dtype), OPTIONS["OPT_DY"]


def _transposed(cp: Any, weight: Array) -> Array:
    """``weight^T`` C-contiguous: the backward kernels stage rows of it (the columns of ``W_hh``)."""
    return cp.ascontiguousarray(weight.T)


# ----------------------------------------------------------------------------------------------
# RNN: the plain cluster forward keeps what the backward needs (y)


def _rnn(
    cp: Any,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    *,
    nonlinearity: str = "tanh",
) -> tuple[Array, State, Backward]:
    call = _Call(x, params.hidden_size, reverse, lengths)
    backward_launch = call.launch("rnn_cluster_grad", 1, backward=True)  # refuses before anything runs
    y, final = cupy_cluster.sequence("rnn", None, x, params, state, lengths, reverse, {"nonlinearity": nonlinearity})
    h0 = state[0]
    options = options_mask(lengths=lengths, relu=nonlinearity == "relu")

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_arg, dy_bit = _output_cotangent(cp, dy, call.dtype)
            carry = initial_cotangent(cp, d_final[0], h0)
            dz = call.empty(call.steps, call.batch, call.hidden)
            weight_t = _transposed(cp, params.weight_hh)
            backward_launch.run((weight_t, call.lengths, dy_arg, y, carry, dz, *call.sizes, int32(options | dy_bit)))
            h_prev = previous_hidden(cp, y, h0, lengths, reverse)
            dx, grads = rnn_param_grads(cp, x, params, lengths, dz, h_prev)
            return dx, params_like(params, grads), (carry,)

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# LSTM


def _lstm(
    cp: Any,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, State, Backward]:
    call = _Call(x, params.hidden_size, reverse, lengths)
    T, B, H = call.steps, call.batch, call.hidden
    record, backward_launch = call.launch("lstm_cluster_record", 4, False), call.launch("lstm_cluster_grad", 4, True)
    step_weights, options, (clip_value,) = step_arguments(
        "lstm", params, lengths, call.dtype, {"coupled": coupled, "clip": clip}
    )
    peepholes = step_weights[3:]
    h0, c0 = (cp.ascontiguousarray(s) for s in state)
    gx = project_inputs(x, params.weight_ih)
    h_last, cells, y, z = call.empty(B, H), call.empty(T, B, H), call.empty(T, B, H), call.empty(T, B, 4 * H)
    record.run((gx, *step_weights, call.lengths, h0, c0, h_last, cells, y, z, *call.sizes, int32(options), clip_value))
    last = call.last_step()
    final = (h_last, c0.copy() if last is None else cells[last].copy())

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_arg, dy_bit = _output_cotangent(cp, dy, call.dtype)
            carry, dc = initial_cotangent(cp, d_final[0], h0), initial_cotangent(cp, d_final[1], c0)
            dz = call.empty(T, B, 4 * H)
            weight_t = _transposed(cp, params.weight_hh)
            args = (weight_t, call.lengths, dy_arg, z, cells, c0, *peepholes, carry, dc, dz, *call.sizes)
            backward_launch.run((*args, int32(options | dy_bit), clip_value))
            h_prev = previous_hidden(cp, y, h0, lengths, reverse)
            dx, grads = lstm_param_grads(cp, x, params, lengths, reverse, dz, cells, c0, h_prev)
            return dx, params_like(params, grads), (carry, dc)

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# GRU (linear_before_reset=True)


def _gru(
    cp: Any,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    *,
    linear_before_reset: bool = True,
) -> tuple[Array, State, Backward]:
    call = _Call(x, params.hidden_size, reverse, lengths)
    T, B, H = call.steps, call.batch, call.hidden
    record, backward_launch = call.launch("gru_cluster_record", 3, False), call.launch("gru_cluster_grad", 3, True)
    weights, options, _ = step_arguments("gru", params, lengths, call.dtype, {})
    h0 = cp.ascontiguousarray(state[0])
    gx = project_inputs(x, params.weight_ih)
    h_last, y, gates, hidden_n = call.empty(B, H), call.empty(T, B, H), call.empty(T, B, 3 * H), call.empty(T, B, H)
    record.run((gx, *weights, call.lengths, h0, h_last, y, gates, hidden_n, *call.sizes, int32(options)))

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_arg, dy_bit = _output_cotangent(cp, dy, call.dtype)
            carry = initial_cotangent(cp, d_final[0], h0)
            h_prev = cp.ascontiguousarray(previous_hidden(cp, y, h0, lengths, reverse))
            part, dgx, dgh = call.empty(B, H), call.empty(T, B, 3 * H), call.empty(T, B, 3 * H)
            weight_t = _transposed(cp, params.weight_hh)
            args = (weight_t, call.lengths, dy_arg, gates, hidden_n, h_prev, part, carry, dgx, dgh, *call.sizes)
            backward_launch.run((*args, int32(options | dy_bit)))
            dx, grads = gru_param_grads(cp, x, params, lengths, dgx, h_prev, dgh=dgh)
            return dx, params_like(params, grads), (carry,)

    return y, (h_last,), backward


_RECORDERS = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}
