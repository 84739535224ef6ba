"""The experimental kernel parts ("tiled", "persistent", "executor", "cluster", "cluster_grad"): their spec tables
and entry-point generators, registered with the shipping ``..sources`` when this package is imported.

Their CUDA C++ is in ``kernels/``; the device functions they share with the shipping kernels stay in ``../kernels``.
"""

from __future__ import annotations

from ..grad_sources import GRAD_GRAPH_SPECS
from ..sources import (
    ACC_TYPES,
    BATCH_TILES,
    C_TYPES,
    FUSED,
    GRAD_FUSED,
    GRAD_GRAPH,
    GRAPH,
    GRAPH_SPECS,
    KernelFile,
    Params,
    graph_kernel_name,
    impl_call,
    register_part,
    signature,
)
from .cluster_sources import cluster_kernels

SHARED_MEMORY = KernelFile(__package__, "kernels/shared_memory.cuh")
PERSISTENT = KernelFile(__package__, "kernels/persistent.cuh")
TILED_KERNELS = KernelFile(__package__, "kernels/tiled.cuh")
CLUSTER = KernelFile(__package__, "kernels/cluster.cuh")
GRAD_CLUSTER = KernelFile(__package__, "kernels/grad_cluster.cuh")

_RULE = "// ---------------------------------------------------------------------------------------------"

# ----------------------------------------------------------------------------------------------
# tiled

#: the tiled step kernels: the graph step kernels' parameters, one build each (no batch tile)
TILED_SPECS: dict[str, Params] = {
    "lstm_tiled_step": GRAPH_SPECS["lstm_graph_step"],
    "gru_tiled_step": GRAPH_SPECS["gru_graph_step"],
    "rnn_tiled_step": GRAPH_SPECS["rnn_graph_step"],
}
#: the tiled kernels' tile (``kernels/tiled.cuh``'s ``#define``s come from here): batch rows and hidden units per
#: block, rows per thread, k-groups (threads splitting each chunk's columns)
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


# ----------------------------------------------------------------------------------------------
# persistent

#: the persistent kernels, compiled per batch tile like the graph kernels; "counter" is the grid barrier's
#: ``unsigned int[2]`` (arrivals, timeout flag), zero at launch; "units": hidden units per block (the grid has
#: ceil(H / units) blocks; each stages its units' weight rows in dynamic shared memory)
PERSISTENT_SPECS: dict[str, Params] = {
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
BENCH_SPECS: dict[str, Params] = {
    "grid_barrier_bench": [("counter", "counter"), ("int", "steps"), ("int", "options")],
}

# ----------------------------------------------------------------------------------------------
# the graph executor (experimental/executor.py)

#: the graph kernels the executor can run (by index: the ``kinds`` it reads), and its argument slots per launch
EXECUTOR_BASES = tuple(GRAD_GRAPH_SPECS)
EXECUTOR_SLOTS = max(len(params) for params in GRAD_GRAPH_SPECS.values())
EXECUTOR_SPEC: Params = [
    ("table", "table"), ("kinds", "kinds"), ("int", "launches"), ("int", "slots"), ("counter", "counter"),
    ("int", "options"),
]  # fmt: skip


def _slot_value(kind: str, index: int) -> str:
    """C expression for argument slot ``index`` (64 bits: a pointer, an int, or the bits of an ``acc_t``)."""
    if kind == "int":
        return f"(int)(long long)a[{index}]"
    if kind == "acc":
        return f"acc_from_bits(a[{index}])"
    return f"({C_TYPES[kind].replace(' __restrict__', '')})a[{index}]"


def _executor() -> str:
    """The graph executor: ONE cooperative launch runs a recorded list of graph-kernel launches (a gradient
    plan's steps), a grid barrier between consecutive launches (what stream order gave the replayed graph).
    Each launch is a row of ``EXECUTOR_SLOTS`` 64-bit argument slots in ``table`` and a kernel index (into
    ``EXECUTOR_BASES``) in ``kinds``; per kernel a wrapper unpacks the slots and runs the kernel's step
    body over the warp tasks, strided over the grid, with coherent loads of the state other blocks wrote."""
    lines = [_RULE, "// graph executor (see experimental/sources.py, _executor)"]
    for tile in BATCH_TILES:
        for base, params in GRAD_GRAPH_SPECS.items():
            unpack = " ".join(
                f"{C_TYPES[kind].replace(' __restrict__', '')} {name} = {_slot_value(kind, i)};"
                for i, (kind, name) in enumerate(params)
            )
            call = impl_call(base, params, tile, task="task")
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
            f"ARRAYRNN_ENTRY {graph_kernel_name('graph_executor', tile)}({signature(EXECUTOR_SPEC)}) {{\n"
            "  for (int i = 0; i < launches; ++i) {\n"
            "    const unsigned long long* row = table + (long long)i * slots;\n"
            f"    switch (kinds[i]) {{ {cases} }}\n"
            "    if (i + 1 < launches) ARRAYRNN_GRID_SYNC(counter, (unsigned int)(i + 1) * gridDim.x, options);\n"
            "  }\n"
            "}"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# cluster


def _cluster_specs(part: str) -> dict[str, Params]:
    return {name: kernel[4] for name, kernel in cluster_kernels(BATCH_TILES).items() if kernel[0] == part}


def _cluster_entries(part: str) -> str:
    """The entry points of cluster part ``part``: per batch tile and cluster size (``__cluster_dims__`` is
    compile-time)."""
    lines = [_RULE, f"// entry points of part {part!r}"]
    for name, (kernel_part, base, tile, size, params) in cluster_kernels(BATCH_TILES).items():
        if kernel_part == part:
            call = impl_call(base, params, tile or None)
            lines.append(f"ARRAYRNN_ENTRY ARRAYRNN_CLUSTER_DIMS({size}) {name}({signature(params)}) {{ {call} }}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# the parts

register_part(
    "tiled",
    (GRAPH, SHARED_MEMORY, TILED_KERNELS),
    TILED_SPECS,
    defines=lambda dtype: {**TILED, "TILED_CHUNK": TILED_CHUNK[dtype]},
)
register_part("persistent", (GRAPH, SHARED_MEMORY, PERSISTENT), BENCH_SPECS, PERSISTENT_SPECS)
register_part(
    "executor",
    (FUSED, GRAPH, GRAD_FUSED, GRAD_GRAPH, SHARED_MEMORY, PERSISTENT),
    kernels=lambda: {graph_kernel_name("graph_executor", tile): EXECUTOR_SPEC for tile in BATCH_TILES},
    entries=_executor,
)
register_part(
    "cluster",
    (GRAPH, SHARED_MEMORY, PERSISTENT, CLUSTER),
    kernels=lambda: _cluster_specs("cluster"),
    entries=lambda: _cluster_entries("cluster"),
)
register_part(
    "cluster_grad",
    (FUSED, GRAPH, GRAD_FUSED, GRAD_GRAPH, SHARED_MEMORY, PERSISTENT, CLUSTER, GRAD_CLUSTER),
    kernels=lambda: _cluster_specs("cluster_grad"),
    entries=lambda: _cluster_entries("cluster_grad"),
)
