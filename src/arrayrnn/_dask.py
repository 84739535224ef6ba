"""Dask: a batch-chunked dask array runs block by block through its chunks' own implementation.

``x`` needs its time and feature axes in one chunk each; each block's numbers are exactly those of the NumPy
(or CuPy) call on that block alone. The layout of the graph: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import uuid
from typing import Any, Optional

import array_api_compat
import numpy as np

from ._dispatch import resolve_impl
from ._masking import prepare_masking
from ._validate import PARAMS_CLASSES, _state_names, _state_tuple, has_gate_recurrence, prepare_sequence
from .backend import BackendMismatchError, backend_name, map_arrays

Array = Any

#: backends a dask array's chunks may have (each runs its own implementation per block)
CHUNK_BACKENDS = ("numpy", "cupy")


def is_dask(array: Any) -> bool:
    """True for a dask array (never imports dask)."""
    return array_api_compat.is_dask_array(array)


def chunk_backend(array: Any, arg: str) -> str:
    """The backend of a dask array's chunks (``"numpy"`` or ``"cupy"``), from its meta."""
    meta = getattr(array, "_meta", None)
    try:
        name = backend_name(meta)
    except TypeError:
        name = type(meta).__module__.split(".")[0]
    if name not in CHUNK_BACKENDS:
        raise TypeError(f"{arg} is a dask array of {name} chunks; arrayrnn runs dask arrays of NumPy or CuPy chunks")
    return name


def _check_known_shape(array: Any, arg: str) -> None:
    if any(isinstance(n, float) and math.isnan(n) for n in array.shape):
        raise ValueError(f"{arg} has unknown chunk sizes (shape {array.shape}); call {arg}.compute_chunk_sizes() first")


def _check_placement(arg: str, value: Any, chunks: str) -> None:
    """``value`` must be a dask array of ``chunks`` chunks or a plain array of backend ``chunks``."""
    if value is None:
        return
    if is_dask(value):
        _check_known_shape(value, arg)
        name = chunk_backend(value, arg)
        where = f"a dask array of {name} chunks"
    else:
        try:
            name = backend_name(value)
        except TypeError:
            raise TypeError(f"{arg} must be an array, got {type(value).__name__}") from None
        where = name
    if name != chunks:
        raise BackendMismatchError(
            f"{arg} is {where} but x is a dask array of {chunks} chunks; a dask x takes {arg} as "
            f"{chunks} arrays or dask arrays of {chunks} chunks (move it with arrayrnn.to_backend)"
        )


def _stand_in(xp: Any, array: Any) -> Any:
    """A zero-stride zero array with ``array``'s shape and dtype on the chunks' backend (no data)."""
    return xp.broadcast_to(xp.zeros((), dtype=array.dtype), tuple(int(n) for n in array.shape))


def _params_stand_in(xp: Any, params: Any) -> Any:
    fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    return dataclasses.replace(
        params, **{name: None if value is None else _stand_in(xp, value) for name, value in fields.items()}
    )


def _params_are_dask(params: Any) -> bool:
    return dataclasses.is_dataclass(params) and is_dask(getattr(params, "weight_ih", None))


def _rechunk_message(batch_first: bool, unbatched: bool) -> str:
    if unbatched:
        return "x.rechunk(-1)"
    return "x.rechunk({1: -1, 2: -1})" if batch_first else "x.rechunk({0: -1, 2: -1})"


def _check_chunks(x: Any, batch_first: bool) -> Optional[int]:
    """The batch axis of ``x`` (``None`` when unbatched); every other axis must be one chunk."""
    unbatched = x.ndim == 2
    batch_axis = None if unbatched else (0 if batch_first else 1)
    split = [axis for axis in range(x.ndim) if axis != batch_axis and x.numblocks[axis] > 1]
    if split:
        names = ("batch", "time", "features") if batch_first else ("time", "batch", "features")
        if unbatched:
            names = ("time", "features")
        described = ", ".join(f"{names[axis]} axis {axis} in {x.numblocks[axis]} chunks" for axis in split)
        raise ValueError(
            f"x must be chunked over the batch axis only (time and features each in one chunk), but it has "
            f"{described}; rechunk it first: {_rechunk_message(batch_first, unbatched)}"
        )
    return batch_axis


