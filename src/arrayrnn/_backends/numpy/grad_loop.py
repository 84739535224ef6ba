"""NumPy gradient path for ``ar.vjp`` of one layer: a recording forward into preallocated buffers and a backward
(float32 with numba: whole-sequence kernels; else in-place ufuncs per step), the weight gradients
and ``dx`` as single GEMMs over all steps. Same results (to float tolerance) as ``_core/backward.py``; it declines
(``None``) what it does not implement.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from ..._core.backward import _bias_grad, _flat, _weight_grad  # the core's one-GEMM weight gradients, with np
from ..._core.layer_norm import layer_norm_changes
from ..._core.masking import masking_changes
from ..._core.regularize import regularization_changes
from ..._core.steps import LSTM_VARIANT_DEFAULTS, lstm_variant_changes
from . import buffers, openblas
from .transpose import contiguous_transpose

Array = Any
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: the options each kind runs here (anything else set to something other than None declines)
_KNOWN = {
    "rnn": {"nonlinearity"},
    "lstm": {"coupled", "clip", *LSTM_VARIANT_DEFAULTS},
    "gru": {"linear_before_reset"},
}
_COMMON = {"mask", "padding", "regularize"}
PATH = "NumPy gradient loop"


#: larger batches run the recording core unless the whole-sequence kernels take the call: at B = 256 the per-step
#: loop measured 0.86-1.18x the core's time, at B <= 64 0.53-0.92x (benchmarks/NOTES.md)
MAX_BATCH = 128


def decline_reason(kind: str, x: Array, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why this path does not run the call (``None``: it runs it)."""
    if np.dtype(x.dtype) not in _DTYPES:
        return f"{np.dtype(x.dtype).name} is not supported by the NumPy gradient loop (float32, float64)"
    changes = masking_changes(options) + regularization_changes(options) + layer_norm_changes(params)
    if kind == "lstm":
        changes += lstm_variant_changes(params, options)
    if changes:
        return f"{', '.join(changes)}: not in the NumPy gradient loop, the recording core runs"
    unknown = [name for name, value in options.items() if name not in _KNOWN[kind] | _COMMON and value is not None]
    if unknown:
        return f"{', '.join(sorted(unknown))}: not in the NumPy gradient loop, the recording core runs"
    if x.shape[0] == 0 or x.shape[1] == 0:
        return "empty sequence or batch: the recording core runs"
    if x.shape[1] > MAX_BATCH and fused_kernels(kind, x.dtype, params, options) is None:
        return f"B = {x.shape[1]} > {MAX_BATCH}: the recording core runs (measured no faster there)"
    return None


def fused_kernels(kind: str, dtype: Any, params: Any, options: dict[str, Any]) -> Optional[Any]:
    """``grad_kernels`` when the call runs its whole-sequence float32 kernels (RNN; GRU with linear before reset; LSTM
    without peepholes, projection or clip; numba and NumPy's OpenBLAS found), else ``None``."""
    if kind not in ("lstm", "rnn", "gru") or np.dtype(dtype) != np.float32:
        return None
    if kind == "gru" and not options.get("linear_before_reset", True):
        return None
    if kind == "lstm" and options.get("clip") is not None:
        return None
    if kind == "lstm" and any(
        getattr(params, name) is not None for name in ("peephole_i", "peephole_f", "peephole_o", "weight_hr")
    ):
        return None
    kernels = compiled_kernels()
    return kernels if kernels is not None and kernels.FUSED else None


def engine(kind: str, params: Any, options: dict[str, Any]) -> str:
    """How the per-step pointwise work runs for a call this path takes, in words (for ``ar.explain``)."""
    if compiled_kernels() is None:
        why = "ARRAYRNN_NUMBA=0" if os.environ.get("ARRAYRNN_NUMBA", "1") == "0" else "numba is not installed"
        return f"NumPy ufuncs: {why}"
    if kind == "lstm":
        beyond = [
            name
            for name in ("peephole_i", "peephole_f", "peephole_o", "weight_hr")
            if getattr(params, name) is not None
        ]
        if beyond:
            return f"NumPy ufuncs: {', '.join(beyond)} not in the numba kernels"
        if options.get("clip") is not None:
            return "numba backward kernels (clip is not in the whole-sequence kernels)"
        if not compiled_kernels().FUSED:
            return "numba backward kernels (NumPy's OpenBLAS not found for the whole-sequence kernels)"
        return "numba whole-sequence kernels for float32 (float64: numba backward kernels)"
    if kind == "gru" and not options.get("linear_before_reset", True):
        return "NumPy ufuncs: linear_before_reset=False not in the numba kernels"
    if kind == "gru" and compiled_kernels().FUSED:
        return "numba whole-sequence kernels for float32 (float64: numba backward kernels)"
    if kind == "rnn" and not compiled_kernels().FUSED:
        return "NumPy ufuncs: NumPy's OpenBLAS not found for the whole-sequence kernels"
    if kind == "rnn":
        return "numba whole-sequence kernels for float32 (float64: NumPy ufuncs, few per step)"
    return "numba backward kernels"


# ----------------------------------------------------------------------------------------------
# shared pieces


