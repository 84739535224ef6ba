"""NumPy fast path: the generic sequence functions, rewritten for speed on the CPU (float32 and float64).

Same signature and results (to float tolerance) as ``_core/sequence.py``, with optional numba kernels inside
(``ARRAYRNN_NUMBA=0`` turns them off). What makes it fast: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Optional

import numpy as np

from ..._core.layer_norm import layer_norm_changes
from ..._core.masking import masking_changes
from ..._core.regularize import regularization_changes
from ..._core.sequence import GENERIC
from ..._core.steps import lstm_base_options, lstm_variant_changes
from . import openblas
from .transpose import contiguous_transpose

Array = Any

#: upper bound for the input-projection buffer of one chunk of time steps (bytes)
CHUNK_BYTES = 8 << 20

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: step(gx_t (G*H, B), h (P, B), c_in (H, B) or None, c_out (H, B) or None, h_out (P, B)) -> None
Step = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray], np.ndarray], None]


#: pre-activation bound meaning "no clip" for the compiled kernels (finite: they assume no infinities)
_NO_CLIP = 3.0e38

_numba_module: Optional[ModuleType] = None
_numba_missing = False


def compiled_kernels() -> Optional[ModuleType]:
    """``numba_loop`` when numba imports and ``ARRAYRNN_NUMBA`` is not ``0``, else ``None``."""
    global _numba_module, _numba_missing
    if os.environ.get("ARRAYRNN_NUMBA", "1") == "0" or _numba_missing:
        return None
    if _numba_module is None:
        try:
            from . import numba_loop
        except ImportError:
            _numba_missing = True
            return None
        _numba_module = numba_loop
    return _numba_module


def _rows_kernels() -> ModuleType:
    from . import numba_rows  # imported only once numba_loop imported: numba and NumPy's BLAS are there

    return numba_rows


def _use_compiled(x: np.ndarray) -> Optional[ModuleType]:
    if x.dtype != np.float32 or x.shape[1] == 0:
        return None
    return compiled_kernels()


def _run_compiled(
    x: np.ndarray,
    weight_ih: np.ndarray,
    bias: Optional[np.ndarray],
    run_chunk: Callable[..., None],
    h0: np.ndarray,
    c0: Optional[np.ndarray],
    lengths: Optional[Array],
    reverse: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Chunked driver for the compiled kernels: one input GEMM and one kernel call per chunk.

    ``run_chunk(gx, h, c, y, lengths, start, count, reverse)`` runs one chunk in place.
    """
    steps, batch, features = x.shape
    rows = weight_ih.shape[0]
    chunk = _chunk_steps(steps, batch, rows, x.dtype.itemsize)
    y = np.empty((steps, batch, h0.shape[1]), dtype=x.dtype)
    gx_flat = np.empty(rows * chunk * batch, dtype=x.dtype)
    h = np.array(h0.T, dtype=x.dtype, order="C")
    c = None if c0 is None else np.array(c0.T, dtype=x.dtype, order="C")
    if lengths is None:
        lengths_array = np.full(batch, steps, dtype=np.int64)
    else:
        lengths_array = np.asarray(lengths).astype(np.int64, copy=False).reshape(batch)
    longest = int(lengths_array.max())
    small = openblas.small_product(rows, h0.shape[1], batch)
    starts = range(0, steps, chunk)
    with openblas.single_thread(openblas.small_call(rows, h0.shape[1], features, chunk, batch)):
        for start in reversed(starts) if reverse else starts:
            count = min(chunk, steps - start)
            gx = gx_flat[: rows * count * batch].reshape(rows, count * batch)
            if start < longest:  # a chunk of all-padding needs no projection
                np.matmul(weight_ih, x[start : start + count].reshape(count * batch, features).T, out=gx)
                if bias is not None:
                    np.add(gx, bias, out=gx)
            with openblas.single_thread(small):
                run_chunk(gx, h, c, y, lengths_array, start, count, reverse)
    final_h = np.ascontiguousarray(h.T)
    return y, ((final_h,) if c is None else (final_h, np.ascontiguousarray(c.T)))


