// Path "cluster": the time loop in one thread block cluster.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// cluster kernels (see experimental/cluster_sources.py): the grid is ONE cluster; each block keeps its units' weight rows
// and the whole hidden state (two halves) in shared memory; the cluster barrier separates the steps.
#ifndef ARRAYRNN_CLUSTER_SYNC
#if __CUDA_ARCH__ >= 900
// every thread of every block of the cluster arrives (release) and waits (acquire): a block barrier too
__device__ __forceinline__ void arrayrnn_cluster_sync() {
  asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
}
// the address of the same shared-memory location in block `rank` of the cluster (generic in, generic out)
template <class T>
__device__ __forceinline__ T* arrayrnn_cluster_map(T* p, unsigned int rank) {
  unsigned long long mapped;
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(mapped) : "l"(p), "r"(rank));
  return (T*)mapped;
}
#define ARRAYRNN_CLUSTER_DIMS(size) __cluster_dims__(size, 1, 1)
#else
// before Hopper there are no clusters: the kernels compile (one module holds them) but trap if launched
__device__ __forceinline__ void arrayrnn_cluster_sync() { __trap(); }
template <class T>
__device__ __forceinline__ T* arrayrnn_cluster_map(T* p, unsigned int) {
  __trap();
  return p;
}
#define ARRAYRNN_CLUSTER_DIMS(size)
#endif
#define ARRAYRNN_CLUSTER_SYNC() arrayrnn_cluster_sync()
#define ARRAYRNN_CLUSTER_MAP(p, rank) arrayrnn_cluster_map(p, rank)
#endif
#ifndef ARRAYRNN_PREFETCH
// a hint: bring the line holding `p` (generic address) into L1 while the warp does other work
#define ARRAYRNN_PREFETCH(p) asm volatile("prefetch.L1 [%0];" ::"l"(p))
#endif

// Lane n of a task fetches the `gates` input-projection values its step tail will read (row b0 + n, columns
// g * hidden + j of gx_t) while the warp does the dot products: gx does not depend on the state, so its load
// latency need not sit on the step's critical path.
template <int NB>
__device__ __forceinline__ void prefetch_gates(const scalar_t* gx_t, int gates, int hidden, int j, int b0, int batch,
                                               int lane) {
  if (lane < NB && b0 + lane < batch) {
    const scalar_t* row = gx_t + (long long)(b0 + lane) * gates * hidden + j;
    for (int g = 0; g < gates; ++g) ARRAYRNN_PREFETCH(row + (long long)g * hidden);
  }
}

// As warp_dots (the same partial sums per lane: lanes take columns lane, lane + 32, ...), but the 32-lane
// reduction is a reduce-scatter (warp_reduce_scatter: the ND * NB sums padded to a power of two P) and ND indexed
// shuffles hand lane n its outputs (d, n). Shuffles per task: P - 1 + 5 - log2(P) + ND instead of warp_dots'
// 5 * ND * NB (LSTM at NB = 8: 35 instead of 160). A cluster kernel runs all of a step's tasks on a few SMs,
// where those butterflies would be most of the step's instructions. Afterwards only lane n's sums[.][n] are
// meaningful: what the step tails read (lane n finishes batch row b0 + n).
template <int ND, int NB>
__device__ __forceinline__ void scatter_dots(const scalar_t* __restrict__ weight, long long row0, long long row_step,
                                             const scalar_t* __restrict__ vec, int b0, int batch, int width,
                                             int lane, acc_t (&sums)[ND][NB]) {
  constexpr int P = scatter_width(ND * NB);
  acc_t v[P];
#pragma unroll
  for (int i = 0; i < P; ++i) v[i] = (acc_t)0;
#pragma unroll 4
  for (int k = lane; k < width; k += 32) {
    acc_t w[ND];
#pragma unroll
    for (int d = 0; d < ND; ++d) w[d] = load(weight[(row0 + d * row_step) * width + k]);
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      if (b0 + n < batch) {  // uniform across the warp
        const acc_t x = load(vec[(long long)(b0 + n) * width + k]);
#pragma unroll
        for (int d = 0; d < ND; ++d) v[d * NB + n] += w[d] * x;
      }
    }
  }
  warp_reduce_scatter<P>(v, lane);
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    const acc_t mine = scattered_sum<P>(v, d * NB + lane % NB);
#pragma unroll
    for (int m = 0; m < NB; ++m) sums[d][m] = mine;
  }
}

// The two halves of the exchanged state (2, batch, width) in shared memory, after the weight rows of
// `units_per_block` units (`gates * hidden` elements each: the same offset in every block, so that a location
// maps to the same one in the others). Forward: the hidden state (width H); backward: the gate gradients (G*H).
__device__ __forceinline__ scalar_t* cluster_halves(int gates, int units_per_block, int hidden) {
  return (scalar_t*)ARRAYRNN_DYNAMIC_SHARED() + (long long)gates * units_per_block * hidden;
}

