"""The CPU CUDA emulator's barriers (``tests/cuda_emulator.py``) and the fake CuPy's cooperative launches.

Tiny hand-written kernels check the cooperative (grid-wide) mode: a grid barrier really separates the
blocks' writes from their reads, ``__syncthreads`` separates a block's warps, warp shuffles still work
with every block resident, and the errors a GPU would show as a hang or a wrong barrier are reported.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrnn._backends.cupy import sources as cupy_sources
from tests.cupy_backend import cuda_emulator, fake_cupy

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")

# The GPU version of the barrier is written as the persistent kernels will write it: the emulator's prelude
# defines ARRAYRNN_GRID_SYNC first, so this block (atomics the emulator does not have) is skipped.
SOURCE = r"""
typedef float scalar_t;
typedef float acc_t;

#ifndef ARRAYRNN_GRID_SYNC
__device__ __forceinline__ void arrayrnn_grid_sync(unsigned int* counter, unsigned int target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    while (atomicAdd(counter, 0u) < target) {}
    __threadfence();
  }
  __syncthreads();
}
#define ARRAYRNN_GRID_SYNC(counter, target) arrayrnn_grid_sync(counter, target)
#endif

// every step: each thread writes its slot, then (after the barrier) reads the slot one block further on
extern "C" __global__ void exchange(scalar_t* slots, scalar_t* seen, unsigned int* counter, int steps) {
  const int n = gridDim.x * blockDim.x;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned int barriers = 0;
  for (int s = 0; s < steps; ++s) {
    slots[i] = (scalar_t)(1000 * s + i);
    ARRAYRNN_GRID_SYNC(counter, gridDim.x * ++barriers);
    seen[s * n + i] = slots[(i + blockDim.x) % n];
    ARRAYRNN_GRID_SYNC(counter, gridDim.x * ++barriers);  // nobody overwrites a slot before it is read
  }
}

// the same within one block: a thread reads the slot one warp further on after __syncthreads
extern "C" __global__ void block_exchange(scalar_t* slots, scalar_t* seen) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  slots[i] = (scalar_t)(i + 1);
  __syncthreads();
  seen[i] = slots[blockIdx.x * blockDim.x + (threadIdx.x + 32) % blockDim.x];
}

// warp sums by shuffles, published per warp; after the barrier every thread adds up all the warps' sums
extern "C" __global__ void shuffle_total(scalar_t* warp_sums, scalar_t* totals, unsigned int* counter) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  acc_t value = (acc_t)i;
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  if (threadIdx.x % 32 == 0) warp_sums[i / 32] = value;
  ARRAYRNN_GRID_SYNC(counter, gridDim.x);
  acc_t total = 0;
  for (int w = 0; w < (int)(gridDim.x * blockDim.x / 32); ++w) total += warp_sums[w];
  totals[i] = total;
}

extern "C" __global__ void wrong_target(unsigned int* counter) {
  ARRAYRNN_GRID_SYNC(counter, gridDim.x);
  ARRAYRNN_GRID_SYNC(counter, gridDim.x);  // should be 2 * gridDim.x
}

extern "C" __global__ void block_returns_early(unsigned int* counter) {
  if (blockIdx.x == 1) return;
  ARRAYRNN_GRID_SYNC(counter, gridDim.x);
}

