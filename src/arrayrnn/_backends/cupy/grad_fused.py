"""CuPy gradient path: a recording fused forward and a fused backward, for ``ar.vjp`` of the sequence functions.

Every option of the sequence functions in float32/float64; the hook (``_backends/cupy/__init__.py``) leaves other
dtypes and an empty batch to the generic core (:func:`declines`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from . import fused as cupy_kernels
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
    placeholder,
    project_inputs,
    time_order,
)
from .fused import EAGER, Ops
from .sources import OPTIONS

Array = Any
State = tuple[Array, ...]
#: backward(dy (T, B, P) or None, d_final (one per state component, None = zeros)) -> (dx, dparams, d_state)
Backward = Callable[[Optional[Array], tuple[Optional[Array], ...]], tuple[Array, Any, State]]

#: dtypes the gradient path runs; others fall back to the generic core (float16: no tested accumulation story)
GRAD_DTYPES = ("float32", "float64")


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
    """``(y (T, B, P), final_state, backward)`` for a validated, time-major call.

    Arguments as for every sequence implementation (``_core/sequence.py``); ``options`` are the cell
    options (``nonlinearity`` / ``coupled``, ``clip`` / ``linear_before_reset``). The caller (the hook) has entered
    the device and declined what :func:`declines` declines.
    """
    return _RECORDERS[kind](cupy_module(), x, params, tuple(state), lengths, reverse, **options)


# ----------------------------------------------------------------------------------------------
# shared pieces


def previous_step(t: int, steps: int, reverse: bool) -> Optional[int]:
    """The step processed just before ``t`` in the forward pass (``None`` for the first)."""
    before = t + 1 if reverse else t - 1
    return before if 0 <= before < steps else None


def backward_order(steps: int, reverse: bool) -> range:
    return range(steps) if reverse else range(steps - 1, -1, -1)


def _valid_mask(cp: Any, lengths: Array, steps: int) -> Array:
    """``(T, B)`` booleans: step ``t`` of sequence ``b`` is valid."""
    return lengths[None, :] > cp.arange(steps)[:, None]


def declines(x: Array) -> bool:
    """Whether every gradient path leaves a call with input ``x (T, B, I)`` to the generic core: a dtype outside
    ``GRAD_DTYPES`` or an empty batch."""
    return dtype_name(x.dtype) not in GRAD_DTYPES or x.shape[1] == 0


def previous_hidden(cp: Any, y: Array, h0: Array, lengths: Optional[Array], reverse: bool) -> Array:
    """``(T, B, P)`` (contiguous): the hidden state entering each step, from ``y`` and ``h0`` (as the generic core).

    Running in reverse over a sequence shorter than ``T``, its first processed step sees ``h0``; rows of
    padded steps are never used unmasked.
    """
    first = h0[None]
    if not reverse:
        return cp.concatenate([first, y[:-1]], axis=0)
    if lengths is None:
        return cp.concatenate([y[1:], first], axis=0)
    steps = y.shape[0]
    following_valid = lengths[None, :] > cp.arange(1, steps)[:, None]  # (T-1, B): step t+1 is valid
    rows = cp.where(following_valid[:, :, None], y[1:], first)
    return cp.concatenate([rows, first], axis=0)


def _flat(a: Array) -> Array:
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2])


def _weight_grad(cp: Any, d_out: Array, inputs: Array) -> Array:
    """``sum_t d_out[t]^T inputs[t]`` for ``(T, B, Out)`` and ``(T, B, In)``: one matmul (or, with
    ``policy.Config.grad_weight_grad_chunks``, that many batched ones and a sum).

    Weight gradients are products with a small output (``G*H x I``) and a very long inner dimension (``T*B`` rows:
    204 800 at T = 50, B = 4096); a GEMM kernel that does not split the inner dimension has only as many blocks as
    output tiles (16 for 256 x 256) for the whole GPU: the chunks give it more.
    """
    left, right = _flat(cp.ascontiguousarray(d_out)), _flat(cp.ascontiguousarray(inputs))
    rows = left.shape[0]
    config = policy.current()
    chunks = config.grad_weight_grad_chunks or 1
    if chunks <= 1 or rows < chunks * config.grad_weight_grad_min_rows:
        return cp.matmul(left.T, right)
    size = rows // chunks
    used = size * chunks
    left_chunks = left[:used].reshape(chunks, size, left.shape[1]).transpose(0, 2, 1)
    total = cp.matmul(left_chunks, right[:used].reshape(chunks, size, right.shape[1])).sum(axis=0)
    if used < rows:
        total += cp.matmul(left[used:].T, right[used:])
    return total


def _bias_grad(cp: Any, d_out: Array) -> Array:
    """A bias (or peephole) gradient, the sum over all steps and batch rows of ``d_out (T, B, W)``: with
    ``policy.Config.grad_bias_by_matmul`` a product with a ones vector (one cuBLAS pass over ``(T*B, W)`` spread
    over the whole GPU), else ``sum(axis=(0, 1))``. CuPy's reduction over the two leading axes runs one block of 512
    threads per 32 output columns (its ``_get_block_specs``: 32 blocks for W = 1024), each block looping over all
    T*B rows, so a quarter of an H100's SMs stream the 0.8 GB of a bias at B = 4096. Not yet timed against each
    other on a GPU: ``benchmarks/gpu_bench.py``'s breakdown times both."""
    if policy.current().grad_bias_by_matmul:
        flat = _flat(cp.ascontiguousarray(d_out))
        return cp.matmul(cp.ones((flat.shape[0],), dtype=flat.dtype), flat)
    return d_out.sum(axis=(0, 1))