#: batches at least this large, at most ``ROWS_MAX_SMALL_BATCH``, or whose per-step recurrent product has at most
#: ``ROWS_MAX_SMALL_PRODUCT`` multiply-adds run the batch-major kernels (``numba_rows``); the others (a few sequences
#: of a large hidden size) the feature-major ``numba_loop`` (measurements: benchmarks/NOTES.md)
ROWS_MIN_BATCH = 8
ROWS_MAX_SMALL_BATCH = 1
ROWS_MAX_SMALL_PRODUCT = 1 << 20
#: at least this many rows per slice when the batch-major path splits the batch over threads
ROWS_PER_THREAD = 8


_row_pool: Optional[ThreadPoolExecutor] = None
_row_pool_size = [0]
_row_lock = threading.Lock()  # guards the pool

def _enter_split(blas: ModuleType, workers: int) -> ThreadPoolExecutor:
    """One more caller splits rows: NumPy's BLAS goes to one thread (``openblas.enter_single_thread``: shared
    with every caller, restored exactly by the last one out); returns a pool with at least ``workers`` threads.
    Pair with :func:`_leave_split`."""
    global _row_pool
    with _row_lock:
        if _row_pool is None or _row_pool_size[0] < workers:
            _row_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arrayrnn-rows")
            _row_pool_size[0] = workers
    openblas.enter_single_thread()
    return _row_pool


def _leave_split(blas: ModuleType) -> None:
    """A caller is done splitting rows: BLAS gets its thread count back when no caller needs one thread."""
    openblas.leave_single_thread()


def _recurrent_weight(weight_hh: np.ndarray, batch: int) -> tuple[np.ndarray, bool]:
    """What the batch-major kernels multiply by: ``(W_hh^T contiguous, True)`` for B > 1 (the NN product measured
    faster there), ``(W_hh, False)`` for one sequence (as fast, and no copy per call)."""
    if batch > 1:
        return contiguous_transpose(weight_hh), True
    return weight_hh, False


def _use_rows(x: np.ndarray, weight_hh: Any) -> bool:
    batch = x.shape[1]
    return (
        batch >= ROWS_MIN_BATCH
        or batch <= ROWS_MAX_SMALL_BATCH
        or weight_hh.shape[0] * weight_hh.shape[1] * batch <= ROWS_MAX_SMALL_PRODUCT
    )


