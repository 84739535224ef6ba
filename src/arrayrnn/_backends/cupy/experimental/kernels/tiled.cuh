// Path "tiled": block-tiled graph step kernels (TILED_* are #defined from Python).
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// "tiled" graph step kernels (experimental/tiled.py): the graph step kernels' parameters and step tails, but one block
// computes a whole tile of TILED_ROWS batch rows x TILED_UNITS hidden units (every gate of each) as a small
// GEMM through shared memory: each weight row and state row a block loads serves the whole tile, where the
// warp-per-unit kernels load each weight row once per batch tile of at most 8 rows and each state row once per
// unit. Threads: TILED_KGROUPS k-groups x (TILED_ROWS / TILED_ROWS_PER_THREAD) row groups x TILED_UNITS units; a
// thread accumulates TILED_ROWS_PER_THREAD rows x G gates of one unit over every TILED_KGROUPS-th column of each
// chunk of TILED_CHUNK columns; the k-groups' partial sums meet in shared memory, and k-group 0 finishes its
// (row, unit) pairs with the graph kernels' tails. The grid is 1-D: blockIdx.x = row tile * unit tiles + unit tile.
// The TILED_* constants are defined from Python (experimental/sources.py: TILED, TILED_CHUNK), which also sizes the launch.

// This thread's place in the tile: its unit, row group and k-group.
struct TiledThread {
  int unit, rows, kgroup;
  __device__ TiledThread() {
    unit = threadIdx.x % TILED_UNITS;
    rows = (threadIdx.x / TILED_UNITS) % (TILED_ROWS / TILED_ROWS_PER_THREAD);
    kgroup = threadIdx.x / (TILED_UNITS * (TILED_ROWS / TILED_ROWS_PER_THREAD));
  }
};

// sums[g][r] = weight[g * hidden + j0 + me.unit, :] . h[b0 + me.rows * TILED_ROWS_PER_THREAD + r, :], complete in
// k-group 0's threads (rows or units past the end count as zeros). The whole block must call this.
template <int G>
__device__ __forceinline__ void tiled_dots(const scalar_t* __restrict__ weight, const scalar_t* __restrict__ h,
                                           int batch, int hidden, int b0, int j0, const TiledThread& me,
                                           acc_t (&sums)[G][TILED_ROWS_PER_THREAD]) {
  constexpr int PITCH = TILED_CHUNK + 1;
  acc_t* h_tile = (acc_t*)ARRAYRNN_DYNAMIC_SHARED();   // [TILED_ROWS][PITCH]
  acc_t* w_tile = h_tile + TILED_ROWS * PITCH;         // [G * TILED_UNITS][PITCH]: row g * TILED_UNITS + u
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r) sums[g][r] = (acc_t)0;
  }
  for (int k0 = 0; k0 < hidden; k0 += TILED_CHUNK) {
    __syncthreads();  // the previous chunk is consumed
    for (int e = threadIdx.x; e < TILED_ROWS * TILED_CHUNK; e += blockDim.x) {
      const int r = e / TILED_CHUNK, k = e % TILED_CHUNK;
      const bool inside = b0 + r < batch && k0 + k < hidden;
      h_tile[r * PITCH + k] = inside ? load(h[(long long)(b0 + r) * hidden + k0 + k]) : (acc_t)0;
    }
    for (int e = threadIdx.x; e < G * TILED_UNITS * TILED_CHUNK; e += blockDim.x) {
      const int row = e / TILED_CHUNK, k = e % TILED_CHUNK;
      const int g = row / TILED_UNITS, u = row % TILED_UNITS;
      const bool inside = j0 + u < hidden && k0 + k < hidden;
      w_tile[row * PITCH + k] = inside ? load(weight[((long long)g * hidden + j0 + u) * hidden + k0 + k]) : (acc_t)0;
    }
    __syncthreads();
    for (int k = me.kgroup; k < TILED_CHUNK; k += TILED_KGROUPS) {
      acc_t state[TILED_ROWS_PER_THREAD];
#pragma unroll
      for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r) {
        state[r] = h_tile[(me.rows * TILED_ROWS_PER_THREAD + r) * PITCH + k];
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const acc_t w = w_tile[(g * TILED_UNITS + me.unit) * PITCH + k];
#pragma unroll
        for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r) sums[g][r] += w * state[r];
      }
    }
  }
  // the k-groups' partial sums, added by k-group 0 (the chunk buffers are free again after the barrier)
  __syncthreads();
  acc_t* partial = (acc_t*)ARRAYRNN_DYNAMIC_SHARED();
  constexpr int PER_THREAD = G * TILED_ROWS_PER_THREAD;
  if (me.kgroup != 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r)
        partial[(long long)threadIdx.x * PER_THREAD + g * TILED_ROWS_PER_THREAD + r] = sums[g][r];
    }
  }
  __syncthreads();
  if (me.kgroup == 0) {
    constexpr int GROUP = TILED_UNITS * (TILED_ROWS / TILED_ROWS_PER_THREAD);
    for (int other = 1; other < TILED_KGROUPS; ++other) {
      const long long from = (long long)(threadIdx.x + other * GROUP) * PER_THREAD;
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r) sums[g][r] += partial[from + g * TILED_ROWS_PER_THREAD + r];
      }
    }
  }
}

