"""Vector-Jacobian products: ``out, pullback = ar.vjp(f, *args, **options)``.

Hand-written backpropagation through time on the inputs' backend (``_core/backward.py``), or a backend's own
gradient path for the sequence functions (CuPy, NumPy).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional

from array_api_compat import is_dask_array

from . import _dispatch, models
from ._core import backward as core
from ._dropout import resolve, sequence_arguments
from ._masking import prepare_masking
from ._validate import dtype_name, prepare_cell, prepare_sequence, shape_text
from .backend import namespace_of
from .cells import gru_cell, lstm_cell, rnn_cell
from .sequence import gru, lstm, rnn

__all__ = ["vjp"]

Array = Any
Pullback = Callable[[Any], tuple[Any, ...]]

#: the public sequence functions and cells by cell kind, and each kind's keyword options (also used by ar.explain)
SEQUENCE_KINDS: dict[Callable[..., Any], str] = {rnn: "rnn", lstm: "lstm", gru: "gru"}
CELL_KINDS: dict[Callable[..., Any], str] = {rnn_cell: "rnn", lstm_cell: "lstm", gru_cell: "gru"}
CELL_OPTIONS = {
    "rnn": ("nonlinearity",),
    "lstm": ("coupled", "clip", "input_gate", "forget_gate", "output_gate", "input_activation", "output_activation"),
    "gru": ("linear_before_reset",),
}


def vjp(f: Callable[..., Any], *args: Any, **options: Any) -> tuple[Any, Pullback]:
    """Run ``f(*args, **options)`` and return its output with a pullback: a vector-Jacobian product.

    ``out`` is exactly what ``f(*args, **options)`` returns, computed by a recording forward pass on the inputs'
    backend: the generic core (hand-written backpropagation through time), or for the sequence functions a
    backend's own gradient path where one exists (CuPy and NumPy, float32/float64; ``impl="generic"`` or
    ``ARRAYRNN_IMPL=generic`` keeps the generic core). ``pullback(out_cotangent)`` returns one gradient per
    *positional* argument of the call, with that argument's structure: a params object for params (``None``
    fields stay ``None``), a tuple for an LSTM state, ``None`` where the argument was ``None``. Keyword options
    (``lengths``, ``reverse``, ...) are passed through and not differentiated; with ``train=True`` the dropout
    family's masks are drawn once, in the forward pass, and the pullback applies the same masks. The pullback
    reads ``out`` (previous hidden states are taken from ``y``), so do not write into the returned arrays before
    calling it; it may be called any number of times.
    With a batch-chunked dask ``x`` (sequence functions and ``model.apply``), ``out`` and the gradients are lazy: one
    task per batch block recomputes that block's forward and runs its pullback; ``dx`` is chunked like ``x``, params
    gradients are summed over the blocks (dask arrays of one chunk).

    Parameters
    ----------
    f : callable
        A cell (:func:`rnn_cell`, :func:`lstm_cell`, :func:`gru_cell`), a sequence function (:func:`rnn`,
        :func:`lstm`, :func:`gru`) or a model's bound ``apply`` (``model.apply``).
    *args
        The positional arguments of ``f``: each gets a gradient.
    **options
        The keyword arguments of ``f`` (``lengths``, ``mask``, ``padding``, ``reverse``, ``batch_first``, ``impl``,
        cell options). A masked step's input gets exactly zero gradient; with ``padding="carry"`` the cotangent of
        ``y`` at a masked step flows into the carried state.

    Returns
    -------
    out : array or tuple of arrays
        ``f(*args, **options)``.
    pullback : callable
        ``pullback(out_cotangent) -> tuple``, one gradient per positional argument. ``out_cotangent`` has the
        structure of ``out`` (e.g. ``(dy, dh_n)``, or ``(dy, (dh_n, dc_n))`` for an LSTM, ``(dy, (dh_n, dc_n,
        dg_n))`` with the full gate recurrence); a ``None`` anywhere in it counts as zeros.

    Raises
    ------
    TypeError
        ``f`` is not one of the functions above, or the arguments do not fit its signature; from the pullback, a
        cotangent of the wrong structure or dtype.
    ValueError
        From the pullback, a cotangent whose shape differs from its output's. Invalid arguments raise what ``f``
        itself raises.
    BackendMismatchError
        A cotangent lives on another backend or device than its output (or the arguments do, as in ``f``).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_lstm(3, 4, seed=0)
    >>> x = np.ones((5, 2, 3), dtype="float32")
    >>> (y, (h_n, c_n)), pullback = ar.vjp(ar.lstm, x, params, lengths=[5, 4])
    >>> dx, dparams = pullback((np.ones_like(y), None))  # gradients of y.sum()
    >>> dx.shape, dparams.weight_ih.shape, dparams.bias_hh.shape
    ((5, 2, 3), (16, 3), (16,))

    A model's ``apply``: the gradient of its params has the structure of ``model.params``.

    >>> model = ar.GRU(3, 4, num_layers=2, seed=0)
    >>> (y, h_n), pullback = ar.vjp(model.apply, model.params, x)
    >>> dparams, dx = pullback((None, np.ones_like(h_n)))
    >>> len(dparams), dparams[1][0].weight_hh.shape, dx.shape
    (2, (12, 4), (5, 2, 3))
    """
    if f in SEQUENCE_KINDS:
        return _sequence_vjp(f, SEQUENCE_KINDS[f], args, options)
    if f in CELL_KINDS:
        return _cell_vjp(f, CELL_KINDS[f], args, options)
    model = getattr(f, "__self__", None)
    if isinstance(model, tuple(models.MODEL_CLASSES.values())) and getattr(f, "__name__", "") == "apply":
        return _model_vjp(model, f, args, options)
    raise TypeError(
        "vjp supports arrayrnn.rnn_cell, lstm_cell, gru_cell, rnn, lstm, gru and a model's apply; "
        f"got {getattr(f, '__qualname__', type(f).__name__)}"
    )


def bind_call(
    f: Callable[..., Any], args: tuple[Any, ...], options: dict[str, Any], caller: str = "vjp"
) -> tuple[dict[str, Any], list[str]]:
    """The call's arguments by name (defaults filled in) and the names of the positional ones; a call that does not
    fit ``f``'s signature raises ``TypeError`` as ``caller(f, ...): ...``."""
    signature = inspect.signature(f)
    try:
        bound = signature.bind(*args, **options)
    except TypeError as error:
        raise TypeError(f"{caller}({f.__name__}, ...): {error}") from None
    bound.apply_defaults()
    return dict(bound.arguments), list(signature.parameters)[: len(args)]


