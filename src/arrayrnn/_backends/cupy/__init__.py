"""The default CuPy fast path: picks "graph", "fused" or the generic core for each call.

Measured on an H100 against cuDNN (float32, ``benchmarks/results/gpu_h100_2026-11-27*.json``): at small
batch the step is latency-bound and the graph path (the whole time loop as one CUDA graph of fused mat-vec +
gate kernels) is the fastest of ours, ahead of the persistent kernel (one launch for the whole loop, a grid
barrier per step: 1.2-5x slower than graph in that run, see ``cupy_persistent``); the fused path (cuBLAS
recurrent matmul + one pointwise kernel per step) wins once the recurrent matmul is big enough to keep the
GPU busy. The thresholds below are module constants so a measurement can move them; ``impl="graph"`` /
``"persistent"`` / ``"cluster"`` / ``"fused"`` / ``"fused_graph"`` / ``"tiled"`` / ``"generic"`` (or ``ARRAYRNN_IMPL``)
overrides the choice. ``CLUSTER_AUTO`` (off until measured) lets auto pick the Hopper cluster path where it fits;
``FUSED_GRAPH_AUTO`` (off until measured) the fused loop replayed as a CUDA graph in place of the fused path;
``TILED_AUTO`` (off until measured) the block-tiled graph kernels for batches of 64 to 1024. The
gradient path follows the forward's choice: the small-batch gradient path (``GRAD_SMALL_BATCH_IMPL``) where the
forward would run the small-batch path, the fused (or fused_graph) one elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ..._core.sequence import GENERIC
from . import fused as cupy_kernels
from . import graph as cupy_graph
from .common import SUPPORTED_DTYPES
from .experimental import cluster as cupy_cluster
from .experimental import persistent as cupy_persistent
from .graph import GATES

Array = Any

#: the small-batch path ("graph" or "persistent") that auto picks where the warp-per-row kernels win
#: (H100, 2026-11-27: graph faster than persistent at every small-batch shape of the benchmark)
SMALL_BATCH_IMPL = "graph"
#: largest batch that runs on the small-batch path (per-warp mat-vec; cuBLAS wins beyond)
GRAPH_MAX_BATCH = 64
#: largest hidden size that runs on the small-batch path (not measured beyond; cuBLAS is the safe choice)
GRAPH_MAX_HIDDEN = 1024
#: largest graph-path buffer (input projection + output) kept per cached plan
GRAPH_MAX_BUFFER_BYTES = 256 << 20
#: auto runs "cluster" (forward and gradient) instead of the small-batch path where the GPU has thread block
#: clusters and the shape fits one cluster. Off: the cluster path is not measured yet (written 2026-11-27
#: without a GPU); a GPU run that shows it ahead (benchmarks/gpu_bench.py's cluster column) turns this on.
CLUSTER_AUTO = False
#: auto runs "fused_graph" (the fused loop replayed as one CUDA graph, forward and gradient) where it would run
#: "fused" and the plan's buffers stay under ``FUSED_GRAPH_MAX_BUFFER_BYTES``. Off: not measured yet (written
#: 2026-11-27 without a GPU); the benchmark's fused_graph columns decide.
FUSED_GRAPH_AUTO = False
#: auto runs "tiled" (graph plans of block-tiled step kernels: forward only) for batches from ``TILED_MIN_BATCH`` to
#: ``TILED_MAX_BATCH`` where it supports the call (no projection; GRU with linear_before_reset), in place of the
#: small-batch path or fused/fused_graph; the gradient path is unchanged. Off: not measured yet (2026-11-27).
TILED_AUTO = False
#: the batches "tiled" takes with ``TILED_AUTO`` (from 64 rows a step has 4 row tiles: 128 blocks at H = 512)
TILED_MIN_BATCH, TILED_MAX_BATCH = 64, 1024
#: largest fused_graph plan (input projection + output; the gradient's tape counted by ``GRAD_BUFFER_FACTOR``)
#: auto caches; beyond it each step's GPU work dwarfs its launch cost anyway
FUSED_GRAPH_MAX_BUFFER_BYTES = 1 << 30


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
) -> str:
    """``SMALL_BATCH_IMPL`` ("graph"), "cluster", "fused", "fused_graph" or "generic" for one call (pure function
    of the shapes and of ``cluster_shared``, the shared memory a cluster kernel's block may have on the GPU, 0
    without clusters: testable anywhere). "cluster" only with ``CLUSTER_AUTO``, where the small-batch path would
    run and the forward fits one cluster; "tiled" only with ``TILED_AUTO`` (batches ``TILED_MIN_BATCH`` to
    ``TILED_MAX_BATCH``); "fused_graph" only with ``FUSED_GRAPH_AUTO``, in place of "fused"."""
    if batch == 0 or dtype not in SUPPORTED_DTYPES:
        return "generic"
    itemsize = np.dtype(dtype).itemsize
    buffer_bytes = steps * batch * (GATES[kind] + 1) * hidden * itemsize
    small = batch <= GRAPH_MAX_BATCH and hidden <= GRAPH_MAX_HIDDEN
    graph_ok = not has_projection and weights_contiguous and buffer_bytes <= GRAPH_MAX_BUFFER_BYTES
    if graph_ok and small:
        cluster_ok = CLUSTER_AUTO and cluster_shared > 0 and linear_before_reset
        if cluster_ok and cupy_cluster.fits(GATES[kind], batch, hidden, itemsize, cluster_shared):
            return "cluster"
    if TILED_AUTO and graph_ok and linear_before_reset and TILED_MIN_BATCH <= batch <= TILED_MAX_BATCH:
        return "tiled"
    if graph_ok and small:
        return SMALL_BATCH_IMPL
    if FUSED_GRAPH_AUTO and weights_contiguous and buffer_bytes <= FUSED_GRAPH_MAX_BUFFER_BYTES:
        return "fused_graph"
    return "fused"


def _is_c_contiguous(array: Optional[Array]) -> bool:
    return array is None or bool(array.flags.c_contiguous)


def _choice(kind: str, x: Array, params: Any, options: dict[str, Any], steps_factor: int = 1) -> str:
    weight_hr = getattr(params, "weight_hr", None)
    graph_inputs = [params.weight_hh, params.bias_ih, params.bias_hh, weight_hr]
    graph_inputs += [getattr(params, name, None) for name in ("peephole_i", "peephole_f", "peephole_o")]
    return choose_impl(
        kind,
        steps=x.shape[0] * steps_factor,
        batch=x.shape[1],
        hidden=params.hidden_size,
        dtype=np.dtype(x.dtype).name,
        has_projection=weight_hr is not None,
        weights_contiguous=all(_is_c_contiguous(a) for a in graph_inputs),
        cluster_shared=cupy_cluster.cluster_shared_limit() if CLUSTER_AUTO else 0,
        linear_before_reset=bool(options.get("linear_before_reset", True)),
    )


def _implementation(kind: str, x: Array, params: Any, options: dict[str, Any]) -> Callable[..., Any]:
    choice = _choice(kind, x, params, options)
    if choice == "fused_graph":
        from .experimental import fused_graph as cupy_fused_graph

        return getattr(cupy_fused_graph, f"{kind}_sequence")
    if choice == "tiled":
        from .experimental import tiled as cupy_tiled

        return getattr(cupy_tiled, f"{kind}_sequence")
    if choice == "cluster":
        return getattr(cupy_cluster, f"{kind}_sequence")
    if choice == "persistent":
        return getattr(cupy_persistent, f"{kind}_sequence")
    if choice == "graph":
        return getattr(cupy_graph, f"{kind}_sequence")
    if choice == "fused":
        return getattr(cupy_kernels, f"{kind}_sequence")
    return GENERIC[kind]


def rnn_sequence(xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool, **options: Any) -> Any:
    return _implementation("rnn", x, params, options)(xp, x, params, state, lengths, reverse, **options)


def lstm_sequence(xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool, **options: Any) -> Any:
    return _implementation("lstm", x, params, options)(xp, x, params, state, lengths, reverse, **options)


def gru_sequence(xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool, **options: Any) -> Any:
    return _implementation("gru", x, params, options)(xp, x, params, state, lengths, reverse, **options)


#: a gradient plan (recording forward + backward) holds about this many times the forward plan's buffers
GRAD_BUFFER_FACTOR = 4
#: the gradient path auto picks where the forward would take the small-batch path: "graph" (replayed CUDA
#: graphs) or "persistent" (the same plans run by the graph executor, one launch per loop; 1.1-2.2x slower
#: than graph on an H100, 2026-11-27)
GRAD_SMALL_BATCH_IMPL = "graph"


def sequence_vjp(xp: Any, kind: str, x: Array, params: Any, state: Any, lengths: Any, reverse: bool, options: Any):
    """The default CuPy gradient path for ``ar.vjp``: ``GRAD_SMALL_BATCH_IMPL`` where the forward would run the
    small-batch path (``choose_impl``), else "fused".

    ``None`` (declined: the generic core runs) where the chosen path declines (dtype, empty batch).
    """
    from . import grad_fused as cupy_grad
    from . import grad_graph as cupy_grad_graph
    from .experimental import grad_cluster as cupy_grad_cluster
    from .experimental import grad_fused_graph as cupy_grad_fused_graph

    forward = _choice(kind, x, params, options, steps_factor=GRAD_BUFFER_FACTOR)
    shared = cupy_cluster.cluster_shared_limit() if forward == "cluster" else 0
    choice = grad_choice(
        kind, forward, batch=x.shape[1], hidden=params.hidden_size, dtype=x.dtype, cluster_shared=shared
    )
    if choice == "cluster":
        return cupy_grad_cluster.sequence_vjp(xp, kind, x, params, state, lengths, reverse, options)
    if choice == "fused_graph":
        return cupy_grad_fused_graph.sequence_vjp(xp, kind, x, params, state, lengths, reverse, options)
    if choice == "persistent":
        return cupy_grad_graph.sequence_vjp_persistent(xp, kind, x, params, state, lengths, reverse, options)
    if choice == "graph":
        return cupy_grad_graph.sequence_vjp(xp, kind, x, params, state, lengths, reverse, options)
    return cupy_grad.sequence_vjp(xp, kind, x, params, state, lengths, reverse, options)


def grad_choice(kind: str, forward: str, *, batch: int, hidden: int, dtype: Any, cluster_shared: int = 0) -> str:
    """The gradient path for a call whose forward ``choose_impl`` (at ``GRAD_BUFFER_FACTOR`` times the steps) picks
    ``forward``: "cluster" where that is the forward's pick and the backward fits one cluster too (it exchanges
    the gate gradients, ``G * H`` columns, where the forward exchanges ``H``), else ``GRAD_SMALL_BATCH_IMPL`` where
    the forward runs a small-batch path, else "fused_graph" where that is the forward's pick, else "fused" (pure:
    testable anywhere)."""
    if forward == "tiled":  # forward only: the gradient takes the path auto would have taken without it
        if batch <= GRAPH_MAX_BATCH and hidden <= GRAPH_MAX_HIDDEN:
            return GRAD_SMALL_BATCH_IMPL  # (tiled's conditions include the small-batch path's)
        forward = "fused_graph" if FUSED_GRAPH_AUTO else "fused"
    if forward == "fused_graph":
        return "fused_graph"
    if forward not in ("graph", "persistent", "cluster"):
        return "fused"
    gates, itemsize = GATES[kind], np.dtype(dtype).itemsize
    if forward == "cluster" and cupy_cluster.fits(gates, batch, hidden, itemsize, cluster_shared, gates * hidden):
        return "cluster"
    return GRAD_SMALL_BATCH_IMPL


#: environment variable that sets the switches above for a whole run, e.g.
#: ``ARRAYRNN_CUPY_DISPATCH=CLUSTER_AUTO=1,FUSED_GRAPH_AUTO=1`` (read once, at the first CuPy call): a GPU
#: different from the one the defaults were measured on, or ``ci/gpu.sh`` testing the switches a benchmark supports
DISPATCH_ENV = "ARRAYRNN_CUPY_DISPATCH"
#: the switches the variable may set, and their values (``True``/``False`` as 1/0, true/false, on/off; the largest
#: batch of the small-batch path among a few: the benchmark's batches fall between them)
SWITCHES: dict[str, tuple[Any, ...]] = {
    "CLUSTER_AUTO": (False, True),
    "FUSED_GRAPH_AUTO": (False, True),
    "SMALL_BATCH_IMPL": ("graph", "persistent"),
    "GRAD_SMALL_BATCH_IMPL": ("graph", "persistent"),
    "GRAPH_MAX_BATCH": (8, 32, 64),
    "TILED_AUTO": (False, True),
}
_BOOLEANS = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def apply_switches(text: str) -> dict[str, Any]:
    """Set the switches named in ``text`` (``NAME=value,NAME=value``); returns what was set. A name or value outside
    ``SWITCHES`` raises a ``ValueError`` naming ``ARRAYRNN_CUPY_DISPATCH`` and what it accepts."""
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        allowed = SWITCHES.get(name)
        if allowed is None:
            raise ValueError(f"{DISPATCH_ENV}: unknown switch {name!r}; known: {', '.join(SWITCHES)}")
        boolean, integer = (
            isinstance(allowed[0], bool),
            isinstance(allowed[0], int) and not isinstance(allowed[0], bool),
        )
        value: Any = _BOOLEANS.get(raw.lower()) if boolean else int(raw) if integer and raw.isdigit() else raw
        if value not in allowed or (boolean and raw.lower() not in _BOOLEANS) or (integer and not raw.isdigit()):
            shown = "1/0" if boolean else " or ".join(str(v) for v in allowed)
            raise ValueError(f"{DISPATCH_ENV}: {name} must be {shown}, got {raw!r}")
        settings[name] = value
    globals().update(settings)
    return settings


if os.environ.get(DISPATCH_ENV):
    apply_switches(os.environ[DISPATCH_ENV])