extern "C" __global__ void thread_returns_early(scalar_t* out) {
  if (threadIdx.x == 40) return;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// warp 0 waits at __syncthreads, the others at the grid barrier: no barrier can complete
extern "C" __global__ void different_barriers(unsigned int* counter) {
  if (threadIdx.x < 32) __syncthreads();
  else ARRAYRNN_GRID_SYNC(counter, gridDim.x);
}
"""

SPECS = {
    "exchange": [("out", "slots"), ("out", "seen"), ("counter", "counter"), ("int", "steps")],
    "block_exchange": [("out", "slots"), ("out", "seen")],
    "shuffle_total": [("out", "warp_sums"), ("out", "totals"), ("counter", "counter")],
    "wrong_target": [("counter", "counter")],
    "block_returns_early": [("counter", "counter")],
    "thread_returns_early": [("out", "out")],
    "different_barriers": [("counter", "counter")],
}


@pytest.fixture(scope="module")
def lib():
    return cuda_emulator.library_for_source(SOURCE, SPECS)


def _pointer(array: np.ndarray) -> bytes:
    return np.uint64(array.ctypes.data).tobytes()


def _run(lib, name, grid, block, *args, cooperative=True):
    arg_bytes = [_pointer(a) if isinstance(a, np.ndarray) else np.int32(a).tobytes() for a in args]
    cuda_emulator.run(lib, name, grid, block, arg_bytes, cooperative=cooperative)


@pytest.mark.parametrize("grid", [2, 3])
def test_grid_barrier_separates_the_blocks(lib, grid):
    block, steps = 64, 3
    n = grid * block
    slots = np.full(n, np.nan, dtype=np.float32)
    seen = np.full(steps * n, np.nan, dtype=np.float32)
    counter = np.zeros(1, dtype=np.uint32)
    _run(lib, "exchange", grid, block, slots, seen, counter, steps)
    index = np.arange(n)
    expected = np.concatenate([1000 * s + (index + block) % n for s in range(steps)]).astype(np.float32)
    np.testing.assert_array_equal(seen, expected)
    assert counter[0] == grid * 2 * steps  # one arrival per block per barrier


def test_grid_barrier_needs_a_cooperative_launch(lib):
    slots, seen = np.zeros(128, dtype=np.float32), np.zeros(128, dtype=np.float32)
    counter = np.zeros(1, dtype=np.uint32)
    with pytest.raises(RuntimeError, match="grid barrier in a launch that is not cooperative"):
        _run(lib, "exchange", 2, 64, slots, seen, counter, 1, cooperative=False)


@pytest.mark.parametrize("cooperative", [False, True])
def test_syncthreads_separates_the_warps(lib, cooperative):
    grid, block = 2, 96
    slots = np.full(grid * block, np.nan, dtype=np.float32)
    seen = np.full(grid * block, np.nan, dtype=np.float32)
    _run(lib, "block_exchange", grid, block, slots, seen, cooperative=cooperative)
    thread = np.arange(block)
    expected = np.concatenate([b * block + (thread + 32) % block + 1 for b in range(grid)]).astype(np.float32)
    np.testing.assert_array_equal(seen, expected)


def test_shuffles_in_the_grid_mode(lib):
    grid, block = 3, 64
    n = grid * block
    warp_sums = np.full(n // 32, np.nan, dtype=np.float32)
    totals = np.full(n, np.nan, dtype=np.float32)
    counter = np.zeros(1, dtype=np.uint32)
    _run(lib, "shuffle_total", grid, block, warp_sums, totals, counter)
    np.testing.assert_array_equal(warp_sums, np.arange(n).reshape(-1, 32).sum(axis=1))
    np.testing.assert_array_equal(totals, np.full(n, n * (n - 1) / 2, dtype=np.float32))


def test_wrong_target(lib):
    counter = np.zeros(1, dtype=np.uint32)
    with pytest.raises(RuntimeError, match="wrong_target: grid barrier target does not match the counter"):
        _run(lib, "wrong_target", 2, 64, counter)


def test_counter_not_zero_at_launch(lib):
    counter = np.ones(1, dtype=np.uint32)  # e.g. not reset after the previous launch
    slots, seen = np.zeros(128, dtype=np.float32), np.zeros(128, dtype=np.float32)
    with pytest.raises(RuntimeError, match="grid barrier target does not match the counter"):
        _run(lib, "exchange", 2, 64, slots, seen, counter, 1)


def test_block_returns_before_the_grid_barrier(lib):
    counter = np.zeros(1, dtype=np.uint32)
    with pytest.raises(RuntimeError, match="deadlock: a thread finished while others .* wait at a barrier"):
        _run(lib, "block_returns_early", 3, 64, counter)


@pytest.mark.parametrize("cooperative", [False, True])
def test_thread_returns_before_syncthreads(lib, cooperative):
    out = np.zeros(2 * 64, dtype=np.float32)
    with pytest.raises(RuntimeError, match="deadlock: a thread finished while others"):
        _run(lib, "thread_returns_early", 2, 64, out, cooperative=cooperative)


def test_threads_at_different_barriers(lib):
    counter = np.zeros(1, dtype=np.uint32)
    with pytest.raises(RuntimeError, match="deadlock: no thread can make progress"):
        _run(lib, "different_barriers", 2, 64, counter)


def test_library_kernels_unchanged_in_the_grid_mode():
    """An ordinary kernel gives the same result run warp by warp and with the whole grid resident."""
    results = []
    for cooperative in (False, True):
        source = np.arange(3 * 40, dtype=np.float64).reshape(3, 40) + 1
        lengths = np.array([2, 1, 3], dtype=np.int64)
        h = np.full((3, 40), -5.0)
        y = np.full((3, 40), np.nan)
        args = [_pointer(source), _pointer(lengths), _pointer(h), _pointer(y)]
        args += [np.int32(v).tobytes() for v in (3, 40, 1, 1)]
        cuda_emulator.launch("float64", "project_update", 2, 64, args, cooperative=cooperative)
        results.append((h, y))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert not np.isnan(results[0][1]).any()


# the fake CuPy: cooperative launches of the library's kernels


def _project_update_args(fake, dtype=np.float64):
    source = fake_cupy.asfake(np.arange(3 * 40, dtype=dtype).reshape(3, 40) + 1)
    lengths = fake_cupy.asfake(np.array([2, 1, 3], dtype=np.int64))
    h = fake_cupy.asfake(np.full((3, 40), -5.0, dtype=dtype))
    y = fake.zeros((3, 40), dtype=dtype)
    return (source, lengths, h, y, np.int32(3), np.int32(40), np.int32(1), np.int32(1))


def test_fake_cooperative_launch(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        kernel = fake.RawKernel(cupy_sources.source("float64"), "project_update")
        ordinary = _project_update_args(fake)
        kernel((2,), (64,), ordinary)
        cooperative = _project_update_args(fake)
        kernel.kernel((2,), (64,), cooperative, enable_cooperative_groups=True)
        np.testing.assert_array_equal(ordinary[2], cooperative[2])
        np.testing.assert_array_equal(ordinary[3], cooperative[3])
        assert fake.kernel_launches == 2 and fake.cooperative_launches == 1
        assert isinstance(kernel.kernel.ptr, int) and kernel.kernel is kernel.kernel


def test_fake_cooperative_launch_too_large(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        kernel = fake.RawKernel(cupy_sources.source("float64"), "project_update")
        function = kernel.kernel
        assert fake.cuda.Device(0).attributes["MultiProcessorCount"] == 2
        assert fake.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, 64, 0) == 1
        with pytest.raises(RuntimeError, match="too many blocks in cooperative launch"):
            function((3,), (64,), _project_update_args(fake), enable_cooperative_groups=True)
        function((3,), (64,), _project_update_args(fake))  # an ordinary launch may be larger
        fake.multiprocessors, fake.occupancy = 1, 3
        assert fake.cuda.Device(0).attributes["MultiProcessorCount"] == 1
        assert fake.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, 64, 0) == 3
        function((3,), (64,), _project_update_args(fake), enable_cooperative_groups=True)
        assert fake.cooperative_launches == 1
        with pytest.raises(RuntimeError, match="INVALID_HANDLE"):
            fake.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr + 1, 64, 0)


def test_fake_cooperative_launch_in_a_graph(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        kernel = fake.RawKernel(cupy_sources.source("float64"), "project_update")
        kernel.compile()
        args = _project_update_args(fake)
        stream = fake.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            kernel.kernel((2,), (64,), args, enable_cooperative_groups=True)
            graph = stream.end_capture()
        assert fake.kernel_launches == 0 and fake.cooperative_launches == 0
        assert [entry[5] for entry in graph.recorded] == [True]  # (dtype, name, grid, block, args, cooperative, smem)
        assert not args[3].any()
        graph.launch()
        expected = _project_update_args(fake)
        kernel((2,), (64,), expected)
        np.testing.assert_array_equal(args[3], expected[3])


def test_fake_counter_argument(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        kernel = fake.RawKernel(cupy_sources.source("float32"), "project_update")
        kernel.params = [("counter", "counter")]
        counter = fake.zeros(1, dtype=fake.uint32)
        assert kernel._arg_bytes((counter,)) == [np.uint64(counter.ctypes.data).tobytes()]
        with pytest.raises(TypeError, match="dtype int32, expected uint32"):
            kernel._arg_bytes((fake.zeros(1, dtype=np.int32),))
        with pytest.raises(TypeError, match="not C-contiguous"):
            kernel._arg_bytes((fake.zeros(4, dtype=fake.uint32)[::2],))
        with pytest.raises(TypeError, match="expected a device array"):
            kernel._arg_bytes((np.zeros(1, dtype=np.uint32),))