def _input_grads(cp: Any, x: Array, params: Any, dgx: Array, lengths: Optional[Array]) -> tuple[Array, dict]:
    """``dx`` and the gradients of ``weight_ih`` / ``bias_ih`` from the gate gradients ``dgx (T, B, G*H)``."""
    steps, batch, features = x.shape
    x = cp.ascontiguousarray(x)
    if lengths is not None:  # 0 * NaN is NaN: padded inputs must not enter the weight gradient
        x = cp.where(_valid_mask(cp, lengths, steps)[:, :, None], x, cp.zeros((), dtype=x.dtype))
    grads = {"weight_ih": _weight_grad(cp, dgx, x)}
    if params.bias_ih is not None:
        grads["bias_ih"] = _bias_grad(cp, dgx)
    dx = cp.matmul(_flat(dgx), params.weight_ih).reshape(steps, batch, features)
    return dx, grads


def rnn_param_grads(cp: Any, x: Array, params: Any, lengths: Optional[Array], dz: Array, h_prev: Array):
    """``dx`` and the parameter gradients of an RNN from its pre-activation gradients ``dz (T, B, H)``."""
    dx, grads = _input_grads(cp, x, params, dz, lengths)
    grads["weight_hh"] = _weight_grad(cp, dz, h_prev)
    if params.bias_hh is not None:  # the same sum as bias_ih's (both biases enter the same pre-activations)
        grads["bias_hh"] = grads["bias_ih"].copy() if "bias_ih" in grads else _bias_grad(cp, dz)
    return dx, grads


def lstm_param_grads(cp: Any, x: Array, params: Any, lengths: Optional[Array], reverse: bool, dz: Array,
                     cells: Array, c0: Array, h_prev: Array):  # fmt: skip
    """``dx`` and the parameter gradients of an LSTM (but ``weight_hr``) from ``dz (T, B, 4H)`` and the cell states."""
    hidden = params.hidden_size
    dx, grads = rnn_param_grads(cp, x, params, lengths, dz, h_prev)
    if params.peephole_i is not None or params.peephole_f is not None:
        c_prev = cp.concatenate([cells[1:], c0[None]]) if reverse else cp.concatenate([c0[None], cells[:-1]])
        for gate, name in ((0, "peephole_i"), (1, "peephole_f")):
            if getattr(params, name) is not None:
                grads[name] = _bias_grad(cp, dz[:, :, gate * hidden : (gate + 1) * hidden] * c_prev)
    if params.peephole_o is not None:
        grads["peephole_o"] = _bias_grad(cp, dz[:, :, 3 * hidden :] * cells)
    return dx, grads


