"""Recurrent dropout and zoneout around any cell of ``_core/backward.py``: one forward scan, its backward scan.

The masks come drawn (the public layer draws them on the host); the same :class:`Regularization` serves the forward
pass and its backward pass, so the gradients see the masks of the forward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from .backward import CELLS, _bias_grad, _flat, _weight_grad
from .layer_norm import input_projection_backward
from .steps import project_inputs

Array = Any
State = tuple[Array, ...]

#: how many leading state components zoneout acts on: h (RNN, GRU); h and c (LSTM; not the gate state g)
ZONED = {"rnn": 1, "lstm": 2, "gru": 1}


@dataclasses.dataclass(frozen=True)
class Regularization:
    """What one layer and direction of a call applies.

    ``recurrent_mask (B, H_out)``: multiplies ``h_{t-1}`` where the cell reads it (already scaled by ``1/(1-p)``),
    or ``None``. ``zoneout``: the rate ``p``; ``zoneout_masks``: per zoned state component a ``(T, B, ·)`` array,
    1 where the unit keeps its previous value (training), or ``None``: the expectation ``p h_{t-1} + (1-p) h~_t``.
    """

    recurrent_mask: Optional[Array] = None
    zoneout: float = 0.0
    zoneout_masks: Optional[tuple[Array, ...]] = None
    train: bool = False

    def changes(self) -> list[str]:
        """What departs from the plain cell, in words (empty: nothing)."""
        found = []
        if self.recurrent_mask is not None:
            found.append("recurrent_dropout (training)")
        if self.zoneout:
            found.append(f"zoneout={self.zoneout!r}" + (" (training)" if self.zoneout_masks is not None else ""))
        return found


def regularization_changes(options: dict[str, Any]) -> list[str]:
    """The dropout family options of a call that the fast paths do not run, in words (empty for every other call)."""
    found = options.get("regularize")
    return [] if found is None else found.changes()


def without_regularization(options: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name != "regularize"}


class _StepTape:
    """What a wrapped cell's ``backward_step`` reads, seen from the cell: its own outputs ``h~_t`` as ``y``, the
    state it was fed as the previous state (``previous``) and as ``h_prev``."""

    def __init__(self, reverse: bool, raw_y: Array, saved: list, fed: list, h_prev: Array) -> None:
        self.reverse, self.y, self.saved, self.fed, self.h_prev = reverse, raw_y, saved, fed, h_prev
        self.mixed: Optional[list] = None  # GRU with recurrent dropout: the unmasked h_{t-1} per step

    def previous(self, t: int, index: int, state_index: int) -> Array:
        return self.fed[t][state_index]


@dataclasses.dataclass
class RegularizedTape:
    kind: str
    params: Any
    options: dict[str, Any]
    regularization: Regularization
    x: Array
    lengths: Optional[Array]
    reverse: bool
    step_tape: _StepTape
    initial_state: State


def _zone_factor(reg: Regularization, k: int, t: int) -> Any:
    """The weight of the previous value of state component ``k`` at step ``t`` (an array, or the scalar ``p``)."""
    return reg.zoneout_masks[k][t, ...] if reg.zoneout_masks is not None else reg.zoneout


def forward(
    xp: Any,
    kind: str,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, State, RegularizedTape]:
    """As ``_core.backward.forward``, with the call's ``options["regularize"]`` applied around the cell."""
    reg: Regularization = options["regularize"]
    if options.get("mask") is not None or options.get("padding", "zeros") != "zeros":
        raise ValueError(
            "recurrent_dropout and zoneout cannot be combined with mask= or padding='carry' yet; use lengths= "
            "(right-padded sequences) instead"
        )
    cell_options = without_regularization(options)
    cell = CELLS[kind](xp, params, cell_options)
    gx = project_inputs(xp, x, params)
    steps = gx.shape[0]
    state = tuple(state)
    initial_state = state
    zoned = ZONED[kind] if reg.zoneout else 0
    outputs: list[Array] = [None] * steps  # type: ignore[list-item]
    raw_outputs: list[Array] = [None] * steps  # type: ignore[list-item]
    saved: list[Any] = [None] * steps
    fed: list[Any] = [None] * steps
    zero_output = xp.zeros_like(state[0])
    mixes = kind == "gru" and reg.recurrent_mask is not None  # the update gate mixes in the unmasked h (Keras)
    previous: list[Any] = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        feed = state if reg.recurrent_mask is None else (state[0] * reg.recurrent_mask, *state[1:])
        raw, recorded = cell.forward_step(gx[t, ...], feed)
        if mixes:  # the cell mixed in the masked h: z * h_fed -> z * h
            update = recorded[0][:, params.hidden_size :]
            raw = (raw[0] + update * (state[0] - feed[0]),)
            previous[t] = state[0]
        new = list(raw)
        for k in range(zoned):
            m = _zone_factor(reg, k, t)
            new[k] = m * state[k] + (1.0 - m) * raw[k]
        if lengths is None:
            kept_raw, state = raw, tuple(new)
            outputs[t] = new[0]
        else:
            valid = xp.reshape(lengths > t, (-1, 1))
            kept_raw = tuple(xp.where(valid, r, f) for r, f in zip(raw, feed))
            state = tuple(xp.where(valid, n, old) for n, old in zip(new, state))
            outputs[t] = xp.where(valid, new[0], zero_output)
        raw_outputs[t] = kept_raw[0]
        saved[t] = recorded + cell.after_step(kept_raw)
        fed[t] = feed
    y = xp.stack(outputs, axis=0)
    step_tape = _StepTape(reverse, xp.stack(raw_outputs, axis=0), saved, fed, xp.stack([f[0] for f in fed], axis=0))
    step_tape.mixed = previous if mixes else None
    tape = RegularizedTape(kind, params, cell_options, reg, x, lengths, reverse, step_tape, initial_state)
    return y, state, tape


