"""Backpropagation through time for one layer, written only against the array API standard.

:func:`forward` runs a sequence as ``_core/sequence.py`` does and returns a :class:`Tape`; :func:`backward` turns
cotangents of ``(y, final_state)`` into gradients. What the tape keeps, and its size: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from .layer_norm import (
    cell_output,
    has_layer_norm,
    input_projection_backward,
    normalise,
    normalise_backward,
    recurrent_projection,
)
from .masking import carried_hidden, valid_at
from .steps import linear, lstm_variant_changes, project_inputs, sigmoid
from .types import GRUParamsLike, LSTMParamsLike, RNNParamsLike

Array = Any
State = tuple[Array, ...]


# ----------------------------------------------------------------------------------------------
# cells: one forward step that records, one backward step, and the recurrent weight gradients


class _RNNCell:
    """``h' = act(gx + h W_hh^T + b_hh)``; records nothing (``h'`` is read back from ``y``)."""

    def __init__(self, xp: Any, params: RNNParamsLike, options: dict[str, Any]) -> None:
        self.xp, self.params = xp, params
        self.relu = options.get("nonlinearity", "tanh") == "relu"

    def forward_step(self, gx: Array, state: State) -> tuple[State, tuple[Array, ...]]:
        xp = self.xp
        z = gx + recurrent_projection(xp, state[0], self.params)
        h_new = xp.maximum(z, xp.zeros_like(z)) if self.relu else xp.tanh(z)
        return (h_new,), ()

    def after_step(self, state: State) -> tuple[Array, ...]:
        return ()

    def backward_step(self, t: int, tape: Tape, d_new: State, valid: Optional[Array]) -> tuple[Array, State]:
        xp = self.xp
        h_new = tape.y[t, ...]
        dh = d_new[0]
        if self.relu:
            dz = xp.where(h_new > 0, dh, xp.zeros_like(dh))
        else:
            dz = dh * (1.0 - h_new * h_new)
        if valid is not None:
            dz = xp.where(valid, dz, xp.zeros_like(dz))
        return dz, (self._recurrent_back(t, tape, dz),)

    def _recurrent_back(self, t: int, tape: Tape, d_pre: Array) -> Array:
        """The gradient of ``h_{t-1}`` through the recurrent projection, from that of its output ``d_pre``."""
        return self.xp.matmul(d_pre, self.params.weight_hh)

    def recurrent_grads(self, dgx: Array, h_prev: Array) -> dict[str, Array]:
        return _plain_recurrent_grads(self.xp, self.params, dgx, h_prev)


def _flat(xp: Any, a: Array) -> Array:
    return xp.reshape(a, (a.shape[0] * a.shape[1], a.shape[2]))


def _weight_grad(xp: Any, d_out: Array, inputs: Array) -> Array:
    """``sum_t d_out[t]^T inputs[t]`` for ``(T, B, Out)`` and ``(T, B, In)``: one matmul."""
    return xp.matmul(xp.matrix_transpose(_flat(xp, d_out)), _flat(xp, inputs))


def _bias_grad(xp: Any, d_out: Array) -> Array:
    return xp.sum(_flat(xp, d_out), axis=0)


def _plain_recurrent_grads(xp: Any, params: Any, dgx: Array, h_prev: Array) -> dict[str, Array]:
    # RNN and LSTM: the recurrent pre-activation gradient is the input one.
    grads = {"weight_hh": _weight_grad(xp, dgx, h_prev)}
    if params.bias_hh is not None:
        grads["bias_hh"] = _bias_grad(xp, dgx)
    return grads


class _LSTMCell:
    """LSTM with every option; records the gate activations ``(B, 4H)`` and the cell state ``(B, H)``."""

    def __init__(self, xp: Any, params: LSTMParamsLike, options: dict[str, Any]) -> None:
        self.xp, self.params = xp, params
        self.coupled = bool(options.get("coupled", False))
        self.clip = options.get("clip")
        self.peepholes = any(p is not None for p in (params.peephole_i, params.peephole_f, params.peephole_o))
        self.hidden = params.hidden_size
        column = params.weight_ih[:, 0]
        H = self.hidden
        half = xp.full_like(column[:H], 0.5)
        one = xp.ones_like(column[:H])
        zero = xp.zeros_like(column[:H])
        # sigmoid(z) = 0.5 tanh(0.5 z) + 0.5 for i, f, o and tanh(z) for g, in three whole-row operations
        self.scale = xp.concat([half, half, one, half])
        self.offset = xp.concat([half, half, zero, half])
        # derivative of the activation from its value a: (1 - a)(a + k): a(1-a) for sigmoid, 1-a^2 for tanh
        self.derivative_shift = xp.concat([zero, zero, one, zero])
        # backward-pass accumulators (per pullback call)
        self.peephole_grads: dict[str, Array] = {}
        self.projection_terms: dict[int, tuple[Array, Array]] = {}  # time index -> (dh, o * tanh(c))

    def _activate(self, z: Array) -> tuple[Array, Optional[Array]]:
        xp = self.xp
        keep = None
        if self.clip is not None:
            keep = xp.abs(z) <= self.clip
            z = xp.clip(z, -self.clip, self.clip)
        return xp.tanh(z * self.scale) * self.scale + self.offset, keep

    def forward_step(self, gx: Array, state: State) -> tuple[State, tuple[Array, ...]]:
        xp, p, H = self.xp, self.params, self.hidden
        h, c = state
        z = gx + linear(xp, h, p.weight_hh, p.bias_hh)
        if not self.peepholes:
            gates, keep = self._activate(z)
            input_gate, forget_gate, cell_gate, output_gate = (gates[:, k * H : (k + 1) * H] for k in range(4))
            if self.coupled:
                forget_gate = 1.0 - input_gate
            c_new = forget_gate * c + input_gate * cell_gate
        else:
            # peepholes: i, f see c_{t-1}, o sees c_t, so o is activated after c_t is known
            zi, zf, zg, zo = (z[:, k * H : (k + 1) * H] for k in range(4))
            if p.peephole_i is not None:
                zi = zi + p.peephole_i * c
            if p.peephole_f is not None:
                zf = zf + p.peephole_f * c
            ifg, keep_ifg = self._activate_part(xp.concat([zi, zf, zg], axis=-1), 3)
            input_gate, forget_gate, cell_gate = (ifg[:, k * H : (k + 1) * H] for k in range(3))
            if self.coupled:
                forget_gate = 1.0 - input_gate
            c_new = forget_gate * c + input_gate * cell_gate
            if p.peephole_o is not None:
                zo = zo + p.peephole_o * c_new
            output_gate, keep_o = self._activate_part(zo, 1, offset=3)
            gates = xp.concat([ifg, output_gate], axis=-1)
            keep = None if keep_o is None else xp.concat([keep_ifg, keep_o], axis=-1)
        h_new = output_gate * xp.tanh(c_new)
        if p.weight_hr is not None:
            h_new = linear(xp, h_new, p.weight_hr)
        return (h_new, c_new), (gates, keep)

    def _activate_part(self, z: Array, parts: int, offset: int = 0) -> tuple[Array, Optional[Array]]:
        xp, H = self.xp, self.hidden
        keep = None
        if self.clip is not None:
            keep = xp.abs(z) <= self.clip
            z = xp.clip(z, -self.clip, self.clip)
        scale = self.scale[offset * H : (offset + parts) * H]
        return xp.tanh(z * scale) * scale + self.offset[offset * H : (offset + parts) * H], keep

    def after_step(self, state: State) -> tuple[Array, ...]:
        return (state[1],)  # the (masked) cell state after the step

    def backward_step(self, t: int, tape: Tape, d_new: State, valid: Optional[Array]) -> tuple[Array, State]:
        xp, p, H = self.xp, self.params, self.hidden
        gates, keep, c_new = tape.saved[t]
        c_prev = tape.previous(t, 2, 1)
        input_gate, forget_gate, cell_gate, output_gate = (gates[:, k * H : (k + 1) * H] for k in range(4))
        if self.coupled:
            forget_gate = 1.0 - input_gate
        dh, dc = d_new
        tanh_c = xp.tanh(c_new)
        dm = self._projection_back(t, dh, output_gate, tanh_c, valid)
        d_output = dm * tanh_c
        dc = dc + dm * output_gate * (1.0 - tanh_c * tanh_c)
        if p.peephole_o is not None:
            dzo = d_output * output_gate * (1.0 - output_gate)
            if keep is not None:
                dzo = xp.where(keep[:, 3 * H :], dzo, xp.zeros_like(dzo))
            dc = dc + dzo * p.peephole_o
        d_input = dc * cell_gate
        d_forget = dc * c_prev
        d_cell = dc * input_gate
        dc_prev = dc * forget_gate
        if self.coupled:
            d_input = d_input - d_forget
            d_forget = xp.zeros_like(d_forget)
        d_gates = xp.concat([d_input, d_forget, d_cell, d_output], axis=-1)
        dz = d_gates * (1.0 - gates) * (gates + self.derivative_shift)
        if keep is not None:
            dz = xp.where(keep, dz, xp.zeros_like(dz))
        if valid is not None:
            dz = xp.where(valid, dz, xp.zeros_like(dz))
        if self.peepholes:
            dzi, dzf, dzo = dz[:, :H], dz[:, H : 2 * H], dz[:, 3 * H :]
            for name, d_pre, c_seen in (("peephole_i", dzi, c_prev), ("peephole_f", dzf, c_prev)):
                if getattr(p, name) is not None:
                    dc_prev = dc_prev + d_pre * getattr(p, name)
                    self._accumulate(name, d_pre * c_seen)
            if p.peephole_o is not None:
                self._accumulate("peephole_o", dzo * c_new)
        return dz, (xp.matmul(dz, p.weight_hh), dc_prev)

    def _recurrent_back(self, t: int, tape: Tape, d_pre: Array) -> Array:
        return self.xp.matmul(d_pre, self.params.weight_hh)

    def _cell_output(self, c: Array) -> Array:
        return c

    def _cell_output_back(self, c: Array, d_out: Array, valid: Optional[Array]) -> Array:
        return d_out

    def _accumulate(self, name: str, term: Array) -> None:
        total = self.xp.sum(term, axis=0)
        self.peephole_grads[name] = total if name not in self.peephole_grads else self.peephole_grads[name] + total

    def _projection_back(self, t: int, dh: Array, output_gate: Array, squashed: Array, valid: Optional[Array]) -> Array:
        """The cotangent of ``o * act(c)`` from that of ``h``: through ``weight_hr`` with a projection (whose weight
        gradient term, ``(dh, o * act(c))`` with padded rows zeroed, is recorded for step ``t``), else ``dh``."""
        xp, p = self.xp, self.params
        if p.weight_hr is None:
            return dh
        dm = xp.matmul(dh, p.weight_hr)
        m = output_gate * squashed
        if valid is not None:
            dh = xp.where(valid, dh, xp.zeros_like(dh))
            m = xp.where(valid, m, xp.zeros_like(m))
        self.projection_terms[t] = (dh, m)
        return dm

    def recurrent_grads(self, dgx: Array, h_prev: Array) -> dict[str, Array]:
        xp, p = self.xp, self.params
        grads = _plain_recurrent_grads(xp, p, dgx, h_prev)
        for name in ("peephole_i", "peephole_f", "peephole_o"):
            if getattr(p, name) is not None:
                grads[name] = self.peephole_grads.get(name, xp.zeros_like(getattr(p, name)))
        if p.weight_hr is not None:
            terms = [self.projection_terms[t] for t in sorted(self.projection_terms)]
            d_proj = xp.stack([term[0] for term in terms], axis=0)
            unprojected = xp.stack([term[1] for term in terms], axis=0)
            grads["weight_hr"] = _weight_grad(xp, d_proj, unprojected)
        return grads


class _VariantLSTMCell(_LSTMCell):
    """LSTM with the Greff et al. (2015) options (absent gates, identity activations) and the full gate recurrence
    ``weight_gg``; :class:`_LSTMCell` runs every other call. Records the gate activations ``(B, 4H)`` (an absent
    gate recorded as ones), the clip mask, the cell state and, with ``weight_gg``, the gate state ``(B, 3H)``."""

    def __init__(self, xp: Any, params: LSTMParamsLike, options: dict[str, Any]) -> None:
        super().__init__(xp, params, options)
        self.use_input = bool(options.get("input_gate", True))
        self.use_forget = bool(options.get("forget_gate", True)) and not self.coupled
        self.use_output = bool(options.get("output_gate", True))
        self.tanh_input = options.get("input_activation", "tanh") == "tanh"
        self.tanh_output = options.get("output_activation", "tanh") == "tanh"
        self.weight_gg = getattr(params, "weight_gg", None)
        self.gate_terms: dict[int, tuple[Array, Array]] = {}  # time index -> (d pre-activations i, f, o; gates in)

    def _sigmoid(self, z: Array) -> tuple[Array, Optional[Array]]:
        xp = self.xp
        keep = None
        if self.clip is not None:
            keep = xp.abs(z) <= self.clip
            z = xp.clip(z, -self.clip, self.clip)
        return sigmoid(xp, z), keep

    def _previous_gates(self, gates: Array) -> Array:
        """The gate state a step reads: with ``coupled`` its forget part is ``1 - i_{t-1}``."""
        if not self.coupled:
            return gates
        H = self.hidden
        return self.xp.concat([gates[:, :H], 1.0 - gates[:, :H], gates[:, 2 * H :]], axis=-1)

    def forward_step(self, gx: Array, state: State) -> tuple[State, tuple[Array, ...]]:
        xp, p, H = self.xp, self.params, self.hidden
        h, c = state[0], state[1]
        z = gx + recurrent_projection(xp, h, p)
        zi, zf, zg, zo = (z[:, k * H : (k + 1) * H] for k in range(4))
        if self.weight_gg is not None:
            recurrent = linear(xp, self._previous_gates(state[2]), self.weight_gg)
            zi, zf, zo = zi + recurrent[:, :H], zf + recurrent[:, H : 2 * H], zo + recurrent[:, 2 * H :]
        ones = xp.ones_like(c)
        keeps: list[Optional[Array]] = [None] * 4
        input_gate = ones
        if self.use_input:
            if p.peephole_i is not None:
                zi = zi + p.peephole_i * c
            input_gate, keeps[0] = self._sigmoid(zi)
        forget_gate = ones
        if self.coupled:
            forget_gate = 1.0 - input_gate
        elif self.use_forget:
            if p.peephole_f is not None:
                zf = zf + p.peephole_f * c
            forget_gate, keeps[1] = self._sigmoid(zf)
        if self.clip is not None:
            keeps[2] = xp.abs(zg) <= self.clip
            zg = xp.clip(zg, -self.clip, self.clip)
        cell_gate = xp.tanh(zg) if self.tanh_input else zg
        c_new = forget_gate * c + input_gate * cell_gate
        output_gate = ones
        if self.use_output:
            if p.peephole_o is not None:
                zo = zo + p.peephole_o * c_new
            output_gate, keeps[3] = self._sigmoid(zo)
        c_out = cell_output(xp, c_new, p)
        h_new = output_gate * (xp.tanh(c_out) if self.tanh_output else c_out)
        if p.weight_hr is not None:
            h_new = linear(xp, h_new, p.weight_hr)
        gates = xp.concat([input_gate, forget_gate, cell_gate, output_gate], axis=-1)
        keep = None
        if self.clip is not None:
            keep = xp.concat([ones > 0 if k is None else k for k in keeps], axis=-1)
        if self.weight_gg is None:
            return (h_new, c_new), (gates, keep)
        return (h_new, c_new, xp.concat([input_gate, forget_gate, output_gate], axis=-1)), (gates, keep)

    def after_step(self, state: State) -> tuple[Array, ...]:
        return tuple(state[1:])  # the (masked) cell state and, with weight_gg, gate state after the step

    def backward_step(self, t: int, tape: Tape, d_new: State, valid: Optional[Array]) -> tuple[Array, State]:
        xp, p, H = self.xp, self.params, self.hidden
        gates, keep, c_new = tape.saved[t][:3]
        c_prev = tape.previous(t, 2, 1)
        input_gate, forget_gate, cell_gate, output_gate = (gates[:, k * H : (k + 1) * H] for k in range(4))
        dh, dc = d_new[0], d_new[1]
        c_out = self._cell_output(c_new)
        squashed = xp.tanh(c_out) if self.tanh_output else c_out
        dm = self._projection_back(t, dh, output_gate, squashed, valid)
        d_output = dm * squashed
        d_out = dm * output_gate * (1.0 - squashed * squashed) if self.tanh_output else dm * output_gate
        dc = dc + self._cell_output_back(c_new, d_out, valid)
        d_gates_state = d_new[2] if self.weight_gg is not None else None  # the gates are state too: [i, f, o]
        if d_gates_state is not None:
            d_output = d_output + d_gates_state[:, 2 * H :]
        zero = xp.zeros_like(dc)
        dzo = d_output * output_gate * (1.0 - output_gate) if self.use_output else zero
        if keep is not None:
            dzo = xp.where(keep[:, 3 * H :], dzo, zero)
        if valid is not None:
            dzo = xp.where(valid, dzo, zero)
        if self.use_output and p.peephole_o is not None:
            dc = dc + dzo * p.peephole_o
            self._accumulate("peephole_o", dzo * c_new)
        d_input = dc * cell_gate
        d_forget = dc * c_prev
        if d_gates_state is not None:
            d_input = d_input + d_gates_state[:, :H]
            d_forget = d_forget + d_gates_state[:, H : 2 * H]
        d_cell = dc * input_gate
        dc_prev = dc * forget_gate
        if self.coupled:
            d_input = d_input - d_forget
        dzi = d_input * input_gate * (1.0 - input_gate) if self.use_input else zero
        dzf = d_forget * forget_gate * (1.0 - forget_gate) if self.use_forget else zero
        dzg = d_cell * (1.0 - cell_gate * cell_gate) if self.tanh_input else d_cell
        dz = xp.concat([dzi, dzf, dzg, zero], axis=-1)
        if keep is not None:
            dz = xp.where(keep, dz, xp.zeros_like(dz))
        if valid is not None:
            dz = xp.where(valid, dz, xp.zeros_like(dz))
        dz = xp.concat([dz[:, : 3 * H], dzo], axis=-1)
        dzi, dzf = dz[:, :H], dz[:, H : 2 * H]
        if self.use_input and p.peephole_i is not None:
            dc_prev = dc_prev + dzi * p.peephole_i
            self._accumulate("peephole_i", dzi * c_prev)
        if self.use_forget and p.peephole_f is not None:
            dc_prev = dc_prev + dzf * p.peephole_f
            self._accumulate("peephole_f", dzf * c_prev)
        d_prev: State = (self._recurrent_back(t, tape, dz), dc_prev)
        if self.weight_gg is not None:
            d_gate_pre = xp.concat([dzi, dzf, dzo], axis=-1)
            read = self._previous_gates(tape.previous(t, 3, 2))
            if valid is not None:
                read = xp.where(valid, read, xp.zeros_like(read))
            self.gate_terms[t] = (d_gate_pre, read)
            d_read = xp.matmul(d_gate_pre, self.weight_gg)
            if self.coupled:  # the forget part read was 1 - i_{t-1}
                d_read = xp.concat(
                    [d_read[:, :H] - d_read[:, H : 2 * H], xp.zeros_like(dc), d_read[:, 2 * H :]], axis=-1
                )
            d_prev = (*d_prev, d_read)
        return dz, d_prev

    def recurrent_grads(self, dgx: Array, h_prev: Array) -> dict[str, Array]:
        xp = self.xp
        grads = super().recurrent_grads(dgx, h_prev)
        if self.weight_gg is not None:
            terms = [self.gate_terms[t] for t in sorted(self.gate_terms)]
            d_pre = xp.stack([term[0] for term in terms], axis=0)
            read = xp.stack([term[1] for term in terms], axis=0)
            grads["weight_gg"] = _weight_grad(xp, d_pre, read)
        return grads


def _lstm_cell(xp: Any, params: LSTMParamsLike, options: dict[str, Any]) -> _LSTMCell:
    """The vanilla cell for every call the fast paths run too (unchanged numbers), the variant cell otherwise."""
    if has_layer_norm(params):
        return _LayerNormLSTMCell(xp, params, options)
    if lstm_variant_changes(params, options):
        return _VariantLSTMCell(xp, params, options)
    return _LSTMCell(xp, params, options)


class _GRUCell:
    """GRU, both reset variants; records ``r, z, n`` ``(B, 3H)`` (and ``h W_hn^T + b_hn`` when linear before reset)."""

    #: set by a wrapper that feeds the cell another ``h`` than the one the update gate mixes in (recurrent dropout
    #: masks only the products, as Keras does): ``t -> h_{t-1}`` as mixed; ``mix_grad`` is then that term's share
    #: of the last ``backward_step``'s ``dh_prev``
    mixed_prev: Optional[Callable[[int], Array]] = None
    mix_grad: Optional[Array] = None

    def __init__(self, xp: Any, params: GRUParamsLike, options: dict[str, Any]) -> None:
        self.xp, self.params = xp, params
        self.linear_before_reset = bool(options.get("linear_before_reset", True))
        self.hidden = params.hidden_size
        # time index -> dgh (B, 3H) when linear before reset, else r * h_prev (B, H)
        self.recurrent_terms: dict[int, Array] = {}

    def forward_step(self, gx: Array, state: State) -> tuple[State, tuple[Array, ...]]:
        xp, p, H = self.xp, self.params, self.hidden
        h = state[0]
        if self.linear_before_reset:
            gh = recurrent_projection(xp, h, p)
            reset_update = sigmoid(xp, gx[:, : 2 * H] + gh[:, : 2 * H])
            gh_n = gh[:, 2 * H :]
            candidate = xp.tanh(gx[:, 2 * H :] + reset_update[:, :H] * gh_n)
            gh_n = xp.asarray(gh_n, copy=True)  # a view would keep all of gh (3H) alive on the tape
        else:
            gates_bias = None if p.bias_hh is None else p.bias_hh[: 2 * H]
            gh_rz = linear(xp, h, p.weight_hh[: 2 * H, :], gates_bias)
            reset_update = sigmoid(xp, gx[:, : 2 * H] + gh_rz)
            candidate_bias = None if p.bias_hh is None else p.bias_hh[2 * H :]
            candidate = xp.tanh(
                gx[:, 2 * H :] + linear(xp, reset_update[:, :H] * h, p.weight_hh[2 * H :, :], candidate_bias)
            )
            gh_n = None
        update = reset_update[:, H:]
        h_new = (1.0 - update) * candidate + update * h
        return (h_new,), (reset_update, candidate, gh_n)

    def after_step(self, state: State) -> tuple[Array, ...]:
        return ()

    def backward_step(self, t: int, tape: Tape, d_new: State, valid: Optional[Array]) -> tuple[Array, State]:
        xp, p, H = self.xp, self.params, self.hidden
        reset_update, candidate, gh_n = tape.saved[t]
        reset, update = reset_update[:, :H], reset_update[:, H:]
        h_prev = tape.h_prev[t, ...]
        dh = d_new[0]
        d_candidate_pre = dh * (1.0 - update) * (1.0 - candidate * candidate)
        d_update = dh * ((h_prev if self.mixed_prev is None else self.mixed_prev(t)) - candidate)
        dh_prev = self.mix_grad = dh * update
        if self.linear_before_reset:
            d_reset = d_candidate_pre * gh_n
        else:
            d_reset_h = xp.matmul(d_candidate_pre, p.weight_hh[2 * H :, :])
            d_reset = d_reset_h * h_prev
            dh_prev = dh_prev + d_reset_h * reset
        d_reset_update = xp.concat([d_reset, d_update], axis=-1) * reset_update * (1.0 - reset_update)
        dgx = xp.concat([d_reset_update, d_candidate_pre], axis=-1)
        if self.linear_before_reset:
            dgh = xp.concat([d_reset_update, d_candidate_pre * reset], axis=-1)
            if valid is not None:  # where, not a product: padded rows may hold NaN gates
                dgx = xp.where(valid, dgx, xp.zeros_like(dgx))
                dgh = xp.where(valid, dgh, xp.zeros_like(dgh))
            self.recurrent_terms[t] = dgh
            dh_prev = dh_prev + self._recurrent_back(t, tape, dgh)
        else:
            reset_h = reset * h_prev
            if valid is not None:
                dgx = xp.where(valid, dgx, xp.zeros_like(dgx))
                reset_h = xp.where(valid, reset_h, xp.zeros_like(reset_h))
            self.recurrent_terms[t] = reset_h
            dh_prev = dh_prev + xp.matmul(dgx[:, : 2 * H], p.weight_hh[: 2 * H, :])
        return dgx, (dh_prev,)

    def _recurrent_back(self, t: int, tape: Tape, d_pre: Array) -> Array:
        return self.xp.matmul(d_pre, self.params.weight_hh)

    def recurrent_grads(self, dgx: Array, h_prev: Array) -> dict[str, Array]:
        xp, p, H = self.xp, self.params, self.hidden
        stacked = xp.stack([self.recurrent_terms[t] for t in sorted(self.recurrent_terms)], axis=0)
        if self.linear_before_reset:
            grads = {"weight_hh": _weight_grad(xp, stacked, h_prev)}
            if p.bias_hh is not None:
                grads["bias_hh"] = _bias_grad(xp, stacked)
            return grads
        weight_rz = _weight_grad(xp, dgx[:, :, : 2 * H], h_prev)
        weight_n = _weight_grad(xp, dgx[:, :, 2 * H :], stacked)
        grads = {"weight_hh": xp.concat([weight_rz, weight_n], axis=0)}
        if p.bias_hh is not None:
            grads["bias_hh"] = _bias_grad(xp, dgx)
        return grads


class _LayerNorm:
    """Mixin of the layer-normalised cells (``_core/layer_norm.py``): ``LN_hh`` of ``W_hh h`` (its statistics
    recomputed from ``h_{t-1}`` in the backward pass) and, for the LSTM, ``LN_c`` of the cell state in ``h``."""

    xp: Any
    params: Any

    def __init__(self, xp: Any, params: Any, options: dict[str, Any]) -> None:
        super().__init__(xp, params, options)  # type: ignore[call-arg]
        self.norm_terms: dict[int, tuple[Array, Array, Array]] = {}  # t -> (d W_hh h, d_pre, d_pre * u_hat)
        self.ln_c_grads: dict[str, Array] = {}

    def _recurrent_back(self, t: int, tape: Tape, d_pre: Array) -> Array:
        xp, p = self.xp, self.params
        if getattr(p, "ln_hh_weight", None) is None:
            return xp.matmul(d_pre, p.weight_hh)
        _, u_hat, inverse_std = normalise(xp, linear(xp, tape.h_prev[t, ...], p.weight_hh), p.ln_hh_weight,
                                          p.ln_hh_bias)  # fmt: skip
        d_projection = normalise_backward(xp, d_pre, u_hat, inverse_std, p.ln_hh_weight)
        self.norm_terms[t] = (d_projection, d_pre, d_pre * u_hat)
        return xp.matmul(d_projection, p.weight_hh)

    def _cell_output(self, c: Array) -> Array:
        return cell_output(self.xp, c, self.params)

    def _cell_output_back(self, c: Array, d_out: Array, valid: Optional[Array]) -> Array:
        xp, p = self.xp, self.params
        if getattr(p, "ln_c_weight", None) is None:
            return d_out
        _, c_hat, inverse_std = normalise(xp, c, p.ln_c_weight, p.ln_c_bias)
        kept = d_out if valid is None else xp.where(valid, d_out, xp.zeros_like(d_out))
        for name, term in (("ln_c_weight", kept * c_hat), ("ln_c_bias", kept)):
            total = xp.sum(term, axis=0)
            self.ln_c_grads[name] = total if name not in self.ln_c_grads else self.ln_c_grads[name] + total
        return normalise_backward(xp, d_out, c_hat, inverse_std, p.ln_c_weight)

    def recurrent_grads(self, dgx: Array, h_prev: Array) -> dict[str, Array]:
        xp, p = self.xp, self.params
        grads = super().recurrent_grads(dgx, h_prev)  # type: ignore[misc]
        if getattr(p, "ln_hh_weight", None) is not None:
            ordered = [self.norm_terms[t] for t in sorted(self.norm_terms)]
            grads["weight_hh"] = _weight_grad(xp, xp.stack([term[0] for term in ordered], axis=0), h_prev)
            grads["ln_hh_weight"] = _bias_grad(xp, xp.stack([term[2] for term in ordered], axis=0))
            grads["ln_hh_bias"] = _bias_grad(xp, xp.stack([term[1] for term in ordered], axis=0))
        if getattr(p, "ln_c_weight", None) is not None:
            for name in ("ln_c_weight", "ln_c_bias"):
                grads[name] = self.ln_c_grads.get(name, xp.zeros_like(getattr(p, name)))
        return grads


class _LayerNormRNNCell(_LayerNorm, _RNNCell):
    """Elman RNN with ``ln_*`` params."""


class _LayerNormLSTMCell(_LayerNorm, _VariantLSTMCell):
    """LSTM with ``ln_*`` params, every option (the variant cell's code, normalised)."""


class _LayerNormGRUCell(_LayerNorm, _GRUCell):
    """GRU with ``ln_*`` params (``ln_hh_*`` only with ``linear_before_reset=True``)."""


def _rnn_cell(xp: Any, params: RNNParamsLike, options: dict[str, Any]) -> _RNNCell:
    return (_LayerNormRNNCell if has_layer_norm(params) else _RNNCell)(xp, params, options)


def _gru_cell(xp: Any, params: GRUParamsLike, options: dict[str, Any]) -> _GRUCell:
    return (_LayerNormGRUCell if has_layer_norm(params) else _GRUCell)(xp, params, options)


CELLS = {"rnn": _rnn_cell, "lstm": _lstm_cell, "gru": _gru_cell}


# ----------------------------------------------------------------------------------------------
# the tape, the recording forward scan and the backward scan


@dataclasses.dataclass
class Tape:
    """What one forward pass keeps for its backward pass (see the module docstring for sizes)."""

    kind: str
    params: Any
    options: dict[str, Any]
    x: Array  # (T, B, I), a reference to the input
    initial_state: State  # (B, ·) each
    lengths: Optional[Array]
    reverse: bool
    y: Array  # (T, B, P): the output, read back for previous hidden states
    saved: list  # per time index: the cell's recorded arrays + after_step arrays
    h_prev: Optional[Array] = None  # (T, B, P), built at backward time

    def previous(self, t: int, index: int, state_index: int) -> Array:
        """``saved[t'][index]`` of the step processed just before ``t``, or the initial state component."""
        before = t + 1 if self.reverse else t - 1
        if 0 <= before < len(self.saved):
            return self.saved[before][index]
        return self.initial_state[state_index]


def forward(
    xp: Any,
    kind: str,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, State, Tape]:
    """The sequence forward pass of ``_core/sequence.py`` that also returns a :class:`Tape`.

    ``x (T, B, I)`` -> ``y (T, B, P)``, final state tuple, tape.
    """
    cell = CELLS[kind](xp, params, options)
    gx = project_inputs(xp, x, params)
    steps = gx.shape[0]
    state = tuple(state)
    initial_state = state
    outputs: list[Array] = [None] * steps  # type: ignore[list-item]
    saved: list[Any] = [None] * steps
    zero_output = xp.zeros_like(state[0])
    mask, carry = options.get("mask"), options.get("padding", "zeros") == "carry"
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        new_state, recorded = cell.forward_step(gx[t, ...], state)
        valid = valid_at(xp, lengths, mask, t)
        if valid is None:
            state = new_state
            outputs[t] = new_state[0]
        else:
            state = tuple(xp.where(valid, new, old) for new, old in zip(new_state, state))
            outputs[t] = state[0] if carry else xp.where(valid, new_state[0], zero_output)
        saved[t] = recorded + cell.after_step(state)
    y = xp.stack(outputs, axis=0)
    tape = Tape(kind, params, dict(options), x, initial_state, lengths, reverse, y, saved)
    return y, state, tape


def _previous_hidden(xp: Any, tape: Tape) -> Array:
    """``(T, B, P)``: the hidden state entering each time step, rebuilt from ``y`` and ``h0``.

    For a valid step the previous processed step was valid too, except when running in reverse
    over a sequence shorter than ``T``: its first processed step ``t = lengths[b] - 1`` sees ``h0``.
    Rows of padded steps are never used (their gradients are masked).
    """
    y, h0 = tape.y, tape.initial_state[0]
    mask, carry = tape.options.get("mask"), tape.options.get("padding", "zeros") == "carry"
    if mask is not None or (carry and tape.lengths is not None):  # skipped steps anywhere, or y holds the carry
        return carried_hidden(xp, y, h0, tape.lengths, mask, tape.reverse, carry)
    first = xp.reshape(h0, (1, *h0.shape))
    if not tape.reverse:
        return xp.concat([first, y[:-1, ...]], axis=0)
    if tape.lengths is None:
        return xp.concat([y[1:, ...], first], axis=0)
    steps = y.shape[0]
    rows = [xp.where(xp.reshape(tape.lengths > t + 1, (-1, 1)), y[t + 1, ...], h0) for t in range(steps - 1)]
    return xp.stack([*rows, h0], axis=0)


def _zeros_if_none(xp: Any, cotangent: Optional[Array], like: Array) -> Array:
    return xp.zeros_like(like) if cotangent is None else cotangent


def backward(
    xp: Any,
    tape: Tape,
    dy: Optional[Array],
    d_final: tuple[Optional[Array], ...],
) -> tuple[Array, Any, State]:
    """Gradients from cotangents ``dy (T, B, P)`` and ``d_final`` (one per state component; ``None`` = zeros).

    Returns ``(dx (T, B, I), dparams (same params class; None where the field is None), d_initial_state)``.
    The tape is only read, so a pullback can be called more than once.
    """
    params = tape.params
    cell = CELLS[tape.kind](xp, params, tape.options)  # a fresh cell: its accumulators belong to this call
    steps = tape.y.shape[0]
    h_prev = _previous_hidden(xp, tape)
    tape = dataclasses.replace(tape, h_prev=h_prev)
    d_state = tuple(_zeros_if_none(xp, d, s) for d, s in zip(d_final, tape.initial_state))
    dgx_steps: list[Array] = [None] * steps  # type: ignore[list-item]
    valid_steps: list[Array] = [None] * steps  # type: ignore[list-item]
    order = range(steps) if tape.reverse else range(steps - 1, -1, -1)  # the forward order, backwards
    mask, carry = tape.options.get("mask"), tape.options.get("padding", "zeros") == "carry"
    for t in order:
        d_new = d_state if dy is None else (d_state[0] + dy[t, ...], *d_state[1:])
        valid = valid_at(xp, tape.lengths, mask, t)
        valid_steps[t] = valid
        dgx_steps[t], d_prev = cell.backward_step(t, tape, d_new, valid)
        if valid is not None:  # a padded step passes the state cotangent through (with carry, y[t]'s too)
            d_prev = tuple(xp.where(valid, new, old) for new, old in zip(d_prev, d_new if carry else d_state))
        d_state = d_prev
    dgx = xp.stack(dgx_steps, axis=0)  # (T, B, G*H)
    x = tape.x
    if valid_steps[0] is not None:  # 0 * NaN is NaN: padded inputs must not enter the weight gradient
        x = xp.where(xp.stack(valid_steps, axis=0), x, xp.zeros_like(x))
    d_projection, input_norm_grads = input_projection_backward(xp, params, dgx, x)  # dgx itself without ln_ih
    grads = {"weight_ih": _weight_grad(xp, d_projection, x), **input_norm_grads}
    if params.bias_ih is not None:
        grads["bias_ih"] = _bias_grad(xp, dgx)
    grads.update(cell.recurrent_grads(dgx, h_prev))
    dx = xp.reshape(xp.matmul(_flat(xp, d_projection), params.weight_ih), tape.x.shape)
    fields = {f.name: grads.get(f.name) for f in dataclasses.fields(params)}
    return dx, type(params)(**fields), d_state