def _as_dask(value: Any, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """A dask array with exactly ``chunks``: a plain array is wrapped, a dask array rechunked if needed."""
    import dask.array as da

    if is_dask(value):
        return value if value.chunks == chunks else value.rechunk(chunks)
    # NumPy data is named by its hash; CuPy data by a fresh name (dask would hash it on the host)
    return da.from_array(value, chunks=chunks, name=None if isinstance(value, np.ndarray) else False)


class _Slot:
    """Stands for the ``index``-th dask array of a params tree inside the graph's template."""

    def __init__(self, index: int) -> None:
        self.index = index

    def _map_arrays(self, function: Any) -> Any:  # lets backend.map_arrays treat a slot as a leaf
        return function(self)


def _arrays_of(tree: Any) -> list[Any]:
    found: list[Any] = []
    map_arrays(lambda array: found.append(array) or array, tree)
    return found


def _fill(template: Any, values: list[Any]) -> Any:
    return map_arrays(lambda slot: values[slot.index], template)


def _params_layer(params: Any) -> tuple[str, dict[Any, Any], list[Any]]:
    """(key, graph entries, dask dependencies) for the one key that holds ``params``.

    ``params`` is any params tree (a params object, a model's tuple of tuples). The key is named after
    the params' contents (NumPy/CuPy) or their dask names, so repeated calls with the same params share
    it, and a scheduler ships the params to each worker once, not once per block.
    """
    from dask.base import tokenize

    arrays = _arrays_of(params)
    if not any(is_dask(array) for array in arrays):
        if all(isinstance(array, np.ndarray) for array in arrays):
            name = "arrayrnn-params-" + tokenize(_structure(params), *arrays)
        else:  # dask hashes CuPy arrays by copying them to the host: a fresh name is still one key
            name = "arrayrnn-params-" + uuid.uuid4().hex
        return name, {name: params}, []
    # dask params (single chunk each after rechunking): one task assembles the tree from their chunks
    whole = [array.rechunk(tuple((n,) for n in array.shape)) for array in arrays]
    counter = iter(range(len(arrays)))
    template = map_arrays(lambda array: _Slot(next(counter)), params)
    name = "arrayrnn-params-" + tokenize(_structure(params), [array.name for array in whole])
    keys = [(array.name,) + (0,) * array.ndim for array in whole]
    return name, {name: (_fill, template, keys)}, whole


def _structure(params: Any) -> str:
    """The params tree with its arrays left out (part of the params key: same data, other layout)."""
    return repr(map_arrays(lambda array: (type(array).__name__, tuple(array.shape)), params))


def run_block(
    params: Any,
    x: Array,
    *rest: Array,
    run_sequence: Any,
    kind: str,
    n_states: int,
    has_lengths: bool,
    reverse: bool,
    batch_first: bool,
    impl: Optional[str],
    options: dict[str, Any],
    has_mask: bool = False,
    padding: str = "zeros",
) -> tuple[Array, ...]:
    """One batch block through ``run_sequence`` (``arrayrnn.sequence.run_sequence``, on the block's NumPy/CuPy
    arrays): ``(y, *final_state)``."""
    states = rest[:n_states]
    lengths = rest[n_states] if has_lengths else None
    mask = rest[n_states + has_lengths] if has_mask else None
    state: Any = None
    if n_states:
        state = tuple(states) if kind == "lstm" else states[0]
    masking = {"mask": mask, "padding": padding} if has_mask or padding != "zeros" else {}
    y, final_state = run_sequence(
        kind, x, params, state, lengths=lengths, reverse=reverse, batch_first=batch_first, impl=impl, options=options,
        **masking,
    )  # fmt: skip
    return (y, *final_state)


def _whole_except_batch(shape: tuple[int, ...], batch_axis: Optional[int], batch_chunks: tuple[int, ...]) -> Any:
    """Chunks of an array split over ``batch_axis`` only (``None``: a single chunk)."""
    return tuple(batch_chunks if axis == batch_axis else (shape[axis],) for axis in range(len(shape)))


def _block_index(ndim: int, batch_axis: Optional[int], k: int) -> tuple[int, ...]:
    """The chunk index of batch block ``k`` of an array split over ``batch_axis`` only."""
    return tuple(k if axis == batch_axis else 0 for axis in range(ndim))


def map_batch_blocks(
    function: Any,
    params: Any,
    inputs: list[tuple[Any, Optional[int]]],
    outputs: list[tuple[tuple[int, ...], Optional[int]]],
    *,
    batch_chunks: tuple[int, ...],
    meta: Any,
    dtype: Any,
    name: str,
) -> list[Any]:
    """Run ``function(params, *input_blocks) -> tuple of output blocks`` once per batch block.

    ``inputs``: ``(dask array, batch axis)`` pairs, each chunked as ``batch_chunks`` on its batch axis
    and whole on every other axis (batch axis ``None``: one chunk, and there is one block).
    ``outputs``: ``(shape, batch axis)`` of each result. ``params`` is stored under one graph key.
    Returns the outputs as dask arrays chunked like the inputs, with chunks of ``meta``'s type.
    """
    import dask.array as da
    from dask.array.utils import meta_from_array
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    params_key, params_graph, params_dependencies = _params_layer(params)
    token = tokenize(name, function, params_key, [array.name for array, _ in inputs], outputs, batch_chunks)
    blocks_name = f"{name}-blocks-{token}"
    layer: dict[Any, Any] = dict(params_graph)
    for k in range(len(batch_chunks)):
        keys = [(array.name, *_block_index(array.ndim, batch_axis, k)) for array, batch_axis in inputs]
        layer[(blocks_name, k)] = (function, params_key, *keys)
    graph = HighLevelGraph.from_collections(
        blocks_name, layer, dependencies=[array for array, _ in inputs] + params_dependencies
    )
    # an internal array whose chunks are the tuples of outputs; each output picks its item
    blocks = da.Array(graph, blocks_name, chunks=((1,) * len(batch_chunks),), meta=np.empty((0,), dtype=object))
    results = []
    for index, (shape, batch_axis) in enumerate(outputs):
        out_name = f"{name}-{index}-{token}"
        out_layer = {
            (out_name, *_block_index(len(shape), batch_axis, k)): (
                operator.getitem,
                (blocks_name, k),
                index,
            )
            for k in range(len(batch_chunks))
        }
        out_graph = HighLevelGraph.from_collections(out_name, out_layer, dependencies=[blocks])
        chunks = _whole_except_batch(shape, batch_axis, batch_chunks)
        results.append(da.Array(out_graph, out_name, chunks=chunks, meta=meta_from_array(meta, len(shape), dtype)))
    return results


def _state_stand_ins(xp: Any, kind: str, state: Any, states: tuple[Any, ...]) -> Any:
    if state is None:
        return None
    stand_ins = tuple(_stand_in(xp, value) for value in states)
    return stand_ins if kind == "lstm" else stand_ins[0]


def check_dask_inputs(kind: str, x: Any, params: Any, states: tuple[Any, ...], lengths: Any) -> tuple[str, Any]:
    """Placement checks of a dask-``x`` call (API.md section 1); returns the chunks' backend and namespace."""
    _check_known_shape(x, "x")
    chunks = chunk_backend(x, "x")
    for name, value in zip(_state_names(kind, "state", has_gate_recurrence(kind, params)), states):
        _check_placement(name, value, chunks)
    if lengths is not None and not isinstance(lengths, (list, tuple)):
        _check_placement("lengths", lengths, chunks)
    check_params_placement([("params", params)], chunks)
    return chunks, array_api_compat.array_namespace(x._meta)


def check_params_placement(named_params: list[tuple[str, Any]], chunks: str) -> None:
    """Every params array is a ``chunks`` array, or every one is a dask array of ``chunks`` chunks."""
    dask_or_not = {}
    for prefix, params in named_params:
        if not dataclasses.is_dataclass(params):
            continue  # the ordinary checks name a wrong params type
        for field in dataclasses.fields(params):
            value = getattr(params, field.name)
            _check_placement(f"{prefix}.{field.name}", value, chunks)
            if value is not None:
                dask_or_not.setdefault(is_dask(value), f"{prefix}.{field.name}")
    if len(dask_or_not) == 2:
        raise BackendMismatchError(
            f"{dask_or_not[True]} is a dask array but {dask_or_not[False]} is a {chunks} array; give every "
            f"params array as {chunks} arrays (or every one as dask arrays)"
        )


def dask_mask_placement(mask: Any, chunks: str) -> Any:
    """``mask`` checked for a dask ``x`` of ``chunks`` chunks: a dask or plain array (a list becomes NumPy)."""
    if isinstance(mask, (list, tuple)):
        return np.asarray(mask)  # prepare_masking refuses it unless boolean
    _check_placement("mask", mask, chunks)
    return mask


def _mask_stand_in(xp: Any, mask: Any) -> Any:
    return _stand_in(xp, mask) if mask is not None and is_dask(mask) else mask


def batch_lengths(xp: Any, lengths: Any, batch_chunks: tuple[int, ...]) -> Optional[Any]:
    """``lengths`` as a dask array chunked as ``batch_chunks`` (a list becomes an int64 array first)."""
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple)):
        lengths = xp.asarray(list(lengths), dtype=xp.int64)
    return _as_dask(lengths, (batch_chunks,))