class _Steps:
    """The processing order and the validity of each step under ``lengths`` (``None``: all valid)."""

    def __init__(self, steps: int, batch: int, lengths: Optional[Array], reverse: bool) -> None:
        self.order = list(range(steps - 1, -1, -1) if reverse else range(steps))
        if lengths is None:
            self.lengths = None
            self.shortest = self.longest = steps
        else:
            self.lengths = np.asarray(lengths).astype(np.int64).reshape(batch, 1)
            self.shortest, self.longest = int(self.lengths.min()), int(self.lengths.max())
        self._invalid: dict[int, np.ndarray] = {}
        self.flat_lengths = np.full(batch, steps, dtype=np.int64) if lengths is None else self.lengths.reshape(batch)
        self.computed = [t for t in self.order if t < self.longest]  # contiguous in processing order
        self.skipped = [t for t in self.order if t >= self.longest]  # padding in every row

    def invalid(self, t: int) -> Optional[np.ndarray]:
        """``(B, 1)`` rows that do not run step ``t`` (``None``: every row runs it)."""
        if t < self.shortest:
            return None
        if t not in self._invalid:
            self._invalid[t] = self.lengths <= t
        return self._invalid[t]

    def masked_x(self, x: np.ndarray) -> np.ndarray:
        """``x`` with the padded steps zeroed (0 * NaN is NaN: padding must not enter ``dW_ih``)."""
        if self.shortest == x.shape[0]:
            return x
        valid = np.arange(x.shape[0]).reshape(-1, 1) < self.lengths.reshape(1, -1)
        return np.where(valid[:, :, None], x, 0).astype(x.dtype, copy=False)


_kernels_module: list[Any] = []


def compiled_kernels() -> Optional[Any]:
    """``grad_kernels`` (numba) when numba imports and ``ARRAYRNN_NUMBA`` is not ``0``, else ``None``."""
    if os.environ.get("ARRAYRNN_NUMBA", "1") == "0":
        return None
    if not _kernels_module:
        try:
            from . import grad_kernels
        except ImportError:
            grad_kernels = None
        _kernels_module.append(grad_kernels)
    return _kernels_module[0]


def _array(value: Optional[Array], dtype: np.dtype) -> Optional[np.ndarray]:
    return None if value is None else np.asarray(value, dtype=dtype)