def gru_param_grads(cp: Any, x: Array, params: Any, lengths: Optional[Array], dgx: Array, h_prev: Array, *,
                    dgh: Optional[Array] = None, reset_h_all: Optional[Array] = None):  # fmt: skip
    """``dx`` and the parameter gradients of a GRU: ``dgh`` when linear before reset, else ``r h_prev`` per step."""
    hidden = params.hidden_size
    dx, grads = _input_grads(cp, x, params, dgx, lengths)
    if dgh is not None:
        grads["weight_hh"] = _weight_grad(cp, dgh, h_prev)
        if params.bias_hh is not None:
            grads["bias_hh"] = _bias_grad(cp, dgh)
        return dx, grads
    weight_rz = _weight_grad(cp, dgx[:, :, : 2 * hidden], h_prev)
    grads["weight_hh"] = cp.concatenate([weight_rz, _weight_grad(cp, dgx[:, :, 2 * hidden :], reset_h_all)], axis=0)
    if params.bias_hh is not None:
        grads["bias_hh"] = _bias_grad(cp, dgx)
    return dx, grads


def params_like(params: Any, grads: dict[str, Array]) -> Any:
    return type(params)(**{f.name: grads.get(f.name) for f in dataclasses.fields(params)})


def initial_cotangent(cp: Any, given: Optional[Array], like: Array) -> Array:
    """A fresh contiguous buffer holding ``given`` (zeros for ``None``): the kernels update it in place."""
    if given is None:
        return cp.zeros(like.shape, dtype=like.dtype)
    return cp.ascontiguousarray(given).copy()


def fill_cotangent(cp: Any, buffer: Array, given: Optional[Array]) -> None:
    """Copy ``given`` into a plan's cotangent ``buffer`` (zeros for ``None``)."""
    if given is None:
        buffer.fill(0)
    else:
        cp.copyto(buffer, given)


class _Launcher:
    """Kernels of one dtype with the one-thread-per-element grid of a ``(B, width)`` array, launched through ``ops``.

    Kernels and grids are looked up once per loop, not once per step (host time per step is what limits small
    batches).
    """

    def __init__(self, ops: Ops, dtype: str, batch: int) -> None:
        self.ops, self.dtype, self.batch = ops, dtype, batch
        self.threads = policy.current().fused_block
        self._found: dict[tuple[str, int], tuple[Any, tuple[int]]] = {}

    def __call__(self, name: str, width: int, args: tuple[Any, ...]) -> None:
        found = self._found.get((name, width))
        if found is None:
            grid = blocks_for(self.batch * width, self.threads)
            found = self._found[(name, width)] = (kernel(name, self.dtype), grid)
        self.ops.launch(found[0], found[1], (self.threads,), args)


def output_cotangent(cp: Any, dy: Optional[Array], dtype: Any) -> tuple[Callable[[int], Array], int]:
    """Per-step access to ``dy`` (a placeholder when there is none) and the option bit that says which."""
    if dy is None:
        absent = placeholder(dtype)
        return (lambda t: absent), 0
    contiguous = cp.ascontiguousarray(dy)
    return (lambda t: contiguous[t]), OPTIONS["OPT_DY"]


def _finish_carry(
    launch: _Launcher,
    mm: Array,
    part: Optional[Array],
    lengths_arg: Array,
    carry: Array,
    width: int,
    previous: int,
    options: int,
) -> None:
    """After the last backward step: ``carry`` becomes the cotangent of the initial hidden state."""
    absent = placeholder(carry.dtype)
    if part is not None:
        options |= OPTIONS["OPT_PART"]
    launch(
        "grad_combine",
        width,
        (
            mm,
            absent if part is None else part,
            lengths_arg,
            absent,
            carry,
            absent,
            int32(launch.batch),
            int32(width),
            int32(previous),
            int32(-1),
            int32(options),
        ),
    )


# ----------------------------------------------------------------------------------------------
# RNN: the fused forward (``cupy_kernels.rnn_loop``) records nothing beyond y