def run_dask(
    run_sequence: Any,
    kind: str,
    x: Any,
    params: Any,
    state: Any,
    *,
    lengths: Any,
    reverse: bool,
    batch_first: bool,
    impl: Optional[str],
    options: dict[str, Any],
    mask: Any = None,
    padding: str = "zeros",
) -> tuple[Any, tuple[Any, ...]]:
    """``run_sequence`` (passed in: this module sits below the public layer) for a dask ``x``: lazy ``y`` and
    final states, chunked over the batch like ``x`` (and ``mask`` chunked like ``x``)."""
    states = _state_tuple(kind, state, "state", has_gate_recurrence(kind, params)) or ()
    chunks, xp = check_dask_inputs(kind, x, params, states, lengths)
    mask = dask_mask_placement(mask, chunks)
    # every other check is the ordinary one, run on data-free stand-ins of the blocks' backend
    prepared = prepare_sequence(
        kind,
        _stand_in(xp, x),
        _params_stand_in(xp, params) if _params_are_dask(params) else params,
        _state_stand_ins(xp, kind, state, states),
        lengths if lengths is None or isinstance(lengths, (list, tuple)) else _stand_in(xp, lengths),
        batch_first,
        reverse,
        options,
    )
    prepare_masking(prepared, _mask_stand_in(xp, mask), padding, lengths, batch_first)
    resolve_impl(kind, chunks, impl)  # an unknown impl fails now, not when the blocks run
    batch_axis = _check_chunks(x, batch_first)

    unbatched = batch_axis is None
    batch_chunks: tuple[int, ...] = (1,) if unbatched else x.chunks[batch_axis]
    state_axis = None if unbatched else 0
    inputs = [(x, batch_axis)]
    inputs += [(_as_dask(s, _whole_except_batch(s.shape, state_axis, batch_chunks)), state_axis) for s in states]
    lengths_input = batch_lengths(xp, lengths, batch_chunks)
    if lengths_input is not None:
        inputs.append((lengths_input, 0))
    mask_axis = None if unbatched else (0 if batch_first else 1)
    if mask is not None:
        inputs.append((_as_dask(mask, _whole_except_batch(mask.shape, mask_axis, batch_chunks)), mask_axis))

    state_sizes = (params.output_size, params.hidden_size) if kind == "lstm" else (params.hidden_size,)
    if has_gate_recurrence(kind, params):
        state_sizes += (3 * params.hidden_size,)
    batch = 1 if unbatched else x.shape[batch_axis]
    y_shape = (*x.shape[:-1], state_sizes[0])
    state_shapes = [(size,) if unbatched else (batch, size) for size in state_sizes]
    function = functools.partial(
        run_block,
        run_sequence=run_sequence,
        kind=kind,
        n_states=len(states),
        has_lengths=lengths_input is not None,
        reverse=reverse,
        batch_first=batch_first,
        impl=impl,
        options=dict(options),
        has_mask=mask is not None,
        padding=padding,
    )
    y, *final_state = map_batch_blocks(
        function,
        params,
        inputs,
        [(y_shape, batch_axis)] + [(shape, state_axis) for shape in state_shapes],
        batch_chunks=batch_chunks,
        meta=x._meta,
        dtype=x.dtype,
        name=f"arrayrnn-{kind}",
    )
    return y, tuple(final_state)


