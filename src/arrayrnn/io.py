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
    """Write ``model`` (an ``ar.RNN``, ``ar.LSTM`` or ``ar.GRU``) to ``path`` as a ``.npz`` file, without pickle.

    The file holds the model's :meth:`~arrayrnn.LSTM.state_dict` (torch's names, copied to NumPy arrays on the
    host, dtype kept) and one extra entry, ``__arrayrnn__``: a string array holding a JSON object with the model
    class, its full configuration and the format version. :func:`load` reads it back.

    Parameters
    ----------
    path : str, os.PathLike or file object
        Where to write. Like ``numpy.savez``, a string path without the ``.npz`` suffix gets it appended.
    model : RNN, LSTM or GRU
        The model to save (any backend).

    Returns
    -------
    None

    Raises
    ------
    TypeError
        ``model`` is not an arrayrnn model.
    OSError
        The file cannot be written.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import arrayrnn as ar
    >>> model = ar.LSTM(3, 4, num_layers=2, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> ar.save(path, model)
    >>> loaded = ar.load(path)
    >>> type(loaded).__name__, loaded.num_layers, loaded.hidden_size
    ('LSTM', 2, 4)
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
    """Read a model written by :func:`save`, onto ``backend`` and ``device``.

    The file is opened with ``numpy.load(..., allow_pickle=False)``, so loading can never run code; the model is
    rebuilt with :meth:`~arrayrnn.LSTM.from_state_dict` and checked against the configuration stored with it.

    Parameters
    ----------
    path : str, os.PathLike or file object
        The file; a string path without ``.npz`` also finds ``path + ".npz"`` (as :func:`save` names it).
    backend : str, optional
        Where to put the arrays; ``None`` (default): the current backend (:func:`get_backend`).
    device : optional
        The device on that backend; ``None``: the backend's default.

    Returns
    -------
    RNN, LSTM or GRU
        The model, of the class and configuration that was saved.

    Raises
    ------
    ValueError
        The file is not an arrayrnn model file, has another format version, names an unknown model class, or its
        arrays do not match its stored configuration.
    OSError
        The file cannot be read (``FileNotFoundError`` when it does not exist).
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> model = ar.GRU(3, 4, bidirectional=True, batch_first=True, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "gru")
    >>> ar.save(path, model)  # written as gru.npz
    >>> loaded = ar.load(path, backend="numpy")
    >>> loaded.bidirectional, loaded.batch_first, loaded.dtype
    (True, True, dtype('float32'))
    >>> bool(np.array_equal(loaded.state_dict()["weight_hh_l0_reverse"], model.state_dict()["weight_hh_l0_reverse"]))
    True
    """
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
