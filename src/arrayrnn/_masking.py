"""The ``mask=`` and ``padding=`` arguments of the sequence functions and models, checked once at the boundary.

:func:`prepare_masking` returns the options the core reads (``_core/masking.py``): ``{}`` for a default call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core.masking import PADDINGS
from ._validate import Prepared, check_plain, dtype_name, shape_text
from .backend import namespace_of

Array = Any


def check_padding(padding: Any) -> None:
    """``padding`` must be ``"zeros"`` or ``"carry"``."""
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(
            f"padding must be 'zeros' (a masked step writes 0 to y) or 'carry' (it writes the carried h), "
            f"got {padding!r}"
        )


def masking_options(mask: Any, padding: Any) -> dict[str, Any]:
    """The core's options for an already prepared (time-major) ``mask`` and a checked ``padding``."""
    options: dict[str, Any] = {}
    if mask is not None:
        options["mask"] = mask
    if padding != PADDINGS[0]:
        options["padding"] = padding
    return options


def check_not_both(mask: Any, lengths: Any) -> None:
    if mask is not None and lengths is not None:
        raise ValueError(
            "give lengths or mask, not both: lengths=n keeps the first n steps of a sequence, a mask marks any steps "
            "(lengths as a mask: mask[t, b] = t < lengths[b])"
        )


def prepare_masking(prepared: Prepared, mask: Any, padding: Any, lengths: Any, batch_first: bool) -> dict[str, Any]:
    """Check ``mask`` against the prepared call (its backend, ``T`` and ``B``) and ``padding``; returns the core's
    options (``{}`` for a default call): the mask as a time-major ``(T, B)`` boolean array."""
    check_padding(padding)
    if mask is None:
        return masking_options(None, padding)
    check_not_both(mask, lengths)
    xp = prepared.xp
    steps, batch = prepared.x.shape[0], prepared.x.shape[1]
    if isinstance(mask, (list, tuple)):
        values = np.asarray(mask)
        if values.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array or nested lists of bools, got a list of {values.dtype}")
        mask = xp.asarray(values.tolist(), dtype=xp.bool, device=prepared.device)
    else:
        check_plain("mask", mask)
        namespace_of(x=prepared.x, mask=mask)  # same backend and device as x, or a clear error
        if not xp.isdtype(mask.dtype, "bool"):
            raise TypeError(
                f"mask must be a boolean array (True: the step runs), got dtype {dtype_name(mask.dtype)}; "
                "convert it explicitly, e.g. mask != 0"
            )
    if prepared.unbatched:
        expected, layout = (steps,), "(T,) for unbatched x"
    elif batch_first:
        expected, layout = (batch, steps), "(B, T) with batch_first"
    else:
        expected, layout = (steps, batch), "(T, B)"
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must have shape {layout} = {shape_text(expected)}, got {shape_text(mask.shape)}")
    if prepared.unbatched:
        mask = xp.reshape(mask, (steps, 1))
    elif batch_first:
        mask = xp.permute_dims(mask, (1, 0))
    return masking_options(mask, padding)
