"""CuPy fast path "graph": the whole time loop as one CUDA graph of fused mat-vec + gate kernels.

A plan (its buffers and captured graph) is cached per shapes, dtype, options, device, stream and weight
addresses; ``policy.Config.graph_capture`` off runs the same launches eagerly. No LSTM projection (use "fused").
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any, Optional

from . import policy, runtime
from .common import (
    acc_scalar,
    clip_scalar,
    contiguous_or_placeholder,
    cupy_module,
    dtype_name,
    int32,
    kernel,
    lstm_options,
    lstm_variant_reason,
    options_mask,
    project_inputs,
    refuse,
    time_order,
)
from .sources import BATCH_TILES, graph_kernel_name

Array = Any

IMPL = "graph"


def choose_batch_tile(batch: int, hidden: int, config: Optional[policy.Config] = None) -> int:
    """Batch rows per warp: reuse each weight load for more rows, while keeping >= ``graph_min_warps`` warps
    (``config``: default the current one; its ``graph_force_batch_tile`` where set)."""
    config = config or policy.current()
    forced = config.graph_force_batch_tile
    if forced is not None:
        if forced not in BATCH_TILES:
            raise ValueError(f"graph_force_batch_tile must be one of {BATCH_TILES}, got {forced!r}")
        return forced
    tile = 1
    while tile * 2 <= BATCH_TILES[-1] and tile < batch and -(-batch // (tile * 2)) * hidden >= config.graph_min_warps:
        tile *= 2
    return tile


def launch_shape(
    batch: int, hidden: int, tile: int, config: Optional[policy.Config] = None
) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for a graph kernel: one warp per (hidden unit, batch tile), ``graph_warps_per_block`` warps per
    block (``config``: default the current one)."""
    per_block = (config or policy.current()).graph_warps_per_block
    warps = -(-batch // tile) * hidden
    return (-(-warps // per_block),), (32 * per_block,)


def step_kernel(base: str, dtype: str, tile: int) -> Any:
    """The step kernel ``base`` (a ``*_graph_*`` name) for batch tile ``tile``."""
    return kernel(graph_kernel_name(base, tile), dtype)


@dataclasses.dataclass(frozen=True)
class StepKernels:
    """Which step kernels a plan launches: the warp-per-unit graph kernels (``WARP_PER_UNIT``), or another family
    with the same parameters and step semantics (``experimental/tiled.py``). ``impl``: the path's name;
    ``batch_tile(batch, hidden, config)``: the tile (part of the plan's key); ``launch_shape(batch, hidden, tile,
    config)``: (grid, block); ``kernel(base, dtype, tile)``: the kernel standing in for graph kernel ``base`` (a
    ``*_graph_*`` name). ``config``: the call's ``policy.Config``."""

    impl: str
    batch_tile: Callable[[int, int, policy.Config], int]
    launch_shape: Callable[[int, int, int, policy.Config], tuple[tuple[int], tuple[int]]]
    kernel: Callable[[str, str, int], Any]


#: this module's step kernels (another family passes its own to ``_rnn``, ``_lstm`` and ``_gru``)
WARP_PER_UNIT = StepKernels(IMPL, choose_batch_tile, launch_shape, step_kernel)


@dataclasses.dataclass
class _Plan:
    """A captured sequence: its graph (or eager launches) and the buffers the launches point at."""

    gx: Array  # (T, B, G*H) input projection, written by cuBLAS before each replay
    hidden_states: Array  # (2, B, H) ping-pong: step k reads [k % 2], writes [(k + 1) % 2]
    cell: Optional[Array]  # (B, H) LSTM cell state, updated in place
    y: Array  # (T, B, H)
    lengths: Array  # (B,) int64, or the placeholder
    extra: tuple[Array, ...]  # scratch buffers (GRU r * h)
    launches: list[tuple[Any, tuple[int], tuple[int], tuple[Any, ...]]]
    graph: Any = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def final_hidden(self, steps: int) -> Array:
        return self.hidden_states[steps % 2]


class PlanCache:
    """Plans (captured graphs and the buffers they point at) per key, least recently used dropped first, in the
    runtime's cache ``name`` (``runtime.reset`` drops them).

    The key of :meth:`get` is completed with the current device and stream: a plan's buffers are reused in the
    order of the stream its work is enqueued on.
    """

    def __init__(self, name: str) -> None:
        self._plans = runtime.cache(name)
        self._lock = runtime.lock(name)

    def get(self, key: tuple[Any, ...], build: Callable[[], Any], limit: int) -> Any:
        """The plan for ``key``, made by ``build()`` (under the cache's lock) when there is none; at most ``limit``
        plans are kept."""
        cp = cupy_module()
        key = (*key, cp.cuda.Device().id, int(cp.cuda.get_current_stream().ptr))
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = build()
                while len(self._plans) > limit:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(key)
        return plan

    def __len__(self) -> int:
        return len(self._plans)

    def plans(self) -> list[Any]:
        """The cached plans, least recently used first."""
        with self._lock:
            return list(self._plans.values())


#: this path's plans (evicted LRU beyond ``graph_max_plans``)
_plans = PlanCache(runtime.PLANS + "graph")


def cached_plans() -> int:
    return len(_plans)


def _load(kernels: set[Any]) -> None:
    # module loading is not allowed in every capture mode: load (and compile) before capturing
    for k in kernels:
        k.attributes  # noqa: B018 - the property loads the kernel on the current device


def capture(calls: list[Callable[[], None]], kernels: set[Any]) -> Any:
    """A CUDA graph of ``calls`` (each issues its work on the current stream), captured on a private stream.

    ``kernels`` are loaded first (module loading is not allowed in every capture mode). The capture always ends,
    so an error never leaves a stream capturing; an error while recording is the one reported.
    """
    cp = cupy_module()
    _load(kernels)
    stream = cp.cuda.Stream(non_blocking=True)
    graph = None
    with stream:
        stream.begin_capture()
        recorded = False
        try:
            for call in calls:
                call()
            recorded = True
        finally:
            try:
                graph = stream.end_capture()
            except Exception:
                if recorded:  # otherwise the error that broke the capture is the one to report
                    raise
    return graph


def _capture(launches: list[tuple[Any, tuple[int], tuple[int], tuple[Any, ...]]]) -> Any:
    calls = [functools.partial(k, grid, block, args) for k, grid, block, args in launches]
    return capture(calls, {k for k, _, _, _ in launches})


def _run_plan(plan: _Plan, capture: bool) -> None:
    cp = cupy_module()
    if capture:
        if plan.graph is None:
            plan.graph = _capture(plan.launches)
        plan.graph.launch(stream=cp.cuda.get_current_stream())
    else:
        for k, grid, block, args in plan.launches:
            k(grid, block, args)


def _pointer(array: Array) -> int:
    return int(array.data.ptr)


def _sequence(
    *,
    cell: str,
    x: Array,
    weight_ih: Array,
    graph_weights: tuple[Array, ...],
    initial: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    gates: int,
    options: int,
    key_extra: tuple[Any, ...],
    build: Callable[..., list[tuple[Any, tuple[int], tuple[int], tuple[Any, ...]]]],
    scratch: int = 0,
    steps_with: StepKernels = WARP_PER_UNIT,
) -> tuple[Array, tuple[Array, ...]]:
    """Find or build the plan for this call, fill its inputs, replay, and copy the results out; the plan launches
    the kernels of ``steps_with``."""
    cp = cupy_module()
    config = policy.current()
    dtype = dtype_name(x.dtype)
    steps, batch, _ = x.shape
    hidden = initial[0].shape[1]
    tile = steps_with.batch_tile(batch, hidden, config)
    key = (
        cell,
        dtype,
        steps,
        batch,
        hidden,
        bool(reverse),
        options,
        tile,
        key_extra,
        tuple(_pointer(w) for w in graph_weights),
    )

    def new_plan() -> _Plan:
        plan = _Plan(
            gx=cp.empty((steps, batch, gates * hidden), dtype=x.dtype),
            hidden_states=cp.empty((2, batch, hidden), dtype=x.dtype),
            cell=cp.empty((batch, hidden), dtype=x.dtype) if len(initial) > 1 else None,
            y=cp.empty((steps, batch, hidden), dtype=x.dtype),
            lengths=cp.empty((batch,), dtype="int64")
            if lengths is not None
            else contiguous_or_placeholder(None, "int64"),
            extra=tuple(cp.empty((batch, hidden), dtype=x.dtype) for _ in range(scratch)),
            launches=[],
        )
        grid, block = steps_with.launch_shape(batch, hidden, tile, config)
        plan.launches = build(plan, dtype, tile, grid, block, steps, batch, hidden, reverse, options)
        return plan

    plan = _plans.get(key, new_plan, config.graph_max_plans)
    with plan.lock:
        project_inputs(x, weight_ih, out=plan.gx)
        cp.copyto(plan.hidden_states[0], initial[0])
        if plan.cell is not None:
            cp.copyto(plan.cell, initial[1])
        if lengths is not None:
            cp.copyto(plan.lengths, lengths, casting="unsafe")
        _run_plan(plan, config.graph_capture)
        y = plan.y.copy()
        final = (plan.final_hidden(steps).copy(),) + ((plan.cell.copy(),) if plan.cell is not None else ())
    return y, final


def _steps(plan: _Plan, steps: int, reverse: bool):
    """(t, h_prev, h_next) for each launch in time order (the ping-pong buffers alternate)."""
    for k, t in enumerate(time_order(steps, reverse)):
        yield t, plan.hidden_states[k % 2], plan.hidden_states[(k + 1) % 2]


def recurrent_weights(params: Any, dtype: Any) -> tuple[Array, Array, Array]:
    """``weight_hh`` (C-contiguous), ``bias_ih`` and ``bias_hh`` (placeholders when absent): the arguments that
    follow ``gx`` in every graph step kernel."""
    return (
        cupy_module().ascontiguousarray(params.weight_hh),
        contiguous_or_placeholder(params.bias_ih, dtype),
        contiguous_or_placeholder(params.bias_hh, dtype),
    )


def lstm_step_weights(params: Any, dtype: Any) -> tuple[Array, ...]:
    """``recurrent_weights`` and the three peepholes (placeholders when absent): the LSTM step kernels' weights."""
    peepholes = (params.peephole_i, params.peephole_f, params.peephole_o)
    return (*recurrent_weights(params, dtype), *(contiguous_or_placeholder(p, dtype) for p in peepholes))


#: gate blocks of each cell's recurrent weight (rows of weight_hh per hidden unit)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def step_arguments(
    kind: str, params: Any, lengths: Optional[Array], dtype: str, options: dict[str, Any]
) -> tuple[tuple[Array, ...], int, tuple[Any, ...]]:
    """What a warp-per-unit step of cell ``kind`` takes besides its buffers, from the call's keyword ``options``
    (``nonlinearity``, ``coupled``, ``clip``): the weights (``recurrent_weights``, for the LSTM
    ``lstm_step_weights``), the ``options`` bits, and the trailing arguments (the LSTM's ``clip`` as ``acc_t``
    of ``dtype``, a supported dtype name; none for the others)."""
    if kind == "lstm":
        clip = options.get("clip")
        bits = lstm_options(params, lengths, options.get("coupled", False), clip)
        return lstm_step_weights(params, dtype), bits, (clip_scalar(dtype, clip),)
    relu = options.get("nonlinearity", "tanh") == "relu"
    bits = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths, relu=relu)
    return recurrent_weights(params, dtype), bits, ()


def _one_launch_per_step(base: str, weights: tuple[Array, ...], steps_with: StepKernels):
    """``build`` for a cell whose step is one launch of ``(gx, *weights, lengths, h_prev, h_next, y, B, H, t,
    options)`` (RNN, GRU with ``linear_before_reset``)."""

    def build(plan, dtype, tile, grid, block, steps, batch, hidden, reverse, options):
        step = steps_with.kernel(base, dtype, tile)
        sizes = (int32(batch), int32(hidden))
        launches = []
        for t, prev, nxt in _steps(plan, steps, reverse):
            args = (plan.gx[t], *weights, plan.lengths, prev, nxt, plan.y[t], *sizes, int32(t), int32(options))
            launches.append((step, grid, block, args))
        return launches

    return build


def no_projection(impl: str, kind: str, params: Any) -> Optional[str]:
    """Why path ``impl`` (graph step kernels: no projection) cannot run a call of cell ``kind``, or ``None``."""
    if kind == "lstm" and getattr(params, "weight_hr", None) is not None:
        return f"impl={impl!r} does not support the LSTM projection (proj_size > 0); use impl='fused' or 'fused_graph'"
    return None


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why this path cannot run a call (the LSTM projection, the Greff LSTM variants), or ``None`` where it can."""
    return lstm_variant_reason(IMPL, kind, params, options) or no_projection(IMPL, kind, params)


def _rnn(x: Array, params: Any, state: Any, lengths: Any, reverse: bool, nonlinearity: str = "tanh", *,
         steps_with: StepKernels = WARP_PER_UNIT) -> Any:  # fmt: skip
    weights = recurrent_weights(params, x.dtype)
    options = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths, relu=nonlinearity == "relu")
    return _sequence(
        cell="rnn",
        x=x,
        weight_ih=params.weight_ih,
        graph_weights=weights,
        initial=tuple(state),
        lengths=lengths,
        reverse=reverse,
        gates=1,
        options=options,
        key_extra=(),
        build=_one_launch_per_step("rnn_graph_step", weights, steps_with),
        steps_with=steps_with,
    )


def _lstm(x: Array, params: Any, state: Any, lengths: Any, reverse: bool, coupled: bool = False,
          clip: Optional[float] = None, *, steps_with: StepKernels = WARP_PER_UNIT) -> Any:  # fmt: skip
    weights = lstm_step_weights(params, x.dtype)
    options = lstm_options(params, lengths, coupled, clip)
    clip_value = 0.0 if clip is None else float(clip)

    def build(plan, dtype, tile, grid, block, steps, batch, hidden, reverse, options):
        step = steps_with.kernel("lstm_graph_step", dtype, tile)
        tail = (int32(options), acc_scalar(dtype, clip_value))
        sizes = (int32(batch), int32(hidden))
        launches = []
        for t, prev, nxt in _steps(plan, steps, reverse):
            args = (plan.gx[t], *weights, plan.lengths, prev, nxt, plan.cell, plan.y[t], *sizes, int32(t), *tail)
            launches.append((step, grid, block, args))
        return launches

    return _sequence(
        cell="lstm",
        x=x,
        weight_ih=params.weight_ih,
        graph_weights=weights,
        initial=tuple(state),
        lengths=lengths,
        reverse=reverse,
        gates=4,
        options=options,
        key_extra=(clip_value,),
        build=build,
        steps_with=steps_with,
    )


def _gru(x: Array, params: Any, state: Any, lengths: Any, reverse: bool, linear_before_reset: bool = True, *,
         steps_with: StepKernels = WARP_PER_UNIT) -> Any:  # fmt: skip
    weights = recurrent_weights(params, x.dtype)
    options = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths)

    def build_two_launches(plan, dtype, tile, grid, block, steps, batch, hidden, reverse, options):
        # linear_before_reset=False: rh = r * h_prev of every unit before any unit's candidate
        sizes = (int32(batch), int32(hidden))
        launches = []
        reset = steps_with.kernel("gru_graph_reset", dtype, tile)
        finish = steps_with.kernel("gru_graph_finish", dtype, tile)
        (reset_h,) = plan.extra
        for t, prev, nxt in _steps(plan, steps, reverse):
            launches.append((reset, grid, block, (plan.gx[t], *weights, prev, reset_h, *sizes, int32(options))))
            finish_args = (plan.gx[t], *weights, plan.lengths, prev, reset_h, nxt, plan.y[t])
            launches.append((finish, grid, block, (*finish_args, *sizes, int32(t), int32(options))))
        return launches

    return _sequence(
        cell="gru",
        x=x,
        weight_ih=params.weight_ih,
        graph_weights=weights,
        initial=tuple(state),
        lengths=lengths,
        reverse=reverse,
        gates=3,
        options=options,
        key_extra=(bool(linear_before_reset),),
        build=_one_launch_per_step("gru_graph_step", weights, steps_with)
        if linear_before_reset
        else build_two_launches,
        scratch=0 if linear_before_reset else 1,
        steps_with=steps_with,
    )


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
    caller (the hook in ``_backends/cupy/__init__.py``) has entered the device, checked the dtype and
    :func:`supports`, and handled an empty batch (a direct call is still refused what :func:`supports` refuses)."""
    refuse(supports(kind, params, options))
    return _SEQUENCES[kind](x, params, state, lengths, reverse, **options)
