// Path "graph": warp-per-unit step kernels (recurrent mat-vec and gates in one launch).
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// graph steps: recurrent mat-vec and gates in one launch; one warp per (hidden unit j, NB batch rows)

__device__ __forceinline__ long long launch_warp() {
  return ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
}

// A state element written by another block during this launch (COHERENT, the persistent kernels) is read with a
// volatile load: it bypasses the non-coherent read-only cache and L1, which may hold an earlier step's value.
template <bool COHERENT>
__device__ __forceinline__ acc_t load_state(const scalar_t* p, long long i) {
  if (COHERENT) return load(((const volatile scalar_t*)p)[i]);
  return load(p[i]);
}

// Warp-wide dot products: sums[d][n] = weight[row0 + d*row_step, :] . vec[b0 + n, :] over `width`
// columns. Lanes take columns lane, lane+32, ... (each weight row is contiguous: coalesced loads, each
// weight reused for NB state rows), then a butterfly reduction leaves every sum in every lane.
// The whole warp must call this (full shuffle mask): callers exit only warp-uniformly.
template <int ND, int NB, bool COHERENT = false>
__device__ __forceinline__ void warp_dots(const scalar_t* __restrict__ weight, long long row0, long long row_step,
                                          const scalar_t* __restrict__ vec, int b0, int batch, int width, int lane,
                                          acc_t (&sums)[ND][NB]) {
#pragma unroll
  for (int d = 0; d < ND; ++d) {
#pragma unroll
    for (int n = 0; n < NB; ++n) sums[d][n] = (acc_t)0;
  }
  // unrolled so that several iterations' loads are in flight at once (the step is latency-bound)
#pragma unroll 4
  for (int k = lane; k < width; k += 32) {
    acc_t w[ND];
#pragma unroll
    for (int d = 0; d < ND; ++d) w[d] = load(weight[(row0 + d * row_step) * width + k]);
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      if (b0 + n < batch) {  // uniform across the warp
        const acc_t v = load_state<COHERENT>(vec, (long long)(b0 + n) * width + k);
#pragma unroll
        for (int d = 0; d < ND; ++d) sums[d][n] += w[d] * v;
      }
    }
  }
#pragma unroll
  for (int d = 0; d < ND; ++d) {
#pragma unroll
    for (int n = 0; n < NB; ++n) {
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sums[d][n] += __shfl_xor_sync(0xffffffffu, sums[d][n], offset);
    }
  }
}

// Reduce-scatter over the warp (the cluster kernels' reduction, see scatter_dots): each lane holds P partial sums
// (P a power of two, at most 32); the first log2(P) butterfly steps halve the values, each lane sending the half
// it does not keep, the remaining steps sum the one value left. Then lane L holds in v[0] the warp's total of
// value o = L >> (5 - log2 P) (scattered_sum fetches it): P - 1 + 5 - log2(P) shuffles for P totals, where a
// butterfly per value (warp_dots) takes 5 * P.
__host__ __device__ constexpr int scatter_width(int values) {
  return values <= 1 ? 1 : values <= 2 ? 2 : values <= 4 ? 4 : values <= 8 ? 8 : values <= 16 ? 16 : 32;
}

__host__ __device__ constexpr int log2_of(int power) { return power <= 1 ? 0 : 1 + log2_of(power / 2); }

template <int P>
__device__ __forceinline__ void warp_reduce_scatter(acc_t (&v)[P], int lane) {
  constexpr int HALVINGS = log2_of(P);
#pragma unroll
  for (int step = 0; step < HALVINGS; ++step) {
    const int offset = 16 >> step;
    const int half = P >> (step + 1);
    const bool upper = (lane & offset) != 0;  // keeps the upper half of the values, sends the lower
    // a constant trip count, so that every index is a constant once unrolled (v stays in registers)
#pragma unroll
    for (int i = 0; i < P / 2; ++i) {
      if (i < half) {
        const acc_t send = upper ? v[i] : v[i + half];
        const acc_t keep = upper ? v[i + half] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
      }
    }
  }
#pragma unroll
  for (int offset = 16 >> HALVINGS; offset > 0; offset >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], offset);
}

