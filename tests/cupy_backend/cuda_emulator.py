"""Run the CuPy fast paths' CUDA C++ kernels on the CPU, to test their logic where there is no GPU.

The kernel source (``arrayrnn._backends.cupy.sources.source``: every registered part, the experimental ones too
where ``experimental/`` is present) is compiled with g++ together with a small
prelude that defines the CUDA built-ins the kernels use. Every thread of a launch is a cooperative
fiber (ucontext); a scheduler resumes the fibers round-robin and each runs until it blocks at a
warp shuffle, a ``__syncthreads()`` or a grid barrier (``ARRAYRNN_GRID_SYNC``), or finishes:

* ``__shfl_xor_sync`` / ``__shfl_sync``: each lane posts its value and blocks; when all 32 lanes of the warp
  have posted, every lane reads its partner's (or its source lane's) value from a snapshot. A shuffle
  reached while some lane of the warp has already exited (undefined behaviour on a GPU with a full mask)
  or with a partial mask is an error.
* ``__syncthreads()``: releases when every thread of the block is there.
* ``ARRAYRNN_GRID_SYNC(counter, target[, options])``: releases when every thread of the grid is there. The
  emulator checks the counter contract of the GPU version: thread 0 of each block adds 1 to
  ``*counter`` on arrival, and at the release ``*counter`` must equal every waiting thread's
  ``target`` (``gridDim.x`` times the number of grid barriers passed so far).
* A thread that finishes while others of its block/grid wait at a barrier, or a state where no
  fiber can make progress, is a deadlock (it hangs a GPU) and is reported as an error.

An ordinary launch runs warp by warp (one warp's 32 fibers at a time: fast, small), or block by block
when the source uses ``__syncthreads``; a grid barrier in an ordinary launch is an error (on a GPU it
hangs unless every block happens to be resident). A *cooperative* launch (``launch(...,
cooperative=True)``, what ``cudaLaunchCooperativeKernel`` guarantees: all blocks resident at once)
runs all grid * block threads at once, with 64 KiB stacks allocated for the launch.

This checks index math, masking, gate formulas, argument order, warp-reduction logic and barrier
placement; it does not check anything about the GPU itself (NVRTC, timing, memory model: every write
is visible at once, so a missing ``__threadfence`` goes unnoticed). float16 storage converts with GCC's
``_Float16`` in place of the PTX conversions (``ARRAYRNN_HALF_TO_FLOAT``/``_FLOAT_TO_HALF``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any

import numpy as np

from arrayrnn._backends.cupy import sources as cupy_sources

try:  # registers the experimental kernel parts with cupy_sources
    import arrayrnn._backends.cupy.experimental  # noqa: F401
except ModuleNotFoundError as error:  # experimental/ deleted: the shipping parts only
    if error.name != "arrayrnn._backends.cupy.experimental":
        raise

_PRELUDE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
static inline float __int_as_float(int v) { float f; memcpy(&f, &v, sizeof f); return f; }
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, sizeof d); return d; }
// float16 storage (the kernels keep its raw bits): GCC's _Float16 converts as the GPU's cvt.f32.f16 and
// cvt.rn.f16.f32 do (exactly, and to nearest with ties to even)
static inline float emu_half_to_float(unsigned short bits) { _Float16 h; memcpy(&h, &bits, 2); return (float)h; }
static inline unsigned short emu_float_to_half(float v) {
  _Float16 h = (_Float16)v;
  unsigned short bits;
  memcpy(&bits, &h, 2);
  return bits;
}
#define ARRAYRNN_HALF_TO_FLOAT(v) emu_half_to_float(v)
#define ARRAYRNN_FLOAT_TO_HALF(v) emu_float_to_half(v)
struct emu_dim3 { unsigned int x, y, z; };
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

enum { EMU_RUNNING = 0, EMU_AT_SHUFFLE, EMU_AT_SYNCTHREADS, EMU_AT_GRID_SYNC, EMU_AT_CLUSTER_SYNC, EMU_DONE };
// error bits (tests/cupy_backend/cuda_emulator.py ERRORS); every one but EMU_PARTIAL_MASK stops the launch
enum {
  EMU_PARTIAL_MASK = 1, EMU_SHUFFLE_EXITED = 2, EMU_GRID_TARGET = 4, EMU_EXITED_AT_BARRIER = 8,
  EMU_NO_PROGRESS = 16, EMU_GRID_SYNC_NOT_COOPERATIVE = 32, EMU_SYNCTHREADS_BY_WARP = 64,
  EMU_CLUSTER_SYNC_NO_CLUSTER = 128, EMU_CLUSTER_RANK = 256, EMU_CLUSTER_MAP_EXITED = 512
};
// how a launch groups the fibers that run at the same time
enum { EMU_BY_WARP = 0, EMU_BY_BLOCK = 1, EMU_WHOLE_GRID = 2, EMU_BY_CLUSTER = 3 };

struct EmuFiber {
  ucontext_t context;
  int state;
  unsigned int block, thread;  // blockIdx.x, threadIdx.x
  double posted, snapshot;     // shuffle: the value this lane posted, and its value at the release
  unsigned int* counter;       // grid barrier: the arguments this thread is waiting with
  unsigned int target;
};
struct EmuGroup {
  ucontext_t scheduler;
  EmuFiber* fibers;  // consecutive threads of the grid (linear index blockIdx.x * blockDim.x + threadIdx.x)
  int count;
  int error;
};
static EmuGroup* emu_group = 0;
static EmuFiber* emu_self = 0;

typedef void (*emu_entry_t)(void**);
static emu_entry_t emu_current_entry;
static void** emu_current_args;

static inline void emu_block_at(int state) {
  EmuFiber* self = emu_self;
  self->state = state;
  swapcontext(&self->context, &emu_group->scheduler);
}

template <class T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  EmuFiber* self = emu_self;
  if (mask != 0xffffffffu || width != 32) emu_group->error |= EMU_PARTIAL_MASK;
  self->posted = (double)value;
  emu_block_at(EMU_AT_SHUFFLE);
  const int lane = (int)(self->thread & 31u);
  return (T)self[(lane ^ (lane_mask & 31)) - lane].snapshot;
}

// an indexed shuffle: every lane reads lane `src_lane`'s posted value
template <class T>
T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
  EmuFiber* self = emu_self;
  if (mask != 0xffffffffu || width != 32) emu_group->error |= EMU_PARTIAL_MASK;
  self->posted = (double)value;
  emu_block_at(EMU_AT_SHUFFLE);
  const int lane = (int)(self->thread & 31u);
  return (T)self[(src_lane & 31) - lane].snapshot;
}

static inline void __syncthreads() { emu_block_at(EMU_AT_SYNCTHREADS); }

// The emulator's ARRAYRNN_GRID_SYNC: thread 0 of each block counts its block's arrival, as the GPU version
// does with an atomic; the scheduler releases the grid when every thread is here and checks the counter.
static inline void emu_grid_sync(unsigned int* counter, unsigned int target) {
  EmuFiber* self = emu_self;
  if (self->thread == 0) *counter += 1;
  self->counter = counter;
  self->target = target;
  emu_block_at(EMU_AT_GRID_SYNC);
}
#define ARRAYRNN_GRID_SYNC(counter, target, ...) emu_grid_sync(counter, target)

// Dynamic shared memory: one zeroed buffer per block of the launch (emu_launch's shared_bytes each).
static unsigned char* emu_shared = 0;
static size_t emu_shared_bytes = 0;
static inline unsigned char* emu_dynamic_shared() { return emu_shared + (size_t)blockIdx.x * emu_shared_bytes; }
#define ARRAYRNN_DYNAMIC_SHARED() emu_dynamic_shared()

// Thread block clusters: emu_launch's `cluster` consecutive blocks run together (a group of the scheduler).
// The cluster barrier releases when every thread of the cluster is there; a shared-memory address maps to
// the same offset in the buffer of block `rank` of this block's cluster (rank checked; mapping into a block
// whose threads have all exited is an error: on a GPU that memory may already belong to another block).
static int emu_cluster = 1;
static inline void emu_cluster_sync() { emu_block_at(EMU_AT_CLUSTER_SYNC); }
template <class T>
T* emu_cluster_map(T* p, unsigned int rank) {
  unsigned char* own = emu_dynamic_shared();
  const size_t offset = (size_t)((unsigned char*)p - own);
  if (emu_cluster <= 1 || rank >= (unsigned int)emu_cluster || offset >= emu_shared_bytes) {
    emu_group->error |= EMU_CLUSTER_RANK;
    return p;
  }
  const unsigned int target = blockIdx.x - blockIdx.x % (unsigned int)emu_cluster + rank;
  int exited = 1;
  for (int i = 0; i < emu_group->count; ++i) {
    if (emu_group->fibers[i].block == target && emu_group->fibers[i].state != EMU_DONE) exited = 0;
  }
  if (exited) emu_group->error |= EMU_CLUSTER_MAP_EXITED;
  return (T*)(emu_shared + (size_t)target * emu_shared_bytes + offset);
}
#define ARRAYRNN_CLUSTER_SYNC() emu_cluster_sync()
#define ARRAYRNN_CLUSTER_MAP(p, rank) emu_cluster_map(p, rank)
#define ARRAYRNN_CLUSTER_DIMS(size)
#define ARRAYRNN_PREFETCH(p) ((void)(p))

static void emu_fiber_main() {
  emu_current_entry(emu_current_args);
  emu_self->state = EMU_DONE;
  // returning resumes uc_link (the scheduler)
}

// Runs threads first .. first + count - 1 of the grid (whole warps of one block, whole blocks, or the
// whole grid) until they all finish or an error stops them. Returns the error bits.
static int emu_run_group(int first, int count, int grouping, char* stacks, size_t stack_size) {
  const int block = (int)blockDim.x;
  EmuGroup group;
  group.error = 0;
  group.count = count;
  group.fibers = (EmuFiber*)calloc(count, sizeof(EmuFiber));
  for (int i = 0; i < count; ++i) {
    EmuFiber* f = &group.fibers[i];
    f->block = (unsigned int)((first + i) / block);
    f->thread = (unsigned int)((first + i) % block);
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = stacks + (size_t)i * stack_size;
    f->context.uc_stack.ss_size = stack_size;
    f->context.uc_link = &group.scheduler;
    makecontext(&f->context, emu_fiber_main, 0);
  }
  emu_group = &group;
  for (;;) {
    for (int i = 0; i < count; ++i) {
      EmuFiber* f = &group.fibers[i];
      if (f->state != EMU_RUNNING) continue;
      emu_self = f;
      blockIdx.x = f->block; blockIdx.y = 0; blockIdx.z = 0;
      threadIdx.x = f->thread; threadIdx.y = 0; threadIdx.z = 0;
      swapcontext(&group.scheduler, &f->context);
    }
    // every fiber is now blocked or done: release the barriers that are complete
    int released = 0, done = 0, at_grid = 0, at_cluster = 0;
    for (int i = 0; i < count; ++i) {
      done += group.fibers[i].state == EMU_DONE;
      at_grid += group.fibers[i].state == EMU_AT_GRID_SYNC;
      at_cluster += group.fibers[i].state == EMU_AT_CLUSTER_SYNC;
    }
    if (done == count) break;
    for (int i = 0; i < count;) {  // warps
      const int width = block - (int)group.fibers[i].thread < 32 ? block - (int)group.fibers[i].thread : 32;
      int at = 0, exited = 0;
      for (int j = i; j < i + width; ++j) {
        at += group.fibers[j].state == EMU_AT_SHUFFLE;
        exited += group.fibers[j].state == EMU_DONE;
      }
      if (at == 32) {
        for (int j = i; j < i + width; ++j) {
          group.fibers[j].snapshot = group.fibers[j].posted;
          group.fibers[j].state = EMU_RUNNING;
        }
        released = 1;
      } else if (at && (exited || width < 32)) {
        group.error |= EMU_SHUFFLE_EXITED;
      }
      i += width;
    }
    for (int i = 0; i < count;) {  // blocks (or the part of one block in this group)
      const int rest = block - (int)group.fibers[i].thread;
      const int size = rest < count - i ? rest : count - i;
      int at = 0, exited = 0;
      for (int j = i; j < i + size; ++j) {
        at += group.fibers[j].state == EMU_AT_SYNCTHREADS;
        exited += group.fibers[j].state == EMU_DONE;
      }
      if (at && size < block) {
        group.error |= EMU_SYNCTHREADS_BY_WARP;
      } else if (at == block) {
        for (int j = i; j < i + size; ++j) group.fibers[j].state = EMU_RUNNING;
        released = 1;
      } else if (at && exited) {
        group.error |= EMU_EXITED_AT_BARRIER;
      }
      i += size;
    }
    if (at_grid) {
      if (grouping != EMU_WHOLE_GRID) {
        group.error |= EMU_GRID_SYNC_NOT_COOPERATIVE;
      } else if (at_grid == count) {
        unsigned int* counter = group.fibers[0].counter;
        for (int i = 0; i < count; ++i) {
          if (group.fibers[i].counter != counter || *counter != group.fibers[i].target) group.error |= EMU_GRID_TARGET;
          group.fibers[i].state = EMU_RUNNING;
        }
        released = 1;
      } else if (done) {
        group.error |= EMU_EXITED_AT_BARRIER;
      }
    }
    if (at_cluster) {  // a group of a cluster launch is one cluster
      if (grouping != EMU_BY_CLUSTER) {
        group.error |= EMU_CLUSTER_SYNC_NO_CLUSTER;
      } else if (at_cluster == count) {
        for (int i = 0; i < count; ++i) group.fibers[i].state = EMU_RUNNING;
        released = 1;
      } else if (done) {
        group.error |= EMU_EXITED_AT_BARRIER;
      }
    }
    if (group.error & ~EMU_PARTIAL_MASK) break;
    if (!released) {
      group.error |= EMU_NO_PROGRESS;
      break;
    }
  }
  emu_group = 0;
  emu_self = 0;
  free(group.fibers);
  return group.error;
}

// Returns 0, or the error bits of every group run.
extern "C" int emu_launch(emu_entry_t entry, int grid, int block, void** args, int grouping, long long shared_bytes,
                          int cluster) {
  emu_current_entry = entry;
  emu_cluster = grouping == EMU_BY_CLUSTER ? cluster : 1;
  emu_current_args = args;
  emu_shared_bytes = (size_t)shared_bytes;
  emu_shared = shared_bytes > 0 ? (unsigned char*)calloc((size_t)grid, (size_t)shared_bytes) : 0;
  if (shared_bytes > 0 && !emu_shared) return -1;
  blockDim.x = block; blockDim.y = 1; blockDim.z = 1;
  gridDim.x = grid; gridDim.y = 1; gridDim.z = 1;
  int error = 0;
  if (grouping == EMU_BY_WARP) {
    static const size_t stack_size = 256 * 1024;
    static char* stacks = 0;
    if (!stacks) stacks = (char*)malloc(32 * stack_size);
    for (int bx = 0; bx < grid; ++bx) {
      for (int w0 = 0; w0 < block; w0 += 32) {
        error |= emu_run_group(bx * block + w0, block - w0 < 32 ? block - w0 : 32, grouping, stacks, stack_size);
      }
    }
  } else {
    const size_t stack_size = 64 * 1024;
    const int blocks = grouping == EMU_BY_BLOCK ? 1 : grouping == EMU_BY_CLUSTER ? cluster : grid;
    char* stacks = (char*)malloc((size_t)blocks * block * stack_size);
    if (!stacks) return -1;
    if (grouping == EMU_BY_BLOCK || grouping == EMU_BY_CLUSTER) {
      for (int bx = 0; bx < grid; bx += blocks) {
        error |= emu_run_group(bx * block, blocks * block, grouping, stacks, stack_size);
      }
    } else {
      error = emu_run_group(0, grid * block, grouping, stacks, stack_size);
    }
    free(stacks);
  }
  free(emu_shared);
  emu_shared = 0;
  return error;
}
"""

