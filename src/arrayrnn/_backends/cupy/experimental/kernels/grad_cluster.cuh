// Gradient of path "cluster": the backward loop in one thread block cluster.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// cluster gradient kernels (see experimental/grad_cluster_sources.py)

// Rows [u0, u0 + units) of weight_t (each `width` wide, contiguous) into shared memory. Returns the address
// that row j of the whole matrix would have (staged - u0 * width), so that the graph bodies, which index the
// weights by unit, read the staged rows of the block's units (the only rows they read).
__device__ __forceinline__ const scalar_t* stage_transposed_rows(const scalar_t* __restrict__ weight_t, int width,
                                                                 const BlockTasks& own) {
  scalar_t* staged = (scalar_t*)ARRAYRNN_DYNAMIC_SHARED();
  const long long total = (long long)own.units * width;
  const scalar_t* rows = weight_t + (long long)own.u0 * width;
  for (long long i = threadIdx.x; i < total; i += blockDim.x) staged[i] = rows[i];
  __syncthreads();
  return staged - (long long)own.u0 * width;
}

// The task's index in the graph kernels' numbering (warp_task): unit u0 + u, batch rows b0 ..
template <int NB>
__device__ __forceinline__ long long cluster_task(const BlockTasks& own, int hidden, int u, int b0) {
  return (long long)(b0 / NB) * hidden + own.u0 + u;
}

// The backward time loop: the forward's steps in reverse (s: the step processed just before, -1 for the first),
// `body(t, s, d_prev, d_next, u, b0)` over the block's tasks with d_prev the previous backward step's gate
// gradients and d_next the half the tasks write this step's into (both in the block's shared memory, (B,
// gates * H)); then the block copies its columns of d_next into the other blocks' d_next and into the tape
// `grads` (T, B, gates * H) in global memory (the weight gradients' GEMMs read it), and a cluster barrier.
// After the last step `finish(s, d_prev, u, b0)` over the tasks (no exchange after it: nothing more is read
// from another block).
template <int NB, class Body, class Finish>
__device__ __forceinline__ void cluster_backward_loop(int steps, int reverse, int gates, scalar_t* halves,
                                                      scalar_t* grads, const BlockTasks& own, int batch,
                                                      int hidden, Body body, Finish finish) {
  const long long half = (long long)batch * gates * hidden;
  ARRAYRNN_CLUSTER_SYNC();  // every block has started and staged its rows
  int s = -1;
  for (int k = 0; k < steps; ++k) {
    const int t = reverse ? k : steps - 1 - k;
    const scalar_t* d_prev = halves + (long long)(k & 1) * half;  // unread at k = 0 (s < 0)
    scalar_t* d_next = halves + (long long)((k + 1) & 1) * half;
    for (long long task = own.warp; task < own.tasks; task += own.warps) {
      body(t, s, d_prev, d_next, (int)(task % own.units), (int)(task / own.units) * NB);
    }
    __syncthreads();  // the block's gradients of step t are in its d_next
    share_columns(d_next, grads + t * half, own, batch, hidden, gates);
    ARRAYRNN_CLUSTER_SYNC();
    s = t;
  }
  if (steps > 0) {
    const scalar_t* d_prev = halves + (long long)(steps & 1) * half;
    for (long long task = own.warp; task < own.tasks; task += own.warps) {
      finish(s, d_prev, (int)(task % own.units), (int)(task / own.units) * NB);
    }
  }
}

