"""Batch-major numba kernels for B = 1 and large batches (part of the optional numba path).

A call covers a slice of batch rows, so the NumPy fast path can run one slice per thread.
"""

from __future__ import annotations

from .numba_loop import _NO_TRANS, _ONE, _ROW_MAJOR, _ZERO, _inline, _jit, _sgemm, _sigmoid, _tanh

_TRANS = 112
_ITEM = 4  # float32 bytes


@_inline
def _gemm_w(rows, cols, inner, a_ptr, lda, w_ptr, ldw, transposed, beta, c_ptr, ldc):
    """``C (rows, cols) = A (rows, inner) @ W^T + beta * C``; float32, row-major. ``transposed``: ``w_ptr`` points at
    ``W^T (inner, ldw)`` (OpenBLAS's NN product measured 1.06-1.25x faster than NT at B = 64-256), else at
    ``W (cols, ldw)`` (B = 1: the NT product was as fast or faster, and no transposed copy is made)."""
    if transposed:
        _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, cols, inner, _ONE, a_ptr, lda, w_ptr, ldw, beta, c_ptr, ldc)
    else:
        _sgemm(_ROW_MAJOR, _NO_TRANS, _TRANS, rows, cols, inner, _ONE, a_ptr, lda, w_ptr, ldw, beta, c_ptr, ldc)


@_jit
def lstm_rows(gx, weight, transposed, bias, h, c, y, lengths, b0, start, count, reverse, clip, coupled):
    """LSTM steps ``start .. start+count-1`` for rows ``b0 .. b0+len(h)-1``; ``gx (count, B, 4H)``
    without biases (overwritten); ``bias (4H,)``; ``weight`` is ``W_hh^T (H, 4H)`` when ``transposed``, else
    ``W_hh (4H, H)``."""
    rows, hidden = h.shape
    gates = 4 * hidden
    longest = 0
    for b in range(rows):
        longest = max(longest, lengths[b0 + b])
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            for b in range(rows):
                y[t, b0 + b, :] = _ZERO
            continue
        z = gx[local, b0 : b0 + rows]
        _gemm_w(rows, gates, hidden, h.ctypes.data, hidden, weight.ctypes.data, weight.shape[1], transposed, _ONE,
                z.ctypes.data, gates)  # fmt: skip
        for b in range(rows):
            out = y[t, b0 + b]
            if t >= lengths[b0 + b]:
                out[:] = _ZERO
                continue
            zb, cb, hb = z[b], c[b], h[b]
            for j in range(hidden):
                zi = min(max(zb[j] + bias[j], -clip), clip)
                zf = min(max(zb[hidden + j] + bias[hidden + j], -clip), clip)
                zg = min(max(zb[2 * hidden + j] + bias[2 * hidden + j], -clip), clip)
                zo = min(max(zb[3 * hidden + j] + bias[3 * hidden + j], -clip), clip)
                input_gate = _sigmoid(zi)
                forget_gate = _ONE - input_gate if coupled else _sigmoid(zf)
                c_new = forget_gate * cb[j] + input_gate * _tanh(zg)
                h_new = _sigmoid(zo) * _tanh(c_new)
                cb[j] = c_new
                hb[j] = h_new
                out[j] = h_new


@_jit
def gru_rows(gx, weight, transposed, bias, bias_hn, h, y, lengths, b0, start, count, reverse, z_n):
    """GRU (``linear_before_reset=True``, torch's) like :func:`lstm_rows`; ``gx (count, B, 3H)``;
    ``bias (3H,)`` folded for r, z and ``b_in`` for n; ``bias_hn (H,)``; ``z_n (rows, H)`` scratch."""
    rows, hidden = h.shape
    gates = 3 * hidden
    longest = 0
    for b in range(rows):
        longest = max(longest, lengths[b0 + b])
    ldw = weight.shape[1]
    # the n block: columns 2H.. of W^T, or rows 2H.. of W
    w_n_ptr = weight.ctypes.data + (2 * hidden if transposed else 2 * hidden * hidden) * _ITEM
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            for b in range(rows):
                y[t, b0 + b, :] = _ZERO
            continue
        z = gx[local, b0 : b0 + rows]
        # r, z: the recurrent product adds into the input one; n: kept apart (it is multiplied by r)
        _gemm_w(rows, 2 * hidden, hidden, h.ctypes.data, hidden, weight.ctypes.data, ldw, transposed, _ONE,
                z.ctypes.data, gates)  # fmt: skip
        _gemm_w(rows, hidden, hidden, h.ctypes.data, hidden, w_n_ptr, ldw, transposed, _ZERO, z_n.ctypes.data, hidden)
        for b in range(rows):
            out = y[t, b0 + b]
            if t >= lengths[b0 + b]:
                out[:] = _ZERO
                continue
            zb, nb, hb = z[b], z_n[b], h[b]
            for j in range(hidden):
                reset = _sigmoid(zb[j] + bias[j])
                update = _sigmoid(zb[hidden + j] + bias[hidden + j])
                candidate = _tanh(zb[2 * hidden + j] + bias[2 * hidden + j] + reset * (nb[j] + bias_hn[j]))
                h_new = candidate + update * (hb[j] - candidate)
                hb[j] = h_new
                out[j] = h_new


@_jit
def rnn_rows(gx, weight, transposed, bias, h, y, lengths, b0, start, count, reverse, relu):
    """Elman RNN like :func:`lstm_rows`; ``gx (count, B, H)``; ``bias (H,)``."""
    rows, hidden = h.shape
    longest = 0
    for b in range(rows):
        longest = max(longest, lengths[b0 + b])
    for k in range(count):
        local = count - 1 - k if reverse else k
        t = start + local
        if t >= longest:
            for b in range(rows):
                y[t, b0 + b, :] = _ZERO
            continue
        z = gx[local, b0 : b0 + rows]
        _gemm_w(rows, hidden, hidden, h.ctypes.data, hidden, weight.ctypes.data, hidden, transposed, _ONE,
                z.ctypes.data, hidden)  # fmt: skip
        for b in range(rows):
            out = y[t, b0 + b]
            if t >= lengths[b0 + b]:
                out[:] = _ZERO
                continue
            zb, hb = z[b], h[b]
            for j in range(hidden):
                pre = zb[j] + bias[j]
                h_new = max(pre, _ZERO) if relu else _tanh(pre)
                hb[j] = h_new
                out[j] = h_new
