"""numba kernels of the NumPy gradient loop's backward: one fused pointwise pass per step (GEMMs stay in NumPy).

Imported only when numba is installed and ``ARRAYRNN_NUMBA`` is not ``0``; float32 and float64 alike; no fast-math.
The forward keeps NumPy's ufuncs: their SIMD ``tanh`` beat a scalar ``math.tanh`` kernel beyond B*H of about 64.
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