# ------------------------------------------------------------------------------------------------
# models: the whole stack in one task per block


def run_stack_block(
    params: Any,
    x: Array,
    *rest: Array,
    run_stack: Any,
    sequence_function: Any,
    n_states: int,
    has_lengths: bool,
    batch_first: bool,
    options: dict[str, Any],
    has_mask: bool = False,
) -> tuple[Array, ...]:
    """One batch block through every layer and direction (``run_stack``, passed in): ``(y, *final_state)``."""
    states = rest[:n_states]
    lengths = rest[n_states] if has_lengths else None
    if has_mask:
        options = dict(options, mask=rest[n_states + has_lengths])
    state: Any = None
    if n_states:
        state = tuple(states) if n_states >= 2 else states[0]  # an LSTM (h, c) or, with weight_gg, (h, c, g)
    y, final_state = run_stack(
        sequence_function, x, params, state, lengths=lengths, batch_first=batch_first, **options
    )  # fmt: skip
    return (y, *(final_state if isinstance(final_state, tuple) else (final_state,)))


def _kind_of(params: Any) -> str:
    for kind, params_class in PARAMS_CLASSES.items():
        if isinstance(params, params_class):
            return kind
    raise TypeError(f"params must hold arrayrnn RNNParams, LSTMParams or GRUParams, got {type(params).__name__}")


