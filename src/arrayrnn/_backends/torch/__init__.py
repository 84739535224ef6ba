"""torch fast path: for what torch's own modules have, the layer runs on ``nn.LSTM``/``nn.GRU``/``nn.RNN`` with the
call's tensors as weights (torch's CPU kernels; cuDNN on CUDA); torch autograd flows through it. Everything else
(peepholes, coupled, clip, Greff variants, layer norm, masks, the dropout family, calls inside ``torch.func``
transforms, ...) declines to the array-API core. torch is imported only when a call on torch tensors arrives."""

from __future__ import annotations

from typing import Any, Optional

from ..._core.layer_norm import FIELDS as LAYER_NORM_FIELDS
from ..._core.layer_norm import layer_norm_changes
from ..._core.masking import masking_changes
from ..._core.regularize import regularization_changes
from ..._core.steps import LSTM_VARIANT_DEFAULTS, lstm_variant_changes

Array = Any

#: named paths ``impl=`` may ask for on torch (none: ``"auto"`` / ``"fast"`` take torch's module where it applies)
PATHS: tuple[str, ...] = ()
#: the options each cell's torch module runs (their other values, and any other option, decline)
KNOWN_OPTIONS = {
    "rnn": {"nonlinearity"},
    "lstm": {"coupled", "clip", "input_gate", "forget_gate", "output_gate", "input_activation", "output_activation"},
    "gru": {"linear_before_reset"},
}
#: ``lengths`` of a CUDA call go to the host for ``pack_padded_sequence`` (torch's packed API takes host lengths
#: only). They are (B,) integers the validation already reads on the host (their range check), not data, and the
#: alternative is the core's Python loop instead of cuDNN; ``False`` declines such calls instead.
CUDA_LENGTHS_TO_HOST = True
_TORCH_NAMES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}
_WHY = "the array-API core runs"


def paths() -> tuple[str, ...]:
    """The path names ``impl=`` accepts on this backend besides ``"auto"``, ``"generic"`` and ``"fast"``."""
    return PATHS


def _option_changes(kind: str, params: Any, options: dict[str, Any]) -> list[str]:
    """What of the call's cell options torch's module lacks, in words (empty: it runs them all)."""
    changes = [f"option {name}" for name in options if name not in KNOWN_OPTIONS[kind] | {"mask", "padding"}
               and name != "regularize"]  # fmt: skip
    if kind == "lstm":
        peepholes = [name for name in ("peephole_i", "peephole_f", "peephole_o") if getattr(params, name) is not None]
        if peepholes:
            changes.append(f"peepholes ({', '.join(peepholes)}): not in torch.nn.LSTM")
        if options.get("coupled", False):
            changes.append("coupled=True: not in torch.nn.LSTM")
        if options.get("clip") is not None:
            changes.append(f"clip={options['clip']!r}: not in torch.nn.LSTM")
        changes += [f"{change}: not in torch.nn.LSTM" for change in lstm_variant_changes(params, options)]
    elif kind == "gru" and not options.get("linear_before_reset", True):
        changes.append("linear_before_reset=False: torch.nn.GRU is linear_before_reset=True")
    elif kind == "rnn" and options.get("nonlinearity", "tanh") not in ("tanh", "relu"):
        changes.append(f"nonlinearity={options['nonlinearity']!r}: not in torch.nn.RNN")
    return changes


def in_torch_func() -> bool:
    """Whether a ``torch.func`` transform (grad, vmap, ...) is active: torch's fused RNN ops do not run under
    ``vmap`` (a random-op error, from the dropout slot) nor on ``grad``'s wrapped tensors when packed, so the core
    (plain torch ops, which every transform handles) runs those calls."""
    import torch  # already imported: the call holds torch tensors

    level = getattr(torch._C._functorch, "maybe_current_level", None)  # no public query exists
    return level is not None and level() is not None


#: option values each cell's torch module runs without a second look (the ``nonlinearity`` of an RNN: both)
_PLAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "rnn": {"nonlinearity": "tanh"},
    "lstm": {"coupled": False, "clip": None, **LSTM_VARIANT_DEFAULTS},
    "gru": {"linear_before_reset": True},
}
for _plain in _PLAIN_OPTIONS.values():
    _plain.update(mask=None, padding="zeros", regularize=None)
#: the params fields none of torch's modules has
_FOREIGN_FIELDS = ("peephole_i", "peephole_f", "peephole_o", "weight_gg", *LAYER_NORM_FIELDS)
_MISSING = object()


