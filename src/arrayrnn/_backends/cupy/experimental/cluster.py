"""CuPy fast path "cluster" (Hopper and later): the whole time loop in ONE launch of ONE thread block cluster.

Fits where one cluster's shared memory holds the weights and two copies of the state; GRU with
``linear_before_reset=False``, the LSTM projection and GPUs before compute capability 9.0 raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from ..common import check_dtype, cupy_module, empty_batch_result, int32, kernel, lengths_int64, project_inputs
from ..graph import GATES, step_arguments
from .cluster_sources import CLUSTER_SIZES, cluster_barrier_bench_name, cluster_kernel_name
from .persistent import ITEMSIZE, allow_shared, shared_memory_limit, tile_for_warps

Array = Any

IMPL = "cluster"

#: threads per block (at most: fewer where the kernel's registers do not allow as many, as for float64). 16 warps:
#: one block holds all its tasks of a small step at once (LSTM H = 128, B = 1 on 8 blocks: 16 unit tasks)
THREADS = 512
#: blocks per cluster (None: :func:`choose_cluster_size`); for benchmarks and tests
FORCE_CLUSTER_SIZE: Optional[int] = None
#: batch rows per warp task (None: the smallest tile that gives each warp at most one task); for benchmarks
FORCE_BATCH_TILE: Optional[int] = None
#: the largest cluster every Hopper part schedules; larger ones need the kernel's non-portable opt-in
PORTABLE_CLUSTER_SIZE = 8
#: CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED (cuda.h)
_ATTR_NON_PORTABLE_CLUSTER = 14


def shared_bytes(gates: int, batch: int, hidden: int, size: int, itemsize: int, exchanged: Optional[int] = None) -> int:
    """Dynamic shared memory per block: the weight rows of ``ceil(hidden / size)`` units (``gates * hidden``
    elements each) and two copies of the exchanged ``(batch, exchanged)`` state (the forward's ``h``:
    ``exchanged = hidden``, the default; the backward's gate gradients: ``gates * hidden``)."""
    units = -(-hidden // size)
    width = hidden if exchanged is None else exchanged
    return (gates * units * hidden + 2 * batch * width) * itemsize


def choose_cluster_size(
    gates: int, batch: int, hidden: int, itemsize: int, limit: int, exchanged: Optional[int] = None
) -> int:
    """The portable cluster size (8) where its blocks' shared memory holds the weights and the state, else the
    smallest larger size that does (16); ``ValueError`` where none does.

    Eight blocks rather than fewer: each step's mat-vec reads every weight from shared memory, so more blocks
    mean proportionally less time per step, while the cluster barrier costs about the same (to be confirmed
    by the benchmark's sweep over sizes).
    """
    if FORCE_CLUSTER_SIZE is not None:
        if FORCE_CLUSTER_SIZE not in CLUSTER_SIZES:
            raise ValueError(f"FORCE_CLUSTER_SIZE must be one of {CLUSTER_SIZES}, got {FORCE_CLUSTER_SIZE!r}")
        return FORCE_CLUSTER_SIZE
    for size in CLUSTER_SIZES:
        if size >= PORTABLE_CLUSTER_SIZE and shared_bytes(gates, batch, hidden, size, itemsize, exchanged) <= limit:
            return size
    largest = CLUSTER_SIZES[-1]
    what = "state" if exchanged is None else "gate gradients"
    raise ValueError(
        f"impl='cluster': the weights and {what} of B={batch}, H={hidden} need "
        f"{shared_bytes(gates, batch, hidden, largest, itemsize, exchanged)} bytes of shared memory per block even "
        f"in a cluster of {largest} blocks ({limit} available); use impl='persistent' or 'graph'"
    )


def fits(gates: int, batch: int, hidden: int, itemsize: int, limit: int, exchanged: Optional[int] = None) -> bool:
    """Whether some cluster size holds the weights and the exchanged state in ``limit`` bytes per block."""
    return any(
        shared_bytes(gates, batch, hidden, size, itemsize, exchanged) <= limit
        for size in CLUSTER_SIZES
        if size >= PORTABLE_CLUSTER_SIZE
    )


_shared_limits: dict[tuple[int, int], int] = {}


def cluster_shared_limit() -> int:
    """Shared memory a block of a cluster kernel may have on the current CUDA device: 0 where the device has no
    thread block clusters (before compute capability 9.0). Asked once per device (auto asks on every call)."""
    cp = cupy_module()
    device = cp.cuda.Device()
    key = (id(cp), int(device.id))
    found = _shared_limits.get(key)
    if found is None:
        found = 0 if int(device.compute_capability) < 90 else shared_memory_limit(cp, device)
        _shared_limits[key] = found
    return found


@dataclasses.dataclass(frozen=True)
class ClusterLaunch:
    """One launch of a cluster kernel: the kernel (for its batch tile and cluster size), the cluster size (the
    grid), the hidden units per block (the kernels' last argument) and the shared memory per block."""

    kernel: Any
    size: int  # blocks: the grid is one cluster
    units: int  # hidden units per block (the last blocks may have fewer, or none)
    shared_mem: int
    threads: int  # per block

    def run(self, args: tuple[Any, ...]) -> None:
        """Launch with ``args`` (every parameter but the last, ``units``, which this appends)."""
        self.kernel((self.size,), (self.threads,), (*args, int32(self.units)), shared_mem=self.shared_mem)


def refuse_unsupported(kind: str, params: Any, options: dict[str, Any]) -> None:
    """``ValueError`` for what the cluster kernels do not do: the LSTM projection, GRU with
    ``linear_before_reset=False`` (the forward and the gradient path alike)."""
    if kind == "lstm" and getattr(params, "weight_hr", None) is not None:
        raise ValueError("impl='cluster' does not support the LSTM projection (proj_size > 0); use impl='fused'")
    if kind == "gru" and not options.get("linear_before_reset", True):
        raise ValueError(
            "impl='cluster' supports GRU with linear_before_reset=True only; use impl='persistent' or 'graph'"
        )


def _require_clusters(device: Any) -> None:
    capability = int(device.compute_capability)
    if capability < 90:
        raise ValueError(
            f"impl='cluster' needs thread block clusters (compute capability 9.0 or later); this device is "
            f"{capability // 10}.{capability % 10}: use impl='persistent' or 'graph'"
        )


def plan_launch(
    base: str, dtype: str, batch: int, hidden: int, gates: int, exchanged: Optional[int] = None
) -> ClusterLaunch:
    """How to launch cluster kernel ``base`` (``cupy_cluster_sources``/``cupy_grad_cluster_sources``) for this
    shape: cluster size, batch tile, shared memory (opted in); ``ValueError`` where the device has no clusters
    or the shape does not fit one cluster (``exchanged``: see :func:`shared_bytes`)."""
    cp = cupy_module()
    device = cp.cuda.Device()
    _require_clusters(device)
    itemsize = ITEMSIZE[dtype]
    limit = shared_memory_limit(cp, device)
    size = choose_cluster_size(gates, batch, hidden, itemsize, limit, exchanged)
    shared_mem = shared_bytes(gates, batch, hidden, size, itemsize, exchanged)
    if shared_mem > limit:
        raise ValueError(
            f"impl='cluster': {shared_mem} bytes of shared memory per block for a cluster of {size} "
            f"(B={batch}, H={hidden}); {limit} available"
        )
    units = -(-hidden // size)
    tile = tile_for_warps(batch, units, THREADS // 32, FORCE_BATCH_TILE)
    name = cluster_kernel_name(base, tile, size)
    k = kernel(name, dtype)
    # as many of THREADS as the kernel's registers allow (float64 kernels use more: 512 threads may not fit)
    threads = min(THREADS, int(k.attributes["max_threads_per_block"]) // 32 * 32)
    allow_shared(k, name, shared_mem)
    if size > PORTABLE_CLUSTER_SIZE:
        _allow_non_portable(cp, k)
    return ClusterLaunch(k, size, units, shared_mem, threads)


#: (id(kernel), device) -> the kernel (held so that its id is not reused)
_non_portable: dict[tuple[int, int], Any] = {}


def _allow_non_portable(cp: Any, k: Any) -> None:
    """Let kernel ``k`` run in clusters larger than 8 blocks (once per kernel and device)."""
    key = (id(k), int(cp.cuda.Device().id))
    if _non_portable.get(key) is not k:
        cp.cuda.driver.funcSetAttribute(k.kernel.ptr, _ATTR_NON_PORTABLE_CLUSTER, 1)
        _non_portable[key] = k


def _run(
    base: str,
    x: Array,
    weight_ih: Array,
    weights: tuple[Array, ...],
    initial: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: int,
    gates: int,
    tail: tuple[Any, ...] = (),
) -> tuple[Array, tuple[Array, ...]]:
    cp = cupy_module()
    dtype = check_dtype(x.dtype, IMPL)
    steps, batch, _ = x.shape
    hidden = initial[0].shape[1]
    if batch == 0:
        return empty_batch_result(x, initial)
    launch = plan_launch(base, dtype, batch, hidden, gates)
    gx = project_inputs(x, weight_ih)
    h0 = cp.ascontiguousarray(initial[0])
    h_last = cp.empty((batch, hidden), dtype=x.dtype)
    cell = (cp.ascontiguousarray(initial[1]).copy(),) if len(initial) > 1 else ()
    y = cp.empty((steps, batch, hidden), dtype=x.dtype)
    sizes = (int32(steps), int32(batch), int32(hidden), int32(bool(reverse)), int32(options))
    launch.run((gx, *weights, lengths_int64(lengths), h0, h_last, *cell, y, *sizes, *tail))
    return y, (h_last, *cell)


def _sequence(
    kind: str,
    x: Array,
    params: Any,
    state: Any,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, tuple[Array, ...]]:
    refuse_unsupported(kind, params, options)
    with x.device:
        weights, bits, tail = step_arguments(kind, params, lengths, check_dtype(x.dtype, IMPL), options)
        gates = GATES[kind]
        return _run(f"{kind}_cluster", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, gates, tail)


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
    return _sequence("rnn", x, params, state, lengths, reverse, {"nonlinearity": nonlinearity})


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
    return _sequence("lstm", x, params, state, lengths, reverse, {"coupled": coupled, "clip": clip})


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
    return _sequence("gru", x, params, state, lengths, reverse, {"linear_before_reset": linear_before_reset})


def barrier_bench(size: int, threads: int, steps: int) -> Callable[[], None]:
    """A callable that launches one cluster of ``size`` blocks running ``steps`` cluster barriers and nothing else
    (for the benchmark: the per-step floor of a cluster kernel)."""
    cp = cupy_module()
    _require_clusters(cp.cuda.Device())
    k = kernel(cluster_barrier_bench_name(size), "float32")
    if size > PORTABLE_CLUSTER_SIZE:
        _allow_non_portable(cp, k)

    def run() -> None:
        k((size,), (threads,), (int32(steps),))

    return run
