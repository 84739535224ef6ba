"""Functional optimizers: ``state = opt.init(params)``; ``params, state = opt.update(params, grads, state)``.

Any structure of params (a params object, a model's ``params``, tuples/lists/dicts of them); nothing is modified
in place, and every array stays on its own backend and device. The formulas are PyTorch's.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ._validate import dtype_name, shape_text
from .backend import backend_name, namespace_of

__all__ = ["SGD", "Adam", "AdamState", "SGDState", "global_norm"]

Array = Any


# ----------------------------------------------------------------------------------------------
# structures of arrays


def _is_array(value: Any) -> bool:
    try:
        backend_name(value)
    except TypeError:
        return False
    return True


def _children(tree: Any) -> Optional[list[tuple[Any, str, Any]]]:
    """``(key, label, child)`` of a container, or ``None`` for a leaf (an array or ``None``)."""
    if tree is None or _is_array(tree):
        return None
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return [(f.name, f".{f.name}", getattr(tree, f.name)) for f in dataclasses.fields(tree)]
    if isinstance(tree, (tuple, list)):
        return [(k, f"[{k}]", item) for k, item in enumerate(tree)]
    if isinstance(tree, dict):
        return [(key, f"[{key!r}]", value) for key, value in tree.items()]
    raise TypeError(f"expected arrays in params objects, tuples, lists or dicts, got {type(tree).__name__}")


def _rebuild(tree: Any, children: list[Any]) -> Any:
    if dataclasses.is_dataclass(tree):
        return dataclasses.replace(tree, **{f.name: c for f, c in zip(dataclasses.fields(tree), children)})
    if isinstance(tree, tuple):
        return type(tree)(*children) if hasattr(tree, "_fields") else tuple(children)
    if isinstance(tree, list):
        return list(children)
    return dict(zip(tree.keys(), children))


def _same_kind(a: Any, b: Any) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b)
    return isinstance(b, dict) and set(a) == set(b)


def _describe(tree: Any) -> str:
    """``a tuple of 2``, ``a dict with keys ['a', 'b']``, ``a GRUParams``: what a structure check reports."""
    name = type(tree).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(tree, (tuple, list)) and not dataclasses.is_dataclass(tree):
        return f"{article} {name} of {len(tree)}"
    if isinstance(tree, dict):
        return f"{article} {name} with keys {sorted(map(str, tree))}"
    return f"{article} {name}"


def _check_leaf(param: Any, other: Any, where: str, path: str) -> None:
    """``other`` (a gradient or an optimizer buffer, at ``where``) must fit its params leaf ``params{path}``: an
    array of the same shape, dtype, backend and device, or ``None``."""
    if other is None:
        return
    if param is None:
        raise ValueError(f"{where} is an array but the params leaf is None; give None there")
    if not _is_array(other):
        raise TypeError(f"{where} must be an array like the params leaf, got {type(other).__name__}")
    namespace_of(**{f"params{path}": param, where: other})
    if tuple(other.shape) != tuple(param.shape):
        raise ValueError(
            f"{where} has shape {shape_text(tuple(other.shape))} but the params leaf has "
            f"{shape_text(tuple(param.shape))}"
        )
    if other.dtype != param.dtype:
        raise TypeError(
            f"{where} has dtype {dtype_name(other.dtype)} but the params leaf has {dtype_name(param.dtype)}; "
            "convert the gradients to the params' dtype"
        )


def _map(
    function: Callable[..., Any], width: int, params: Any, *others: Any, names: tuple[str, ...] = (), path: str = ""
) -> tuple[Any, ...]:
    """``width`` structures shaped like ``params`` from ``function(param, *other_leaves)`` at each leaf.

    ``others`` (gradients, optimizer buffers) share the structure of ``params``; where one of them
    is ``None`` for a whole sub-structure, ``function`` sees ``None`` at every leaf below it.
    ``function`` returns a tuple of ``width`` values (or one value when ``width == 1``). ``names`` (one per
    ``others``, e.g. ``"grads"``): their leaves are checked against the params leaf first (:func:`_check_leaf`).
    """
    children = _children(params)
    if children is None:
        for name, other in zip(names, others):
            _check_leaf(params, other, name + path, path)
        result = function(params, *others)
        return tuple(result) if width > 1 else (result,)
    matched = []
    for k, other in enumerate(others):
        if other is None:
            matched.append([None] * len(children))
        elif _children(other) is None or not _same_kind(params, other):
            what = names[k] if k < len(names) else "grads (and optimizer state)"
            raise ValueError(
                f"{what} must have the structure of params: at params{path} params has "
                f"{_describe(params)}, got {_describe(other)}"
            )
        elif isinstance(other, dict):
            matched.append([other[key] for key, _, _ in children])
        else:
            matched.append([child for _, _, child in _children(other)])
    columns = [
        _map(function, width, child, *(m[k] for m in matched), names=names, path=path + label)
        for k, (_, label, child) in enumerate(children)
    ]
    return tuple(_rebuild(params, [column[j] for column in columns]) for j in range(width))


def _check_like(params: Any, **others: Any) -> None:
    """Check each of ``others`` (by name) against ``params``: structure, then every leaf (:func:`_check_leaf`)."""
    _map(lambda *leaves: None, 1, params, *others.values(), names=tuple(others))


def _zeros_like(param: Any) -> Any:
    if param is None:
        return None
    xp, _, _ = namespace_of(params=param)
    return xp.zeros_like(param)


def _leaves(tree: Any) -> list[Any]:
    children = _children(tree)
    if children is None:
        return [] if tree is None else [tree]
    return [leaf for _, _, child in children for leaf in _leaves(child)]


def global_norm(grads: Any) -> Array:
    """The L2 norm of every array in ``grads`` together: ``sqrt(sum of all squared entries)``.

    Parameters
    ----------
    grads : array, params object, or tuples, lists and dicts of them
        Any structure of arrays (``None`` leaves are skipped), all on one backend and device.

    Returns
    -------
    array, shape ()
        A 0-d array on their backend and device (no host round-trip).

    Raises
    ------
    ValueError
        ``grads`` holds no arrays.
    BackendMismatchError
        The arrays live on different backends or devices.

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrnn.optim import global_norm
    >>> float(global_norm({"a": np.full(4, 1.0), "b": (np.full(3, 2.0), None)}))  # sqrt(4 * 1 + 3 * 4)
    4.0
    """
    leaves = _leaves(grads)
    if not leaves:
        raise ValueError("grads holds no arrays")
    xp, _, _ = namespace_of(**{f"grads leaf {k}": leaf for k, leaf in enumerate(leaves)})
    total = None
    for leaf in leaves:
        square = xp.sum(leaf * leaf)
        total = square if total is None else total + square
    return xp.sqrt(total)


def _clip_scale(grads: Any, clip_norm: Optional[float]) -> Optional[Array]:
    """``min(1, clip_norm / ||grads||)`` as a 0-d array, or ``None`` when not clipping."""
    if clip_norm is None or not _leaves(grads):
        return None
    norm = global_norm(grads)
    xp, _, _ = namespace_of(norm=norm)
    return clip_norm / xp.clip(norm + 1e-6, min=clip_norm)


def _check_hyper(
    name: str, value: Any, low: float = 0.0, *, strict: bool = False, high: Optional[float] = None
) -> float:
    """A finite real hyper-parameter (Python or NumPy scalar, not a bool) in range, as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number (a Python or NumPy real), got {value!r}")
    too_low = value <= low if strict else value < low
    if too_low or (high is not None and value >= high):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(
            f"{name} must be {bound}" + (f" and < {high}" if high is not None else "") + f", got {value!r}"
        )
    return float(value)