// After warp_reduce_scatter: the warp's total of value `o` (every lane may ask for a different o). The whole warp
// must call this.
template <int P>
__device__ __forceinline__ acc_t scattered_sum(const acc_t (&v)[P], int o) {
  return __shfl_sync(0xffffffffu, v[0], o << (5 - log2_of(P)));
}

// Which (j, b0) task `warp` is; false (for the whole warp at once) when there is no such task. A graph kernel's
// task is its warp's index in the launch; a persistent kernel's warps take several tasks per step.
template <int NB>
__device__ __forceinline__ bool warp_task(int batch, int hidden, int* lane, int* j, int* b0,
                                          long long warp = launch_warp()) {
  *lane = threadIdx.x & 31;
  const long long tiles = (batch + NB - 1) / NB;
  if (warp >= tiles * hidden) return false;
  *j = (int)(warp % hidden);
  *b0 = (int)(warp / hidden) * NB;
  return true;
}

// h_next = y = (1 - u) n + u h_prev on a valid step; else h_next = h_prev and y = 0
template <bool COHERENT>
__device__ __forceinline__ void graph_gru_output(bool valid, acc_t update, acc_t candidate,
                                                 const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ h_next,
                                                 scalar_t* __restrict__ y, long long at) {
  if (valid) {
    const scalar_t h_new = store(gru_combine(update, candidate, load_state<COHERENT>(h_prev, at)));
    h_next[at] = h_new;
    y[at] = h_new;
  } else {
    h_next[at] = store(load_state<COHERENT>(h_prev, at));
    y[at] = store((acc_t)0);
  }
}

// RECORD (lstm_graph_record) as in lstm_fused_step_impl: z_out, and c_out = c_prev on a padded step; the
// forward step passes c as both c_prev and c_out and nullptr for z_out.
// The per-lane part of an LSTM graph step once the warp has its dots: lane n finishes batch row b0 + n of unit j.
template <int NB, bool RECORD, bool COHERENT>
__device__ __forceinline__ void lstm_graph_tail(
    const acc_t (&sums)[4][NB], int lane, int j, int b0, const scalar_t* __restrict__ gx,
    const scalar_t* __restrict__ bias_ih, const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i,
    const scalar_t* __restrict__ peep_f, const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ h_prev, const scalar_t* c_prev, scalar_t* __restrict__ h_next, scalar_t* c_out,
    scalar_t* __restrict__ y, scalar_t* __restrict__ z_out, int batch, int hidden, int t, int options, acc_t clip) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long row = (long long)b * 4 * hidden;
      const long long at = (long long)b * hidden + j;
      acc_t z[4];
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        const long long col = (long long)g * hidden + j;
        z[g] = preactivation(load(gx[row + col]), sums[g][n], bias_ih, bias_hh, options, col);
      }
      acc_t h_new, c_new;
      lstm_pointwise(z, load(c_prev[at]), peep_i, peep_f, peep_o, j, options, clip, &h_new, &c_new);
      if (RECORD) {
#pragma unroll
        for (int g = 0; g < 4; ++g) z_out[row + (long long)g * hidden + j] = store(z[g]);
      }
      if (step_is_valid(lengths, options, b, t)) {
        c_out[at] = store(c_new);
        h_next[at] = store(h_new);
        y[at] = store(h_new);
      } else {
        if (RECORD) c_out[at] = c_prev[at];
        h_next[at] = store(load_state<COHERENT>(h_prev, at));
        y[at] = store((acc_t)0);
      }
    }
  }
}

template <int NB, bool RECORD, bool COHERENT = false>
__device__ __forceinline__ void lstm_graph_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    const scalar_t* c_prev, scalar_t* __restrict__ h_next, scalar_t* c_out, scalar_t* __restrict__ y,
    scalar_t* __restrict__ z_out, int batch, int hidden, int t, int options, acc_t clip,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t sums[4][NB];
  warp_dots<4, NB, COHERENT>(weight_hh, j, hidden, h_prev, b0, batch, hidden, lane, sums);
  lstm_graph_tail<NB, RECORD, COHERENT>(sums, lane, j, b0, gx, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths,
                                        h_prev, c_prev, h_next, c_out, y, z_out, batch, hidden, t, options, clip);
}