// (row tile, unit tile) of this block: b0 and j0
__device__ __forceinline__ void tiled_block(int hidden, int* b0, int* j0) {
  const int unit_tiles = (hidden + TILED_UNITS - 1) / TILED_UNITS;
  *b0 = (int)(blockIdx.x / unit_tiles) * TILED_ROWS;
  *j0 = (int)(blockIdx.x % unit_tiles) * TILED_UNITS;
}

// A tiled step: the block's dots, then `tail(sums, j, b)` for each of k-group 0's (row b, unit j) pairs, with that
// pair's G sums in the shape the graph tails take (NB = 1: lane 0 finishes row b).
template <int G, class Tail>
__device__ __forceinline__ void tiled_step(const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ h_prev,
                                           int batch, int hidden, Tail tail) {
  int b0, j0;
  tiled_block(hidden, &b0, &j0);
  const TiledThread me;
  acc_t sums[G][TILED_ROWS_PER_THREAD];
  tiled_dots<G>(weight_hh, h_prev, batch, hidden, b0, j0, me, sums);
  const int j = j0 + me.unit;
  if (me.kgroup != 0 || j >= hidden) return;
#pragma unroll
  for (int r = 0; r < TILED_ROWS_PER_THREAD; ++r) {
    acc_t one[G][1];
#pragma unroll
    for (int g = 0; g < G; ++g) one[g][0] = sums[g][r];
    tail(one, j, b0 + me.rows * TILED_ROWS_PER_THREAD + r);
  }
}

__device__ __forceinline__ void lstm_tiled_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ h_next, scalar_t* __restrict__ c, scalar_t* __restrict__ y, int batch, int hidden, int t,
    int options, acc_t clip) {
  tiled_step<4>(weight_hh, h_prev, batch, hidden, [&](const acc_t (&one)[4][1], int j, int b) {
    lstm_graph_tail<1, false, false>(one, 0, j, b, gx, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, h_prev, c,
                                     h_next, c, y, nullptr, batch, hidden, t, options, clip);
  });
}

__device__ __forceinline__ void gru_tiled_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ h_next, scalar_t* __restrict__ y, int batch, int hidden, int t, int options) {
  tiled_step<3>(weight_hh, h_prev, batch, hidden, [&](const acc_t (&one)[3][1], int j, int b) {
    gru_graph_tail<1, false, false>(one, 0, j, b, gx, bias_ih, bias_hh, lengths, h_prev, h_next, y, nullptr,
                                    nullptr, batch, hidden, t, options);
  });
}

__device__ __forceinline__ void rnn_tiled_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ h_next, scalar_t* __restrict__ y, int batch, int hidden, int t, int options) {
  tiled_step<1>(weight_hh, h_prev, batch, hidden, [&](const acc_t (&one)[1][1], int j, int b) {
    rnn_graph_tail<1, false>(one, 0, j, b, gx, bias_ih, bias_hh, lengths, h_prev, h_next, y, batch, hidden, t,
                             options);
  });
}
