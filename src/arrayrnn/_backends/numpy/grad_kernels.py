"""numba kernels of the NumPy gradient loop: the backward's fused pointwise pass per step (float32/float64, no
fast-math), and float32 whole-sequence kernels (RNN, GRU, LSTM) that run a recording forward or a backward over all
steps in one call, the recurrent products on NumPy's OpenBLAS (linked by name: cached on disk).
Imported only when numba is installed and ``ARRAYRNN_NUMBA`` is not ``0``.
"""

from __future__ import annotations

from numba import njit

_jit = njit(cache=True, nogil=True)


@_jit
def lstm_backward(a, tc, cp, dh, dy, has_dy, dc, dz, dc_next, clipped, use_clip, coupled, lengths, t):
    """One LSTM backward step before ``dh_prev = dz W_hh``: ``dz`` the pre-activation gradient (0 on padded rows),
    ``dc_next`` the cell-state gradient to the previous step (passed through on padded rows)."""
    rows, gates = a.shape
    H = gates // 4
    for b in range(rows):
        if lengths[b] <= t:
            for k in range(gates):
                dz[b, k] = 0.0
            for j in range(H):
                dc_next[b, j] = dc[b, j]
            continue
        for j in range(H):
            dht = dh[b, j] + dy[b, j] if has_dy else dh[b, j]
            i, f, g, o = a[b, j], a[b, H + j], a[b, 2 * H + j], a[b, 3 * H + j]
            tanh_c = tc[b, j]
            dct = dc[b, j] + dht * o * (1.0 - tanh_c * tanh_c)
            di = dct * g
            df = dct * cp[b, j]
            dc_next[b, j] = dct * f
            if coupled:
                di = di - df
                df = 0.0
            dz[b, j] = di * (1.0 - i) * i
            dz[b, H + j] = df * (1.0 - f) * f
            dz[b, 2 * H + j] = dct * i * (1.0 - g * g)
            dz[b, 3 * H + j] = dht * tanh_c * (1.0 - o) * o
            if use_clip:
                for k in range(4):
                    if clipped[b, k * H + j]:
                        dz[b, k * H + j] = 0.0


@_jit
def gru_backward(a, hp, extra, dh, dy, has_dy, dgx, dgh, dh_part, lengths, t):
    """One GRU backward step (linear before reset) before ``dh_prev = dh_part + dgh W_hh``: ``dgx`` and ``dgh``
    the gradients of the input and recurrent pre-activations (0 on padded rows, where ``dh_part = dh``)."""
    rows, gates = a.shape
    H = gates // 3
    for b in range(rows):
        if lengths[b] <= t:
            for k in range(gates):
                dgx[b, k] = 0.0
                dgh[b, k] = 0.0
            for j in range(H):
                dh_part[b, j] = dh[b, j]
            continue
        for j in range(H):
            dht = dh[b, j] + dy[b, j] if has_dy else dh[b, j]
            r, z, n = a[b, j], a[b, H + j], a[b, 2 * H + j]
            dn = dht * (1.0 - z) * (1.0 - n * n)
            dzv = dht * (hp[b, j] - n) * z * (1.0 - z)
            dr = dn * extra[b, j] * r * (1.0 - r)
            dgx[b, j], dgx[b, H + j], dgx[b, 2 * H + j] = dr, dzv, dn
            dgh[b, j], dgh[b, H + j], dgh[b, 2 * H + j] = dr, dzv, dn * r
            dh_part[b, j] = dht * z


# ----------------------------------------------------------------------------------------------
# float32 LSTM, whole sequence per call (batch-major, the recurrent products on NumPy's OpenBLAS, linked by name so
# the kernels stay cached on disk); absent (``FUSED = False``) where NumPy's OpenBLAS is not found

try:
    from .numba_loop import _NO_TRANS, _ONE, _ROW_MAJOR, _ZERO, _sgemm, _sgemv
except ImportError:
    FUSED = False
else:
    FUSED = True