def rnn_backward_loop(
    ops: Ops,
    params: Any,
    y: Array,
    lengths: Optional[Array],
    reverse: bool,
    *,
    nonlinearity: str,
    dy: Optional[Array],
    carry: Array,
) -> Array:
    """The backward time loop of an RNN: ``dz (T, B, H)``, the pre-activation gradients; ``carry (B, H)`` (the
    final state's cotangent on entry) becomes the initial state's."""
    cp = cupy_module()
    steps, batch, hidden = y.shape
    launch = _Launcher(ops, dtype_name(y.dtype), batch)
    lengths_arg = lengths_int64(lengths)
    dy_at, dy_bit = output_cotangent(cp, dy, y.dtype)
    options = options_mask(lengths=lengths, relu=nonlinearity == "relu")
    dz = cp.empty((steps, batch, hidden), dtype=y.dtype)
    mm = cp.empty((batch, hidden), dtype=y.dtype)
    previous = -1
    for t in backward_order(steps, reverse):
        sizes = (int32(batch), int32(hidden), int32(previous), int32(t), int32(options | dy_bit))
        launch("rnn_grad_step", hidden, (mm, lengths_arg, dy_at(t), y[t], carry, dz[t], *sizes))
        ops.matmul(dz[t], params.weight_hh, mm)
        previous = t
    _finish_carry(launch, mm, None, lengths_arg, carry, hidden, previous, options)
    return dz


def _rnn(
    cp: Any, x: Array, params: Any, state: State, lengths: Optional[Array], reverse: bool, *, nonlinearity: str = "tanh"
) -> tuple[Array, State, Backward]:
    y, final = cupy_kernels.sequence("rnn", None, x, params, state, lengths, reverse, {"nonlinearity": nonlinearity})
    h0 = state[0]

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            carry = initial_cotangent(cp, d_final[0], h0)
            dz = rnn_backward_loop(EAGER, params, y, lengths, reverse, nonlinearity=nonlinearity, dy=dy, carry=carry)
            dx, grads = rnn_param_grads(cp, x, params, lengths, dz, previous_hidden(cp, y, h0, lengths, reverse))
            return dx, params_like(params, grads), (carry,)

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# LSTM


def _c_before(cells: Array, c0: Array, t: int, reverse: bool) -> Array:
    """The cell state entering step ``t``: the previous processed step's, ``c0`` for the first."""
    before = previous_step(t, cells.shape[0], reverse)
    return c0 if before is None else cells[before]


def lstm_record_loop(
    ops: Ops,
    gx: Array,
    params: Any,
    h: Array,
    c0: Array,
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool,
    clip: Optional[float],
) -> tuple[Array, Array, Array]:
    """The recording forward loop from ``gx (T, B, 4H)`` (no bias): updates ``h (B, P)`` in place and returns
    ``y (T, B, P)``, the gate pre-activations ``z (T, B, 4H)`` and the cell states ``cells (T, B, H)``."""
    cp = cupy_module()
    steps, batch, _ = gx.shape
    hidden = params.hidden_size
    launch = _Launcher(ops, dtype_name(gx.dtype), batch)
    projected = params.weight_hr is not None
    out_size = h.shape[1]
    y = cp.empty((steps, batch, out_size), dtype=gx.dtype)
    z = cp.empty((steps, batch, 4 * hidden), dtype=gx.dtype)
    cells = cp.empty((steps, batch, hidden), dtype=gx.dtype)
    gh = cp.empty((batch, 4 * hidden), dtype=gx.dtype)
    options = lstm_options(params, lengths, coupled, clip)
    lengths_arg = lengths_int64(lengths)
    biases = tuple(contiguous_or_placeholder(b, gx.dtype) for b in (params.bias_ih, params.bias_hh))
    peepholes = tuple(
        contiguous_or_placeholder(p, gx.dtype) for p in (params.peephole_i, params.peephole_f, params.peephole_o)
    )
    clip_value = clip_scalar(dtype_name(gx.dtype), clip)
    sizes = (int32(batch), int32(hidden))
    weight_hh_t = params.weight_hh.T
    if projected:
        full = cp.empty((batch, hidden), dtype=gx.dtype)
        projection = cp.empty((batch, out_size), dtype=gx.dtype)
        weight_hr_t = params.weight_hr.T
        record_options = int32(options | OPTIONS["OPT_PROJECT"])
    else:
        record_options = int32(options)
    for t in time_order(steps, reverse):
        ops.matmul(h, weight_hh_t, gh)
        state_out = (_c_before(cells, c0, t, reverse), full if projected else h, cells[t], y[t], z[t])
        tail = (*sizes, int32(t), record_options, clip_value)
        launch("lstm_record_step", hidden, (gx[t], gh, *biases, *peepholes, lengths_arg, *state_out, *tail))
        if projected:
            ops.matmul(full, weight_hr_t, projection)
            launch(
                "project_update",
                out_size,
                (projection, lengths_arg, h, y[t], int32(batch), int32(out_size), int32(t), int32(options)),
            )
    return y, z, cells


