"""The benchmark's timed modes: what a mode gives the harness (:class:`Runner`) and how it registers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass
class Runner:
    """One timed library: ``call()`` runs the work once and returns its output (or ``None``)."""

    name: str
    call: Callable[[], Any]
    #: turns ``call()``'s result into a NumPy ``(T, B, H)`` array for the equality check; None: not checked
    to_numpy: Optional[Callable[[Any], np.ndarray]] = None
    #: the threads it runs with by its own count (e.g. ``{"torch": torch.get_num_threads()}``); None: pools only
    threads: Optional[Callable[[], dict[str, Any]]] = None


#: mode name -> factory(kind, params, x, threads, backend) -> (runners, skipped {library: reason})
MODES: dict[str, Callable[..., tuple[list[Runner], dict[str, str]]]] = {}


def register_mode(name: str, factory: Callable[..., tuple[list[Runner], dict[str, str]]]) -> None:
    """Add a timed mode (e.g. ``"forward+backward"``, registered by the gradients module).

    ``factory(kind, params, x, threads, backend)`` gets NumPy float32 params and ``x (T, B, I)`` and
    returns the runners to time (the first one named ``"arrayrnn"``) and the peers it skipped, with why.
    """
    MODES[name] = factory


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
