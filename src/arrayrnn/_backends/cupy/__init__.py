"""The CuPy backend: the hook the dispatcher calls, and which path runs each call (:func:`route`, ``policy.Config``).

Shipping paths: "fused" (cuBLAS + one fused pointwise kernel per step) and "graph" (the loop as one CUDA graph); the
others live in ``experimental/``. Each path module exposes ``sequence(kind, ...)`` (or ``sequence_vjp``) and, where
it cannot run every option, ``supports(...)``; the hook does device, dtype, empty batch and refusal once."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any, Optional

import numpy as np

from ..._core.layer_norm import layer_norm_changes
from ..._core.masking import masking_changes
from ..._core.regularize import regularization_changes
from ..._core.steps import lstm_base_options, lstm_variant_changes
from . import policy
from .common import check_dtype, empty_batch_result, refuse

Array = Any

#: path name -> (forward module, gradient function as "module:function" or None); modules under this package; a
#: module's ``supports`` (where it has one) says which calls it cannot run
PATHS: dict[str, tuple[str, Optional[str]]] = {
    "fused": (".fused", ".grad_fused:sequence_vjp"),
    "graph": (".graph", ".grad_graph:sequence_vjp"),
}
#: the paths auto does not pick today (deleting ``experimental/`` removes them and nothing else)
EXPERIMENTAL_PATHS: dict[str, tuple[str, Optional[str]]] = {
    "fused_graph": (".experimental.fused_graph", ".experimental.grad_fused_graph:sequence_vjp"),
    "tiled": (".experimental.tiled", None),
    "persistent": (".experimental.persistent", ".experimental.executor:sequence_vjp_persistent"),
    "cluster": (".experimental.cluster", ".experimental.grad_cluster:sequence_vjp"),
}


def _experimental_present() -> bool:
    return importlib.util.find_spec(f"{__name__}.experimental") is not None


def paths() -> tuple[str, ...]:
    """The path names ``impl=`` accepts on CuPy besides ``"auto"``, ``"generic"`` and ``"fast"``."""
    names = list(PATHS) + (list(EXPERIMENTAL_PATHS) if _experimental_present() else [])
    return tuple(sorted(names))


def _entry(path: str) -> tuple[str, Optional[str]]:
    return PATHS[path] if path in PATHS else EXPERIMENTAL_PATHS[path]


def forward_module(path: str) -> ModuleType:
    """The forward module of path ``path``: its ``sequence`` and (where it cannot run every call) ``supports``."""
    return importlib.import_module(_entry(path)[0], __name__)


def forward_function(path: str) -> Callable[..., Any]:
    """``sequence`` of path ``path``: ``(kind, xp, x, params, state, lengths, reverse, options)`` -> ``(y,
    final_state)``, for calls the hook has prepared (see :func:`sequence`)."""
    return forward_module(path).sequence


def _gradient_target(path: str) -> Optional[tuple[ModuleType, str]]:
    target = _entry(path)[1]
    if target is None:
        return None
    module_name, _, function = target.partition(":")
    return importlib.import_module(module_name, __name__), function


def gradient_function(path: str) -> Optional[Callable[..., Any]]:
    """The gradient of path ``path`` (``None`` where it has none): ``(xp, kind, x, params, state, lengths, reverse,
    options)`` -> ``(y, final_state, backward)``, for calls the hook has prepared (see :func:`sequence_vjp`)."""
    found = _gradient_target(path)
    return None if found is None else getattr(found[0], found[1])


def _supported(module: ModuleType, kind: str, params: Any, options: dict[str, Any]) -> None:
    """``ValueError`` with the reason ``module.supports`` gives where the module cannot run this call."""
    supports = getattr(module, "supports", None)
    if supports is not None:
        refuse(supports(kind, params, options))


# ----------------------------------------------------------------------------------------------
# the choice


def _is_c_contiguous(array: Optional[Array]) -> bool:
    return array is None or bool(array.flags.c_contiguous)


def _cluster_shared(config: policy.Config) -> int:
    if not config.cluster_auto or not _experimental_present():
        return 0
    from .experimental import cluster

    return cluster.cluster_shared_limit()


def _facts(kind: str, x: Array, params: Any, options: dict[str, Any], steps_factor: int = 1) -> dict[str, Any]:
    """What ``policy.choose_impl`` reads of a call."""
    weight_hr = getattr(params, "weight_hr", None)
    graph_inputs = [params.weight_hh, params.bias_ih, params.bias_hh, weight_hr]
    graph_inputs += [getattr(params, name, None) for name in ("peephole_i", "peephole_f", "peephole_o")]
    return {
        "steps": x.shape[0] * steps_factor,
        "batch": x.shape[1],
        "hidden": params.hidden_size,
        "dtype": np.dtype(x.dtype).name,
        "has_projection": weight_hr is not None,
        "weights_contiguous": all(_is_c_contiguous(a) for a in graph_inputs),
        "linear_before_reset": bool(options.get("linear_before_reset", True)),
    }


def _why_forward(kind: str, choice: str, facts: dict[str, Any], config: policy.Config) -> str:
    batch, hidden = facts["batch"], facts["hidden"]
    if choice == "generic":
        if batch == 0:
            return "empty batch"
        return f"{facts['dtype']} is not supported by the CuPy kernels ({', '.join(policy.SUPPORTED_DTYPES)})"
    if choice in ("graph", "persistent", "cluster"):
        return f"B = {batch} <= {config.graph_max_batch}, H = {hidden} <= {config.graph_max_hidden}: small batch"
    if choice == "tiled":
        return f"{config.tiled_min_batch} <= B = {batch} <= {config.tiled_max_batch} with tiled_auto"
    reasons = []
    if facts["has_projection"]:
        reasons.append("the LSTM projection is not in the graph kernels")
    if not facts["weights_contiguous"]:
        reasons.append("weights are not C-contiguous")
    if batch > config.graph_max_batch:
        reasons.append(f"B = {batch} > {config.graph_max_batch}")
    if hidden > config.graph_max_hidden:
        reasons.append(f"H = {hidden} > {config.graph_max_hidden}")
    if not reasons:
        reasons.append("the sequence's buffers exceed the graph plan limit")
    return "; ".join(reasons) + ": cuBLAS per step"


def route(
    kind: str, x: Array, params: Any, options: dict[str, Any], *, impl: str = "auto", gradient: bool = False
) -> tuple[str, str]:
    """``(path, reason)`` for a validated, time-major call: a path name, or ``"generic"`` to leave it to the core.

    An LSTM variant of Greff et al. (an absent gate, an identity activation, ``weight_gg``) is always left to the
    core, whatever ``impl`` names: no CuPy kernel implements them.

    ``impl``: ``"auto"`` / ``"fast"`` (the policy picks), or a path name (that path; for a gradient, that path's
    gradient where it has one, else auto's gradient choice).
    """
    masking = masking_changes(options)
    if masking:  # declined whatever impl names: no CuPy kernel has masks with holes or carry-padding
        runs = "the recording core runs" if gradient else "the array-API core runs"
        return "generic", f"{', '.join(masking)}: not in the CuPy kernels, {runs}"
    regularized = regularization_changes(options)
    if regularized:  # declined whatever impl names: no CuPy kernel has recurrent dropout or zoneout
        runs = "the recording core runs" if gradient else "the array-API core runs"
        return "generic", f"{', '.join(regularized)}: not in the CuPy kernels, {runs}"
    normed = layer_norm_changes(params)
    if normed:  # declined whatever impl names: no CuPy kernel has layer normalisation
        runs = "the recording core runs" if gradient else "the array-API core runs"
        return "generic", f"{', '.join(normed)}: not in the CuPy kernels, {runs}"
    if kind == "lstm":
        changes = lstm_variant_changes(params, options)
        if changes:  # declined whatever impl names: no CuPy kernel has the Greff variants
            runs = "the recording core runs" if gradient else "the array-API core runs"
            return "generic", f"{', '.join(changes)}: not in the CuPy kernels, {runs}"
    config = policy.current()
    named = impl not in ("auto", "fast")
    if not gradient:
        if named:
            return impl, "asked for by impl"
        facts = _facts(kind, x, params, options)
        choice = policy.choose_impl(kind, **facts, cluster_shared=_cluster_shared(config), config=config)
        return choice, _why_forward(kind, choice, facts, config)
    from .grad_fused import GRAD_DTYPES

    if x.shape[1] == 0:
        return "generic", "empty batch: the recording core runs"
    if np.dtype(x.dtype).name not in GRAD_DTYPES:
        return "generic", f"{np.dtype(x.dtype).name} gradients: the recording core runs ({', '.join(GRAD_DTYPES)})"
    if named and gradient_function(impl) is not None:
        return impl, "asked for by impl"
    facts = _facts(kind, x, params, options, steps_factor=config.grad_buffer_factor)
    forward = policy.choose_impl(kind, **facts, cluster_shared=_cluster_shared(config), config=config)
    shared = _cluster_shared(config) if forward == "cluster" else 0
    choice = policy.grad_choice(
        kind, forward, batch=x.shape[1], hidden=params.hidden_size, dtype=x.dtype, cluster_shared=shared, config=config
    )
    why = _why_forward(kind, forward, facts, config)
    if named:
        why = f"impl={impl!r} has no gradient path; auto's choice: {why}"
    return choice, why


# ----------------------------------------------------------------------------------------------
# the hook (see ``arrayrnn._dispatch``)


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
    """Run one validated, time-major layer on the path :func:`route` picks; ``None`` leaves it to the core.

    What every path needs, done once here: a path named by ``impl`` that cannot run the call (its ``supports``)
    raises ``ValueError`` with the reason; then, on the device of ``x``, a dtype the kernels are not written for
    raises, an empty batch gets its empty result, and the path's ``sequence`` runs.
    """
    path, _ = route(kind, x, params, options, impl=impl)
    if path == "generic":
        return None
    if kind == "lstm":  # the Greff options are all defaults here (route declines the rest): the paths never see them
        options = lstm_base_options(options)
    module = forward_module(path)
    _supported(module, kind, params, options)
    with x.device:
        check_dtype(x.dtype, path)
        if x.shape[1] == 0:
            return empty_batch_result(x, state)
        return module.sequence(kind, xp, x, params, state, lengths, reverse, options)


def sequence_vjp(
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
) -> Optional[tuple[Array, tuple[Array, ...], Callable[..., Any]]]:
    """A recording forward pass and its backward on the gradient path :func:`route` picks, or ``None``.

    As :func:`sequence`: dtypes without a gradient path and an empty batch are declined (:func:`route` gives
    "generic": the generic core runs); a path named by ``impl`` that cannot run the call raises ``ValueError`` (its
    module's ``supports``); the path runs on the device of ``x``.
    """
    path, _ = route(kind, x, params, options, impl=impl, gradient=True)
    if path == "generic":
        return None
    if kind == "lstm":
        options = lstm_base_options(options)
    found = _gradient_target(path)
    if found is None:
        return None
    module, function = found
    _supported(module, kind, params, options)
    with x.device:
        return getattr(module, function)(xp, kind, x, params, state, lengths, reverse, options)


def explain(kind: str, x: Array, params: Any, options: dict[str, Any], *, impl: str = "auto",
            gradient: bool = False) -> tuple[str, str]:  # fmt: skip
    """``(path, reason)``: what :func:`sequence` (or :func:`sequence_vjp`) does with this call, in words."""
    return route(kind, x, params, options, impl=impl, gradient=gradient)
