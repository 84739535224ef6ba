"""Optional numba kernels behind the NumPy fast path (``pip install ".[numba]"``), feature-major.

One compiled call runs a chunk of time steps, the recurrent product through NumPy's own OpenBLAS (linked by name:
cached on disk). Used for float32 LSTM (no peepholes or projection), GRU, RNN; batch-major: ``numba_rows.py``.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

from . import openblas


def _external(symbol, signature):
    """``symbol`` of NumPy's OpenBLAS as a numba external function: linked by name when a kernel is loaded, so the
    kernels can be cached on disk (a ctypes function would bake its address into the machine code)."""
    openblas.function(symbol, [], None)  # ImportError (numba kernels disabled) if NumPy's OpenBLAS lacks it
    return types.ExternalFunction(symbol, signature)


if openblas.PATH is None or openblas.set_num_threads is None:
    raise ImportError("NumPy's bundled OpenBLAS was not found; numba kernels disabled")
llvm.load_library_permanently(openblas.PATH)  # the symbols below resolve against it, also in cached kernels
# CBLAS enums are C ints; integers are the 64-bit interface's; pointers pass as 64-bit integers (same ABI)
_E, _I, _F, _P = types.intc, types.int64, types.float32, types.uintp
_sgemm = _external("scipy_cblas_sgemm64_", types.void(_E, _E, _E, _I, _I, _I, _F, _P, _I, _P, _I, _F, _P, _I))
# one column (B = 1): gemv, as NumPy's matmul does; sgemm would start threads for a matrix-vector product
_sgemv = _external("scipy_cblas_sgemv64_", types.void(_E, _E, _I, _I, _F, _P, _I, _P, _I, _F, _P, _I))
_ROW_MAJOR, _NO_TRANS = 101, 111
# the thread count of that OpenBLAS (what threadpoolctl sets): the batch-major driver runs one slice of
# rows per BLAS thread, each with single-threaded BLAS, and restores the count afterwards
blas_get_num_threads = openblas.get_num_threads
blas_set_num_threads = openblas.set_num_threads

# cache=True: compiled once per machine (numba's cache folder), loaded in about 0.3 s by later processes
_jit = njit(cache=True, fastmath=True, error_model="numpy", nogil=True)
_inline = njit(cache=True, fastmath=True, error_model="numpy", inline="always")

_F32 = np.float32
_HALF = _F32(0.5)
_ONE = _F32(1.0)
_ZERO = _F32(0.0)
_TANH_BOUND = _F32(7.99881172180175781)  # tanh is 1 to float32 precision beyond this


@_inline
def _matmul(a, b, out):
    """``out = a @ b`` for C-contiguous float32 matrices, on NumPy's BLAS."""
    rows, inner = a.shape
    columns = b.shape[1]
    if columns == 1:
        _sgemv(
            _ROW_MAJOR, _NO_TRANS, rows, inner, _ONE, a.ctypes.data, inner, b.ctypes.data, 1, _ZERO, out.ctypes.data, 1
        )
        return
    _sgemm(
        _ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, columns, inner, _ONE,
        a.ctypes.data, inner, b.ctypes.data, columns, _ZERO, out.ctypes.data, columns,
    )  # fmt: skip


@_inline
def _tanh(x):
    # Rational approximation (the one Eigen uses for float): pure arithmetic, so the loops vectorise.
    x = min(max(x, -_TANH_BOUND), _TANH_BOUND)
    x2 = x * x
    p = x2 * _F32(-2.76076847742355e-16) + _F32(2.00018790482477e-13)
    p = x2 * p + _F32(-8.60467152213735e-11)
    p = x2 * p + _F32(5.12229709037114e-08)
    p = x2 * p + _F32(1.48572235717979e-05)
    p = x2 * p + _F32(6.37261928875436e-04)
    p = x2 * p + _F32(4.89352455891786e-03)
    q = x2 * _F32(1.19825839466702e-06) + _F32(1.18534705686654e-04)
    q = x2 * q + _F32(2.26843463243900e-03)
    q = x2 * q + _F32(4.89352518554385e-03)
    return x * p / q


@_inline
def _sigmoid(x):
    return _HALF * _tanh(_HALF * x) + _HALF


@_inline
def _lstm_cell(zi, zf, zg, zo, c_old, clip, coupled):
    zi = min(max(zi, -clip), clip)
    zf = min(max(zf, -clip), clip)
    zg = min(max(zg, -clip), clip)
    zo = min(max(zo, -clip), clip)
    input_gate = _sigmoid(zi)
    forget_gate = _ONE - input_gate if coupled else _sigmoid(zf)
    c_new = forget_gate * c_old + input_gate * _tanh(zg)
    return c_new, _sigmoid(zo) * _tanh(c_new)


@_inline
def _add_columns(z, gx, base, row_begin, row_end):
    """``z[r, :] += gx[r, base : base + B]`` for rows ``row_begin .. row_end - 1``."""
    batch = z.shape[1]
    for r in range(row_begin, row_end):
        target = z[r]
        source = gx[r, base : base + batch]
        for b in range(batch):
            target[b] += source[b]


@_inline
def _commit(state, candidate, lengths, t):
    """``state[:, b] = candidate[:, b]`` for the sequences whose step ``t`` is valid."""
    hidden, batch = state.shape
    for b in range(batch):
        if t < lengths[b]:
            for j in range(hidden):
                state[j, b] = candidate[j, b]