// Copy this block's columns of `half` (its own shared memory: batch rows of `groups * hidden` columns; the block's
// columns are g * hidden + [u0, u0 + units) for each group g) into the same places of the other blocks of the
// cluster, and into `tape` (global memory, same layout) unless it is null.
__device__ __forceinline__ void share_columns(scalar_t* half, scalar_t* tape, const BlockTasks& own, int batch,
                                              int hidden, int groups) {
  if (own.units <= 0) return;
  const int per_row = groups * own.units;
  const int count = batch * per_row;
  const long long width = (long long)groups * hidden;
  for (int e = threadIdx.x; e < count; e += blockDim.x) {
    const int b = e / per_row, rest = e - b * per_row, g = rest / own.units, u = rest - g * own.units;
    const long long at = b * width + (long long)g * hidden + own.u0 + u;
    const scalar_t value = half[at];
    for (unsigned int rank = 0; rank < gridDim.x; ++rank) {
      if (rank != blockIdx.x) ARRAYRNN_CLUSTER_MAP(half, rank)[at] = value;
    }
    if (tape != nullptr) tape[at] = value;
  }
}

// The time loop of a cluster kernel: the whole state h0 into half 0, then per step `body(step, u, b0)` over
// this block's tasks, the exchange of the new columns and a cluster barrier; at the end every block writes
// its own columns of the final state to h_last.
template <int NB, class Body>
__device__ __forceinline__ void cluster_loop(int steps, int reverse, scalar_t* halves, const scalar_t* h0,
                                             scalar_t* h_last, const BlockTasks& own, int batch, int hidden,
                                             Body body) {
  const long long state = (long long)batch * hidden;
  for (long long i = threadIdx.x; i < state; i += blockDim.x) halves[i] = h0[i];
  ARRAYRNN_CLUSTER_SYNC();  // every block has started (and staged): its shared memory may now be written
  for (int k = 0; k < steps; ++k) {
    const PersistentStep step(k, steps, reverse, halves, state);
    for (long long task = own.warp; task < own.tasks; task += own.warps) {
      body(step, (int)(task % own.units), (int)(task / own.units) * NB);
    }
    __syncthreads();  // every new h of the block's units is in its own next half
    share_columns(step.h_next, nullptr, own, batch, hidden, 1);
    ARRAYRNN_CLUSTER_SYNC();  // after the last step too: nobody writes into a block that has exited
  }
  const scalar_t* last = halves + (long long)(steps & 1) * state;
  if (own.units > 0) {
    for (long long i = threadIdx.x; i < (long long)batch * own.units; i += blockDim.x) {
      const long long at = (i / own.units) * hidden + own.u0 + i % own.units;
      h_last[at] = last[at];
    }
  }
}

// The cluster barrier alone, `steps` times (benchmarks/gpu_bench.py: the per-step floor of a cluster kernel)
__device__ __forceinline__ void cluster_barrier_bench_impl(int steps) {
  for (int k = 0; k < steps; ++k) ARRAYRNN_CLUSTER_SYNC();
}

// The step processed before step t in the forward pass (-1 for the first one)
__device__ __forceinline__ int forward_before(int t, int steps, int reverse) {
  const int before = reverse ? t + 1 : t - 1;
  return before >= 0 && before < steps ? before : -1;
}

// The cluster kernels' bodies have a template flag RECORD (as the graph kernels do): the recording forward of the
// gradient path also writes the tape (LSTM: z and every step's c into c_tape; GRU: gates and hn).
template <int NB, bool RECORD>
__device__ __forceinline__ void lstm_cluster_body(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* c_first, scalar_t* c_tape, scalar_t* __restrict__ y,
    scalar_t* __restrict__ z_tape, int steps, int batch, int hidden, int reverse, int options, acc_t clip,
    int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 4, hidden, own);
  const int lane = threadIdx.x & 31;
  cluster_loop<NB>(steps, reverse, cluster_halves(4, units_per_block, hidden), h0, h_last, own, batch, hidden,
                   [&](const PersistentStep& step, int u, int b0) {
    // forward: the cell state in place (c_first); recording: c0 (c_first) then the tape's previous step
    const int before = forward_before(step.t, steps, reverse);
    const scalar_t* c_prev = RECORD && before >= 0 ? c_tape + before * state : c_first;
    scalar_t* c_out = RECORD ? c_tape + step.t * state : c_first;
    prefetch_gates<NB>(gx + (long long)step.t * 4 * state, 4, hidden, own.u0 + u, b0, batch, lane);
    acc_t sums[4][NB];
    scatter_dots<4, NB>(staged, u, own.units, step.h_prev, b0, batch, hidden, lane, sums);
    lstm_graph_tail<NB, RECORD, false>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * 4 * state, bias_ih,
                                       bias_hh, peep_i, peep_f, peep_o, lengths, step.h_prev, c_prev, step.h_next,
                                       c_out, y + (long long)step.t * state,
                                       RECORD ? z_tape + (long long)step.t * 4 * state : nullptr, batch, hidden,
                                       step.t, options, clip);
  });
}