def lstm_backward_loop(
    ops: Ops,
    params: Any,
    z: Array,
    cells: Array,
    c0: Array,
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool,
    clip: Optional[float],
    dy: Optional[Array],
    carry: Array,
    dc: Array,
) -> tuple[Array, Optional[Array], Optional[Array]]:
    """The backward time loop of an LSTM from its tape: ``dz (T, B, 4H)`` and, with a projection, the projected
    cotangents ``dh_all (T, B, P)`` and the unprojected outputs ``m_all (T, B, H)`` (else ``None``); ``carry (B, P)``
    and ``dc (B, H)`` (the final state's cotangents on entry) become the initial state's."""
    cp = cupy_module()
    steps, batch, _ = z.shape
    hidden = params.hidden_size
    dtype = dtype_name(z.dtype)
    launch = _Launcher(ops, dtype, batch)
    projected = params.weight_hr is not None
    out_size = carry.shape[1]
    options = lstm_options(params, lengths, coupled, clip)
    lengths_arg = lengths_int64(lengths)
    peepholes = tuple(
        contiguous_or_placeholder(p, z.dtype) for p in (params.peephole_i, params.peephole_f, params.peephole_o)
    )
    clip_value = clip_scalar(dtype, clip)
    sizes = (int32(batch), int32(hidden))
    dy_at, dy_bit = output_cotangent(cp, dy, z.dtype)
    step_options = options | dy_bit
    dz = cp.empty((steps, batch, 4 * hidden), dtype=z.dtype)
    mm = cp.empty((batch, out_size), dtype=z.dtype)
    absent = placeholder(z.dtype)
    dh_all = m_all = None
    if projected:
        dh_all = cp.empty((steps, batch, out_size), dtype=z.dtype)
        m_all = cp.empty((steps, batch, hidden), dtype=z.dtype)
        dm = cp.empty((batch, hidden), dtype=z.dtype)
    previous = -1
    for t in backward_order(steps, reverse):
        if projected:
            combine = (mm, absent, lengths_arg, dy_at(t), carry, dh_all[t], int32(batch), int32(out_size))
            launch("grad_combine", out_size, (*combine, int32(previous), int32(t), int32(step_options)))
            ops.matmul(dh_all[t], params.weight_hr, dm)
            # dy went into grad_combine: the step reads the projected cotangent dm and records m
            dy_arg, dm_arg, m_out, bits = absent, dm, m_all[t], options | OPTIONS["OPT_PROJECT"]
        else:
            dy_arg, dm_arg, m_out, bits = dy_at(t), absent, absent, step_options
        tape = (z[t], cells[t], _c_before(cells, c0, t, reverse), *peepholes)
        tail = (*sizes, int32(previous), int32(t), int32(bits), clip_value)
        launch("lstm_grad_step", hidden, (mm, lengths_arg, dy_arg, dm_arg, *tape, carry, dc, dz[t], m_out, *tail))
        ops.matmul(dz[t], params.weight_hh, mm)
        previous = t
    _finish_carry(launch, mm, None, lengths_arg, carry, out_size, previous, options)
    return dz, dh_all, m_all


