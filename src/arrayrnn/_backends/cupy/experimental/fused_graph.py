"""CuPy fast path "fused_graph": the "fused" path's time loop captured into one CUDA graph and replayed.

Supports everything the "fused" path does (every cell option, the LSTM projection, float16/32/64); plans own
their buffers and are cached as in ``graph.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any, Optional

from .. import fused as cupy_kernels
from .. import graph as cupy_graph
from .. import policy, runtime
from ..common import cupy_module, dtype_name, project_inputs
from . import blas as cupy_blas

Array = Any

IMPL = "fused_graph"


class Recorder:
    """``cupy_kernels.Ops`` that records: cuBLAS products as ``cupy_blas.Gemm`` calls, launches as partials."""

    def __init__(self, workspace: Array) -> None:
        self.workspace = workspace
        self.calls: list[Callable[[], None]] = []
        self.kernels: set[Any] = set()

    def matmul(self, a: Array, b: Array, out: Array) -> None:
        self.calls.append(cupy_blas.matmul(a, b, out, self.workspace))

    def launch(self, k: Any, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        self.kernels.add(k)
        self.calls.append(functools.partial(k, grid, block, args))


def recorded(loop: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Recorder, Any]:
    """Run ``loop(recorder, *args, **kwargs)`` into a fresh :class:`Recorder` (with its own cuBLAS workspace) and
    warm its products up (before any input is copied in: they write their outputs); returns the recorder and
    what the loop returned."""
    config = policy.current()
    recorder = Recorder(cupy_blas.workspace(config.fused_graph_workspace_bytes))
    result = loop(recorder, *args, **kwargs)
    if config.graph_capture:
        cupy_blas.warm_up(recorder.calls)
    return recorder, result


def replay(recorder: Recorder, graph: Any) -> Any:
    """Replay ``graph`` on the current stream, capturing ``recorder``'s calls into it first where it is ``None``;
    returns the graph (``None`` with ``policy.Config.graph_capture`` off: the calls then run one by one)."""
    if not policy.current().graph_capture:
        for call in recorder.calls:
            call()
        return None
    if graph is None:
        graph = cupy_graph.capture(recorder.calls, recorder.kernels)
    graph.launch(stream=cupy_module().cuda.get_current_stream())
    return graph


@dataclasses.dataclass
class _Plan:
    gx: Array  # (T, B, G*H) input projection, written by cuBLAS before each replay
    states: tuple[Array, ...]  # the loop's state buffers (h; LSTM h, c), updated in place
    lengths: Optional[Array]  # (B,) int64, or None
    y: Array  # (T, B, P)
    recorder: Recorder
    graph: Any = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def run(self) -> None:
        self.graph = replay(self.recorder, self.graph)


#: this path's plans (evicted LRU beyond ``fused_graph_max_plans``)
_plans = cupy_graph.PlanCache(runtime.PLANS + "fused_graph")


def cached_plans() -> int:
    return len(_plans)


def plan_key(
    kind: str,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Any, tuple[Any, ...]]:
    """``(params for the loops, plan key)`` of a call: ``params`` with every array a loop reads (all but
    ``weight_ih``) C-contiguous (the same array where it already is), and a key of the call's kind, dtype, shapes,
    options and the addresses of those arrays (a graph reads them in place)."""
    cp = cupy_module()
    arrays = {
        field.name: cp.ascontiguousarray(getattr(params, field.name))
        for field in dataclasses.fields(params)
        if field.name != "weight_ih" and getattr(params, field.name) is not None
    }
    pointers = tuple((name, int(a.data.ptr)) for name, a in arrays.items())
    call = (bool(reverse), lengths is None, tuple(sorted(options.items())))
    shapes = (x.shape, params.weight_ih.shape, tuple(s.shape for s in state))
    return dataclasses.replace(params, **arrays), (kind, dtype_name(x.dtype), shapes, call, pointers)


def fill_inputs(
    x: Array,
    weight_ih: Array,
    gx: Array,
    copies: tuple[tuple[Array, Array], ...],
    lengths_buffer: Optional[Array],
    lengths: Optional[Array],
) -> None:
    """A plan's inputs for this call: the input projection into ``gx``, each ``(buffer, value)`` of ``copies``, and
    the lengths (as int64) where there are any."""
    cp = cupy_module()
    project_inputs(x, weight_ih, out=gx)
    for buffer, value in copies:
        cp.copyto(buffer, value)
    if lengths is not None:
        cp.copyto(lengths_buffer, lengths, casting="unsafe")


def _sequence(
    kind: str,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    loop: Callable[..., Array],
) -> tuple[Array, tuple[Array, ...]]:
    """Find or build the plan for this call, fill its inputs, replay, and copy the results out. ``loop(ops, gx,
    params, *states, lengths, reverse, **options)`` is the ``cupy_kernels`` time loop of ``kind``."""
    cp = cupy_module()
    steps, batch, _ = x.shape
    read_params, key = plan_key(kind, x, params, state, lengths, reverse, options)

    def build() -> _Plan:
        gx = cp.empty((steps, batch, params.weight_ih.shape[0]), dtype=x.dtype)
        states = tuple(cp.empty(s.shape, dtype=x.dtype) for s in state)
        lengths_buffer = None if lengths is None else cp.empty((batch,), dtype="int64")
        recorder, y = recorded(loop, gx, read_params, *states, lengths_buffer, reverse, **options)
        return _Plan(gx=gx, states=states, lengths=lengths_buffer, y=y, recorder=recorder)

    plan = _plans.get(key, build, policy.current().fused_graph_max_plans)
    with plan.lock:
        fill_inputs(x, params.weight_ih, plan.gx, tuple(zip(plan.states, state)), plan.lengths, lengths)
        plan.run()
        return plan.y.copy(), tuple(s.copy() for s in plan.states)


def _rnn(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         nonlinearity: str = "tanh") -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    options = {"nonlinearity": nonlinearity}
    return _sequence("rnn", x, params, tuple(state), lengths, reverse, options, cupy_kernels.rnn_loop)


def _lstm(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *, coupled: bool = False,
          clip: Optional[float] = None) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    options = {"coupled": bool(coupled), "clip": None if clip is None else float(clip)}
    return _sequence("lstm", x, params, tuple(state), lengths, reverse, options, cupy_kernels.lstm_loop)


def _gru(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         linear_before_reset: bool = True) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    options = {"linear_before_reset": bool(linear_before_reset)}
    return _sequence("gru", x, params, tuple(state), lengths, reverse, options, cupy_kernels.gru_loop)


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
    """As ``fused.sequence`` (every option of every cell), the time loop replayed as a CUDA graph."""
    return _SEQUENCES[kind](x, params, state, lengths, reverse, **options)