#: the emulator's error bits and what they mean
ERRORS = {
    1: "shuffle with a partial mask",
    2: "shuffle while some lanes of the warp had exited (undefined on a GPU)",
    4: "grid barrier target does not match the counter",
    8: "deadlock: a thread finished while others of its block/grid wait at a barrier (this hangs a GPU)",
    16: "deadlock: no thread can make progress (threads wait at different barriers; this hangs a GPU)",
    32: "grid barrier in a launch that is not cooperative (hangs a GPU unless every block is resident)",
    64: "__syncthreads in a launch run warp by warp (the emulator needs the source to name __syncthreads)",
    128: "cluster barrier in a launch without clusters",
    256: "distributed shared memory: block rank outside the cluster, or an address outside shared memory",
    512: "distributed shared memory: mapped into a block whose threads have all exited",
}

_ARG_C = {
    "in": "const scalar_t*",
    "out": "scalar_t*",
    "state": "scalar_t*",
    "lengths": "const long long*",
    "int": "int",
    "acc": "acc_t",
    "counter": "unsigned int*",
    "table": "const unsigned long long*",
    "kinds": "const int*",
}

_GROUPING = {"warp": 0, "block": 1, "grid": 2, "cluster": 3}


def _entry_shims(specs: dict[str, list[tuple[str, str]]]) -> str:
    lines = []
    for name, params in specs.items():
        unpacked = ", ".join(f"*({_ARG_C[kind]}*)a[{i}]" for i, (kind, _) in enumerate(params))
        lines.append(f'extern "C" void emu_entry_{name}(void** a) {{ {name}({unpacked}); }}')
    return "\n".join(lines) + "\n"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