// GRU, linear_before_reset=True: the three dots of rows j, H+j, 2H+j with h_prev in one launch.
// RECORD (gru_graph_record) also writes r, u, n to gates_out and hn = h W_hn^T + b_hn to hn_out.
template <int NB, bool RECORD, bool COHERENT>
__device__ __forceinline__ void gru_graph_tail(const acc_t (&sums)[3][NB], int lane, int j, int b0,
                                               const scalar_t* __restrict__ gx, const scalar_t* __restrict__ bias_ih,
                                               const scalar_t* __restrict__ bias_hh,
                                               const long long* __restrict__ lengths,
                                               const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ h_next,
                                               scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out,
                                               scalar_t* __restrict__ hn_out, int batch, int hidden, int t,
                                               int options) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long row = (long long)b * 3 * hidden;
      const long long at = (long long)b * hidden + j;
      const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
      const acc_t reset =
          sigmoid_acc(preactivation(load(gx[row + r_col]), sums[0][n], bias_ih, bias_hh, options, r_col));
      const acc_t update =
          sigmoid_acc(preactivation(load(gx[row + z_col]), sums[1][n], bias_ih, bias_hh, options, z_col));
      const acc_t input_n = load(gx[row + n_col]) + bias_at(bias_ih, OPT_BIAS_IH, options, n_col);
      const acc_t hidden_n = sums[2][n] + bias_at(bias_hh, OPT_BIAS_HH, options, n_col);
      const acc_t candidate = acc_tanh(input_n + reset * hidden_n);
      if (RECORD) {
        gates_out[row + r_col] = store(reset);
        gates_out[row + z_col] = store(update);
        gates_out[row + n_col] = store(candidate);
        hn_out[at] = store(hidden_n);
      }
      graph_gru_output<COHERENT>(step_is_valid(lengths, options, b, t), update, candidate, h_prev, h_next, y, at);
    }
  }
}

template <int NB, bool RECORD, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ h_next, scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out,
    scalar_t* __restrict__ hn_out, int batch, int hidden, int t, int options, long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t sums[3][NB];
  warp_dots<3, NB, COHERENT>(weight_hh, j, hidden, h_prev, b0, batch, hidden, lane, sums);
  gru_graph_tail<NB, RECORD, COHERENT>(sums, lane, j, b0, gx, bias_ih, bias_hh, lengths, h_prev, h_next, y, gates_out,
                                       hn_out, batch, hidden, t, options);
}

// GRU, linear_before_reset=False, launch 1 of 2: rh = r * h_prev (every rh before any use: next launch).
// RECORD (gru_graph_record_reset) also writes r to gates_out.
template <int NB, bool RECORD, bool COHERENT>
__device__ __forceinline__ void gru_graph_reset_tail(const acc_t (&sums)[1][NB], int lane, int j, int b0,
                                                     const scalar_t* __restrict__ gx,
                                                     const scalar_t* __restrict__ bias_ih,
                                                     const scalar_t* __restrict__ bias_hh,
                                                     const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ rh,
                                                     scalar_t* __restrict__ gates_out, int batch, int hidden,
                                                     int options) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j, row = (long long)b * 3 * hidden;
      const acc_t reset = sigmoid_acc(preactivation(load(gx[row + j]), sums[0][n], bias_ih, bias_hh, options, j));
      if (RECORD) gates_out[row + j] = store(reset);
      rh[at] = store(reset * load_state<COHERENT>(h_prev, at));
    }
  }
}