# ----------------------------------------------------------------------------------------------
# cotangents


def _leaf_cotangent(cotangent: Any, like: Array, path: str) -> Optional[Array]:
    """Check one cotangent array against the output array it belongs to (``None`` passes)."""
    if cotangent is None:
        return None
    namespace_of(**{path: cotangent, "the output": like})  # same backend and device, or a clear error
    if tuple(cotangent.shape) != tuple(like.shape):
        raise ValueError(
            f"{path} must have the shape of its output {shape_text(like.shape)}, got {shape_text(cotangent.shape)}"
        )
    if cotangent.dtype != like.dtype:
        raise TypeError(
            f"{path} must have the output's dtype {dtype_name(like.dtype)}, got {dtype_name(cotangent.dtype)}"
        )
    return cotangent


def match_cotangent(cotangent: Any, out: Any, path: str = "out_cotangent") -> Any:
    """``cotangent`` checked against the structure of ``out``; ``None`` parts expand to ``None`` leaves."""
    if isinstance(out, (tuple, list)):
        if cotangent is None:
            return tuple(match_cotangent(None, part, f"{path}[{k}]") for k, part in enumerate(out))
        if not isinstance(cotangent, (tuple, list)) or len(cotangent) != len(out):
            raise TypeError(
                f"{path} must be None or a tuple of {len(out)} parts like the output, got {type(cotangent).__name__}"
                + (f" of length {len(cotangent)}" if isinstance(cotangent, (tuple, list)) else "")
            )
        return tuple(match_cotangent(c, part, f"{path}[{k}]") for k, (c, part) in enumerate(zip(cotangent, out)))
    return _leaf_cotangent(cotangent, out, path)


# ----------------------------------------------------------------------------------------------
# sequences and cells


