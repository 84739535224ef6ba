"""Argument checks done once at the public boundary, with messages that name the argument.

Everything here only reads its inputs. The checks run before any computation, so a bad call
never leaves partial results behind.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Optional

import numpy as np

from ._core.layer_norm import PAIRS as LAYER_NORM_PAIRS
from ._core.steps import LN_HH_BEFORE_RESET, LSTM_ACTIVATIONS
from .backend import namespace_of
from .params import GRUParams, LSTMParams, RNNParams

Array = Any

PARAMS_CLASSES = {"rnn": RNNParams, "lstm": LSTMParams, "gru": GRUParams}
NONLINEARITIES = ("tanh", "relu")


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "").replace("dtype(", "").replace(")", "").strip("'\"")


def shape_text(shape: Any) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


#: dtype -> is it real floating (``xp.isdtype`` costs microseconds a call on NumPy; checked for every argument)
_FLOATING: dict[tuple[str, Any], bool] = {}


def _is_floating(xp: Any, array: Array) -> bool:
    dtype = array.dtype
    key = (xp.__name__, dtype)  # per namespace: one dtype object (e.g. an ml_dtypes one) may mean more than one
    try:
        return _FLOATING[key]
    except KeyError:
        floating = _FLOATING[key] = bool(xp.isdtype(dtype, "real floating"))
        return floating
    except TypeError:  # an unhashable dtype
        return bool(xp.isdtype(dtype, "real floating"))


def check_plain(name: str, value: Any, *, data: bool = False) -> None:
    """Refuse NumPy's array subclasses whose meaning arrayrnn would silently drop: masked arrays and matrices.

    ``data``: ``name`` is an input sequence, where a mask would mean padding (so the message points to ``lengths=``).
    """
    if isinstance(value, np.ma.MaskedArray):
        hint = (
            f"pass {name}.filled(0) (or np.asarray({name}) when nothing is masked) and give each sequence's valid "
            "steps with lengths="
            if data
            else f"pass np.asarray({name}) (or {name}.filled(...) with the values the masked entries should take)"
        )
        raise TypeError(f"{name} is a numpy.ma.MaskedArray, whose mask arrayrnn would ignore; {hint}")
    if isinstance(value, np.matrix):
        raise TypeError(
            f"{name} is a numpy.matrix (always 2-D, '*' is a matrix product); pass a plain array: np.asarray({name})"
        )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


def check_params(params: Any, kind: str, arg: str = "params") -> tuple[Any, str, Any]:
    """Check one params object's type, shapes, dtypes and placement; returns (xp, backend, device)."""
    expected_class = PARAMS_CLASSES[kind]
    if not isinstance(params, expected_class):
        raise TypeError(
            f"{arg} must be an arrayrnn.{expected_class.__name__} (see arrayrnn.init_{kind}), "
            f"got {type(params).__name__}"
        )
    present = {}
    for field_name in _field_names(type(params)):
        value = getattr(params, field_name)
        if value is not None:
            name = f"{arg}.{field_name}"
            if type(value) is not np.ndarray:  # a plain NumPy array needs no check_plain
                check_plain(name, value)
            present[name] = value
    xp, backend, device = namespace_of(**present)
    reference_dtype = params.weight_ih.dtype
    for name, value in present.items():
        if not _is_floating(xp, value):
            raise TypeError(f"{name} must be a floating-point array, got dtype {dtype_name(value.dtype)}")
        if value.dtype != reference_dtype:
            raise TypeError(
                f"{name} has dtype {dtype_name(value.dtype)} but {arg}.weight_ih has "
                f"{dtype_name(reference_dtype)}; all params must share one dtype"
            )
    gates = expected_class.gates
    weight_ih, weight_hh = params.weight_ih, params.weight_hh
    if weight_ih.ndim != 2 or weight_ih.shape[0] % gates != 0 or weight_ih.shape[0] == 0:
        raise ValueError(
            f"{arg}.weight_ih must have shape ({gates}*hidden_size, input_size), got {shape_text(weight_ih.shape)}"
        )
    hidden = weight_ih.shape[0] // gates
    recurrent = hidden
    if kind == "lstm" and params.weight_hr is not None:
        weight_hr = params.weight_hr
        if weight_hr.ndim != 2 or weight_hr.shape[1] != hidden or not 0 < weight_hr.shape[0]:
            raise ValueError(
                f"{arg}.weight_hr must have shape (proj_size, hidden_size={hidden}), got {shape_text(weight_hr.shape)}"
            )
        recurrent = weight_hr.shape[0]
    expected_hh = (gates * hidden, recurrent)
    if tuple(weight_hh.shape) != expected_hh:
        what = "proj_size" if recurrent != hidden else "hidden_size"
        raise ValueError(
            f"{arg}.weight_hh must have shape ({gates}*hidden_size, {what}) = {shape_text(expected_hh)}, "
            f"got {shape_text(weight_hh.shape)}"
        )
    for name in ("bias_ih", "bias_hh"):
        bias = getattr(params, name)
        if bias is not None and tuple(bias.shape) != (gates * hidden,):
            raise ValueError(
                f"{arg}.{name} must have shape ({gates}*hidden_size,) = ({gates * hidden},), "
                f"got {shape_text(bias.shape)}"
            )
    if kind == "lstm":
        for name in ("peephole_i", "peephole_f", "peephole_o"):
            peephole = getattr(params, name)
            if peephole is not None and tuple(peephole.shape) != (hidden,):
                raise ValueError(
                    f"{arg}.{name} must have shape (hidden_size,) = ({hidden},), got {shape_text(peephole.shape)}"
                )
        weight_gg = params.weight_gg
        if weight_gg is not None and tuple(weight_gg.shape) != (3 * hidden, 3 * hidden):
            raise ValueError(
                f"{arg}.weight_gg must have shape (3*hidden_size, 3*hidden_size) = ({3 * hidden}, {3 * hidden}), "
                f"got {shape_text(weight_gg.shape)}"
            )
    _check_layer_norm(params, arg, gates, hidden)
    return xp, backend, device