def lstm_grads(cp: Any, x: Array, params: Any, lengths: Optional[Array], reverse: bool, y: Array, h0: Array,
               c0: Array, cells: Array, dz: Array, dh_all: Optional[Array], m_all: Optional[Array]):  # fmt: skip
    """``dx`` and every parameter gradient of an LSTM from its tape and its backward loop's results."""
    h_prev = previous_hidden(cp, y, h0, lengths, reverse)
    dx, grads = lstm_param_grads(cp, x, params, lengths, reverse, dz, cells, c0, h_prev)
    if dh_all is not None:
        grads["weight_hr"] = _weight_grad(cp, dh_all, m_all)
    return dx, grads


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
    h0, c0 = state[0], cp.ascontiguousarray(state[1])
    h = h0.copy()
    options = {"coupled": coupled, "clip": clip}
    gx = project_inputs(x, params.weight_ih)
    y, z, cells = lstm_record_loop(EAGER, gx, params, h, c0, lengths, reverse, **options)
    final = (h, cells[time_order(x.shape[0], reverse)[-1]].copy())

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            carry = initial_cotangent(cp, d_final[0], h0)
            dc = initial_cotangent(cp, d_final[1], c0)
            loop_options = {**options, "dy": dy, "carry": carry, "dc": dc}
            dz, dh_all, m_all = lstm_backward_loop(EAGER, params, z, cells, c0, lengths, reverse, **loop_options)
            dx, grads = lstm_grads(cp, x, params, lengths, reverse, y, h0, c0, cells, dz, dh_all, m_all)
            return dx, params_like(params, grads), (carry, dc)

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# GRU


def gru_record_loop(
    ops: Ops, gx: Array, params: Any, h: Array, lengths: Optional[Array], reverse: bool, *, linear_before_reset: bool
) -> tuple[Array, Array, Optional[Array]]:
    """The recording forward loop from ``gx (T, B, 3H)`` (no bias): updates ``h (B, H)`` in place and returns
    ``y (T, B, H)``, the gates ``(T, B, 3H)`` and, linear before reset, ``h W_hn^T + b_hn`` ``(T, B, H)`` (else
    ``None``)."""
    cp = cupy_module()
    steps, batch, _ = gx.shape
    hidden = params.hidden_size
    launch = _Launcher(ops, dtype_name(gx.dtype), batch)
    y = cp.empty((steps, batch, hidden), dtype=gx.dtype)
    gates = cp.empty((steps, batch, 3 * hidden), dtype=gx.dtype)
    options = int32(options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths))
    biases = tuple(contiguous_or_placeholder(b, gx.dtype) for b in (params.bias_ih, params.bias_hh))
    lengths_arg = lengths_int64(lengths)
    sizes = (int32(batch), int32(hidden))
    if linear_before_reset:
        hidden_n = cp.empty((steps, batch, hidden), dtype=gx.dtype)
        gh = cp.empty((batch, 3 * hidden), dtype=gx.dtype)
        weight_hh_t = params.weight_hh.T
        for t in time_order(steps, reverse):
            ops.matmul(h, weight_hh_t, gh)
            outputs = (h, y[t], gates[t], hidden_n[t])
            launch("gru_record_step", hidden, (gx[t], gh, *biases, lengths_arg, *outputs, *sizes, int32(t), options))
        return y, gates, hidden_n
    gh_rz = cp.empty((batch, 2 * hidden), dtype=gx.dtype)
    gh_n = cp.empty((batch, hidden), dtype=gx.dtype)
    reset_h = cp.empty((batch, hidden), dtype=gx.dtype)
    weight_rz_t, weight_n_t = params.weight_hh[: 2 * hidden].T, params.weight_hh[2 * hidden :].T
    for t in time_order(steps, reverse):
        ops.matmul(h, weight_rz_t, gh_rz)
        launch("gru_fused_reset", hidden, (gx[t], gh_rz, *biases, h, reset_h, *sizes, options))
        ops.matmul(reset_h, weight_n_t, gh_n)
        outputs = (h, y[t], gates[t])
        launch(
            "gru_record_finish", hidden, (gx[t], gh_rz, gh_n, *biases, lengths_arg, *outputs, *sizes, int32(t), options)
        )
    return y, gates, None


