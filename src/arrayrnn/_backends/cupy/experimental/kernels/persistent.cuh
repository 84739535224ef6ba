// Path "persistent" (and the graph executor's grid barrier): the time loop in one cooperative launch.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// persistent kernels: ONE cooperative launch runs every step of the sequence. The warps of the grid take the
// graph kernels' tasks (hidden unit j, NB batch rows) strided over the grid, each step calls the same step
// bodies as the graph kernels (COHERENT state loads), and a grid barrier separates the steps. The states
// ping-pong in h_states (2, B, H): step k reads [k % 2] and writes [(k + 1) % 2]; the LSTM cell state is
// updated in place by the one thread that owns (b, j) (the task -> warp assignment is the same every step).

// Grid barrier (every thread of every block calls it). `counter` is zero at launch and counts block arrivals;
// `target` = gridDim.x * (barriers passed, this one included). The fences around the arrival make every write
// made before the barrier visible after it (the pattern of cooperative_groups' grid sync); with
// OPT_ACQREL_BARRIER a release increment and acquire loads do the same with lighter ordering (measured against
// the fences by benchmarks/gpu_bench.py). The spin gives up after a few seconds (flagging counter[1]) rather
// than hang the GPU should a block never arrive.
#ifndef ARRAYRNN_GRID_SYNC
__device__ __forceinline__ void arrayrnn_grid_sync(unsigned int* counter, unsigned int target, int options) {
  __syncthreads();
  if (gridDim.x == 1) return;  // one block: __syncthreads already orders its global memory accesses
  if (threadIdx.x == 0) {
    const bool acqrel = (options & OPT_ACQREL_BARRIER) != 0;
    // arrival: a release increment (acqrel), or a full fence then a relaxed increment
    if (acqrel) {
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    } else {
      __threadfence();
      atomicAdd(counter, 1u);
    }
    const volatile unsigned int* flags = counter;
    long long spins = 0;
    // once a barrier has timed out, later ones do not wait (the result is already flagged as garbage)
    for (;;) {
      unsigned int arrived;
      if (acqrel) {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(arrived) : "l"(counter) : "memory");
      } else {
        arrived = flags[0];
      }
      if (arrived >= target || flags[1] != 0u) break;
      if (++spins > (1LL << 22)) {
        atomicOr(counter + 1, 1u);
        break;
      }
    }
    if (!acqrel) __threadfence();
  }
  __syncthreads();
}
#define ARRAYRNN_GRID_SYNC(counter, target, options) arrayrnn_grid_sync(counter, target, options)
#endif

// The barrier alone, `steps` times (benchmarks/gpu_bench.py: the per-step floor of a persistent kernel)
__device__ __forceinline__ void grid_barrier_bench_impl(unsigned int* counter, int steps, int options) {
  for (int k = 0; k < steps; ++k) ARRAYRNN_GRID_SYNC(counter, (unsigned int)(k + 1) * gridDim.x, options);
}

__device__ __forceinline__ long long grid_warps() { return ((long long)gridDim.x * blockDim.x) >> 5; }

__device__ __forceinline__ long long persistent_tasks(int batch, int hidden, int tile) {
  return (long long)((batch + tile - 1) / tile) * hidden;
}

// Step k of `steps`, in time order: t, and the ping-pong halves it reads and writes.
struct PersistentStep {
  int t;
  const scalar_t* h_prev;
  scalar_t* h_next;
  __device__ PersistentStep(int k, int steps, int reverse, scalar_t* h_states, long long state) {
    t = reverse ? steps - 1 - k : k;
    h_prev = h_states + (k & 1) * state;
    h_next = h_states + ((k + 1) & 1) * state;
  }
};

// This block's share: hidden units [u0, u0 + units) (the grid has ceil(H / units_per_block) blocks, so units >= 1)
// and the warp tasks (unit u0 + u, batch rows b0 .. b0 + NB - 1) over them, taken by its warps in turn.
struct BlockTasks {
  int u0, units, warp, warps;
  long long tasks;
  __device__ BlockTasks(int batch, int hidden, int units_per_block, int tile) {
    u0 = blockIdx.x * units_per_block;
    units = hidden - u0 < units_per_block ? hidden - u0 : units_per_block;
    if (units < 0) units = 0;  // a cluster's last blocks may own no unit
    warp = threadIdx.x >> 5;
    warps = blockDim.x >> 5;
    tasks = (long long)units * ((batch + tile - 1) / tile);
  }
};

// The recurrent weight rows of the block's units, copied once into shared memory as rows [g][u] (gate g of
// unit u0 + u at row g * units + u): every step then reads its weights from shared memory, not L1/L2 (which
// the grid barrier's fences may invalidate every step).
__device__ __forceinline__ const scalar_t* stage_weights(const scalar_t* __restrict__ weight_hh, int gates,
                                                         int hidden, const BlockTasks& own) {
  scalar_t* staged = (scalar_t*)ARRAYRNN_DYNAMIC_SHARED();
  const long long total = (long long)gates * own.units * hidden;
  for (long long i = threadIdx.x; i < total; i += blockDim.x) {
    const long long r = i / hidden;
    const int k = (int)(i - r * hidden), g = (int)(r / own.units), u = (int)(r - (long long)g * own.units);
    staged[i] = weight_hh[((long long)g * hidden + own.u0 + u) * hidden + k];
  }
  __syncthreads();
  return staged;
}