def _run_rows(
    x: np.ndarray,
    weight_ih: np.ndarray,
    h0: np.ndarray,
    c0: Optional[np.ndarray],
    lengths: Optional[Array],
    reverse: bool,
    run_slice: Callable[..., None],
    blas: ModuleType,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Batch-major driver of ``numba_rows``: ``run_slice(gx, h, c, y, lengths, b0, b1, start, count)``
    runs steps ``start .. start+count-1`` of rows ``b0 .. b1-1`` given their input projection ``gx``.

    One slice (the default): per chunk of steps, one input-projection GEMM over the whole batch on
    all BLAS threads, then the kernel. ``ARRAYRNN_ROW_THREADS=n``: the batch is split into ``n``
    slices (at least ``ROWS_PER_THREAD`` rows each) that run in parallel threads from start to end,
    each projecting its own rows step by step, with NumPy's OpenBLAS set to one thread while any caller
    splits (the count is global: the first caller in saves it and the last one out restores it, under one
    lock, so concurrent callers run together and the caller's setting comes back exactly).
    Slices never share rows, so they share the projection buffer without waiting for each other.
    """
    steps, batch, features = x.shape
    rows = weight_ih.shape[0]
    y = np.empty((steps, batch, h0.shape[1]), dtype=x.dtype)
    h = np.array(h0, dtype=x.dtype, order="C")
    c = None if c0 is None else np.array(c0, dtype=x.dtype, order="C")
    if lengths is None:
        lengths_array = np.full(batch, steps, dtype=np.int64)
    else:
        lengths_array = np.ascontiguousarray(np.asarray(lengths).reshape(batch), dtype=np.int64)
    longest = int(lengths_array.max())
    chunk = _chunk_steps(steps, batch, rows, x.dtype.itemsize)
    gx_flat = np.empty(rows * chunk * batch, dtype=x.dtype)
    threads = max(1, min(openblas.row_threads(), batch // ROWS_PER_THREAD))
    bounds = [batch * k // threads for k in range(threads + 1)]
    starts = list(reversed(range(0, steps, chunk)) if reverse else range(0, steps, chunk))

    def project(start: int, count: int, b0: int, b1: int) -> np.ndarray:
        gx = gx_flat[: rows * count * batch].reshape(count, batch, rows)
        if start >= longest:  # a chunk of all-padding needs no projection
            return gx
        if b1 - b0 == batch:
            np.matmul(x[start : start + count].reshape(count * batch, features), weight_ih.T, out=gx.reshape(-1, rows))
        else:  # a slice of rows is not one matrix across steps: one GEMM per step
            for local in range(count):
                np.matmul(x[start + local, b0:b1], weight_ih.T, out=gx[local, b0:b1])
        return gx

    if threads == 1:
        small = openblas.small_product(rows, h0.shape[1], batch)
        with openblas.single_thread(openblas.small_call(rows, h0.shape[1], features, chunk, batch)):
            for start in starts:
                count = min(chunk, steps - start)
                gx = project(start, count, 0, batch)
                with openblas.single_thread(small):
                    run_slice(gx, h, c, y, lengths_array, 0, batch, start, count)
        return y, ((h,) if c is None else (h, c))

    def run_rows(b0: int, b1: int) -> None:
        for start in starts:
            count = min(chunk, steps - start)
            run_slice(project(start, count, b0, b1), h, c, y, lengths_array, b0, b1, start, count)

    pool = _enter_split(blas, threads - 1)
    try:
        others = [pool.submit(run_rows, bounds[k], bounds[k + 1]) for k in range(1, threads)]
        try:
            run_rows(bounds[0], bounds[1])
        finally:
            for future in others:
                future.result()
    finally:
        _leave_split(blas)
    return y, ((h,) if c is None else (h, c))


def _column(vector: Optional[np.ndarray], dtype: np.dtype) -> Optional[np.ndarray]:
    return None if vector is None else np.asarray(vector, dtype=dtype).reshape(-1, 1)


def _bias_total(params: Any, dtype: np.dtype) -> Optional[np.ndarray]:
    """``bias_ih + bias_hh`` as a new array; the one that is set when the other is ``None``; ``None`` without bias.

    Each bias is optional on its own (the core adds each where it is set); the result is never the caller's array.
    """
    bias_ih, bias_hh = params.bias_ih, params.bias_hh
    if bias_ih is not None and bias_hh is not None:
        return np.asarray(bias_ih, dtype=dtype) + np.asarray(bias_hh, dtype=dtype)
    if bias_ih is None and bias_hh is None:
        return None
    return np.array(bias_ih if bias_ih is not None else bias_hh, dtype=dtype)


def _gru_biases(
    params: Any, dtype: np.dtype, linear_before_reset: bool
) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """GRU biases as the loops use them: ``(folded (3H,) or None, bias_hn (H,) or None)``.

    ``folded`` joins the input projection; with ``linear_before_reset`` the candidate's ``b_hn`` sits inside
    ``r * (W_hn h + b_hn)`` and cannot join it: ``folded``'s candidate rows hold ``b_in`` alone and ``bias_hn``
    is ``b_hn`` (``None`` when ``bias_hh`` is ``None``).
    """
    folded = _bias_total(params, dtype)
    if folded is None or not linear_before_reset:
        return folded, None
    hidden = params.hidden_size
    if params.bias_ih is None:
        folded[2 * hidden :] = 0
    else:
        folded[2 * hidden :] = np.asarray(params.bias_ih, dtype=dtype)[2 * hidden :]
    bias_hn = None if params.bias_hh is None else np.array(params.bias_hh[2 * hidden :], dtype=dtype)
    return folded, bias_hn


def _chunk_steps(steps: int, batch: int, rows: int, itemsize: int) -> int:
    """Time steps per input-projection chunk: as many as fit in ``CHUNK_BYTES``, at least one."""
    per_step = max(1, batch * rows * itemsize)
    return int(max(1, min(steps, CHUNK_BYTES // per_step)))


def _run(
    x: np.ndarray,
    weight_ih: np.ndarray,
    bias: Optional[np.ndarray],
    step: Step,
    h0: np.ndarray,
    c0: Optional[np.ndarray],
    lengths: Optional[Array],
    reverse: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The time loop shared by every cell, in feature-major layout.

    ``x (T, B, I)``; ``weight_ih (G*H, I)`` and ``bias (G*H, 1)`` already reordered/scaled for
    ``step``; ``h0 (B, P)``, ``c0 (B, H)``. Returns ``y (T, B, P)`` and the final states ``(B, ·)``.
    """
    steps, batch, features = x.shape
    dtype = x.dtype
    rows = weight_ih.shape[0]
    out_size = h0.shape[1]
    chunk = _chunk_steps(steps, batch, rows, dtype.itemsize)

    y = np.empty((steps, batch, out_size), dtype=dtype)
    gx_flat = np.empty(rows * chunk * batch, dtype=dtype)
    y_chunk = np.empty((chunk, out_size, batch), dtype=dtype)
    # the state lives in its own buffers at chunk boundaries and in masked steps
    h_state = np.array(h0.T, dtype=dtype, order="C")
    c_state = None if c0 is None else np.array(c0.T, dtype=dtype, order="C")
    c_masked = None if c0 is None else np.empty_like(c_state)

    if lengths is None:
        all_valid_below, any_valid_below = steps, steps
        lengths_row = None
    else:
        lengths_row = np.asarray(lengths).reshape(1, batch)
        all_valid_below = int(lengths_row.min()) if batch else steps
        any_valid_below = int(lengths_row.max()) if batch else steps
        valid = np.empty((1, batch), dtype=bool)
        invalid = np.empty((1, batch), dtype=bool)

    starts = range(0, steps, chunk)
    if reverse:
        starts = reversed(starts)
    h = h_state
    small = openblas.small_product(rows, out_size, batch)
    with openblas.single_thread(openblas.small_call(rows, out_size, features, chunk, batch)):
        for start in starts:
            stop = min(start + chunk, steps)
            count = stop - start
            if start < any_valid_below:  # a chunk of all-padding needs no projection
                inputs = x[start:stop].reshape(count * batch, features)
                gx = gx_flat[: rows * count * batch].reshape(rows, count * batch)
                np.matmul(weight_ih, inputs.T, out=gx)
                if bias is not None:
                    np.add(gx, bias, out=gx)
            order = range(count - 1, -1, -1) if reverse else range(count)
            with openblas.single_thread(small):  # the per-step products (small ones on one thread)
                for local in order:
                    t = start + local
                    slot = y_chunk[local]
                    if t >= any_valid_below:
                        slot.fill(0)
                        continue
                    gx_t = gx[:, local * batch : (local + 1) * batch]
                    if t < all_valid_below:
                        step(gx_t, h, c_state, c_state, slot)
                        h = slot
                        continue
                    np.greater(lengths_row, t, out=valid)
                    np.logical_not(valid, out=invalid)
                    step(gx_t, h, c_state, c_masked, slot)
                    if h is not h_state:
                        np.copyto(h_state, h)
                    np.copyto(h_state, slot, where=valid)
                    if c_state is not None:
                        np.copyto(c_state, c_masked, where=valid)
                    np.copyto(slot, 0, where=invalid)
                    h = h_state
            np.copyto(y[start:stop], y_chunk[:count].transpose(0, 2, 1))
            if h is not h_state:  # the next chunk overwrites y_chunk
                np.copyto(h_state, h)
                h = h_state
    final_h = np.ascontiguousarray(h_state.T)
    if c_state is None:
        return y, (final_h,)
    return y, (final_h, np.ascontiguousarray(c_state.T))


def _sigmoid_fixup(block: np.ndarray) -> None:
    """``tanh(z/2)`` -> ``sigmoid(z)`` in place."""
    np.multiply(block, 0.5, out=block)
    np.add(block, 0.5, out=block)


# ----------------------------------------------------------------------------------------------
# RNN


def rnn_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    nonlinearity: str = "tanh",
) -> tuple[Array, tuple[Array, ...]]:
    if x.dtype not in _FAST_DTYPES:
        return GENERIC["rnn"](xp, x, params, state, lengths, reverse, nonlinearity=nonlinearity)
    dtype = x.dtype
    weight_ih = np.asarray(params.weight_ih, dtype=dtype)
    weight_hh = np.ascontiguousarray(params.weight_hh, dtype=dtype)
    bias = _column(_bias_total(params, dtype), dtype)
    z = np.empty((weight_hh.shape[0], x.shape[1]), dtype=dtype)
    relu = nonlinearity == "relu"
    kernels = _use_compiled(x)
    if kernels is not None and _use_rows(x, weight_hh):
        bias_row = np.zeros(weight_hh.shape[0], dtype=dtype) if bias is None else bias.reshape(-1)
        rnn_rows = _rows_kernels().rnn_rows
        weight, transposed = _recurrent_weight(weight_hh, x.shape[1])

        def run_slice(gx, h, c, y, lengths_array, b0, b1, start, count):
            rnn_rows(gx, weight, transposed, bias_row, h[b0:b1], y, lengths_array, b0, start, count, reverse, relu)

        return _run_rows(x, weight_ih, state[0], None, lengths, reverse, run_slice, kernels)
    if kernels is not None:
        h_spare = np.empty((weight_hh.shape[0], x.shape[1]), dtype=dtype)

        def run_chunk(gx, h, c, y, lengths_array, start, count, backwards):
            kernels.rnn_chunk(gx, weight_hh, h, y, lengths_array, start, count, backwards, z, relu, h_spare)

        return _run_compiled(x, weight_ih, bias, run_chunk, state[0], None, lengths, reverse)
    matmul, add, tanh, maximum = np.matmul, np.add, np.tanh, np.maximum

    def step(gx_t, h, c_in, c_out, h_out):
        matmul(weight_hh, h, out=z)
        add(z, gx_t, out=z)
        if relu:
            maximum(z, 0, out=h_out)
        else:
            tanh(z, out=h_out)

    return _run(x, weight_ih, bias, step, state[0], None, lengths, reverse)


# ----------------------------------------------------------------------------------------------
# LSTM


#: the optional LSTM fields the numba kernels do not implement (any one set: the NumPy loop runs)
_BEYOND_KERNELS = (("weight_hr", "projection"), ("peephole_i", "peephole_i"), ("peephole_f", "peephole_f"),
                   ("peephole_o", "peephole_o"))  # fmt: skip


def _lstm_beyond_kernels(params: Any) -> list[str]:
    """What of ``params`` the numba LSTM kernels cannot run (empty: they can)."""
    return [label for field, label in _BEYOND_KERNELS if getattr(params, field) is not None]


def lstm_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, tuple[Array, ...]]:
    if x.dtype not in _FAST_DTYPES:
        return GENERIC["lstm"](xp, x, params, state, lengths, reverse, coupled=coupled, clip=clip)
    dtype = x.dtype
    hidden = params.hidden_size
    batch = x.shape[1]
    kernels = _use_compiled(x)
    if kernels is not None and not _lstm_beyond_kernels(params):
        return _lstm_compiled(kernels, x, params, state, lengths, reverse, coupled, clip)
    late_output = params.peephole_o is not None  # the output gate then needs c_t before its tanh
    # Row order: sigmoid gates computed from c_{t-1} first (contiguous, for one fix-up), then the
    # cell gate g (so one tanh covers them all), then the output gate when it needs c_t.
    early_sigmoid = ["i"] + ([] if coupled else ["f"]) + ([] if late_output else ["o"])
    order = [*early_sigmoid, "g"] + (["o"] if late_output else [])
    torch_index = {"i": 0, "f": 1, "g": 2, "o": 3}
    rows = np.concatenate([np.arange(torch_index[g] * hidden, (torch_index[g] + 1) * hidden) for g in order])
    scale = np.concatenate([np.full(hidden, 1.0 if g == "g" else 0.5, dtype=dtype) for g in order]).reshape(-1, 1)
    weight_ih = np.asarray(params.weight_ih, dtype=dtype)[rows] * scale
    weight_hh = np.asarray(params.weight_hh, dtype=dtype)[rows] * scale
    total = _bias_total(params, dtype)
    bias = None if total is None else total[rows].astype(dtype).reshape(-1, 1) * scale
    weight_hr = None if params.weight_hr is None else np.ascontiguousarray(params.weight_hr, dtype=dtype)

    def half(peephole: Optional[Array]) -> Optional[np.ndarray]:
        return None if peephole is None else _column(peephole, dtype) * 0.5

    peep_i = half(params.peephole_i)
    peep_f = None if coupled else half(params.peephole_f)
    peep_o = half(params.peephole_o)

    z = np.empty((len(order) * hidden, batch), dtype=dtype)
    block = {g: z[k * hidden : (k + 1) * hidden] for k, g in enumerate(order)}
    early_end = len(early_sigmoid) * hidden
    g_end = early_end + hidden
    early, gates_through_g = z[:early_end], z[:g_end]
    gate_i, gate_g, gate_o = block["i"], block["g"], block["o"]
    gate_f = np.empty((hidden, batch), dtype=dtype) if coupled else block["f"]
    scratch = np.empty((hidden, batch), dtype=dtype)
    h_full = np.empty((hidden, batch), dtype=dtype) if weight_hr is not None else None
    half_clip = None if clip is None else 0.5 * clip
    matmul, add, multiply, subtract, tanh, npclip = np.matmul, np.add, np.multiply, np.subtract, np.tanh, np.clip

    def step(gx_t, h, c_in, c_out, h_out):
        matmul(weight_hh, h, out=z)
        add(z, gx_t, out=z)
        if peep_i is not None:
            multiply(peep_i, c_in, out=scratch)
            add(gate_i, scratch, out=gate_i)
        if peep_f is not None:
            multiply(peep_f, c_in, out=scratch)
            add(gate_f, scratch, out=gate_f)
        if clip is not None:
            npclip(early, -half_clip, half_clip, out=early)
            npclip(gate_g, -clip, clip, out=gate_g)
        tanh(gates_through_g, out=gates_through_g)
        _sigmoid_fixup(early)
        if coupled:
            subtract(1.0, gate_i, out=gate_f)
        multiply(gate_f, c_in, out=c_out)
        multiply(gate_i, gate_g, out=scratch)
        add(c_out, scratch, out=c_out)
        if late_output:
            multiply(peep_o, c_out, out=scratch)
            add(gate_o, scratch, out=gate_o)
            if clip is not None:
                npclip(gate_o, -half_clip, half_clip, out=gate_o)
            tanh(gate_o, out=gate_o)
            _sigmoid_fixup(gate_o)
        tanh(c_out, out=scratch)
        if weight_hr is None:
            multiply(gate_o, scratch, out=h_out)
        else:
            multiply(gate_o, scratch, out=h_full)
            matmul(weight_hr, h_full, out=h_out)

    return _run(x, weight_ih, bias, step, state[0], state[1], lengths, reverse)