if FUSED:
    import numpy as np

    _TRANS = 112
    _F32 = np.float32
    _HALF = _F32(0.5)
    _BOUND = _F32(7.99881172180175781)  # tanh is 1 to float32 precision beyond this
    # fast-math without "no NaNs/infinities": a NaN input still gives NaN, as in the recording core
    _fused = njit(cache=True, nogil=True, error_model="numpy", fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
    _inline = njit(
        cache=True, error_model="numpy", inline="always", fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}
    )

    @_inline
    def _tanh(x):
        # Eigen's rational float tanh (as numba_loop's), clamped with comparisons that let a NaN through
        if x > _BOUND:
            x = _BOUND
        elif x < -_BOUND:
            x = -_BOUND
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

    @_fused
    def lstm_record(gates, weight_hh, weight_hh_t, h, c, h_prev, c_prev, tanh_c, y, lengths, reverse, coupled, b0, b1):
        """The recording LSTM forward of rows ``b0 .. b1-1`` (``weight_hh_t`` the contiguous transpose):
        ``gates (T, B, 4H)`` holds ``x W_ih^T + b`` and leaves with the activated gates ``i, f, g, o``; ``h, c (B, H)``
        the state, updated in place; ``h_prev, c_prev`` the state before each step, ``tanh_c`` of the new cell
        state, ``y`` the output (0 on padded rows, whose state carries)."""
        steps, _, width = gates.shape
        hidden = width // 4
        rows = b1 - b0
        longest = lengths[b0:b1].max()
        hs, cs = h[b0:b1], c[b0:b1]
        for k in range(steps):
            t = steps - 1 - k if reverse else k
            h_prev[t, b0:b1] = hs
            c_prev[t, b0:b1] = cs
            if t >= longest:
                y[t, b0:b1] = _ZERO
                continue
            z = gates[t, b0:b1]
            if rows == 1:  # a matrix-vector product: gemv, as NumPy's matmul does
                _sgemv(_ROW_MAJOR, _NO_TRANS, width, hidden, _ONE, weight_hh.ctypes.data, hidden, hs.ctypes.data, 1,
                       _ONE, z.ctypes.data, 1)  # fmt: skip
            else:  # z += h W_hh^T, with W_hh^T (H, 4H) contiguous: 1.5-2x faster than a transposed W_hh here
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, width, hidden, _ONE, hs.ctypes.data, hidden,
                       weight_hh_t.ctypes.data, width, _ONE, z.ctypes.data, width)  # fmt: skip
            for b in range(b0, b1):
                out = y[t, b]
                if t >= lengths[b]:
                    out[:] = _ZERO
                    continue
                zb, hb, cb, tb = gates[t, b], h[b], c[b], tanh_c[t, b]
                # one loop per kind of gate, each in place: one fused loop reading and writing four offsets of
                # the same row measured 3x slower (LLVM does not vectorise it)
                for j in range(2 * hidden):
                    zb[j] = _sigmoid(zb[j])
                for j in range(2 * hidden, 3 * hidden):
                    zb[j] = _tanh(zb[j])
                for j in range(3 * hidden, width):
                    zb[j] = _sigmoid(zb[j])
                if coupled:
                    for j in range(hidden):
                        zb[hidden + j] = _F32(1.0) - zb[j]
                for j in range(hidden):
                    c_new = zb[hidden + j] * cb[j] + zb[j] * zb[2 * hidden + j]
                    cb[j] = c_new
                    tb[j] = _tanh(c_new)
                for j in range(hidden):
                    h_new = zb[3 * hidden + j] * tb[j]
                    hb[j] = h_new
                    out[j] = h_new

    @_fused
    def lstm_backprop(
        gates, tanh_c, c_prev, weight_hh, dh, dc, dy, has_dy, dz, dh_spare, lengths, reverse, coupled, b0, b1
    ):
        """The LSTM backward of rows ``b0 .. b1-1`` over all steps of :func:`lstm_record`'s tape: ``dz (T, B, 4H)``
        the pre-activation gradients (0 on padded rows); ``dh, dc (B, H)`` enter as the final state's cotangents
        and leave as the initial state's; ``dh_spare (B, H)`` scratch."""
        steps, _, width = gates.shape
        hidden = width // 4
        rows = b1 - b0
        longest, shortest = lengths[b0:b1].max(), lengths[b0:b1].min()
        current, spare = dh[b0:b1], dh_spare[b0:b1]
        swapped = False
        for k in range(steps):
            t = k if reverse else steps - 1 - k
            if t >= longest:
                dz[t, b0:b1] = _ZERO
                continue
            for r in range(rows):
                b = b0 + r
                dzb = dz[t, b]
                if t >= lengths[b]:
                    dzb[:] = _ZERO
                    continue
                a, tb, cpb, dhb, dcb, dyb = gates[t, b], tanh_c[t, b], c_prev[t, b], current[r], dc[b], dy[t, b]
                for j in range(hidden):
                    dht = dhb[j] + dyb[j] if has_dy else dhb[j]
                    i, f, g, o = a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j]
                    tc = tb[j]
                    dct = dcb[j] + dht * o * (_F32(1.0) - tc * tc)
                    di = dct * g
                    df = dct * cpb[j]
                    dcb[j] = dct * f
                    if coupled:
                        di = di - df
                        df = _ZERO
                    dzb[j] = di * (_F32(1.0) - i) * i
                    dzb[hidden + j] = df * (_F32(1.0) - f) * f
                    dzb[2 * hidden + j] = dct * i * (_F32(1.0) - g * g)
                    dzb[3 * hidden + j] = dht * tc * (_F32(1.0) - o) * o
            d = dz[t, b0:b1]
            if rows == 1:  # dh_prev = W_hh^T dz
                _sgemv(_ROW_MAJOR, _TRANS, width, hidden, _ONE, weight_hh.ctypes.data, hidden, d.ctypes.data, 1,
                       _ZERO, spare.ctypes.data, 1)  # fmt: skip
            else:  # dh_prev = dz W_hh
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, hidden, width, _ONE, d.ctypes.data, width,
                       weight_hh.ctypes.data, hidden, _ZERO, spare.ctypes.data, hidden)  # fmt: skip
            if t >= shortest:  # padded rows pass dh through
                for r in range(rows):
                    if t >= lengths[b0 + r]:
                        spare[r] = current[r]
            current, spare = spare, current
            swapped = not swapped
        if swapped:
            dh[b0:b1] = current

    @_fused
    def rnn_record(gates, weight_hh, weight_hh_t, h, h_prev, y, lengths, reverse, relu, b0, b1):
        """The recording Elman RNN forward of rows ``b0 .. b1-1``, as :func:`lstm_record`: ``gates (T, B, H)`` holds
        ``x W_ih^T + b`` and leaves with the activations; ``h (B, H)`` the state; ``h_prev`` the state before each
        step; ``y`` the output (0 on padded rows, whose state carries)."""
        steps, _, hidden = gates.shape
        rows = b1 - b0
        longest = lengths[b0:b1].max()
        hs = h[b0:b1]
        for k in range(steps):
            t = steps - 1 - k if reverse else k
            h_prev[t, b0:b1] = hs
            if t >= longest:
                y[t, b0:b1] = _ZERO
                continue
            z = gates[t, b0:b1]
            if rows == 1:
                _sgemv(_ROW_MAJOR, _NO_TRANS, hidden, hidden, _ONE, weight_hh.ctypes.data, hidden, hs.ctypes.data, 1,
                       _ONE, z.ctypes.data, 1)  # fmt: skip
            else:
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, hidden, hidden, _ONE, hs.ctypes.data, hidden,
                       weight_hh_t.ctypes.data, hidden, _ONE, z.ctypes.data, hidden)  # fmt: skip
            for b in range(b0, b1):
                out = y[t, b]
                if t >= lengths[b]:
                    out[:] = _ZERO
                    continue
                zb, hb = gates[t, b], h[b]
                if relu:
                    for j in range(hidden):
                        zb[j] = max(zb[j], _ZERO)
                else:
                    for j in range(hidden):
                        zb[j] = _tanh(zb[j])
                for j in range(hidden):
                    hb[j] = zb[j]
                    out[j] = zb[j]

    @_fused
    def rnn_backprop(gates, weight_hh, dh, dy, has_dy, dz, dh_spare, lengths, reverse, relu, b0, b1):
        """The Elman RNN backward of rows ``b0 .. b1-1`` over :func:`rnn_record`'s tape, as :func:`lstm_backprop`."""
        steps, _, hidden = gates.shape
        rows = b1 - b0
        longest, shortest = lengths[b0:b1].max(), lengths[b0:b1].min()
        current, spare = dh[b0:b1], dh_spare[b0:b1]
        swapped = False
        for k in range(steps):
            t = k if reverse else steps - 1 - k
            if t >= longest:
                dz[t, b0:b1] = _ZERO
                continue
            for r in range(rows):
                b = b0 + r
                dzb = dz[t, b]
                if t >= lengths[b]:
                    dzb[:] = _ZERO
                    continue
                a, dhb, dyb = gates[t, b], current[r], dy[t, b]
                for j in range(hidden):
                    dht = dhb[j] + dyb[j] if has_dy else dhb[j]
                    if relu:
                        dzb[j] = dht if a[j] > _ZERO else _ZERO
                    else:
                        dzb[j] = dht * (_F32(1.0) - a[j] * a[j])
            d = dz[t, b0:b1]
            if rows == 1:
                _sgemv(_ROW_MAJOR, _TRANS, hidden, hidden, _ONE, weight_hh.ctypes.data, hidden, d.ctypes.data, 1,
                       _ZERO, spare.ctypes.data, 1)  # fmt: skip
            else:
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, hidden, hidden, _ONE, d.ctypes.data, hidden,
                       weight_hh.ctypes.data, hidden, _ZERO, spare.ctypes.data, hidden)  # fmt: skip
            if t >= shortest:
                for r in range(rows):
                    if t >= lengths[b0 + r]:
                        spare[r] = current[r]
            current, spare = spare, current
            swapped = not swapped
        if swapped:
            dh[b0:b1] = current

    @_fused
    def gru_record(gates, weight_hh_t, bias_hn, h, h_prev, extra, gh, y, lengths, reverse, b0, b1):
        """The recording GRU forward (linear before reset) of rows ``b0 .. b1-1``, as :func:`lstm_record`:
        ``gates (T, B, 3H)`` holds ``x W_ih^T`` plus ``b_ir + b_hr, b_iz + b_hz, b_in`` and leaves with ``r, z, n``;
        ``extra (T, B, H)`` keeps ``h W_hn^T + b_hn``; ``gh (B, 3H)`` scratch."""
        steps, _, width = gates.shape
        hidden = width // 3
        rows = b1 - b0
        longest = lengths[b0:b1].max()
        hs, ghs = h[b0:b1], gh[b0:b1]
        for k in range(steps):
            t = steps - 1 - k if reverse else k
            h_prev[t, b0:b1] = hs
            if t >= longest:
                y[t, b0:b1] = _ZERO
                continue
            if rows == 1:
                _sgemv(_ROW_MAJOR, _TRANS, hidden, width, _ONE, weight_hh_t.ctypes.data, width, hs.ctypes.data, 1,
                       _ZERO, ghs.ctypes.data, 1)  # fmt: skip
            else:
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, width, hidden, _ONE, hs.ctypes.data, hidden,
                       weight_hh_t.ctypes.data, width, _ZERO, ghs.ctypes.data, width)  # fmt: skip
            for b in range(b0, b1):
                out = y[t, b]
                if t >= lengths[b]:
                    out[:] = _ZERO
                    continue
                zb, gb, hb, eb = gates[t, b], gh[b], h[b], extra[t, b]
                for j in range(2 * hidden):
                    zb[j] = _sigmoid(zb[j] + gb[j])
                for j in range(hidden):
                    e = gb[2 * hidden + j] + bias_hn[j]
                    eb[j] = e
                    zb[2 * hidden + j] = _tanh(zb[2 * hidden + j] + zb[j] * e)
                for j in range(hidden):
                    n = zb[2 * hidden + j]
                    h_new = n + zb[hidden + j] * (hb[j] - n)
                    hb[j] = h_new
                    out[j] = h_new

    @_fused
    def gru_backprop(gates, h_prev, extra, weight_hh, dh, dy, has_dy, dgx, dgh, dh_spare, lengths, reverse, b0, b1):
        """The GRU backward of rows ``b0 .. b1-1`` over :func:`gru_record`'s tape: ``dgx, dgh (T, B, 3H)`` the
        gradients of the input and recurrent pre-activations (0 on padded rows); ``dh`` as in :func:`lstm_backprop`."""
        steps, _, width = gates.shape
        hidden = width // 3
        rows = b1 - b0
        longest = lengths[b0:b1].max()
        current, spare = dh[b0:b1], dh_spare[b0:b1]
        swapped = False
        for k in range(steps):
            t = k if reverse else steps - 1 - k
            if t >= longest:
                dgx[t, b0:b1] = _ZERO
                dgh[t, b0:b1] = _ZERO
                continue
            for r in range(rows):
                b = b0 + r
                dxb, dhb_out, sb, cb = dgx[t, b], dgh[t, b], spare[r], current[r]
                if t >= lengths[b]:
                    dxb[:] = _ZERO
                    dhb_out[:] = _ZERO
                    sb[:] = cb  # dh passes through; the product below adds 0
                    continue
                a, hp, eb, dyb = gates[t, b], h_prev[t, b], extra[t, b], dy[t, b]
                for j in range(hidden):
                    dht = cb[j] + dyb[j] if has_dy else cb[j]
                    rg, zg, n = a[j], a[hidden + j], a[2 * hidden + j]
                    dn = dht * (_F32(1.0) - zg) * (_F32(1.0) - n * n)
                    dzv = dht * (hp[j] - n) * zg * (_F32(1.0) - zg)
                    dr = dn * eb[j] * rg * (_F32(1.0) - rg)
                    dxb[j], dxb[hidden + j], dxb[2 * hidden + j] = dr, dzv, dn
                    dhb_out[j], dhb_out[hidden + j], dhb_out[2 * hidden + j] = dr, dzv, dn * rg
                    sb[j] = dht * zg
            d = dgh[t, b0:b1]
            if rows == 1:  # dh_prev += W_hh^T dgh
                _sgemv(_ROW_MAJOR, _TRANS, width, hidden, _ONE, weight_hh.ctypes.data, hidden, d.ctypes.data, 1,
                       _ONE, spare.ctypes.data, 1)  # fmt: skip
            else:  # dh_prev += dgh W_hh
                _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, hidden, width, _ONE, d.ctypes.data, width,
                       weight_hh.ctypes.data, hidden, _ONE, spare.ctypes.data, hidden)  # fmt: skip
            current, spare = spare, current
            swapped = not swapped
        if swapped:
            dh[b0:b1] = current