@_inline
def _store(y, t, h, lengths):
    """``y[t, b] = h[:, b]`` where step ``t`` of sequence ``b`` is valid, else 0 (back to ``(B, H)``)."""
    hidden, batch = h.shape
    for b in range(batch):
        if t < lengths[b]:
            for j in range(hidden):
                y[t, b, j] = h[j, b]
        else:
            for j in range(hidden):
                y[t, b, j] = _ZERO


# Every (rows, B) buffer is C-contiguous, so after the input projection is added the gate math runs
# over flat views (index j*B + b, gate k at k*H*B): one unit-stride loop that vectorises for any B.
# New states go to spare buffers (never aliasing the inputs, or LLVM's overlap check falls back to
# scalar code), then are copied back whole, or per valid sequence when some sequence is padding.


@_jit
def lstm_chunk(gx, weight_hh, h, c, y, lengths, start, count, reverse, z, clip, coupled, h_spare, c_spare):
    """Run ``count`` steps from time ``start``: ``gx (4H, count*B)``, ``h, c (H, B)`` updated in place,
    ``y (T, B, H)`` written at rows ``start .. start+count-1``; ``clip``: a huge finite number for none
    (fastmath assumes no infinities); ``h_spare, c_spare (H, B)`` scratch."""
    hidden, batch = c.shape
    size = hidden * batch
    longest, shortest = lengths.max(), lengths.min()
    z1, h1, c1 = z.reshape(z.size), h.reshape(size), c.reshape(size)
    h_spare1, c_spare1 = h_spare.reshape(size), c_spare.reshape(size)
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            y[t] = _ZERO
            continue
        _matmul(weight_hh, h, z)
        _add_columns(z, gx, local * batch, 0, 4 * hidden)
        for idx in range(size):
            c_new, h_new = _lstm_cell(
                z1[idx], z1[size + idx], z1[2 * size + idx], z1[3 * size + idx], c1[idx], clip, coupled
            )
            c_spare1[idx] = c_new
            h_spare1[idx] = h_new
        if t < shortest:
            h1[:] = h_spare1
            c1[:] = c_spare1
        else:
            _commit(h, h_spare, lengths, t)
            _commit(c, c_spare, lengths, t)
        _store(y, t, h, lengths)


@_jit
def gru_chunk(gx, weight_hh, bias_hn, h, y, lengths, start, count, reverse, z, linear_before_reset, scratch, h_spare):
    """GRU steps like :func:`lstm_chunk`; ``gx (3H, count*B)``; ``bias_hn (H,)`` (zeros when folded/absent);
    ``scratch (H, B)`` holds ``gx_n`` (``linear_before_reset``) or ``r * h`` (otherwise)."""
    hidden, batch = h.shape
    size = hidden * batch
    longest, shortest = lengths.max(), lengths.min()
    weight_rz, weight_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
    z_rz, z_n = z[: 2 * hidden], z[2 * hidden :]
    z1, h1, s1, h_spare1 = z.reshape(z.size), h.reshape(size), scratch.reshape(size), h_spare.reshape(size)
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            y[t] = _ZERO
            continue
        base = local * batch
        if linear_before_reset:
            _matmul(weight_hh, h, z)
            _add_columns(z, gx, base, 0, 2 * hidden)
            for j in range(hidden):  # z_n += b_hn; scratch = gx_n
                row = z_n[j]
                source = gx[2 * hidden + j, base : base + batch]
                for b in range(batch):
                    row[b] += bias_hn[j]
                    scratch[j, b] = source[b]
        else:
            _matmul(weight_rz, h, z_rz)
            _add_columns(z, gx, base, 0, 2 * hidden)
            for idx in range(size):
                s1[idx] = _sigmoid(z1[idx]) * h1[idx]
            _matmul(weight_n, scratch, z_n)
            _add_columns(z, gx, base, 2 * hidden, 3 * hidden)
        for idx in range(size):
            update = _sigmoid(z1[size + idx])
            if linear_before_reset:
                candidate = _tanh(s1[idx] + _sigmoid(z1[idx]) * z1[2 * size + idx])
            else:
                candidate = _tanh(z1[2 * size + idx])
            h_spare1[idx] = candidate + update * (h1[idx] - candidate)
        if t < shortest:
            h1[:] = h_spare1
        else:
            _commit(h, h_spare, lengths, t)
        _store(y, t, h, lengths)


@_jit
def rnn_chunk(gx, weight_hh, h, y, lengths, start, count, reverse, z, relu, h_spare):
    """Elman RNN steps like :func:`lstm_chunk`; ``gx (H, count*B)``."""
    hidden, batch = h.shape
    size = hidden * batch
    longest, shortest = lengths.max(), lengths.min()
    z1, h1, h_spare1 = z.reshape(z.size), h.reshape(size), h_spare.reshape(size)
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            y[t] = _ZERO
            continue
        _matmul(weight_hh, h, z)
        _add_columns(z, gx, local * batch, 0, hidden)
        for idx in range(size):
            h_spare1[idx] = max(z1[idx], _ZERO) if relu else _tanh(z1[idx])
        if t < shortest:
            h1[:] = h_spare1
        else:
            _commit(h, h_spare, lengths, t)
        _store(y, t, h, lengths)
