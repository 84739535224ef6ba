"""Weights in other frameworks' layouts (Keras, ONNX, the tutorial's ``[h, x]`` matrix) <-> arrayrnn params.

arrayrnn params use PyTorch's layout and gate order (LSTM i, f, g, o; GRU r, z, n). Every function follows its
inputs (results on their backend and device) and never returns arrays that share memory with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

from ._validate import shape_text
from .backend import namespace_of
from .params import GRUParams, LSTMParams, RNNParams

__all__ = [
    "from_concat",
    "from_keras",
    "from_onnx",
    "from_onnx_model",
    "to_concat",
    "to_keras",
    "to_onnx",
    "to_onnx_model",
]

Array = Any
Params = Union[RNNParams, LSTMParams, GRUParams]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_CLASSES = {"rnn": RNNParams, "lstm": LSTMParams, "gru": GRUParams}
#: ``order[k]`` = the position in the foreign layout of PyTorch's gate ``k``
_KERAS_ORDER = {"rnn": (0,), "lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}  # i,f,c,o ; z,r,h
_ONNX_ORDER = {"rnn": (0,), "lstm": (0, 2, 3, 1), "gru": (1, 0, 2)}  # i,o,f,c ; z,r,h
_KERAS_NAMES = {"rnn": "SimpleRNN", "lstm": "LSTM, gates i, f, c, o", "gru": "GRU, gates z, r, h"}
_ONNX_NAMES = {"rnn": "RNN", "lstm": "LSTM, gates i, o, f, c", "gru": "GRU, gates z, r, h"}


def _check_kind(kind: Any) -> int:
    if kind not in _GATES:
        raise ValueError(f"kind must be 'rnn', 'lstm' or 'gru', got {kind!r}")
    return _GATES[kind]


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    inverse = [0] * len(order)
    for torch_position, foreign_position in enumerate(order):
        inverse[foreign_position] = torch_position
    return tuple(inverse)


def _blocks(xp: Any, array: Array, order: tuple[int, ...], hidden: int) -> Array:
    """Reorder the gate blocks along axis 0: block ``k`` of the result is block ``order[k]`` of ``array``.

    Always returns a new array (``concat`` copies), so results never alias the caller's arrays.
    """
    return xp.concat([array[g * hidden : (g + 1) * hidden, ...] for g in order], axis=0)


def _require_shape(name: str, array: Array, expected: tuple[int, ...], layout: str) -> None:
    if array is None or tuple(array.shape) != tuple(expected):
        got = "None" if array is None else shape_text(array.shape)
        raise ValueError(f"{name} must have shape {layout} = {shape_text(expected)}, got {got}")


def _require_ndim(name: str, array: Array, ndim: int, layout: str) -> None:
    if getattr(array, "ndim", None) != ndim:
        got = shape_text(array.shape) if hasattr(array, "shape") else type(array).__name__
        raise ValueError(f"{name} must have shape {layout}, got {got}")


def _zeros_like(xp: Any, array: Array) -> Array:
    return xp.zeros_like(array)


def _as_directions(kind: str, params: Any) -> tuple[Params, ...]:
    cls = _CLASSES[kind]
    directions = (params,) if isinstance(params, cls) else tuple(params) if isinstance(params, (tuple, list)) else ()
    if len(directions) not in (1, 2) or not all(isinstance(p, cls) for p in directions):
        raise TypeError(f"params must be an arrayrnn.{cls.__name__} or a tuple of 1 or 2 of them (directions)")
    return directions


def _bias_pair(xp: Any, params: Params) -> tuple[Optional[Array], Optional[Array]]:
    """``(bias_ih, bias_hh)`` with a missing half filled by zeros; ``(None, None)`` without bias."""
    bias_ih, bias_hh = params.bias_ih, params.bias_hh
    if bias_ih is None and bias_hh is None:
        return None, None
    return (bias_ih if bias_ih is not None else _zeros_like(xp, bias_hh)), (
        bias_hh if bias_hh is not None else _zeros_like(xp, bias_ih)
    )


def _no_extras(kind: str, params: Params, target: str) -> None:
    if kind == "lstm" and params.weight_hr is not None:
        raise ValueError(f"{target} has no LSTM projection (weight_hr); params have proj_size={params.proj_size}")
    if kind == "lstm" and params.peephole_i is not None and target != "ONNX":
        raise ValueError(f"{target} has no LSTM peepholes; these params have peephole_i/f/o")
    if kind == "lstm" and getattr(params, "weight_gg", None) is not None:
        raise ValueError(f"{target} has no full gate recurrence (weight_gg, Greff et al.'s FGR); these params have it")
    names = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")
    normed = [name for name in names if getattr(params, name, None) is not None]
    if normed:
        raise ValueError(f"{target} has no layer normalisation; these params have {', '.join(normed)}")


# --------------------------------------------------------------------------------------------
# Keras


def from_keras(
    kind: str,
    kernel: Array,
    recurrent_kernel: Array,
    bias: Optional[Array] = None,
    *,
    reset_after: Optional[bool] = None,
) -> Params:
    """Params from a Keras ``SimpleRNN``/``LSTM``/``GRU`` layer's ``get_weights()``.

    Keras stores ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)`` and ``bias (G*H,)`` with gates LSTM i, f, c, o
    and GRU z, r, h; the result is in PyTorch's layout and order (LSTM i, f, g, o; GRU r, z, n), with Keras'
    single bias in ``bias_ih`` and zeros in ``bias_hh``. Keras' default activations are assumed (``tanh`` and a
    ``sigmoid`` recurrent activation). A GRU with ``reset_after=True`` (Keras' default) runs as arrayrnn's
    default ``linear_before_reset=True``; one with ``reset_after=False`` needs ``linear_before_reset=False``.

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    kernel : array, shape (I, G*H)
        Input weights.
    recurrent_kernel : array, shape (H, G*H)
        Recurrent weights.
    bias : array, shape (G*H,), or (2, 3H) for a GRU with ``reset_after=True``, or None
        The bias (``None``: ``use_bias=False``); a ``(2, 3H)`` GRU bias holds input and recurrent rows.
    reset_after : bool, optional
        GRU only; read from the bias shape, so only needed to check it (or for a GRU without bias).

    Returns
    -------
    RNNParams, LSTMParams or GRUParams
        New arrays on the inputs' backend and device.

    Raises
    ------
    ValueError
        ``kind`` is unknown; a shape does not fit (the message gives the Keras layout); ``reset_after``
        contradicts the bias shape.
    BackendMismatchError
        The arrays live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> I, H = 3, 4
    >>> kernel, recurrent, bias = np.ones((I, 4 * H)), np.ones((H, 4 * H)), np.zeros(4 * H)
    >>> params = ar.convert.from_keras("lstm", kernel, recurrent, bias)
    >>> params.weight_ih.shape, params.weight_hh.shape, params.bias_hh.shape
    ((16, 3), (16, 4), (16,))
    >>> gru = ar.convert.from_keras("gru", np.ones((I, 3 * H)), np.ones((H, 3 * H)), np.zeros((2, 3 * H)))
    >>> gru.bias_ih.shape, gru.bias_hh.shape
    ((12,), (12,))
    """
    gates = _check_kind(kind)
    xp, _, _ = namespace_of(kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias)
    name = _KERAS_NAMES[kind]
    _require_ndim("kernel", kernel, 2, f"(input_size, {gates}*units) (Keras {name})")
    if kernel.shape[1] % gates != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"kernel must have shape (input_size, {gates}*units) (Keras {name}), got {shape_text(kernel.shape)}"
        )
    hidden = kernel.shape[1] // gates
    _require_shape(
        "recurrent_kernel", recurrent_kernel, (hidden, gates * hidden), f"(units, {gates}*units) (Keras {name})"
    )
    order = _KERAS_ORDER[kind]
    weight_ih = _blocks(xp, xp.matrix_transpose(kernel), order, hidden)
    weight_hh = _blocks(xp, xp.matrix_transpose(recurrent_kernel), order, hidden)
    bias_ih = bias_hh = None
    if kind == "gru":
        shape_says = None if bias is None else bias.ndim == 2
        if reset_after is not None and shape_says is not None and reset_after != shape_says:
            raise ValueError(
                f"reset_after={reset_after} but bias has shape {shape_text(bias.shape)}: Keras GRU bias is "
                f"(2, 3*units) with reset_after=True and (3*units,) with reset_after=False"
            )
        if bias is not None:
            if bias.ndim == 2:
                _require_shape("bias", bias, (2, 3 * hidden), "(2, 3*units) (Keras GRU, reset_after=True)")
                bias_ih, bias_hh = _blocks(xp, bias[0, :], order, hidden), _blocks(xp, bias[1, :], order, hidden)
            else:
                _require_shape("bias", bias, (3 * hidden,), "(3*units,) (Keras GRU, reset_after=False) or (2, 3*units)")
                bias_ih = _blocks(xp, bias, order, hidden)
                bias_hh = _zeros_like(xp, bias_ih)
    elif bias is not None:
        _require_shape("bias", bias, (gates * hidden,), f"({gates}*units,) (Keras {name})")
        bias_ih = _blocks(xp, bias, order, hidden)
        bias_hh = _zeros_like(xp, bias_ih)
    return _CLASSES[kind](weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)


def to_keras(kind: str, params: Params, *, reset_after: bool = True) -> tuple[Array, Array, Optional[Array]]:
    """``(kernel, recurrent_kernel, bias)`` for a Keras layer's ``set_weights``: the inverse of :func:`from_keras`.

    LSTM/SimpleRNN: Keras has one bias, ``bias_ih + bias_hh``. GRU: ``reset_after=True`` gives bias ``(2, 3H)``
    for params run with ``linear_before_reset=True`` (the default); ``reset_after=False`` gives ``(3H,)`` for
    params run with ``linear_before_reset=False``. Keras has no projection and no peepholes.

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    params : RNNParams, LSTMParams or GRUParams
        One layer in one direction.
    reset_after : bool, optional
        GRU only: the Keras layer's ``reset_after`` (default ``True``, Keras' default).

    Returns
    -------
    kernel : array, shape (I, G*H)
    recurrent_kernel : array, shape (H, G*H)
    bias : array, shape (G*H,) or (2, 3H), or None
        ``None`` when the params have no bias.

    Raises
    ------
    ValueError
        ``kind`` is unknown; the params have a projection or peepholes.
    TypeError
        ``params`` is not a params object of ``kind``.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> kernel, recurrent_kernel, bias = ar.convert.to_keras("gru", ar.init_gru(3, 4, seed=0))
    >>> kernel.shape, recurrent_kernel.shape, bias.shape
    ((3, 12), (4, 12), (2, 12))
    >>> ar.convert.to_keras("gru", ar.init_gru(3, 4, seed=0), reset_after=False)[2].shape
    (12,)
    """
    gates = _check_kind(kind)
    (params,) = _as_directions(kind, params)
    _no_extras(kind, params, "Keras")
    xp, _, _ = namespace_of(weight_ih=params.weight_ih)
    hidden = params.hidden_size
    order = _inverse(_KERAS_ORDER[kind])
    kernel = xp.matrix_transpose(_blocks(xp, params.weight_ih, order, hidden))
    recurrent_kernel = xp.matrix_transpose(_blocks(xp, params.weight_hh, order, hidden))
    bias_ih, bias_hh = _bias_pair(xp, params)
    if bias_ih is None:
        return kernel, recurrent_kernel, None
    if kind == "gru" and reset_after:
        bias = xp.stack([_blocks(xp, bias_ih, order, hidden), _blocks(xp, bias_hh, order, hidden)], axis=0)
    else:
        bias = _blocks(xp, bias_ih + bias_hh, order, hidden)
    assert bias.shape[-1] == gates * hidden
    return kernel, recurrent_kernel, bias


# --------------------------------------------------------------------------------------------
# ONNX


def from_onnx(
    kind: str, W: Array, R: Array, B: Optional[Array] = None, P: Optional[Array] = None
) -> tuple[Params, ...]:
    """One params object per direction (forward, then reverse) from an ONNX RNN/LSTM/GRU node's inputs.

    ONNX gate orders are LSTM i, o, f, c and GRU z, r, h; the results are in PyTorch's layout and order. To run
    them as the node does, map its attributes: GRU ``linear_before_reset=0`` (the ONNX default) ->
    ``linear_before_reset=False``, ``1`` (what torch exports) -> the default ``True``; LSTM ``input_forget=1`` ->
    ``coupled=True``; ``clip=c`` -> ``clip=c``; RNN ``activations=["Relu"]`` -> ``nonlinearity="relu"``; a
    ``reverse`` direction -> ``reverse=True``. ONNX's default activations are assumed (Sigmoid, Tanh, Tanh).

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    W : array, shape (D, G*H, I)
        Input weights, ``D`` = 1 or 2 directions.
    R : array, shape (D, G*H, H)
        Recurrent weights.
    B : array, shape (D, 2*G*H), or None
        Input then recurrent biases (``None``: no bias).
    P : array, shape (D, 3H), or None
        LSTM peepholes in the order i, o, f (``None``: none).

    Returns
    -------
    tuple of RNNParams, LSTMParams or GRUParams
        One per direction, new arrays on the inputs' backend and device.

    Raises
    ------
    ValueError
        ``kind`` is unknown; a shape does not fit (the message gives the ONNX layout); ``P`` for a non-LSTM.
    BackendMismatchError
        The arrays live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> W, R, B = np.ones((2, 12, 3)), np.ones((2, 12, 4)), np.zeros((2, 24))
    >>> forward, backward = ar.convert.from_onnx("gru", W, R, B)
    >>> forward.weight_ih.shape, backward.bias_hh.shape
    ((12, 3), (12,))
    """
    gates = _check_kind(kind)
    xp, _, _ = namespace_of(W=W, R=R, B=B, P=P)
    name = _ONNX_NAMES[kind]
    _require_ndim("W", W, 3, f"(num_directions, {gates}*hidden_size, input_size) (ONNX {name})")
    directions, rows, _ = W.shape
    if directions not in (1, 2) or rows % gates != 0 or rows == 0:
        raise ValueError(
            f"W must have shape (num_directions (1 or 2), {gates}*hidden_size, input_size) (ONNX {name}), "
            f"got {shape_text(W.shape)}"
        )
    hidden = rows // gates
    _require_shape(
        "R",
        R,
        (directions, gates * hidden, hidden),
        f"(num_directions, {gates}*hidden_size, hidden_size) (ONNX {name})",
    )
    if B is not None:
        _require_shape(
            "B",
            B,
            (directions, 2 * gates * hidden),
            f"(num_directions, 2*{gates}*hidden_size) = [Wb, Rb] (ONNX {name})",
        )
    if P is not None:
        if kind != "lstm":
            raise ValueError(f"P (peepholes) exists only for ONNX LSTM, not {kind}")
        _require_shape(
            "P", P, (directions, 3 * hidden), "(num_directions, 3*hidden_size), peepholes i, o, f (ONNX LSTM)"
        )
    order = _ONNX_ORDER[kind]
    result = []
    for d in range(directions):
        fields: dict[str, Any] = {
            "weight_ih": _blocks(xp, W[d, ...], order, hidden),
            "weight_hh": _blocks(xp, R[d, ...], order, hidden),
        }
        if B is not None:
            fields["bias_ih"] = _blocks(xp, B[d, : gates * hidden], order, hidden)
            fields["bias_hh"] = _blocks(xp, B[d, gates * hidden :], order, hidden)
        if P is not None:
            peepholes = _blocks(xp, P[d, :], (0, 1, 2), hidden)  # a copy, i, o, f
            fields["peephole_i"] = peepholes[:hidden]
            fields["peephole_o"] = peepholes[hidden : 2 * hidden]
            fields["peephole_f"] = peepholes[2 * hidden :]
        result.append(_CLASSES[kind](**fields))
    return tuple(result)


def to_onnx(kind: str, params: Any) -> tuple[Optional[Array], ...]:
    """``(W, R, B)``, and for an LSTM ``(W, R, B, P)``, for an ONNX node: the inverse of :func:`from_onnx`.

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    params : params object or tuple (forward, backward) of them
        One direction (the node's ``direction="forward"``, or ``"reverse"`` if you run it with ``reverse=True``)
        or two (``direction="bidirectional"``), agreeing in sizes. ONNX has no LSTM projection.

    Returns
    -------
    W : array, shape (D, G*H, I)
    R : array, shape (D, G*H, H)
    B : array, shape (D, 2*G*H), or None
        ``None`` without bias.
    P : array, shape (D, 3H), or None
        LSTM only (peepholes i, o, f); ``None`` without peepholes.

    Raises
    ------
    ValueError
        ``kind`` is unknown; a projection; a full gate recurrence (``weight_gg``); directions of different sizes,
        or one with a bias (or peepholes) and the other without.
    TypeError
        ``params`` is not one or two params objects of ``kind``.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> W, R, B, P = ar.convert.to_onnx("lstm", ar.init_lstm(3, 4, seed=0))
    >>> W.shape, R.shape, B.shape, P is None
    ((1, 16, 3), (1, 16, 4), (1, 32), True)
    >>> both = (ar.init_gru(3, 4, seed=0), ar.init_gru(3, 4, seed=1))
    >>> [a.shape for a in ar.convert.to_onnx("gru", both)]
    [(2, 12, 3), (2, 12, 4), (2, 24)]
    """
    _check_kind(kind)
    directions = _as_directions(kind, params)
    placement = {f"params[{d}].weight_ih": p.weight_ih for d, p in enumerate(directions)}
    xp, _, _ = namespace_of(**placement)
    hidden = directions[0].hidden_size
    if any(p.hidden_size != hidden or p.input_size != directions[0].input_size for p in directions):
        raise ValueError("both directions must have the same input_size and hidden_size")
    order = _inverse(_ONNX_ORDER[kind])
    W, R, B, P = [], [], [], []
    for p in directions:
        _no_extras(kind, p, "ONNX")
        W.append(_blocks(xp, p.weight_ih, order, hidden))
        R.append(_blocks(xp, p.weight_hh, order, hidden))
        bias_ih, bias_hh = _bias_pair(xp, p)
        if bias_ih is not None:
            B.append(xp.concat([_blocks(xp, bias_ih, order, hidden), _blocks(xp, bias_hh, order, hidden)], axis=0))
        if kind == "lstm" and p.peephole_i is not None:
            P.append(xp.concat([p.peephole_i, p.peephole_o, p.peephole_f], axis=0))
    for name, parts in (("bias", B), ("peepholes", P)):
        if 0 < len(parts) < len(directions):
            raise ValueError(f"one direction has {name} and the other has not; ONNX needs both or neither")
    stacked = [xp.stack(W, axis=0), xp.stack(R, axis=0), xp.stack(B, axis=0) if B else None]
    if kind == "lstm":
        stacked.append(xp.stack(P, axis=0) if P else None)
    return tuple(stacked)


#: the inputs of each ONNX recurrent operator, by position
_ONNX_INPUTS = {
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
}
#: the attributes ONNX defines for each operator (opset 14+), with their AttributeProto type names
_ONNX_COMMON_ATTRIBUTES = {
    "activation_alpha": "FLOATS",
    "activation_beta": "FLOATS",
    "activations": "STRINGS",
    "clip": "FLOAT",
    "direction": "STRING",
    "hidden_size": "INT",
    "layout": "INT",
}
_ONNX_ATTRIBUTES = {
    "RNN": _ONNX_COMMON_ATTRIBUTES,
    "GRU": {**_ONNX_COMMON_ATTRIBUTES, "linear_before_reset": "INT"},
    "LSTM": {**_ONNX_COMMON_ATTRIBUTES, "input_forget": "INT"},
}
#: ONNX's default activations, per direction
_ONNX_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
#: ops whose output is all zeros when their first input is (shape and layout changes, torch's zero states)
_ZERO_PRESERVING = ("Cast", "Expand", "Flatten", "Gather", "Identity", "Reshape", "Slice", "Squeeze", "Tile")
_ZERO_PRESERVING += ("Transpose", "Unsqueeze")


def _onnx_attributes(onnx: Any, node: Any, label: str) -> dict[str, Any]:
    """The node's attributes by name (strings decoded); refuses an attribute ONNX does not define, or a wrong type."""
    expected = _ONNX_ATTRIBUTES[node.op_type]
    values: dict[str, Any] = {}
    for attribute in node.attribute:
        name = attribute.name
        if name not in expected:
            raise ValueError(
                f"{label} has attribute {name!r}, which ONNX {node.op_type} (opset 14+) does not define "
                f"({', '.join(sorted(expected))}); arrayrnn refuses what it cannot honour"
            )
        if name in values:
            raise ValueError(f"{label} has attribute {name!r} twice")
        type_name = onnx.AttributeProto.AttributeType.Name(attribute.type)
        if type_name != expected[name]:
            raise ValueError(f"{label}: attribute {name!r} must be of type {expected[name]}, got {type_name}")
        value = onnx.helper.get_attribute_value(attribute)
        if type_name == "STRING":
            value = value.decode() if isinstance(value, bytes) else str(value)
        elif type_name == "STRINGS":
            value = [v.decode() if isinstance(v, bytes) else str(v) for v in value]
        elif type_name == "FLOATS":
            value = [float(v) for v in value]
        values[name] = value
    return values


def _onnx_options(kind: str, attributes: dict[str, Any], W: Any, label: str) -> tuple[dict[str, Any], int, int]:
    """Check every attribute against the ONNX spec and ``W``; ``(model options, num_directions, layout)``."""
    op = kind.upper()
    direction = attributes.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{label}: direction={direction!r} is not one of 'forward', 'reverse', 'bidirectional'")
    count = 2 if direction == "bidirectional" else 1
    if getattr(W, "ndim", None) == 3 and W.shape[0] != count:
        raise ValueError(
            f"{label}: direction={direction!r} needs num_directions = {count} (W's first dimension), but W has shape "
            f"{shape_text(W.shape)}"
        )
    gates = _GATES[kind]
    hidden_size = attributes.get("hidden_size")
    if hidden_size is not None and (
        hidden_size < 1 or (getattr(W, "ndim", None) == 3 and W.shape[1] != gates * hidden_size)
    ):
        implied = f"{W.shape[1]} / {gates} = {W.shape[1] / gates:g}" if getattr(W, "ndim", None) == 3 else "?"
        raise ValueError(
            f"{label}: hidden_size={hidden_size} does not match the weights: W has shape "
            f"{shape_text(getattr(W, 'shape', ()))} (num_directions, {gates}*hidden_size, input_size), so "
            f"hidden_size = {implied}"
        )
    layout = attributes.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{label}: layout={layout} is not 0 (time-major) or 1 (batch-major)")
    options: dict[str, Any] = _onnx_activation_options(kind, count, attributes, label)
    if "clip" in attributes:
        clip = attributes["clip"]
        if kind != "lstm":
            raise ValueError(
                f"{label}: clip={clip} is not supported: arrayrnn clips only LSTM cells (no {op} clip); "
                "remove the attribute only if the model never reaches it"
            )
        if not clip > 0:
            raise ValueError(f"{label}: clip={clip} must be a positive number (ONNX's cell clip threshold)")
        options["clip"] = float(clip)
    for name, option in (("input_forget", "coupled"), ("linear_before_reset", "linear_before_reset")):
        if name in _ONNX_ATTRIBUTES[op]:
            value = attributes.get(name, 0)
            if value not in (0, 1):
                raise ValueError(f"{label}: {name}={value} must be 0 or 1")
            options[option] = bool(value)
    return options, count, layout


#: ONNX activation functions that take ``activation_alpha`` / ``activation_beta``, with the spec's defaults; Affine's
#: are "unset": onnxruntime reads a missing alpha as 0 (Affine then outputs beta), so only explicit values count
_ONNX_SCALED = {
    "Affine": ("unset", "unset"), "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None), "ScaledTanh": (1.0, 1.0),
    "HardSigmoid": (0.2, 0.5), "Elu": (1.0, None),
}  # fmt: skip


def _onnx_activation_options(kind: str, count: int, attributes: dict[str, Any], label: str) -> dict[str, Any]:
    """The cell options an ONNX node's ``activations`` (with ``activation_alpha/beta``) mean, or a ValueError.

    Runs: LSTM ``[Sigmoid, g, h]`` with ``g``, ``h`` each ``Tanh`` or the identity (``Affine`` with alpha 1, beta 0,
    both given: ``input_activation`` / ``output_activation``), GRU ``[Sigmoid, Tanh]``, RNN ``[Tanh]`` or
    ``[Relu]``; the same in both directions. alpha/beta are consumed in order by the functions that take them (spec).
    """
    op = kind.upper()
    defaults = _ONNX_ACTIVATIONS[op]
    activations = attributes.get("activations")
    scaling = [name for name in ("activation_alpha", "activation_beta") if name in attributes]
    if activations is None:
        return {}  # the defaults, on which activation_alpha/beta have no effect
    alphas, betas = list(attributes.get("activation_alpha", [])), list(attributes.get("activation_beta", []))
    resolved = []  # (name, alpha, beta) per function, alpha/beta consumed in order
    for name in activations:
        alpha, beta = _ONNX_SCALED.get(name, (None, None))
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        resolved.append((name, alpha, beta))
    per = len(defaults)
    # values no function takes are ignored, as onnxruntime ignores them (the spec: consumed in order, as needed)
    directions = [resolved[d * per : (d + 1) * per] for d in range(count)] if len(resolved) == per * count else []
    meaning = [_onnx_activation_meaning(kind, functions) for functions in directions]
    if meaning and all(m is not None for m in meaning) and all(m == meaning[0] for m in meaning):
        return dict(meaning[0])  # type: ignore[arg-type]
    extra = "".join(f" with {name}={attributes[name]}" for name in scaling)
    accepted = {
        "lstm": "[Sigmoid, g, h] with g and h each Tanh or Affine with activation_alpha 1 and activation_beta 0 given "
        "(the identity)",
        "gru": "[Sigmoid, Tanh]",
        "rnn": "[Tanh] or [Relu]",
    }[kind]
    raise ValueError(
        f"{label}: activations={activations}{extra} is not supported; arrayrnn runs {accepted} per direction, the "
        "same in both"
    )


def _onnx_activation_meaning(kind: str, functions: list[tuple[str, Any, Any]]) -> Optional[dict[str, Any]]:
    """The options one direction's ``(name, alpha, beta)`` functions mean, ``None`` if arrayrnn has none."""

    def activation(function: tuple[str, Any, Any]) -> Optional[str]:
        name, alpha, beta = function
        if name == "Tanh":
            return "tanh"
        if name == "Affine" and alpha == 1.0 and beta == 0.0:
            return "identity"
        return None

    names = [function[0] for function in functions]
    if kind == "rnn":
        return {"Tanh": {}, "Relu": {"nonlinearity": "relu"}}.get(names[0])
    if names[0] != "Sigmoid":
        return None
    if kind == "gru":
        return {} if names[1] == "Tanh" else None
    g, h = activation(functions[1]), activation(functions[2])
    if g is None or h is None:
        return None
    return {
        **({"input_activation": g} if g != "tanh" else {}),
        **({"output_activation": h} if h != "tanh" else {}),
    }


def _onnx_is_zero(name: str, initializers: dict[str, Any], producers: dict[str, Any], depth: int = 0) -> bool:
    """Whether the graph value ``name`` is all zeros whatever the inputs (torch exports zero states this way)."""
    if name in initializers:
        return not initializers[name].any()
    node = producers.get(name)
    if node is None or depth > 64:
        return False
    attributes = {a.name: a for a in node.attribute}
    if node.op_type in ("Constant", "ConstantOfShape"):
        if "value" not in attributes:
            return node.op_type == "ConstantOfShape"  # its default value is a zero
        from onnx import numpy_helper

        return not numpy_helper.to_array(attributes["value"].t).any()
    if node.op_type == "Concat":
        return all(_onnx_is_zero(n, initializers, producers, depth + 1) for n in node.input)
    if node.op_type in _ZERO_PRESERVING and node.input:
        return _onnx_is_zero(node.input[0], initializers, producers, depth + 1)
    return False


def _onnx_defaults(
    op: str, values: list[Any], dtype: Any, count: int, hidden: int, layout: int, label: str
) -> tuple[Any, Optional[tuple[int, ...]]]:
    """``(default_state, default_lengths)`` from the constant ``sequence_lens``, ``initial_h`` (, ``initial_c``).

    ``values`` holds, per input, an array (a constant), ``None`` (absent: zeros / all steps) or ``"call"`` (a graph
    input the caller passes). States come back ``(D, B, H)`` whatever the layout; a missing half is zeros.
    """
    import numpy as np

    lengths, *states = values
    names = _ONNX_INPUTS[op][5 : 5 + len(states)]
    default_lengths = None
    if isinstance(lengths, np.ndarray):
        if lengths.dtype.kind not in "iu" or lengths.ndim != 1 or bool((lengths < 0).any()):
            raise ValueError(
                f"input sequence_lens of {label} must be a vector (batch_size,) of non-negative integers, got "
                f"{lengths.dtype} of shape {shape_text(lengths.shape)}"
            )
        default_lengths = tuple(int(v) for v in lengths)
    constants = {name: s for name, s in zip(names, states) if isinstance(s, np.ndarray)}
    if not constants:
        return None, default_lengths
    at_call = [name for name, s in zip(names, states) if isinstance(s, str)]
    if at_call:
        raise ValueError(
            f"input {', '.join(constants)} of {label} is a constant but {', '.join(at_call)} is a graph input: "
            "the model takes its state as one (h_0, c_0) pair; make both graph inputs and pass state= at call time"
        )
    first = next(iter(constants.values()))
    batch = first.shape[0 if layout else 1] if first.ndim == 3 else None
    if layout:
        text, expected = "(batch_size, num_directions, hidden_size) (layout=1)", (batch, count, hidden)
    else:
        text, expected = "(num_directions, batch_size, hidden_size)", (count, batch, hidden)
    if default_lengths is not None and batch is not None and len(default_lengths) != batch:
        raise ValueError(
            f"inputs of {label} disagree on batch_size: sequence_lens has {len(default_lengths)} entries, "
            f"{next(iter(constants))} has batch_size {batch}"
        )
    result = []
    for name, state in zip(names, states):
        if state is None:
            result.append(None)
            continue
        if tuple(state.shape) != expected:
            raise ValueError(
                f"input {name} of {label} must have shape {text} = {shape_text(expected)}, "
                f"got {shape_text(state.shape)}"
            )
        if state.dtype != dtype:
            raise ValueError(f"input {name} of {label} has dtype {state.dtype}; the weights are {dtype}")
        result.append(np.ascontiguousarray(np.transpose(state, (1, 0, 2)) if layout else state))
    shape = result[0].shape if result[0] is not None else result[-1].shape
    result = [np.zeros(shape, dtype=dtype) if state is None else state for state in result]
    return (tuple(result) if op == "LSTM" else result[0]), default_lengths


_RECURRENT_OPS = ("RNN", "LSTM", "GRU")
#: what exporters put between recurrent layers (and a Transpose before the first for batch-first models)
_LINK_TEXT = (
    "Transpose(perm=[0, 2, 1, 3]) then Reshape to (T, B, D*H) (shape [0, 0, -1] or [0, 0, D*H]), or for one "
    "direction Squeeze(axes=[1]); before the first layer only Transpose(perm=[1, 0, 2]) (batch-first)"
)


def _onnx_values(values: Any, graph_inputs: set) -> dict[str, Any]:
    """``values=`` checked: a mapping from graph-input names to arrays (NumPy)."""
    import numpy as np

    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping {{graph input name: array}}, got {type(values).__name__}")
    unknown = [name for name in values if name not in graph_inputs]
    if unknown:
        raise ValueError(f"values names {', '.join(map(repr, unknown))}, which is not an input of the graph")
    return {name: np.asarray(value) for name, value in values.items()}


def _onnx_ints(name: str, initializers: Any, producers: dict[str, Any], graph_inputs: set) -> Optional[list[int]]:
    """The integers of a constant graph value (an initializer that is not a graph input, or a Constant), else None."""
    import numpy as np
    from onnx import numpy_helper

    if name in initializers and name not in graph_inputs:
        array = np.asarray(initializers[name])
    else:
        producer = producers.get(name)
        if producer is None or producer.op_type != "Constant" or [a.name for a in producer.attribute] != ["value"]:
            return None
        array = numpy_helper.to_array(producer.attribute[0].t)
    return [int(v) for v in array.reshape(-1)] if array.dtype.kind in "iu" else None


def _onnx_attribute(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _onnx_trace(name: str, producers: dict[str, Any]) -> tuple[list[Any], Any, str]:
    """Walk back from ``name`` through Transpose/Reshape/Squeeze/Identity: ``(ops in order, end node, end value)``.

    The end node is the recurrent node whose output is the end value, another op (which stopped the walk), or
    ``None`` (a graph input or a value produced nowhere).
    """
    ops: list[Any] = []
    while True:
        producer = producers.get(name)
        if producer is None or producer.op_type not in ("Transpose", "Reshape", "Squeeze", "Identity"):
            return ops[::-1], producer, name
        if len(ops) >= 8 or not producer.input:
            return ops[::-1], producer, name
        ops.append(producer)
        name = producer.input[0]


def _onnx_link_ok(
    ops: list[Any], count: int, hidden: int, initializers: Any, producers: Any, inputs: set, static: Any = None
) -> bool:
    """Whether ``ops`` turn a recurrent node's ``Y (T, D, B, H)`` into exactly ``(T, B, D*H)``.

    ``static``: the graph's fixed ``(T, B)`` when its input declares them (a Reshape may then name them).
    """
    ops = [op for op in ops if op.op_type != "Identity"]
    kinds = [op.op_type for op in ops]
    if kinds == ["Transpose", "Reshape"]:
        if list(_onnx_attribute(ops[0], "perm", [])) != [0, 2, 1, 3] or _onnx_attribute(ops[1], "allowzero", 0):
            return False
        shape = _onnx_ints(ops[1].input[1], initializers, producers, inputs) if len(ops[1].input) > 1 else None
        if shape is None and len(ops[1].input) > 1:  # torch's dynamo exporter computes it from Shape(Y)
            return _onnx_computed_shape_ok(ops[0].output[0], ops[1].input[1], count, hidden, initializers, producers)
        return (
            shape is not None
            and len(shape) == 3
            and shape.count(-1) <= 1
            and (all(v in (0, -1) for v in shape[:2]) or (static is not None and tuple(shape[:2]) == static))
            and shape[2] in (-1, count * hidden)
        )
    if kinds == ["Squeeze"] and count == 1:
        axes = _onnx_attribute(ops[0], "axes")
        if axes is None and len(ops[0].input) > 1:
            axes = _onnx_ints(ops[0].input[1], initializers, producers, inputs)
        return axes is not None and [a % 4 for a in axes] == [1]
    return False


def _onnx_constant_size(node: Any) -> int:
    """How many numbers a Constant node holds (its tensor's elements, or its list's length)."""
    size = 0
    for attribute in node.attribute:
        dims = list(attribute.t.dims) if attribute.HasField("t") else [len(attribute.ints) + len(attribute.floats)]
        count = 1
        for dim in dims:
            count *= max(int(dim), 0)
        size += count
    return size


def _onnx_static_time_batch(graph: Any, name: str, batch_first: bool) -> Optional[tuple[int, int]]:
    """``(T, B)`` when graph input ``name`` declares both as fixed sizes (a static export), else ``None``."""
    declared = [value for value in graph.input if value.name == name]
    if not declared:
        return None
    dims = declared[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[:2]):
        return None
    first, second = int(dims[0].dim_value), int(dims[1].dim_value)
    return (second, first) if batch_first else (first, second)


#: ops a computed Reshape target may use (shape arithmetic on small integer tensors), and how many
_SHAPE_OPS = frozenset({"Shape", "Slice", "Concat", "Mul", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Cast",
                        "Constant", "Identity"})  # fmt: skip
_MAX_SHAPE_OPS = 32


def _onnx_computed_shape_ok(
    source: str, target: str, count: int, hidden: int, initializers: Any, producers: Any
) -> bool:
    """Whether the integers ``target``, computed from ``source`` ``(T, B, D, H)`` by shape arithmetic only, are
    ``[T, B, D*H]``: the subgraph (at most :data:`_MAX_SHAPE_OPS` ops of :data:`_SHAPE_OPS`, reading nothing but
    ``source``, constants and initializers) runs in ONNX's reference evaluator on two small zero probes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    nodes: dict[int, Any] = {}
    constants: set[str] = set()
    pending, seen = [target], set()
    while pending:
        name = pending.pop()
        if name in seen or name == source or name == "":
            continue
        seen.add(name)
        producer = producers.get(name)
        if producer is None:
            if name not in initializers:
                return False  # a graph input or a value produced nowhere: not shape arithmetic on Y
            constants.add(name)
            continue
        if producer.op_type not in _SHAPE_OPS or len(nodes) >= _MAX_SHAPE_OPS:
            return False
        if producer.op_type == "Constant" and _onnx_constant_size(producer) > 64:
            return False  # shape arithmetic uses a few integers
        nodes[id(producer)] = producer
        pending.extend(producer.input)
    if any(initializers[name].size > 64 for name in constants):
        return False  # shape arithmetic uses a few integers
    order = [n for n in producers.values() if id(n) in nodes]  # graph order is topological
    order = list({id(n): n for n in order}.values())
    for probe in ((5, 3), (7, 2)):
        graph = helper.make_graph(
            order,
            "shape",
            [helper.make_tensor_value_info(source, TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(target, TensorProto.INT64, None)],
            initializer=[numpy_helper.from_array(np.asarray(initializers[name]), name) for name in constants],
        )
        y = np.zeros((probe[0], probe[1], count, hidden), np.float32)
        try:
            (result,) = ReferenceEvaluator(helper.make_model(graph)).run(None, {source: y})
        except Exception:  # noqa: BLE001 - any failure of this small computation means "not the exporters' shape"
            return False
        if np.asarray(result).reshape(-1).tolist() != [probe[0], probe[1], count * hidden]:
            return False
    return True


def _onnx_chain(recurrents: list[Any], producers: dict[str, Any], graph_inputs: set) -> tuple[list[Any], bool, list]:
    """The recurrent nodes in order from the graph input, whether the model is batch-first, the ops joining them.

    One node whose ``X`` is not a graph input (possibly through a batch-first Transpose) is imported on its own.
    """
    label = {id(n): f"{n.op_type} node {n.name or '<unnamed>'!r}" for n in recurrents}
    following: dict[int, Any] = {}
    starts = []
    for n in recurrents:
        ops, end, value = _onnx_trace(n.input[0] if n.input else "", producers)
        kinds = [op.op_type for op in ops if op.op_type != "Identity"]
        if end is None and value in graph_inputs and kinds in ([], ["Transpose"]):
            transposed = bool(kinds)
            if transposed and (
                list(_onnx_attribute([op for op in ops if op.op_type == "Transpose"][0], "perm", [])) != [1, 0, 2]
                or _onnx_attribute(n, "layout", 0) != 0
            ):
                if len(recurrents) == 1:
                    return recurrents, False, []
                raise ValueError(f"input X of {label[id(n)]} comes through a Transpose that is not {_LINK_TEXT}")
            starts.append((n, bool(kinds)))
            continue
        if len(recurrents) == 1:
            return recurrents, False, []  # X computed in the graph: the node on its own
        if end is None or end.op_type not in _RECURRENT_OPS:
            culprit = ops[0] if end is None and ops else end
            what = f"a {culprit.op_type} node {culprit.name or '<unnamed>'!r}" if culprit is not None else repr(value)
            raise ValueError(
                f"input X of {label[id(n)]} comes from {what}; arrayrnn imports a chain of recurrent nodes only "
                f"when they are joined by {_LINK_TEXT} (or import one node with node=<name>)"
            )
        if value != end.output[0]:
            raise ValueError(f"input X of {label[id(n)]} is not output Y of {label[id(end)]}; import one with node=")
        if id(end) in following:
            raise ValueError(f"{label[id(end)]} feeds several recurrent nodes; import one with node=<name>")
        following[id(end)] = (n, ops)
    if len(starts) != 1:
        raise ValueError(
            f"the recurrent nodes do not form one chain from a graph input ({len(starts)} start at a graph input); "
            "import one with node=<name>"
        )
    (current, batch_first), chain, links = starts[0], [starts[0][0]], []
    while id(current) in following:
        current, ops = following[id(current)]
        chain.append(current)
        links.append(ops)
    if len(chain) != len(recurrents):
        raise ValueError("the recurrent nodes do not form one chain from the graph input; import one with node=")
    return chain, batch_first, links


def _onnx_read_node(
    onnx: Any, recurrent: Any, initializers: Any, graph_inputs: set, producers: Any, values: dict, sliced: bool
) -> dict[str, Any]:
    """One recurrent node checked and read: kind, options, params per direction, its state/length inputs."""
    from onnx import numpy_helper

    kind = recurrent.op_type.lower()
    label = f"{recurrent.op_type} node {recurrent.name or '<unnamed>'!r}"
    if recurrent.domain not in ("", "ai.onnx"):
        raise ValueError(f"{label} is in domain {recurrent.domain!r}, not ONNX's; only ai.onnx operators are imported")
    attributes = _onnx_attributes(onnx, recurrent, label)
    slots = _ONNX_INPUTS[recurrent.op_type]
    if len(recurrent.input) > len(slots):
        raise ValueError(
            f"{label} has {len(recurrent.input)} inputs; ONNX {recurrent.op_type} takes at most {len(slots)} "
            f"({', '.join(slots)})"
        )

    def initializer(position: int) -> Any:
        if len(recurrent.input) <= position or recurrent.input[position] == "":
            return None
        name = recurrent.input[position]
        if name in values:
            return values[name]
        if name not in initializers:
            given = "a graph input" if name in graph_inputs else "computed in the graph"
            raise ValueError(
                f"input {slots[position]} ({name!r}) of {label} is not an initializer but {given}; arrayrnn reads the "
                "weights W, R, B and P only from initializers, or from values={name: array} for graph inputs"
            )
        return initializers[name]

    def constant(position: int) -> Any:
        """sequence_lens / initial_h / initial_c: an array, None (absent or zeros), "call" or ("slice", ...)."""
        if len(recurrent.input) <= position or recurrent.input[position] == "":
            return None
        name = recurrent.input[position]
        if name in initializers:  # also a graph input: the initializer is the default a caller may override
            return initializers[name]
        if name in graph_inputs:
            return "call"
        producer = producers.get(name)
        if (
            producer is not None
            and producer.op_type == "Constant"
            and [a.name for a in producer.attribute] == ["value"]
        ):
            return numpy_helper.to_array(producer.attribute[0].t)
        if slots[position] != "sequence_lens" and _onnx_is_zero(name, initializers, producers):
            return None  # zeros whatever the input (torch's exported default state): ONNX's default
        if sliced and producer is not None and producer.op_type == "Slice" and slots[position] != "sequence_lens":
            bounds = [_onnx_ints(n, initializers, producers, graph_inputs) for n in producer.input[1:]]
            if producer.input[0] in graph_inputs and producer.input[0] not in initializers and None not in bounds:
                starts, ends, axes, steps = (bounds + [[0], [1]][len(bounds) - 2 :])[:4]
                if len(starts) == 1 and axes == [0] and steps == [1] and len(ends) == 1:
                    return ("slice", producer.input[0], starts[0], ends[0])
        source = "defined nowhere in the graph" if producer is None else f"computed by a {producer.op_type} node"
        raise ValueError(
            f"input {slots[position]} ({name!r}) of {label} is {source}; arrayrnn imports it only as an initializer "
            f"or Constant (kept as the model's default_{'lengths' if position == 4 else 'state'}) or as a graph "
            f"input (you pass it at call time: {'lengths=' if position == 4 else 'state='})"
            + ("; in a chain, a state sliced from one (L*D, B, H) graph input per layer" if sliced else "")
        )

    W = initializer(1)
    options, count, layout = _onnx_options(kind, attributes, W, label)
    if count == 1 and attributes.get("direction") == "reverse":
        options = {**options, "reverse": True}  # a model that runs every layer backwards
    arrays = [W, initializer(2), initializer(3)] + ([initializer(7)] if kind == "lstm" else [])
    directions = from_onnx(kind, *arrays)
    return {
        "op": recurrent.op_type,
        "kind": kind,
        "label": label,
        "options": options,
        "count": count,
        "layout": layout,
        "dtype": W.dtype,
        "hidden": directions[0].hidden_size,
        "directions": directions,
        "inputs": [constant(p) for p in range(4, len(slots)) if p != 7],
        "lengths_name": recurrent.input[4] if len(recurrent.input) > 4 else "",
    }


def _onnx_chain_defaults(read: list[dict[str, Any]]) -> tuple[Any, Optional[tuple[int, ...]]]:
    """``(default_state, default_lengths)`` of a chain of nodes, each already read; checks they agree."""
    import numpy as np

    first = read[0]
    for layer, r in enumerate(read[1:], 1):
        for key, what in (("op", "operator"), ("options", "options"), ("count", "directions"), ("layout", "layout")):
            if r[key] != first[key]:
                raise ValueError(
                    f"{r['label']} (layer {layer}) differs from {first['label']} in its {what} ({r[key]} vs "
                    f"{first[key]}); arrayrnn imports a chain as one model, whose layers agree"
                )
        if r["lengths_name"] != first["lengths_name"]:
            raise ValueError(f"{r['label']} has another sequence_lens than {first['label']}; the layers must share it")
    if first["layout"]:
        raise ValueError(f"{first['label']}: layout=1 in a chain of nodes is not imported (exporters use Transposes)")
    lengths = first["inputs"][0]
    _, default_lengths = _onnx_defaults(first["op"], [lengths], first["dtype"], 1, 1, 0, first["label"])
    count, slots = first["count"], len(first["inputs"]) - 1
    states = [r["inputs"][1:] for r in read]
    flat = [s for layer in states for s in layer]
    if all(s is None for s in flat):
        return None, default_lengths
    if all(isinstance(s, tuple) for s in flat):
        for slot in range(slots):
            sources = {layer[slot][1] for layer in states}
            bounds = [layer[slot][2:] for layer in states]
            if len(sources) != 1 or bounds != [(l * count, (l + 1) * count) for l in range(len(read))]:
                raise ValueError(
                    f"the layers' initial states are slices {bounds} of {sorted(sources)}; arrayrnn imports them "
                    f"only as consecutive slices [l*D, (l+1)*D) of one (L*D, B, H) graph input (passed as state=)"
                )
        return None, default_lengths
    if any(isinstance(s, (tuple, str)) for s in flat):
        raise ValueError(
            f"the initial states of {', '.join(r['label'] for r in read)} mix graph inputs, constants and zeros, or "
            "are one graph input per layer; arrayrnn imports them when every layer's are constants (or zeros), or "
            "when all are consecutive slices of one (L*D, B, H) graph input (passed as state=)"
        )
    per_layer = [
        _onnx_defaults(r["op"], [None, *r["inputs"][1:]], r["dtype"], count, r["hidden"], 0, r["label"])[0]
        for r in read
    ]
    template = next(s for s in per_layer if s is not None)
    template = template if isinstance(template, tuple) else (template,)
    parts = [
        (s if isinstance(s, tuple) else (s,)) if s is not None else tuple(np.zeros_like(t) for t in template)
        for s in per_layer
    ]
    batches = {p[0].shape[1] for p in parts}
    if len(batches) != 1:
        raise ValueError(f"the layers' constant initial states disagree on batch_size ({sorted(batches)})")
    stacked = tuple(np.concatenate([p[k] for p in parts], axis=0) for k in range(len(template)))
    return (stacked if first["op"] == "LSTM" else stacked[0]), default_lengths


def from_onnx_model(
    model: Any,
    node: Optional[str] = None,
    *,
    backend: Optional[str] = None,
    device: Any = None,
    base_dir: Any = None,
    values: Optional[Mapping] = None,
):
    """An ``ar.RNN/LSTM/GRU`` from the ``RNN``/``LSTM``/``GRU`` nodes of an ONNX ``model`` (stacked, bidirectional).

    Needs the ``onnx`` package (``pip install ".[onnx]"``). Nothing the nodes say is dropped: every input
    and attribute is honoured, or refused with a ``ValueError`` that names it.

    * The whole graph (``node=None``): the recurrent nodes must form one chain from a graph input, as torch's exporters
      and :func:`to_onnx_model` write stacked models: layer ``l``'s ``Y`` ``(T, D, B, H)`` reaches layer ``l + 1``'s
      ``X`` through ``Transpose(perm=[0, 2, 1, 3])`` and ``Reshape`` to ``(T, B, D*H)`` (shape ``[0, 0, -1]``, ``[0, 0,
      D*H]``, the fixed ``[T, B, D*H]`` of a graph whose input declares ``T`` and ``B``, or computed from ``Shape(Y)``
      by at most 32 shape ops, which are run on two small probes to check that they give ``(T, B, D*H)``: torch's dynamo
      exporter), or, for one direction, ``Squeeze(axes=[1])`` (``Identity`` ops are skipped); any other op there is
      refused by name. The first node's ``X`` is a graph input, or ``Transpose(perm=[1, 0, 2])`` of one: the model is
      then ``batch_first``. The layers must agree in operator, directions and options. Their states are all zeros, all
      constants (stacked into one ``(L*D, B, H)`` ``default_state``), or consecutive slices ``[l*D, (l+1)*D)`` of one
      ``(L*D, B, H)`` graph input per state (torch's export of ``module(x, h_0)``: pass ``state=`` at call time); they
      share one ``sequence_lens``. Ops after the last node (torch's output Transpose/Reshape/Concat) are not read: the
      model returns torch's ``y`` and ``(L*D, B, H)`` final states. A graph with a single recurrent node whose ``X`` is
      computed otherwise is imported as that node alone.
    * ``node=name`` imports that one node as a one-layer model, wherever it sits.
    * Inputs ``W``, ``R``, ``B`` and the LSTM peepholes ``P`` must be graph initializers, or graph inputs whose
      arrays you pass in ``values``.
    * ``sequence_lens``, ``initial_h``, ``initial_c`` given as graph inputs (not initializers) are fine: the caller
      passes them at call time, ``model(x, state, lengths=...)`` (states ``(D, B, H)``, an LSTM's as the pair
      ``(h_0, c_0)``). Given as constants (an initializer, which is also ONNX's overridable default when the name
      is a graph input too, or a ``Constant`` node) they are honoured: they become the model's
      ``default_state`` / ``default_lengths``, which a call gets whenever it passes ``state=None`` /
      ``lengths=None`` (so such calls must have the constants' batch size; pass your own, or set the attribute
      to ``None``, to change that); a missing ``initial_h`` or ``initial_c`` beside a constant one is zeros. A
      state computed in the graph is accepted only when it is all zeros whatever the input (torch exports its
      default state as ``ConstantOfShape``/``Expand``/``Slice`` of zeros): ONNX's default. Anything else computed
      is refused, as is a constant ``initial_h`` beside a graph-input ``initial_c`` (or the reverse). Note that
      for ``sequence_lens[b] == 0`` onnxruntime returns a zero final state, arrayrnn the initial one.
      ``ar.save`` does not store ``default_state`` / ``default_lengths``.
    * Attributes are checked against the ONNX spec (opset 14+); any other attribute is refused. ``direction``:
      ``"forward"``, ``"reverse"`` (a model with ``reverse=True``; a chain's nodes must all be reverse or none) or
      ``"bidirectional"``, matching ``W``'s first dimension. ``hidden_size``: what ``W`` implies.
      ``layout``: 0, or 1 which becomes ``batch_first=True``; the model's states stay ``(D, B, H)`` (ONNX's are
      ``(B, D, H)`` with layout 1; constant ones are transposed) and its ``y`` is ``(B, T, D*H)`` (ONNX's ``Y``
      is ``(B, T, D, H)``, the same numbers). ``activations`` (one list per direction, the same in both): LSTM
      ``[Sigmoid, g, h]`` with ``g`` and ``h`` each ``Tanh`` or ``Affine`` with ``activation_alpha`` 1 and
      ``activation_beta`` 0 given explicitly (the identity: ``input_activation`` / ``output_activation`` =
      ``"identity"``, Greff et al.'s NIAF / NOAF; onnxruntime reads a missing alpha as 0), GRU ``[Sigmoid, Tanh]``,
      RNN ``[Tanh]`` or ``[Relu]`` (``nonlinearity``); alpha/beta values no listed function takes are ignored, as
      onnxruntime ignores them. Any other function (``HardSigmoid``, ``Elu``, ...) is refused by name.
      ``clip``: positive, LSTM only (arrayrnn has no GRU/RNN clip). ``input_forget`` (LSTM, ``coupled``) and
      ``linear_before_reset`` (GRU): 0 or 1.

    Parameters
    ----------
    model : onnx.ModelProto, str or os.PathLike
        The model, or the path of a ``.onnx`` file.
    node : str, optional
        Import only the recurrent node of this name (one layer). Default: the whole chain.
    backend : str, optional
        Where to put the params; ``None`` (default): the current backend.
    device : optional
        The device on that backend.
    base_dir : str or os.PathLike, optional
        The folder that tensors kept in external files are read from. Default: the folder of ``model`` when it is
        a path; a proto (loaded with ``load_external_data=False``) that uses external data needs it. External data
        is never read relative to the current directory nor outside this folder (no ``..``, absolute paths or
        symlinks leading out), and only the bytes a tensor's dims declare (see ``docs/security.md``).
    values : mapping of str to array, optional
        Arrays for weights (``W``, ``R``, ``B``, ``P``) that the graph takes as inputs, by graph-input name.

    Returns
    -------
    RNN, LSTM or GRU
        One layer per node of the chain (bidirectional for ``direction="bidirectional"``).

    Raises
    ------
    ValueError
        No recurrent node (or none named ``node``), or one outside ONNX's domain; recurrent nodes that do not form
        one chain from a graph input, an op between layers other than the exporters' reshaping (named), layers
        that disagree (operator, directions, options, ``sequence_lens``), ``layout=1`` in a chain, layer states
        mixing graph inputs, constants and zeros, or one graph input per layer; more inputs than the operator has;
        a weight that is neither an initializer nor in ``values``; ``values`` naming no graph input; a
        ``sequence_lens``/``initial_h``/``initial_c`` input computed in the
        graph (other than all-zero states), a constant one of the wrong shape or dtype, or constant and graph-input
        states mixed; an attribute ONNX does not define for the operator, or of the wrong type; ``direction``
        unknown or not matching ``W``; ``hidden_size`` not what ``W`` implies; ``layout`` not 0 or 1; activations
        other than those above; ``clip`` not positive, or on a non-LSTM node;
        ``input_forget`` or ``linear_before_reset`` not 0 or 1; shapes that do not fit.
        External data (named by tensor): refused for a proto without ``base_dir``; a location that is absolute,
        has ``..`` or resolves outside the folder; not a regular file; an element type of no fixed byte size; a
        ``length`` other than the dims' bytes; ``offset`` + size past the end of the file.
    FileNotFoundError
        An external data file that is not in the folder.
    TypeError
        ``base_dir`` is not a path; ``values`` is not a mapping.
    ImportError
        ``onnx`` is not installed.

    Examples
    --------
    >>> import onnx
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> import arrayrnn as ar
    >>> W, R, B = ar.convert.to_onnx("gru", ar.init_gru(3, 4, seed=0))
    >>> node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], hidden_size=4, linear_before_reset=1)
    >>> graph = helper.make_graph(
    ...     [node], "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 3])],
    ...     [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    ...     initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
    ...                  numpy_helper.from_array(B, "B")])
    >>> model = ar.convert.from_onnx_model(helper.make_model(graph))
    >>> type(model).__name__, model.hidden_size, model.linear_before_reset, model.default_state
    ('GRU', 4, True, None)

    A stacked bidirectional LSTM exported by torch imports in one call:

    >>> import os, tempfile, warnings
    >>> import torch
    >>> lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    >>> path = os.path.join(tempfile.mkdtemp(), "lstm.onnx")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     torch.onnx.export(lstm, (torch.zeros(1, 5, 3),), path, dynamo=False)
    >>> model = ar.convert.from_onnx_model(path)
    >>> model.num_layers, model.bidirectional, model.batch_first
    (2, True, True)
    """
    import onnx

    from .backend import get_backend, to_backend
    from .models import GRU, LSTM, RNN

    model, initializers = _onnx_load(onnx, model, base_dir)  # external data: the model's folder only, bounded
    graph = model.graph
    graph_inputs = {value.name for value in graph.input}
    values = _onnx_values(values, graph_inputs)
    producers = {output: n for n in graph.node for output in n.output}
    recurrents = [n for n in graph.node if n.op_type in _RECURRENT_OPS]
    candidates = [n for n in recurrents if node is None or n.name == node]
    found = ", ".join(f"{n.name or '<unnamed>'} ({n.op_type})" for n in recurrents)
    if not candidates or (node is not None and len(candidates) != 1):
        which = f" named {node!r}" if node is not None else ""
        unrolled = "" if recurrents else (
            " (torch's dynamo exporter writes nn.RNN as MatMul/Tanh steps, not an RNN node: export it with "
            "torch.onnx.export(..., dynamo=False))"
        )  # fmt: skip
        raise ValueError(
            f"expected exactly one RNN/LSTM/GRU node{which} in the graph, found: {found or 'none'}{unrolled}"
        )
    if node is not None:
        chain, batch_first, links = candidates, False, []
    else:
        chain, batch_first, links = _onnx_chain(recurrents, producers, graph_inputs)
    read = [
        _onnx_read_node(onnx, n, initializers, graph_inputs, producers, values, sliced=len(chain) > 1) for n in chain
    ]
    static = _onnx_static_time_batch(graph, _onnx_trace(chain[0].input[0], producers)[2], batch_first)
    for before, after, ops in zip(read, read[1:], links):
        if not _onnx_link_ok(ops, before["count"], before["hidden"], initializers, producers, graph_inputs, static):
            through = ", ".join(f"{op.op_type} {op.name or '<unnamed>'!r}" for op in ops) or "nothing"
            raise ValueError(
                f"input X of {after['label']} comes from {before['label']} through {through}, which is not what "
                f"arrayrnn accepts between layers: {_LINK_TEXT}"
            )
    first = read[0]
    if len(chain) == 1:
        default_state, default_lengths = _onnx_defaults(
            first["op"],
            first["inputs"],
            first["dtype"],
            first["count"],
            first["hidden"],
            first["layout"],
            first["label"],
        )
        batch_first = bool(first["layout"]) or batch_first
    else:
        default_state, default_lengths = _onnx_chain_defaults(read)
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[first["kind"]]
    target = backend if backend is not None else get_backend()
    params = to_backend(tuple(tuple(r["directions"]) for r in read), target, device=device)
    imported = cls.from_params(params, batch_first=batch_first, **first["options"])
    if default_state is not None:
        imported.default_state = to_backend(default_state, target, device=device)
    imported.default_lengths = default_lengths
    return imported


# --------------------------------------------------------------------------------------------
# ONNX external data: read only from the model's own folder, only what a tensor declares


def _onnx_load(onnx: Any, model: Any, base_dir: Any) -> tuple[Any, Any]:
    """``(ModelProto, initializers by name)``, external data confined to the model's folder and bounded.

    A path is loaded without its external data, which then resolves against ``base_dir`` if given, else the path's
    own folder; a proto's resolves against ``base_dir`` alone (without it, a tensor kept in an external file is
    refused): never against the current directory. Initializers become arrays on first use (a mapping); tensors in
    node attributes (``Constant`` values) that use external data are read now, into a copy of a caller's proto.
    """
    import os

    from onnx.external_data_helper import uses_external_data

    if base_dir is not None:
        if not isinstance(base_dir, (str, os.PathLike)):
            raise TypeError(f"base_dir must be a str or os.PathLike (a folder), got {type(base_dir).__name__}")
        if not os.path.isdir(base_dir):
            raise ValueError(f"base_dir {os.fsdecode(base_dir)!r} is not a folder")
    if not isinstance(model, onnx.ModelProto):
        if base_dir is None and isinstance(model, (str, os.PathLike)):
            base_dir = os.path.dirname(os.path.abspath(os.fsdecode(model)))
        model = onnx.load(model, load_external_data=False)
    elif any(uses_external_data(t) for n in model.graph.node for a in n.attribute for t in [a.t, *a.tensors]):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the caller's proto is left as it is
        model = copy
    root = None if base_dir is None else os.path.realpath(os.fsdecode(base_dir))
    for node in model.graph.node:
        for attribute in node.attribute:
            for tensor in [attribute.t, *attribute.tensors]:
                if uses_external_data(tensor):
                    tensor.raw_data = _onnx_external_bytes(tensor, root)
                    tensor.data_location = onnx.TensorProto.DEFAULT
                    del tensor.external_data[:]
    return model, _OnnxInitializers(model.graph.initializer, root)


class _OnnxInitializers(Mapping):
    """The graph's initializers by name, each converted to a NumPy array on first use (external data included)."""

    def __init__(self, tensors: Any, root: Optional[str]) -> None:
        self._tensors = {tensor.name: tensor for tensor in tensors}
        self._root = root
        self._arrays: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._arrays:
            from onnx import TensorProto, numpy_helper
            from onnx.external_data_helper import uses_external_data

            tensor = self._tensors[name]
            if uses_external_data(tensor):
                inline = TensorProto()
                inline.CopyFrom(tensor)
                inline.raw_data = _onnx_external_bytes(tensor, self._root)
                inline.data_location = TensorProto.DEFAULT
                del inline.external_data[:]
                tensor = inline
            self._arrays[name] = numpy_helper.to_array(tensor)
        return self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Any:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


#: ONNX element types whose external data arrayrnn reads (fixed-size elements, whole bytes)
_ONNX_EXTERNAL_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT8", "UINT8", "INT16", "UINT16", "INT32")
_ONNX_EXTERNAL_TYPES += ("UINT32", "INT64", "UINT64", "BOOL")


def _onnx_external_bytes(tensor: Any, root: Optional[str]) -> bytes:
    """The bytes of a tensor kept in an external file: a regular file inside ``root``, exactly the declared size."""
    import math
    import os
    import re
    import stat

    from onnx import TensorProto, helper
    from onnx.external_data_helper import ExternalDataInfo

    what = f"tensor {tensor.name!r}"
    try:
        info = ExternalDataInfo(tensor)
    except ValueError as error:
        raise ValueError(f"{what} has invalid external data: {error}") from None
    location = info.location
    if root is None:
        raise ValueError(
            f"{what} keeps its data in an external file ({location!r}) but the model was given as a proto, which "
            "has no folder: pass the .onnx file's path, or base_dir= (the folder holding the data); arrayrnn never "
            "reads external data relative to the current directory"
        )
    parts = re.split(r"[\\/]", location)
    if not location or "\x00" in location or os.path.isabs(location) or location[:1] in "/\\" or ":" in parts[0]:
        raise ValueError(f"{what}: external data location {location!r} is not a relative path inside {root!r}")
    if ".." in parts:
        raise ValueError(f"{what}: external data location {location!r} escapes the model's folder {root!r} (..)")
    full = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(
            f"{what}: external data location {location!r} resolves (through a symlink) to {full!r}, outside the "
            f"model's folder {root!r}"
        )
    try:
        status = os.stat(full)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: external data file {location!r} does not exist in {root!r}") from None
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"{what}: external data location {location!r} is not a regular file")
    type_name = (
        TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in TensorProto.DataType.values() else "?"
    )
    if type_name not in _ONNX_EXTERNAL_TYPES:
        raise ValueError(f"{what}: external data of element type {type_name} is not supported")
    if any(dim < 0 for dim in tensor.dims):
        raise ValueError(f"{what} has negative dims {list(tensor.dims)}")
    size = math.prod(tensor.dims) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    if info.length is not None and info.length != size:
        raise ValueError(
            f"{what}: external data length {info.length} does not match its dims {list(tensor.dims)} of "
            f"{type_name} ({size} bytes)"
        )
    offset = info.offset or 0
    if offset + size > status.st_size:
        raise ValueError(
            f"{what}: external data needs bytes {offset}..{offset + size} of {location!r}, which has only "
            f"{status.st_size}"
        )
    with open(full, "rb") as file:
        file.seek(offset)
        data = file.read(size)
    if len(data) != size:
        raise ValueError(f"{what}: external data file {location!r} ended early")
    return data


# --------------------------------------------------------------------------------------------
# the tutorial's concatenated layout


def from_concat(kind: str, w: Array, b: Optional[Array], input_size: int) -> Params:
    """Params from one matrix acting on ``[h, x]``: ``z = [h, x] @ w + b`` (the tutorial's layout).

    The ``G*H`` columns are gates in PyTorch's order (LSTM i, f, g, o: the tutorial's ``W_i, W_f, W_t, W_o``
    side by side; GRU r, z, n). The bias goes to ``bias_ih`` (``bias_hh`` is zero).

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    w : array, shape (H + I, G*H)
        Rows: hidden first, then input.
    b : array, shape (G*H,) or (1, G*H), or None
        The bias (``None``: no bias).
    input_size : int
        ``I`` (``H`` is then ``w.shape[0] - I``).

    Returns
    -------
    RNNParams, LSTMParams or GRUParams
        New arrays on the inputs' backend and device.

    Raises
    ------
    ValueError
        ``kind`` is unknown; ``input_size`` is not a positive integer; ``w`` or ``b`` has the wrong shape.
    BackendMismatchError
        ``w`` and ``b`` live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> s, n_features = 4, 3
    >>> w, b = np.ones((s + n_features, s), "float32"), np.zeros((1, s), "float32")
    >>> params = ar.convert.from_concat("rnn", w, b, input_size=n_features)
    >>> params.weight_ih.shape, params.weight_hh.shape, params.bias_ih.shape
    ((4, 3), (4, 4), (4,))
    """
    gates = _check_kind(kind)
    xp, _, _ = namespace_of(w=w, b=b)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    _require_ndim("w", w, 2, f"(hidden_size + input_size, {gates}*hidden_size)")
    hidden = w.shape[0] - input_size
    if hidden < 1 or w.shape[1] != gates * hidden:
        raise ValueError(
            f"w must have shape (hidden_size + input_size, {gates}*hidden_size) acting on [h, x]; with "
            f"input_size={input_size} and {w.shape[1]} columns that is "
            f"({w.shape[1] // gates + input_size}, {w.shape[1]}), got {shape_text(w.shape)}"
        )
    weight_hh = _blocks(xp, xp.matrix_transpose(w[:hidden, :]), tuple(range(gates)), hidden)
    weight_ih = _blocks(xp, xp.matrix_transpose(w[hidden:, :]), tuple(range(gates)), hidden)
    bias_ih = bias_hh = None
    if b is not None:
        if tuple(b.shape) not in ((gates * hidden,), (1, gates * hidden)):
            raise ValueError(
                f"b must have shape ({gates}*hidden_size,) or (1, {gates}*hidden_size) = "
                f"(1, {gates * hidden}), got {shape_text(b.shape)}"
            )
        bias_ih = xp.reshape(_blocks(xp, xp.reshape(b, (gates * hidden,)), tuple(range(gates)), hidden), (-1,))
        bias_hh = _zeros_like(xp, bias_ih)
    return _CLASSES[kind](weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)


def to_concat(kind: str, params: Params, *, linear_before_reset: bool = True) -> tuple[Array, Optional[Array]]:
    """``(w, b)`` acting on ``[h, x]`` (the tutorial's layout): the inverse of :func:`from_concat`.

    The two biases are summed. A GRU's recurrent candidate bias ``b_hn`` sits inside ``r * (...)`` when run with
    ``linear_before_reset=True``, so it cannot be folded there and must be zero (checked); with
    ``linear_before_reset=False`` it folds exactly. The layout has no projection and no peepholes.

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
        The cell (``G`` = 1, 4, 3 gates).
    params : RNNParams, LSTMParams or GRUParams
        One layer in one direction.
    linear_before_reset : bool, optional
        GRU only: how the params are run (default ``True``).

    Returns
    -------
    w : array, shape (H + I, G*H)
        Rows: hidden first, then input.
    b : array, shape (1, G*H), or None
        ``None`` when the params have no bias.

    Raises
    ------
    ValueError
        ``kind`` is unknown; a projection or peepholes; a non-zero GRU ``b_hn`` with ``linear_before_reset=True``.
    TypeError
        ``params`` is not a params object of ``kind``.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> w, b = ar.convert.to_concat("rnn", params)
    >>> w.shape, b.shape
    ((7, 4), (1, 4))
    >>> back = ar.convert.from_concat("rnn", w, b, input_size=3)
    >>> bool(np.allclose(back.bias_ih, params.bias_ih + params.bias_hh))
    True
    """
    gates = _check_kind(kind)
    (params,) = _as_directions(kind, params)
    _no_extras(kind, params, "the concatenated layout")
    xp, _, _ = namespace_of(weight_ih=params.weight_ih)
    w = xp.concat([xp.matrix_transpose(params.weight_hh), xp.matrix_transpose(params.weight_ih)], axis=0)
    bias_ih, bias_hh = _bias_pair(xp, params)
    if bias_ih is None:
        return w, None
    hidden = params.hidden_size
    if kind == "gru" and linear_before_reset and bool(xp.any(bias_hh[2 * hidden :] != 0)):
        raise ValueError(
            "params.bias_hh[2H:] (the GRU's b_hn) is non-zero: with linear_before_reset=True it is scaled by the "
            "reset gate and cannot be folded into one bias; pass linear_before_reset=False only if you run the "
            "params that way"
        )
    return w, xp.reshape(bias_ih + bias_hh, (1, gates * hidden))


# --------------------------------------------------------------------------------------------
# ONNX export (the implementation lives in _onnx_export.py)


def to_onnx_model(
    model: Any,
    path: Any = None,
    *,
    opset: Optional[int] = None,
    lengths_input: bool = False,
    state_inputs: bool = False,
):
    """An ONNX model (``onnx.ModelProto``) computing ``model(x)``, which onnxruntime runs; written to ``path`` if given.

    Needs the ``onnx`` package. The graph has one ONNX ``RNN``/``LSTM``/``GRU`` node per layer (``direction=
    "bidirectional"`` for a bidirectional model), ``layout=0``, the weights as initializers (gate orders mapped as
    :func:`to_onnx` does); between layers the node's ``Y`` ``(T, D, B, H)`` becomes ``(T, B, D*H)`` through a
    Transpose and a Reshape. A ``batch_first`` model gets Transposes around the nodes (onnxruntime refuses
    ``layout=1``). Inputs: ``x`` (``(T, B, I)``, or ``(B, T, I)`` with ``batch_first``; ``T`` and ``B`` dynamic),
    then ``lengths`` (int32 ``(B,)``, fed to every node's ``sequence_lens``) with ``lengths_input``, then ``h0``
    (and ``c0``), ``(L*D, B, H)`` as torch takes them, with ``state_inputs``. Outputs ``y``, ``h_n`` (and ``c_n``)
    shaped exactly as the model's. Mapped: LSTM peepholes (``P``), ``coupled`` (``input_forget=1``), ``clip``;
    GRU ``linear_before_reset``; RNN ``nonlinearity="relu"`` (``activations=["Relu"]``). A model's constant
    ``default_lengths`` / ``default_state`` become initializers unless the matching graph input is asked for.

    Parameters
    ----------
    model : RNN, LSTM or GRU
        The model; its params may live on any backend (they are copied to the host with ``ar.to_numpy``).
    path : str or os.PathLike, optional
        Where to write the ``.onnx`` file.
    opset : int, optional
        The ONNX opset (default 17; at least 14).
    lengths_input : bool, optional
        Add the graph input ``lengths`` (default ``False``: every sequence runs all ``T`` steps).
    state_inputs : bool, optional
        Add the graph inputs ``h0`` (and ``c0`` for an LSTM) (default ``False``: zero initial states).

    Returns
    -------
    onnx.ModelProto
        The checked model.

    Raises
    ------
    ValueError
        What ONNX cannot express: an LSTM projection (``proj_size > 0``); a dtype other than float16/32/64; an
        ``opset`` out of range; ``zoneout > 0`` (its inference differs from the plain cell). ``dropout`` and
        ``recurrent_dropout`` are exported as the identity they are at inference.
    TypeError
        ``model`` is not an ``ar.RNN/LSTM/GRU``; ``lengths_input`` or ``state_inputs`` is not a bool.
    ImportError
        ``onnx`` is not installed.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> proto = ar.convert.to_onnx_model(ar.GRU(3, 4, num_layers=2, bidirectional=True, seed=0))
    >>> [node.op_type for node in proto.graph.node if node.op_type == "GRU"]
    ['GRU', 'GRU']
    >>> [value.name for value in proto.graph.output]
    ['y', 'h_n']
    """
    from ._onnx_export import export

    return export(to_onnx, model, path, opset=opset, lengths_input=lengths_input, state_inputs=state_inputs)