def _lstm_compiled(kernels, x, params, state, lengths, reverse, coupled, clip):
    dtype = x.dtype
    weight_ih = np.asarray(params.weight_ih, dtype=dtype)
    weight_hh = np.ascontiguousarray(params.weight_hh, dtype=dtype)
    bias = _column(_bias_total(params, dtype), dtype)
    z = np.empty((weight_hh.shape[0], x.shape[1]), dtype=dtype)
    bound = dtype.type(_NO_CLIP if clip is None else clip)
    if _use_rows(x, weight_hh):
        bias_row = np.zeros(weight_hh.shape[0], dtype=dtype) if bias is None else bias.reshape(-1)
        lstm_rows = _rows_kernels().lstm_rows
        weight, transposed = _recurrent_weight(weight_hh, x.shape[1])

        def run_slice(gx, h, c, y, lengths_array, b0, b1, start, count):
            lstm_rows(
                gx, weight, transposed, bias_row, h[b0:b1], c[b0:b1], y, lengths_array, b0, start, count, reverse,
                bound, coupled,
            )  # fmt: skip

        return _run_rows(x, weight_ih, state[0], state[1], lengths, reverse, run_slice, kernels)
    h_spare = np.empty((params.hidden_size, x.shape[1]), dtype=dtype)
    c_spare = np.empty_like(h_spare)

    def run_chunk(gx, h, c, y, lengths_array, start, count, backwards):
        kernels.lstm_chunk(
            gx, weight_hh, h, c, y, lengths_array, start, count, backwards, z, bound, coupled, h_spare, c_spare
        )

    return _run_compiled(x, weight_ih, bias, run_chunk, state[0], state[1], lengths, reverse)


