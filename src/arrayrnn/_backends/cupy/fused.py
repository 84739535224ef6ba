"""CuPy fast path "fused": one cuBLAS GEMM for the input projection of all steps, then per step one
cuBLAS matmul for the recurrent half and one fused kernel for all the pointwise math of the cell.

The time loops issue their work through an ``ops`` object (:data:`EAGER` here; ``fused_graph`` records them).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from . import policy
from .common import (
    blocks_for,
    clip_scalar,
    contiguous_or_placeholder,
    cupy_module,
    dtype_name,
    int32,
    kernel,
    lengths_int64,
    lstm_options,
    options_mask,
    project_inputs,
    time_order,
)
from .sources import OPTIONS

Array = Any

IMPL = "fused"


class Ops(Protocol):
    """Where a time loop sends its work: ``matmul(a, b, out)`` (``out = a @ b``) and kernel launches."""

    def matmul(self, a: Array, b: Array, out: Array) -> None: ...

    def launch(self, k: Any, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None: ...


class Eager:
    """Runs each product (``cupy.matmul``) and launch at once, on the current stream."""

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        cupy_module().matmul(a, b, out=out)

    def launch(self, k: Any, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        k(grid, block, args)


EAGER = Eager()


def rnn_loop(
    ops: Ops, gx: Array, params: Any, h: Array, lengths: Optional[Array], reverse: bool, *, nonlinearity: str
) -> Array:
    """The time loop from the input projection ``gx (T, B, H)`` (no bias): updates ``h (B, H)`` in place and
    returns ``y (T, B, H)``."""
    cp = cupy_module()
    steps, batch, hidden = gx.shape
    dtype = dtype_name(gx.dtype)
    y = cp.empty((steps, batch, hidden), dtype=gx.dtype)
    gh = cp.empty((batch, hidden), dtype=gx.dtype)
    options = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths, relu=nonlinearity == "relu")
    fixed = (
        contiguous_or_placeholder(params.bias_ih, gx.dtype),
        contiguous_or_placeholder(params.bias_hh, gx.dtype),
        lengths_int64(lengths),
    )
    weight_hh_t = params.weight_hh.T
    step = kernel("rnn_fused_step", dtype)
    threads = policy.current().fused_block
    grid = blocks_for(batch * hidden, threads)
    for t in time_order(steps, reverse):
        ops.matmul(h, weight_hh_t, gh)
        ops.launch(
            step,
            grid,
            (threads,),
            (gx[t], gh, *fixed, h, y[t], int32(batch), int32(hidden), int32(t), int32(options)),
        )
    return y


def lstm_loop(
    ops: Ops,
    gx: Array,
    params: Any,
    h: Array,
    c: Array,
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool,
    clip: Optional[float],
) -> Array:
    """The time loop from ``gx (T, B, 4H)`` (no bias): updates ``h (B, P)`` and ``c (B, H)`` in place and returns
    ``y (T, B, P)`` (``P``: the projection's size, else ``H``)."""
    cp = cupy_module()
    steps, batch, _ = gx.shape
    hidden = params.hidden_size
    dtype = dtype_name(gx.dtype)
    out_size = h.shape[1]
    y = cp.empty((steps, batch, out_size), dtype=gx.dtype)
    gh = cp.empty((batch, 4 * hidden), dtype=gx.dtype)
    options = lstm_options(params, lengths, coupled, clip)
    lengths_arg = lengths_int64(lengths)
    fixed = (
        contiguous_or_placeholder(params.bias_ih, gx.dtype),
        contiguous_or_placeholder(params.bias_hh, gx.dtype),
        contiguous_or_placeholder(params.peephole_i, gx.dtype),
        contiguous_or_placeholder(params.peephole_f, gx.dtype),
        contiguous_or_placeholder(params.peephole_o, gx.dtype),
        lengths_arg,
    )
    clip_value = clip_scalar(dtype, clip)
    weight_hh_t = params.weight_hh.T
    step = kernel("lstm_fused_step", dtype)
    threads = policy.current().fused_block
    grid = blocks_for(batch * hidden, threads)
    sizes = (int32(batch), int32(hidden))
    if params.weight_hr is None:
        for t in time_order(steps, reverse):
            ops.matmul(h, weight_hh_t, gh)
            ops.launch(
                step,
                grid,
                (threads,),
                (gx[t], gh, *fixed, h, c, y[t], *sizes, int32(t), int32(options), clip_value),
            )
        return y
    # projection: the kernel leaves o * tanh(c) in `full`; cuBLAS projects it; a second kernel
    # applies the lengths mask to h and y (the state must not move on padded steps)
    full = cp.empty((batch, hidden), dtype=gx.dtype)
    projected = cp.empty((batch, out_size), dtype=gx.dtype)
    weight_hr_t = params.weight_hr.T
    update = kernel("project_update", dtype)
    update_grid = blocks_for(batch * out_size, threads)
    project_options = int32(options | OPTIONS["OPT_PROJECT"])
    for t in time_order(steps, reverse):
        ops.matmul(h, weight_hh_t, gh)
        ops.launch(
            step,
            grid,
            (threads,),
            (gx[t], gh, *fixed, full, c, y[t], *sizes, int32(t), project_options, clip_value),
        )
        ops.matmul(full, weight_hr_t, projected)
        ops.launch(
            update,
            update_grid,
            (threads,),
            (projected, lengths_arg, h, y[t], int32(batch), int32(out_size), int32(t), int32(options)),
        )
    return y


def gru_loop(
    ops: Ops, gx: Array, params: Any, h: Array, lengths: Optional[Array], reverse: bool, *, linear_before_reset: bool
) -> Array:
    """The time loop from ``gx (T, B, 3H)`` (no bias): updates ``h (B, H)`` in place and returns ``y (T, B, H)``."""
    cp = cupy_module()
    steps, batch, _ = gx.shape
    hidden = params.hidden_size
    dtype = dtype_name(gx.dtype)
    y = cp.empty((steps, batch, hidden), dtype=gx.dtype)
    options = int32(options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths))
    bias_ih = contiguous_or_placeholder(params.bias_ih, gx.dtype)
    bias_hh = contiguous_or_placeholder(params.bias_hh, gx.dtype)
    lengths_arg = lengths_int64(lengths)
    threads = policy.current().fused_block
    grid, block = blocks_for(batch * hidden, threads), (threads,)
    sizes = (int32(batch), int32(hidden))
    if linear_before_reset:
        gh = cp.empty((batch, 3 * hidden), dtype=gx.dtype)
        weight_hh_t = params.weight_hh.T
        step = kernel("gru_fused_step", dtype)
        for t in time_order(steps, reverse):
            ops.matmul(h, weight_hh_t, gh)
            ops.launch(
                step, grid, block, (gx[t], gh, bias_ih, bias_hh, lengths_arg, h, y[t], *sizes, int32(t), options)
            )
        return y
    # linear_before_reset=False: r must be known before the candidate's matmul (of r * h)
    gh_rz = cp.empty((batch, 2 * hidden), dtype=gx.dtype)
    gh_n = cp.empty((batch, hidden), dtype=gx.dtype)
    reset_h = cp.empty((batch, hidden), dtype=gx.dtype)
    weight_rz_t = params.weight_hh[: 2 * hidden].T
    weight_n_t = params.weight_hh[2 * hidden :].T
    reset = kernel("gru_fused_reset", dtype)
    finish = kernel("gru_fused_finish", dtype)
    for t in time_order(steps, reverse):
        ops.matmul(h, weight_rz_t, gh_rz)
        ops.launch(reset, grid, block, (gx[t], gh_rz, bias_ih, bias_hh, h, reset_h, *sizes, options))
        ops.matmul(reset_h, weight_n_t, gh_n)
        finish_args = (gx[t], gh_rz, gh_n, bias_ih, bias_hh, lengths_arg, h, y[t], *sizes, int32(t), options)
        ops.launch(finish, grid, block, finish_args)
    return y


