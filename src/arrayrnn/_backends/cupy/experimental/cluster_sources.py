"""Kernel specs of the "cluster" fast path (``kernels/cluster.cuh``): the whole time loop in ONE thread block cluster.

Each block keeps its hidden units' weight rows and the whole state (two halves) in shared memory and writes its
new columns into every other block's; one cluster barrier per step (why that suffices: ``benchmarks/NOTES.md``).
"""

from __future__ import annotations

import functools
from typing import Optional

#: blocks per cluster the kernels are compiled for (the grid is one cluster; 16 is a non-portable size that
#: the kernel must opt in to and that not every Hopper part schedules)
CLUSTER_SIZES = (2, 4, 8, 16)
#: the largest cluster every Hopper part schedules; larger ones need the kernel's non-portable opt-in
PORTABLE_CLUSTER_SIZE = 8

#: entry points (per batch tile and cluster size); "h0" the initial state, "h_last" the final one, "units" the
#: hidden units per block (the last blocks may have fewer, or none)
CLUSTER_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_cluster": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("in", "h0"), ("out", "h_last"), ("state", "c"), ("out", "y"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"), ("acc", "clip"),
        ("int", "units"),
    ],
    "gru_cluster": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h0"), ("out", "h_last"), ("out", "y"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
    "rnn_cluster": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h0"), ("out", "h_last"), ("out", "y"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
}  # fmt: skip


def shared_bytes(gates: int, batch: int, hidden: int, size: int, itemsize: int, exchanged: Optional[int] = None) -> int:
    """Dynamic shared memory per block of a cluster kernel: the weight rows of ``ceil(hidden / size)`` units
    (``gates * hidden`` elements each) and two copies of the exchanged ``(batch, exchanged)`` state (the forward's
    ``h``: ``exchanged = hidden``, the default; the backward's gate gradients: ``gates * hidden``)."""
    units = -(-hidden // size)
    width = hidden if exchanged is None else exchanged
    return (gates * units * hidden + 2 * batch * width) * itemsize


def fits(gates: int, batch: int, hidden: int, itemsize: int, limit: int, exchanged: Optional[int] = None) -> bool:
    """Whether some cluster size (portable or larger) holds the weights and the exchanged state in ``limit`` bytes
    per block (``policy.choose_impl`` asks, without loading the cluster path)."""
    return any(
        shared_bytes(gates, batch, hidden, size, itemsize, exchanged) <= limit
        for size in CLUSTER_SIZES
        if size >= PORTABLE_CLUSTER_SIZE
    )


def cluster_kernel_name(base: str, batch_tile: int, size: int) -> str:
    """The exported name of cluster kernel ``base`` for ``batch_tile`` rows per warp task and ``size`` blocks."""
    return f"{base}_nb{batch_tile}_c{size}"


def cluster_barrier_bench_name(size: int) -> str:
    """The kernel that runs the cluster barrier alone (the benchmark's per-step floor) in clusters of ``size``."""
    return f"cluster_barrier_bench_c{size}"


#: measurement only (benchmarks/gpu_bench.py): ``steps`` cluster barriers with nothing between
BARRIER_BENCH_SPEC = [("int", "steps")]


@functools.cache
def cluster_kernels(batch_tiles: tuple[int, ...]) -> dict[str, tuple[str, str, int, int, list[tuple[str, str]]]]:
    """Every cluster kernel: exported name -> (source part, base, batch tile or 0, cluster size, parameters). The
    forward kernels are part "cluster", the gradient path's (``grad_cluster_sources``) "cluster_grad"."""
    from .grad_cluster_sources import GRAD_CLUSTER_SPECS

    kernels = {}
    for part, specs in (("cluster", CLUSTER_SPECS), ("cluster_grad", GRAD_CLUSTER_SPECS)):
        for base, params in specs.items():
            for tile in batch_tiles:
                for size in CLUSTER_SIZES:
                    kernels[cluster_kernel_name(base, tile, size)] = (part, base, tile, size, params)
    for size in CLUSTER_SIZES:
        kernels[cluster_barrier_bench_name(size)] = ("cluster", "cluster_barrier_bench", 0, size, BARRIER_BENCH_SPEC)
    return kernels


def cluster_size(name: str) -> int:
    """Blocks per cluster that kernel ``name`` was compiled for (1: not a cluster kernel)."""
    from .grad_cluster_sources import GRAD_CLUSTER_SPECS

    base, _, size = name.rpartition("_c")
    tiled = base.rpartition("_nb")[0]
    if size.isdigit() and (base == "cluster_barrier_bench" or tiled in CLUSTER_SPECS or tiled in GRAD_CLUSTER_SPECS):
        return int(size)
    return 1