template <int NB, bool RECORD, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_reset_impl(const scalar_t* __restrict__ gx,
                                                     const scalar_t* __restrict__ weight_hh,
                                                     const scalar_t* __restrict__ bias_ih,
                                                     const scalar_t* __restrict__ bias_hh,
                                                     const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ rh,
                                                     scalar_t* __restrict__ gates_out, int batch, int hidden,
                                                     int options, long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t sums[1][NB];
  warp_dots<1, NB, COHERENT>(weight_hh, j, hidden, h_prev, b0, batch, hidden, lane, sums);
  gru_graph_reset_tail<NB, RECORD, COHERENT>(sums, lane, j, b0, gx, bias_ih, bias_hh, h_prev, rh, gates_out, batch,
                                             hidden, options);
}

// GRU, linear_before_reset=False, launch 2 of 2: z from h_prev (row H+j), n from rh (row 2H+j).
// RECORD (gru_graph_record_finish) also writes u and n to gates_out.
template <int NB, bool RECORD, bool COHERENT>
__device__ __forceinline__ void gru_graph_finish_tail(
    const acc_t (&update_sums)[1][NB], const acc_t (&candidate_sums)[1][NB], int lane, int j, int b0,
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ bias_ih, const scalar_t* __restrict__ bias_hh,
    const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ h_next,
    scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, int batch, int hidden, int t, int options) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long row = (long long)b * 3 * hidden;
      const long long at = (long long)b * hidden + j;
      const long long z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
      const acc_t update =
          sigmoid_acc(preactivation(load(gx[row + z_col]), update_sums[0][n], bias_ih, bias_hh, options, z_col));
      const acc_t candidate =
          acc_tanh(preactivation(load(gx[row + n_col]), candidate_sums[0][n], bias_ih, bias_hh, options, n_col));
      if (RECORD) {
        gates_out[row + z_col] = store(update);
        gates_out[row + n_col] = store(candidate);
      }
      graph_gru_output<COHERENT>(step_is_valid(lengths, options, b, t), update, candidate, h_prev, h_next, y, at);
    }
  }
}

template <int NB, bool RECORD, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_finish_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    const scalar_t* __restrict__ rh, scalar_t* __restrict__ h_next, scalar_t* __restrict__ y,
    scalar_t* __restrict__ gates_out, int batch, int hidden, int t, int options, long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t update_sums[1][NB];
  acc_t candidate_sums[1][NB];
  warp_dots<1, NB, COHERENT>(weight_hh, (long long)hidden + j, 0, h_prev, b0, batch, hidden, lane, update_sums);
  warp_dots<1, NB, COHERENT>(weight_hh, 2LL * hidden + j, 0, rh, b0, batch, hidden, lane, candidate_sums);
  gru_graph_finish_tail<NB, RECORD, COHERENT>(update_sums, candidate_sums, lane, j, b0, gx, bias_ih, bias_hh, lengths,
                                              h_prev, h_next, y, gates_out, batch, hidden, t, options);
}

template <int NB, bool COHERENT>
__device__ __forceinline__ void rnn_graph_tail(const acc_t (&sums)[1][NB], int lane, int j, int b0,
                                               const scalar_t* __restrict__ gx, const scalar_t* __restrict__ bias_ih,
                                               const scalar_t* __restrict__ bias_hh,
                                               const long long* __restrict__ lengths,
                                               const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ h_next,
                                               scalar_t* __restrict__ y, int batch, int hidden, int t, int options) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t z = preactivation(load(gx[at]), sums[0][n], bias_ih, bias_hh, options, j);
      if (step_is_valid(lengths, options, b, t)) {
        const scalar_t h_new = store(rnn_activation(z, options));
        h_next[at] = h_new;
        y[at] = h_new;
      } else {
        h_next[at] = store(load_state<COHERENT>(h_prev, at));
        y[at] = store((acc_t)0);
      }
    }
  }
}

template <int NB, bool COHERENT = false>
__device__ __forceinline__ void rnn_graph_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ h_next, scalar_t* __restrict__ y, int batch, int hidden, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t sums[1][NB];
  warp_dots<1, NB, COHERENT>(weight_hh, j, hidden, h_prev, b0, batch, hidden, lane, sums);
  rnn_graph_tail<NB, COHERENT>(sums, lane, j, b0, gx, bias_ih, bias_hh, lengths, h_prev, h_next, y, batch, hidden, t,
                               options);
}