def _plain_call(kind: str, x: Any, params: Any, options: dict[str, Any]) -> bool:
    """A quick yes for the common call (CPU float32/float64, default options, plain params); ``False`` means "look
    closer" (:func:`decline_reason`), never "declined" by itself. Runs per call: kept to attribute lookups."""
    import torch  # already imported: the call holds torch tensors

    if not params.weight_ih.is_cpu or x.dtype not in (torch.float32, torch.float64) or x.shape[1] == 0:
        return False
    plain = _PLAIN_OPTIONS[kind]
    for name, value in options.items():
        default = plain.get(name, _MISSING)
        if value is default or (name == "nonlinearity" and value == "relu"):
            continue
        if default is None or default is _MISSING or type(value) is not type(default) or value != default:
            return False  # (a mask array is never compared with ==)
    return all(getattr(params, name, None) is None for name in _FOREIGN_FIELDS) and not in_torch_func()


def decline_reason(kind: str, x: Any, params: Any, lengths: Any, options: dict[str, Any]) -> Optional[str]:
    """Why torch's module does not run this validated, time-major call (``None``: it does)."""
    if _plain_call(kind, x, params, options):
        return None
    device = params.weight_ih.device  # x may be ar.explain's stand-in (shape and dtype only)
    dtype = str(x.dtype).removeprefix("torch.")
    if device.type not in ("cpu", "cuda"):
        return f"device {device}: only CPU and CUDA tensors run torch's module here, {_WHY}"
    if dtype not in ("float32", "float64") and not (dtype == "float16" and device.type == "cuda"):
        return f"{dtype} on {device.type}: torch's module runs float32/float64 (and float16 on CUDA), {_WHY}"
    if x.shape[1] == 0:
        return f"empty batch, {_WHY}"
    if in_torch_func():
        return f"inside a torch.func transform: torch's RNN kernels refuse its wrapped tensors (vmap, packed), {_WHY}"
    for found in (masking_changes(options), regularization_changes(options), layer_norm_changes(params)):
        if found:
            return f"{', '.join(found)}: not in torch.{_TORCH_NAMES[kind]}, {_WHY}"
    changes = _option_changes(kind, params, options)
    if changes:
        return f"{'; '.join(changes)}, {_WHY}"
    if lengths is not None and device.type == "cuda" and not CUDA_LENGTHS_TO_HOST:
        return f"lengths on CUDA: pack_padded_sequence needs them on the host, {_WHY}"
    return None


def sequence(
    kind: str,
    xp: Any,
    x: Array,
    params: Any,
    state: tuple[Array, ...],
    lengths: Optional[Array],
    reverse: bool,
    options: dict[str, Any],
    *,
    impl: str = "auto",
) -> Optional[tuple[Array, tuple[Array, ...]]]:
    """Run one validated, time-major layer on torch's own module; ``None`` (the core runs) for what it lacks."""
    if decline_reason(kind, x, params, lengths, options) is not None:
        return None
    from .native import run  # torch imports here, with the first torch call (a dict lookup afterwards)

    return run(kind, x, params, state, lengths, reverse, options.get("nonlinearity") == "relu")


def sequence_vjp(kind: str, xp: Any, x: Array, params: Any, state: Any, lengths: Any, reverse: bool,
                 options: dict[str, Any], *, impl: str = "auto") -> Optional[tuple[Array, tuple, Any]]:  # fmt: skip
    """``(y, final_state, backward)`` from torch autograd through torch's module, or ``None`` (the recording core
    runs) for what it declines; ``backward(dy, d_final) -> (dx, dparams, d_state)`` as the core's."""
    if decline_reason(kind, x, params, lengths, options) is not None:
        return None
    from . import grad

    return grad.sequence_vjp(kind, x, params, state, lengths, reverse, options.get("nonlinearity") == "relu")


def explain(kind: str, x: Array, params: Any, options: dict[str, Any], *, impl: str = "auto",
            gradient: bool = False) -> tuple[str, str]:  # fmt: skip
    """``(path, reason)`` for a validated, time-major call: the choice :func:`sequence` makes, in words.

    ``ar.explain`` gives no lengths here: a call with ``lengths`` takes the same path (packed sequences)."""
    declined = decline_reason(kind, x, params, None, options)
    if declined is not None:
        return "generic", declined
    on_cuda = params.weight_ih.device.type == "cuda"
    reason = "cuDNN on CUDA" if on_cuda else "CPU kernels, cuDNN on CUDA"
    reason += "; lengths packed" + (" (copied to the host)" if on_cuda else "") + ", reverse flipped per row"
    if gradient:
        reason += "; backward by torch.autograd"
    return f"{_TORCH_NAMES[kind]} with the call's weights", reason