def _check_clip(clip_norm: Any) -> Optional[float]:
    return None if clip_norm is None else _check_hyper("clip_norm", clip_norm, strict=True)


# ----------------------------------------------------------------------------------------------
# SGD


@dataclasses.dataclass(frozen=True)
class SGDState:
    """``step``: updates done so far (a Python int); ``momentum``: the momentum buffers (or ``None``)."""

    step: int
    momentum: Any


class SGD:
    """Stochastic gradient descent with momentum (PyTorch's ``torch.optim.SGD``, dampening 0), functional.

    ``buf = momentum * buf + g`` (``buf = g`` on the first step), ``p -= lr * buf`` (``g + momentum * buf`` with
    ``nesterov=True``); ``weight_decay`` adds ``weight_decay * p`` to the gradient; ``clip_norm`` first scales all
    gradients together so their global norm is at most it (``torch.nn.utils.clip_grad_norm_``). Nothing is
    modified in place: :meth:`update` returns new params and a new state.

    Parameters
    ----------
    lr : float
        The learning rate, > 0.
    momentum : float, optional
        Momentum factor, >= 0. Default 0 (plain SGD).
    weight_decay : float, optional
        L2 penalty, >= 0. Default 0.
    clip_norm : float or None, optional
        Clip the gradients' global norm to this (> 0) before the step; ``None`` (default): no clipping.
    nesterov : bool, optional
        Nesterov momentum (needs ``momentum > 0``). Default ``False``.

    Raises
    ------
    TypeError
        A hyperparameter is not a finite real number (Python or NumPy scalars), or ``nesterov`` is not a bool.
    ValueError
        A hyperparameter is out of range, or ``nesterov=True`` without momentum.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> x = np.ones((5, 2, 3), dtype="float32")
    >>> (y, h_n), pullback = ar.vjp(ar.rnn, x, params)
    >>> _, grads = pullback((np.ones_like(y), None))  # gradients for (x, params)
    >>> opt = ar.optim.SGD(lr=0.1, momentum=0.9)
    >>> opt_state = opt.init(params)
    >>> new_params, opt_state = opt.update(params, grads, opt_state)
    >>> opt_state.step, new_params.weight_ih.shape
    (1, (4, 3))
    """

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        clip_norm: Optional[float] = None,
        nesterov: bool = False,
    ) -> None:
        self.lr = _check_hyper("lr", lr, strict=True)
        self.momentum = _check_hyper("momentum", momentum)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)
        self.clip_norm = _check_clip(clip_norm)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = nesterov

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
            f"clip_norm={self.clip_norm}, nesterov={self.nesterov})"
        )

    def init(self, params: Any) -> SGDState:
        """The optimizer state for ``params``: step 0 and zero momentum buffers (none without momentum).

        Parameters
        ----------
        params : params object, model params, or tuples, lists and dicts of them
            Any structure of arrays (``None`` leaves stay ``None``), each on its own backend and device.

        Returns
        -------
        SGDState
            ``step`` (a Python int) and ``momentum`` (buffers in the structure of ``params``, or ``None``).

        Examples
        --------
        >>> import arrayrnn as ar
        >>> model = ar.LSTM(3, 4, num_layers=2, seed=0)
        >>> opt_state = ar.optim.SGD(lr=0.1, momentum=0.9).init(model.params)
        >>> opt_state.step, opt_state.momentum[1][0].weight_hh.shape
        (0, (16, 4))
        """
        buffers = _map(_zeros_like, 1, params)[0] if self.momentum else None
        return SGDState(step=0, momentum=buffers)

    def update(self, params: Any, grads: Any, state: SGDState) -> tuple[Any, SGDState]:
        """One SGD step: new params and a new optimizer state (nothing is modified in place).

        Parameters
        ----------
        params : params object, model params, or tuples, lists and dicts of them
            The current params.
        grads : same structure as ``params``
            Their gradients (what ``ar.vjp``'s pullback returns); a ``None`` gradient, at a leaf or for a whole
            sub-structure, leaves those params and their buffers unchanged.
        state : SGDState
            From :meth:`init` or the previous :meth:`update`.

        Returns
        -------
        params : same structure as ``params``
            The updated params, each array on its own backend and device.
        state : SGDState
            The state for the next step.

        Raises
        ------
        TypeError
            ``state`` does not come from this optimizer's :meth:`init`; a gradient is not an array, or its dtype
            differs from its param's (nothing is cast silently).
        ValueError
            ``grads`` (or ``state``'s buffers) does not have the structure of ``params``, a gradient's shape differs
            from its param's (no broadcasting), or a gradient is given for a ``None`` param; the message gives the
            path, e.g. ``grads['gru'][0][0].weight_ih has shape (1, 3) but the params leaf has (12, 3)``.
        BackendMismatchError
            A gradient lives on another backend or device than its param.

        Examples
        --------
        >>> import numpy as np
        >>> import arrayrnn as ar
        >>> params = {"w": np.ones(3)}
        >>> opt = ar.optim.SGD(lr=0.5)
        >>> params, opt_state = opt.update(params, {"w": np.ones(3)}, opt.init(params))
        >>> params["w"], opt_state.step
        (array([0.5, 0.5, 0.5]), 1)
        """
        if not isinstance(state, SGDState):
            raise TypeError(f"state must come from this optimizer's init(), got {type(state).__name__}")
        _check_like(params, grads=grads, **{"state.momentum": state.momentum})
        scale = _clip_scale(grads, self.clip_norm)
        first = state.step == 0

        def leaf(param: Any, grad: Any, buffer: Any) -> tuple[Any, Any]:
            if param is None or grad is None:
                return param, buffer
            if scale is not None:
                grad = grad * scale
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            if self.momentum:
                buffer = grad if first else self.momentum * buffer + grad
                direction = grad + self.momentum * buffer if self.nesterov else buffer
            else:
                direction = grad
            return param - self.lr * direction, buffer

        new_params, buffers = _map(leaf, 2, params, grads, state.momentum)
        return new_params, SGDState(step=state.step + 1, momentum=buffers if self.momentum else None)


