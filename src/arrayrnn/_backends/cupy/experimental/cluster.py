"""CuPy fast path "cluster" (Hopper and later): the whole time loop in ONE launch of ONE thread block cluster.

Fits where one cluster's shared memory holds the weights and two copies of the state; GRU with
``linear_before_reset=False``, the LSTM projection and GPUs before compute capability 9.0 raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from .. import policy, runtime
from ..common import cupy_module, dtype_name, int32, kernel, lengths_int64, lstm_variant_reason, project_inputs, refuse
from ..graph import GATES, step_arguments
from .cluster_sources import (
    CLUSTER_SIZES,
    PORTABLE_CLUSTER_SIZE,
    cluster_barrier_bench_name,
    cluster_kernel_name,
    shared_bytes,
)
from .persistent import ITEMSIZE, allow_shared, shared_memory_limit, tile_for_warps

Array = Any

IMPL = "cluster"

#: CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED (cuda.h)
_ATTR_NON_PORTABLE_CLUSTER = 14


def choose_cluster_size(
    gates: int,
    batch: int,
    hidden: int,
    itemsize: int,
    limit: int,
    exchanged: Optional[int] = None,
    config: Optional[policy.Config] = None,
) -> int:
    """The portable cluster size (8) where its blocks' shared memory holds the weights and the state, else the
    smallest larger size that does (16); ``ValueError`` where none does; ``cluster_force_cluster_size`` of ``config``
    (default the current one) where set.

    Eight blocks rather than fewer: each step's mat-vec reads every weight from shared memory, so more blocks
    mean proportionally less time per step, while the cluster barrier costs about the same (to be confirmed
    by the benchmark's sweep over sizes).
    """
    forced = (config or policy.current()).cluster_force_cluster_size
    if forced is not None:
        if forced not in CLUSTER_SIZES:
            raise ValueError(f"cluster_force_cluster_size must be one of {CLUSTER_SIZES}, got {forced!r}")
        return forced
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


#: (id(cupy), device) -> the shared memory a cluster kernel's block may have there (0: no clusters)
_shared_limits = runtime.cache("cluster.shared_limits")


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


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why the cluster kernels cannot run a call, or ``None`` where they can: the LSTM projection, GRU with
    ``linear_before_reset=False`` (the forward and the gradient path alike). What the device and the shape allow
    (thread block clusters, shared memory) is known only on the device: :func:`plan_launch` refuses that."""
    variant = lstm_variant_reason("cluster", kind, params, options)
    if variant is not None:
        return variant
    if kind == "lstm" and getattr(params, "weight_hr", None) is not None:
        return "impl='cluster' does not support the LSTM projection (proj_size > 0); use impl='fused'"
    if kind == "gru" and not options.get("linear_before_reset", True):
        return "impl='cluster' supports GRU with linear_before_reset=True only; use impl='persistent' or 'graph'"
    return None


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
    config = policy.current()
    device = cp.cuda.Device()
    _require_clusters(device)
    itemsize = ITEMSIZE[dtype]
    limit = shared_memory_limit(cp, device)
    size = choose_cluster_size(gates, batch, hidden, itemsize, limit, exchanged, config)
    shared_mem = shared_bytes(gates, batch, hidden, size, itemsize, exchanged)
    if shared_mem > limit:
        raise ValueError(
            f"impl='cluster': {shared_mem} bytes of shared memory per block for a cluster of {size} "
            f"(B={batch}, H={hidden}); {limit} available"
        )
    units = -(-hidden // size)
    most = config.cluster_threads
    tile = tile_for_warps(batch, units, most // 32, config.cluster_force_batch_tile, "cluster_force_batch_tile")
    name = cluster_kernel_name(base, tile, size)
    k = kernel(name, dtype)
    # as many of cluster_threads as the kernel's registers allow (float64 kernels use more: 512 may not fit)
    threads = min(most, int(k.attributes["max_threads_per_block"]) // 32 * 32)
    allow_shared(k, name, shared_mem)
    if size > PORTABLE_CLUSTER_SIZE:
        _allow_non_portable(cp, k)
    return ClusterLaunch(k, size, units, shared_mem, threads)


#: (id(kernel), device) -> the kernel (held so that its id is not reused)
_non_portable = runtime.cache("cluster.non_portable")


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
    dtype = dtype_name(x.dtype)
    steps, batch, _ = x.shape
    hidden = initial[0].shape[1]
    launch = plan_launch(base, dtype, batch, hidden, gates)
    gx = project_inputs(x, weight_ih)
    h0 = cp.ascontiguousarray(initial[0])
    h_last = cp.empty((batch, hidden), dtype=x.dtype)
    cell = (cp.ascontiguousarray(initial[1]).copy(),) if len(initial) > 1 else ()
    y = cp.empty((steps, batch, hidden), dtype=x.dtype)
    sizes = (int32(steps), int32(batch), int32(hidden), int32(bool(reverse)), int32(options))
    launch.run((gx, *weights, lengths_int64(lengths), h0, h_last, *cell, y, *sizes, *tail))
    return y, (h_last, *cell)


def sequence(
    kind: str,
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, tuple[Array, ...]]:
    """As ``graph.sequence``, the whole time loop in one launch of one thread block cluster."""
    refuse(supports(kind, params, options))
    weights, bits, tail = step_arguments(kind, params, lengths, dtype_name(x.dtype), options)
    gates = GATES[kind]
    return _run(f"{kind}_cluster", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, gates, tail)


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
