"""CuPy fast path "persistent": the whole time loop in ONE kernel launch, steps separated by a grid barrier.

The graph path removed Python's per-step cost but still pays one kernel launch (and its drain and
ramp-up) per step, about 5-7 µs on an H100 however small the step. Here one cooperative launch runs every
step: the grid's warps take the graph kernels' tasks (one hidden unit, a tile of batch rows; the same step
bodies in ``cupy_sources``), and a grid-wide barrier (one atomic counter) separates the steps, so a step
costs its arithmetic plus one barrier. The input projection of all steps stays one cuBLAS GEMM before the
launch. There is nothing to capture or cache: each call allocates its buffers from CuPy's memory pool and
launches once (no graph bookkeeping, no weight-address keys).

Why a cooperative launch: a grid barrier deadlocks unless every block is resident at once; with
``cuLaunchCooperativeKernel`` CUDA guarantees that or refuses the launch (the grid here is sized to fit,
at most ``BLOCKS_PER_SM`` blocks per multiprocessor). The barrier's spin gives up after a few seconds and
raises a flag instead of hanging the GPU; ``CHECK_BARRIER = True`` (the tests) reads the flag after each call.

Supports everything the graph path does (not the LSTM projection: use "fused"), float16/32/64.

Measured (H100, 2026-11-27, ``benchmarks/results/gpu_h100_2026-11-27_run2.json``): correct everywhere, but
1.2-5x *slower* than the graph path at every small-batch shape (e.g. LSTM T=100, B=1, H=128: 0.82 ms vs
0.74 ms; T=500, B=32, H=128: best 3.6 ms vs 2.7 ms, cuDNN 1.46 ms), so auto does not pick it. A step here
costs ~7-10 µs: the barrier (two ``__threadfence`` + one atomic + polling), the volatile state loads, and the
gx / cell-state loads after the barrier all sit on the critical path, and with one 8-warp block per SM a
warp with several tasks per step hides little latency (B=64, H=512: 25 ms at tile 1, 4.7 ms at tile 4 with
512 threads). Next: acquire/release barrier (``red.release.gpu`` / ``ld.acquire.gpu``) instead of full
fences, gx and c prefetched before the barrier, each block's weight rows kept in shared memory (or
registers) for the whole sequence, and at most one task per warp.
"""

from __future__ import annotations

from typing import Any, Optional

from .cupy_common import (
    acc_scalar,
    check_dtype,
    cooperative_launch,
    cupy_module,
    empty_batch_result,
    int32,
    kernel,
    lengths_int64,
    lstm_options,
    options_mask,
    project_inputs,
    resident_blocks,
)
from .cupy_graph import lstm_step_weights, recurrent_weights
from .cupy_sources import BATCH_TILES, OPTIONS, graph_kernel_name

Array = Any

IMPL = "persistent"

#: threads per block (8 warps)
THREADS = 256
#: blocks per multiprocessor at most (more blocks = more arrivals at every barrier)
BLOCKS_PER_SM = 1
#: cap on the blocks of one launch (None: as many as there are tasks for and fit); tests force several tasks per warp
MAX_BLOCKS: Optional[int] = None
#: force the batch rows per warp task (None: :func:`choose_batch_tile`); for benchmarks
FORCE_BATCH_TILE: Optional[int] = None
#: read the barrier's timeout flag after every call (a device-to-host copy and a sync: tests only)
CHECK_BARRIER = False
#: grid barrier with release/acquire atomics instead of two full fences (not yet measured against them: the
#: benchmark's barrier section times both; the fences are cooperative_groups' own pattern)
ACQREL_BARRIER = False
#: the barrier counter is 32-bit: arrivals = blocks * barriers must stay below 2**32
_MAX_ARRIVALS = 2**32 - 1