# ----------------------------------------------------------------------------------------------
# GRU


def gru_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    linear_before_reset: bool = True,
) -> tuple[Array, tuple[Array, ...]]:
    if x.dtype not in _FAST_DTYPES:
        return GENERIC["gru"](xp, x, params, state, lengths, reverse, linear_before_reset=linear_before_reset)
    dtype = x.dtype
    hidden = params.hidden_size
    batch = x.shape[1]
    kernels = _use_compiled(x)
    if kernels is not None:
        return _gru_compiled(kernels, x, params, state, lengths, reverse, linear_before_reset)
    # r and z rows pre-scaled by 0.5 (one tanh then gives both sigmoids); n rows unscaled
    scale = np.concatenate([np.full(2 * hidden, 0.5, dtype=dtype), np.ones(hidden, dtype=dtype)]).reshape(-1, 1)
    weight_ih = np.asarray(params.weight_ih, dtype=dtype) * scale
    weight_hh = np.asarray(params.weight_hh, dtype=dtype) * scale
    folded, hn = _gru_biases(params, dtype, linear_before_reset)
    bias = None if folded is None else folded.reshape(-1, 1) * scale
    bias_hn = _column(hn, dtype)

    z = np.empty((3 * hidden, batch), dtype=dtype)
    gates_rz, gate_r, gate_z, gate_n = z[: 2 * hidden], z[:hidden], z[hidden : 2 * hidden], z[2 * hidden :]
    weight_rz, weight_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
    scratch = np.empty((hidden, batch), dtype=dtype)
    matmul, add, multiply, subtract, tanh = np.matmul, np.add, np.multiply, np.subtract, np.tanh

    def finish(h, h_out):
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        subtract(h, gate_n, out=scratch)
        multiply(gate_z, scratch, out=scratch)
        add(gate_n, scratch, out=h_out)

    if linear_before_reset:

        def step(gx_t, h, c_in, c_out, h_out):
            matmul(weight_hh, h, out=z)
            if bias_hn is not None:
                add(gate_n, bias_hn, out=gate_n)
            add(gates_rz, gx_t[: 2 * hidden], out=gates_rz)
            tanh(gates_rz, out=gates_rz)
            _sigmoid_fixup(gates_rz)
            multiply(gate_r, gate_n, out=gate_n)
            add(gate_n, gx_t[2 * hidden :], out=gate_n)
            tanh(gate_n, out=gate_n)
            finish(h, h_out)

    else:

        def step(gx_t, h, c_in, c_out, h_out):
            matmul(weight_rz, h, out=gates_rz)
            add(gates_rz, gx_t[: 2 * hidden], out=gates_rz)
            tanh(gates_rz, out=gates_rz)
            _sigmoid_fixup(gates_rz)
            multiply(gate_r, h, out=scratch)
            matmul(weight_n, scratch, out=gate_n)
            add(gate_n, gx_t[2 * hidden :], out=gate_n)
            tanh(gate_n, out=gate_n)
            finish(h, h_out)

    return _run(x, weight_ih, bias, step, state[0], None, lengths, reverse)


