"""CuPy fast path "persistent": the whole time loop in ONE kernel launch, steps separated by a grid barrier.

One cooperative launch (every block resident), each block's weight rows staged in shared memory. Supports what
the graph path does except the LSTM projection, float16/32/64. Measurements: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from .. import policy, runtime
from ..common import (
    cooperative_launch,
    cupy_module,
    dtype_name,
    int32,
    kernel,
    lengths_int64,
    lstm_variant_reason,
    project_inputs,
    refuse,
    resident_blocks,
)
from ..graph import step_arguments
from ..sources import BATCH_TILES, OPTIONS, graph_kernel_name

Array = Any

IMPL = "persistent"

#: the barrier counter is 32-bit: arrivals = blocks * barriers must stay below 2**32
_MAX_ARRIVALS = 2**32 - 1


def choose_batch_tile(batch: int, hidden: int, warps: int, config: Optional[policy.Config] = None) -> int:
    """Batch rows per task (``persistent_force_batch_tile`` of ``config``, default the current one, or
    :func:`tile_for_warps`)."""
    forced = (config or policy.current()).persistent_force_batch_tile
    return tile_for_warps(batch, hidden, warps, forced, "persistent_force_batch_tile")


def tile_for_warps(batch: int, units: int, warps: int, forced: Optional[int] = None, knob: str = "forced") -> int:
    """Batch rows per (unit, batch tile) task: ``forced`` if given (``knob``: its name, in the error when it is not
    a batch tile), else the smallest tile that gives each of ``warps`` warps at most one task of ``units`` units per
    step (fewer, larger tasks reuse each weight load for more rows), else the largest."""
    if forced is not None:
        if forced not in BATCH_TILES:
            raise ValueError(f"{knob} must be one of {BATCH_TILES}, got {forced!r}")
        return forced
    for tile in BATCH_TILES:
        if -(-batch // tile) * units <= warps:
            return tile
    return BATCH_TILES[-1]


#: shared memory a block may use without opting in (CUDA's static limit)
_DEFAULT_SHARED = 48 * 1024


@dataclasses.dataclass(frozen=True)
class _Launch:
    """How one call launches: the kernel (for its batch tile), the grid and the shared memory per block."""

    kernel: Any
    blocks: int
    units: int  # hidden units per block (the last block may have fewer)
    shared_mem: int  # bytes of dynamic shared memory: the block's weight rows


def _launch_shape(base: str, dtype: str, batch: int, hidden: int, gates: int, config: policy.Config) -> _Launch:
    """Blocks own hidden units (all batch rows of them) and keep those units' weight rows in shared memory.

    Units per block: enough for about one warp task per warp (the block's warps then work in parallel on
    different units), more where that would need more blocks than fit at once.
    """
    cp = cupy_module()
    device = cp.cuda.Device()
    sms = int(device.attributes["MultiProcessorCount"])
    threads = config.persistent_threads
    warps_per_block = threads // 32
    tile = choose_batch_tile(batch, hidden, sms * config.persistent_blocks_per_sm * warps_per_block, config)
    name = graph_kernel_name(base, tile)
    k = kernel(name, dtype)
    limit = block_cap(config)
    units = max(1, -(-warps_per_block // -(-batch // tile)), -(-hidden // limit))
    itemsize = ITEMSIZE[dtype]
    shared_mem = gates * units * hidden * itemsize
    most = shared_memory_limit(cp, device)
    if shared_mem > most:
        raise ValueError(
            f"impl='persistent': the weights of {units} hidden units per block ({shared_mem} bytes) exceed the "
            f"{most} bytes of shared memory a block may have; use impl='graph' or 'fused'"
        )
    allow_shared(k, name, shared_mem)
    blocks = -(-hidden // units)
    resident = resident_blocks(k, name, threads, shared_mem)
    if blocks > resident:
        raise ValueError(f"impl='persistent': {blocks} blocks do not fit on this device at once ({resident} do)")
    return _Launch(k, blocks, units, shared_mem)


def block_cap(config: Optional[policy.Config] = None) -> int:
    """Blocks one cooperative launch may have before occupancy: ``persistent_blocks_per_sm`` per multiprocessor of
    the current device, and at most ``persistent_max_blocks`` (of ``config``, default the current one)."""
    config = config or policy.current()
    sms = int(cupy_module().cuda.Device().attributes["MultiProcessorCount"])
    per_sm, most = config.persistent_blocks_per_sm, config.persistent_max_blocks
    return sms * per_sm if most is None else min(sms * per_sm, most)


def launch_with_barrier(
    k: Any,
    blocks: int,
    threads: int,
    arguments: Callable[[Array], tuple[Any, ...]],
    shared_mem: int = 0,
    what: str = "impl='persistent'",
    config: Optional[policy.Config] = None,
) -> None:
    """One cooperative launch of a kernel with a grid barrier: ``arguments(counter)`` gives its arguments around a
    fresh zeroed barrier counter; with ``persistent_check_barrier`` (of ``config``, default the current one) a
    timed-out barrier raises instead of going unnoticed."""
    config = config or policy.current()
    counter = cupy_module().zeros((2,), dtype="uint32")
    cooperative_launch(k, (blocks,), (threads,), arguments(counter), shared_mem)
    if config.persistent_check_barrier and int(counter[1]) != 0:
        raise RuntimeError(f"{what}: a grid barrier timed out ({blocks} blocks)")


ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}
#: cudaDevAttrMaxSharedMemoryPerBlockOptin in the CUDA runtime's attribute enumeration
_ATTR_SHARED_OPTIN = 97


def shared_memory_limit(cp: Any, device: Any) -> int:
    """Dynamic shared memory one block may opt in to on ``device`` (48 KiB if the device will not say)."""
    found = device.attributes.get("MaxSharedMemoryPerBlockOptin")
    if found is None:
        try:
            found = cp.cuda.runtime.deviceGetAttribute(_ATTR_SHARED_OPTIN, device.id)
        except Exception:  # an older CuPy or a stand-in without the call: the limit every device has
            found = _DEFAULT_SHARED
    return int(found)


#: (id(kernel), name, device) -> (kernel, bytes allowed); the kernel is held so that its id is not reused
_allowed_shared = runtime.cache("persistent.allowed_shared")


def allow_shared(k: Any, name: str, shared_mem: int) -> None:
    """Opt kernel ``k`` in to ``shared_mem`` bytes of dynamic shared memory where that is over CUDA's static
    48 KiB (once per kernel, device and size: the attribute belongs to the kernel as loaded on the current
    device)."""
    if shared_mem <= _DEFAULT_SHARED:
        return
    key = (id(k), name, int(cupy_module().cuda.Device().id))
    held, allowed = _allowed_shared.get(key, (None, 0))
    if held is not k or allowed < shared_mem:
        k.max_dynamic_shared_size_bytes = shared_mem
        _allowed_shared[key] = (k, shared_mem)


def _run(
    base: str,
    x: Array,
    weight_ih: Array,
    weights: tuple[Array, ...],
    initial: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: int,
    barriers_per_step: int,
    gates: int,
    tail: tuple[Any, ...] = (),
    scratch: bool = False,
) -> tuple[Array, tuple[Array, ...]]:
    cp = cupy_module()
    config = policy.current()
    dtype = dtype_name(x.dtype)
    steps, batch, _ = x.shape
    hidden = initial[0].shape[1]
    launch = _launch_shape(base, dtype, batch, hidden, gates, config)
    blocks = launch.blocks
    if blocks * barriers_per_step * steps > _MAX_ARRIVALS:
        raise ValueError(f"impl='persistent': sequence too long ({steps} steps) for the 32-bit barrier counter")
    gx = project_inputs(x, weight_ih)
    h_states = cp.empty((2, batch, hidden), dtype=x.dtype)
    cp.copyto(h_states[0], initial[0])
    cell = (cp.ascontiguousarray(initial[1]).copy(),) if len(initial) > 1 else ()
    extra = (cp.empty((batch, hidden), dtype=x.dtype),) if scratch else ()
    y = cp.empty((steps, batch, hidden), dtype=x.dtype)
    bits = int32(options | barrier_options(config))
    sizes = (int32(steps), int32(batch), int32(hidden), int32(bool(reverse)), bits)
    head = (gx, *weights, lengths_int64(lengths), h_states, *cell, *extra, y)
    launch_with_barrier(
        launch.kernel,
        blocks,
        config.persistent_threads,
        lambda counter: (*head, counter, *sizes, *tail, int32(launch.units)),
        launch.shared_mem,
        f"impl='persistent' ({base})",
        config,
    )
    return y, (h_states[steps % 2].copy(), *cell)


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why this path cannot run a call (the LSTM projection, the Greff LSTM variants), or ``None`` where it can."""
    variant = lstm_variant_reason("persistent", kind, params, options)
    if variant is not None:
        return variant
    if kind == "lstm" and getattr(params, "weight_hr", None) is not None:
        return "impl='persistent' does not support the LSTM projection (proj_size > 0); use impl='fused'"
    return None