def choose_batch_tile(batch: int, hidden: int, warps: int) -> int:
    """Batch rows per task: the smallest tile that gives every warp at most one task per step (fewer, larger
    tasks reuse each weight load for more rows), else the largest."""
    if FORCE_BATCH_TILE is not None:
        if FORCE_BATCH_TILE not in BATCH_TILES:
            raise ValueError(f"FORCE_BATCH_TILE must be one of {BATCH_TILES}, got {FORCE_BATCH_TILE!r}")
        return FORCE_BATCH_TILE
    for tile in BATCH_TILES:
        if -(-batch // tile) * hidden <= warps:
            return tile
    return BATCH_TILES[-1]


def _grid(base: str, dtype: str, batch: int, hidden: int) -> tuple[Any, int]:
    """(kernel, blocks) for this problem: as many blocks as there are tasks for, at most what fits at once."""
    cp = cupy_module()
    sms = int(cp.cuda.Device().attributes["MultiProcessorCount"])
    warps_per_block = THREADS // 32
    tile = choose_batch_tile(batch, hidden, sms * BLOCKS_PER_SM * warps_per_block)
    name = graph_kernel_name(base, tile)
    k = kernel(name, dtype)
    limit = min(sms * BLOCKS_PER_SM, resident_blocks(k, name, THREADS))
    if MAX_BLOCKS is not None:
        limit = min(limit, MAX_BLOCKS)
    tasks = -(-batch // tile) * hidden
    return k, max(1, min(limit, -(-tasks // warps_per_block)))


def _run(
    base: str,
    x: Array,
    weight_ih: Array,
    weights: tuple[Array, ...],
    initial: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: int,
    barriers_per_step: int,
    tail: tuple[Any, ...] = (),
    scratch: bool = False,
) -> tuple[Array, tuple[Array, ...]]:
    cp = cupy_module()
    dtype = check_dtype(x.dtype, IMPL)
    steps, batch, _ = x.shape
    hidden = initial[0].shape[1]
    if batch == 0:
        return empty_batch_result(x, initial)
    k, blocks = _grid(base, dtype, batch, hidden)
    if blocks * barriers_per_step * steps > _MAX_ARRIVALS:
        raise ValueError(f"impl='persistent': sequence too long ({steps} steps) for the 32-bit barrier counter")
    gx = project_inputs(x, weight_ih)
    h_states = cp.empty((2, batch, hidden), dtype=x.dtype)
    cp.copyto(h_states[0], initial[0])
    cell = (cp.ascontiguousarray(initial[1]).copy(),) if len(initial) > 1 else ()
    extra = (cp.empty((batch, hidden), dtype=x.dtype),) if scratch else ()
    y = cp.empty((steps, batch, hidden), dtype=x.dtype)
    counter = cp.zeros((2,), dtype=cp.uint32)
    sizes = (int32(steps), int32(batch), int32(hidden), int32(bool(reverse)), int32(options | barrier_options()))
    args = (gx, *weights, lengths_int64(lengths), h_states, *cell, *extra, y, counter, *sizes, *tail)
    cooperative_launch(k, (blocks,), (THREADS,), args)
    if CHECK_BARRIER and int(counter[1]) != 0:
        raise RuntimeError(f"impl='persistent': a grid barrier timed out in {base} ({blocks} blocks)")
    return y, (h_states[steps % 2].copy(), *cell)


def rnn_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    nonlinearity: str = "tanh",
) -> tuple[Array, tuple[Array, ...]]:
    with x.device:
        options = options_mask(
            bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths, relu=nonlinearity == "relu"
        )
        weights = recurrent_weights(params, x.dtype)
        return _run("rnn_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, options, 1)


def lstm_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    coupled: bool = False,
    clip: Optional[float] = None,
) -> tuple[Array, tuple[Array, ...]]:
    if params.weight_hr is not None:
        raise ValueError("impl='persistent' does not support the LSTM projection (proj_size > 0); use impl='fused'")
    with x.device:
        dtype = check_dtype(x.dtype, IMPL)
        weights = lstm_step_weights(params, x.dtype)
        options = lstm_options(params, lengths, coupled, clip)
        tail = (acc_scalar(dtype, 0.0 if clip is None else float(clip)),)
        return _run("lstm_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, options, 1, tail)


def gru_sequence(
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array],
    lengths: Optional[Array],
    reverse: bool,
    *,
    linear_before_reset: bool = True,
) -> tuple[Array, tuple[Array, ...]]:
    with x.device:
        options = options_mask(bias_ih=params.bias_ih, bias_hh=params.bias_hh, lengths=lengths)
        weights = recurrent_weights(params, x.dtype)
        if linear_before_reset:
            return _run("gru_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, options, 1)
        return _run(
            "gru_reset_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, options, 2,
            scratch=True,
        )  # fmt: skip


def barrier_options() -> int:
    """The option bits that choose the grid barrier's flavour (``ACQREL_BARRIER``)."""
    return OPTIONS["OPT_ACQREL_BARRIER"] if ACQREL_BARRIER else 0


def barrier_bench(blocks: int, threads: int, steps: int, acqrel: bool) -> Any:
    """A callable that launches ``steps`` grid barriers and nothing else on ``blocks`` blocks (for the benchmark:
    the per-step floor of a persistent kernel). Raises where that many blocks cannot be resident at once."""
    cp = cupy_module()
    k = kernel("grid_barrier_bench", "float32")
    if blocks > resident_blocks(k, "grid_barrier_bench", threads):
        raise ValueError(f"{blocks} blocks of {threads} threads do not fit on this device at once")
    counter = cp.zeros((2,), dtype=cp.uint32)
    options = int32(OPTIONS["OPT_ACQREL_BARRIER"] if acqrel else 0)

    def run() -> None:
        counter.fill(0)
        cooperative_launch(k, (blocks,), (threads,), (counter, int32(steps), options))

    return run
