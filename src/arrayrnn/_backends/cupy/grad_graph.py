"""CuPy gradient path "graph": the recording forward and the backward, each one replayed CUDA graph.

Variant "persistent" (``experimental/executor.py``) runs the same plans through the graph executor (a ``Runner``).
Supports what the "graph" forward supports: every option but the LSTM projection, float32/float64.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Optional

from . import graph as cupy_graph
from . import policy, runtime
from .common import (
    cupy_module,
    dtype_name,
    int32,
    kernel,
    lstm_variant_reason,
    options_mask,
    placeholder,
    project_inputs,
    refuse,
    time_order,
)
from .grad_fused import (
    Backward,
    State,
    backward_order,
    fill_cotangent,
    gru_param_grads,
    lstm_param_grads,
    params_like,
    previous_hidden,
    previous_step,
    rnn_param_grads,
)
from .sources import OPTIONS, graph_kernel_name

Array = Any
Launch = tuple[Any, tuple[int], tuple[int], tuple[Any, ...]]


@dataclasses.dataclass
class _Plan:
    buffers: dict[str, Array]
    launches: list[Launch] = dataclasses.field(default_factory=list)
    graph: Any = None
    #: what another runner made of the launches, once per plan (the graph executor's table), by runner name
    prepared: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def run(self, shape: _Shape) -> None:
        shape.runner.run(self, shape.dtype)


def _replay(plan: _Plan, dtype: str) -> None:
    """Run a plan's launches as its captured CUDA graph (captured on first use), or one by one with
    ``policy.Config.graph_capture`` off."""
    cp = cupy_module()
    if policy.current().graph_capture:
        if plan.graph is None:
            plan.graph = cupy_graph._capture(plan.launches)
        plan.graph.launch(stream=cp.cuda.get_current_stream())
    else:
        for k, grid, block, args in plan.launches:
            k(grid, block, args)


@dataclasses.dataclass(frozen=True)
class Runner:
    """How the plans' launches run: ``run(plan, dtype)`` (here: :func:`_replay`; the experimental "persistent"
    variant runs them through the graph executor), ``forward`` (the forward path module whose ``sequence`` is the
    RNN's recording forward) and ``impl`` (the path's name, in errors)."""

    impl: str
    run: Callable[[_Plan, str], None]
    forward: Any


#: the graph path's own runner
REPLAY = Runner("graph", _replay, cupy_graph)


#: this path's plans (evicted LRU beyond ``grad_graph_max_plans``)
_plans = cupy_graph.PlanCache(runtime.PLANS + "grad_graph")


def cached_plans() -> int:
    return len(_plans)


def _plan(key: tuple[Any, ...], build: Callable[[], _Plan]) -> _Plan:
    return _plans.get(key, build, policy.current().grad_graph_max_plans)


def _pointers(arrays: tuple[Array, ...]) -> tuple[int, ...]:
    return tuple(int(a.data.ptr) for a in arrays)


class _Shape:
    """Sizes, tile and launch shape of one call, and the per-step neighbours in time."""

    def __init__(self, x: Array, hidden: int, reverse: bool, runner: Runner) -> None:
        self.runner = runner
        self.dtype = dtype_name(x.dtype)
        self.steps, self.batch, _ = x.shape
        self.hidden, self.reverse = hidden, reverse
        config = policy.current()
        self.tile = cupy_graph.choose_batch_tile(self.batch, hidden, config)
        self.grid, self.block = cupy_graph.launch_shape(self.batch, hidden, self.tile, config)
        self.sizes = (int32(self.batch), int32(hidden))

    def key(self) -> tuple[Any, ...]:
        return (self.dtype, self.steps, self.batch, self.hidden, self.reverse, self.tile)

    def kernel(self, base: str) -> Any:
        return kernel(graph_kernel_name(base, self.tile), self.dtype)

    def before(self, t: int) -> Optional[int]:
        return previous_step(t, self.steps, self.reverse)

    def empty(self, *shape: int, dtype: Any = None) -> Array:
        return cupy_module().empty(shape, dtype=self.dtype if dtype is None else dtype)


def no_projection(impl: str, kind: str, params: Any) -> Optional[str]:
    """Why gradient path ``impl`` (graph gradient kernels: no projection) cannot run a call, or ``None``."""
    if kind == "lstm" and getattr(params, "weight_hr", None) is not None:
        return f"impl={impl!r} does not support the LSTM projection (proj_size > 0); use impl='fused'"
    return None


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why this gradient path cannot run a call (the LSTM projection, the Greff LSTM variants), or ``None``."""
    return lstm_variant_reason(REPLAY.impl, kind, params, options) or no_projection(REPLAY.impl, kind, params)


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
    """As ``grad_fused.sequence_vjp``, with graph-replayed loops."""
    return vjp_with(REPLAY, kind, x, params, state, lengths, reverse, options)


