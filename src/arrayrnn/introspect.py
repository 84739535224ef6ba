"""``ar.explain``: which implementation a call would run on its inputs, and why, without running it."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from . import _dispatch
from ._dropout import add_request, for_explain, sequence_arguments
from ._masking import check_padding, masking_options, prepare_masking
from ._validate import prepare_cell, prepare_sequence
from .grad import CELL_KINDS, CELL_OPTIONS, SEQUENCE_KINDS, bind_call, vjp
from .models import MODEL_CLASSES

__all__ = ["explain"]


def explain(f: Callable[..., Any], *args: Any, **options: Any) -> str:
    """Say which implementation ``f(*args, **options)`` would run, and why, without running it.

    The same decision the call makes (and logs at DEBUG on the ``arrayrnn`` logger): a backend fast path (NumPy
    loop or numba kernels; a CuPy path such as ``"graph"`` or ``"fused"``) or the generic array-API core, with the
    reason (batch and hidden sizes against the thresholds, an option a path does not support, ``impl=``, ...).

    Parameters
    ----------
    f : callable
        ``ar.rnn``, ``ar.lstm``, ``ar.gru``, a cell (``ar.lstm_cell``, ...), a model (``ar.LSTM(...)``) or its
        ``apply``, or ``ar.vjp`` followed by one of those (the gradient path).
    *args, **options
        The arguments of the call, exactly as you would pass them (``impl=`` included).

    Returns
    -------
    str
        One line per recurrent layer call: ``"<backend>: <path> (<reason>)"`` or ``"generic: <reason>"``; a
        model gives one line per layer and direction, prefixed with ``layer l (forward|reverse):``.

    Raises
    ------
    TypeError, ValueError
        Exactly what the call itself would raise for bad arguments (the same checks run).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_gru(8, 16, seed=0, dtype="float64")
    >>> x = np.zeros((10, 4, 8))
    >>> ar.explain(ar.gru, x, params)
    'numpy: NumPy loop (the numba kernels are float32 only, x is float64)'
    >>> ar.explain(ar.gru, x, params, impl="generic")
    "generic: impl='generic' asked for the array-API core"
    """
    gradient = False
    if f is vjp:
        if not args:
            raise TypeError("explain(ar.vjp, f, *args): the function to differentiate is missing")
        f, args, gradient = args[0], args[1:], True
    if f in SEQUENCE_KINDS:
        return _explain_sequence(f, SEQUENCE_KINDS[f], args, options, gradient)
    if f in CELL_KINDS:
        _explain_cell(f, CELL_KINDS[f], args, options)
        return "generic: cells run one step of the array-API core on every backend"
    model = f if isinstance(f, tuple(MODEL_CLASSES.values())) else getattr(f, "__self__", None)
    if isinstance(model, tuple(MODEL_CLASSES.values())):
        if f is model or getattr(f, "__name__", "") == "__call__":
            args = (model.params, *args)
        elif getattr(f, "__name__", "") != "apply":
            raise TypeError(f"explain supports a model or its apply, got {getattr(f, '__qualname__', f)!r}")
        return _explain_model(model, args, options, gradient)
    raise TypeError(
        "explain supports arrayrnn.rnn, lstm, gru, the cells, a model or its apply, and ar.vjp of those; "
        f"got {getattr(f, '__qualname__', type(f).__name__)}"
    )


def _bind(f: Callable[..., Any], args: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
    return bind_call(f, args, options, caller="explain")[0]


def _explain_sequence(f: Callable[..., Any], kind: str, args: tuple[Any, ...], options: dict[str, Any],
                      gradient: bool) -> str:  # fmt: skip
    arguments = _bind(f, args, options)
    cell_options = {name: arguments[name] for name in CELL_OPTIONS[kind]}
    sequence_arguments(cell_options, arguments)  # the dropout family: its masks are not drawn here
    cell_options = for_explain(cell_options)
    x, params = arguments["x"], arguments["params"]
    if _is_dask(x):
        check_padding(arguments["padding"])
        cell_options.update(masking_options(arguments["mask"], arguments["padding"]))
        return _explain_dask(kind, arguments, cell_options, gradient)
    reverse, batch_first = arguments["reverse"], arguments["batch_first"]
    prepared = prepare_sequence(kind, x, params, arguments["state"], arguments["lengths"], batch_first, reverse,
                                cell_options)  # fmt: skip
    masking = prepare_masking(prepared, arguments["mask"], arguments["padding"], arguments["lengths"], batch_first)
    return _dispatch.explain(kind, prepared.backend, prepared.x, params, {**cell_options, **masking},
                             arguments["impl"], gradient)  # fmt: skip


def _explain_cell(f: Callable[..., Any], kind: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    arguments = _bind(f, args, options)
    state_arg = "state" if kind == "lstm" else "h"
    cell_options = {name: arguments[name] for name in CELL_OPTIONS[kind]}
    prepare_cell(kind, arguments["x"], arguments[state_arg], arguments["params"], cell_options, state_arg)


def _is_dask(x: Any) -> bool:
    from array_api_compat import is_dask_array

    return is_dask_array(x)


def _shape_of(steps: int, batch: int, features: int, dtype: Any) -> Any:
    """What the hooks read of ``x`` to decide: its shape and dtype (no data)."""
    return types.SimpleNamespace(shape=(steps, batch, features), dtype=dtype, ndim=3)


def _explain_dask(kind: str, arguments: dict[str, Any], cell_options: dict[str, Any], gradient: bool) -> str:
    from ._dask import chunk_backend

    x, params = arguments["x"], arguments["params"]
    backend = chunk_backend(x, "x")
    batch_axis = 0 if arguments["batch_first"] else 1
    if x.ndim == 2:
        steps, batch, features = x.shape[0], 1, x.shape[1]
    else:
        steps, features = x.shape[1 - batch_axis], x.shape[2]
        batch = x.chunks[batch_axis][0]
    stand_in = _shape_of(steps, batch, features, x.dtype)
    each = _dispatch.explain(kind, backend, stand_in, params, cell_options, arguments["impl"], gradient)
    return f"dask: one task per batch block; the first block (B = {batch}) runs {each}"


def _explain_model(model: Any, args: tuple[Any, ...], options: dict[str, Any], gradient: bool) -> str:
    arguments = _bind(model.apply, args, options)
    params, x = arguments["params"], arguments["x"]
    impl = arguments.get("impl")
    if x.ndim == 2:
        steps, batch = x.shape[0], 1
    else:
        steps, batch = (x.shape[1], x.shape[0]) if model.batch_first else (x.shape[0], x.shape[1])
    backend = "dask" if _is_dask(x) else None
    lines = []
    features = x.shape[-1]
    cell_options = {name: value for name, value in model._options.items() if name in CELL_OPTIONS[model.kind]}
    check_padding(arguments.get("padding", "zeros"))
    cell_options.update(masking_options(arguments.get("mask"), arguments.get("padding", "zeros")))
    rates = {name: model._options.get(name, 0.0) for name in ("recurrent_dropout", "zoneout")}
    train = arguments.get("train", False) is True
    add_request(cell_options, **rates, train=train, seed=0 if train else None)  # nothing is drawn here
    cell_options = for_explain(cell_options)
    for layer, layer_params in enumerate(params):
        for direction, direction_params in enumerate(layer_params):
            stand_in = _shape_of(steps, batch, features, x.dtype)
            where = backend or direction_params.backend
            if where == "dask":
                from ._dask import chunk_backend

                where = chunk_backend(x, "x")
            text = _dispatch.explain(model.kind, where, stand_in, direction_params, cell_options, impl, gradient)
            name = "reverse" if (direction == 1) != model.reverse else "forward"
            lines.append(f"layer {layer} ({name}): {text}")
        features = len(layer_params) * layer_params[0].output_size if model.kind == "lstm" else (
            len(layer_params) * layer_params[0].hidden_size)  # fmt: skip
    return "\n".join(lines)