def _state_like(xp: Any, kind: str, given: Any, d_state: tuple[Array, ...], unbatched: bool) -> Any:
    """The initial-state gradient in the structure the caller passed (``None`` stays ``None``)."""
    if given is None:
        return None
    if unbatched:
        d_state = tuple(xp.reshape(d, (d.shape[-1],)) for d in d_state)
    if kind == "lstm":
        return type(given)(d_state) if isinstance(given, list) else tuple(d_state)
    return d_state[0]


def _sequence_vjp(f: Callable[..., Any], kind: str, args: tuple[Any, ...], options: dict[str, Any]):
    arguments, positional = bind_call(f, args, options)
    if is_dask_array(arguments["x"]):  # lazy: each batch block's own vjp (_dask_grad.py)
        from ._dask_grad import sequence_vjp as dask_sequence_vjp

        return dask_sequence_vjp(vjp, f, kind, arguments, positional)
    cell_options = {name: arguments[name] for name in CELL_OPTIONS[kind]}
    sequence_arguments(cell_options, arguments)  # the dropout family
    x, params, state = arguments["x"], arguments["params"], arguments["state"]
    reverse, batch_first = arguments["reverse"], arguments["batch_first"]
    prepared = prepare_sequence(kind, x, params, state, arguments["lengths"], batch_first, reverse, cell_options)
    xp = prepared.xp
    cell_options = resolve(kind, cell_options, prepared)  # masks drawn once: the backward pass reuses them
    masking = prepare_masking(prepared, arguments["mask"], arguments["padding"], arguments["lengths"], batch_first)
    y, final_state, run_backward = _dispatch.sequence_vjp(
        kind, xp, prepared.backend, prepared.x, params, prepared.state, prepared.lengths, reverse,
        {**cell_options, **masking}, arguments["impl"],
    )  # fmt: skip
    if prepared.unbatched:
        y_out = xp.reshape(y, (y.shape[0], y.shape[2]))
        final_out = tuple(xp.reshape(s, (s.shape[-1],)) for s in final_state)
    else:
        y_out = xp.permute_dims(y, (1, 0, 2)) if batch_first else y
        final_out = final_state
    out = (y_out, final_out if kind == "lstm" else final_out[0])

    def pullback(out_cotangent: Any) -> tuple[Any, ...]:
        dy, d_final = match_cotangent(out_cotangent, out)
        d_final = d_final if kind == "lstm" else (d_final,)
        if dy is not None:
            if prepared.unbatched:
                dy = xp.reshape(dy, (dy.shape[0], 1, dy.shape[1]))
            elif batch_first:
                dy = xp.permute_dims(dy, (1, 0, 2))
        if prepared.unbatched:
            d_final = tuple(None if d is None else xp.reshape(d, (1, d.shape[0])) for d in d_final)
        dx, d_params, d_state = run_backward(dy, d_final)
        if prepared.unbatched:
            dx = xp.reshape(dx, (dx.shape[0], dx.shape[2]))
        elif batch_first:
            dx = xp.permute_dims(dx, (1, 0, 2))
        grads = {"x": dx, "params": d_params, "state": _state_like(xp, kind, state, d_state, prepared.unbatched)}
        return tuple(grads[name] for name in positional)

    return out, pullback


def _cell_vjp(f: Callable[..., Any], kind: str, args: tuple[Any, ...], options: dict[str, Any]):
    arguments, positional = bind_call(f, args, options)
    state_arg = "state" if kind == "lstm" else "h"
    cell_options = {name: arguments[name] for name in CELL_OPTIONS[kind]}
    x, state, params = arguments["x"], arguments[state_arg], arguments["params"]
    prepared = prepare_cell(kind, x, state, params, cell_options, state_arg)
    xp = prepared.xp
    x_sequence = xp.reshape(prepared.x, (1, *prepared.x.shape))
    _, final_state, tape = core.forward(xp, kind, x_sequence, params, prepared.state, None, False, cell_options)
    if prepared.unbatched:
        final_state = tuple(xp.reshape(s, (s.shape[-1],)) for s in final_state)
    out = final_state if kind == "lstm" else final_state[0]

    def pullback(out_cotangent: Any) -> tuple[Any, ...]:
        d_final = match_cotangent(out_cotangent, out)
        d_final = d_final if kind == "lstm" else (d_final,)
        if prepared.unbatched:
            d_final = tuple(None if d is None else xp.reshape(d, (1, d.shape[0])) for d in d_final)
        dx, d_params, d_state = core.backward(xp, tape, None, d_final)
        dx = xp.reshape(dx, (dx.shape[-1],)) if prepared.unbatched else dx[0, ...]
        grads = {"x": dx, "params": d_params, state_arg: _state_like(xp, kind, state, d_state, prepared.unbatched)}
        return tuple(grads[name] for name in positional)

    return out, pullback