def _rnn(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         nonlinearity: str = "tanh") -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    h = state[0].copy()
    y = rnn_loop(EAGER, project_inputs(x, params.weight_ih), params, h, lengths, reverse, nonlinearity=nonlinearity)
    return y, (h,)


def _lstm(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *, coupled: bool = False,
          clip: Optional[float] = None) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    h, c = state[0].copy(), state[1].copy()
    gx = project_inputs(x, params.weight_ih)
    y = lstm_loop(EAGER, gx, params, h, c, lengths, reverse, coupled=coupled, clip=clip)
    return y, (h, c)


def _gru(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         linear_before_reset: bool = True) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    h = state[0].copy()
    gx = project_inputs(x, params.weight_ih)
    y = gru_loop(EAGER, gx, params, h, lengths, reverse, linear_before_reset=linear_before_reset)
    return y, (h,)


_SEQUENCES = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}


def sequence(
    kind: str,
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, tuple[Array, ...]]:
    """One layer of cell ``kind`` on this path: ``(y, final_state)``; ``options``: the cell's keyword options. The
    caller (the hook in ``_backends/cupy/__init__.py``) has entered the device, checked the dtype and handled an
    empty batch. Every option of every cell runs here."""
    return _SEQUENCES[kind](x, params, state, lengths, reverse, **options)