def _check_layer_norm(params: Any, arg: str, gates: int, hidden: int) -> None:
    """The ``ln_*`` arrays of layer normalisation: in (gain, shift) pairs, of their shapes."""
    for weight_name, bias_name in LAYER_NORM_PAIRS:
        weight, bias = getattr(params, weight_name, None), getattr(params, bias_name, None)
        if (weight is None) != (bias is None):
            given, missing = (weight_name, bias_name) if bias is None else (bias_name, weight_name)
            raise ValueError(f"{arg}.{given} needs {arg}.{missing} (layer normalisation takes both or neither)")
        size, text = (gates * hidden, f"{gates}*hidden_size")
        if weight_name == "ln_c_weight":
            size, text = hidden, "hidden_size"
        for name, value in ((weight_name, weight), (bias_name, bias)):
            if value is not None and tuple(value.shape) != (size,):
                raise ValueError(f"{arg}.{name} must have shape ({text},) = ({size},), got {shape_text(value.shape)}")


def _check_lstm_variant(options: dict[str, Any], params: Any) -> None:
    """The Greff et al. (2015) options: flags, activations, and the combinations that have no meaning."""
    for name in ("input_gate", "forget_gate", "output_gate"):
        if not isinstance(options.get(name, True), bool):
            raise TypeError(f"{name} must be True or False, got {options.get(name)!r}")
    for name in ("input_activation", "output_activation"):
        if options.get(name, "tanh") not in LSTM_ACTIVATIONS:
            raise ValueError(f"{name} must be 'tanh' or 'identity', got {options.get(name)!r}")
    if options.get("coupled"):
        for name in ("input_gate", "forget_gate"):
            if not options.get(name, True):
                raise ValueError(
                    f"coupled=True cannot be combined with {name}=False: coupling sets the forget gate to "
                    "1 - input gate, so it needs an input gate and a forget gate to replace"
                )
    if params is not None and getattr(params, "weight_gg", None) is not None:
        absent = [name for name in ("input_gate", "forget_gate", "output_gate") if not options.get(name, True)]
        if absent:
            raise ValueError(
                f"{absent[0]}=False cannot be combined with params.weight_gg (full gate recurrence): the gate "
                "recurrence feeds back the activations of all three gates i, f, o"
            )


