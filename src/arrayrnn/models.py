"""Stacked and bidirectional RNN/LSTM/GRU models, shaped like ``torch.nn.RNN/LSTM/GRU``.

A model is its params (a tuple over layers of a tuple over directions of one-layer params) plus a few options;
every layer and direction runs through the public sequence functions (:func:`run_stack`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Optional

import numpy as np
from array_api_compat import is_dask_array

from ._core.steps import LN_HH_BEFORE_RESET
from ._dropout import (
    MODEL_RATES,
    check_model_rates,
    layer_dropout_mask,
    model_rates,
    refuse_dask_stack_training,
    stack_rng,
)
from ._masking import check_not_both, check_padding, masking_options
from ._validate import check_options, check_params, dtype_name, shape_text
from .backend import backend_name, get_backend, map_arrays, namespace_of, to_backend
from .params import GRUParams, LSTMParams, RNNParams, init_gru, init_lstm, init_rnn
from .sequence import gru, lstm, rnn

__all__ = ["GRU", "LSTM", "LSTM_VARIANTS", "RNN", "run_stack", "split_state", "stack_states"]

Array = Any
#: ``sequence_function(x, params, state, *, lengths, reverse, batch_first, **options) -> (y, final_state)``
SequenceFunction = Callable[..., tuple[Array, Any]]


# --------------------------------------------------------------------------------------------
# the stack, as a plain function of its arguments


def split_state(state: Any, num_layers: int, num_directions: int) -> list[list[Any]]:
    """Per-layer, per-direction initial states: ``result[l][d]`` is ``state[l*D + d]``.

    ``state`` is ``None``, one array ``(L*D, ...)`` or a tuple of such arrays (an LSTM's ``(h, c)``);
    each entry of the result has the same structure with the first axis removed.
    """

    def pick(index: int) -> Any:
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(component[index, ...] for component in state)
        return state[index, ...]

    return [[pick(layer * num_directions + d) for d in range(num_directions)] for layer in range(num_layers)]


def stack_states(xp: Any, finals: Sequence[Any]) -> Any:
    """Stack final states (arrays, or tuples of arrays) given in ``l*D + d`` order along a new first axis."""
    if isinstance(finals[0], tuple):
        return tuple(xp.stack([final[k] for final in finals], axis=0) for k in range(len(finals[0])))
    return xp.stack(list(finals), axis=0)


def run_stack(
    sequence_function: SequenceFunction,
    x: Array,
    params: Sequence[Sequence[Any]],
    state: Any = None,
    *,
    lengths: Any = None,
    batch_first: bool = False,
    reverse: bool = False,
    train: bool = False,
    seed: Any = None,
    **options: Any,
) -> tuple[Array, Any]:
    """Run a stacked (and possibly bidirectional) recurrent network, one public sequence call per layer and direction.

    ``sequence_function`` is ``ar.rnn``, ``ar.lstm``, ``ar.gru`` or anything with their signature
    (a gradient helper may pass a wrapper that records each call); ``options`` are passed to every
    call (``nonlinearity``, ``coupled``, ``clip``, ``linear_before_reset``, ``impl``). Direction 1
    runs with ``reverse=True``; ``reverse=True`` runs every layer of a one-direction stack backwards
    (ONNX ``direction="reverse"``, outputs in time order). Returns ``(y, final_state)`` with the final state stacked as
    ``(L*D, ...)``. No checks beyond those of ``sequence_function``: models check first.

    The dropout family: ``dropout`` (an option here) drops the output of every layer but the last in training;
    ``train=True`` draws every mask from one ``numpy.random.default_rng(seed)``, layer by layer: each direction's
    sequence masks (forward, then backward), then the layer's output mask. A ``sequence_function`` with a list
    attribute ``dropout_masks`` gets each output mask appended to it (``ar.vjp`` applies them in the pullback).
    """
    dropout = options.pop("dropout", 0.0)
    rng = stack_rng({**options, "dropout": dropout}, train, seed)
    if rng is not None:
        options = {**options, "train": True, "seed": rng}
    record = getattr(sequence_function, "dropout_masks", None)
    num_layers, num_directions = len(params), len(params[0])
    states = split_state(state, num_layers, num_directions)
    layer_input = x
    finals = []
    xp = None
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            y, final = sequence_function(
                layer_input,
                params[layer][direction],
                states[layer][direction],
                lengths=lengths,
                reverse=(direction == 1) != reverse,
                batch_first=batch_first,
                **options,
            )
            outputs.append(y)
            finals.append(final)
        if xp is None:
            xp = namespace_of(y=outputs[0])[0]
        layer_input = outputs[0] if num_directions == 1 else xp.concat(outputs, axis=-1)
        if rng is not None and dropout and layer < num_layers - 1:  # inverted dropout between layers
            mask = layer_dropout_mask(rng, dropout, layer_input, batch_first)
            if record is not None:
                record.append(mask)
            layer_input = layer_input * mask
    return layer_input, stack_states(xp, finals)


# --------------------------------------------------------------------------------------------
# structure checks


def _describe(kind: str) -> str:
    return {"rnn": "RNNParams", "lstm": "LSTMParams", "gru": "GRUParams"}[kind]


def check_stack(kind: str, params: Any, arg: str = "params") -> dict[str, Any]:
    """Check a tuple-of-tuples params stack; returns its structure (sizes, directions, bias, ...)."""
    if not isinstance(params, (tuple, list)) or len(params) == 0:
        raise TypeError(
            f"{arg} must be a non-empty tuple over layers of tuples over directions of {_describe(kind)}, "
            f"got {type(params).__name__}"
        )
    num_directions = None
    structure: dict[str, Any] = {}
    placement = {}
    for layer, layer_params in enumerate(params):
        if not isinstance(layer_params, (tuple, list)) or len(layer_params) not in (1, 2):
            raise TypeError(
                f"{arg}[{layer}] must be a tuple of 1 (forward) or 2 (forward, backward) {_describe(kind)}, "
                f"got {type(layer_params).__name__}"
                + (f" of length {len(layer_params)}" if isinstance(layer_params, (tuple, list)) else "")
            )
        if num_directions is None:
            num_directions = len(layer_params)
        elif len(layer_params) != num_directions:
            raise ValueError(
                f"{arg}[{layer}] has {len(layer_params)} directions but {arg}[0] has {num_directions}; "
                "every layer must have the same number of directions"
            )
        for direction, p in enumerate(layer_params):
            name = f"{arg}[{layer}][{direction}]"
            check_params(p, kind, name)
            if (p.bias_ih is None) != (p.bias_hh is None):
                raise ValueError(
                    f"{name} has {'bias_hh' if p.bias_ih is None else 'bias_ih'} but not "
                    f"{'bias_ih' if p.bias_ih is None else 'bias_hh'}: a model's layers have both biases or neither "
                    "(torch's layout, what state_dict and ar.save write); run one-bias params with ar.rnn / ar.lstm / "
                    "ar.gru, or give the missing bias as zeros"
                )
            placement[f"{name}.weight_ih"] = p.weight_ih
            this = {
                "hidden_size": p.hidden_size,
                "bias": p.has_bias,
                "dtype": dtype_name(p.dtype),
                "layer_norm": _layer_norm_of(p, name),
            }
            if kind == "lstm":
                this["proj_size"] = p.proj_size
                this["peepholes"] = p.has_peepholes
                this["gate_recurrence"] = p.weight_gg is not None
                if (p.peephole_i is None) != (p.peephole_f is None) or (p.peephole_i is None) != (p.peephole_o is None):
                    raise ValueError(f"{name} must have all three peepholes (i, f, o) or none")
            if not structure:
                structure = dict(this)
                structure["input_size"] = p.input_size
            else:
                for key, value in this.items():
                    if structure[key] != value:
                        raise ValueError(
                            f"{name} has {key}={value!r} but {arg}[0][0] has {key}={structure[key]!r}; "
                            "all layers and directions must agree"
                        )
            if layer > 0:
                output_size = structure.get("proj_size") or structure["hidden_size"]
                expected = num_directions * output_size
                if p.input_size != expected:
                    raise ValueError(
                        f"{name}.weight_ih must have input_size = num_directions * "
                        f"{'proj_size' if structure.get('proj_size') else 'hidden_size'} = {expected} "
                        f"(the previous layer's output), got {p.input_size}"
                    )
            elif p.input_size != structure["input_size"]:
                raise ValueError(
                    f"{name} has input_size={p.input_size} but {arg}[0][0] has input_size={structure['input_size']}"
                )
    namespace_of(**placement)  # every layer on one backend and device
    structure["num_layers"] = len(params)
    structure["bidirectional"] = num_directions == 2
    return structure


def _layer_norm_of(p: Any, name: str) -> bool:
    """Whether ``p`` (a layer of a model) is layer-normalised: all of its kind's ``ln_*`` arrays, or none."""
    fields = [f.name for f in dataclasses.fields(p) if f.name.startswith("ln_")]
    present = [field for field in fields if getattr(p, field) is not None]
    if present and len(present) != len(fields):
        missing = ", ".join(field for field in fields if field not in present)
        raise ValueError(f"{name} must have all layer-norm arrays ({', '.join(fields)}) or none; {missing} missing")
    return bool(present)


# --------------------------------------------------------------------------------------------
# the models

_KEY = re.compile(
    r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|peephole_i|peephole_f|peephole_o|weight_gg"
    r"|ln_ih_weight|ln_ih_bias|ln_hh_weight|ln_hh_bias|ln_c_weight|ln_c_bias)_l([0-9]+)(_reverse)?"
)  # matched with fullmatch; ASCII digits only

#: The most layers a constructor builds (``torch.nn`` has no limit; no trained recurrent stack comes near it).
MAX_LAYERS = 1024
#: The most parameter memory, in bytes, a constructor allocates (32 GiB): a larger request is refused before any
#: allocation. A module attribute: raise it (``arrayrnn.models.MAX_PARAMETER_BYTES = ...``) for a bigger model.
MAX_PARAMETER_BYTES = 32 * 2**30


def parameter_count(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    num_directions: int,
    *,
    bias: bool = True,
    proj_size: int = 0,
    peepholes: bool = False,
    gate_recurrence: bool = False,
    layer_norm: bool = False,
) -> int:
    """The number of parameters of a stack (exact Python integer arithmetic, nothing allocated)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    output = proj_size or hidden_size
    per_direction = gates * hidden_size * (output + (2 if bias else 0))
    per_direction += proj_size * hidden_size + (3 * hidden_size if peepholes else 0)
    per_direction += 9 * hidden_size * hidden_size if gate_recurrence else 0
    per_direction += (4 * gates * hidden_size + (2 * hidden_size if kind == "lstm" else 0)) if layer_norm else 0
    first = num_directions * (per_direction + gates * hidden_size * input_size)
    rest = (num_layers - 1) * num_directions * (per_direction + gates * hidden_size * num_directions * output)
    return first + rest


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


class _StackedModel:
    """Shared machinery; the subclasses fix the cell kind and its options."""

    kind: ClassVar[str]
    _sequence: ClassVar[SequenceFunction]
    _params_class: ClassVar[type]
    #: per-kind options passed to every sequence call, with their defaults
    _option_defaults: ClassVar[dict[str, Any]]

    _params: tuple[tuple[Any, ...], ...]
    _structure: dict[str, Any]
    batch_first: bool
    #: The initial state a call gets when it passes ``state=None`` (shaped as ``state``); ``None``: zeros.
    #: :func:`arrayrnn.convert.from_onnx_model` sets it from an ONNX node's constant ``initial_h``/``initial_c``.
    default_state: Any = None
    #: The ``lengths`` a call gets when it passes ``lengths=None`` (a tuple of ints, one per sequence); ``None``:
    #: every sequence runs all ``T`` steps. Set from an ONNX node's constant ``sequence_lens``.
    default_lengths: Optional[tuple[int, ...]] = None

    # ---- construction ------------------------------------------------------------------------

    def _setup(self, params: Any, batch_first: bool, options: dict[str, Any], reverse: bool = False) -> None:
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
        if not isinstance(reverse, bool):
            raise TypeError(f"reverse must be True or False, got {reverse!r}")
        check_options(self.kind, options)
        check_model_rates(options)  # dropout, recurrent_dropout, zoneout
        structure = check_stack(self.kind, params)
        if reverse and structure["bidirectional"]:
            raise ValueError(
                "reverse=True runs a one-direction model backwards; a bidirectional model already has a backward "
                "direction (use reverse=False)"
            )
        if structure["layer_norm"] and self.kind == "gru" and not options.get("linear_before_reset", True):
            raise ValueError(LN_HH_BEFORE_RESET)
        self._params = tuple(tuple(layer) for layer in params)
        self._structure = structure
        self.batch_first = batch_first
        self._reverse = reverse
        self._options = dict(options)

    @property
    def reverse(self) -> bool:
        """Every layer runs backwards in time (one direction only; ONNX ``direction="reverse"``)."""
        return self._reverse

    @classmethod
    def from_params(cls, params: Any, *, batch_first: bool = False, reverse: bool = False, **options: Any):
        """A model around an existing params stack (a tuple over layers of a tuple over directions).

        Sizes, layers, directions, bias, projection and peepholes are read from ``params``; the arrays are used
        as they are (not copied), on their own backend and device.

        Parameters
        ----------
        params : tuple of tuples of params objects
            ``params[l][d]`` for layer ``l`` and direction ``d`` (0: forward, 1: backward), all of the model's
            kind (:class:`~arrayrnn.LSTMParams` for an LSTM, ...), agreeing in sizes, bias and dtype; layer
            ``l > 0`` takes ``D * H_out`` input features.
        batch_first : bool, optional
            ``x`` and ``y`` are ``(B, T, ·)``. Default ``False``.
        reverse : bool, optional
            Run every layer backwards in time (one direction only). Default ``False``.
        **options
            The cell options: ``nonlinearity`` (RNN), ``coupled`` and ``clip`` (LSTM), ``linear_before_reset``
            (GRU).

        Returns
        -------
        RNN, LSTM or GRU
            A model of this class.

        Raises
        ------
        TypeError
            ``params`` is not such a stack; an unknown option; an option of the wrong type.
        ValueError
            Layers or directions disagree (the message names the entry), or an option's value is invalid.
        BackendMismatchError
            The layers live on different backends or devices.

        Examples
        --------
        >>> import arrayrnn as ar
        >>> forward, backward = ar.init_gru(3, 4, seed=0), ar.init_gru(3, 4, seed=1)
        >>> model = ar.GRU.from_params(((forward, backward),), linear_before_reset=False)
        >>> model.num_layers, model.bidirectional, model.linear_before_reset
        (1, True, False)
        """
        unknown = set(options) - set(cls._option_defaults)
        if unknown:
            raise TypeError(
                f"{cls.__name__} got unexpected option(s) {', '.join(sorted(unknown))}; "
                f"expected {', '.join(cls._option_defaults) or 'none'}"
            )
        model = cls.__new__(cls)
        model._setup(params, batch_first, {**cls._option_defaults, **options}, reverse)
        return model

    @classmethod
    def _init_stack(
        cls,
        init: Callable[..., Any],
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        seed: Any,
        output_size: int,
        **init_options: Any,
    ) -> tuple[tuple[Any, ...], ...]:
        def is_int(value: Any) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, np.integer))

        # every size is checked, and the memory estimated, before anything is allocated
        if not is_int(num_layers) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if num_layers > MAX_LAYERS:
            raise ValueError(
                f"num_layers={num_layers} is above the limit of {MAX_LAYERS} layers (arrayrnn.models.MAX_LAYERS)"
            )
        if not isinstance(bidirectional, bool):
            raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        proj_size = init_options.get("proj_size", 0)
        if not is_int(proj_size) or not 0 <= proj_size < hidden_size:
            raise ValueError(f"proj_size must be an integer in [0, hidden_size={hidden_size}), got {proj_size!r}")
        directions = 2 if bidirectional else 1
        bias = init_options.get("bias", True)
        count = parameter_count(
            cls.kind, int(input_size), int(hidden_size), int(num_layers), directions,
            bias=bias is not False, proj_size=int(proj_size), peepholes=init_options.get("peepholes") is True,
            gate_recurrence=init_options.get("gate_recurrence") is True,
            layer_norm=init_options.get("layer_norm") is True,
        )  # fmt: skip
        try:
            itemsize = np.dtype(str(init_options.get("dtype", "float32"))).itemsize
        except TypeError:
            itemsize = 8  # not a NumPy dtype name: init_* names the bad dtype below; estimate the widest
        if count * itemsize > MAX_PARAMETER_BYTES:
            raise ValueError(
                f"{cls.__name__}(input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}"
                + (", bidirectional=True" if bidirectional else "")
                + (f", proj_size={proj_size}" if proj_size else "")
                + f") needs {count} parameters, an estimated {count * itemsize / 2**30:.3g} GiB ({itemsize} bytes "
                f"each), above the limit of {MAX_PARAMETER_BYTES / 2**30:.3g} GiB "
                "(arrayrnn.models.MAX_PARAMETER_BYTES); check input_size, hidden_size and num_layers"
            )
        rng = np.random.default_rng(seed)  # one stream for the whole stack: l0, l0_reverse, l1, ...
        layers = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else directions * output_size
            layers.append(tuple(init(layer_input, hidden_size, seed=rng, **init_options) for _ in range(directions)))
        return tuple(layers)

    # ---- structure ---------------------------------------------------------------------------

    @property
    def params(self) -> tuple[tuple[Any, ...], ...]:
        """Tuple over layers of tuple over directions (forward, backward) of one-layer params."""
        return self._params

    @params.setter
    def params(self, new_params: Any) -> None:
        structure = check_stack(self.kind, new_params)
        if structure != self._structure:
            changed = {k: (self._structure[k], structure[k]) for k in structure if structure[k] != self._structure[k]}
            raise ValueError(
                "new params must have the model's structure; differs in "
                + ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in changed.items())
                + "; build a new model with from_params for another structure"
            )
        self._params = tuple(tuple(layer) for layer in new_params)

    input_size = property(lambda self: self._structure["input_size"], doc="features of the input")
    hidden_size = property(lambda self: self._structure["hidden_size"], doc="H")
    num_layers = property(lambda self: self._structure["num_layers"], doc="L")
    bidirectional = property(lambda self: self._structure["bidirectional"], doc="D == 2")
    bias = property(lambda self: self._structure["bias"], doc="whether the layers have biases")
    layer_norm = property(lambda self: self._structure["layer_norm"], doc="layer normalisation (ln_* arrays)")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Last axis of ``y`` per direction (``P`` for an LSTM with projection, else ``H``)."""
        return self.hidden_size

    @property
    def dtype(self) -> Any:
        return self._params[0][0].dtype

    @property
    def backend(self) -> str:
        return backend_name(self._params[0][0].weight_ih)

    @property
    def device(self) -> Any:
        import array_api_compat

        return array_api_compat.device(self._params[0][0].weight_ih)

    def config(self) -> dict[str, Any]:
        """Everything but the arrays, as plain Python values (what ``ar.save`` stores)."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "reverse": self.reverse,
            "layer_norm": self.layer_norm,
            **self._structure_extras(),
            **self._options,
        }

    def _structure_extras(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        config = self.config()
        head = f"{config.pop('input_size')}, {config.pop('hidden_size')}"
        defaults = {"num_layers": 1, "bidirectional": False, "bias": True, "batch_first": False, "reverse": False,
                    "layer_norm": False}  # fmt: skip
        defaults["proj_size"] = 0
        defaults.update({"peepholes": False, "gate_recurrence": False, **self._option_defaults})
        extras = [f"{k}={v!r}" for k, v in config.items() if defaults.get(k, object()) != v]
        where = [f"dtype={dtype_name(self.dtype)}", f"backend={self.backend!r}"]
        return f"{type(self).__name__}({', '.join([head, *extras, *where])})"

    # ---- running -----------------------------------------------------------------------------

    def _check_state(self, params: Any, x: Any, state: Any) -> None:
        if state is None:
            return
        num_layers, num_directions = len(params), len(params[0])
        first = params[0][0]
        if getattr(x, "ndim", None) not in (2, 3):
            return  # the sequence function names the bad x
        unbatched = x.ndim == 2
        batch = None if unbatched else (x.shape[0] if self.batch_first else x.shape[1])
        hidden = first.hidden_size
        if self.kind == "lstm":
            recurrent_gates = first.weight_gg is not None
            names = "(h_0, c_0, g_0) of three arrays" if recurrent_gates else "(h_0, c_0) of two arrays"
            if not isinstance(state, (tuple, list)) or len(state) != 2 + recurrent_gates:
                raise TypeError(
                    f"state must be a tuple {names} or None, got {type(state).__name__}"
                    + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
                    + (" (full gate recurrence: weight_gg)" if recurrent_gates else "")
                )
            components = [("state[0] (h_0)", state[0], first.output_size), ("state[1] (c_0)", state[1], hidden)]
            if recurrent_gates:
                components.append(("state[2] (g_0)", state[2], 3 * hidden))
        else:
            if isinstance(state, (tuple, list)):
                raise TypeError(f"state must be one array h_0 or None, got a {type(state).__name__}")
            components = [("state", state, hidden)]
        for name, value, size in components:
            expected = (num_layers * num_directions, size) if unbatched else (num_layers * num_directions, batch, size)
            layout = "(num_layers*num_directions, " + ("" if unbatched else "B, ") + "H)"
            if self.kind == "lstm" and name.startswith("state[0]") and first.proj_size:
                layout = layout.replace("H)", "proj_size)")
            if name.startswith("state[2]"):
                layout = layout.replace("H)", "3H)")
            shape = getattr(value, "shape", None)
            if shape is None:
                raise TypeError(f"{name} must be an array, got {type(value).__name__}")
            if tuple(shape) != expected:
                raise ValueError(f"{name} must have shape {layout} = {shape_text(expected)}, got {shape_text(shape)}")

    def _with_defaults(self, params: Any, x: Any, state: Any, lengths: Any) -> tuple[Any, Any]:
        """``state`` and ``lengths``, with the model's ``default_state`` / ``default_lengths`` where they are None."""
        fix = "pass state= (or lengths=) explicitly, or set the model's default to None"
        if state is None and self.default_state is not None:
            try:
                self._check_state(params, x, self.default_state)
            except (TypeError, ValueError) as error:
                raise ValueError(f"the model's default_state does not fit this call ({error}); {fix}") from None
            state = self.default_state
        if lengths is None and self.default_lengths is not None and getattr(x, "ndim", None) in (2, 3):
            defaults = tuple(self.default_lengths)
            batch = None if x.ndim == 2 else x.shape[0 if self.batch_first else 1]
            steps = x.shape[1 if self.batch_first and x.ndim == 3 else 0]
            if batch != len(defaults) or max(defaults, default=0) > steps:
                got = "unbatched x" if batch is None else f"x with B={batch}, T={steps}"
                raise ValueError(
                    f"the model's default_lengths {list(defaults)} (one per sequence, at most T) do not fit {got}; "
                    + fix
                )
            lengths = list(defaults)
        return state, lengths

    @property
    def sequence_function(self) -> SequenceFunction:
        """The public one-layer function every layer and direction runs (``ar.rnn``, ``ar.lstm`` or ``ar.gru``)."""
        return type(self)._sequence

    def apply(
        self,
        params: Any,
        x: Array,
        state: Any = None,
        *,
        lengths: Any = None,
        mask: Any = None,
        padding: str = "zeros",
        impl: Optional[str] = None,
        sequence_function: Optional[SequenceFunction] = None,
        train: bool = False,
        seed: Any = None,
    ):
        """Run the stack with ``params``: a pure function of its arguments and the model's options.

        Each layer and direction runs the public sequence function (:func:`arrayrnn.rnn`, ``lstm`` or ``gru``),
        the backward direction with ``reverse=True``; the next layer's input is both directions' outputs
        concatenated. This is what ``ar.vjp(model.apply, model.params, x, ...)`` differentiates.

        Parameters
        ----------
        params : tuple of tuples of params objects
            A stack with the model's structure, e.g. ``model.params`` or an optimizer's update of it.
        x : array, shape (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I)
            The input sequence, floating point, in the params' dtype, on their backend and device.
        state : array or tuple of arrays, optional
            ``h_0 (L*D, B, H)`` (``(L*D, H)`` unbatched); for an LSTM the pair ``(h_0, c_0)``, where ``h_0`` is
            ``(L*D, B, P)`` with a projection. Never batch-first. ``None`` (default) means the model's
            ``default_state``, which is ``None`` (zeros) unless set.
        lengths : integer array or list of int, shape (B,), optional
            Valid steps of each sequence, as in :func:`arrayrnn.rnn`; the backward direction runs each sequence
            backwards over its own valid steps (torch packed sequences). ``None`` (default) means the model's
            ``default_lengths``, which is ``None`` (all ``T`` steps) unless set.
        mask : boolean array or list of bool, shape (T, B), or (B, T) with ``batch_first``, or unbatched (T,), optional
            Which steps run, instead of ``lengths`` (as in :func:`arrayrnn.rnn`: a masked step keeps the whole
            state, so holes and leading padding are allowed); every layer and both directions use it (the backward
            one visits the unmasked steps from last to first). A mask replaces the model's ``default_lengths``.
        padding : {"zeros", "carry"}, optional
            What a masked or padded step writes to each direction's ``y``: ``"zeros"`` (default) or ``"carry"``,
            that direction's carried ``h`` (Keras). With either option the array-API core runs every layer.
        impl : str, optional
            The implementation every layer runs, as in :func:`arrayrnn.rnn` (``"auto"``, ``"generic"``, ``"fast"``
            or a path name; ``None``: ``$ARRAYRNN_IMPL``, else ``"auto"``).
        sequence_function : callable, optional
            Advanced: replaces :attr:`sequence_function` for every layer call, with the same signature
            (``ar.vjp`` passes one that records each layer).
        train : bool, optional
            Apply the model's ``dropout``, ``recurrent_dropout`` and ``zoneout`` masks. Default ``False``.
        seed : int or numpy.random.Generator, optional
            Needed with ``train=True`` when a rate is above 0: every mask comes from one
            ``numpy.random.default_rng(seed)`` (the same masks on every backend), drawn layer by layer: each
            direction's sequence masks (forward, then backward; as :func:`arrayrnn.lstm` draws them), then the layer's
            output mask ``u (T, B, D*H_out)`` (time-major whatever ``batch_first``), kept where ``u >= p``. Training
            on dask arrays is refused.

        Returns
        -------
        y : array, shape (T, B, D*H_out), or (B, T, D*H_out) with ``batch_first``, or unbatched (T, D*H_out)
            The last layer's outputs, both directions concatenated; ``H_out`` is ``P`` for an LSTM with a
            projection, else ``H``.
        h_n : array, shape (L*D, B, H_out), or for an LSTM the pair (h_n, c_n) with c_n (L*D, B, H)
            The final states of every layer and direction, in the order ``l*D + d`` (unbatched: no ``B`` axis).

        Raises
        ------
        TypeError, ValueError
            As the sequence functions (the messages name the argument), and for ``params`` or ``state`` of the
            wrong structure or shape; a ``default_state`` or ``default_lengths`` that does not fit ``x``.
        BackendMismatchError
            The arguments live on different backends or devices.

        Examples
        --------
        >>> import numpy as np
        >>> import arrayrnn as ar
        >>> model = ar.LSTM(3, 4, num_layers=2, seed=0)
        >>> x = np.ones((5, 2, 3), dtype="float32")
        >>> y, (h_n, c_n) = model.apply(model.params, x)
        >>> y.shape, h_n.shape, c_n.shape
        ((5, 2, 4), (2, 2, 4), (2, 2, 4))
        """
        check_stack(self.kind, params)
        check_padding(padding)
        check_not_both(mask, lengths)
        # a mask replaces the model's default_lengths (a placeholder stops _with_defaults from filling them in)
        state, lengths = self._with_defaults(params, x, state, lengths if mask is None else ())
        lengths = None if mask is not None else lengths
        self._check_state(params, x, state)
        if self.kind == "lstm" and state is not None:
            state = tuple(state)
        options = dict(self._options)
        if impl is not None:
            options["impl"] = impl
        options.update(masking_options(mask, padding))  # every layer and direction: the same mask and padding
        if is_dask_array(x):  # the whole stack per batch block: one task per block, not one per layer
            from ._dask import run_stack_dask

            refuse_dask_stack_training(stack_rng(options, train, seed))  # masks span the batch: not per block

            return run_stack_dask(
                run_stack,
                sequence_function or self.sequence_function,
                x,
                params,
                state,
                lengths=lengths,
                batch_first=self.batch_first,
                reverse=self.reverse,
                **options,
            )
        return run_stack(
            sequence_function or self.sequence_function,
            x,
            params,
            state,
            lengths=lengths,
            batch_first=self.batch_first,
            reverse=self.reverse,
            train=train,
            seed=seed,
            **options,
        )

    def __call__(
        self,
        x: Array,
        state: Any = None,
        *,
        lengths: Any = None,
        mask: Any = None,
        padding: str = "zeros",
        impl: Optional[str] = None,
        train: bool = False,
        seed: Any = None,
    ):
        """Run the model on ``x`` with its own params: ``self.apply(self.params, x, state, ...)``.

        Shapes are those of ``torch.nn.RNN/LSTM/GRU`` (``L`` layers, ``D`` directions).

        Parameters
        ----------
        x : array, shape (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I)
            The input sequence, floating point, in the params' dtype, on their backend and device.
        state : array or tuple of arrays, optional
            ``h_0 (L*D, B, H)`` (``(L*D, H)`` unbatched); for an LSTM the pair ``(h_0, c_0)``, where ``h_0`` is
            ``(L*D, B, P)`` with a projection. Never batch-first. ``None`` (default) means the model's
            ``default_state``, which is ``None`` (zeros) unless set.
        lengths : integer array or list of int, shape (B,), optional
            Valid steps of each sequence, as in :func:`arrayrnn.rnn`; the backward direction runs each sequence
            backwards over its own valid steps (torch packed sequences). ``None`` (default) means the model's
            ``default_lengths``, which is ``None`` (all ``T`` steps) unless set.
        mask : boolean array or list of bool, shape (T, B), or (B, T) with ``batch_first``, or unbatched (T,), optional
            Which steps run, instead of ``lengths`` (as in :func:`arrayrnn.rnn`: a masked step keeps the whole
            state, so holes and leading padding are allowed); every layer and both directions use it (the backward
            one visits the unmasked steps from last to first). A mask replaces the model's ``default_lengths``.
        padding : {"zeros", "carry"}, optional
            What a masked or padded step writes to each direction's ``y``: ``"zeros"`` (default) or ``"carry"``,
            that direction's carried ``h`` (Keras). With either option the array-API core runs every layer.
        impl : str, optional
            The implementation every layer runs, as in :func:`arrayrnn.rnn` (``"auto"``, ``"generic"``, ``"fast"``
            or a path name; ``None``: ``$ARRAYRNN_IMPL``, else ``"auto"``).
        train : bool, optional
            Apply the dropout family's masks (see :meth:`apply`). Default ``False``.
        seed : int or numpy.random.Generator, optional
            The masks' seed, needed with ``train=True`` when a rate is above 0 (see :meth:`apply`).

        Returns
        -------
        y : array, shape (T, B, D*H_out), or (B, T, D*H_out) with ``batch_first``, or unbatched (T, D*H_out)
            The last layer's outputs, both directions concatenated; ``H_out`` is ``P`` for an LSTM with a
            projection, else ``H``.
        h_n : array, shape (L*D, B, H_out), or for an LSTM the pair (h_n, c_n) with c_n (L*D, B, H)
            The final states of every layer and direction, in the order ``l*D + d`` (unbatched: no ``B`` axis).

        Raises
        ------
        TypeError, ValueError
            As the sequence functions (the messages name the argument), and for ``params`` or ``state`` of the
            wrong structure or shape.
        BackendMismatchError
            The arguments live on different backends or devices.

        Examples
        --------
        >>> import numpy as np
        >>> import arrayrnn as ar
        >>> model = ar.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=0)
        >>> x = np.ones((2, 5, 3), dtype="float32")
        >>> y, h_n = model(x, lengths=np.array([5, 3]))
        >>> y.shape, h_n.shape
        ((2, 5, 8), (4, 2, 4))
        >>> regularized = ar.GRU(3, 4, num_layers=2, dropout=0.5, zoneout=0.1, seed=0)
        >>> y_train, _ = regularized(np.ones((5, 2, 3), "float32"), train=True, seed=1)  # one seed: the same masks
        >>> y_train.shape
        (5, 2, 4)

        Keras-style masking: batch-first ``(B, T)``; each direction writes its carried ``h`` at masked steps:

        >>> mask = np.array([[False, True, True, True, True], [True, True, False, True, False]])
        >>> y, h_n = model(x, mask=mask, padding="carry")
        >>> forward, backward = y[..., :4], y[..., 4:]
        >>> bool(np.all(forward[0, 0] == 0)), bool(np.all(forward[1, 2] == forward[1, 1]))
        (True, True)
        >>> bool(np.all(backward[1, 2] == backward[1, 3])), bool(np.all(backward[1, 4] == 0))
        (True, True)
        """
        return self.apply(
            self._params, x, state, lengths=lengths, impl=impl, mask=mask, padding=padding, train=train, seed=seed
        )

    # ---- weights in and out ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """The arrays under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...).

        Peepholes (not in torch) are ``peephole_i_l0``, ``peephole_f_l0``, ``peephole_o_l0`` (+ ``_reverse``), the
        full gate recurrence ``weight_gg_l0``.
        ``torch.nn.LSTM(...).load_state_dict`` takes it once the arrays are torch tensors.

        Returns
        -------
        dict of str to array
            The model's own arrays (on its backend), not copies; missing biases are left out.

        Examples
        --------
        >>> import arrayrnn as ar
        >>> state_dict = ar.LSTM(3, 4, bidirectional=True, seed=0).state_dict()
        >>> sorted(state_dict)[:4]
        ['bias_hh_l0', 'bias_hh_l0_reverse', 'bias_ih_l0', 'bias_ih_l0_reverse']
        >>> state_dict["weight_ih_l0"].shape
        (16, 3)
        """
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole_i", "peephole_f", "peephole_o",
                 "weight_gg", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
                 "ln_c_bias")  # fmt: skip
        result: dict[str, Array] = {}
        for layer, layer_params in enumerate(self._params):
            for direction, p in enumerate(layer_params):
                for name in names:
                    value = getattr(p, name, None)
                    if value is not None:
                        result[name + _suffix(layer, direction)] = value
        return result

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        backend: Optional[str] = None,
        device: Any = None,
        dtype: Optional[str] = None,
        prefix: str = "",
        batch_first: bool = False,
        reverse: bool = False,
        **options: Any,
    ):
        """A model from a torch-named state dict (torch tensors, NumPy or any backend's arrays).

        Layers, directions, bias, ``proj_size`` and peepholes are read from the keys and shapes; pass the options
        torch does not store. torch is never imported: tensors are recognised by type.

        Parameters
        ----------
        state_dict : mapping of str to array
            ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ..., ``_reverse`` for the backward direction (as
            ``torch.nn.LSTM.state_dict()`` or :meth:`state_dict` name them).
        backend : str, optional
            Where the arrays are copied (with ``ar.to_backend``); ``None`` (default): the current backend.
        device : optional
            The device on that backend.
        dtype : str, optional
            Cast the arrays to this dtype (e.g. ``"float64"``); ``None`` keeps theirs.
        prefix : str, optional
            Stripped from every key (e.g. ``"encoder.rnn."`` for a submodule's entries of a bigger state dict);
            keys without it are ignored. Default ``""``.
        batch_first : bool, optional
            ``x`` and ``y`` are ``(B, T, ·)``. Default ``False``.
        reverse : bool, optional
            Run every layer backwards in time (one direction only). Default ``False``.
        **options
            The cell options (``nonlinearity`` for an RNN; ``coupled``, ``clip`` for an LSTM;
            ``linear_before_reset`` for a GRU).

        Returns
        -------
        RNN, LSTM or GRU
            A model of this class holding copies of the arrays.

        Raises
        ------
        TypeError
            ``state_dict`` is not a mapping; an unknown option.
        ValueError
            A key that is not a weight of this kind of model, a layer number not below the number of entries (layers
            are numbered ``0 .. L-1``; found without counting up to the number), a missing layer, direction or weight,
            one bias of a pair, or shapes of another kind of layer (the message names the key).
        BackendUnavailableError
            ``backend`` is unknown or not usable here.

        Examples
        --------
        >>> import arrayrnn as ar
        >>> state_dict = ar.LSTM(3, 4, num_layers=2, seed=0).state_dict()
        >>> model = ar.LSTM.from_state_dict(state_dict, dtype="float64")
        >>> model.num_layers, model.hidden_size, model.dtype
        (2, 4, dtype('float64'))
        >>> prefixed = {"encoder.rnn." + key: value for key, value in state_dict.items()}
        >>> ar.LSTM.from_state_dict(prefixed, prefix="encoder.rnn.").num_layers
        2
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        entries: dict[tuple[int, int], dict[str, Any]] = {}
        slot_keys: dict[tuple[int, int], str] = {}  # a key of each (layer, direction), for the messages
        limit = len(state_dict)  # L layers need at least L keys: a larger layer number is refused as it is read
        for key, value in state_dict.items():
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            match = _KEY.fullmatch(name)
            if match is None:
                raise ValueError(
                    f"state_dict key {key!r} is not a {cls.__name__} weight; expected names like "
                    f"{prefix}weight_ih_l0, {prefix}weight_hh_l0_reverse, {prefix}bias_ih_l1"
                    + (", weight_hr_l0, peephole_i_l0" if cls.kind == "lstm" else "")
                )
            field, digits, backward = match.group(1), match.group(2), match.group(3) is not None
            if digits != "0" and digits.startswith("0"):
                raise ValueError(f"state_dict key {key!r} writes its layer number with a leading zero")
            if len(digits) > len(str(limit)) or int(digits) >= limit:
                raise ValueError(
                    f"state_dict key {key!r} names layer {digits if len(digits) <= 20 else digits[:20] + '...'} "
                    f"but the state dict has only {limit} entries; layers are numbered 0, 1, ... without gaps"
                )
            layer = int(digits)
            if cls.kind != "lstm" and (field in ("weight_hr", "weight_gg", "ln_c_weight", "ln_c_bias")
                                       or field.startswith("peephole")):  # fmt: skip
                raise ValueError(f"state_dict key {key!r} belongs to an LSTM, not a {cls.__name__}")
            entries.setdefault((layer, int(backward)), {})[field] = value
            slot_keys.setdefault((layer, int(backward)), key)
        if not entries:
            raise ValueError(f"state_dict has no {prefix}weight_ih_l0 (nor any other {cls.__name__} weight)")
        layers = max(layer for layer, _ in entries) + 1  # <= limit: the set below is as small as the state dict
        directions = 2 if (0, 1) in entries else 1
        expected_slots = {(layer, d) for layer in range(layers) for d in range(directions)}
        missing = sorted(expected_slots - set(entries))
        extra = sorted(set(entries) - expected_slots)
        if missing or extra:
            slot = missing[0] if missing else extra[0]
            culprit = max(slot_keys.items())[1] if missing else slot_keys[slot]  # the highest layer's, or the extra
            raise ValueError(
                f"state_dict has {'no' if missing else 'an unexpected'} weights for layer {slot[0]} "
                f"{'reverse' if slot[1] else 'forward'} ({prefix}weight_ih{_suffix(*slot)}; see key {culprit!r}); a "
                f"{layers}-layer {'bidirectional ' if directions == 2 else ''}stack needs all layers and directions"
            )
        target = backend if backend is not None else get_backend()
        params = []
        for layer in range(layers):
            layer_params = []
            for direction in range(directions):
                fields = entries[(layer, direction)]
                for required in ("weight_ih", "weight_hh"):
                    if required not in fields:
                        raise ValueError(f"state_dict is missing {prefix}{required}{_suffix(layer, direction)}")
                if ("bias_ih" in fields) != ("bias_hh" in fields):
                    raise ValueError(
                        f"state_dict has only one of {prefix}bias_ih{_suffix(layer, direction)} and "
                        f"{prefix}bias_hh{_suffix(layer, direction)}; give both or neither"
                    )
                arrays = to_backend(fields, target, device=device)
                if dtype is not None:
                    xp = namespace_of(**{name: value for name, value in arrays.items()})[0]
                    arrays = {name: xp.astype(value, getattr(xp, str(dtype))) for name, value in arrays.items()}
                cls._check_kind_shapes(arrays, f"{prefix}{{}}{_suffix(layer, direction)}")
                layer_params.append(cls._params_class(**arrays))
            params.append(tuple(layer_params))
        return cls.from_params(tuple(params), batch_first=batch_first, reverse=reverse, **options)

    @classmethod
    def _check_kind_shapes(cls, arrays: dict[str, Any], key: str) -> None:
        """Catch a state dict of another kind (a GRU's into an LSTM) with a message saying so."""
        gates = cls._params_class.gates
        weight_hh = arrays["weight_hh"]
        rows = weight_hh.shape[0]
        if weight_hh.ndim != 2 or rows % gates != 0:
            raise ValueError(
                f"{key.format('weight_hh')} has shape {shape_text(weight_hh.shape)} but a {cls.__name__} needs "
                f"({gates}*hidden_size, {'proj_size or ' if cls.kind == 'lstm' else ''}hidden_size); "
                f"is this state dict from another kind of layer?"
            )
        if "weight_hr" not in arrays and weight_hh.shape[1] * gates != rows:
            raise ValueError(
                f"{key.format('weight_hh')} has shape {shape_text(weight_hh.shape)} but a {cls.__name__} needs "
                f"({gates}*hidden_size, hidden_size) = ({gates * weight_hh.shape[1]}, {weight_hh.shape[1]}); "
                f"is this state dict from another kind of layer?"
            )

    # ---- moving ------------------------------------------------------------------------------

    def _map_arrays(self, function: Callable[[Array], Array]):
        """A copy of the model with ``function`` applied to every array (``ar.to_backend``/``ar.to_numpy``).

        ``default_state`` is mapped too; ``default_lengths`` (Python ints) is kept.
        """
        model = type(self).from_params(
            map_arrays(function, self._params), batch_first=self.batch_first, reverse=self.reverse, **self._options
        )
        if self.default_state is not None:
            model.default_state = map_arrays(function, self.default_state)
        if self.default_lengths is not None:
            model.default_lengths = self.default_lengths
        return model

    def to(self, backend: Optional[str] = None, device: Any = None, *, dtype: Optional[str] = None):
        """A copy of the model on ``backend`` and ``device``, optionally cast to ``dtype``.

        Parameters
        ----------
        backend : str, optional
            The target backend; ``None`` (default): the current one (:func:`arrayrnn.get_backend`).
        device : optional
            The device on that backend; ``None``: the backend's default.
        dtype : str, optional
            Cast every array to this dtype (e.g. ``"float64"``); ``None`` keeps the model's.

        Returns
        -------
        RNN, LSTM or GRU
            A model of the same class and options (arrays already on the target are shared, not copied).

        Raises
        ------
        BackendUnavailableError
            ``backend`` is unknown or not usable here.

        Examples
        --------
        >>> import arrayrnn as ar
        >>> model = ar.RNN(3, 4, seed=0)
        >>> model.to("numpy", dtype="float64").dtype
        dtype('float64')
        >>> gpu_model = model.to("cupy")  # doctest: +SKIP
        """
        moved = to_backend(self, backend, device=device)
        if dtype is None:
            return moved
        xp = namespace_of(weight_ih=moved._params[0][0].weight_ih)[0]
        return moved._map_arrays(lambda a: xp.astype(a, getattr(xp, str(dtype))))


class RNN(_StackedModel):
    """Stacked (and bidirectional) Elman RNN, shaped like ``torch.nn.RNN``.

    Layer ``l`` runs :func:`arrayrnn.rnn` in each direction (the backward one with ``reverse=True``) on the
    previous layer's output, both directions concatenated. See :meth:`__call__` for the shapes,
    :meth:`apply` for the pure function, :meth:`from_state_dict` / :meth:`state_dict` for torch's weights.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units of every layer.
    num_layers : int, optional
        ``L``, stacked layers. Default 1.
    nonlinearity : {"tanh", "relu"}, optional
        The activation. Default ``"tanh"``.
    bidirectional : bool, optional
        Add a backward direction (``D = 2``) to every layer. Default ``False``.
    bias : bool, optional
        Layers have biases. Default ``True``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)`` (states never are). Default ``False``.
    reverse : bool, optional
        Run every layer backwards in time, ``y`` still in time order (ONNX ``direction="reverse"``, Keras
        ``go_backwards`` without reversing ``y``); not with ``bidirectional``. Default ``False``.
    layer_norm : bool, optional
        Layer normalisation (Ba et al. 2016) in every layer: the ``ln_*`` arrays of :func:`arrayrnn.init_rnn` /
        ``init_lstm`` / ``init_gru`` (gains 1, shifts 0; a seed's other numbers unchanged). Default ``False``.
    dropout, recurrent_dropout, zoneout : float in [0, 1), optional
        The dropout family, active in calls with ``train=True`` (and ``seed=``): ``dropout`` (torch's) on the output
        of every layer but the last (inverted: kept units scaled by ``1/(1-p)``, one mask per element); in every
        layer and direction ``recurrent_dropout`` and ``zoneout`` as in :func:`arrayrnn.lstm` (zoneout's
        expectation at inference). Default ``0.0``; saved by :func:`arrayrnn.save`.
    seed : int, numpy.random.Generator or None, optional
        One random stream initialises the whole stack (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), layer by layer and
        direction by direction (``l0``, ``l0_reverse``, ``l1``, ...); one seed gives the same numbers on every
        backend.
    dtype : {"float32", "float64", "float16"}, optional
        The params' dtype. Default ``"float32"``.
    backend : str, optional
        Where to create the params; ``None`` (default): the current backend (:func:`arrayrnn.get_backend`).
    device : optional
        The device on that backend.

    Attributes
    ----------
    params : tuple of tuples of RNNParams
        ``params[l][d]``, layer ``l``, direction ``d`` (0: forward, 1: backward); may be replaced by params of the
        same structure.
    input_size, hidden_size, num_layers, bidirectional, bias, reverse, dtype, backend, device
        The configuration, read-only.
    batch_first : bool
        The layout of ``x`` and ``y`` (may be changed).
    default_state, default_lengths : optional
        What a call gets for ``state=None`` / ``lengths=None`` (default ``None``: zeros / all steps); set by
        :func:`arrayrnn.convert.from_onnx_model` for constant ONNX inputs. Not part of :meth:`config`,
        :meth:`state_dict` or :func:`arrayrnn.save`.

    Raises
    ------
    TypeError
        A flag is not a bool.
    ValueError
        A size or ``num_layers`` is not a positive integer, or another option is invalid; ``num_layers`` above
        ``arrayrnn.models.MAX_LAYERS`` (1024), or parameters estimated above ``arrayrnn.models.MAX_PARAMETER_BYTES``
        (32 GiB): checked before anything is allocated.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> model = ar.RNN(3, 4, num_layers=2, nonlinearity="relu", seed=0)
    >>> y, h_n = model(np.ones((5, 2, 3), dtype="float32"))
    >>> y.shape, h_n.shape
    ((5, 2, 4), (2, 2, 4))
    """

    kind = "rnn"
    _sequence = staticmethod(rnn)
    _params_class = RNNParams
    _option_defaults: ClassVar[dict[str, Any]] = {"nonlinearity": "tanh", **MODEL_RATES}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        bias: bool = True,
        batch_first: bool = False,
        reverse: bool = False,
        layer_norm: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        seed: Any = None,
        dtype: str = "float32",
        backend: Optional[str] = None,
        device: Any = None,
    ) -> None:
        rates = model_rates(dropout, recurrent_dropout, zoneout)  # before anything is allocated
        params = self._init_stack(
            init_rnn, input_size, hidden_size, num_layers, bidirectional, seed, hidden_size,
            bias=bias, layer_norm=layer_norm, dtype=dtype, backend=backend, device=device,
        )  # fmt: skip
        self._setup(params, batch_first, {"nonlinearity": nonlinearity, **rates}, reverse)

    @property
    def nonlinearity(self) -> str:
        return self._options["nonlinearity"]


#: Greff et al. (2015), "LSTM: A Search Space Odyssey": the vanilla LSTM ``"V"`` (with peepholes) and its eight
#: variants, each ``V`` with one change, as :class:`LSTM` options (``ar.LSTM(..., variant="NIG")``).
LSTM_VARIANTS: dict[str, dict[str, Any]] = {
    "V": {"peepholes": True},
    "NIG": {"peepholes": True, "input_gate": False},
    "NFG": {"peepholes": True, "forget_gate": False},
    "NOG": {"peepholes": True, "output_gate": False},
    "NIAF": {"peepholes": True, "input_activation": "identity"},
    "NOAF": {"peepholes": True, "output_activation": "identity"},
    "NP": {"peepholes": False},
    "CIFG": {"peepholes": True, "coupled": True},
    "FGR": {"peepholes": True, "gate_recurrence": True},
}
#: every option a variant may set, at its default (what the vanilla LSTM without peepholes has)
_VARIANT_DEFAULTS: dict[str, Any] = {
    "peepholes": False, "gate_recurrence": False, "coupled": False, "input_gate": True, "forget_gate": True,
    "output_gate": True, "input_activation": "tanh", "output_activation": "tanh",
}  # fmt: skip


class LSTM(_StackedModel):
    """Stacked (and bidirectional) LSTM, shaped like ``torch.nn.LSTM`` (``proj_size`` included).

    Layer ``l`` runs :func:`arrayrnn.lstm` in each direction (the backward one with ``reverse=True``) on the
    previous layer's output, both directions concatenated. Beyond torch: ``peepholes`` (ONNX semantics),
    ``coupled`` (f = 1 - i, ONNX ``input_forget``), ``clip`` (gate pre-activations bounded to [-clip, clip],
    ONNX ``clip``) and the variants of Greff et al. (2015) (``variant=``, or the options one by one; the table is
    :data:`arrayrnn.LSTM_VARIANTS`). See :meth:`__call__` for the shapes, :meth:`apply` for the pure function,
    :meth:`from_state_dict` / :meth:`state_dict` for torch's weights.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units of every layer.
    num_layers : int, optional
        ``L``, stacked layers. Default 1.
    proj_size : int, optional
        ``P``: project ``h`` to ``P < H`` features (``weight_hr``); 0 (default): no projection.
    peepholes : bool, optional
        Peephole connections (ONNX semantics). Default ``False``.
    coupled : bool, optional
        Coupled input-forget gate, ``f = 1 - i``. Default ``False``.
    clip : float or None, optional
        A positive bound for the gate pre-activations; ``None`` (default) does not clip.
    variant : {"V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR"} or None, optional
        Greff et al.'s LSTM of that name: sets the options below (and ``peepholes``, ``coupled``) as
        :data:`arrayrnn.LSTM_VARIANTS` says; an option given beside it must agree. ``None`` (default): the options
        as given.
    input_gate, forget_gate, output_gate : bool, optional
        ``False``: the gate is absent (is 1; NIG, NFG, NOG); its rows of the weights are ignored. Default ``True``.
    input_activation, output_activation : {"tanh", "identity"}, optional
        The activation of the block input ``g`` and of ``c_t`` in ``h_t`` (NIAF, NOAF). Default ``"tanh"``.
    gate_recurrence : bool, optional
        Full gate recurrence (FGR): every layer gets ``weight_gg (3H, 3H)`` and the state becomes
        ``(h, c, g)`` with ``g (L*D, B, 3H)``, the gate activations ``[i, f, o]``. Default ``False``.
    bidirectional : bool, optional
        Add a backward direction (``D = 2``) to every layer. Default ``False``.
    bias : bool, optional
        Layers have biases. Default ``True``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)`` (states never are). Default ``False``.
    reverse : bool, optional
        Run every layer backwards in time, ``y`` still in time order (ONNX ``direction="reverse"``, Keras
        ``go_backwards`` without reversing ``y``); not with ``bidirectional``. Default ``False``.
    layer_norm : bool, optional
        Layer normalisation (Ba et al. 2016) in every layer: the ``ln_*`` arrays of :func:`arrayrnn.init_rnn` /
        ``init_lstm`` / ``init_gru`` (gains 1, shifts 0; a seed's other numbers unchanged). Default ``False``.
    dropout, recurrent_dropout, zoneout : float in [0, 1), optional
        The dropout family, active in calls with ``train=True`` (and ``seed=``): ``dropout`` (torch's) on the output
        of every layer but the last (inverted: kept units scaled by ``1/(1-p)``, one mask per element); in every
        layer and direction ``recurrent_dropout`` and ``zoneout`` as in :func:`arrayrnn.lstm` (zoneout's
        expectation at inference). Default ``0.0``; saved by :func:`arrayrnn.save`.
    seed : int, numpy.random.Generator or None, optional
        One random stream initialises the whole stack (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), layer by layer and
        direction by direction (``l0``, ``l0_reverse``, ``l1``, ...); one seed gives the same numbers on every
        backend.
    dtype : {"float32", "float64", "float16"}, optional
        The params' dtype. Default ``"float32"``.
    backend : str, optional
        Where to create the params; ``None`` (default): the current backend (:func:`arrayrnn.get_backend`).
    device : optional
        The device on that backend.

    Attributes
    ----------
    params : tuple of tuples of LSTMParams
        ``params[l][d]``, layer ``l``, direction ``d`` (0: forward, 1: backward); may be replaced by params of the
        same structure.
    input_size, hidden_size, num_layers, bidirectional, bias, reverse, dtype, backend, device
        The configuration, read-only.
    batch_first : bool
        The layout of ``x`` and ``y`` (may be changed).
    default_state, default_lengths : optional
        What a call gets for ``state=None`` / ``lengths=None`` (default ``None``: zeros / all steps); set by
        :func:`arrayrnn.convert.from_onnx_model` for constant ONNX inputs. Not part of :meth:`config`,
        :meth:`state_dict` or :func:`arrayrnn.save`.

    Raises
    ------
    TypeError
        A flag is not a bool.
    ValueError
        A size or ``num_layers`` is not a positive integer, or another option is invalid; ``num_layers`` above
        ``arrayrnn.models.MAX_LAYERS`` (1024), or parameters estimated above ``arrayrnn.models.MAX_PARAMETER_BYTES``
        (32 GiB): checked before anything is allocated.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> model = ar.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    >>> y, (h_n, c_n) = model(np.ones((5, 2, 3), dtype="float32"))
    >>> y.shape, h_n.shape, c_n.shape
    ((5, 2, 8), (4, 2, 4), (4, 2, 4))
    >>> model = ar.LSTM(3, 4, proj_size=2, seed=0)
    >>> y, (h_n, c_n) = model(np.ones((5, 3), dtype="float32"))  # unbatched
    >>> y.shape, h_n.shape, c_n.shape
    ((5, 2), (1, 2), (1, 4))
    >>> ar.LSTM(3, 4, variant="NIG", seed=0).input_gate  # Greff et al.'s "no input gate"
    False
    >>> y, (h_n, c_n, g_n) = ar.LSTM(3, 4, variant="FGR", seed=0)(np.ones((5, 2, 3), dtype="float32"))
    >>> g_n.shape  # the gate activations [i, f, o] are part of the state
    (1, 2, 12)
    """

    kind = "lstm"
    _sequence = staticmethod(lstm)
    _params_class = LSTMParams
    _option_defaults: ClassVar[dict[str, Any]] = {
        "coupled": False, "clip": None, "input_gate": True, "forget_gate": True, "output_gate": True,
        "input_activation": "tanh", "output_activation": "tanh", **MODEL_RATES,
    }  # fmt: skip

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        proj_size: int = 0,
        bias: bool = True,
        batch_first: bool = False,
        reverse: bool = False,
        peepholes: bool = False,
        coupled: bool = False,
        clip: Optional[float] = None,
        variant: Optional[str] = None,
        input_gate: bool = True,
        forget_gate: bool = True,
        output_gate: bool = True,
        input_activation: str = "tanh",
        output_activation: str = "tanh",
        gate_recurrence: bool = False,
        layer_norm: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        seed: Any = None,
        dtype: str = "float32",
        backend: Optional[str] = None,
        device: Any = None,
    ) -> None:
        rates = model_rates(dropout, recurrent_dropout, zoneout)  # before anything is allocated
        given = {
            "peepholes": peepholes, "gate_recurrence": gate_recurrence, "coupled": coupled, "input_gate": input_gate,
            "forget_gate": forget_gate, "output_gate": output_gate, "input_activation": input_activation,
            "output_activation": output_activation,
        }  # fmt: skip
        chosen = _variant_options(variant, given)
        for name in ("peepholes", "gate_recurrence"):
            if not isinstance(chosen[name], bool):
                raise TypeError(f"{name} must be True or False, got {chosen[name]!r}")
        options = {name: chosen[name] for name in self._option_defaults if name in chosen}
        check_options(self.kind, {**options, "clip": clip})  # before anything is allocated
        params = self._init_stack(
            init_lstm, input_size, hidden_size, num_layers, bidirectional, seed, proj_size or hidden_size,
            bias=bias, proj_size=proj_size, peepholes=chosen["peepholes"], gate_recurrence=chosen["gate_recurrence"],
            layer_norm=layer_norm, dtype=dtype, backend=backend, device=device,
        )  # fmt: skip
        self._setup(params, batch_first, {**options, "clip": clip, **rates}, reverse)

    proj_size = property(lambda self: self._structure["proj_size"], doc="P (0: no projection)")
    peepholes = property(lambda self: self._structure["peepholes"], doc="whether the layers have peepholes")
    gate_recurrence = property(lambda self: self._structure["gate_recurrence"], doc="full gate recurrence (weight_gg)")
    coupled = property(lambda self: self._options["coupled"], doc="coupled input-forget gate (f = 1 - i)")
    clip = property(lambda self: self._options["clip"], doc="gate pre-activation clip (None: off)")
    input_gate = property(lambda self: self._options["input_gate"], doc="False: no input gate (i = 1)")
    forget_gate = property(lambda self: self._options["forget_gate"], doc="False: no forget gate (f = 1)")
    output_gate = property(lambda self: self._options["output_gate"], doc="False: no output gate (o = 1)")
    input_activation = property(lambda self: self._options["input_activation"], doc="activation of g")
    output_activation = property(lambda self: self._options["output_activation"], doc="activation of c_t in h_t")

    @property
    def variant(self) -> Optional[str]:
        """The name in :data:`arrayrnn.LSTM_VARIANTS` this model's options are, or ``None`` (another combination)."""
        mine = {name: self.config()[name] for name in _VARIANT_DEFAULTS}
        for name, options in LSTM_VARIANTS.items():
            if mine == {**_VARIANT_DEFAULTS, **options}:
                return name
        return None

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _structure_extras(self) -> dict[str, Any]:
        return {"proj_size": self.proj_size, "peepholes": self.peepholes, "gate_recurrence": self.gate_recurrence}


class GRU(_StackedModel):
    """Stacked (and bidirectional) GRU, shaped like ``torch.nn.GRU``.

    Layer ``l`` runs :func:`arrayrnn.gru` in each direction (the backward one with ``reverse=True``) on the
    previous layer's output, both directions concatenated. See :meth:`__call__` for the shapes, :meth:`apply`
    for the pure function, :meth:`from_state_dict` / :meth:`state_dict` for torch's weights.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units of every layer.
    num_layers : int, optional
        ``L``, stacked layers. Default 1.
    linear_before_reset : bool, optional
        ``True`` (default): torch's GRU; ``False``: the reset gate before the recurrent matmul (ONNX GRU with
        ``linear_before_reset=0``, Keras ``reset_after=False``).
    bidirectional : bool, optional
        Add a backward direction (``D = 2``) to every layer. Default ``False``.
    bias : bool, optional
        Layers have biases. Default ``True``.
    batch_first : bool, optional
        ``x`` and ``y`` are ``(B, T, ·)`` (states never are). Default ``False``.
    reverse : bool, optional
        Run every layer backwards in time, ``y`` still in time order (ONNX ``direction="reverse"``, Keras
        ``go_backwards`` without reversing ``y``); not with ``bidirectional``. Default ``False``.
    layer_norm : bool, optional
        Layer normalisation (Ba et al. 2016) in every layer: the ``ln_*`` arrays of :func:`arrayrnn.init_rnn` /
        ``init_lstm`` / ``init_gru`` (gains 1, shifts 0; a seed's other numbers unchanged). Default ``False``.
    dropout, recurrent_dropout, zoneout : float in [0, 1), optional
        The dropout family, active in calls with ``train=True`` (and ``seed=``): ``dropout`` (torch's) on the output
        of every layer but the last (inverted: kept units scaled by ``1/(1-p)``, one mask per element); in every
        layer and direction ``recurrent_dropout`` and ``zoneout`` as in :func:`arrayrnn.lstm` (zoneout's
        expectation at inference). Default ``0.0``; saved by :func:`arrayrnn.save`.
    seed : int, numpy.random.Generator or None, optional
        One random stream initialises the whole stack (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), layer by layer and
        direction by direction (``l0``, ``l0_reverse``, ``l1``, ...); one seed gives the same numbers on every
        backend.
    dtype : {"float32", "float64", "float16"}, optional
        The params' dtype. Default ``"float32"``.
    backend : str, optional
        Where to create the params; ``None`` (default): the current backend (:func:`arrayrnn.get_backend`).
    device : optional
        The device on that backend.

    Attributes
    ----------
    params : tuple of tuples of GRUParams
        ``params[l][d]``, layer ``l``, direction ``d`` (0: forward, 1: backward); may be replaced by params of the
        same structure.
    input_size, hidden_size, num_layers, bidirectional, bias, reverse, dtype, backend, device
        The configuration, read-only.
    batch_first : bool
        The layout of ``x`` and ``y`` (may be changed).
    default_state, default_lengths : optional
        What a call gets for ``state=None`` / ``lengths=None`` (default ``None``: zeros / all steps); set by
        :func:`arrayrnn.convert.from_onnx_model` for constant ONNX inputs. Not part of :meth:`config`,
        :meth:`state_dict` or :func:`arrayrnn.save`.

    Raises
    ------
    TypeError
        A flag is not a bool.
    ValueError
        A size or ``num_layers`` is not a positive integer, or another option is invalid; ``num_layers`` above
        ``arrayrnn.models.MAX_LAYERS`` (1024), or parameters estimated above ``arrayrnn.models.MAX_PARAMETER_BYTES``
        (32 GiB): checked before anything is allocated.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> model = ar.GRU(3, 4, batch_first=True, seed=0)
    >>> y, h_n = model(np.ones((2, 5, 3), dtype="float32"))
    >>> y.shape, h_n.shape
    ((2, 5, 4), (1, 2, 4))
    """

    kind = "gru"
    _sequence = staticmethod(gru)
    _params_class = GRUParams
    _option_defaults: ClassVar[dict[str, Any]] = {"linear_before_reset": True, **MODEL_RATES}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        bias: bool = True,
        batch_first: bool = False,
        reverse: bool = False,
        linear_before_reset: bool = True,
        layer_norm: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        seed: Any = None,
        dtype: str = "float32",
        backend: Optional[str] = None,
        device: Any = None,
    ) -> None:
        rates = model_rates(dropout, recurrent_dropout, zoneout)  # before anything is allocated
        if layer_norm is True and linear_before_reset is False:  # before anything is allocated
            raise ValueError(LN_HH_BEFORE_RESET)
        params = self._init_stack(
            init_gru, input_size, hidden_size, num_layers, bidirectional, seed, hidden_size,
            bias=bias, layer_norm=layer_norm, dtype=dtype, backend=backend, device=device,
        )  # fmt: skip
        self._setup(params, batch_first, {"linear_before_reset": linear_before_reset, **rates}, reverse)

    linear_before_reset = property(lambda self: self._options["linear_before_reset"], doc="GRU variant")


def _variant_options(variant: Optional[str], given: dict[str, Any]) -> dict[str, Any]:
    """The options of ``variant`` (:data:`LSTM_VARIANTS`) with those ``given``; a given non-default must agree."""
    if variant is None:
        return dict(given)
    if not isinstance(variant, str) or variant not in LSTM_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, LSTM_VARIANTS))} or None, got {variant!r}")
    chosen = {**_VARIANT_DEFAULTS, **LSTM_VARIANTS[variant]}
    for name, value in given.items():
        if value != _VARIANT_DEFAULTS[name] and value != chosen[name]:
            raise ValueError(
                f"variant={variant!r} sets {name}={chosen[name]!r}, but {name}={value!r} was given; leave {name} out "
                f"or choose the options one by one without variant"
            )
    return chosen


MODEL_CLASSES: dict[str, type[_StackedModel]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
