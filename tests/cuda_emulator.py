"""Run the CuPy fast paths' CUDA C++ kernels on the CPU, to test their logic where there is no GPU.

The kernel source (``arrayrnn._fast.cupy_sources.source``) is compiled with g++ together with a small
prelude that defines the CUDA built-ins the kernels use. A launch runs every warp of the grid as 32
cooperative fibers (ucontext) scheduled round-robin, so ``__shfl_xor_sync`` has real warp semantics:
each lane posts its value and yields; when all 32 lanes have posted, every lane reads its partner's
value from a snapshot. A shuffle reached while some lane of the warp has already exited (undefined
behaviour on a GPU with a full mask) or with a partial mask is reported as an error.

This checks index math, masking, gate formulas, argument order and warp-reduction logic; it does not
check anything about the GPU itself (NVRTC, timing, memory model). float32 and float64 only (the
float16 source converts with PTX ``asm``).
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

from arrayrnn._fast import cupy_sources

_PRELUDE = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#define __device__
#define __global__
#define __forceinline__ inline
struct emu_dim3 { unsigned int x, y, z; };
static emu_dim3 threadIdx, blockIdx, blockDim;

enum { LANE_RUNNING = 0, LANE_AT_SHUFFLE = 1, LANE_DONE = 2 };
struct EmuWarp {
  ucontext_t scheduler;
  ucontext_t lanes[32];
  int state[32];
  double posted[32];
  double snapshot[32];
  int error;
};
static EmuWarp* emu_warp = 0;
static int emu_lane = 0;

template <class T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  EmuWarp* w = emu_warp;
  const int lane = emu_lane;
  if (mask != 0xffffffffu || width != 32) w->error |= 1;
  w->posted[lane] = (double)value;
  w->state[lane] = LANE_AT_SHUFFLE;
  swapcontext(&w->lanes[lane], &w->scheduler);
  return (T)w->snapshot[lane ^ lane_mask];
}

typedef void (*emu_entry_t)(void**);
static emu_entry_t emu_current_entry;
static void** emu_current_args;

static void emu_lane_main() {
  emu_current_entry(emu_current_args);
  emu_warp->state[emu_lane] = LANE_DONE;
  // returning resumes uc_link (the scheduler)
}

// Returns 0, or an error bit mask: 1 partial-mask shuffle, 2 shuffle while a lane had exited.
extern "C" int emu_launch(emu_entry_t entry, int grid, int block, void** args) {
  static const size_t stack_size = 256 * 1024;
  static char* stacks = 0;
  if (!stacks) stacks = (char*)malloc(32 * stack_size);
  int error = 0;
  emu_current_entry = entry;
  emu_current_args = args;
  blockDim.x = block; blockDim.y = 1; blockDim.z = 1;
  for (int bx = 0; bx < grid; ++bx) {
    for (int w0 = 0; w0 < block; w0 += 32) {
      EmuWarp warp;
      memset(&warp, 0, sizeof(warp));
      emu_warp = &warp;
      const int width = block - w0 < 32 ? block - w0 : 32;
      for (int lane = 0; lane < 32; ++lane) {
        if (lane >= width) { warp.state[lane] = LANE_DONE; continue; }
        getcontext(&warp.lanes[lane]);
        warp.lanes[lane].uc_stack.ss_sp = stacks + lane * stack_size;
        warp.lanes[lane].uc_stack.ss_size = stack_size;
        warp.lanes[lane].uc_link = &warp.scheduler;
        makecontext(&warp.lanes[lane], emu_lane_main, 0);
      }
      for (;;) {
        int running = 0;
        for (int lane = 0; lane < width; ++lane) {
          if (warp.state[lane] != LANE_RUNNING) continue;
          running = 1;
          emu_lane = lane;
          blockIdx.x = bx; blockIdx.y = 0; blockIdx.z = 0;
          threadIdx.x = w0 + lane; threadIdx.y = 0; threadIdx.z = 0;
          swapcontext(&warp.scheduler, &warp.lanes[lane]);
        }
        (void)running;
        int at_shuffle = 0, done = 0;
        for (int lane = 0; lane < 32; ++lane) {
          at_shuffle += warp.state[lane] == LANE_AT_SHUFFLE;
          done += warp.state[lane] == LANE_DONE;
        }
        if (done == 32) break;
        if (at_shuffle != 32) { warp.error |= 2; break; }  // lanes exited while others shuffle
        memcpy(warp.snapshot, warp.posted, sizeof(warp.posted));
        for (int lane = 0; lane < 32; ++lane) warp.state[lane] = LANE_RUNNING;
      }
      error |= warp.error;
      emu_warp = 0;
    }
  }
  return error;
}
"""

_ARG_C = {
    "in": "const scalar_t*",
    "out": "scalar_t*",
    "lengths": "const long long*",
    "int": "int",
    "acc": "acc_t",
}


def _entry_shims() -> str:
    lines = []
    for name, params in cupy_sources.kernel_specs().items():
        unpacked = ", ".join(f"*({_ARG_C[kind]}*)a[{i}]" for i, (kind, _) in enumerate(params))
        lines.append(f'extern "C" void emu_entry_{name}(void** a) {{ {name}({unpacked}); }}')
    return "\n".join(lines) + "\n"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


_libraries: dict[str, ctypes.CDLL] = {}


def library(dtype: str) -> ctypes.CDLL:
    """The kernels of ``dtype`` compiled for the CPU (cached on disk by source hash)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"the emulator supports float32 and float64, got {dtype}")
    if dtype in _libraries:
        return _libraries[dtype]
    code = _PRELUDE + cupy_sources.source(dtype) + _entry_shims()
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "arrayrnn-cuda-emulator")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"kernels-{dtype}-{digest}.so")
    if not os.path.exists(path):
        source_path = path[:-3] + ".cpp"
        with open(source_path, "w") as handle:
            handle.write(code)
        partial = path + f".{os.getpid()}.tmp"
        command = [compiler() or "g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", partial, source_path]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, path)
    _libraries[dtype] = ctypes.CDLL(path)
    return _libraries[dtype]


def launch(dtype: str, name: str, grid: int, block: int, arg_bytes: list[bytes]) -> None:
    """Run kernel ``name`` with its parameters given as raw bytes (as ``cuLaunchKernel`` receives them)."""
    lib = library(dtype)
    buffers = [ctypes.create_string_buffer(raw, len(raw)) for raw in arg_bytes]
    pointers = (ctypes.c_void_p * max(1, len(buffers)))(*[ctypes.cast(b, ctypes.c_void_p) for b in buffers])
    entry = getattr(lib, f"emu_entry_{name}")
    run = lib.emu_launch
    run.restype = ctypes.c_int
    run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    error = run(ctypes.cast(entry, ctypes.c_void_p), grid, block, pointers)
    if error:
        reasons = []
        if error & 1:
            reasons.append("shuffle with a partial mask")
        if error & 2:
            reasons.append("shuffle while some lanes of the warp had exited (undefined on a GPU)")
        raise RuntimeError(f"kernel {name}: " + "; ".join(reasons))


def scalar_bytes(value: Any) -> bytes:
    return np.asarray(value).tobytes()
