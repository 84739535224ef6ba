"""CuPy gradient path "fused_graph": the fused gradient path's loops (``grad_fused.py``) as replayed CUDA graphs.

Supports what ``grad_fused.py`` does (the hook leaves float16 and an empty batch to the generic core).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional

from .. import fused as cupy_kernels
from .. import graph as cupy_graph
from .. import policy, runtime
from ..common import cupy_module, time_order
from ..grad_fused import (
    Backward,
    State,
    fill_cotangent,
    gru_backward_loop,
    gru_param_grads,
    gru_record_loop,
    lstm_backward_loop,
    lstm_grads,
    lstm_record_loop,
    params_like,
    previous_hidden,
    rnn_backward_loop,
    rnn_param_grads,
)
from .fused_graph import Recorder, fill_inputs, plan_key, recorded, replay

Array = Any

#: the cell options each loop takes, where the call leaves them out
_DEFAULT_OPTIONS = {
    "rnn": {"nonlinearity": "tanh"},
    "lstm": {"coupled": False, "clip": None},
    "gru": {"linear_before_reset": True},
}


@dataclasses.dataclass
class _BackwardPlan:
    recorder: Recorder
    dy: Optional[Array]  # (T, B, P) or None (the loop then reads no dy)
    cotangents: tuple[Array, ...]  # carry (B, P) and, LSTM, dc (B, H): the final state's in, the initial's out
    h_prev: Optional[Array]  # GRU: (T, B, H), the hidden state entering each step, filled before each replay
    results: tuple[Any, ...]  # what the backward loop returned
    graph: Any = None


@dataclasses.dataclass
class _Plan:
    kind: str
    params: Any  # the parameters the loops read (C-contiguous)
    options: dict[str, Any]
    reverse: bool
    gx: Array
    h: Array  # (B, P) updated in place: the final hidden state after a forward
    h0: Array  # (B, P) the initial hidden state
    c0: Optional[Array]  # LSTM: (B, H) the initial cell state
    lengths: Optional[Array]
    tape: tuple[Array, ...]  # what the recording loop returned (y first)
    forward: Recorder
    forward_graph: Any = None
    backward: dict[bool, _BackwardPlan] = dataclasses.field(default_factory=dict)
    generation: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def y(self) -> Array:
        return self.tape[0]

    def run_forward(self, x: Array, weight_ih: Array, state: State, lengths: Optional[Array]) -> int:
        """Fill the inputs, replay the forward; returns the new generation (hold ``lock``)."""
        copies = ((self.h, state[0]), (self.h0, state[0])) + (((self.c0, state[1]),) if self.c0 is not None else ())
        fill_inputs(x, weight_ih, self.gx, copies, self.lengths, lengths)
        self.forward_graph = replay(self.forward, self.forward_graph)
        self.generation += 1
        return self.generation

    def final_state(self) -> State:
        if self.kind != "lstm":
            return (self.h.copy(),)
        cells = self.tape[2]
        return self.h.copy(), cells[time_order(cells.shape[0], self.reverse)[-1]].copy()

    def backward_plan(self, with_dy: bool) -> _BackwardPlan:
        found = self.backward.get(with_dy)
        if found is not None:
            return found
        cp = cupy_module()
        dtype = self.gx.dtype
        dy = cp.empty(self.y.shape, dtype=dtype) if with_dy else None
        carry = cp.empty(self.h.shape, dtype=dtype)
        h_prev = None
        if self.kind == "rnn":
            cotangents = (carry,)
            loop_args: tuple[Any, ...] = (self.params, self.y, self.lengths, self.reverse)
            recorder, results = recorded(rnn_backward_loop, *loop_args, dy=dy, carry=carry, **self.options)
        elif self.kind == "lstm":
            dc = cp.empty(self.c0.shape, dtype=dtype)
            cotangents = (carry, dc)
            _, z, cells = self.tape
            loop_args = (self.params, z, cells, self.c0, self.lengths, self.reverse)
            recorder, results = recorded(lstm_backward_loop, *loop_args, dy=dy, carry=carry, dc=dc, **self.options)
        else:
            cotangents = (carry,)
            h_prev = cp.empty(self.y.shape, dtype=dtype)
            _, gates, hidden_n = self.tape
            loop_args = (self.params, gates, hidden_n, h_prev, self.lengths, self.reverse)
            recorder, results = recorded(gru_backward_loop, *loop_args, dy=dy, carry=carry)
        results = results if isinstance(results, tuple) else (results,)
        found = self.backward[with_dy] = _BackwardPlan(recorder, dy, cotangents, h_prev, results)
        return found


#: this path's plans (evicted LRU beyond ``grad_fused_graph_max_plans``)
_plans = cupy_graph.PlanCache(runtime.PLANS + "grad_fused_graph")


def cached_plans() -> int:
    return len(_plans)


def _new_plan(kind: str, x: Array, read_params: Any, state: State, lengths: Optional[Array], reverse: bool,
              options: dict[str, Any]) -> _Plan:  # fmt: skip
    cp = cupy_module()
    steps, batch, _ = x.shape
    gx = cp.empty((steps, batch, read_params.weight_ih.shape[0]), dtype=x.dtype)
    h, h0 = (cp.empty(state[0].shape, dtype=x.dtype) for _ in range(2))
    c0 = cp.empty(state[1].shape, dtype=x.dtype) if kind == "lstm" else None
    lengths_buffer = None if lengths is None else cp.empty((batch,), dtype="int64")
    if kind == "rnn":
        forward, y = recorded(cupy_kernels.rnn_loop, gx, read_params, h, lengths_buffer, reverse, **options)
        tape: tuple[Array, ...] = (y,)
    elif kind == "lstm":
        forward, tape = recorded(lstm_record_loop, gx, read_params, h, c0, lengths_buffer, reverse, **options)
    else:
        forward, tape = recorded(gru_record_loop, gx, read_params, h, lengths_buffer, reverse, **options)
    return _Plan(kind, read_params, options, reverse, gx, h, h0, c0, lengths_buffer, tape, forward)


def _gradients(plan: _Plan, backward: _BackwardPlan, x: Array, params: Any, lengths: Optional[Array]) -> tuple:
    """``dx`` and the parameter gradients from the plan's tape and the backward's results (fresh arrays)."""
    cp = cupy_module()
    if plan.kind == "rnn":
        (dz,) = backward.results
        h_prev = previous_hidden(cp, plan.y, plan.h0, lengths, plan.reverse)
        return rnn_param_grads(cp, x, params, lengths, dz, h_prev)
    if plan.kind == "lstm":
        dz, dh_all, m_all = backward.results
        cells = plan.tape[2]
        return lstm_grads(cp, x, params, lengths, plan.reverse, plan.y, plan.h0, plan.c0, cells, dz, dh_all, m_all)
    dgx, dgh, reset_h_all = backward.results
    return gru_param_grads(cp, x, params, lengths, dgx, backward.h_prev, dgh=dgh, reset_h_all=reset_h_all)


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
    cp = cupy_module()
    state = tuple(state)
    options = {**_DEFAULT_OPTIONS[kind], **options}
    read_params, key = plan_key(kind, x, params, state, lengths, reverse, options)

    def build() -> _Plan:
        return _new_plan(kind, x, read_params, state, lengths, reverse, options)

    plan = _plans.get(key, build, policy.current().grad_fused_graph_max_plans)
    with plan.lock:
        generation = plan.run_forward(x, params.weight_ih, state, lengths)
        y, final = plan.y.copy(), plan.final_state()

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        nonlocal generation
        with x.device, plan.lock:
            if plan.generation != generation:  # another forward of this plan ran since: replay this one's
                generation = plan.run_forward(x, params.weight_ih, state, lengths)
            run = plan.backward_plan(dy is not None)
            if dy is not None:
                cp.copyto(run.dy, dy)
            for buffer, given in zip(run.cotangents, d_final):
                fill_cotangent(cp, buffer, given)
            if run.h_prev is not None:
                cp.copyto(run.h_prev, previous_hidden(cp, plan.y, plan.h0, lengths, reverse))
            run.graph = replay(run.recorder, run.graph)
            dx, grads = _gradients(plan, run, x, params, lengths)
            return dx, params_like(params, grads), tuple(c.copy() for c in run.cotangents)

    return y, final, backward
