"""The dropout family (``dropout``, ``recurrent_dropout``, ``zoneout``, ``train``, ``seed``), checked at the boundary.

Masks are drawn on the host from ``numpy.random.default_rng(seed)`` as float64 uniforms ``u`` compared against ``p``
and moved to the inputs' backend and device explicitly, so one seed gives the same masks on every backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from ._core.regularize import ZONED, Regularization
from ._validate import dtype_name
from .backend import namespace_of, to_backend

Array = Any

#: the keyword arguments of the sequence functions this module handles
SEQUENCE_KEYWORDS = ("recurrent_dropout", "zoneout", "train", "seed")


@dataclasses.dataclass(frozen=True)
class Request:
    """A sequence call's checked dropout-family arguments; ``rng`` is the generator the masks are drawn from."""

    recurrent_dropout: float
    zoneout: float
    train: bool
    rng: Optional[np.random.Generator]

    def changes(self) -> list[str]:
        """As :meth:`Regularization.changes` for what this request will draw."""
        return for_explain({"regularize": self})["regularize"].changes()


def check_rate(name: str, p: Any) -> float:
    """``p`` must be a real number in ``[0, 1)``; returned as a float."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {p!r}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the probability of dropping a unit), got {p!r}")
    return float(p)


def check_train(train: Any, seed: Any, needed: bool) -> Optional[np.random.Generator]:
    """``train`` must be a bool; in training with a rate above 0 (``needed``) ``seed`` must be an int or a
    ``numpy.random.Generator``. Returns the generator (``None`` where nothing is drawn)."""
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}")
    if seed is not None and not isinstance(seed, (int, np.integer, np.random.Generator)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, a numpy.random.Generator or None, got {seed!r}")
    if not (train and needed):
        return None
    if seed is None:
        raise ValueError(
            "train=True draws dropout masks and needs seed= (an int or a numpy.random.Generator): arrayrnn has no "
            "global random state, so that one seed gives the same masks on every backend"
        )
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))


def sequence_request(recurrent_dropout: Any, zoneout: Any, train: Any, seed: Any) -> Optional[Request]:
    """The checked request of a sequence call; ``None`` when nothing changes (inference without zoneout)."""
    recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
    zoneout = check_rate("zoneout", zoneout)
    rng = check_train(train, seed, needed=bool(recurrent_dropout or zoneout))
    if not zoneout and not (train and recurrent_dropout):
        return None
    return Request(recurrent_dropout, zoneout, train, rng)


def _on_backend(uniform_mask: np.ndarray, like: Array, backend: str, device: Any, xp: Any) -> Array:
    """A float64 host array moved to ``like``'s backend and device in ``like``'s dtype (cast on the host)."""
    try:
        host = uniform_mask.astype(np.dtype(dtype_name(like.dtype).rsplit(".", 1)[-1]))  # e.g. "torch.float32"
    except TypeError:  # a dtype NumPy lacks (e.g. bfloat16): cast on the device
        return xp.astype(to_backend(uniform_mask.astype(np.float32), backend, device), like.dtype)
    return to_backend(host, backend, device)


def draw_regularization(kind: str, request: Request, xp: Any, backend: str, device: Any, x: Array,
                        state: tuple[Array, ...]) -> Regularization:  # fmt: skip
    """The masks of one layer and direction for time-major ``x (T, B, I)`` and the state tuple, in this order:

    1. training with ``recurrent_dropout = p > 0``: ``u (B, H_out)``; kept (``u >= p``) units are ``1/(1-p)``;
    2. training with ``zoneout = p > 0``: ``u (T, B, H_out)`` for ``h`` and then, for the LSTM, ``u (T, B, H)`` for
       ``c``; a unit keeps its previous value where ``u < p``.
    """
    steps, batch = x.shape[0], x.shape[1]
    rng = request.rng
    recurrent = None
    if request.train and request.recurrent_dropout:
        p = request.recurrent_dropout
        keep = rng.random((batch, state[0].shape[-1])) >= p
        recurrent = _on_backend(keep / (1.0 - p), x, backend, device, xp)
    zone_masks = None
    if request.train and request.zoneout:
        p = request.zoneout
        zone_masks = tuple(
            _on_backend(
                (rng.random((steps, batch, state[k].shape[-1])) < p).astype(np.float64), x, backend, device, xp
            )  # fmt: skip
            for k in range(ZONED[kind])
        )
    return Regularization(recurrent, request.zoneout, zone_masks, request.train)


def add_request(options: dict[str, Any], recurrent_dropout: Any, zoneout: Any, train: Any, seed: Any) -> None:
    """Check a sequence call's dropout-family arguments; when they change anything, put the request in
    ``options["regularize"]`` (a default call's options stay as they were)."""
    request = sequence_request(recurrent_dropout, zoneout, train, seed)
    if request is not None:
        options["regularize"] = request


def refuse_dask_training(options: dict[str, Any]) -> None:
    """Training masks are drawn for a whole batch on the host; a dask call in training is refused."""
    request = options.get("regularize")
    if isinstance(request, Request) and request.rng is not None:
        raise ValueError(
            "train=True with recurrent_dropout or zoneout is not supported on dask arrays (the masks are drawn for "
            "the whole batch); compute x first (x.compute()) or run with train=False"
        )


def resolve(kind: str, options: dict[str, Any], prepared: Any) -> dict[str, Any]:
    """``options`` with a :class:`Request` replaced by the drawn :class:`Regularization` for the prepared call."""
    request = options.get("regularize")
    if not isinstance(request, Request):
        return options
    drawn = draw_regularization(kind, request, prepared.xp, prepared.backend, prepared.device, prepared.x,
                                prepared.state)  # fmt: skip
    return {**options, "regularize": drawn}


def sequence_arguments(options: dict[str, Any], arguments: dict[str, Any]) -> None:
    """:func:`add_request` from a bound call's ``arguments`` (``ar.vjp``, ``ar.explain``)."""
    add_request(options, *(arguments[name] for name in SEQUENCE_KEYWORDS))


def for_explain(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a :class:`Request` replaced by what it would draw, without drawing (``ar.explain``)."""
    request = options.get("regularize")
    if not isinstance(request, Request):
        return options
    drawn = "not drawn"  # stands in for a mask: only its presence is read
    regularization = Regularization(
        drawn if request.train and request.recurrent_dropout else None,
        request.zoneout,
        (drawn,) if request.train and request.zoneout else None,
        request.train,
    )
    return {**options, "regularize": regularization}


#: the models' constructor options of the dropout family, with their defaults (saved by ``ar.save``)
MODEL_RATES: dict[str, float] = {"dropout": 0.0, "recurrent_dropout": 0.0, "zoneout": 0.0}


def check_model_rates(options: dict[str, Any]) -> None:
    """The models' ``dropout``, ``recurrent_dropout`` and ``zoneout`` (where present), normalised to floats in place."""
    for name in MODEL_RATES:
        if name in options:
            options[name] = check_rate(name, options[name])


def stack_rng(options: dict[str, Any], train: Any, seed: Any) -> Optional[np.random.Generator]:
    """The one generator a model call draws every mask from (``None`` where nothing is drawn)."""
    needed = any(float(options.get(name, 0.0)) for name in MODEL_RATES)
    return check_train(train, seed, needed)


def refuse_dask_stack_training(rng: Optional[np.random.Generator]) -> None:
    if rng is not None:
        raise ValueError(
            "train=True with dropout, recurrent_dropout or zoneout is not supported on dask arrays (the masks are "
            "drawn for the whole batch); compute x first (x.compute()) or run with train=False"
        )


def layer_dropout_mask(rng: np.random.Generator, p: float, layer_output: Array, batch_first: bool) -> Array:
    """The mask of a layer's output (caller's layout: ``(T, B, F)``, ``(B, T, F)`` with ``batch_first``, unbatched
    ``(T, F)``), drawn time-major ``u (T, B, F)`` (``B = 1`` unbatched): ``1/(1-p)`` where ``u >= p``, else 0."""
    xp, backend, device = namespace_of(layer_output=layer_output)
    shape = tuple(layer_output.shape)
    if len(shape) == 2:
        time_major = (shape[0], 1, shape[1])
    else:
        time_major = (shape[1], shape[0], shape[2]) if batch_first else shape
    keep = rng.random(time_major) >= p
    host = keep / (1.0 - p)
    if len(shape) == 2:
        host = host[:, 0, :]
    elif batch_first:
        host = np.swapaxes(host, 0, 1)
    return _on_backend(np.ascontiguousarray(host), layer_output, backend, device, xp)


def model_rates(dropout: Any, recurrent_dropout: Any, zoneout: Any) -> dict[str, float]:
    """A model constructor's rates, checked."""
    given = {"dropout": dropout, "recurrent_dropout": recurrent_dropout, "zoneout": zoneout}
    return {name: check_rate(name, value) for name, value in given.items()}