# ----------------------------------------------------------------------------------------------
# Adam


@dataclasses.dataclass(frozen=True)
class AdamState:
    """``step`` (a Python int), first and second moment estimates in the structure of the params."""

    step: int
    exp_avg: Any
    exp_avg_sq: Any


class Adam:
    """Adam (PyTorch's ``torch.optim.Adam``; ``decoupled_weight_decay=True`` is AdamW), functional.

    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2, as torch's Adam), or with
    ``decoupled_weight_decay=True`` shrinks ``p`` by ``lr * weight_decay`` directly. ``clip_norm`` first scales
    all gradients together so their global norm is at most it (``torch.nn.utils.clip_grad_norm_``). Nothing is
    modified in place: :meth:`update` returns new params and a new state.

    Parameters
    ----------
    lr : float, optional
        The learning rate, > 0. Default ``1e-3``.
    betas : (float, float), optional
        Decay rates of the first and second moment estimates, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
    eps : float, optional
        Added to the denominator, >= 0. Default ``1e-8``.
    weight_decay : float, optional
        Weight decay, >= 0. Default 0.
    clip_norm : float or None, optional
        Clip the gradients' global norm to this (> 0) before the step; ``None`` (default): no clipping.
    decoupled_weight_decay : bool, optional
        AdamW's decoupled decay. Default ``False``.

    Raises
    ------
    TypeError
        A hyperparameter is not a finite real number (Python or NumPy scalars), ``betas`` is not a pair, or a
        flag is not a bool.
    ValueError
        A hyperparameter is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> x = np.ones((5, 2, 3), dtype="float32")
    >>> (y, h_n), pullback = ar.vjp(ar.rnn, x, params)
    >>> _, grads = pullback((np.ones_like(y), None))  # gradients for (x, params)
    >>> opt = ar.optim.Adam(lr=1e-2, clip_norm=1.0)
    >>> opt_state = opt.init(params)
    >>> params, opt_state = opt.update(params, grads, opt_state)
    >>> opt_state.step, params.bias_hh.shape
    (1, (4,))
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: Optional[float] = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        self.lr = _check_hyper("lr", lr, strict=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_hyper("betas[0]", betas[0], high=1.0), _check_hyper("betas[1]", betas[1], high=1.0))
        self.eps = _check_hyper("eps", eps)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)
        self.clip_norm = _check_clip(clip_norm)
        if not isinstance(decoupled_weight_decay, bool):
            raise TypeError(f"decoupled_weight_decay must be True or False, got {decoupled_weight_decay!r}")
        self.decoupled_weight_decay = decoupled_weight_decay

    def __repr__(self) -> str:
        return (
            f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, "
            f"clip_norm={self.clip_norm}, decoupled_weight_decay={self.decoupled_weight_decay})"
        )

    def init(self, params: Any) -> AdamState:
        """The optimizer state for ``params``: step 0 and zero moment estimates.

        Parameters
        ----------
        params : params object, model params, or tuples, lists and dicts of them
            Any structure of arrays (``None`` leaves stay ``None``), each on its own backend and device.

        Returns
        -------
        AdamState
            ``step`` (a Python int), ``exp_avg`` and ``exp_avg_sq`` (zeros in the structure of ``params``).

        Examples
        --------
        >>> import arrayrnn as ar
        >>> opt_state = ar.optim.Adam().init(ar.init_gru(3, 4, seed=0))
        >>> opt_state.step, opt_state.exp_avg.weight_ih.shape, float(opt_state.exp_avg_sq.bias_ih.sum())
        (0, (12, 3), 0.0)
        """
        return AdamState(step=0, exp_avg=_map(_zeros_like, 1, params)[0], exp_avg_sq=_map(_zeros_like, 1, params)[0])

    def update(self, params: Any, grads: Any, state: AdamState) -> tuple[Any, AdamState]:
        """One Adam step: new params and a new optimizer state (nothing is modified in place).

        Parameters
        ----------
        params : params object, model params, or tuples, lists and dicts of them
            The current params.
        grads : same structure as ``params``
            Their gradients (what ``ar.vjp``'s pullback returns); a ``None`` gradient, at a leaf or for a whole
            sub-structure, leaves those params and their moments unchanged.
        state : AdamState
            From :meth:`init` or the previous :meth:`update`.

        Returns
        -------
        params : same structure as ``params``
            The updated params, each array on its own backend and device.
        state : AdamState
            The state for the next step.

        Raises
        ------
        TypeError
            ``state`` does not come from this optimizer's :meth:`init`; a gradient is not an array, or its dtype
            differs from its param's (nothing is cast silently).
        ValueError
            ``grads`` (or ``state``'s buffers) does not have the structure of ``params``, a gradient's shape differs
            from its param's (no broadcasting), or a gradient is given for a ``None`` param; the message gives the
            path, e.g. ``grads['gru'][0][0].weight_ih has shape (1, 3) but the params leaf has (12, 3)``.
        BackendMismatchError
            A gradient lives on another backend or device than its param.

        Examples
        --------
        >>> import numpy as np
        >>> import arrayrnn as ar
        >>> params = {"w": np.ones(3), "frozen": np.ones(2)}
        >>> opt = ar.optim.Adam(lr=0.1)
        >>> params, opt_state = opt.update(params, {"w": np.ones(3), "frozen": None}, opt.init(params))
        >>> params["w"].round(6), params["frozen"]  # the first step moves each entry by lr
        (array([0.9, 0.9, 0.9]), array([1., 1.]))
        """
        if not isinstance(state, AdamState):
            raise TypeError(f"state must come from this optimizer's init(), got {type(state).__name__}")
        _check_like(params, grads=grads, **{"state.exp_avg": state.exp_avg, "state.exp_avg_sq": state.exp_avg_sq})
        scale = _clip_scale(grads, self.clip_norm)
        step = state.step + 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1.0 - beta1**step)
        correction2_sqrt = math.sqrt(1.0 - beta2**step)

        def leaf(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any) -> tuple[Any, Any, Any]:
            if param is None or grad is None:
                return param, exp_avg, exp_avg_sq
            xp, _, _ = namespace_of(param=param)
            if scale is not None:
                grad = grad * scale
            if self.weight_decay and not self.decoupled_weight_decay:
                grad = grad + self.weight_decay * param
            if self.weight_decay and self.decoupled_weight_decay:
                param = param * (1.0 - self.lr * self.weight_decay)
            exp_avg = beta1 * exp_avg + (1.0 - beta1) * grad
            exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * (grad * grad)
            denominator = xp.sqrt(exp_avg_sq) / correction2_sqrt + self.eps
            return param - step_size * (exp_avg / denominator), exp_avg, exp_avg_sq

        new_params, exp_avg, exp_avg_sq = _map(leaf, 3, params, grads, state.exp_avg, state.exp_avg_sq)
        return new_params, AdamState(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
