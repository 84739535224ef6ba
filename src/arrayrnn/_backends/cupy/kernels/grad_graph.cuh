// Gradient of path "graph": warp-per-unit backward step kernels.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// gradient path, graph kernels: one warp per (hidden unit j, NB batch rows)

// sums[n] = weight[row, :width] . vec[(b0 + n) * vec_stride + (0 .. width)]; every lane gets every sum, or with
// SCATTER (the cluster kernels: warp_reduce_scatter, 5 * NB shuffles down to about NB + 5) only lane n gets
// sums[n], the one the step bodies read. The whole warp must call this (full shuffle mask).
template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void warp_row_dots(const scalar_t* __restrict__ weight, long long row,
                                              const scalar_t* __restrict__ vec, long long vec_stride, int b0,
                                              int batch, int width, int lane, acc_t (&sums)[NB]) {
  constexpr int P = SCATTER ? scatter_width(NB) : NB;
  acc_t v[P];
#pragma unroll
  for (int n = 0; n < P; ++n) v[n] = (acc_t)0;
#pragma unroll 4
  for (int k = lane; k < width; k += 32) {
    const acc_t w = load(weight[row * width + k]);
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      if (b0 + n < batch) v[n] += w * load_state<COHERENT>(vec, (long long)(b0 + n) * vec_stride + k);  // uniform
    }
  }
  if constexpr (SCATTER) {
    warp_reduce_scatter<P>(v, lane);
    const acc_t mine = scattered_sum<P>(v, lane % NB);
#pragma unroll
    for (int n = 0; n < NB; ++n) sums[n] = mine;
  } else {
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      sums[n] = v[n];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sums[n] += __shfl_xor_sync(0xffffffffu, sums[n], offset);
    }
  }
}

// incoming_dh with this warp's dot in place of cuBLAS's mm
__device__ __forceinline__ acc_t graph_incoming(acc_t dot, const scalar_t* __restrict__ part,
                                                const long long* __restrict__ lengths, scalar_t* __restrict__ carry,
                                                int options, int b, long long at, int s) {
  if (s >= 0 && step_is_valid(lengths, options, b, s)) {
    acc_t dh = dot;
    if (options & OPT_PART) dh += load(part[at]);
    const scalar_t rounded = store(dh);
    carry[at] = rounded;
    return load(rounded);
  }
  return load(carry[at]);
}

// ---- backward steps: d_prev is the previous backward step's gate gradients (B, G*H) (unread when s < 0)

// dh_in + dy of element (b, at), batch row n of this warp, entering graph backward step t: graph_incoming of the
// warp's dots[n] (not read when s < 0: unset then), part added per part_options, then dy per options & OPT_DY
template <int NB>
__device__ __forceinline__ acc_t graph_step_dh(const acc_t (&dots)[NB], int n, const scalar_t* __restrict__ part,
                                               const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
                                               scalar_t* __restrict__ carry, int part_options, int options, int b,
                                               long long at, int s) {
  const acc_t dot = s >= 0 ? dots[n] : (acc_t)0;
  return with_output_cotangent(graph_incoming(dot, part, lengths, carry, part_options, b, at, s), dy, options, at);
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void rnn_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dz, int batch, int hidden, int s, int t, int options, long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, hidden, b0, batch, hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, d_prev, lengths, dy, carry, options & ~OPT_PART, options, b, at, s);
      acc_t d_pre = (acc_t)0;
      if (step_is_valid(lengths, options, b, t)) {
        const acc_t h_new = load(y[at]);
        d_pre = (options & OPT_RELU) ? (h_new > (acc_t)0 ? dh : (acc_t)0) : dh * ((acc_t)1 - h_new * h_new);
      }
      dz[at] = store(d_pre);
    }
  }
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void lstm_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_new,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, scalar_t* __restrict__ carry, scalar_t* __restrict__ dc,
    scalar_t* __restrict__ dz, int batch, int hidden, int s, int t, int options, acc_t clip,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) {
    warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, 4LL * hidden, b0, batch, 4 * hidden, lane, dots);
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dm = graph_step_dh<NB>(dots, n, d_prev, lengths, dy, carry, options & ~OPT_PART, options, b, at, s);
      lstm_grad_pointwise(dm, step_is_valid(lengths, options, b, t), z, c_new, c_prev, peep_i, peep_f, peep_o, dc,
                          dz, dz, b, j, at, hidden, options & ~OPT_PROJECT, clip);
    }
  }
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void gru_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn,
    const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ dgh, int batch, int hidden, int s, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) {
    warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, 3LL * hidden, b0, batch, 3 * hidden, lane, dots);
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, part, lengths, dy, carry, options | OPT_PART, options, b, at, s);
      gru_grad_pointwise(dh, step_is_valid(lengths, options, b, t), gates, hn, h_prev, part, dgx, dgh, b, j, at,
                         hidden);
    }
  }
}

// GRU, linear_before_reset=False, launch 1 of 2: dh_in from [dr, du]_s W_hh[:2H] (d_prev = dgx_s, row stride 3H)
template <int NB, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_grad_candidate_impl(
    const scalar_t* __restrict__ weight_rz_t, const scalar_t* __restrict__ d_prev,
    const long long* __restrict__ lengths, const scalar_t* __restrict__ dy, const scalar_t* __restrict__ gates,
    const scalar_t* __restrict__ h_prev, const scalar_t* __restrict__ part, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dh_out, scalar_t* __restrict__ dgx, int batch, int hidden, int s, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) warp_row_dots<NB, COHERENT>(weight_rz_t, j, d_prev, 3LL * hidden, b0, batch, 2 * hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, part, lengths, dy, carry, options | OPT_PART, options, b, at, s);
      gru_grad_candidate_pointwise(dh, step_is_valid(lengths, options, b, t), gates, h_prev, dh_out, dgx, b, j, at,
                                   hidden);
    }
  }
}

// launch 2 of 2: d_reset_h = dn W_hn from this step's n block of dgx (columns 2H.., written by launch 1);
// writes only the r block of dgx
template <int NB, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_grad_reset_impl(
    const scalar_t* __restrict__ weight_n_t, const long long* __restrict__ lengths, const scalar_t* __restrict__ dh,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ rh_out, int batch, int hidden, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  const scalar_t* dn = dgx + 2LL * hidden;
  warp_row_dots<NB, COHERENT>(weight_n_t, j, dn, 3LL * hidden, b0, batch, hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      gru_grad_reset_pointwise(dots[n], step_is_valid(lengths, options, b, t), dh, gates, h_prev, part, dgx, rh_out,
                               b, j, (long long)b * hidden + j, hidden);
    }
  }
}

// after the last backward step: carry = (step s valid) ? d_prev_s W (+ part) : carry
template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void graph_grad_finish_impl(const scalar_t* __restrict__ weight_t,
                                                       const scalar_t* __restrict__ d_prev,
                                                       const scalar_t* __restrict__ part,
                                                       const long long* __restrict__ lengths,
                                                       scalar_t* __restrict__ carry, int batch, int hidden, int width,
                                                       int stride, int s, int options,
                                                       long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, stride, b0, batch, width, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) graph_incoming(dots[n], part, lengths, carry, options, b, (long long)b * hidden + j, s);
  }
}