// The time loop of a persistent kernel: each step runs PHASES phases of `body(step, phase, u, b0)` over this
// block's tasks (unit own.u0 + u, batch rows b0 ..), with a grid barrier after every phase but the last one.
template <int NB, int PHASES, class Body>
__device__ __forceinline__ void persistent_loop(int steps, int reverse, scalar_t* h_states, long long state,
                                                const BlockTasks& own, unsigned int* counter, int options,
                                                Body body) {
  for (int k = 0; k < steps; ++k) {
    const PersistentStep step(k, steps, reverse, h_states, state);
    for (int phase = 0; phase < PHASES; ++phase) {
      for (long long task = own.warp; task < own.tasks; task += own.warps) {
        body(step, phase, (int)(task % own.units), (int)(task / own.units) * NB);
      }
      const int barrier = k * PHASES + phase + 1;
      if (barrier < steps * PHASES) ARRAYRNN_GRID_SYNC(counter, (unsigned int)barrier * gridDim.x, options);
    }
  }
}

template <int NB>
__device__ __forceinline__ void lstm_persistent_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, scalar_t* h_states, scalar_t* c,
    scalar_t* __restrict__ y, unsigned int* counter, int steps, int batch, int hidden, int reverse, int options,
    acc_t clip, int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 4, hidden, own);
  const int lane = threadIdx.x & 31;
  persistent_loop<NB, 1>(steps, reverse, h_states, state, own, counter, options,
                         [&](const PersistentStep& step, int, int u, int b0) {
    acc_t sums[4][NB];
    warp_dots<4, NB, true>(staged, u, own.units, step.h_prev, b0, batch, hidden, lane, sums);
    lstm_graph_tail<NB, false, true>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * 4 * state, bias_ih,
                                     bias_hh, peep_i, peep_f, peep_o, lengths, step.h_prev, c, step.h_next, c,
                                     y + (long long)step.t * state, nullptr, batch, hidden, step.t, options, clip);
  });
}

template <int NB>
__device__ __forceinline__ void gru_persistent_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* h_states,
    scalar_t* __restrict__ y, unsigned int* counter, int steps, int batch, int hidden, int reverse, int options,
    int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 3, hidden, own);
  const int lane = threadIdx.x & 31;
  persistent_loop<NB, 1>(steps, reverse, h_states, state, own, counter, options,
                         [&](const PersistentStep& step, int, int u, int b0) {
    acc_t sums[3][NB];
    warp_dots<3, NB, true>(staged, u, own.units, step.h_prev, b0, batch, hidden, lane, sums);
    gru_graph_tail<NB, false, true>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * 3 * state, bias_ih, bias_hh,
                                    lengths, step.h_prev, step.h_next, y + (long long)step.t * state, nullptr, nullptr,
                                    batch, hidden, step.t, options);
  });
}

// linear_before_reset=False: two phases per step (every r * h_prev before any candidate)
template <int NB>
__device__ __forceinline__ void gru_reset_persistent_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* h_states, scalar_t* rh,
    scalar_t* __restrict__ y, unsigned int* counter, int steps, int batch, int hidden, int reverse, int options,
    int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 3, hidden, own);
  const int lane = threadIdx.x & 31;
  persistent_loop<NB, 2>(steps, reverse, h_states, state, own, counter, options,
                         [&](const PersistentStep& step, int phase, int u, int b0) {
    const scalar_t* gx_t = gx + (long long)step.t * 3 * state;
    if (phase == 0) {
      acc_t sums[1][NB];
      warp_dots<1, NB, true>(staged, u, 0, step.h_prev, b0, batch, hidden, lane, sums);
      gru_graph_reset_tail<NB, false, true>(sums, lane, own.u0 + u, b0, gx_t, bias_ih, bias_hh, step.h_prev, rh,
                                            nullptr, batch, hidden, options);
    } else {
      acc_t update_sums[1][NB];
      acc_t candidate_sums[1][NB];
      warp_dots<1, NB, true>(staged, own.units + u, 0, step.h_prev, b0, batch, hidden, lane, update_sums);
      warp_dots<1, NB, true>(staged, 2 * own.units + u, 0, rh, b0, batch, hidden, lane, candidate_sums);
      gru_graph_finish_tail<NB, false, true>(update_sums, candidate_sums, lane, own.u0 + u, b0, gx_t, bias_ih,
                                             bias_hh, lengths, step.h_prev, step.h_next,
                                             y + (long long)step.t * state, nullptr, batch, hidden, step.t, options);
    }
  });
}

template <int NB>
__device__ __forceinline__ void rnn_persistent_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ weight_hh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* h_states,
    scalar_t* __restrict__ y, unsigned int* counter, int steps, int batch, int hidden, int reverse, int options,
    int units_per_block) {
  const long long state = (long long)batch * hidden;
  const BlockTasks own(batch, hidden, units_per_block, NB);
  const scalar_t* staged = stage_weights(weight_hh, 1, hidden, own);
  const int lane = threadIdx.x & 31;
  persistent_loop<NB, 1>(steps, reverse, h_states, state, own, counter, options,
                         [&](const PersistentStep& step, int, int u, int b0) {
    acc_t sums[1][NB];
    warp_dots<1, NB, true>(staged, u, 0, step.h_prev, b0, batch, hidden, lane, sums);
    rnn_graph_tail<NB, true>(sums, lane, own.u0 + u, b0, gx + (long long)step.t * state, bias_ih, bias_hh, lengths,
                             step.h_prev, step.h_next, y + (long long)step.t * state, batch, hidden, step.t, options);
  });
}