def check_options(kind: str, options: dict[str, Any], params: Any = None) -> None:
    """Check the cell-specific keyword options (``params``, when given: the combinations with its fields)."""
    if kind == "rnn":
        if options.get("nonlinearity") not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {options.get('nonlinearity')!r}")
    if kind == "lstm":
        if not isinstance(options.get("coupled"), bool):
            raise TypeError(f"coupled must be True or False, got {options.get('coupled')!r}")
        clip = options.get("clip")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not clip > 0):
            raise ValueError(f"clip must be None or a positive number, got {clip!r}")
        _check_lstm_variant(options, params)
    if kind == "gru" and not isinstance(options.get("linear_before_reset"), bool):
        raise TypeError(f"linear_before_reset must be True or False, got {options.get('linear_before_reset')!r}")
    if kind == "gru" and not options.get("linear_before_reset") and getattr(params, "ln_hh_weight", None) is not None:
        raise ValueError(LN_HH_BEFORE_RESET)


def bound_clip(xp: Any, options: dict[str, Any], dtype: Any) -> None:
    """Lower an LSTM ``clip`` above the largest finite value of ``dtype`` to that value, in ``options`` (the
    call's own dict): clipping there is the same bound, and the kernels never cast an out-of-range Python float
    (which overflows to ``inf`` with a ``RuntimeWarning``)."""
    clip = options.get("clip")
    if clip is None:
        return
    largest = float(xp.finfo(dtype).max)
    if clip > largest:
        options["clip"] = largest


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def has_gate_recurrence(kind: str, params: Any) -> bool:
    """An LSTM with ``weight_gg`` (full gate recurrence): its state is ``(h, c, g)``."""
    return kind == "lstm" and getattr(params, "weight_gg", None) is not None


def _state_names(kind: str, prefix: str, gate_recurrence: bool = False) -> tuple[str, ...]:
    if kind != "lstm":
        return (prefix,)
    return (f"{prefix}[0] (h)", f"{prefix}[1] (c)") + ((f"{prefix}[2] (g)",) if gate_recurrence else ())