def gru_backward_loop(
    ops: Ops,
    params: Any,
    gates: Array,
    hidden_n: Optional[Array],
    h_prev: Array,
    lengths: Optional[Array],
    reverse: bool,
    *,
    dy: Optional[Array],
    carry: Array,
) -> tuple[Array, Optional[Array], Optional[Array]]:
    """The backward time loop of a GRU from its tape (``hidden_n`` is ``None`` unless linear before reset):
    ``dgx (T, B, 3H)`` and, linear before reset, ``dgh (T, B, 3H)``, else the products ``r h_prev`` of each step
    ``(T, B, H)`` (the other one ``None``); ``carry (B, H)`` becomes the initial state's cotangent."""
    cp = cupy_module()
    steps, batch, _ = gates.shape
    hidden = params.hidden_size
    launch = _Launcher(ops, dtype_name(gates.dtype), batch)
    options = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths)
    lengths_arg = lengths_int64(lengths)
    sizes = (int32(batch), int32(hidden))
    dy_at, dy_bit = output_cotangent(cp, dy, gates.dtype)
    step_options = int32(options | dy_bit)
    dgx = cp.empty((steps, batch, 3 * hidden), dtype=gates.dtype)
    mm = cp.empty((batch, hidden), dtype=gates.dtype)
    part = cp.empty((batch, hidden), dtype=gates.dtype)
    dgh = reset_h_all = None
    previous = -1
    if hidden_n is not None:
        dgh = cp.empty((steps, batch, 3 * hidden), dtype=gates.dtype)
        for t in backward_order(steps, reverse):
            tape = (dy_at(t), gates[t], hidden_n[t], h_prev[t], part, carry, dgx[t], dgh[t])
            launch("gru_grad_step", hidden, (mm, lengths_arg, *tape, *sizes, int32(previous), int32(t), step_options))
            ops.matmul(dgh[t], params.weight_hh, mm)
            previous = t
    else:
        weight_rz, weight_n = params.weight_hh[: 2 * hidden], params.weight_hh[2 * hidden :]
        dh = cp.empty((batch, hidden), dtype=gates.dtype)
        d_reset_h = cp.empty((batch, hidden), dtype=gates.dtype)
        reset_h_all = cp.empty((steps, batch, hidden), dtype=gates.dtype)
        for t in backward_order(steps, reverse):
            tape = (dy_at(t), gates[t], h_prev[t], part, carry, dh, dgx[t])
            candidate = (mm, lengths_arg, *tape, *sizes, int32(previous), int32(t), step_options)
            launch("gru_grad_candidate", hidden, candidate)
            ops.matmul(dgx[t][:, 2 * hidden :], weight_n, d_reset_h)
            reset = (d_reset_h, dh, lengths_arg, gates[t], h_prev[t], part, dgx[t], reset_h_all[t])
            launch("gru_grad_reset", hidden, (*reset, *sizes, int32(t), int32(options)))
            ops.matmul(dgx[t][:, : 2 * hidden], weight_rz, mm)
            previous = t
    _finish_carry(launch, mm, part, lengths_arg, carry, hidden, previous, options)
    return dgx, dgh, reset_h_all


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
    h0 = state[0]
    h = h0.copy()
    gx = project_inputs(x, params.weight_ih)
    y, gates, hidden_n = gru_record_loop(
        EAGER, gx, params, h, lengths, reverse, linear_before_reset=linear_before_reset
    )

    def backward(dy: Optional[Array], d_final: tuple[Optional[Array], ...]) -> tuple[Array, Any, State]:
        with x.device:
            carry = initial_cotangent(cp, d_final[0], h0)
            h_prev = previous_hidden(cp, y, h0, lengths, reverse)
            dgx, dgh, reset_h_all = gru_backward_loop(
                EAGER, params, gates, hidden_n, h_prev, lengths, reverse, dy=dy, carry=carry
            )
            dx, grads = gru_param_grads(cp, x, params, lengths, dgx, h_prev, dgh=dgh, reset_h_all=reset_h_all)
            return dx, params_like(params, grads), (carry,)

    return y, (h,), backward


_RECORDERS = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}
