"""CUDA C++ source of the CuPy fast paths, as plain strings (no CuPy import: reviewable and testable anywhere).

One source per storage dtype holds every kernel; CuPy compiles it once per dtype and device. Two
families of kernels (plus the gradient path's, appended from ``cupy_grad_sources``):

* **fused** (``*_fused_*``): one thread per ``(b, j)`` state element does the whole pointwise step of a
  cell (gates, peepholes, clip, coupled, lengths masking, output) after cuBLAS did the recurrent matmul.
* **graph** (``*_graph_*_nb{N}``): the recurrent mat-vec *and* the gates in one launch, so the T launches
  of a sequence can be captured in one CUDA graph (CuPy refuses cuBLAS during capture). One warp owns
  one hidden unit ``j`` and a tile of ``N`` batch rows: its lanes split the columns of the weight rows
  ``g*H + j`` (contiguous in the PyTorch layout, so each load is coalesced), multiply each loaded weight
  with the ``N`` state rows (weight reuse), butterfly-reduce with ``__shfl_xor_sync``, and lane ``n``
  applies the gates for batch row ``b0 + n``.

The gradient path's recording forward kernels (``lstm_record_step``, ``gru_graph_record_nb{N}``, ...) are the
same bodies: each step ``_impl`` here has a template flag ``RECORD`` (the record buffers are written only when
it is true); ``_FORWARD_CALLS`` and ``cupy_grad_sources.GRAD_RECORDS`` say which entry point calls which.

Conventions shared by all kernels (the Python side in ``cupy_kernels.py`` / ``cupy_graph.py`` relies on
them): arrays are C-contiguous; ``gx`` is this step's input projection ``x_t W_ih^T`` **without** bias
``(B, G*H)``; biases and peepholes are added here (flags in ``options``); ``lengths`` is int64 ``(B,)``;
a padded step (``t >= lengths[b]``) writes ``y = 0`` and leaves the state unchanged; arithmetic is in
``acc_t`` (float for float16/float32, double for float64); sigmoid is ``tanh(z/2)/2 + 1/2`` (no overflow).
Integer arguments are ``int`` (pass ``numpy.int32``), ``clip`` is ``acc_t`` (pass the matching numpy float).
"""

from __future__ import annotations

import functools
from typing import Optional

from .experimental.cluster_sources import CLUSTER_SOURCE, cluster_kernels, cluster_size
from .experimental.grad_cluster_sources import GRAD_CLUSTER_SOURCE
from .grad_sources import GRAD_GRAPH_SOURCE, GRAD_GRAPH_SPECS, GRAD_RECORDS, GRAD_SOURCE, GRAD_SPECS

#: run-time option bits (one ``int options`` argument), mirrored as ``#define``s in the source
OPTIONS = {
    "OPT_BIAS_IH": 1,
    "OPT_BIAS_HH": 2,
    "OPT_LENGTHS": 4,
    "OPT_PEEP_I": 8,
    "OPT_PEEP_F": 16,
    "OPT_PEEP_O": 32,
    "OPT_COUPLED": 64,
    "OPT_CLIP": 128,
    "OPT_RELU": 256,
    "OPT_PROJECT": 512,
    # gradient kernels (cupy_grad_sources): an output cotangent dy is given; add the pointwise part
    "OPT_DY": 1024,
    "OPT_PART": 2048,
    # persistent kernels / graph executor: grid barrier with release/acquire atomics instead of full fences
    "OPT_ACQREL_BARRIER": 4096,
}

#: batch rows per warp compiled for the graph kernels
BATCH_TILES = (1, 2, 4, 8)

#: dtypes with a source; the value is the numpy type of ``acc_t`` (for the ``clip`` argument)
ACC_TYPES = {"float16": "float32", "float32": "float32", "float64": "float64"}

COMPILE_OPTIONS = ("--std=c++17",)