def _state_tuple(kind: str, state: Any, arg: str, gate_recurrence: bool = False) -> Optional[tuple[Array, ...]]:
    if state is None:
        return None
    if kind == "lstm":
        if gate_recurrence:
            if not isinstance(state, (tuple, list)) or len(state) != 3:
                got = f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""
                raise TypeError(
                    f"{arg} must be a tuple (h, c, g) of three arrays or None for params with weight_gg (full gate "
                    f"recurrence: g (B, 3H) holds the previous gate activations i, f, o), got "
                    f"{type(state).__name__}{got}"
                )
            return tuple(state)
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            got = f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""
            hint = (
                " (a third state part g is only for params with weight_gg, the full gate recurrence)"
                if isinstance(state, (tuple, list)) and len(state) == 3
                else ""
            )
            raise TypeError(
                f"{arg} must be a tuple (h, c) of two arrays or None, got {type(state).__name__}{got}{hint}"
            )
        return tuple(state)
    if isinstance(state, (tuple, list)):
        raise TypeError(f"{arg} must be one array (h) or None, got a {type(state).__name__}")
    return (state,)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Validated and normalised arguments: time-major, batched, state as a tuple."""

    xp: Any
    backend: str
    device: Any
    x: Array  # (T, B, I) for sequences, (B, I) for cells
    state: tuple[Array, ...]
    lengths: Optional[Array]
    unbatched: bool


def _check_input_dtype(xp: Any, x: Array, params: Any, arg: str) -> None:
    if not _is_floating(xp, x):
        raise TypeError(f"{arg} must be a floating-point array, got dtype {dtype_name(x.dtype)}")
    if x.dtype != params.weight_ih.dtype:
        raise TypeError(
            f"{arg} has dtype {dtype_name(x.dtype)} but params are {dtype_name(params.weight_ih.dtype)}; "
            f"convert one of them explicitly (e.g. params via init_*(..., dtype=...))"
        )


def _state_shapes(kind: str, params: Any, batch: int) -> tuple[tuple[int, ...], ...]:
    hidden = params.hidden_size
    if kind == "lstm":
        gates = ((batch, 3 * hidden),) if has_gate_recurrence(kind, params) else ()
        return ((batch, params.output_size), (batch, hidden), *gates)
    return ((batch, hidden),)


#: JAX zero states by (shape, dtype, device): JAX arrays are immutable, so one can serve every call, and making one
#: costs ~120 us (more than a small jitted layer); tracers (under jax.jit) are never kept
_JAX_ZEROS: dict[tuple[Any, ...], Array] = {}


def _zeros(xp: Any, shape: tuple[int, ...], dtype: Any, device: Any) -> Array:
    if getattr(xp, "__name__", "") != "jax.numpy":
        return xp.zeros(shape, dtype=dtype, device=device)
    key = (shape, dtype, device)
    zeros = _JAX_ZEROS.get(key)
    if zeros is None:
        import jax  # imported already: xp is jax.numpy

        zeros = xp.zeros(shape, dtype=dtype, device=device)
        if not isinstance(zeros, jax.core.Tracer):
            if len(_JAX_ZEROS) >= 64:  # many shapes: start over rather than grow
                _JAX_ZEROS.clear()
            _JAX_ZEROS[key] = zeros
    return zeros


def _prepare_state(
    xp: Any, kind: str, state: Any, params: Any, batch: int, unbatched: bool, arg: str, device: Any
) -> tuple[Array, ...]:
    gate_recurrence = has_gate_recurrence(kind, params)
    states = _state_tuple(kind, state, arg, gate_recurrence)
    shapes = _state_shapes(kind, params, batch)
    if states is None:
        return tuple(_zeros(xp, shape, params.weight_ih.dtype, device) for shape in shapes)
    names = _state_names(kind, arg, gate_recurrence)
    prepared = []
    for name, value, shape in zip(names, states, shapes):
        expected = shape[1:] if unbatched else shape
        if not _is_floating(xp, value):
            raise TypeError(f"{name} must be a floating-point array, got dtype {dtype_name(value.dtype)}")
        if value.dtype != params.weight_ih.dtype:
            raise TypeError(
                f"{name} has dtype {dtype_name(value.dtype)} but params are {dtype_name(params.weight_ih.dtype)}"
            )
        if tuple(value.shape) != expected:
            layout = "(H,)" if unbatched else "(B, H)"
            if kind == "lstm" and name.endswith("(h)") and params.proj_size:
                layout = "(P,)" if unbatched else "(B, P)"
            if name.endswith("(g)"):
                layout = "(3H,)" if unbatched else "(B, 3H)"
            raise ValueError(
                f"{name} must have shape {layout} = {shape_text(expected)}, got {shape_text(value.shape)}"
                + ("; states are never batch-first or layer-stacked in the function API" if value.ndim == 3 else "")
            )
        prepared.append(xp.reshape(value, shape) if unbatched else value)
    return tuple(prepared)


def _prepare_lengths(xp: Any, backend: str, lengths: Any, batch: int, steps: int, device: Any) -> Optional[Array]:
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in lengths):
            raise TypeError("lengths must be an integer array or a list of integers")
        if len(lengths) != batch:
            raise ValueError(f"lengths must have shape (B,) = ({batch},), got {shape_text((len(lengths),))}")
        if lengths:  # checked as Python ints, before anything narrower holds them
            _check_lengths_range(int(min(lengths)), int(max(lengths)), steps)
        lengths = xp.asarray([int(v) for v in lengths], dtype=xp.int64, device=device)
    check_plain("lengths", lengths)
    if not xp.isdtype(lengths.dtype, "integral"):
        raise TypeError(f"lengths must be an integer array, got dtype {dtype_name(lengths.dtype)}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape (B,) = ({batch},), got {shape_text(lengths.shape)}")
    if backend == "jax":  # a traced array (an argument under jax.jit) has no value to check: it is skipped
        _check_jax_lengths_range(xp, lengths, steps)
    elif backend != "dask" and batch > 0:  # dask values are lazy: checked when the blocks run
        _check_lengths_range(int(xp.min(lengths)), int(xp.max(lengths)), steps)
    return lengths


def _check_jax_lengths_range(xp: Any, lengths: Any, steps: int) -> None:
    import jax  # imported already: ``lengths`` is a JAX array

    if isinstance(lengths, jax.core.Tracer) or lengths.shape[0] == 0:
        return
    with jax.ensure_compile_time_eval():  # a concrete array closed over by a jitted function: still checked
        _check_lengths_range(int(xp.min(lengths)), int(xp.max(lengths)), steps)


def _check_lengths_range(low: int, high: int, steps: int) -> None:
    if low < 0 or high > steps:
        raise ValueError(f"lengths must lie in [0, T={steps}], got values from {low} to {high}")


def prepare_sequence(
    kind: str, x: Any, params: Any, state: Any, lengths: Any, batch_first: bool, reverse: bool, options: dict[str, Any]
) -> Prepared:
    """Validate a sequence call; returns time-major, batched arguments.

    ``options`` (the call's own dict) is normalised in place: an LSTM ``clip`` beyond the dtype's range is lowered
    to its largest finite value (:func:`bound_clip`)."""
    check_params(params, kind)
    check_options(kind, options, params)
    _check_flag("batch_first", batch_first)
    _check_flag("reverse", reverse)
    gate_recurrence = has_gate_recurrence(kind, params)
    states = _state_tuple(kind, state, "state", gate_recurrence) or ()
    state_arrays = dict(zip(_state_names(kind, "state", gate_recurrence), states))
    lengths_array = None if isinstance(lengths, (list, tuple)) else lengths
    check_plain("x", x, data=True)
    for name, value in state_arrays.items():
        check_plain(name, value)
    xp, backend, device = namespace_of(
        x=x, **state_arrays, lengths=lengths_array, **{"params.weight_ih": params.weight_ih}
    )
    if x.ndim not in (2, 3):
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"x must have shape {layout} or unbatched (T, I), got {shape_text(x.shape)}")
    _check_input_dtype(xp, x, params, "x")
    unbatched = x.ndim == 2
    if unbatched:
        if lengths is not None:
            raise ValueError("lengths needs batched x of shape (T, B, I) or (B, T, I); x is unbatched (T, I)")
        x = xp.reshape(x, (x.shape[0], 1, x.shape[1]))
    elif batch_first:
        x = xp.permute_dims(x, (1, 0, 2))
    steps, batch, features = x.shape
    if features != params.input_size:
        raise ValueError(f"x has {features} features in its last axis but params expect input_size={params.input_size}")
    if steps == 0:
        raise ValueError("x must have at least one time step, got T=0")
    prepared_state = _prepare_state(xp, kind, state, params, batch, unbatched, "state", device)
    prepared_lengths = _prepare_lengths(xp, backend, lengths, batch, steps, device)
    bound_clip(xp, options, x.dtype)
    return Prepared(xp, backend, device, x, prepared_state, prepared_lengths, unbatched)


def prepare_cell(kind: str, x: Any, state: Any, params: Any, options: dict[str, Any], state_arg: str) -> Prepared:
    """Validate a cell call; returns batched ``x (B, I)`` and the state tuple (``options``: as
    :func:`prepare_sequence`)."""
    check_params(params, kind)
    check_options(kind, options, params)
    gate_recurrence = has_gate_recurrence(kind, params)
    states = _state_tuple(kind, state, state_arg, gate_recurrence)
    if states is None:
        raise TypeError(f"{state_arg} is required for a cell step (use zeros for a fresh start)")
    state_arrays = dict(zip(_state_names(kind, state_arg, gate_recurrence), states))
    check_plain("x", x)
    for name, value in state_arrays.items():
        check_plain(name, value)
    xp, backend, device = namespace_of(x=x, **state_arrays, **{"params.weight_ih": params.weight_ih})
    if x.ndim not in (1, 2):
        raise ValueError(f"x must have shape (B, I) or unbatched (I,), got {shape_text(x.shape)}")
    _check_input_dtype(xp, x, params, "x")
    unbatched = x.ndim == 1
    if unbatched:
        x = xp.reshape(x, (1, x.shape[0]))
    if x.shape[1] != params.input_size:
        raise ValueError(
            f"x has {x.shape[1]} features in its last axis but params expect input_size={params.input_size}"
        )
    prepared_state = _prepare_state(xp, kind, state, params, x.shape[0], unbatched, state_arg, device)
    bound_clip(xp, options, x.dtype)
    return Prepared(xp, backend, device, x, prepared_state, None, unbatched)