# ----------------------------------------------------------------------------------------------
# models: layer by layer, both directions


def _model_vjp(model: Any, apply: Callable[..., Any], args: tuple[Any, ...], options: dict[str, Any]):
    """vjp of ``model.apply(params, x, state, *, lengths, impl)``.

    The stack runs through ``models.run_stack`` exactly as ``apply`` does, with every one-layer
    sequence call replaced by its vjp; the pullback walks the layers top-down, splits the output
    cotangent between the directions, sums their input gradients into the layer below, and
    stacks the state gradients back into ``(L*D, B, H)``.
    """
    arguments, positional = bind_call(apply, args, options)
    if is_dask_array(arguments["x"]):  # lazy: the whole stack's vjp per batch block (_dask_grad.py)
        from ._dask_grad import model_vjp as dask_model_vjp

        return dask_model_vjp(vjp, model, apply, arguments, positional)
    params, x, state = arguments["params"], arguments["x"], arguments["state"]
    records: list[tuple[Pullback, int]] = []  # in l*D + d order, as the stack calls them

    def recording(layer_input: Array, layer_params: Any, layer_state: Any, **call_options: Any):
        out, pullback = vjp(model.sequence_function, layer_input, layer_params, layer_state, **call_options)
        records.append((pullback, out[0].shape[-1]))
        return out

    dropout_masks: list[Array] = []  # run_stack appends each layer's output mask (dropout in training)
    recording.dropout_masks = dropout_masks  # type: ignore[attr-defined]

    # apply itself checks and normalises its arguments and runs the stack, one recorded call per layer
    out = model.apply(
        params, x, state, lengths=arguments["lengths"], impl=arguments["impl"], sequence_function=recording,
        mask=arguments["mask"], padding=arguments["padding"], train=arguments["train"], seed=arguments["seed"],
    )  # fmt: skip
    xp = namespace_of(x=x)[0]
    num_layers, num_directions = len(params), len(params[0])

    def final_part(d_final: Any, index: int) -> Any:
        if model.kind == "lstm":
            return tuple(None if d is None else d[index, ...] for d in d_final)
        return None if d_final is None else d_final[index, ...]

    def pullback(out_cotangent: Any) -> tuple[Any, ...]:
        d_output, d_final = match_cotangent(out_cotangent, out)
        param_grads: list[list[Any]] = [[None] * num_directions for _ in range(num_layers)]
        state_grads: list[Any] = [None] * (num_layers * num_directions)
        for layer in range(num_layers - 1, -1, -1):
            d_input = None
            for direction in range(num_directions):
                index = layer * num_directions + direction
                direction_pullback, width = records[index]
                d_y = d_output
                if d_output is not None and num_directions > 1:
                    d_y = d_output[..., direction * width : (direction + 1) * width]
                dx, param_grads[layer][direction], state_grads[index] = direction_pullback(
                    (d_y, final_part(d_final, index))
                )
                d_input = dx if d_input is None else d_input + dx
            d_output = d_input if layer == 0 or not dropout_masks else d_input * dropout_masks[layer - 1]
        grads = {
            "params": type(params)(type(params[k])(row) for k, row in enumerate(param_grads)),
            "x": d_output,
            "state": _stacked_state(xp, model.kind, state, state_grads),
        }
        return tuple(grads[name] for name in positional)

    return out, pullback


def _stacked_state(xp: Any, kind: str, given: Any, parts: list[Any]) -> Any:
    if given is None:
        return None
    if kind == "lstm":
        stacked = tuple(xp.stack([part[k] for part in parts], axis=0) for k in range(len(parts[0])))
        return list(stacked) if isinstance(given, list) else stacked
    return xp.stack(parts, axis=0)