class Library:
    """Kernels compiled for the CPU: ``lib`` (the ``ctypes.CDLL``) and whether launches run block by block."""

    def __init__(self, lib: ctypes.CDLL, by_block: bool) -> None:
        self.lib = lib
        self.by_block = by_block
        self.run = lib.emu_launch
        self.run.restype = ctypes.c_int
        int_ = ctypes.c_int
        self.run.argtypes = [ctypes.c_void_p, int_, int_, ctypes.c_void_p, int_, ctypes.c_longlong, int_]

    def entry(self, name: str) -> ctypes.c_void_p:
        return ctypes.cast(getattr(self.lib, f"emu_entry_{name}"), ctypes.c_void_p)


_sources: dict[str, Library] = {}
_libraries: dict[tuple[str, tuple[str, ...]], Library] = {}


def library_for_source(code: str, specs: dict[str, list[tuple[str, str]]]) -> Library:
    """``code`` (CUDA C++ defining the ``__global__`` functions of ``specs``: name -> ``[(kind, name), ...]``)
    compiled for the CPU with the prelude and one entry shim per kernel (cached on disk by source hash).
    Parameter kinds are those of ``cupy_sources.kernel_specs`` ("in"/"out" use ``scalar_t``, "acc" ``acc_t``:
    the source defines them if it uses those kinds)."""
    full = _PRELUDE + code + _entry_shims(specs)
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    if digest in _sources:
        return _sources[digest]
    folder = os.path.join(tempfile.gettempdir(), "arrayrnn-cuda-emulator")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"kernels-{digest}.so")
    if not os.path.exists(path):
        source_path = path[:-3] + ".cpp"
        partial_source = source_path + f".{os.getpid()}.tmp"
        with open(partial_source, "w") as handle:
            handle.write(full)
        os.replace(partial_source, source_path)
        partial = path + f".{os.getpid()}.tmp"
        command = [compiler() or "g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", partial, source_path]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, path)
    _sources[digest] = Library(ctypes.CDLL(path), by_block="__syncthreads" in code)
    return _sources[digest]