template <int NB>
__device__ __forceinline__ void rnn_cluster_grad_impl(
    const scalar_t* __restrict__ weight_t, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ y, scalar_t* carry, scalar_t* dz, int steps, int batch, int hidden, int reverse,
    int options, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* rows = stage_transposed_rows(weight_t, hidden, own);
  const bool with_dy = (options & OPT_DY) != 0;
  cluster_backward_loop<NB>(steps, reverse, 1, cluster_halves(1, units_per_block, hidden), dz, own, batch, hidden,
      [&](int t, int s, const scalar_t* d_prev, scalar_t* d_next, int u, int b0) {
        rnn_graph_grad_impl<NB, false, true>(rows, d_prev, lengths, with_dy ? dy + t * state : dy, y + t * state,
                                             carry, d_next, batch, hidden, s, t, options,
                                             cluster_task<NB>(own, hidden, u, b0));
      },
      [&](int s, const scalar_t* d_prev, int u, int b0) {
        graph_grad_finish_impl<NB, false, true>(rows, d_prev, nullptr, lengths, carry, batch, hidden, hidden, hidden,
                                                s, options & ~OPT_PART, cluster_task<NB>(own, hidden, u, b0));
      });
}

template <int NB>
__device__ __forceinline__ void lstm_cluster_grad_impl(
    const scalar_t* __restrict__ weight_t, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ z, const scalar_t* __restrict__ cs, const scalar_t* __restrict__ c0,
    const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f, const scalar_t* __restrict__ peep_o,
    scalar_t* carry, scalar_t* dc, scalar_t* dz, int steps, int batch, int hidden, int reverse, int options,
    acc_t clip, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* rows = stage_transposed_rows(weight_t, 4 * hidden, own);
  const bool with_dy = (options & OPT_DY) != 0;
  cluster_backward_loop<NB>(steps, reverse, 4, cluster_halves(4, units_per_block, hidden), dz, own, batch, hidden,
      [&](int t, int s, const scalar_t* d_prev, scalar_t* d_next, int u, int b0) {
        const int before = forward_before(t, steps, reverse);
        lstm_graph_grad_impl<NB, false, true>(rows, d_prev, lengths, with_dy ? dy + t * state : dy,
                                              z + 4 * t * state, cs + t * state,
                                              before >= 0 ? cs + before * state : c0, peep_i, peep_f, peep_o, carry,
                                              dc, d_next, batch, hidden, s, t, options, clip,
                                              cluster_task<NB>(own, hidden, u, b0));
      },
      [&](int s, const scalar_t* d_prev, int u, int b0) {
        graph_grad_finish_impl<NB, false, true>(rows, d_prev, nullptr, lengths, carry, batch, hidden, 4 * hidden,
                                                4 * hidden, s, options & ~OPT_PART,
                                                cluster_task<NB>(own, hidden, u, b0));
      });
}

// GRU with linear_before_reset=True: the exchanged gradients are dgh (B, 3H); `part` (dh u, per element) carries
// to the next backward step like `carry`
template <int NB>
__device__ __forceinline__ void gru_cluster_grad_impl(
    const scalar_t* __restrict__ weight_t, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn, const scalar_t* __restrict__ h_prev,
    scalar_t* part, scalar_t* carry, scalar_t* __restrict__ dgx, scalar_t* dgh, int steps, int batch, int hidden,
    int reverse, int options, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* rows = stage_transposed_rows(weight_t, 3 * hidden, own);
  const bool with_dy = (options & OPT_DY) != 0;
  cluster_backward_loop<NB>(steps, reverse, 3, cluster_halves(3, units_per_block, hidden), dgh, own, batch, hidden,
      [&](int t, int s, const scalar_t* d_prev, scalar_t* d_next, int u, int b0) {
        gru_graph_grad_impl<NB, false, true>(rows, d_prev, lengths, with_dy ? dy + t * state : dy,
                                             gates + 3 * t * state, hn + t * state, h_prev + t * state, part, carry,
                                             dgx + 3 * t * state, d_next, batch, hidden, s, t, options,
                                             cluster_task<NB>(own, hidden, u, b0));
      },
      [&](int s, const scalar_t* d_prev, int u, int b0) {
        graph_grad_finish_impl<NB, false, true>(rows, d_prev, part, lengths, carry, batch, hidden, 3 * hidden,
                                                3 * hidden, s, options | OPT_PART,
                                                cluster_task<NB>(own, hidden, u, b0));
      });
}
