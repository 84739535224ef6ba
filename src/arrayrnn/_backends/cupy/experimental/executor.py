"""Run a recorded list of graph-kernel launches in ONE cooperative launch (the gradient path's "persistent").

A grid barrier between consecutive launches stands in for the stream order of a replayed CUDA graph.
:func:`sequence_vjp_persistent` is the gradient path's "persistent" variant: ``grad_graph``'s plans run this way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from .. import grad_graph as cupy_grad_graph
from .. import policy
from ..common import cupy_module, int32, kernel, kernel_name, lstm_variant_reason, resident_blocks
from ..grad_fused import Backward, State
from ..sources import graph_kernel_name, kernel_specs
from . import persistent as cupy_persistent
from .sources import EXECUTOR_BASES, EXECUTOR_SLOTS

Array = Any


@dataclasses.dataclass
class ExecutorTable:
    """A plan's launches as the executor reads them."""

    table: Array  # (launches, EXECUTOR_SLOTS) uint64 on the device
    kinds: Array  # (launches,) int32: index into EXECUTOR_BASES
    launches: int
    tile: int
    tasks: int  # warp tasks per launch (the most over the launches)


def _split(name: str) -> tuple[str, int]:
    base, _, tile = name.rpartition("_nb")
    return base, int(tile)


def _slot(kind: str, value: Any) -> int:
    if kind == "int":
        return int(value) & 0xFFFFFFFFFFFFFFFF  # two's complement: the kernel reads (int)(long long)
    if kind == "acc":
        if isinstance(value, np.float32):
            return int(np.float32(value).view(np.uint32))
        return int(np.float64(value).view(np.uint64))
    return int(value.data.ptr)


def build_table(launches: list[tuple[Any, tuple[int], tuple[int], tuple[Any, ...]]]) -> ExecutorTable:
    """Encode ``launches`` (as a graph plan holds them: kernel, grid, block, args) for the executor."""
    cp = cupy_module()
    specs = kernel_specs()
    rows = np.zeros((len(launches), EXECUTOR_SLOTS), dtype=np.uint64)
    kinds = np.zeros(len(launches), dtype=np.int32)
    tiles, tasks = set(), 0
    for i, (k, _grid, _block, args) in enumerate(launches):
        name = kernel_name(k)
        base, tile = _split(name)
        if base not in EXECUTOR_BASES:
            raise ValueError(f"the graph executor cannot run kernel {name}")
        params = specs[name]
        if len(args) != len(params):
            raise TypeError(f"{name}: {len(args)} arguments for {len(params)} parameters")
        kinds[i] = EXECUTOR_BASES.index(base)
        rows[i, : len(params)] = [_slot(kind, value) for (kind, _), value in zip(params, args)]
        named = dict(zip((name for _, name in params), args))
        tiles.add(tile)
        tasks = max(tasks, -(-int(named["batch"]) // tile) * int(named["hidden"]))
    if len(tiles) != 1:
        raise ValueError(f"a plan for the graph executor uses one batch tile, got {sorted(tiles)}")
    # one upload per plan (like a graph capture): the kernel addresses and step indices, not user data
    return ExecutorTable(cp.asarray(rows), cp.asarray(kinds), len(launches), tiles.pop(), tasks)


def run(table: ExecutorTable, dtype: str) -> None:
    """Run the encoded launches on the current stream: one cooperative launch (``executor_threads`` threads per
    block at most, the grid capped as the persistent path's)."""
    config = policy.current()
    name = graph_kernel_name("graph_executor", table.tile)
    k = kernel(name, dtype)
    threads = min(config.executor_threads, int(k.attributes["max_threads_per_block"]) // 32 * 32)
    limit = min(cupy_persistent.block_cap(config), resident_blocks(k, name, threads))
    blocks = max(1, min(limit, -(-table.tasks // (threads // 32))))
    head = (table.table, table.kinds, int32(table.launches), int32(EXECUTOR_SLOTS))
    options = int32(cupy_persistent.barrier_options(config))
    what = f"graph executor ({table.launches} launches)"
    cupy_persistent.launch_with_barrier(
        k, blocks, threads, lambda counter: (*head, counter, options), what=what, config=config
    )


# ----------------------------------------------------------------------------------------------
# the gradient path's "persistent" variant: the graph gradient path's plans, each run by the executor


def _run_plan(plan: Any, dtype: str) -> None:
    """Run a gradient plan's launches in one cooperative launch (their table is built once per plan)."""
    table = plan.prepared.get(RUNNER.impl)
    if table is None:
        table = plan.prepared[RUNNER.impl] = build_table(plan.launches)
    run(table, dtype)


#: the runner of the "persistent" variant; the RNN's recording forward is the persistent forward path
RUNNER = cupy_grad_graph.Runner("persistent", _run_plan, cupy_persistent)


def supports(kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why the "persistent" gradient path cannot run a call (the LSTM projection, the Greff LSTM variants), or
    ``None`` where it can."""
    variant = lstm_variant_reason(RUNNER.impl, kind, params, options)
    return variant or cupy_grad_graph.no_projection(RUNNER.impl, kind, params)


def sequence_vjp_persistent(
    xp: Any,
    kind: str,
    x: Array,
    params: Any,
    state: State,
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
) -> tuple[Array, State, Backward]:
    """As ``grad_graph.sequence_vjp``, each loop run by the graph executor in one launch."""
    return cupy_grad_graph.vjp_with(RUNNER, kind, x, params, state, lengths, reverse, options)
