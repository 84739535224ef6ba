"""Weights in other frameworks' layouts <-> arrayrnn params (PyTorch layout and gate order).

* arrayrnn / PyTorch: ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih, bias_hh (G*H,)``;
  gates LSTM i, f, g, o; GRU r, z, n.
* Keras: ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)``, ``bias (G*H,)`` (GRU with
  ``reset_after=True``: ``(2, 3H)``, input and recurrent rows); gates LSTM i, f, c, o; GRU z, r, h.
* ONNX: ``W (D, G*H, I)``, ``R (D, G*H, H)``, ``B (D, 2*G*H)`` = [Wb, Rb], ``P (D, 3H)`` peepholes
  in order i, o, f; gates LSTM i, o, f, c; GRU z, r, h.
* concatenated (the tutorial's): ``w (H + I, G*H)`` acting on ``[h, x]``, ``b (G*H,)`` or ``(1, G*H)``;
  gates in PyTorch's order.

Which option runs the converted params the way the source framework does:

* Keras GRU with ``reset_after=False`` (bias ``(3H,)``) -> ``ar.gru(..., linear_before_reset=False)``;
  ``reset_after=True`` (Keras' default, bias ``(2, 3H)``) -> the default ``linear_before_reset=True``.
* ONNX GRU with ``linear_before_reset=0`` (the ONNX default) -> ``linear_before_reset=False``;
  ``linear_before_reset=1`` (what torch exports) -> the default ``True``.
* ONNX LSTM ``input_forget=1`` -> ``coupled=True``; ``clip=c`` -> ``clip=c``; ONNX RNN
  ``activations=["Relu"]`` -> ``nonlinearity="relu"``.
* Keras' default activations are assumed (``tanh`` and a ``sigmoid`` recurrent activation), as are
  ONNX's (Sigmoid, Tanh, Tanh); other activations have no arrayrnn equivalent.

Every function follows its inputs: the results are on the backend and device of the given arrays.
The results never share memory with the inputs.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ._validate import shape_text
from .backend import namespace_of
from .params import GRUParams, LSTMParams, RNNParams

__all__ = ["from_concat", "from_keras", "from_onnx", "from_onnx_model", "to_concat", "to_keras", "to_onnx"]

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

    ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)``, ``bias (G*H,)`` or ``None`` (``use_bias=False``);
    a GRU's bias is ``(2, 3H)`` (input and recurrent rows) when ``reset_after=True`` (Keras' default)
    and ``(3H,)`` when ``reset_after=False``; ``reset_after`` is read from that shape, and only needed
    for a GRU without bias. Run a ``reset_after=False`` GRU with ``linear_before_reset=False``.
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
    """``(kernel, recurrent_kernel, bias)`` for a Keras layer's ``set_weights`` (``bias`` ``None`` without bias).

    LSTM/SimpleRNN: Keras has one bias, ``bias_ih + bias_hh``. GRU: ``reset_after=True`` gives bias
    ``(2, 3H)`` for params run with ``linear_before_reset=True`` (the default); ``reset_after=False``
    gives ``(3H,)`` for params run with ``linear_before_reset=False``. No projection or peepholes.
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

    ``W (D, G*H, I)``, ``R (D, G*H, H)``, ``B (D, 2*G*H)`` (input then recurrent biases) or ``None``,
    LSTM peepholes ``P (D, 3H)`` (order i, o, f) or ``None``. Gate orders: LSTM i, o, f, c; GRU z, r, h.
    See the module docstring for the options (``linear_before_reset``, ``coupled``, ``clip``, relu).
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
    """``(W, R, B)`` — and ``P`` for an LSTM: ``(W, R, B, P)`` — for an ONNX node; the inverse of :func:`from_onnx`.

    ``params`` is one params object (``direction="forward"``, or ``"reverse"`` if you run it with
    ``reverse=True``) or a tuple ``(forward, backward)`` (``direction="bidirectional"``). ``B`` is
    ``None`` without bias, ``P`` ``None`` without peepholes. ONNX has no LSTM projection.
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


def from_onnx_model(model: Any, node: Optional[str] = None, *, backend: Optional[str] = None, device: Any = None):
    """An ``ar.RNN/LSTM/GRU`` (one layer) from an ONNX ``RNN``/``LSTM``/``GRU`` node of ``model``.

    ``model`` is an ``onnx.ModelProto`` or a path to a ``.onnx`` file (needs the ``onnx`` package:
    ``pip install "arrayrnn[onnx]"``). ``node`` names the node when the graph has several recurrent
    nodes. The weights must be graph initializers; the node's attributes become model options
    (``direction``, ``clip``, ``input_forget``, ``linear_before_reset``, ``layout``, Relu).
    Activations other than ONNX's defaults (and Relu for RNN) are refused. ``layout=1`` becomes
    ``batch_first=True``; the model's states stay ``(D, B, H)`` (ONNX's are ``(B, D, H)`` with layout 1)
    and its ``y`` is ``(B, T, D*H)`` (ONNX's ``Y`` is ``(B, T, D, H)``, the same numbers).
    """
    import onnx
    from onnx import numpy_helper

    from .backend import get_backend, to_backend
    from .models import GRU, LSTM, RNN

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model)
    graph = model.graph
    candidates = [n for n in graph.node if n.op_type in ("RNN", "LSTM", "GRU") and (node is None or n.name == node)]
    if len(candidates) != 1:
        found = ", ".join(
            f"{n.name or '<unnamed>'} ({n.op_type})" for n in graph.node if n.op_type in ("RNN", "LSTM", "GRU")
        )
        which = f"named {node!r}" if node is not None else ""
        raise ValueError(
            f"expected exactly one RNN/LSTM/GRU node {which} in the graph, found: {found or 'none'}"
            + ("; pass node=<name>" if node is None and found else "")
        )
    (recurrent,) = candidates
    kind = recurrent.op_type.lower()
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in recurrent.attribute}
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def initializer(position: int) -> Any:
        if len(recurrent.input) <= position or recurrent.input[position] == "":
            return None
        name = recurrent.input[position]
        if name not in initializers:
            raise ValueError(f"input {position} ({name!r}) of node {recurrent.name!r} is not an initializer")
        return initializers[name]

    defaults = {"rnn": [b"Tanh"], "lstm": [b"Sigmoid", b"Tanh", b"Tanh"], "gru": [b"Sigmoid", b"Tanh"]}[kind]
    activations = [a if isinstance(a, bytes) else str(a).encode() for a in attributes.get("activations", [])]
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    count = 2 if direction == "bidirectional" else 1
    options: dict[str, Any] = {}
    if activations and activations != defaults * count:
        if kind == "rnn" and activations == [b"Relu"] * count:
            options["nonlinearity"] = "relu"
        else:
            raise ValueError(f"node {recurrent.name!r} uses activations {activations}; only ONNX's defaults work")
    if kind == "lstm":
        options["coupled"] = bool(attributes.get("input_forget", 0))
        if "clip" in attributes:
            options["clip"] = float(attributes["clip"])
    elif "clip" in attributes:
        raise ValueError(f"clip on an ONNX {recurrent.op_type} node has no arrayrnn equivalent (LSTM only)")
    if kind == "gru":
        options["linear_before_reset"] = bool(attributes.get("linear_before_reset", 0))
    if direction == "reverse":
        raise ValueError(
            "direction='reverse' has no model equivalent; use ar.convert.from_onnx and run the params with reverse=True"
        )
    arrays = [initializer(1), initializer(2), initializer(3)] + ([initializer(7)] if kind == "lstm" else [])
    directions = from_onnx(kind, *arrays)
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind]
    params = to_backend((tuple(directions),), backend if backend is not None else get_backend(), device=device)
    return cls.from_params(params, batch_first=bool(attributes.get("layout", 0)), **options)


# --------------------------------------------------------------------------------------------
# the tutorial's concatenated layout


def from_concat(kind: str, w: Array, b: Optional[Array], input_size: int) -> Params:
    """Params from one matrix acting on ``[h, x]``: ``z = [h, x] @ w + b`` (the tutorial's layout).

    ``w (H + I, G*H)`` (rows: hidden first, then input), ``b (G*H,)`` or ``(1, G*H)`` or ``None``;
    the ``G*H`` columns are gates in PyTorch's order (LSTM i, f, g, o — the tutorial's W_i, W_f,
    W_t, W_o side by side; GRU r, z, n). The bias goes to ``bias_ih`` (``bias_hh`` is zero).
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
    """``(w (H + I, G*H), b (1, G*H))`` acting on ``[h, x]``; the inverse of :func:`from_concat`.

    The two biases are summed. A GRU's recurrent candidate bias ``b_hn`` sits inside ``r * (...)``
    when run with ``linear_before_reset=True``, so it cannot be folded there and must be zero
    (checked); with ``linear_before_reset=False`` it folds exactly. No projection or peepholes.
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
