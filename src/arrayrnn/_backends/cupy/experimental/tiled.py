"""CuPy fast path "tiled": the graph path with block-tiled step kernels, for batches past the warp-per-unit range.

The graph path's step kernels give one warp a hidden unit and a batch tile of at most 8 rows: every warp reads
its unit's weight rows and its batch rows of the state from L1/L2, so at B = 64, H = 512 (LSTM) one step moves
about 128 MB through the caches, and the step took ~30 µs on an H100 (1.35x cuDNN, 2026-11-27). Here one
block computes a tile of 16 batch rows x 16 hidden units (all gates of each) as a small GEMM through shared
memory (``_TILED`` in ``cupy_sources``): each weight row and state row it loads serves the whole tile. The
steps' tails (gates, peepholes, clip, lengths) are the graph kernels' own, and so is the rest: the T launches
captured once into a CUDA graph and replayed (``cupy_graph``'s plans, batch tile 0).

Supports RNN, LSTM (no projection: use "fused" or "fused_graph") and GRU with ``linear_before_reset=True``;
float16/32/64. Not measured on a GPU yet (written 2026-11-27 without one; tested on the CPU emulator): auto does
not pick it.
"""

from __future__ import annotations

from typing import Any, Optional

from .. import graph as cupy_graph

Array = Any

IMPL = cupy_graph.TILED_IMPL


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
    return cupy_graph._rnn(x, params, state, lengths, reverse, nonlinearity, tiled=True)


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
    return cupy_graph._lstm(x, params, state, lengths, reverse, coupled, clip, tiled=True)


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
    return cupy_graph._gru(x, params, state, lengths, reverse, linear_before_reset, tiled=True)