def _rnn(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         nonlinearity: str = "tanh") -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    weights, bits, _ = step_arguments("rnn", params, lengths, dtype_name(x.dtype), {"nonlinearity": nonlinearity})
    return _run("rnn_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, 1, 1)


def _lstm(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *, coupled: bool = False,
          clip: Optional[float] = None) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    options = {"coupled": coupled, "clip": clip}
    weights, bits, tail = step_arguments("lstm", params, lengths, dtype_name(x.dtype), options)
    return _run("lstm_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, 1, 4, tail)


def _gru(x: Array, params: Any, state: Any, lengths: Optional[Array], reverse: bool, *,
         linear_before_reset: bool = True) -> tuple[Array, tuple[Array, ...]]:  # fmt: skip
    weights, bits, _ = step_arguments("gru", params, lengths, dtype_name(x.dtype), {})
    if linear_before_reset:
        return _run("gru_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, 1, 3)
    return _run(
        "gru_reset_persistent", x, params.weight_ih, weights, tuple(state), lengths, reverse, bits, 2, 3, scratch=True
    )


_SEQUENCES = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}


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
    """As ``graph.sequence``, the whole time loop in one cooperative launch."""
    refuse(supports(kind, params, options))
    return _SEQUENCES[kind](x, params, state, lengths, reverse, **options)


def barrier_options(config: Optional[policy.Config] = None) -> int:
    """The option bits that choose the grid barrier's flavour (``persistent_acqrel_barrier`` of ``config``, default
    the current one)."""
    return OPTIONS["OPT_ACQREL_BARRIER"] if (config or policy.current()).persistent_acqrel_barrier else 0


def barrier_bench(blocks: int, threads: int, steps: int, acqrel: bool) -> Any:
    """A callable that launches ``steps`` grid barriers and nothing else on ``blocks`` blocks (for the benchmark:
    the per-step floor of a persistent kernel). Raises where that many blocks cannot be resident at once."""
    cp = cupy_module()
    k = kernel("grid_barrier_bench", "float32")
    if blocks > resident_blocks(k, "grid_barrier_bench", threads):
        raise ValueError(f"{blocks} blocks of {threads} threads do not fit on this device at once")
    counter = cp.zeros((2,), dtype=cp.uint32)
    options = int32(OPTIONS["OPT_ACQREL_BARRIER"] if acqrel else 0)

    def run() -> None:
        counter.fill(0)
        cooperative_launch(k, (blocks,), (threads,), (counter, int32(steps), options))

    return run
