"""CuPy settings: one frozen :class:`Config` (dispatch switches, thresholds, the paths' knobs) and the pure choices.

``ARRAYRNN_CUPY_DISPATCH=NAME=value,...`` builds the process-wide config once; :func:`configured` swaps a changed
copy in for a ``with`` block (tests, benchmarks); the paths read :func:`current` once per call. No CuPy import."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

#: gates per cell (rows of ``weight_ih`` per hidden unit)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: storage dtypes the CuPy kernels are written for
SUPPORTED_DTYPES = ("float16", "float32", "float64")
#: the environment variable read once to build the process-wide config
DISPATCH_ENV = "ARRAYRNN_CUPY_DISPATCH"


@dataclasses.dataclass(frozen=True)
class Config:
    """Every switch and threshold the CuPy dispatcher reads, and every knob of the paths themselves (launch shapes,
    plan cache sizes, test switches); see ``benchmarks/NOTES.md`` for the measurements."""

    #: the small-batch path auto picks where the warp-per-unit kernels win: "graph" or "persistent"
    small_batch_impl: str = "graph"
    #: largest batch / hidden size that runs on the small-batch path (cuBLAS wins beyond)
    graph_max_batch: int = 64
    graph_max_hidden: int = 1024
    #: largest graph-path buffer (input projection + output) kept per cached plan
    graph_max_buffer_bytes: int = 256 << 20
    #: auto may pick the Hopper "cluster" path where the shape fits one cluster (off until a GPU run shows it wins)
    cluster_auto: bool = False
    #: auto may pick "fused_graph" in place of "fused" (off until measured)
    fused_graph_auto: bool = False
    #: auto may pick "tiled" for batches ``tiled_min_batch`` to ``tiled_max_batch`` (forward only; off until measured)
    tiled_auto: bool = False
    tiled_min_batch: int = 64
    tiled_max_batch: int = 1024
    #: largest fused_graph plan auto caches (input projection + output)
    fused_graph_max_buffer_bytes: int = 1 << 30
    #: a gradient plan holds about this many times the forward plan's buffers
    grad_buffer_factor: int = 4
    #: the gradient path where the forward would take the small-batch path: "graph" or "persistent"
    grad_small_batch_impl: str = "graph"

    # the paths' own knobs (not dispatch switches: ``ARRAYRNN_CUPY_DISPATCH`` does not set them)

    #: threads per block of the one-thread-per-element kernels ("fused" and the fused gradient loops)
    fused_block: int = 256
    #: capture the graph paths' launches as CUDA graphs (False: launch the same kernels one by one, for bisecting;
    #: also the "fused_graph" paths' recorded calls)
    graph_capture: bool = True
    #: cached "graph" forward plans (each holds its graph and its buffers)
    graph_max_plans: int = 16
    #: force the graph kernels' batch rows per warp (None: ``graph.choose_batch_tile``); for benchmarks and tests
    graph_force_batch_tile: Optional[int] = None
    #: warps per block of the graph kernels (one warp per hidden unit and batch tile)
    graph_warps_per_block: int = 4
    #: aim for at least this many warps per launch when choosing the graph batch tile (keeps the SMs busy; the
    #: measurement behind the value: benchmarks/NOTES.md)
    graph_min_warps: int = 8192
    #: cached "graph" gradient plans (each holds its graph and its buffers; gradient plans hold a whole tape)
    grad_graph_max_plans: int = 16
    #: weight gradients (``sum_t d_out[t]^T inputs[t]``, ``T*B`` rows) in this many chunks, one batched matmul over
    #: the chunks, then their sum (> 1; at least ``grad_weight_grad_min_rows`` rows per chunk); None: one matmul,
    #: split or not as cuBLAS decides. Not yet timed against each other on a GPU: the benchmark's breakdown times
    #: both
    grad_weight_grad_chunks: Optional[int] = None
    grad_weight_grad_min_rows: int = 4096
    #: bias (and peephole) gradients as a product with a ones vector (one cuBLAS pass over ``(T*B, G*H)``); False:
    #: CuPy's ``sum(axis=(0, 1))`` (why the product: ``grad_fused._bias_grad``; the breakdown times both)
    grad_bias_by_matmul: bool = True
    #: cached "fused_graph" forward plans (each holds its graph and the input projection of a whole sequence)
    fused_graph_max_plans: int = 8
    #: cached "fused_graph" gradient plans (each holds a whole tape and the backward's buffers)
    grad_fused_graph_max_plans: int = 4
    #: bytes of cuBLAS workspace a "fused_graph" plan gives its products (cuBLAS's guide suggests 32 MiB on Hopper
    #: for its widest kernels; these products are small: 4 MiB leaves split-K room without 32 MiB per cached plan)
    fused_graph_workspace_bytes: int = 4 << 20
    #: threads per block of the persistent kernels (8 warps)
    persistent_threads: int = 256
    #: persistent blocks per multiprocessor at most (more blocks = more arrivals at every barrier)
    persistent_blocks_per_sm: int = 1
    #: cap on the blocks of one persistent launch (None: as many as there are tasks for and fit); tests force
    #: several tasks per warp
    persistent_max_blocks: Optional[int] = None
    #: force the persistent kernels' batch rows per warp task (None: ``persistent.choose_batch_tile``); benchmarks
    persistent_force_batch_tile: Optional[int] = None
    #: read the grid barrier's timeout flag after every persistent launch (a device-to-host copy and a sync: tests
    #: and the smoke check only)
    persistent_check_barrier: bool = False
    #: grid barrier with release/acquire atomics instead of two full fences (not yet measured against them: the
    #: benchmark's barrier section times both; the fences are cooperative_groups' own pattern)
    persistent_acqrel_barrier: bool = False
    #: threads per block of the graph executor (fewer where its register use does not allow that many)
    executor_threads: int = 256
    #: threads per block of the cluster kernels (at most: fewer where the kernel's registers do not allow as many,
    #: as for float64). 16 warps: one block holds all its tasks of a small step at once (LSTM H = 128, B = 1 on 8
    #: blocks: 16 unit tasks)
    cluster_threads: int = 512
    #: force the blocks per cluster (None: ``cluster.choose_cluster_size``); for benchmarks and tests
    cluster_force_cluster_size: Optional[int] = None
    #: force the cluster kernels' batch rows per warp task (None: the smallest tile that gives each warp at most one
    #: task); for benchmarks and tests
    cluster_force_batch_tile: Optional[int] = None

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (field names); unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)


#: the switches ``ARRAYRNN_CUPY_DISPATCH`` may set (upper-case names) and their accepted values
SWITCHES: dict[str, tuple[Any, ...]] = {
    "CLUSTER_AUTO": (False, True),
    "FUSED_GRAPH_AUTO": (False, True),
    "SMALL_BATCH_IMPL": ("graph", "persistent"),
    "GRAD_SMALL_BATCH_IMPL": ("graph", "persistent"),
    "GRAPH_MAX_BATCH": (8, 32, 64),
    "TILED_AUTO": (False, True),
}
_BOOLEANS = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def parse_switches(text: str) -> dict[str, Any]:
    """``NAME=value,NAME=value`` -> ``{NAME: value}``. A name or value outside ``SWITCHES`` raises a
    ``ValueError`` naming ``ARRAYRNN_CUPY_DISPATCH`` and what it accepts."""
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        allowed = SWITCHES.get(name)
        if allowed is None:
            raise ValueError(f"{DISPATCH_ENV}: unknown switch {name!r}; known: {', '.join(SWITCHES)}")
        boolean = isinstance(allowed[0], bool)
        integer = isinstance(allowed[0], int) and not boolean
        value: Any = _BOOLEANS.get(raw.lower()) if boolean else int(raw) if integer and raw.isdigit() else raw
        if value not in allowed or (boolean and raw.lower() not in _BOOLEANS) or (integer and not raw.isdigit()):
            shown = "1/0" if boolean else " or ".join(str(v) for v in allowed)
            raise ValueError(f"{DISPATCH_ENV}: {name} must be {shown}, got {raw!r}")
        settings[name] = value
    return settings


def from_switches(text: str, base: Optional[Config] = None) -> Config:
    """``base`` (default: the built-in defaults) with the switches named in ``text`` set."""
    changes = {name.lower(): value for name, value in parse_switches(text).items()}
    return (base or Config()).replace(**changes)


_lock = threading.Lock()
_current: Optional[Config] = None


def current() -> Config:
    """The config in force: the innermost :func:`configured` block's, else the process-wide one (built from
    ``ARRAYRNN_CUPY_DISPATCH`` at the first call)."""
    global _current
    found = _current
    if found is None:
        with _lock:
            if _current is None:
                _current = from_switches(os.environ.get(DISPATCH_ENV, ""))
            found = _current
    return found


@contextlib.contextmanager
def configured(config: Optional[Config] = None, **changes: Any) -> Iterator[Config]:
    """Run a block with ``config`` (default: the current one) changed by ``changes``; the previous config is
    restored after. Process-wide, like the settings it replaces: for tests and benchmarks, not for threads."""
    global _current
    previous = current()
    chosen = (config or previous).replace(**changes)
    _current = chosen
    try:
        yield chosen
    finally:
        _current = previous


def _cluster_fits(*args: Any) -> bool:
    """``cluster_sources.fits(*args)``, or ``False`` without ``experimental/``: auto never picks a missing path."""
    try:
        from .experimental import cluster_sources
    except ImportError:
        return False
    return bool(cluster_sources.fits(*args))


def choose_impl(
    kind: str,
    *,
    steps: int,
    batch: int,
    hidden: int,
    dtype: str,
    has_projection: bool = False,
    weights_contiguous: bool = True,
    cluster_shared: int = 0,
    linear_before_reset: bool = True,
    config: Optional[Config] = None,
) -> str:
    """The forward path auto runs for one call: ``config.small_batch_impl``, "cluster", "tiled", "fused",
    "fused_graph" or "generic" (a pure function of the shapes, of ``config`` and of ``cluster_shared``, the shared
    memory a cluster kernel's block may have on the GPU, 0 without clusters)."""
    config = config or current()
    if batch == 0 or dtype not in SUPPORTED_DTYPES:
        return "generic"
    itemsize = np.dtype(dtype).itemsize
    buffer_bytes = steps * batch * (GATES[kind] + 1) * hidden * itemsize
    small = batch <= config.graph_max_batch and hidden <= config.graph_max_hidden
    graph_ok = not has_projection and weights_contiguous and buffer_bytes <= config.graph_max_buffer_bytes
    if graph_ok and small and config.cluster_auto and cluster_shared > 0 and linear_before_reset:
        if _cluster_fits(GATES[kind], batch, hidden, itemsize, cluster_shared):
            return "cluster"
    tiled_batch = config.tiled_min_batch <= batch <= config.tiled_max_batch
    if config.tiled_auto and graph_ok and linear_before_reset and tiled_batch:
        return "tiled"
    if graph_ok and small:
        return config.small_batch_impl
    if config.fused_graph_auto and weights_contiguous and buffer_bytes <= config.fused_graph_max_buffer_bytes:
        return "fused_graph"
    return "fused"


def grad_choice(
    kind: str,
    forward: str,
    *,
    batch: int,
    hidden: int,
    dtype: Any,
    cluster_shared: int = 0,
    config: Optional[Config] = None,
) -> str:
    """The gradient path for a call whose forward :func:`choose_impl` (at ``grad_buffer_factor`` times the steps)
    picks ``forward``: "cluster" where that is the forward's pick and the backward fits one cluster too, else
    ``grad_small_batch_impl`` where the forward runs a small-batch path, else "fused_graph" where that is the
    forward's pick, else "fused"."""
    config = config or current()
    if forward == "tiled":  # forward only: the gradient takes the path auto would have taken without it
        if batch <= config.graph_max_batch and hidden <= config.graph_max_hidden:
            return config.grad_small_batch_impl
        forward = "fused_graph" if config.fused_graph_auto else "fused"
    if forward == "fused_graph":
        return "fused_graph"
    if forward not in ("graph", "persistent", "cluster"):
        return "fused"
    if forward == "cluster":
        gates, itemsize = GATES[kind], np.dtype(dtype).itemsize
        if _cluster_fits(gates, batch, hidden, itemsize, cluster_shared, gates * hidden):
            return "cluster"
    return config.grad_small_batch_impl