def _gru_compiled(kernels, x, params, state, lengths, reverse, linear_before_reset):
    dtype = x.dtype
    hidden = params.hidden_size
    weight_ih = np.asarray(params.weight_ih, dtype=dtype)
    weight_hh = np.ascontiguousarray(params.weight_hh, dtype=dtype)
    folded, hn = _gru_biases(params, dtype, linear_before_reset)
    bias = None if folded is None else folded.reshape(-1, 1)
    bias_hn = np.zeros(hidden, dtype=dtype) if hn is None else hn
    if linear_before_reset and _use_rows(x, weight_hh):
        bias_row = np.zeros(3 * hidden, dtype=dtype) if bias is None else bias.reshape(-1)
        gru_rows = _rows_kernels().gru_rows
        weight, transposed = _recurrent_weight(weight_hh, x.shape[1])

        def run_slice(gx, h, c, y, lengths_array, b0, b1, start, count):
            z_n = np.empty((b1 - b0, hidden), dtype=dtype)
            gru_rows(gx, weight, transposed, bias_row, bias_hn, h[b0:b1], y, lengths_array, b0, start, count, reverse,
                     z_n)  # fmt: skip

        return _run_rows(x, weight_ih, state[0], None, lengths, reverse, run_slice, kernels)
    z = np.empty((3 * hidden, x.shape[1]), dtype=dtype)
    scratch = np.empty((hidden, x.shape[1]), dtype=dtype)
    h_spare = np.empty_like(scratch)

    def run_chunk(gx, h, c, y, lengths_array, start, count, backwards):
        kernels.gru_chunk(
            gx, weight_hh, bias_hn, h, y, lengths_array, start, count, backwards, z, linear_before_reset, scratch,
            h_spare,
        )  # fmt: skip

    return _run_compiled(x, weight_ih, bias, run_chunk, state[0], None, lengths, reverse)


