"""Save and load models as ``.npz`` files: torch-named arrays plus the configuration, no pickle."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import numpy as np

from .backend import to_numpy

__all__ = ["load", "save"]

_CONFIG_KEY = "__arrayrnn__"
_FORMAT = 1

PathLike = Union[str, "os.PathLike[str]"]


def save(path: Any, model: Any) -> None:
    """Write ``model`` (an ``ar.RNN``, ``ar.LSTM`` or ``ar.GRU``) to ``path`` (a ``.npz``; a file object works too).

    Like ``numpy.savez``, a string path without the ``.npz`` suffix gets it appended. The arrays
    are copied to the host (NumPy) to be written; the dtype is kept.
    """
    from ._version import __version__
    from .models import MODEL_CLASSES

    if getattr(model, "kind", None) not in MODEL_CLASSES or not isinstance(model, MODEL_CLASSES[model.kind]):
        raise TypeError(f"model must be an arrayrnn.RNN, LSTM or GRU, got {type(model).__name__}")
    header = {
        "format": _FORMAT,
        "class": type(model).__name__,
        "config": model.config(),
        "arrayrnn_version": __version__,
    }
    arrays = {name: to_numpy(value) for name, value in model.state_dict().items()}
    np.savez(path, **{_CONFIG_KEY: np.array(json.dumps(header))}, **arrays)


def load(path: Any, *, backend: Optional[str] = None, device: Any = None) -> Any:
    """Read a model written by :func:`save`, onto ``backend`` (default: the current one) and ``device``."""
    from .models import MODEL_CLASSES

    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path) and os.path.exists(f"{os.fspath(path)}.npz"):
        path = f"{os.fspath(path)}.npz"  # numpy.savez appended the suffix
    with np.load(path, allow_pickle=False) as data:
        if _CONFIG_KEY not in data.files:
            raise ValueError(f"{path} is not an arrayrnn model file (no {_CONFIG_KEY} entry)")
        header = json.loads(str(data[_CONFIG_KEY]))
        arrays = {name: data[name] for name in data.files if name != _CONFIG_KEY}
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path} has model file format {header.get('format')!r}; this arrayrnn reads format {_FORMAT}")
    classes = {cls.__name__: cls for cls in MODEL_CLASSES.values()}
    cls = classes.get(header.get("class"))
    if cls is None:
        raise ValueError(f"{path} holds an unknown model class {header.get('class')!r}")
    config = dict(header["config"])
    options = {name: config[name] for name in cls._option_defaults}
    model = cls.from_state_dict(arrays, backend=backend, device=device, batch_first=config["batch_first"], **options)
    stored = {key: value for key, value in config.items()}
    if model.config() != stored:
        raise ValueError(f"{path} is inconsistent: its arrays give {model.config()} but its header says {stored}")
    return model