def vjp_with(
    runner: Runner,
    kind: str,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, State, Backward]:
    """:func:`sequence_vjp` with the plans run by ``runner`` (a direct call is still refused the LSTM projection)."""
    refuse(no_projection(runner.impl, kind, params))
    return _RECORDERS[kind](cupy_module(), x, params, tuple(state), lengths, reverse, runner, **options)


def _lengths_buffer(shape: _Shape, lengths: Optional[Array]) -> Array:
    return shape.empty(shape.batch, dtype="int64") if lengths is not None else placeholder("int64")


def _fill_lengths(cp: Any, buffer: Array, lengths: Optional[Array]) -> None:
    if lengths is not None:
        cp.copyto(buffer, lengths, casting="unsafe")


def _grad_plan(shape: _Shape, lengths: Optional[Array], dy: Optional[Array], buffers: dict[str, Array]) -> _Plan:
    """A backward plan over ``buffers`` plus those every backward has: the carried cotangent ``carry (B, H)``,
    ``lengths`` and, when an output cotangent is given, the copy of it ``dy (T, B, H)``."""
    T, B, H = shape.steps, shape.batch, shape.hidden
    plan = _Plan({**buffers, "carry": shape.empty(B, H), "lengths": _lengths_buffer(shape, lengths)})
    if dy is not None:
        plan.buffers["dy"] = shape.empty(T, B, H)
    return plan


def _fill_grad_inputs(
    cp: Any, plan: _Plan, lengths: Optional[Array], dy: Optional[Array], d_final_h: Optional[Array]
) -> None:
    """Copy ``lengths``, ``dy`` and the final state's cotangent into the buffers of ``_grad_plan``."""
    _fill_lengths(cp, plan.buffers["lengths"], lengths)
    if dy is not None:
        cp.copyto(plan.buffers["dy"], dy)
    fill_cotangent(cp, plan.buffers["carry"], d_final_h)


def _append_finish(
    plan: _Plan,
    shape: _Shape,
    weight_t: Array,
    d_prev: Array,
    part: Array,
    width: int,
    stride: int,
    previous: int,
    options: int,
) -> None:
    """The launch after the last backward step ``previous``: ``carry = (valid) ? d_prev weight_t (+ part) : carry``
    (``d_prev`` rows of ``stride`` elements, of which the first ``width`` are used)."""
    args = (
        weight_t,
        d_prev,
        part,
        plan.buffers["lengths"],
        plan.buffers["carry"],
        *shape.sizes,
        int32(width),
        int32(stride),
        int32(previous),
        int32(options),
    )
    plan.launches.append((shape.kernel("graph_grad_finish"), shape.grid, shape.block, args))


def _dy_setup(shape: _Shape, dy: Optional[Array]) -> tuple[int, Callable[[_Plan, int], Array]]:
    """The option bit for ``dy`` and per-step access to the plan's copy of it (a placeholder when absent)."""
    if dy is None:
        absent = placeholder(shape.dtype)
        return 0, lambda plan, t: absent
    return OPTIONS["OPT_DY"], lambda plan, t: plan.buffers["dy"][t]


# ----------------------------------------------------------------------------------------------
# RNN: the "graph" forward already keeps what the backward needs (y)


