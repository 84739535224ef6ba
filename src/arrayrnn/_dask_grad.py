"""``ar.vjp`` on dask: the forward is ``_dask.py``'s; one pullback task per batch block recomputes the block's
forward with the ordinary vjp (chunks' backend) and applies it to the block's cotangent. ``dx`` and the state
gradients are chunked like ``x`` and the state; params gradients are summed over blocks by a tree reduction
(lazy dask arrays of one chunk each).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ._dask import (
    _arrays_of,
    _as_dask,
    _block_index,
    _check_placement,
    _params_layer,
    _whole_except_batch,
    batch_lengths,
    chunk_backend,
    dask_mask_placement,
)
from ._validate import _state_tuple, dtype_name, has_gate_recurrence, shape_text
from .backend import map_arrays

Array = Any

#: how many partial sums each task of the params-gradient reduction adds up
SPLIT_EVERY = 8


def _map_blocks_with_sums(
    function: Callable[..., tuple[Any, ...]],
    params: Any,
    inputs: list[tuple[Any, Optional[int]]],
    batched: list[tuple[tuple[int, ...], Optional[int]]],
    summed: list[tuple[int, ...]],
    *,
    batch_chunks: tuple[int, ...],
    meta: Any,
    name: str,
) -> tuple[list[Any], list[Any]]:
    """One task per batch block: ``function(params, *input_blocks)`` returns the ``batched`` outputs' blocks (as
    ``map_batch_blocks``), then one ``(1, *shape)`` block per ``summed`` output; those are summed over the blocks
    by a tree reduction into dask arrays of one chunk."""
    import dask.array as da
    from dask.array.utils import meta_from_array
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    params_key, params_graph, params_dependencies = _params_layer(params)
    token = tokenize(name, function, params_key, [array.name for array, _ in inputs], batched, summed, batch_chunks)
    blocks_name = f"{name}-blocks-{token}"
    n_blocks = len(batch_chunks)
    layer: dict[Any, Any] = dict(params_graph)
    for k in range(n_blocks):
        keys = [(array.name, *_block_index(array.ndim, batch_axis, k)) for array, batch_axis in inputs]
        layer[(blocks_name, k)] = (function, params_key, *keys)
    graph = HighLevelGraph.from_collections(
        blocks_name, layer, dependencies=[array for array, _ in inputs] + params_dependencies
    )
    blocks = da.Array(graph, blocks_name, chunks=((1,) * n_blocks,), meta=np.empty((0,), dtype=object))

    def pick(index: int, shape: tuple[int, ...], chunks: Any, index_of: Callable[[int], tuple[int, ...]]) -> Any:
        out_name = f"{name}-{index}-{token}"
        out_layer = {(out_name, *index_of(k)): (operator.getitem, (blocks_name, k), index) for k in range(n_blocks)}
        out_graph = HighLevelGraph.from_collections(out_name, out_layer, dependencies=[blocks])
        return da.Array(out_graph, out_name, chunks=chunks, meta=meta_from_array(meta, len(shape)))

    outputs = [
        pick(
            index,
            shape,
            _whole_except_batch(shape, axis, batch_chunks),
            functools.partial(_block_index, len(shape), axis),
        )  # fmt: skip
        for index, (shape, axis) in enumerate(batched)
    ]
    sums = []
    for index, shape in enumerate(summed, start=len(batched)):
        chunks = ((1,) * n_blocks, *((n,) for n in shape))
        stacked = pick(index, (n_blocks, *shape), chunks, functools.partial(_block_index, len(shape) + 1, 0))
        sums.append(stacked.sum(axis=0, split_every=SPLIT_EVERY))
    return outputs, sums


# ------------------------------------------------------------------------------------------------
# cotangents


def _leaf(cotangent: Any, like: Any, path: str, chunks: str) -> Optional[Any]:
    if cotangent is None:
        return None
    _check_placement(path, cotangent, chunks)
    if tuple(cotangent.shape) != tuple(like.shape):
        raise ValueError(
            f"{path} must have the shape of its output {shape_text(like.shape)}, got {shape_text(cotangent.shape)}"
        )
    if cotangent.dtype != like.dtype:
        raise TypeError(
            f"{path} must have the output's dtype {dtype_name(like.dtype)}, got {dtype_name(cotangent.dtype)}"
        )
    return _as_dask(cotangent, like.chunks)


def match_dask_cotangent(cotangent: Any, out: Any, chunks: str, path: str = "out_cotangent") -> Any:
    """``cotangent`` checked against the structure of the lazy ``out``; leaves become dask arrays chunked like
    their outputs (NumPy/CuPy ones are wrapped), ``None`` parts stay ``None``."""
    if isinstance(out, (tuple, list)):
        if cotangent is None:
            return tuple(match_dask_cotangent(None, part, chunks, f"{path}[{k}]") for k, part in enumerate(out))
        if not isinstance(cotangent, (tuple, list)) or len(cotangent) != len(out):
            raise TypeError(
                f"{path} must be None or a tuple of {len(out)} parts like the output, got {type(cotangent).__name__}"
                + (f" of length {len(cotangent)}" if isinstance(cotangent, (tuple, list)) else "")
            )
        return tuple(
            match_dask_cotangent(c, part, chunks, f"{path}[{k}]") for k, (c, part) in enumerate(zip(cotangent, out))
        )
    return _leaf(cotangent, out, path, chunks)


def _flat_cotangent(cotangent: Any, out: Any, chunks: str) -> list[Optional[Any]]:
    """``[dy, *d_final]`` (``None`` where absent) for an output ``(y, final)``, ``final`` an array or a tuple."""
    dy, d_final = match_dask_cotangent(cotangent, out, chunks)
    return [dy, *(d_final if isinstance(out[1], tuple) else (d_final,))]


def _unflatten_cotangent(flat: list[Optional[Any]], final_is_tuple: bool) -> Any:
    return (flat[0], tuple(flat[1:]) if final_is_tuple else flat[1])


# ------------------------------------------------------------------------------------------------
# one block


def _split_blocks(blocks: tuple[Any, ...], n_states: int, has_lengths: bool, has_mask: bool, present: tuple[bool, ...]):
    states, rest = blocks[:n_states], blocks[n_states:]
    lengths = rest[0] if has_lengths else None
    rest = rest[has_lengths:]
    mask = rest[0] if has_mask else None
    cotangents = iter(rest[has_mask:])
    return states, lengths, mask, [next(cotangents) if here else None for here in present]


def _grad_block(
    params: Any,
    x: Array,
    *blocks: Array,
    vjp: Callable[..., Any],
    call: Callable[..., Any],
    model: bool,
    n_states: int,
    states_as_tuple: bool,
    has_lengths: bool,
    has_mask: bool,
    present: tuple[bool, ...],
    final_is_tuple: bool,
    options: dict[str, Any],
) -> tuple[Array, ...]:
    """One batch block: the ordinary vjp of ``call`` (a sequence function or a model's ``apply``) on the block, its
    pullback applied to the block's cotangent: ``(dx, *d_states, *param_grads[None])``."""
    states, lengths, mask, flat = _split_blocks(blocks, n_states, has_lengths, has_mask, present)
    state = (tuple(states) if states_as_tuple else states[0]) if n_states else None
    arguments = (params, x, state) if model else (x, params, state)
    _, pullback = vjp(call, *arguments, lengths=lengths, mask=mask, **options)
    grads = pullback(_unflatten_cotangent(flat, final_is_tuple))
    (d_params, dx, d_state) = grads if model else (grads[1], grads[0], grads[2])
    d_states = () if d_state is None else (tuple(d_state) if states_as_tuple else (d_state,))
    return (dx, *d_states, *(g[None, ...] for g in _arrays_of(d_params)))


# ------------------------------------------------------------------------------------------------
# the lazy pullback


def _dask_vjp(
    vjp: Callable[..., Any],
    call: Callable[..., Any],
    out: Any,
    x: Any,
    params: Any,
    states: tuple[Any, ...],
    states_as_tuple: bool,
    lengths: Any,
    mask: Any,
    options: dict[str, Any],
    *,
    model: bool,
    batch_first: bool,
    batch_axis: Optional[int],
    state_axis: Optional[int],
    name: str,
):
    """The pullback of a dask call whose lazy output is ``out``; returns ``(dx, d_states, d_params)``."""
    import array_api_compat

    chunks = chunk_backend(x, "x")
    xp = array_api_compat.array_namespace(x._meta)
    batch_chunks: tuple[int, ...] = (1,) if batch_axis is None else x.chunks[batch_axis]
    inputs = [(x, batch_axis)]
    inputs += [(_as_dask(s, _whole_except_batch(s.shape, state_axis, batch_chunks)), state_axis) for s in states]
    lengths_input = batch_lengths(xp, lengths, batch_chunks)
    if lengths_input is not None:
        inputs.append((lengths_input, 0))
    if mask is not None:
        mask = dask_mask_placement(mask, chunks)
        mask_axis = None if batch_axis is None else (0 if batch_first else 1)
        inputs.append((_as_dask(mask, _whole_except_batch(mask.shape, mask_axis, batch_chunks)), mask_axis))
    final_is_tuple = isinstance(out[1], tuple)
    out_axes = [batch_axis] + [state_axis] * (len(out[1]) if final_is_tuple else 1)
    param_arrays = _arrays_of(params)

    def pullback(out_cotangent: Any) -> tuple[Any, tuple[Any, ...], Any]:
        flat = _flat_cotangent(out_cotangent, out, chunks)
        present = tuple(c is not None for c in flat)
        cotangent_inputs = [(c, axis) for c, axis in zip(flat, out_axes) if c is not None]
        function = functools.partial(
            _grad_block, vjp=vjp, call=call, model=model, n_states=len(states), states_as_tuple=states_as_tuple,
            has_lengths=lengths_input is not None, has_mask=mask is not None, present=present,
            final_is_tuple=final_is_tuple, options=dict(options),
        )  # fmt: skip
        batched = [(tuple(x.shape), batch_axis)] + [(tuple(s.shape), state_axis) for s in states]
        (dx, *d_states), sums = _map_blocks_with_sums(
            function, params, inputs + cotangent_inputs, batched,
            [tuple(int(n) for n in a.shape) for a in param_arrays],
            batch_chunks=batch_chunks, meta=x._meta, name=f"arrayrnn-{name}-vjp",
        )  # fmt: skip
        counter = iter(sums)
        d_params = map_arrays(lambda array: next(counter), params)
        return dx, tuple(d_states), d_params

    return pullback


def sequence_vjp(vjp: Any, f: Callable[..., Any], kind: str, arguments: dict[str, Any], positional: list[str]):
    """``ar.vjp(ar.rnn/lstm/gru, x, ...)`` for a dask ``x`` (``arguments``: the bound call, defaults filled in;
    ``vjp``: ``ar.vjp``, passed in as this module sits below it)."""
    out = f(**arguments)  # the lazy forward: every check and refusal of the dask forward happens here
    x, params, state = arguments["x"], arguments["params"], arguments["state"]
    states = _state_tuple(kind, state, "state", has_gate_recurrence(kind, params)) or ()
    options = {key: value for key, value in arguments.items() if key not in ("x", "params", "state", "lengths", "mask")}
    batch_axis = None if x.ndim == 2 else (0 if arguments["batch_first"] else 1)
    run = _dask_vjp(
        vjp, f, out, x, params, states, kind == "lstm", arguments["lengths"], arguments["mask"], options,
        model=False, batch_first=arguments["batch_first"], batch_axis=batch_axis,
        state_axis=None if batch_axis is None else 0, name=kind,
    )  # fmt: skip

    def pullback(out_cotangent: Any) -> tuple[Any, ...]:
        dx, d_states, d_params = run(out_cotangent)
        d_state = None
        if state is not None:
            d_state = (list(d_states) if isinstance(state, list) else d_states) if kind == "lstm" else d_states[0]
        grads = {"x": dx, "params": d_params, "state": d_state}
        return tuple(grads[name] for name in positional)

    return out, pullback


def model_vjp(vjp: Any, model: Any, apply: Callable[..., Any], arguments: dict[str, Any], positional: list[str]):
    """``ar.vjp(model.apply, params, x, ...)`` for a dask ``x``: the whole stack's vjp per batch block."""
    arguments = {key: value for key, value in arguments.items() if key != "sequence_function"}
    out = apply(**arguments)  # the lazy forward: its checks, defaults and refusals (training with dropout)
    params, x, mask = arguments["params"], arguments["x"], arguments["mask"]
    # the model's defaults, resolved as apply resolves them, then sliced per block
    state, lengths = model._with_defaults(params, x, arguments["state"], arguments["lengths"] if mask is None else ())
    lengths = None if mask is not None else lengths
    states = (tuple(state) if isinstance(state, (tuple, list)) else (state,)) if state is not None else ()
    options = {key: arguments[key] for key in ("padding", "impl", "train", "seed")}
    batch_axis = None if x.ndim == 2 else (0 if model.batch_first else 1)
    run = _dask_vjp(
        vjp, apply, out, x, params, states, isinstance(state, (tuple, list)), lengths, mask, options,
        model=True, batch_first=model.batch_first, batch_axis=batch_axis,
        state_axis=None if batch_axis is None else 1, name=f"{model.kind}-stack",
    )  # fmt: skip
    given = arguments["state"]

    def pullback(out_cotangent: Any) -> tuple[Any, ...]:
        dx, d_states, d_params = run(out_cotangent)
        d_state = None
        if given is not None:
            d_state = (list(d_states) if isinstance(given, list) else d_states) if model.kind == "lstm" else d_states[0]
        grads = {"params": d_params, "x": dx, "state": d_state}
        return tuple(grads[name] for name in positional)

    return out, pullback