def _input_projection(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    """``(T, B, rows)``: ``x W^T + b`` as one GEMM over all steps."""
    steps, batch, features = x.shape
    out = np.empty((steps, batch, weight.shape[0]), dtype=x.dtype)
    np.matmul(x.reshape(steps * batch, features), contiguous_transpose(weight), out=out.reshape(steps * batch, -1))
    if bias is not None:
        np.add(out, bias, out=out)
    return out


def _buffer(shape: tuple[int, ...], dtype: Any, steps: _Steps) -> np.ndarray:
    """``np.empty`` with the steps no row runs zeroed (the loops write every other step in full). Not ``np.zeros``:
    its fresh zero pages made the first write cost ~10x a plain write here (page faults; measured at B = 256)."""
    out = np.empty(shape, dtype=dtype)
    for t in steps.skipped:
        out[t] = 0
    return out


def _keep_padded(h: np.ndarray, h_state: np.ndarray, yt: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """After a step with padded rows: the state buffer keeps their previous ``h`` and takes the others' ``yt``,
    whose padded rows become 0 (the output); returns the state buffer, the next step's ``h``."""
    if h is not h_state:
        np.copyto(h_state, h)
    np.copyto(h_state, yt, where=~invalid)
    np.copyto(yt, 0, where=invalid)
    return h_state


def _params_like(params: Any, grads: dict[str, np.ndarray]) -> Any:
    fields = {f.name: (grads.get(f.name) if getattr(params, f.name) is not None else None)
              for f in dataclasses.fields(params)}  # fmt: skip
    return type(params)(**fields)


def _cotangent(value: Optional[Array], like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like) if value is None else np.array(value, dtype=like.dtype)


def _input_grads(params: Any, x: np.ndarray, weight_ih: np.ndarray, dgx: np.ndarray, steps: _Steps) -> tuple:
    """``dx`` and the input weight/bias gradients from the pre-activation gradients ``dgx (T, B, G*H)``."""
    grads = {"weight_ih": _weight_grad(np, dgx, steps.masked_x(x))}
    if params.bias_ih is not None:
        grads["bias_ih"] = _bias_grad(np, dgx)
    dx = np.matmul(_flat(np, dgx), weight_ih).reshape(x.shape)
    return dx, grads


def _prepared_x(x: Array) -> np.ndarray:
    return np.ascontiguousarray(x)


#: each slice of rows at least this many (a per-step GEMM of fewer rows runs far below the BLAS's rate)
ROWS_PER_SLICE = 8
_workers: list[tuple[ThreadPoolExecutor, int]] = []  # the pool and its size
_workers_lock = threading.Lock()


def _slices(batch: int) -> list[tuple[int, int]]:
    """The slices of rows the kernels run in: one (the default), or ``ARRAYRNN_ROW_THREADS`` as the forward path.

    One slice on the caller's BLAS threads measured faster on a quiet machine (B = 64: 0.70-0.77x the time of one
    slice per thread on single-threaded BLAS; B = 16 and 256: within 5 %); the split wins when other processes
    load the cores (B = 64: 0.27x), as BLAS's pool then waits at every step for a descheduled thread."""
    count = max(1, min(openblas.row_threads(), batch // ROWS_PER_SLICE))
    return [(batch * k // count, batch * (k + 1) // count) for k in range(count)]


def _run_slices(run: Callable[[int, int], None], slices: list[tuple[int, int]], small_step: bool) -> None:
    """``run(b0, b1)`` for every slice: the caller runs the first, pool threads the others (the kernels release the
    GIL), all on one BLAS thread; a single slice runs on the caller's BLAS threads unless ``small_step``."""
    if len(slices) == 1:
        with openblas.single_thread(small_step):
            run(*slices[0])
        return
    with _workers_lock:
        if not _workers or _workers[0][1] < len(slices) - 1:
            size = len(slices) - 1
            _workers[:] = [(ThreadPoolExecutor(max_workers=size, thread_name_prefix="arrayrnn-grad"), size)]
        pool = _workers[0][0]
    with openblas.single_thread():
        futures = [pool.submit(run, b0, b1) for b0, b1 in slices[1:]]
        try:
            run(*slices[0])
        finally:
            for future in futures:
                future.result()


def _fused_threads(rows: int, hidden: int, features: int, steps: int, batch: int) -> tuple[bool, bool, list]:
    """``(small_step, small_call, slices)``: tiny per-step products on one BLAS thread (the forward path's bounds),
    the whole call too when its GEMMs over all steps are small; the slices of rows the kernels run in."""
    small_step = openblas.small_product(rows, hidden, batch)
    return small_step, openblas.small_call(rows, hidden, features, steps, batch), _slices(batch)


def _project_into(out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
    """``out (T, B, rows) = x W^T + b`` as one GEMM over all steps."""
    flat = out.reshape(-1, out.shape[2])
    np.matmul(x.reshape(-1, x.shape[2]), weight.T, out=flat)
    if bias is not None:
        np.add(flat, bias, out=flat)


class _Fused:
    """What the three cells' whole-sequence float32 kernels share: the weights, the step order, the BLAS thread plan,
    the tape of pre-activations and previous states, the input projection, running a kernel over the slices of rows,
    and the gradients that are GEMMs over all steps."""

    def __init__(self, x: np.ndarray, params: Any, state: tuple, lengths: Optional[Array], reverse: bool,
                 gate_rows: int) -> None:  # fmt: skip
        dtype = x.dtype
        steps_n, batch, features = x.shape
        hidden = params.hidden_size
        self.x, self.params = x, params
        self.weight_ih = _array(params.weight_ih, dtype)
        self.weight_hh = np.ascontiguousarray(_array(params.weight_hh, dtype))
        self.weight_hh_t = contiguous_transpose(self.weight_hh)
        self.steps = _Steps(steps_n, batch, lengths, reverse)
        self.lengths = np.ascontiguousarray(self.steps.flat_lengths)
        self.small_step, self.small_call, self.slices = _fused_threads(gate_rows, hidden, features, steps_n, batch)
        # the tape lives as long as this object (the pullback's closure holds it), then goes back to the kept buffers
        self._tape: list[np.ndarray] = []
        weakref.finalize(self, buffers.give, self._tape)
        self.gates = self.tape((steps_n, batch, gate_rows))
        self.h_prev = self.tape((steps_n, batch, hidden))
        self.y = np.empty((steps_n, batch, hidden), dtype=dtype)  # the caller's
        self.state = tuple(np.array(s, dtype=dtype, order="C") for s in state)  # updated in place by the record

    def tape(self, shape: tuple[int, ...]) -> np.ndarray:
        """A buffer the backward reads (uninitialised), kept for later calls once the pullback is gone."""
        array = buffers.take(shape, self.x.dtype)
        self._tape.append(array)
        return array

    def record(self, bias: Optional[np.ndarray], kernel: Callable[[int, int], None]) -> None:
        """The input projection (one GEMM), then ``kernel(b0, b1)`` over the slices of rows."""
        with openblas.single_thread(self.small_call):
            _project_into(self.gates, self.x, self.weight_ih, bias)
            _run_slices(kernel, self.slices, self.small_step)

    def cotangents(self, dy: Optional[Array], d_final: tuple) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """``dy`` as the kernels read it (a 1x1x1 dummy when absent) and the final state's gradients, C-ordered."""
        dtype = self.x.dtype
        dy_c = np.zeros((1, 1, 1), dtype=dtype) if dy is None else np.ascontiguousarray(dy, dtype=dtype)
        d_state = tuple(
            np.zeros_like(s) if d is None else np.array(d, dtype=dtype, order="C") for s, d in zip(self.state, d_final)
        )
        return dy_c, d_state

    def scratch(self, shape: tuple[int, ...]) -> np.ndarray:
        """A buffer for one pullback call (uninitialised); :meth:`backprop` gives it back."""
        return buffers.take(shape, self.x.dtype)

    def backprop(
        self, kernel: Callable[[int, int], None], d_input: np.ndarray, d_recurrent: np.ndarray, d_state: tuple,
        scratch: list[np.ndarray],
    ) -> tuple[np.ndarray, Any, tuple]:  # fmt: skip
        """``kernel(b0, b1)`` over the slices of rows, then ``dx`` and the weight gradients as GEMMs over all steps
        from the input (``d_input``) and recurrent (``d_recurrent``) pre-activation gradients; the ``scratch``
        buffers (from :meth:`scratch`, these two among them) are given back after."""
        with openblas.single_thread(self.small_call):
            _run_slices(kernel, self.slices, self.small_step)
            dx, grads = _input_grads(self.params, self.x, self.weight_ih, d_input, self.steps)
            grads["weight_hh"] = _weight_grad(np, d_recurrent, self.h_prev)
            if self.params.bias_hh is not None and d_recurrent is d_input and "bias_ih" in grads:
                grads["bias_hh"] = grads["bias_ih"].copy()  # the same sum over all steps (RNN, LSTM)
            elif self.params.bias_hh is not None:
                grads["bias_hh"] = _bias_grad(np, d_recurrent)
        buffers.give(scratch)
        return dx, _params_like(self.params, grads), d_state


# ----------------------------------------------------------------------------------------------
# RNN


def _rnn(x, params, state, lengths, reverse, options):
    dtype = x.dtype
    relu = options.get("nonlinearity", "tanh") == "relu"
    kernels = fused_kernels("rnn", dtype, params, options)
    if kernels is not None:
        return _rnn_fused(kernels, x, params, state, lengths, reverse, relu)
    steps_n, batch, _ = x.shape
    hidden = params.hidden_size
    weight_ih, weight_hh = _array(params.weight_ih, dtype), _array(params.weight_hh, dtype)
    bias = _bias_total(params, dtype)
    weight_hh_t = contiguous_transpose(weight_hh)
    steps = _Steps(steps_n, batch, lengths, reverse)
    y = _input_projection(x, weight_ih, bias)  # the pre-activations, activated in place step by step
    h_prev = np.empty((steps_n, batch, hidden), dtype=dtype)
    h_state = np.array(state[0], dtype=dtype)
    h = h_state
    scratch = np.empty((batch, hidden), dtype=dtype)
    for t in steps.order:
        if t >= steps.longest:
            y[t] = 0
            h_prev[t] = 0
            continue
        hp = h_prev[t]
        np.copyto(hp, h)
        yt = y[t]
        np.matmul(hp, weight_hh_t, out=scratch)
        np.add(yt, scratch, out=yt)
        if relu:
            np.maximum(yt, 0, out=yt)
        else:
            np.tanh(yt, out=yt)
        invalid = steps.invalid(t)
        if invalid is None:
            h = yt
            continue
        h = _keep_padded(h, h_state, yt, invalid)
    final = (np.array(h),)

    def backward(dy, d_final):
        dh = _cotangent(d_final[0], final[0])
        dz_all = _buffer((steps_n, batch, hidden), dtype, steps)
        dh_sum = np.empty_like(dh)
        dh_new = np.empty_like(dh)
        positive = np.empty((batch, hidden), dtype=bool)
        for t in reversed(steps.order):
            if t >= steps.longest:
                continue
            if dy is not None:
                np.add(dh, dy[t], out=dh_sum)
                dht = dh_sum
            else:
                dht = dh
            dz, yt = dz_all[t], y[t]
            if relu:
                np.greater(yt, 0, out=positive)
                np.multiply(dht, positive, out=dz)
            else:
                np.multiply(yt, yt, out=dz)
                np.subtract(1, dz, out=dz)
                np.multiply(dz, dht, out=dz)
            invalid = steps.invalid(t)
            if invalid is not None:
                np.copyto(dz, 0, where=invalid)
            np.matmul(dz, weight_hh, out=dh_new)
            if invalid is not None:
                np.copyto(dh_new, dh, where=invalid)
            dh, dh_new = dh_new, dh
        dx, grads = _input_grads(params, x, weight_ih, dz_all, steps)
        grads["weight_hh"] = _weight_grad(np, dz_all, h_prev)
        if params.bias_hh is not None:
            grads["bias_hh"] = _bias_grad(np, dz_all)
        return dx, _params_like(params, grads), (dh,)

    return y, final, backward


def _bias_total(params: Any, dtype: np.dtype) -> Optional[np.ndarray]:
    parts = [np.asarray(b, dtype=dtype) for b in (params.bias_ih, params.bias_hh) if b is not None]
    if not parts:
        return None
    return parts[0] + parts[1] if len(parts) == 2 else parts[0].copy()


def _rnn_fused(kernels, x, params, state, lengths, reverse, relu):
    """float32 RNN on :mod:`grad_kernels`' whole-sequence kernels, as :func:`_lstm_fused`."""
    run = _Fused(x, params, state, lengths, reverse, params.hidden_size)
    (h,) = run.state
    run.record(
        _bias_total(params, x.dtype),
        lambda b0, b1: kernels.rnn_record(run.gates, run.weight_hh, run.weight_hh_t, h, run.h_prev, run.y, run.lengths,
                                          reverse, relu, b0, b1),
    )  # fmt: skip

    def backward(dy, d_final):
        dy_c, (dh,) = run.cotangents(dy, d_final)
        spare, dz = run.scratch(dh.shape), run.scratch(run.gates.shape)
        return run.backprop(
            lambda b0, b1: kernels.rnn_backprop(run.gates, run.weight_hh, dh, dy_c, dy is not None, dz, spare,
                                                run.lengths, reverse, relu, b0, b1),
            dz, dz, (dh,), [spare, dz],
        )  # fmt: skip

    return run.y, run.state, backward


# ----------------------------------------------------------------------------------------------
# GRU


def _gru(x, params, state, lengths, reverse, options):
    dtype = x.dtype
    lbr = bool(options.get("linear_before_reset", True))
    kernels = fused_kernels("gru", dtype, params, options)
    if kernels is not None:
        return _gru_fused(kernels, x, params, state, lengths, reverse)
    steps_n, batch, _ = x.shape
    H = params.hidden_size
    weight_ih, weight_hh = _array(params.weight_ih, dtype), _array(params.weight_hh, dtype)
    # r and z rows pre-scaled by 0.5: sigmoid(a) = 0.5 tanh(0.5 a) + 0.5 in three in-place passes
    scale = np.concatenate([np.full(2 * H, 0.5, dtype=dtype), np.ones(H, dtype=dtype)])
    bias = _bias_total(params, dtype)
    bias_hn = None
    if lbr and bias is not None:  # b_hn sits inside r * (W_hn h + b_hn): it cannot join the input projection
        bias[2 * H :] = 0 if params.bias_ih is None else np.asarray(params.bias_ih, dtype=dtype)[2 * H :]
        bias_hn = _array(params.bias_hh, dtype)[2 * H :] if params.bias_hh is not None else None
    gates = _input_projection(x, weight_ih * scale[:, None], None if bias is None else bias * scale)
    # forward GEMMs read W^T contiguous (measured faster than a transposed view with OpenBLAS at small B)
    weight_hh_t = contiguous_transpose(weight_hh * scale[:, None])
    weight_rz_t, weight_n_t = (
        np.ascontiguousarray(weight_hh_t[:, : 2 * H]),
        np.ascontiguousarray(weight_hh_t[:, 2 * H :]),
    )
    weight_n = weight_hh[2 * H :]
    steps = _Steps(steps_n, batch, lengths, reverse)
    y = np.empty((steps_n, batch, H), dtype=dtype)
    h_prev = np.empty((steps_n, batch, H), dtype=dtype)
    # linear before reset: W_hn h + b_hn per step; else r * h_prev per step
    extra = np.empty((steps_n, batch, H), dtype=dtype)
    h_state = np.array(state[0], dtype=dtype)
    h = h_state
    gh = np.empty((batch, 3 * H), dtype=dtype)
    scratch = np.empty((batch, H), dtype=dtype)
    kernels = compiled_kernels() if lbr else None  # the backward's pointwise pass (numba)
    for t in steps.order:
        if t >= steps.longest:
            y[t] = 0
            h_prev[t] = 0
            extra[t] = 0
            continue
        hp = h_prev[t]
        np.copyto(hp, h)
        a = gates[t]
        rz, r, z, n = a[:, : 2 * H], a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        if lbr:
            np.matmul(hp, weight_hh_t, out=gh)
            np.add(rz, gh[:, : 2 * H], out=rz)
        else:
            np.matmul(hp, weight_rz_t, out=gh[:, : 2 * H])
            np.add(rz, gh[:, : 2 * H], out=rz)
        np.tanh(rz, out=rz)
        np.multiply(rz, 0.5, out=rz)
        np.add(rz, 0.5, out=rz)
        e = extra[t]
        if lbr:
            if bias_hn is not None:
                np.add(gh[:, 2 * H :], bias_hn, out=e)
            else:
                np.copyto(e, gh[:, 2 * H :])
            np.multiply(r, e, out=scratch)
        else:
            np.multiply(r, hp, out=e)
            np.matmul(e, weight_n_t, out=scratch)
        np.add(n, scratch, out=n)
        np.tanh(n, out=n)
        yt = y[t]
        np.subtract(hp, n, out=scratch)
        np.multiply(z, scratch, out=scratch)
        np.add(n, scratch, out=yt)
        invalid = steps.invalid(t)
        if invalid is None:
            h = yt
            continue
        if not lbr:
            np.copyto(e, 0, where=invalid)
        h = _keep_padded(h, h_state, yt, invalid)
    final = (np.array(h),)

    def backward(dy, d_final):
        dh = _cotangent(d_final[0], final[0])
        dgx_all = _buffer((steps_n, batch, 3 * H), dtype, steps)
        dgh_n_all = _buffer((steps_n, batch, H), dtype, steps) if lbr else None  # d(W_hn h + b_hn) (lbr) of each step
        dh_sum, dh_new = np.empty_like(dh), np.empty_like(dh)
        one_minus = np.empty((batch, H), dtype=dtype)
        tmp = np.empty((batch, H), dtype=dtype)
        d_rh = np.empty((batch, H), dtype=dtype)
        if kernels is not None:
            dh = _gru_backward_compiled(kernels, steps, gates, h_prev, extra, weight_hh, dh, dy, dgx_all, dgh_n_all)
        for t in [] if kernels is not None else reversed(steps.order):
            if t >= steps.longest:
                continue
            if dy is not None:
                np.add(dh, dy[t], out=dh_sum)
                dht = dh_sum
            else:
                dht = dh
            a, hp, dgx = gates[t], h_prev[t], dgx_all[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            d_r, d_z, d_n = dgx[:, :H], dgx[:, H : 2 * H], dgx[:, 2 * H :]
            # d_n = dh (1 - z)(1 - n^2)
            np.subtract(1, z, out=one_minus)
            np.multiply(n, n, out=tmp)
            np.subtract(1, tmp, out=tmp)
            np.multiply(tmp, one_minus, out=tmp)
            np.multiply(tmp, dht, out=d_n)
            # d_z = dh (h_prev - n) z (1 - z)
            np.subtract(hp, n, out=d_z)
            np.multiply(d_z, dht, out=d_z)
            np.multiply(d_z, z, out=d_z)
            np.multiply(d_z, one_minus, out=d_z)
            # dh_prev starts as dh z
            np.multiply(dht, z, out=dh_new)
            if lbr:
                np.multiply(d_n, extra[t], out=d_r)
            else:
                np.matmul(d_n, weight_n, out=d_rh)
                np.multiply(d_rh, r, out=tmp)
                np.add(dh_new, tmp, out=dh_new)
                np.multiply(d_rh, hp, out=d_r)
            np.subtract(1, r, out=tmp)
            np.multiply(d_r, r, out=d_r)
            np.multiply(d_r, tmp, out=d_r)
            invalid = steps.invalid(t)
            if invalid is not None:
                np.copyto(dgx, 0, where=invalid)
            if lbr:
                dgh_n = dgh_n_all[t]
                np.multiply(d_n, r, out=dgh_n)
                if invalid is not None:
                    np.copyto(dgh_n, 0, where=invalid)
                np.matmul(dgx[:, : 2 * H], weight_hh[: 2 * H], out=tmp)
                np.add(dh_new, tmp, out=dh_new)
                np.matmul(dgh_n, weight_n, out=tmp)
            else:
                np.matmul(dgx[:, : 2 * H], weight_hh[: 2 * H], out=tmp)
            np.add(dh_new, tmp, out=dh_new)
            if invalid is not None:
                np.copyto(dh_new, dh, where=invalid)
            dh, dh_new = dh_new, dh
        dx, grads = _input_grads(params, x, weight_ih, dgx_all, steps)
        d_rz = dgx_all[:, :, : 2 * H]
        if lbr:
            grads["weight_hh"] = np.concatenate([_weight_grad(np, d_rz, h_prev), _weight_grad(np, dgh_n_all, h_prev)])
            if params.bias_hh is not None:
                grads["bias_hh"] = np.concatenate([_bias_grad(np, d_rz), _bias_grad(np, dgh_n_all)])
        else:
            grads["weight_hh"] = np.concatenate(
                [_weight_grad(np, d_rz, h_prev), _weight_grad(np, dgx_all[:, :, 2 * H :], extra)]
            )
            if params.bias_hh is not None:
                grads["bias_hh"] = _bias_grad(np, dgx_all)
        return dx, _params_like(params, grads), (dh,)

    return y, final, backward


def _gru_fused(kernels, x, params, state, lengths, reverse):
    """float32 GRU (linear before reset) on :mod:`grad_kernels`' whole-sequence kernels, as :func:`_lstm_fused`."""
    dtype, H = x.dtype, params.hidden_size
    run = _Fused(x, params, state, lengths, reverse, 3 * H)
    (h,) = run.state
    bias = _bias_total(params, dtype)
    if bias is not None:  # b_hn sits inside r * (W_hn h + b_hn): it cannot join the input projection
        bias[2 * H :] = 0 if params.bias_ih is None else np.asarray(params.bias_ih, dtype=dtype)[2 * H :]
    bias_hn = np.zeros(H, dtype=dtype) if params.bias_hh is None else _array(params.bias_hh, dtype)[2 * H :].copy()
    extra = run.tape(run.h_prev.shape)  # W_hn h + b_hn of each step
    gh = np.empty((x.shape[1], 3 * H), dtype=dtype)
    run.record(
        bias,
        lambda b0, b1: kernels.gru_record(run.gates, run.weight_hh_t, bias_hn, h, run.h_prev, extra, gh, run.y,
                                          run.lengths, reverse, b0, b1),
    )  # fmt: skip

    def backward(dy, d_final):
        dy_c, (dh,) = run.cotangents(dy, d_final)
        spare = run.scratch(dh.shape)
        dgx, dgh = run.scratch(run.gates.shape), run.scratch(run.gates.shape)
        return run.backprop(
            lambda b0, b1: kernels.gru_backprop(run.gates, run.h_prev, extra, run.weight_hh, dh, dy_c, dy is not None,
                                                dgx, dgh, spare, run.lengths, reverse, b0, b1),
            dgx, dgh, (dh,), [spare, dgx, dgh],
        )  # fmt: skip

    return run.y, run.state, backward


def _gru_backward_compiled(kernels, steps, gates, h_prev, extra, weight_hh, dh, dy, dgx_all, dgh_n_all):
    H = dgh_n_all.shape[2]
    dgh, dh_part, dh_new = np.empty_like(gates[0]), np.empty_like(dh), np.empty_like(dh)
    dummy = np.zeros((1, 1), dtype=dh.dtype)
    for t in reversed(steps.computed):
        dyt = dummy if dy is None else dy[t]
        kernels.gru_backward(
            gates[t], h_prev[t], extra[t], dh, dyt, dy is not None, dgx_all[t], dgh, dh_part, steps.flat_lengths, t
        )
        np.copyto(dgh_n_all[t], dgh[:, 2 * H :])
        np.matmul(dgh, weight_hh, out=dh_new)
        np.add(dh_new, dh_part, out=dh_new)
        dh, dh_new = dh_new, dh
    return dh


# ----------------------------------------------------------------------------------------------
# LSTM


def _lstm_fused(kernels, x, params, state, lengths, reverse, coupled):
    """float32 LSTM (no peepholes, projection or clip) on :mod:`grad_kernels`' whole-sequence kernels: one call for
    the recording forward, one for the backward, batch-major as ``y``; the GEMMs over all steps stay in NumPy."""
    run = _Fused(x, params, state, lengths, reverse, 4 * params.hidden_size)
    h, c = run.state
    c_prev, tanh_c = run.tape(run.h_prev.shape), run.tape(run.h_prev.shape)
    run.record(
        _bias_total(params, x.dtype),
        lambda b0, b1: kernels.lstm_record(run.gates, run.weight_hh, run.weight_hh_t, h, c, run.h_prev, c_prev, tanh_c,
                                           run.y, run.lengths, reverse, coupled, b0, b1),
    )  # fmt: skip

    def backward(dy, d_final):
        dy_c, (dh, dc) = run.cotangents(dy, d_final)
        spare = run.scratch(dh.shape)
        dz = run.scratch(run.gates.shape)  # per pullback call: a pullback may run again, also from another thread
        return run.backprop(
            lambda b0, b1: kernels.lstm_backprop(run.gates, tanh_c, c_prev, run.weight_hh, dh, dc, dy_c,
                                                 dy is not None, dz, spare, run.lengths, reverse, coupled, b0, b1),
            dz, dz, (dh, dc), [spare, dz],
        )  # fmt: skip

    return run.y, run.state, backward


def _lstm(x, params, state, lengths, reverse, options):
    dtype = x.dtype
    coupled, clip = bool(options.get("coupled", False)), options.get("clip")
    if options.get("clip") is None:
        kernels = fused_kernels("lstm", x.dtype, params, options)
        if kernels is not None:
            return _lstm_fused(kernels, x, params, state, lengths, reverse, bool(options.get("coupled", False)))
    steps_n, batch, _ = x.shape
    H = params.hidden_size
    weight_ih, weight_hh = _array(params.weight_ih, dtype), _array(params.weight_hh, dtype)
    weight_hr = _array(params.weight_hr, dtype)
    P = H if weight_hr is None else weight_hr.shape[0]
    peep_i, peep_o = _array(params.peephole_i, dtype), _array(params.peephole_o, dtype)
    peep_f = None if coupled else _array(params.peephole_f, dtype)
    half_i = None if peep_i is None else peep_i * 0.5
    half_f = None if peep_f is None else peep_f * 0.5
    half_o = None if peep_o is None else peep_o * 0.5
    half = np.full(H, 0.5, dtype=dtype)
    # rows of i, f, o pre-scaled by 0.5: sigmoid(a) = 0.5 tanh(0.5 a) + 0.5; g keeps tanh(a)
    scale = np.concatenate([half, half, np.ones(H, dtype=dtype), half])
    offset = np.concatenate([half, half, np.zeros(H, dtype=dtype), half])
    shift = np.concatenate([np.zeros(2 * H, dtype=dtype), np.ones(H, dtype=dtype), np.zeros(H, dtype=dtype)])
    bias = _bias_total(params, dtype)
    gates = _input_projection(x, weight_ih * scale[:, None], None if bias is None else bias * scale)
    weight_hh_t = contiguous_transpose(weight_hh * scale[:, None])
    weight_hr_t = None if weight_hr is None else contiguous_transpose(weight_hr)
    late = peep_o is not None  # o is activated after c_t (it sees c_t)
    early = 3 * H if late else 4 * H
    bound = None if clip is None else (np.asarray(clip, dtype=dtype) * scale)
    steps = _Steps(steps_n, batch, lengths, reverse)
    clipped = None if clip is None else _buffer((steps_n, batch, 4 * H), bool, steps)
    y = np.empty((steps_n, batch, P), dtype=dtype)
    h_prev = np.empty((steps_n, batch, P), dtype=dtype)
    c_prev = np.empty((steps_n, batch, H), dtype=dtype)
    c_new = np.empty((steps_n, batch, H), dtype=dtype)  # the (masked) cell state after each step
    tanh_c = np.empty((steps_n, batch, H), dtype=dtype)
    unprojected = None if weight_hr is None else _buffer((steps_n, batch, H), dtype, steps)
    h_state = np.array(state[0], dtype=dtype)
    h = h_state
    c = np.array(state[1], dtype=dtype)
    gh = np.empty((batch, 4 * H), dtype=dtype)
    scratch = np.empty((batch, H), dtype=dtype)
    magnitude = np.empty((batch, 4 * H), dtype=dtype)

    def activate(part: np.ndarray, lo: int, hi: int, t: int) -> None:
        if bound is not None:
            np.abs(part, out=magnitude[:, lo:hi])
            np.greater(magnitude[:, lo:hi], bound[lo:hi], out=clipped[t, :, lo:hi])
            np.clip(part, -bound[lo:hi], bound[lo:hi], out=part)
        np.tanh(part, out=part)
        np.multiply(part, scale[lo:hi], out=part)
        np.add(part, offset[lo:hi], out=part)

    kernels = compiled_kernels() if not late and weight_hr is None else None  # the backward's pointwise pass
    no_clip = np.zeros((1, 1), dtype=bool)
    for t in steps.order:
        if t >= steps.longest:
            for buffer in (y, h_prev, c_prev, c_new, tanh_c):
                buffer[t] = 0
            continue
        hp, cp, cn, tc = h_prev[t], c_prev[t], c_new[t], tanh_c[t]
        np.copyto(hp, h)
        np.copyto(cp, c)
        a = gates[t]
        i, f, g, o = (a[:, k * H : (k + 1) * H] for k in range(4))
        np.matmul(hp, weight_hh_t, out=gh)
        np.add(a, gh, out=a)
        if peep_i is not None:
            np.multiply(half_i, cp, out=scratch)
            np.add(i, scratch, out=i)
        if peep_f is not None:
            np.multiply(half_f, cp, out=scratch)
            np.add(f, scratch, out=f)
        activate(a[:, :early], 0, early, t)
        if coupled:
            np.subtract(1, i, out=f)
        np.multiply(f, cp, out=cn)
        np.multiply(i, g, out=scratch)
        np.add(cn, scratch, out=cn)
        if late:
            np.multiply(half_o, cn, out=scratch)
            np.add(o, scratch, out=o)
            activate(o, 3 * H, 4 * H, t)
        np.tanh(cn, out=tc)
        yt = y[t]
        if weight_hr is None:
            np.multiply(o, tc, out=yt)
        else:
            m = unprojected[t]
            np.multiply(o, tc, out=m)
            np.matmul(m, weight_hr_t, out=yt)
        invalid = steps.invalid(t)
        if invalid is None:
            h, c = yt, cn
            continue
        np.copyto(cn, cp, where=invalid)  # the carried cell state: what the next step reads
        c = cn
        if weight_hr is not None:
            np.copyto(unprojected[t], 0, where=invalid)
        h = _keep_padded(h, h_state, yt, invalid)
    final = (np.array(h), np.array(c))

    def backward(dy, d_final):
        dh = _cotangent(d_final[0], final[0])
        dc = _cotangent(d_final[1], final[1])
        dz_all = _buffer((steps_n, batch, 4 * H), dtype, steps)
        dh_all = None if weight_hr is None else _buffer((steps_n, batch, P), dtype, steps)
        dh_sum, dh_new = np.empty_like(dh), np.empty_like(dh)
        dc_t, dc_new = np.empty_like(dc), np.empty_like(dc)
        dm = np.empty((batch, H), dtype=dtype) if weight_hr is not None else None
        tmp = np.empty((batch, H), dtype=dtype)
        tmp4 = np.empty((batch, 4 * H), dtype=dtype)
        if kernels is not None:
            dummy = np.zeros((1, 1), dtype=dtype)
            for t in reversed(steps.computed):
                cut = no_clip if clipped is None else clipped[t]
                dyt = dummy if dy is None else dy[t]
                kernels.lstm_backward(
                    gates[t], tanh_c[t], c_prev[t], dh, dyt, dy is not None, dc, dz_all[t], dc_new, cut,
                    clipped is not None, coupled, steps.flat_lengths, t,
                )  # fmt: skip
                np.matmul(dz_all[t], weight_hh, out=dh_new)
                invalid = steps.invalid(t)
                if invalid is not None:
                    np.copyto(dh_new, dh, where=invalid)
                dh, dh_new = dh_new, dh
                dc, dc_new = dc_new, dc
        for t in [] if kernels is not None else reversed(steps.order):
            if t >= steps.longest:
                continue
            if dy is not None:
                np.add(dh, dy[t], out=dh_sum)
                dht = dh_sum
            else:
                dht = dh
            invalid = steps.invalid(t)
            a, dz, tc = gates[t], dz_all[t], tanh_c[t]
            i, f, g, o = (a[:, k * H : (k + 1) * H] for k in range(4))
            dzi, dzf, dzg, dzo = (dz[:, k * H : (k + 1) * H] for k in range(4))
            if weight_hr is not None:
                np.matmul(dht, weight_hr, out=dm)
                np.copyto(dh_all[t], dht)
                if invalid is not None:
                    np.copyto(dh_all[t], 0, where=invalid)
                d_m = dm
            else:
                d_m = dht
            np.multiply(d_m, tc, out=dzo)
            # dc_t = dc + dm o (1 - tanh(c)^2)
            np.multiply(tc, tc, out=tmp)
            np.subtract(1, tmp, out=tmp)
            np.multiply(tmp, o, out=tmp)
            np.multiply(tmp, d_m, out=tmp)
            np.add(dc, tmp, out=dc_t)
            if late:
                np.subtract(1, o, out=tmp)
                np.multiply(dzo, tmp, out=dzo)
                np.multiply(dzo, o, out=dzo)
                if clipped is not None:
                    np.copyto(dzo, 0, where=clipped[t, :, 3 * H :])
                np.multiply(dzo, peep_o, out=tmp)
                np.add(dc_t, tmp, out=dc_t)
            np.multiply(dc_t, g, out=dzi)
            np.multiply(dc_t, c_prev[t], out=dzf)
            np.multiply(dc_t, i, out=dzg)
            np.multiply(dc_t, f, out=dc_new)
            if coupled:
                np.subtract(dzi, dzf, out=dzi)
                dzf.fill(0)
            # the activations' derivatives from their values: (1 - a)(a + shift)
            part, d_part = a[:, :early], dz[:, :early]
            np.subtract(1, part, out=tmp4[:, :early])
            np.multiply(d_part, tmp4[:, :early], out=d_part)
            np.add(part, shift[:early], out=tmp4[:, :early])
            np.multiply(d_part, tmp4[:, :early], out=d_part)
            if clipped is not None:
                np.copyto(d_part, 0, where=clipped[t, :, :early])
            if invalid is not None:
                np.copyto(dz, 0, where=invalid)
            if peep_i is not None:
                np.multiply(dzi, peep_i, out=tmp)
                np.add(dc_new, tmp, out=dc_new)
            if peep_f is not None:
                np.multiply(dzf, peep_f, out=tmp)
                np.add(dc_new, tmp, out=dc_new)
            np.matmul(dz, weight_hh, out=dh_new)
            if invalid is not None:
                np.copyto(dh_new, dh, where=invalid)
                np.copyto(dc_new, dc, where=invalid)
            dh, dh_new = dh_new, dh
            dc, dc_new = dc_new, dc
        dx, grads = _input_grads(params, x, weight_ih, dz_all, steps)
        grads["weight_hh"] = _weight_grad(np, dz_all, h_prev)
        if params.bias_hh is not None:
            grads["bias_hh"] = _bias_grad(np, dz_all)
        for name, lo, seen in (("peephole_i", 0, c_prev), ("peephole_f", H, c_prev), ("peephole_o", 3 * H, c_new)):
            if getattr(params, name) is not None:
                grads[name] = np.einsum("tbh,tbh->h", dz_all[:, :, lo : lo + H], seen)
        if weight_hr is not None:
            grads["weight_hr"] = _weight_grad(np, dh_all, unprojected)
        return dx, _params_like(params, grads), (dh, dc)

    return y, final, backward


_KINDS: dict[str, Callable[..., Any]] = {"rnn": _rnn, "gru": _gru, "lstm": _lstm}


def sequence_vjp(
    kind: str, x: Array, params: Any, state: tuple[Array, ...], lengths: Optional[Array], reverse: bool,
    options: dict[str, Any],
) -> Optional[tuple[np.ndarray, tuple[np.ndarray, ...], Callable[..., Any]]]:  # fmt: skip
    """``(y, final_state, backward)`` for a validated, time-major call, or ``None`` where :func:`decline_reason`
    gives a reason; ``backward(dy, d_final) -> (dx, dparams, d_initial_state)`` as ``_core/backward.py``'s."""
    if decline_reason(kind, x, params, options) is not None:
        return None
    x = _prepared_x(x)
    return _KINDS[kind](x, params, state, lengths, reverse, options)
