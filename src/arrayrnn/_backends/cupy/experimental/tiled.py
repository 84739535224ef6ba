"""CuPy fast path "tiled": the graph path with block-tiled step kernels, for batches past the warp-per-unit range.

Supports RNN, LSTM (no projection: use "fused" or "fused_graph") and GRU with ``linear_before_reset=True``;
float16/32/64.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from .. import graph as cupy_graph
from .. import policy
from ..common import kernel, lstm_variant_reason, refuse
from .sources import TILED, TILED_THREADS, tiled_shared_bytes

Array = Any

IMPL = "tiled"


def launch_shape(
    batch: int, hidden: int, tile: int = 0, config: Optional[policy.Config] = None
) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for a tiled kernel: one block per tile of batch rows x hidden units (``tile`` is always 0; the
    shape is fixed by the kernels: ``config`` is not read)."""
    rows, units = TILED["TILED_ROWS"], TILED["TILED_UNITS"]
    return (-(-batch // rows) * -(-hidden // units),), (TILED_THREADS,)


@dataclasses.dataclass(frozen=True)
class _WithSharedMemory:
    """A kernel launched with ``shared_mem`` bytes of dynamic shared memory (called as plans call kernels)."""

    kernel: Any
    shared_mem: int

    @property
    def attributes(self) -> Any:
        return self.kernel.attributes

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        self.kernel(grid, block, args, shared_mem=self.shared_mem)


def step_kernel(base: str, dtype: str, tile: int = 0) -> Any:
    """The tiled twin (``*_tiled_*``, launched with its shared memory) of graph step kernel ``base``."""
    tiled = base.replace("_graph_", "_tiled_")
    return _WithSharedMemory(kernel(tiled, dtype), tiled_shared_bytes(cupy_graph.GATES[base.partition("_")[0]], dtype))


#: the graph path's plans with these kernels (batch tile 0: a plan key of its own)
TILED_STEPS = cupy_graph.StepKernels(IMPL, lambda batch, hidden, config: 0, launch_shape, step_kernel)


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why this path cannot run a call (the LSTM projection, GRU with ``linear_before_reset=False``), or ``None``."""
    variant = lstm_variant_reason(IMPL, kind, params, options)
    if variant is not None:
        return variant
    if kind == "gru" and not options.get("linear_before_reset", True):
        return "impl='tiled' supports GRU with linear_before_reset=True only; use impl='graph' or 'fused_graph'"
    return cupy_graph.no_projection(IMPL, kind, params)


_SEQUENCES = {"rnn": cupy_graph._rnn, "lstm": cupy_graph._lstm, "gru": cupy_graph._gru}


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
    """As ``graph.sequence``, the plans launching the tiled kernels."""
    refuse(supports(kind, params, options))
    return _SEQUENCES[kind](x, params, state, lengths, reverse, **options, steps_with=TILED_STEPS)