# Parameter kinds: "in"/"out" (const scalar_t* / scalar_t*), "lengths" (const long long*),
# "int" (int), "acc" (acc_t). The Python callers pass arguments in exactly this order.
_FUSED_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("out", "h"), ("out", "c"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "project_update": [
        ("in", "source"), ("lengths", "lengths"), ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "width"), ("int", "t"), ("int", "options"),
    ],
    "gru_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_fused_reset": [
        ("in", "gx"), ("in", "gh_rz"), ("in", "bias_ih"), ("in", "bias_hh"), ("in", "h"), ("out", "rh"),
        ("int", "batch"), ("int", "hidden"), ("int", "options"),
    ],
    "gru_fused_finish": [
        ("in", "gx"), ("in", "gh_rz"), ("in", "gh_n"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("lengths", "lengths"), ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "rnn_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
}  # fmt: skip

_GRAPH_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "c"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_graph_reset": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "h_prev"), ("out", "rh"),
        ("int", "batch"), ("int", "hidden"), ("int", "options"),
    ],
    "gru_graph_finish": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("in", "rh"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "rnn_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
}  # fmt: skip

#: the tiled step kernels (``_TILED``): the graph step kernels' parameters, one build each (no batch tile)
TILED_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_tiled_step": _GRAPH_SPECS["lstm_graph_step"],
    "gru_tiled_step": _GRAPH_SPECS["gru_graph_step"],
    "rnn_tiled_step": _GRAPH_SPECS["rnn_graph_step"],
}
#: the tiled kernels' tile (``_TILED``'s ``#define``s come from here): batch rows and hidden units per block,
#: rows per thread, k-groups (threads splitting each chunk's columns)
TILED = {"TILED_ROWS": 16, "TILED_UNITS": 16, "TILED_ROWS_PER_THREAD": 4, "TILED_KGROUPS": 4}
#: columns per shared-memory chunk, per dtype: fewer chunks mean fewer load-then-wait rounds per step; float64's
#: chunk is half as long to stay within the 48 KiB of shared memory a kernel gets without opting in
TILED_CHUNK = {"float16": 128, "float32": 128, "float64": 64}
#: threads per block of a tiled kernel
TILED_THREADS = TILED["TILED_KGROUPS"] * (TILED["TILED_ROWS"] // TILED["TILED_ROWS_PER_THREAD"]) * TILED["TILED_UNITS"]


def tiled_shared_bytes(gates: int, dtype: str) -> int:
    """Dynamic shared memory of a tiled kernel with ``gates`` gates: the larger of one chunk of state and weight rows
    (``acc_t``, padded by a column) and the k-groups' partial sums."""
    item = 8 if ACC_TYPES[dtype] == "float64" else 4
    chunk = (TILED["TILED_ROWS"] + gates * TILED["TILED_UNITS"]) * (TILED_CHUNK[dtype] + 1)
    partial = TILED_THREADS * gates * TILED["TILED_ROWS_PER_THREAD"]
    return max(chunk, partial) * item


#: the persistent kernels (``_PERSISTENT``), compiled per batch tile like the graph kernels; "counter" is the
#: grid barrier's ``unsigned int[2]`` (arrivals, timeout flag), zero at launch; "units": hidden units per block
#: (the grid has ceil(H / units) blocks; each stages its units' weight rows in dynamic shared memory)
_PERSISTENT_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_persistent": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("state", "h_states"), ("state", "c"), ("out", "y"), ("counter", "counter"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"), ("acc", "clip"),
        ("int", "units"),
    ],
    "gru_persistent": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("state", "h_states"), ("out", "y"), ("counter", "counter"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
    "gru_reset_persistent": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("state", "h_states"), ("state", "rh"), ("out", "y"), ("counter", "counter"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
    "rnn_persistent": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("state", "h_states"), ("out", "y"), ("counter", "counter"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
}  # fmt: skip

#: measurement only (benchmarks/gpu_bench.py): the grid barrier with nothing between
_BENCH_SPECS: dict[str, list[tuple[str, str]]] = {
    "grid_barrier_bench": [("counter", "counter"), ("int", "steps"), ("int", "options")],
}

# Forward kernels whose _impl also serves a recording kernel of the gradient path (template flag RECORD,
# see GRAD_RECORDS): the forward entry point calls it with RECORD = false, these arguments (the LSTM state c
# as both c_prev and c_out, nullptr for the record buffers it never touches).
_FORWARD_CALLS = {
    "lstm_fused_step": "gx, gh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, c, h, c, y, nullptr, "
    "batch, hidden, t, options, clip",
    "gru_fused_step": "gx, gh, bias_ih, bias_hh, lengths, h, y, nullptr, nullptr, batch, hidden, t, options",
    "gru_fused_finish": "gx, gh_rz, gh_n, bias_ih, bias_hh, lengths, h, y, nullptr, batch, hidden, t, options",
    "lstm_graph_step": "gx, weight_hh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, h_prev, c, h_next, c, y, "
    "nullptr, batch, hidden, t, options, clip",
    "gru_graph_step": "gx, weight_hh, bias_ih, bias_hh, lengths, h_prev, h_next, y, nullptr, nullptr, "
    "batch, hidden, t, options",
    "gru_graph_reset": "gx, weight_hh, bias_ih, bias_hh, h_prev, rh, nullptr, batch, hidden, options",
    "gru_graph_finish": "gx, weight_hh, bias_ih, bias_hh, lengths, h_prev, rh, h_next, y, nullptr, "
    "batch, hidden, t, options",
}

_C_TYPES = {
    "in": "const scalar_t* __restrict__",
    "out": "scalar_t* __restrict__",
    "lengths": "const long long* __restrict__",
    # read and written by other blocks within one launch (persistent kernels): no __restrict__
    "state": "scalar_t*",
    "counter": "unsigned int*",
    # the graph executor's launch table (64-bit argument slots) and kernel indices
    "table": "const unsigned long long* __restrict__",
    "kinds": "const int* __restrict__",
    "int": "int",
    "acc": "acc_t",
}


def graph_kernel_name(base: str, batch_tile: int) -> str:
    """The exported name of graph kernel ``base`` compiled for ``batch_tile`` batch rows per warp."""
    return f"{base}_nb{batch_tile}"


def kernel_specs() -> dict[str, list[tuple[str, str]]]:
    """Every exported kernel name -> its parameter list ``[(kind, name), ...]`` in call order."""
    specs = {**_FUSED_SPECS, **_BENCH_SPECS, **TILED_SPECS, **GRAD_SPECS}
    for base, params in {**_GRAPH_SPECS, **GRAD_GRAPH_SPECS, **_PERSISTENT_SPECS}.items():
        for tile in BATCH_TILES:
            specs[graph_kernel_name(base, tile)] = params
    for tile in BATCH_TILES:
        specs[graph_kernel_name("graph_executor", tile)] = _EXECUTOR_SPEC
    for name, (_, _, _, _, params) in cluster_kernels(BATCH_TILES).items():
        specs[name] = params
    return specs


_PRELUDES = {
    "float32": r"""
typedef float scalar_t;
typedef float acc_t;
__device__ __forceinline__ acc_t load(scalar_t v) { return v; }
__device__ __forceinline__ scalar_t store(acc_t v) { return v; }
__device__ __forceinline__ acc_t acc_tanh(acc_t v) { return tanhf(v); }
__device__ __forceinline__ acc_t acc_from_bits(unsigned long long b) { return __int_as_float((int)(unsigned int)b); }
""",
    "float64": r"""
typedef double scalar_t;
typedef double acc_t;
__device__ __forceinline__ acc_t load(scalar_t v) { return v; }
__device__ __forceinline__ scalar_t store(acc_t v) { return v; }
__device__ __forceinline__ acc_t acc_tanh(acc_t v) { return tanh(v); }
__device__ __forceinline__ acc_t acc_from_bits(unsigned long long b) { return __longlong_as_double((long long)b); }
""",
    # float16 is stored as its 16 raw bits and converted with the PTX instructions cuda_fp16.h uses,
    # so NVRTC needs no header; the arithmetic runs in float and is rounded once when stored (to nearest,
    # ties to even). The CPU emulator defines the two conversions in software instead.
    "float16": r"""
typedef unsigned short scalar_t;
typedef float acc_t;
#ifndef ARRAYRNN_HALF_TO_FLOAT
__device__ __forceinline__ float arrayrnn_half_to_float(unsigned short v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
  return f;
}
__device__ __forceinline__ unsigned short arrayrnn_float_to_half(float v) {
  unsigned short bits;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
  return bits;
}
#define ARRAYRNN_HALF_TO_FLOAT(v) arrayrnn_half_to_float(v)
#define ARRAYRNN_FLOAT_TO_HALF(v) arrayrnn_float_to_half(v)
#endif
__device__ __forceinline__ acc_t load(scalar_t v) { return ARRAYRNN_HALF_TO_FLOAT(v); }
__device__ __forceinline__ scalar_t store(acc_t v) { return ARRAYRNN_FLOAT_TO_HALF(v); }
__device__ __forceinline__ acc_t acc_tanh(acc_t v) { return tanhf(v); }
__device__ __forceinline__ acc_t acc_from_bits(unsigned long long b) { return __int_as_float((int)(unsigned int)b); }
""",
}

_COMMON = r"""
__device__ __forceinline__ acc_t sigmoid_acc(acc_t z) {
  // 1 / (1 + exp(-z)) written with tanh: no overflow for large |z|, same formula as the generic core
  return acc_tanh(z * (acc_t)0.5) * (acc_t)0.5 + (acc_t)0.5;
}

__device__ __forceinline__ acc_t clip_acc(acc_t z, int options, acc_t clip) {
  // comparisons (not fmin/fmax) so that NaN stays NaN, like xp.clip
  if (options & OPT_CLIP) return z < -clip ? -clip : (z > clip ? clip : z);
  return z;
}

__device__ __forceinline__ acc_t bias_at(const scalar_t* __restrict__ bias, int flag, int options, long long i) {
  return (options & flag) ? load(bias[i]) : (acc_t)0;
}

__device__ __forceinline__ bool step_is_valid(const long long* __restrict__ lengths, int options, int b, int t) {
  return !(options & OPT_LENGTHS) || (long long)t < lengths[b];
}

// z = (gx + b_ih) + (gh + b_hh), the order of the generic core
__device__ __forceinline__ acc_t preactivation(acc_t gx, acc_t gh, const scalar_t* __restrict__ bias_ih,
                                               const scalar_t* __restrict__ bias_hh, int options, long long i) {
  return (gx + bias_at(bias_ih, OPT_BIAS_IH, options, i)) + (gh + bias_at(bias_hh, OPT_BIAS_HH, options, i));
}

// The LSTM pointwise step (PyTorch gates i, f, g, o; ONNX peepholes, coupled and clip) of one element.
// Peepholes: i and f see c_prev, o sees c_new; they are added to z in place (the gradient path records z
// after peepholes, before clip). coupled: f = 1 - i. clip: every pre-activation.
__device__ __forceinline__ void lstm_pointwise(acc_t (&z)[4], acc_t c_prev, const scalar_t* __restrict__ peep_i,
                                               const scalar_t* __restrict__ peep_f,
                                               const scalar_t* __restrict__ peep_o, int j, int options,
                                               acc_t clip, acc_t* h_new, acc_t* c_new) {
  if (options & OPT_PEEP_I) z[0] += load(peep_i[j]) * c_prev;
  const acc_t input_gate = sigmoid_acc(clip_acc(z[0], options, clip));
  acc_t forget_gate;
  if (options & OPT_COUPLED) {
    forget_gate = (acc_t)1 - input_gate;
  } else {
    if (options & OPT_PEEP_F) z[1] += load(peep_f[j]) * c_prev;
    forget_gate = sigmoid_acc(clip_acc(z[1], options, clip));
  }
  const acc_t cell_gate = acc_tanh(clip_acc(z[2], options, clip));
  const acc_t c = forget_gate * c_prev + input_gate * cell_gate;
  if (options & OPT_PEEP_O) z[3] += load(peep_o[j]) * c;
  const acc_t output_gate = sigmoid_acc(clip_acc(z[3], options, clip));
  *c_new = c;
  *h_new = output_gate * acc_tanh(c);
}

__device__ __forceinline__ acc_t gru_combine(acc_t update_gate, acc_t candidate, acc_t h_prev) {
  return ((acc_t)1 - update_gate) * candidate + update_gate * h_prev;
}

__device__ __forceinline__ acc_t rnn_activation(acc_t z, int options) {
  // relu as maximum(z, 0): NaN stays NaN
  if (options & OPT_RELU) return z < (acc_t)0 ? (acc_t)0 : z;
  return acc_tanh(z);
}
"""

_FUSED = r"""
// ---------------------------------------------------------------------------------------------
// fused pointwise steps: one thread per (b, j); gh = h_prev W_hh^T came from cuBLAS

#define FUSED_INDEX(width)                                                     \
  const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;  \
  if (index >= (long long)batch * (width)) return;                             \
  const int b = (int)(index / (width));                                        \
  const int j = (int)(index - (long long)b * (width));

// h = y = (1 - u) n + u h on a valid step (h updated in place); else y = 0 and h unchanged
__device__ __forceinline__ void fused_gru_output(bool valid, acc_t update, acc_t candidate, scalar_t* __restrict__ h,
                                                 scalar_t* __restrict__ y, long long index) {
  if (valid) {
    const scalar_t h_new = store(gru_combine(update, candidate, load(h[index])));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}

// RECORD (the gradient path's lstm_record_step) also writes the pre-activations z (after peepholes, before
// clip) to z_out and the masked state to c_out (c_prev on a padded step); the forward step passes c as both
// c_prev and c_out (so those two are not __restrict__) and nullptr for z_out.
template <bool RECORD>
__device__ __forceinline__ void lstm_fused_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* c_prev,
    scalar_t* __restrict__ h, scalar_t* c_out, scalar_t* __restrict__ y, scalar_t* __restrict__ z_out, int batch,
    int hidden, int t, int options, acc_t clip) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 4 * hidden;
  acc_t z[4];
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const long long col = (long long)g * hidden + j;
    z[g] = preactivation(load(gx[row + col]), load(gh[row + col]), bias_ih, bias_hh, options, col);
  }
  const acc_t c_before = load(c_prev[index]);
  acc_t h_new, c_new;
  lstm_pointwise(z, c_before, peep_i, peep_f, peep_o, j, options, clip, &h_new, &c_new);
  if (RECORD) {
#pragma unroll
    for (int g = 0; g < 4; ++g) z_out[row + (long long)g * hidden + j] = store(z[g]);
  }
  const bool valid = step_is_valid(lengths, options, b, t);
  if (valid) {
    c_out[index] = store(c_new);
  } else if (RECORD) {
    c_out[index] = c_prev[index];
  }
  if (options & OPT_PROJECT) {
    // h is the (B, H) buffer projected by cuBLAS next; project_update masks h and y afterwards
    h[index] = store(h_new);
  } else if (valid) {
    h[index] = store(h_new);
    y[index] = store(h_new);
  } else {
    y[index] = store((acc_t)0);
  }
}

// after the LSTM projection: h = y = source on a valid step, else y = 0 and h unchanged
__device__ __forceinline__ void project_update_impl(const scalar_t* __restrict__ source,
                                                    const long long* __restrict__ lengths, scalar_t* __restrict__ h,
                                                    scalar_t* __restrict__ y, int batch, int width, int t,
                                                    int options) {
  FUSED_INDEX(width)
  (void)j;
  if (step_is_valid(lengths, options, b, t)) {
    h[index] = source[index];
    y[index] = source[index];
  } else {
    y[index] = store((acc_t)0);
  }
}

// GRU, linear_before_reset=True (PyTorch): n = tanh(gx_n + b_in + r * (gh_n + b_hn)).
// RECORD (gru_record_step) also writes r, u, n to gates_out (B, 3H) and hn = h W_hn^T + b_hn to hn_out.
template <bool RECORD>
__device__ __forceinline__ void gru_fused_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* __restrict__ h,
    scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, scalar_t* __restrict__ hn_out, int batch,
    int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden;
  const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
  const acc_t reset =
      sigmoid_acc(preactivation(load(gx[row + r_col]), load(gh[row + r_col]), bias_ih, bias_hh, options, r_col));
  const acc_t update =
      sigmoid_acc(preactivation(load(gx[row + z_col]), load(gh[row + z_col]), bias_ih, bias_hh, options, z_col));
  const acc_t input_n = load(gx[row + n_col]) + bias_at(bias_ih, OPT_BIAS_IH, options, n_col);
  const acc_t hidden_n = load(gh[row + n_col]) + bias_at(bias_hh, OPT_BIAS_HH, options, n_col);
  const acc_t candidate = acc_tanh(input_n + reset * hidden_n);
  if (RECORD) {
    gates_out[row + r_col] = store(reset);
    gates_out[row + z_col] = store(update);
    gates_out[row + n_col] = store(candidate);
    hn_out[index] = store(hidden_n);
  }
  fused_gru_output(step_is_valid(lengths, options, b, t), update, candidate, h, y, index);
}

// GRU, linear_before_reset=False, first half: rh = r * h_prev (cuBLAS then computes rh W_hn^T)
__device__ __forceinline__ void gru_fused_reset_impl(const scalar_t* __restrict__ gx,
                                                     const scalar_t* __restrict__ gh_rz,
                                                     const scalar_t* __restrict__ bias_ih,
                                                     const scalar_t* __restrict__ bias_hh,
                                                     const scalar_t* __restrict__ h, scalar_t* __restrict__ rh,
                                                     int batch, int hidden, int options) {
  FUSED_INDEX(hidden)
  const acc_t reset = sigmoid_acc(preactivation(load(gx[(long long)b * 3 * hidden + j]),
                                                load(gh_rz[(long long)b * 2 * hidden + j]), bias_ih, bias_hh,
                                                options, j));
  rh[index] = store(reset * load(h[index]));
}

// GRU, linear_before_reset=False, second half: n = tanh(gx_n + b_in + (rh W_hn^T + b_hn)).
// RECORD (gru_record_finish) also recomputes r and writes r, u, n to gates_out (B, 3H).
template <bool RECORD>
__device__ __forceinline__ void gru_fused_finish_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh_rz, const scalar_t* __restrict__ gh_n,
    const scalar_t* __restrict__ bias_ih, const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths,
    scalar_t* __restrict__ h, scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, int batch, int hidden,
    int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden, rz_row = (long long)b * 2 * hidden;
  const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
  const acc_t update = sigmoid_acc(
      preactivation(load(gx[row + z_col]), load(gh_rz[rz_row + z_col]), bias_ih, bias_hh, options, z_col));
  const acc_t candidate =
      acc_tanh(preactivation(load(gx[row + n_col]), load(gh_n[index]), bias_ih, bias_hh, options, n_col));
  if (RECORD) {
    gates_out[row + r_col] = store(sigmoid_acc(
        preactivation(load(gx[row + r_col]), load(gh_rz[rz_row + r_col]), bias_ih, bias_hh, options, r_col)));
    gates_out[row + z_col] = store(update);
    gates_out[row + n_col] = store(candidate);
  }
  fused_gru_output(step_is_valid(lengths, options, b, t), update, candidate, h, y, index);
}

__device__ __forceinline__ void rnn_fused_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* __restrict__ h,
    scalar_t* __restrict__ y, int batch, int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t z = preactivation(load(gx[index]), load(gh[index]), bias_ih, bias_hh, options, j);
  if (step_is_valid(lengths, options, b, t)) {
    const scalar_t h_new = store(rnn_activation(z, options));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}
"""

_GRAPH = r"""
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
"""

_TILED_BODY = r"""
// ---------------------------------------------------------------------------------------------
// "tiled" graph step kernels (cupy_tiled.py): the graph step kernels' parameters and step tails, but one block
// computes a whole tile of TILED_ROWS batch rows x TILED_UNITS hidden units (every gate of each) as a small
// GEMM through shared memory: each weight row and state row a block loads serves the whole tile, where the
// warp-per-unit kernels load each weight row once per batch tile of at most 8 rows and each state row once per
// unit. Threads: TILED_KGROUPS k-groups x (TILED_ROWS / TILED_ROWS_PER_THREAD) row groups x TILED_UNITS units; a
// thread accumulates TILED_ROWS_PER_THREAD rows x G gates of one unit over every TILED_KGROUPS-th column of each
// chunk of TILED_CHUNK columns; the k-groups' partial sums meet in shared memory, and k-group 0 finishes its
// (row, unit) pairs with the graph kernels' tails. The grid is 1-D: blockIdx.x = row tile * unit tiles + unit tile.
// The TILED_* constants are defined from Python (cupy_sources.TILED, TILED_CHUNK), which also sizes the launch.

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
"""


def _tiled(dtype: str) -> str:
    """``_TILED_BODY`` with its ``#define``s for ``dtype``."""
    defines = {**TILED, "TILED_CHUNK": TILED_CHUNK[dtype]}
    return "".join(f"#define {name} {value}\n" for name, value in defines.items()) + _TILED_BODY


_PERSISTENT = r"""
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

#ifndef ARRAYRNN_DYNAMIC_SHARED
__device__ __forceinline__ unsigned char* arrayrnn_dynamic_shared() {
  extern __shared__ __align__(16) unsigned char arrayrnn_shared[];
  return arrayrnn_shared;
}
#define ARRAYRNN_DYNAMIC_SHARED() arrayrnn_dynamic_shared()
#endif

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
"""


def _signature(params: list[tuple[str, str]]) -> str:
    return ", ".join(f"{_C_TYPES[kind]} {name}" for kind, name in params)


def _call(params: list[tuple[str, str]]) -> str:
    return ", ".join(name for _, name in params)


def _impl_call(name: str, params: list[tuple[str, str]], batch_tile: int | None = None, task: str = "") -> str:
    """The body of entry point ``name``: a call of its ``_impl`` (or its forward twin's, for a recording kernel).

    With ``task`` (the executor's wrappers), the step body reads state written by other blocks coherently
    (template flag ``COHERENT``) and works on warp task ``task`` instead of its launch index.
    """
    template_args = [] if batch_tile is None else [str(batch_tile)]
    impl, args = name, _call(params)
    if name in GRAD_RECORDS:
        impl = GRAD_RECORDS[name]
        template_args.append("true")
    elif name in _FORWARD_CALLS:
        args = _FORWARD_CALLS[name]
        template_args.append("false")
    if task:
        template_args.append("true")
        args = f"{args}, {task}"
    template = f"<{', '.join(template_args)}>" if template_args else ""
    return f"{impl}_impl{template}({args});"


#: the kernels are compiled in parts (one CuPy module per part and dtype), so a forward pass never waits
#: for the gradient or executor kernels to compile: (plain kernels, per-batch-tile kernels) of each part
PARTS: dict[str, tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]] = {
    "forward": ({**_FUSED_SPECS, **_BENCH_SPECS, **TILED_SPECS}, {**_GRAPH_SPECS, **_PERSISTENT_SPECS}),
    "grad": (GRAD_SPECS, GRAD_GRAPH_SPECS),
}


def _entry_points(part: str) -> str:
    plain, tiled = PARTS[part]
    lines = ["// ---------------------------------------------------------------------------------------------",
             f"// entry points of part {part!r} (extern \"C\": names CuPy can look up without mangling)"]  # fmt: skip
    for name, params in plain.items():
        lines.append(f'extern "C" __global__ void {name}({_signature(params)}) {{ {_impl_call(name, params)} }}')
    for base, params in tiled.items():
        for tile in BATCH_TILES:
            lines.append(
                f'extern "C" __global__ void {graph_kernel_name(base, tile)}({_signature(params)}) '
                f"{{ {_impl_call(base, params, tile)} }}"
            )
    return "\n".join(lines) + "\n"


#: every part, each one CuPy module per dtype (PARTS, the graph executor, the cluster kernels and their gradients)
ALL_PARTS = (*PARTS, "executor", "cluster", "cluster_grad")


def _cluster_entries(part: str) -> str:
    """The entry points of cluster part ``part``: per batch tile and cluster size (``__cluster_dims__`` is
    compile-time)."""
    lines = ["// ---------------------------------------------------------------------------------------------",
             f"// entry points of part {part!r}"]  # fmt: skip
    for name, (kernel_part, base, tile, size, params) in cluster_kernels(BATCH_TILES).items():
        if kernel_part != part:
            continue
        call = _impl_call(base, params, tile or None)
        head = f'extern "C" __global__ void ARRAYRNN_CLUSTER_DIMS({size}) {name}'
        lines.append(f"{head}({_signature(params)}) {{ {call} }}")
    return "\n".join(lines) + "\n"


def part_of(name: str) -> str:
    """The part (one of ``ALL_PARTS``) whose module holds kernel ``name``."""
    if name.startswith("graph_executor_nb"):
        return "executor"
    if cluster_size(name) > 1:
        return cluster_kernels(BATCH_TILES)[name][0]
    base = name.rpartition("_nb")[0]
    for part, (plain, tiled) in PARTS.items():
        if name in plain or base in tiled:
            return part
    raise KeyError(f"no CuPy kernel named {name!r}")


#: the graph kernels the executor can run (by index: the ``kinds`` it reads), and its argument slots per launch
EXECUTOR_BASES = tuple(GRAD_GRAPH_SPECS)
EXECUTOR_SLOTS = max(len(params) for params in GRAD_GRAPH_SPECS.values())
_EXECUTOR_SPEC = [
    ("table", "table"), ("kinds", "kinds"), ("int", "launches"), ("int", "slots"), ("counter", "counter"),
    ("int", "options"),
]  # fmt: skip


def _slot_value(kind: str, index: int) -> str:
    """C expression for argument slot ``index`` (64 bits: a pointer, an int, or the bits of an ``acc_t``)."""
    if kind == "int":
        return f"(int)(long long)a[{index}]"
    if kind == "acc":
        return f"acc_from_bits(a[{index}])"
    return f"({_C_TYPES[kind].replace(' __restrict__', '')})a[{index}]"


def _executor() -> str:
    """The graph executor: ONE cooperative launch runs a recorded list of graph-kernel launches (a gradient
    plan's steps), a grid barrier between consecutive launches (what stream order gave the replayed graph).
    Each launch is a row of ``EXECUTOR_SLOTS`` 64-bit argument slots in ``table`` and a kernel index (into
    ``EXECUTOR_BASES``) in ``kinds``; per kernel a wrapper unpacks the slots and runs the kernel's step
    body over the warp tasks, strided over the grid, with coherent loads of the state other blocks wrote."""
    lines = ["// ---------------------------------------------------------------------------------------------",
             "// graph executor (see cupy_sources._executor)"]  # fmt: skip
    for tile in BATCH_TILES:
        for base, params in GRAD_GRAPH_SPECS.items():
            unpack = " ".join(
                f"{_C_TYPES[kind].replace(' __restrict__', '')} {name} = {_slot_value(kind, i)};"
                for i, (kind, name) in enumerate(params)
            )
            call = _impl_call(base, params, tile, task="task")
            lines.append(
                f"__device__ __noinline__ void exec_{graph_kernel_name(base, tile)}(const unsigned long long* a) {{\n"
                f"  {unpack}\n"
                f"  const long long tasks = persistent_tasks(batch, hidden, {tile});\n"
                f"  for (long long task = launch_warp(); task < tasks; task += grid_warps()) {{ {call} }}\n"
                "}"
            )
        cases = " ".join(
            f"case {index}: exec_{graph_kernel_name(base, tile)}(row); break;"
            for index, base in enumerate(EXECUTOR_BASES)
        )
        lines.append(
            f'extern "C" __global__ void {graph_kernel_name("graph_executor", tile)}({_signature(_EXECUTOR_SPEC)}) {{\n'
            "  for (int i = 0; i < launches; ++i) {\n"
            "    const unsigned long long* row = table + (long long)i * slots;\n"
            f"    switch (kinds[i]) {{ {cases} }}\n"
            "    if (i + 1 < launches) ARRAYRNN_GRID_SYNC(counter, (unsigned int)(i + 1) * gridDim.x, options);\n"
            "  }\n"
            "}"
        )
    return "\n".join(lines) + "\n"


def _defines() -> str:
    return "".join(f"#define {name} {value}\n" for name, value in OPTIONS.items())


@functools.cache
def source(dtype: str, part: Optional[str] = None) -> str:
    """The CUDA C++ source for arrays of ``dtype`` ("float16", "float32" or "float64"): the entry points of one
    ``part`` (one of ``ALL_PARTS``; see :func:`part_of`) or, by default, of all (the CPU checks).

    Every part holds every device function (a function no entry point uses costs only parsing)."""
    if dtype not in _PRELUDES:
        raise ValueError(f"the CuPy kernels support float16, float32 and float64, got {dtype}")
    parts = ALL_PARTS if part is None else (part,)
    special = {"executor": _executor, "cluster": lambda: _cluster_entries("cluster"),
               "cluster_grad": lambda: _cluster_entries("cluster_grad")}  # fmt: skip
    entries = "".join(special[name]() if name in special else _entry_points(name) for name in parts)
    header = f"// arrayrnn CuPy fast paths, storage dtype {dtype}, parts {', '.join(parts)}\n"
    return (
        header
        + _defines()
        + _PRELUDES[dtype]
        + _COMMON
        + _FUSED
        + GRAD_SOURCE
        + _GRAPH
        + GRAD_GRAPH_SOURCE
        + _PERSISTENT
        + _tiled(dtype)
        + CLUSTER_SOURCE
        + GRAD_CLUSTER_SOURCE
        + entries
    )