# ----------------------------------------------------------------------------------------------
# the hook the dispatcher calls (``arrayrnn._dispatch``)

#: named paths ``impl=`` may ask for on NumPy (none: ``"auto"`` / ``"fast"`` pick inside this module)
PATHS: tuple[str, ...] = ()


def paths() -> tuple[str, ...]:
    """The path names ``impl=`` accepts on this backend besides ``"auto"``, ``"generic"`` and ``"fast"``."""
    return PATHS


def sequence(
    kind: str,
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    *,
    impl: str = "auto",
) -> Optional[tuple[Array, tuple[Array, ...]]]:
    """Run one validated, time-major layer on the NumPy loop; ``None`` (the core runs) for other dtypes and for the
    LSTM variants of Greff et al. (absent gates, identity activations, ``weight_gg``), which the loop lacks."""
    if x.dtype not in _FAST_DTYPES or masking_changes(options):  # mask= / padding="carry": the core runs them
        return None
    if regularization_changes(options):  # recurrent dropout / zoneout: the core runs them
        return None
    if layer_norm_changes(params):  # ln_* params: the core runs them
        return None
    if kind == "lstm":
        if lstm_variant_changes(params, options):
            return None
        options = lstm_base_options(options)
    loop = globals()[f"{kind}_sequence"]  # looked up per call: tests may swap a loop
    return loop(xp, x, params, state, lengths, reverse, **options)