def sequence(xp: Any, kind: str, x: Array, params: Any, state: State, lengths: Optional[Array], reverse: bool,
             options: dict[str, Any]) -> tuple[Array, State]:  # fmt: skip
    """The forward pass alone (the tape is dropped)."""
    y, final, _ = forward(xp, kind, x, params, state, lengths, reverse, options)
    return y, final


def backward(xp: Any, tape: RegularizedTape, dy: Optional[Array], d_final: tuple[Optional[Array], ...]):
    """As ``_core.backward.backward`` for a :class:`RegularizedTape`: ``(dx, dparams, d_initial_state)``."""
    params, reg, view = tape.params, tape.regularization, tape.step_tape
    cell = CELLS[tape.kind](xp, params, tape.options)  # a fresh cell: its accumulators belong to this call
    mixed = view.mixed
    if mixed is not None:  # the GRU's update gate mixed in the unmasked h_{t-1}
        cell.mixed_prev = mixed.__getitem__
    steps = view.y.shape[0]
    zoned = ZONED[tape.kind] if reg.zoneout else 0
    d_state = tuple(xp.zeros_like(s) if d is None else d for d, s in zip(d_final, tape.initial_state))
    dgx_steps: list[Array] = [None] * steps  # type: ignore[list-item]
    valid_steps: list[Array] = [None] * steps  # type: ignore[list-item]
    order = range(steps) if tape.reverse else range(steps - 1, -1, -1)
    for t in order:
        d_new = d_state if dy is None else (d_state[0] + dy[t, ...], *d_state[1:])
        valid = None if tape.lengths is None else xp.reshape(tape.lengths > t, (-1, 1))
        valid_steps[t] = valid
        d_raw = list(d_new)
        for k in range(zoned):
            d_raw[k] = (1.0 - _zone_factor(reg, k, t)) * d_new[k]
        dgx_steps[t], d_fed = cell.backward_step(t, view, tuple(d_raw), valid)
        d_prev = list(d_fed)
        if reg.recurrent_mask is not None and mixed is not None:  # only the products read the masked h
            d_prev[0] = (d_prev[0] - cell.mix_grad) * reg.recurrent_mask + cell.mix_grad
        elif reg.recurrent_mask is not None:
            d_prev[0] = d_prev[0] * reg.recurrent_mask
        for k in range(zoned):
            d_prev[k] = d_prev[k] + _zone_factor(reg, k, t) * d_new[k]
        if valid is not None:  # a padded step passes the state cotangent through untouched
            d_prev = [xp.where(valid, new, old) for new, old in zip(d_prev, d_state)]
        d_state = tuple(d_prev)
    dgx = xp.stack(dgx_steps, axis=0)
    x = tape.x
    if tape.lengths is not None:
        x = xp.where(xp.stack(valid_steps, axis=0), x, xp.zeros_like(x))
    d_projection, input_norm_grads = input_projection_backward(xp, params, dgx, x)  # dgx itself without ln_ih
    grads = {"weight_ih": _weight_grad(xp, d_projection, x), **input_norm_grads}
    if params.bias_ih is not None:
        grads["bias_ih"] = _bias_grad(xp, dgx)
    grads.update(cell.recurrent_grads(dgx, view.h_prev))
    dx = xp.reshape(xp.matmul(_flat(xp, d_projection), params.weight_ih), tape.x.shape)
    fields = {f.name: grads.get(f.name) for f in dataclasses.fields(params)}
    return dx, type(params)(**fields), d_state


def sequence_vjp(xp: Any, kind: str, x: Array, params: Any, state: State, lengths: Optional[Array], reverse: bool,
                 options: dict[str, Any]) -> tuple[Array, State, Any]:  # fmt: skip
    """The recording forward pass and its ``backward(dy, d_final) -> (dx, dparams, d_state)``."""
    y, final, tape = forward(xp, kind, x, params, state, lengths, reverse, options)

    def run_backward(dy: Any, d_final: Any) -> Any:
        return backward(xp, tape, dy, d_final)

    return y, final, run_backward