def library(dtype: str) -> Library:
    """The kernels of ``dtype`` (every part ``cupy_sources`` has registered) compiled for the CPU."""
    if dtype not in ("float16", "float32", "float64"):
        raise ValueError(f"the emulator supports float16, float32 and float64, got {dtype}")
    key = (dtype, cupy_sources.parts())
    if key not in _libraries:
        _libraries[key] = library_for_source(cupy_sources.source(dtype), cupy_sources.kernel_specs())
    return _libraries[key]


def run(
    lib: Library,
    name: str,
    grid: int,
    block: int,
    arg_bytes: list[bytes],
    cooperative: bool = False,
    shared_mem: int = 0,
    cluster: int = 1,
) -> None:
    """Run kernel ``name`` of ``lib`` with its parameters given as raw bytes (as ``cuLaunchKernel`` receives
    them); ``cooperative``: all blocks at once, as ``cudaLaunchCooperativeKernel`` (needed by grid barriers);
    ``shared_mem``: bytes of dynamic shared memory per block (``ARRAYRNN_DYNAMIC_SHARED()``); ``cluster``: blocks
    per thread block cluster (consecutive blocks run together; ``ARRAYRNN_CLUSTER_SYNC``/``_MAP``)."""
    if cluster > 1 and (cooperative or grid % cluster):
        raise ValueError(f"kernel {name}: a grid of {grid} blocks in clusters of {cluster} (cooperative={cooperative})")
    buffers = [ctypes.create_string_buffer(raw, len(raw)) for raw in arg_bytes]
    pointers = (ctypes.c_void_p * max(1, len(buffers)))(*[ctypes.cast(b, ctypes.c_void_p) for b in buffers])
    mode = "cluster" if cluster > 1 else "grid" if cooperative else "block" if lib.by_block else "warp"
    error = lib.run(lib.entry(name), grid, block, pointers, _GROUPING[mode], shared_mem, cluster)
    if error < 0:
        raise MemoryError(f"kernel {name}: no memory for the stacks of {grid} x {block} threads")
    if error:
        reasons = [text for bit, text in ERRORS.items() if error & bit]
        raise RuntimeError(f"kernel {name}: " + "; ".join(reasons))


def launch(
    dtype: str,
    name: str,
    grid: int,
    block: int,
    arg_bytes: list[bytes],
    cooperative: bool = False,
    shared_mem: int = 0,
    cluster: int = 1,
) -> None:
    """Run kernel ``name`` of the ``dtype`` source (see :func:`run`)."""
    run(library(dtype), name, grid, block, arg_bytes, cooperative, shared_mem, cluster)


def scalar_bytes(value: Any) -> bytes:
    return np.asarray(value).tobytes()