template <int NB, bool RECORD>
__device__ __forceinline__ void gru_cluster_body(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* __restrict__ y, scalar_t* __restrict__ gates_tape,
    scalar_t* __restrict__ hn_tape, int steps, int batch, int hidden, int reverse, int options, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 3, hidden, own);
  const int lane = threadIdx.x & 31;
  cluster_loop<NB>(steps, reverse, cluster_halves(3, units_per_block, hidden), h0, h_last, own, batch, hidden,
                   [&](const PersistentStep& step, int u, int b0) {
    prefetch_gates<NB>(gx + (long long)step.t * 3 * state, 3, hidden, own.u0 + u, b0, batch, lane);
    acc_t sums[3][NB];
    scatter_dots<3, NB>(staged, u, own.units, step.h_prev, b0, batch, hidden, lane, sums);
    gru_graph_tail<NB, RECORD, false>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * 3 * state, bias_ih,
                                      bias_hh, lengths, step.h_prev, step.h_next, y + (long long)step.t * state,
                                      RECORD ? gates_tape + (long long)step.t * 3 * state : nullptr,
                                      RECORD ? hn_tape + (long long)step.t * state : nullptr, batch, hidden, step.t,
                                      options);
  });
}

template <int NB>
__device__ __forceinline__ void lstm_cluster_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* c, scalar_t* __restrict__ y, int steps, int batch, int hidden,
    int reverse, int options, acc_t clip, int units_per_block) {
  lstm_cluster_body<NB, false>(gx, weight_hh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, h0, h_last, c,
                               nullptr, y, nullptr, steps, batch, hidden, reverse, options, clip, units_per_block);
}

template <int NB>
__device__ __forceinline__ void lstm_cluster_record_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    const scalar_t* __restrict__ c0, scalar_t* __restrict__ h_last, scalar_t* cs, scalar_t* __restrict__ y,
    scalar_t* __restrict__ z, int steps, int batch, int hidden, int reverse, int options, acc_t clip,
    int units_per_block) {
  lstm_cluster_body<NB, true>(gx, weight_hh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, h0, h_last,
                              (scalar_t*)c0, cs, y, z, steps, batch, hidden, reverse, options, clip,
                              units_per_block);  // (c_first is only read when recording)
}

template <int NB>
__device__ __forceinline__ void gru_cluster_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* __restrict__ y, int steps, int batch, int hidden, int reverse,
    int options, int units_per_block) {
  gru_cluster_body<NB, false>(gx, weight_hh, bias_ih, bias_hh, lengths, h0, h_last, y, nullptr, nullptr, steps,
                              batch, hidden, reverse, options, units_per_block);
}

template <int NB>
__device__ __forceinline__ void gru_cluster_record_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* __restrict__ y, scalar_t* __restrict__ gates,
    scalar_t* __restrict__ hn, int steps, int batch, int hidden, int reverse, int options, int units_per_block) {
  gru_cluster_body<NB, true>(gx, weight_hh, bias_ih, bias_hh, lengths, h0, h_last, y, gates, hn, steps, batch,
                             hidden, reverse, options, units_per_block);
}

template <int NB>
__device__ __forceinline__ void rnn_cluster_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, const scalar_t* __restrict__ h0,
    scalar_t* __restrict__ h_last, scalar_t* __restrict__ y, int steps, int batch, int hidden, int reverse,
    int options, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 1, hidden, own);
  const int lane = threadIdx.x & 31;
  cluster_loop<NB>(steps, reverse, cluster_halves(1, units_per_block, hidden), h0, h_last, own, batch, hidden,
                   [&](const PersistentStep& step, int u, int b0) {
    prefetch_gates<NB>(gx + (long long)step.t * state, 1, hidden, own.u0 + u, b0, batch, lane);
    acc_t sums[1][NB];
    scatter_dots<1, NB>(staged, u, 0, step.h_prev, b0, batch, hidden, lane, sums);
    rnn_graph_tail<NB, false>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * state, bias_ih, bias_hh,
                              lengths, step.h_prev, step.h_next, y + (long long)step.t * state, batch, hidden,
                              step.t, options);
  });
}