def _rnn(
    cp: Any,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    runner: Runner,
    *,
    nonlinearity: str = "tanh",
) -> tuple[Array, State, Backward]:
    y, final = runner.forward.sequence("rnn", None, x, params, state, lengths, reverse, {"nonlinearity": nonlinearity})
    shape = _Shape(x, params.hidden_size, reverse, runner)
    h0 = state[0]
    options = options_mask(lengths=lengths, relu=nonlinearity == "relu")

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_bit, dy_at = _dy_setup(shape, dy)
            T, B, H = shape.steps, shape.batch, shape.hidden

            def build() -> _Plan:
                plan = _grad_plan(
                    shape,
                    lengths,
                    dy,
                    {"weight_t": shape.empty(H, H), "y": shape.empty(T, B, H), "dz": shape.empty(T, B, H)},
                )
                buf, absent = plan.buffers, placeholder(shape.dtype)
                step = shape.kernel("rnn_graph_grad")
                previous = -1
                for t in backward_order(T, reverse):
                    d_prev = buf["dz"][previous] if previous >= 0 else absent
                    args = (
                        buf["weight_t"],
                        d_prev,
                        buf["lengths"],
                        dy_at(plan, t),
                        buf["y"][t],
                        buf["carry"],
                        buf["dz"][t],
                        *shape.sizes,
                        int32(previous),
                        int32(t),
                        int32(options | dy_bit),
                    )
                    plan.launches.append((step, shape.grid, shape.block, args))
                    previous = t
                _append_finish(plan, shape, buf["weight_t"], buf["dz"][previous], absent, H, H, previous, options)
                return plan

            key = ("rnn-grad", *shape.key(), options | dy_bit)
            plan = _plan(key, build)
            with plan.lock:
                buf = plan.buffers
                cp.copyto(buf["weight_t"], params.weight_hh.T)
                cp.copyto(buf["y"], y)
                _fill_grad_inputs(cp, plan, lengths, dy, d_final[0])
                plan.run(shape)
                dx, grads = rnn_param_grads(
                    cp, x, params, lengths, buf["dz"], previous_hidden(cp, y, h0, lengths, reverse)
                )
                return dx, params_like(params, grads), (buf["carry"].copy(),)

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
    runner: Runner,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, State, Backward]:
    shape = _Shape(x, params.hidden_size, reverse, runner)
    T, B, H = shape.steps, shape.batch, shape.hidden
    step_weights, options, (clip_value,) = cupy_graph.step_arguments(
        "lstm", params, lengths, shape.dtype, {"coupled": coupled, "clip": clip}
    )
    weights, peepholes = step_weights[:3], step_weights[3:]  # recurrent weights and biases; the three peepholes
    tail = (int32(options), clip_value)

    def build_forward() -> _Plan:
        plan = _Plan(
            {
                "gx": shape.empty(T, B, 4 * H),
                "h0": shape.empty(B, H),
                "c0": shape.empty(B, H),
                "hs": shape.empty(T, B, H),
                "cs": shape.empty(T, B, H),
                "y": shape.empty(T, B, H),
                "z": shape.empty(T, B, 4 * H),
                "lengths": _lengths_buffer(shape, lengths),
            }
        )
        buf = plan.buffers
        step = shape.kernel("lstm_graph_record")
        for t in time_order(T, reverse):
            before = shape.before(t)
            h_prev = buf["h0"] if before is None else buf["hs"][before]
            c_prev = buf["c0"] if before is None else buf["cs"][before]
            args = (
                buf["gx"][t],
                *weights,
                *peepholes,
                buf["lengths"],
                h_prev,
                c_prev,
                buf["hs"][t],
                buf["cs"][t],
                buf["y"][t],
                buf["z"][t],
                *shape.sizes,
                int32(t),
                *tail,
            )
            plan.launches.append((step, shape.grid, shape.block, args))
        return plan

    plan = _plan(
        ("lstm-record", *shape.key(), options, float(clip_value), _pointers(weights + peepholes)), build_forward
    )
    with plan.lock:
        buf = plan.buffers
        project_inputs(x, params.weight_ih, out=buf["gx"])
        cp.copyto(buf["h0"], state[0])
        cp.copyto(buf["c0"], state[1])
        _fill_lengths(cp, buf["lengths"], lengths)
        plan.run(shape)
        last = time_order(T, reverse)[-1]
        y, z, cells = buf["y"].copy(), buf["z"].copy(), buf["cs"].copy()
        final = (buf["hs"][last].copy(), buf["cs"][last].copy())
    h0, c0 = state

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_bit, dy_at = _dy_setup(shape, dy)

            def build() -> _Plan:
                plan = _grad_plan(
                    shape,
                    lengths,
                    dy,
                    {
                        "weight_t": shape.empty(H, 4 * H),
                        "z": shape.empty(T, B, 4 * H),
                        "cs": shape.empty(T, B, H),
                        "c0": shape.empty(B, H),
                        "dc": shape.empty(B, H),
                        "dz": shape.empty(T, B, 4 * H),
                    },
                )
                buf, absent = plan.buffers, placeholder(shape.dtype)
                step = shape.kernel("lstm_graph_grad")
                previous = -1
                for t in backward_order(T, reverse):
                    before = shape.before(t)
                    c_prev = buf["c0"] if before is None else buf["cs"][before]
                    d_prev = buf["dz"][previous] if previous >= 0 else absent
                    args = (
                        buf["weight_t"],
                        d_prev,
                        buf["lengths"],
                        dy_at(plan, t),
                        buf["z"][t],
                        buf["cs"][t],
                        c_prev,
                        *peepholes,
                        buf["carry"],
                        buf["dc"],
                        buf["dz"][t],
                        *shape.sizes,
                        int32(previous),
                        int32(t),
                        int32(options | dy_bit),
                        clip_value,
                    )
                    plan.launches.append((step, shape.grid, shape.block, args))
                    previous = t
                _append_finish(
                    plan, shape, buf["weight_t"], buf["dz"][previous], absent, 4 * H, 4 * H, previous, options
                )
                return plan

            key = ("lstm-grad", *shape.key(), options | dy_bit, float(clip_value), _pointers(peepholes))
            plan = _plan(key, build)
            with plan.lock:
                buf = plan.buffers
                cp.copyto(buf["weight_t"], params.weight_hh.T)
                for name, value in (("z", z), ("cs", cells), ("c0", c0)):
                    cp.copyto(buf[name], value)
                _fill_grad_inputs(cp, plan, lengths, dy, d_final[0])
                fill_cotangent(cp, buf["dc"], d_final[1])
                plan.run(shape)
                h_prev = previous_hidden(cp, y, h0, lengths, reverse)
                dx, grads = lstm_param_grads(cp, x, params, lengths, reverse, buf["dz"], cells, c0, h_prev)
                return dx, params_like(params, grads), (buf["carry"].copy(), buf["dc"].copy())

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# GRU