def run_stack_dask(
    run_stack: Any,
    sequence_function: Any,
    x: Any,
    params: Any,
    state: Any = None,
    *,
    lengths: Any = None,
    batch_first: bool = False,
    reverse: bool = False,
    **options: Any,
) -> tuple[Any, Any]:
    """``run_stack`` (``models.run_stack``, passed in) for a dask ``x``: the whole stack runs per batch block, one
    task per block.

    Same arguments and results as ``run_stack`` (``state`` ``(L*D, B, ·)`` arrays, their batch on axis
    1); the model has checked the params stack and the state shapes already.
    """
    num_layers, num_directions = len(params), len(params[0])
    first = params[0][0]
    kind = _kind_of(first)
    states = tuple(state) if isinstance(state, tuple) else (() if state is None else (state,))
    chunks, xp = check_dask_inputs(kind, x, first, (), lengths)
    options = dict(options)
    mask = dask_mask_placement(options.pop("mask", None), chunks)
    names = ("state[0] (h_0)", "state[1] (c_0)", "state[2] (g_0)") if kind == "lstm" else ("state",)
    for name, value in zip(names, states):
        _check_placement(name, value, chunks)
    named = [
        (f"params[{layer}][{d}]", p) for layer, layer_params in enumerate(params) for d, p in enumerate(layer_params)
    ]
    check_params_placement(named, chunks)
    resolve_impl(kind, chunks, options.get("impl"))  # an unknown impl fails now, not when the blocks run
    kind_options = {key: value for key, value in options.items() if key not in ("impl", "padding")}
    prepared = prepare_sequence(
        kind,
        _stand_in(xp, x),
        _params_stand_in(xp, first) if _params_are_dask(first) else first,
        None,
        lengths if lengths is None or isinstance(lengths, (list, tuple)) else _stand_in(xp, lengths),
        batch_first,
        False,
        kind_options,
    )
    prepare_masking(prepared, _mask_stand_in(xp, mask), options.get("padding", "zeros"), lengths, batch_first)
    batch_axis = _check_chunks(x, batch_first)

    unbatched = batch_axis is None
    batch_chunks: tuple[int, ...] = (1,) if unbatched else x.chunks[batch_axis]
    state_axis = None if unbatched else 1
    inputs = [(x, batch_axis)]
    inputs += [(_as_dask(s, _whole_except_batch(s.shape, state_axis, batch_chunks)), state_axis) for s in states]
    lengths_input = batch_lengths(xp, lengths, batch_chunks)
    if lengths_input is not None:
        inputs.append((lengths_input, 0))
    mask_axis = None if unbatched else (0 if batch_first else 1)
    if mask is not None:
        inputs.append((_as_dask(mask, _whole_except_batch(mask.shape, mask_axis, batch_chunks)), mask_axis))

    stacked = num_layers * num_directions
    batch = None if unbatched else x.shape[batch_axis]
    sizes = (first.output_size, first.hidden_size) if kind == "lstm" else (first.hidden_size,)
    if has_gate_recurrence(kind, first):
        sizes += (3 * first.hidden_size,)
    y_shape = (*x.shape[:-1], num_directions * sizes[0])
    state_shapes = [(stacked, size) if unbatched else (stacked, batch, size) for size in sizes]
    function = functools.partial(
        run_stack_block,
        run_stack=run_stack,
        sequence_function=sequence_function,
        n_states=len(states),
        has_lengths=lengths_input is not None,
        batch_first=batch_first,
        options=dict(options, reverse=reverse),
        has_mask=mask is not None,
    )
    y, *final_state = map_batch_blocks(
        function,
        params,
        inputs,
        [(y_shape, batch_axis)] + [(shape, state_axis) for shape in state_shapes],
        batch_chunks=batch_chunks,
        meta=x._meta,
        dtype=x.dtype,
        name=f"arrayrnn-{kind}-stack",
    )
    return y, (tuple(final_state) if kind == "lstm" else final_state[0])