def sequence_vjp(kind: str, xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool,
                 options: dict[str, Any], *, impl: str = "auto") -> Optional[tuple[Array, tuple, Any]]:  # fmt: skip
    """``(y, final_state, backward)`` from the NumPy gradient loop (``grad_loop.py``), or ``None`` (the recording
    core runs) for what it declines: other dtypes, masks, the dropout family, layer norm, the Greff variants."""
    from . import grad_loop

    return grad_loop.sequence_vjp(kind, x, params, state, lengths, reverse, options)


def _no_kernels_reason(x: np.ndarray) -> str:
    if x.dtype != np.float32:
        return f"the numba kernels are float32 only, x is {x.dtype.name}"
    if x.shape[1] == 0:
        return "empty batch"
    if os.environ.get("ARRAYRNN_NUMBA", "1") == "0":
        return "ARRAYRNN_NUMBA=0"
    return "numba is not installed"


def explain(kind: str, x: Array, params: Any, options: dict[str, Any], *, impl: str = "auto",
            gradient: bool = False) -> tuple[str, str]:  # fmt: skip
    """``(path, reason)`` for a validated, time-major call: the choice :func:`sequence` makes, in words."""
    batch = x.shape[1]
    if gradient:
        from . import grad_loop

        declined = grad_loop.decline_reason(kind, x, params, options)
        if declined is not None:
            return "generic", declined
        return grad_loop.PATH, f"B = {batch}, {grad_loop.engine(kind, params, options)}"
    if x.dtype not in _FAST_DTYPES:
        return "generic", f"{np.dtype(x.dtype).name} is not supported by the NumPy loop (float32, float64)"
    masking = masking_changes(options)
    if masking:
        return "generic", f"{', '.join(masking)}: not in the NumPy loop or the numba kernels, the array-API core runs"
    regularized = regularization_changes(options)
    if regularized:
        why = "not in the NumPy loop or the numba kernels, the array-API core runs"
        return "generic", f"{', '.join(regularized)}: {why}"
    normed = layer_norm_changes(params)
    if normed:
        return "generic", f"{', '.join(normed)}: not in the NumPy loop or the numba kernels, the array-API core runs"
    changes = lstm_variant_changes(params, options) if kind == "lstm" else []
    if changes:
        return "generic", f"{', '.join(changes)}: not in the NumPy loop or the numba kernels, the array-API core runs"
    kernels = _use_compiled(x)
    if kind == "lstm" and kernels is not None:
        blocked = _lstm_beyond_kernels(params)
        if blocked:
            return "NumPy loop", f"{', '.join(blocked)}: not in the numba kernels"
    if kernels is None:
        return "NumPy loop", _no_kernels_reason(x)
    rows_ok = kind != "gru" or bool(options.get("linear_before_reset", True))
    product = f"{params.weight_hh.shape[0]} x {params.weight_hh.shape[1]} recurrent weights"
    if rows_ok and _use_rows(x, params.weight_hh):
        if batch >= ROWS_MIN_BATCH:
            return "numba batch-major kernels", f"B = {batch} >= {ROWS_MIN_BATCH}"
        return "numba batch-major kernels", f"B = {batch}" + ("" if batch <= ROWS_MAX_SMALL_BATCH else f", {product}")
    return "numba feature-major kernels", f"B = {batch}, {product}"