def _gru(
    cp: Any,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    runner: Runner,
    *,
    linear_before_reset: bool = True,
) -> tuple[Array, State, Backward]:
    shape = _Shape(x, params.hidden_size, reverse, runner)
    T, B, H = shape.steps, shape.batch, shape.hidden
    weights, options, _ = cupy_graph.step_arguments("gru", params, lengths, shape.dtype, {})
    lbr = bool(linear_before_reset)

    def build_forward() -> _Plan:
        plan = _Plan(
            {
                "gx": shape.empty(T, B, 3 * H),
                "h0": shape.empty(B, H),
                "hs": shape.empty(T, B, H),
                "y": shape.empty(T, B, H),
                "gates": shape.empty(T, B, 3 * H),
                "lengths": _lengths_buffer(shape, lengths),
            }
        )
        buf = plan.buffers
        if lbr:
            buf["hn"] = shape.empty(T, B, H)
            step = shape.kernel("gru_graph_record")
        else:
            buf["rh"] = shape.empty(B, H)
            reset, finish = shape.kernel("gru_graph_record_reset"), shape.kernel("gru_graph_record_finish")
        for t in time_order(T, reverse):
            before = shape.before(t)
            h_prev = buf["h0"] if before is None else buf["hs"][before]
            if lbr:
                args = (
                    buf["gx"][t],
                    *weights,
                    buf["lengths"],
                    h_prev,
                    buf["hs"][t],
                    buf["y"][t],
                    buf["gates"][t],
                    buf["hn"][t],
                    *shape.sizes,
                    int32(t),
                    int32(options),
                )
                plan.launches.append((step, shape.grid, shape.block, args))
            else:
                args = (buf["gx"][t], *weights, h_prev, buf["rh"], buf["gates"][t], *shape.sizes, int32(options))
                plan.launches.append((reset, shape.grid, shape.block, args))
                args = (
                    buf["gx"][t],
                    *weights,
                    buf["lengths"],
                    h_prev,
                    buf["rh"],
                    buf["hs"][t],
                    buf["y"][t],
                    buf["gates"][t],
                    *shape.sizes,
                    int32(t),
                    int32(options),
                )
                plan.launches.append((finish, shape.grid, shape.block, args))
        return plan

    plan = _plan(("gru-record", *shape.key(), options, lbr, _pointers(weights)), build_forward)
    with plan.lock:
        buf = plan.buffers
        project_inputs(x, params.weight_ih, out=buf["gx"])
        cp.copyto(buf["h0"], state[0])
        _fill_lengths(cp, buf["lengths"], lengths)
        plan.run(shape)
        last = time_order(T, reverse)[-1]
        y, gates = buf["y"].copy(), buf["gates"].copy()
        hidden_n = buf["hn"].copy() if lbr else None
        final = (buf["hs"][last].copy(),)
    h0 = state[0]

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            dy_bit, dy_at = _dy_setup(shape, dy)
            h_prev = previous_hidden(cp, y, h0, lengths, reverse)

            def build() -> _Plan:
                plan = _grad_plan(
                    shape,
                    lengths,
                    dy,
                    {
                        "gates": shape.empty(T, B, 3 * H),
                        "h_prev": shape.empty(T, B, H),
                        "part": shape.empty(B, H),
                        "dgx": shape.empty(T, B, 3 * H),
                    },
                )
                buf, absent = plan.buffers, placeholder(shape.dtype)
                if lbr:
                    buf.update(weight_t=shape.empty(H, 3 * H), hn=shape.empty(T, B, H), dgh=shape.empty(T, B, 3 * H))
                    step = shape.kernel("gru_graph_grad")
                else:
                    buf.update(
                        weight_rz_t=shape.empty(H, 2 * H),
                        weight_n_t=shape.empty(H, H),
                        dh=shape.empty(B, H),
                        rh=shape.empty(T, B, H),
                    )
                    candidate, reset = shape.kernel("gru_graph_grad_candidate"), shape.kernel("gru_graph_grad_reset")
                previous = -1
                tail_of = lambda t: (*shape.sizes, int32(previous), int32(t), int32(options | dy_bit))  # noqa: E731
                for t in backward_order(T, reverse):
                    if lbr:
                        d_prev = buf["dgh"][previous] if previous >= 0 else absent
                        args = (
                            buf["weight_t"],
                            d_prev,
                            buf["lengths"],
                            dy_at(plan, t),
                            buf["gates"][t],
                            buf["hn"][t],
                            buf["h_prev"][t],
                            buf["part"],
                            buf["carry"],
                            buf["dgx"][t],
                            buf["dgh"][t],
                            *tail_of(t),
                        )
                        plan.launches.append((step, shape.grid, shape.block, args))
                    else:
                        d_prev = buf["dgx"][previous] if previous >= 0 else absent
                        args = (
                            buf["weight_rz_t"],
                            d_prev,
                            buf["lengths"],
                            dy_at(plan, t),
                            buf["gates"][t],
                            buf["h_prev"][t],
                            buf["part"],
                            buf["carry"],
                            buf["dh"],
                            buf["dgx"][t],
                            *tail_of(t),
                        )
                        plan.launches.append((candidate, shape.grid, shape.block, args))
                        args = (
                            buf["weight_n_t"],
                            buf["lengths"],
                            buf["dh"],
                            buf["gates"][t],
                            buf["h_prev"][t],
                            buf["part"],
                            buf["dgx"][t],
                            buf["rh"][t],
                            *shape.sizes,
                            int32(t),
                            int32(options),
                        )
                        plan.launches.append((reset, shape.grid, shape.block, args))
                    previous = t
                if lbr:
                    weight, d_prev, width = buf["weight_t"], buf["dgh"][previous], 3 * H
                else:
                    weight, d_prev, width = buf["weight_rz_t"], buf["dgx"][previous], 2 * H
                _append_finish(
                    plan, shape, weight, d_prev, buf["part"], width, 3 * H, previous, options | OPTIONS["OPT_PART"]
                )
                return plan

            plan = _plan(("gru-grad", *shape.key(), options | dy_bit, lbr), build)
            with plan.lock:
                buf = plan.buffers
                if lbr:
                    cp.copyto(buf["weight_t"], params.weight_hh.T)
                    cp.copyto(buf["hn"], hidden_n)
                else:
                    cp.copyto(buf["weight_rz_t"], params.weight_hh[: 2 * H].T)
                    cp.copyto(buf["weight_n_t"], params.weight_hh[2 * H :].T)
                for name, value in (("gates", gates), ("h_prev", h_prev)):
                    cp.copyto(buf[name], value)
                _fill_grad_inputs(cp, plan, lengths, dy, d_final[0])
                plan.run(shape)
                if lbr:
                    dx, grads = gru_param_grads(cp, x, params, lengths, buf["dgx"], h_prev, dgh=buf["dgh"])
                else:
                    dx, grads = gru_param_grads(cp, x, params, lengths, buf["dgx"], h_prev, reset_h_all=buf["rh"])
                return dx, params_like(params, grads), (buf["carry"].copy(),)

    return y, final, backward


_RECORDERS = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}
