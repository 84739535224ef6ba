"""Everything about backends: names <-> namespaces, selection, availability, transfers, errors.

No GPU library (and nothing heavy) is imported here at import time: each backend is imported the
first time it is asked for, so ``import arrayrnn`` needs NumPy alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "BACKEND_NAMES",
    "BackendMismatchError",
    "BackendUnavailableError",
    "available_backends",
    "backend_name",
    "backend_status",
    "get_backend",
    "namespace",
    "namespace_of",
    "set_backend",
    "to_backend",
    "to_numpy",
    "use_backend",
]

#: every backend name the selector knows, in the order ``available_backends`` reports them
BACKEND_NAMES = ("numpy", "cupy", "array_api_strict", "torch", "jax", "dask")

_INSTALL_HINTS = {
    # the extras as they install from a checkout (pip install ".[extra]"); torch pinned: unpinned, pip pulls a
    # multi-GB CUDA build
    "cupy": 'pip install ".[cuda12]"  (or ".[cuda13]" for CUDA 13)',
    "array_api_strict": 'pip install ".[strict]"',
    "torch": 'pip install "torch==2.13.0"',
    "jax": 'pip install ".[jax]"',
    "dask": 'pip install ".[dask]"',
}


class BackendMismatchError(TypeError):
    """Arrays from two backends (or two devices) were passed to one call; a ``TypeError``.

    Functions follow their inputs and never copy between host and device behind the caller's back; this error
    names the arguments and where each lives. Move them together with :func:`to_backend`.

    Parameters
    ----------
    message : str
        What was mixed, naming the arguments, their backends and devices.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> issubclass(ar.BackendMismatchError, TypeError)
    True
    >>> import torch  # doctest: +SKIP
    >>> ar.rnn(torch.zeros(5, 2, 3), ar.init_rnn(3, 4, backend="numpy"))  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    arrayrnn.BackendMismatchError: arguments live on different backends or devices: x on torch (device cpu), ...
    """


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that is unknown, not installed, or has no usable device; a ``RuntimeError``.

    The message says why (not installed, no CUDA device, ...) and how to get it (e.g.
    ``pip install ".[cuda12]"``).

    Parameters
    ----------
    message : str
        Why the backend is unavailable, and the install hint.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> issubclass(ar.BackendUnavailableError, RuntimeError)
    True
    >>> ar.set_backend("tpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    arrayrnn.BackendUnavailableError: unknown backend 'tpu'; expected one of numpy, cupy, ... or 'auto'
    """


# --------------------------------------------------------------------------------------------
# availability


_CUPY_NEEDS = "it needs an NVIDIA GPU with a working driver (check nvidia-smi)"


def _probe_cupy() -> ModuleType:
    """CuPy, if it imports and sees a CUDA device; ImportError only when it is not installed at all."""
    try:
        import cupy
    except ImportError as error:
        import importlib.util

        try:
            installed = importlib.util.find_spec("cupy") is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            raise
        raise BackendUnavailableError(f"CuPy is installed but fails to import ({error})") from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken: cupy imports but cannot run
        raise BackendUnavailableError(
            f"CuPy is installed but no usable GPU/driver was found ({error}); {_CUPY_NEEDS}"
        ) from error
    if count == 0:
        raise BackendUnavailableError(f"CuPy is installed but no CUDA device is visible; {_CUPY_NEEDS}")
    return cupy


#: namespaces already imported (not CuPy's, whose probe runs on every lookup)
_NAMESPACES: dict[str, ModuleType] = {}


def _import_namespace(name: str) -> ModuleType:
    """The array API namespace of backend ``name``; raises ImportError/BackendUnavailableError."""
    known = _NAMESPACES.get(name)
    if known is not None:
        return known
    if name == "numpy":
        import array_api_compat.numpy as xp
    elif name == "cupy":
        _probe_cupy()
        import array_api_compat.cupy as xp
    elif name == "array_api_strict":
        import array_api_strict as xp
    elif name == "torch":
        import array_api_compat.torch as xp
    elif name == "jax":
        import jax.numpy as xp

        _register_jax_pytrees()
    elif name == "dask":
        import array_api_compat.dask.array as xp
    else:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)} or 'auto'")
    if name != "cupy":
        _NAMESPACES[name] = xp
    return xp


_status_cache: dict[str, str | None] = {}


def backend_status(name: str) -> str | None:
    """``None`` when backend ``name`` is usable, else the reason it is not (cached)."""
    if name not in _status_cache:
        try:
            _import_namespace(name)
            _status_cache[name] = None
        except ImportError as error:
            _status_cache[name] = f"not installed ({error}); install with: {_INSTALL_HINTS.get(name, '')}"
        except BackendUnavailableError as error:
            # installed but unusable (CuPy without a GPU/driver): installing it again would not help
            hint = "" if name == "cupy" else f"; install with: {_INSTALL_HINTS.get(name, '')}"
            _status_cache[name] = f"{error}{hint}"
    return _status_cache[name]


def available_backends() -> list[str]:
    """The names of the backends that import here and have a usable device, ``"numpy"`` first.

    Each backend is imported (once, the result cached) to find out; CuPy also needs a visible CUDA device.
    The order is ``numpy, cupy, array_api_strict, torch, jax, dask``.

    Returns
    -------
    list of str
        The usable backend names.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> backends = ar.available_backends()
    >>> backends[0]
    'numpy'
    >>> set(backends) <= {"numpy", "cupy", "array_api_strict", "torch", "jax", "dask"}
    True
    """
    return [name for name in BACKEND_NAMES if backend_status(name) is None]


def _resolve(name: str) -> str:
    """Map ``"auto"`` to a concrete name and check the backend is usable."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string name, got {type(name).__name__}")
    if name == "auto":
        return "cupy" if backend_status("cupy") is None else "numpy"
    if name not in BACKEND_NAMES:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)} or 'auto'")
    reason = backend_status(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return name


def namespace(name: str | None = None) -> ModuleType:
    """The array API namespace of backend ``name`` (default: the current backend)."""
    return _import_namespace(_resolve(name if name is not None else get_backend()))


# --------------------------------------------------------------------------------------------
# selection: innermost use_backend -> set_backend -> $ARRAYRNN_BACKEND -> "numpy"

_context_backend: ContextVar[str | None] = ContextVar("arrayrnn_backend", default=None)
_global_backend: str | None = None


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend for functions that create arrays.

    Functions that take arrays follow their inputs whatever is set; this default is for those that create
    arrays (``init_*``, models built without arrays). The order of precedence: the innermost
    :func:`use_backend` block, then :func:`set_backend`, then ``$ARRAYRNN_BACKEND``, then ``"numpy"``.

    Parameters
    ----------
    name : str or None
        A backend name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ``"torch"``, ``"jax"``, ``"dask"``) or
        ``"auto"`` (``"cupy"`` when usable, else ``"numpy"``); ``None`` clears the setting.

    Returns
    -------
    None

    Raises
    ------
    BackendUnavailableError
        ``name`` is unknown, not installed or has no usable device.
    TypeError
        ``name`` is not a string or ``None``.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> ar.set_backend("numpy")
    >>> ar.init_rnn(3, 4).backend
    'numpy'
    >>> ar.set_backend(None)  # back to $ARRAYRNN_BACKEND, else "numpy"
    """
    global _global_backend
    _global_backend = None if name is None else _resolve(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Within the ``with`` block, functions that create arrays use backend ``name``.

    The setting is a ``ContextVar``: it applies to this thread (or asyncio task) only and takes precedence over
    :func:`set_backend` and ``$ARRAYRNN_BACKEND``. Blocks nest.

    Parameters
    ----------
    name : str
        A backend name, or ``"auto"`` (``"cupy"`` when usable, else ``"numpy"``).

    Returns
    -------
    context manager
        Yields the resolved backend name.

    Raises
    ------
    BackendUnavailableError
        ``name`` is unknown, not installed or has no usable device (raised on entering the block).
    TypeError
        ``name`` is not a string.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> with ar.use_backend("numpy") as name:
    ...     params = ar.init_gru(3, 4, seed=0)
    >>> name, params.backend
    ('numpy', 'numpy')
    >>> with ar.use_backend("cupy"):  # doctest: +SKIP
    ...     model = ar.LSTM(3, 4)  # params on the GPU
    """
    token = _context_backend.set(_resolve(name))
    try:
        yield _context_backend.get()  # type: ignore[misc]
    finally:
        _context_backend.reset(token)


def get_backend() -> str:
    """The backend that functions creating arrays use now.

    The innermost :func:`use_backend` block, else :func:`set_backend`'s setting, else ``$ARRAYRNN_BACKEND``,
    else ``"numpy"``; ``"auto"`` resolves to ``"cupy"`` when usable, else ``"numpy"``.

    Returns
    -------
    str
        A concrete backend name (never ``"auto"``).

    Raises
    ------
    BackendUnavailableError
        The selected backend is unknown or not usable here (e.g. ``$ARRAYRNN_BACKEND=cupy`` without a GPU).

    Examples
    --------
    >>> import arrayrnn as ar
    >>> with ar.use_backend("numpy"):
    ...     print(ar.get_backend())
    numpy
    """
    name = _context_backend.get() or _global_backend
    if name is None and os.environ.get("ARRAYRNN_BACKEND"):
        value = os.environ["ARRAYRNN_BACKEND"]
        try:
            return _resolve(value)
        except BackendUnavailableError as error:
            raise BackendUnavailableError(f"environment variable ARRAYRNN_BACKEND={value!r}: {error}") from None
    return _resolve(name or "numpy")


# --------------------------------------------------------------------------------------------
# from arrays to backends


#: array type -> backend name, filled as types are met (the name depends on the type alone); saves the chain of
#: ``array_api_compat.is_*_array`` checks on every argument of every call
_BACKEND_BY_TYPE: dict[type, str] = {np.ndarray: "numpy"}


def backend_name(array: Any) -> str:
    """The backend name of one array (raises TypeError for non-arrays)."""
    name = _BACKEND_BY_TYPE.get(type(array))
    if name is None:
        name = _classify(array)
        _BACKEND_BY_TYPE[type(array)] = name
    return name


def _classify(array: Any) -> str:
    import array_api_compat as compat

    if isinstance(array, np.ndarray) or isinstance(array, np.generic):
        return "numpy"
    if compat.is_cupy_array(array):
        return "cupy"
    if compat.is_torch_array(array):
        return "torch"
    if compat.is_jax_array(array):
        return "jax"
    if compat.is_dask_array(array):
        return "dask"
    if type(array).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    raise TypeError(f"expected an array, got {type(array).__name__}")


def _register_jax_pytrees() -> None:
    """Make the params dataclasses JAX pytrees (once; called when JAX is first met, never at import)."""
    from ._jax_pytree import register

    register()


def _device(array: Any) -> Any:
    if type(array) is np.ndarray:
        return "cpu"  # what array_api_compat.device says of every NumPy array, without its checks
    known = _BACKEND_BY_TYPE.get(type(array))
    if known == "jax":
        return getattr(array, "device", None)  # array_api_compat's answer (None for a tracer), without its checks
    if known == "torch":
        return array.device  # array_api_compat's answer for a tensor, without its checks
    import array_api_compat as compat

    return compat.device(array)


def namespace_of(**arrays: Any) -> tuple[ModuleType, str, Any]:
    """The namespace, backend name and device shared by the named arrays (``None`` values skipped).

    Raises :class:`BackendMismatchError` naming the arguments when they live on different
    backends or devices: nothing is ever copied between them behind the caller's back.
    """
    first_name = first_backend = first_device = None
    for arg_name, array in arrays.items():
        if array is None:
            continue
        try:
            name = backend_name(array)
        except TypeError:
            raise TypeError(
                f"{arg_name} must be an array (numpy, cupy, torch, ...), got {type(array).__name__}"
            ) from None
        device = _device(array)
        if name == "jax":
            _register_jax_pytrees()
        if first_name is None:
            first_name, first_backend, first_device = arg_name, name, device
        elif name == "jax" == first_backend and (device is None or first_device is None):
            first_device = None  # a traced JAX array (jit/grad/vmap) has no device: it matches any JAX device
        elif name != first_backend or device != first_device:
            raise BackendMismatchError(
                f"arguments live on different backends or devices: {first_name} on {first_backend} "
                f"(device {first_device}), {arg_name} on {name} (device {device}); nothing is copied "
                f"implicitly: move them together with arrayrnn.to_backend(..., {first_backend!r})"
            )
    if first_backend is None:
        raise TypeError("no array arguments were given")
    return _import_namespace(first_backend), first_backend, first_device


# --------------------------------------------------------------------------------------------
# transfers (explicit only)


def _is_leaf_array(value: Any) -> bool:
    try:
        backend_name(value)
    except TypeError:
        return False
    return True


def map_arrays(function: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``function`` to every array in ``tree`` (params dataclasses, tuples, lists, dicts)."""
    import dataclasses

    if tree is None:
        return None
    if _is_leaf_array(tree):
        return function(tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {f.name: map_arrays(function, getattr(tree, f.name)) for f in dataclasses.fields(tree)}
        return dataclasses.replace(tree, **changes)
    if isinstance(tree, tuple):
        mapped = [map_arrays(function, item) for item in tree]
        return type(tree)(*mapped) if hasattr(tree, "_fields") else tuple(mapped)
    if isinstance(tree, list):
        return [map_arrays(function, item) for item in tree]
    if isinstance(tree, dict):
        return {key: map_arrays(function, value) for key, value in tree.items()}
    if hasattr(tree, "_map_arrays"):  # models know how to rebuild themselves
        return tree._map_arrays(function)
    raise TypeError(f"cannot convert {type(tree).__name__}: expected an array, params, tuple, list or dict")


def _array_to_numpy(array: Any) -> np.ndarray:
    name = backend_name(array)
    if name == "numpy":
        return np.asarray(array)
    if name == "cupy":
        return array.get()
    if name == "torch":
        return array.detach().cpu().resolve_conj().numpy()
    if name == "array_api_strict":
        import array_api_strict as strict

        return np.asarray(array.to_device(strict.Device("CPU_DEVICE")))
    if name == "dask":
        return _array_to_numpy(array.compute())  # its chunks may be CuPy arrays
    return np.asarray(array)  # jax


def to_numpy(tree: Any) -> Any:
    """Copy every array in ``tree`` to a NumPy array on the host, keeping the structure.

    Parameters
    ----------
    tree : array, params object, model, tuple, list or dict
        A bare array of any backend, or a structure holding arrays (nested); ``None`` leaves stay ``None``. A
        dask array is computed.

    Returns
    -------
    object
        The same structure with NumPy arrays (a model: a model with NumPy params).

    Raises
    ------
    TypeError
        Something in ``tree`` is neither an array nor one of those containers.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> host = ar.to_numpy(ar.init_gru(3, 4, seed=0))
    >>> type(host.weight_ih).__name__, host.weight_ih.shape
    ('ndarray', (12, 3))
    >>> ar.to_numpy({"h": np.zeros(2), "c": None})
    {'h': array([0., 0.]), 'c': None}
    """
    return map_arrays(_array_to_numpy, tree)


def _numpy_to(array: np.ndarray, name: str, device: Any) -> Any:
    xp = _import_namespace(name)
    if name == "numpy":
        return np.array(array, copy=True)
    if name == "array_api_strict" and isinstance(device, str):
        import array_api_strict as strict

        device = strict.Device(device)
    if name == "cupy" and device is not None:
        import cupy

        with cupy.cuda.Device(device if isinstance(device, int) else getattr(device, "id", device)):
            return cupy.asarray(array)
    if name == "jax":
        import jax

        # JAX silently turns float64 into float32 unless x64 is on; that choice is the user's to make.
        if array.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
            raise ValueError(
                "JAX has float64 disabled, so float64 arrays cannot move there unchanged; enable it with "
                "jax.config.update('jax_enable_x64', True) or use dtype='float32'"
            )
        return xp.asarray(array) if device is None else jax.device_put(xp.asarray(array), device)
    return (
        xp.asarray(np.array(array, copy=True), device=device)
        if device is not None
        else xp.asarray(np.array(array, copy=True))
    )


def _to_dask(array: Any, chunks: Any) -> Any:
    """Wrap ``array`` as a dask array with ``chunks`` (default: one chunk); NumPy and CuPy data stay put.

    A dask array's chunks keep their own backend, so CuPy arrays become CuPy-backed dask arrays (no
    host copy); other backends' arrays are copied to NumPy first, as in any transfer.
    """
    import dask.array as da

    if backend_name(array) == "dask":
        return array if chunks is None else array.rechunk(chunks)
    if backend_name(array) not in ("numpy", "cupy"):
        array = _array_to_numpy(array)
    copy = array.copy()  # the dask array must not see later writes to the caller's array
    whole = tuple((n,) for n in copy.shape)
    # a NumPy copy is named by its hash; a CuPy one by a fresh name (dask would hash it on the host)
    name = None if isinstance(copy, np.ndarray) else False
    return da.from_array(copy, chunks=whole if chunks is None else chunks, name=name)


def to_backend(tree: Any, name: str | None = None, device: Any = None, *, chunks: Any = None) -> Any:
    """Copy every array in ``tree`` to backend ``name`` and ``device``, keeping the structure.

    This is the one explicit transfer: arrays already on the target backend and device are returned as they
    are. Other arrays go through a NumPy copy on the host. For ``name="dask"``, NumPy and CuPy arrays keep
    their backend as the dask array's chunks (a CuPy array becomes a CuPy-backed dask array).

    Parameters
    ----------
    tree : array, params object, model, tuple, list or dict
        A bare array of any backend, or a structure holding arrays (nested); ``None`` leaves stay ``None``.
    name : str, optional
        The target backend (or ``"auto"``); ``None`` (default): the current one (:func:`get_backend`).
    device : optional
        The device on the target backend (e.g. a CUDA device id); ``None``: its default. Must be ``None`` for
        dask.
    chunks : int, tuple, dict, or "auto", optional
        Dask only: passed to ``dask.array.from_array`` (a dict ``{axis: size}`` leaves the other axes whole);
        default one chunk per array; dask arrays are rechunked to it. The sequence functions want ``x`` chunked
        over the batch only, e.g. ``chunks={1: 4096}`` for ``(T, B, I)``.

    Returns
    -------
    object
        The same structure with arrays on the target backend and device.

    Raises
    ------
    BackendUnavailableError
        ``name`` is unknown or not usable here.
    ValueError
        ``chunks`` for a backend other than dask; ``device`` for dask; float64 arrays for JAX with x64 disabled.
    TypeError
        Something in ``tree`` is neither an array nor one of those containers.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> ar.to_backend(params, "numpy").weight_ih is params.weight_ih  # already there: not copied
    True
    >>> gpu_params = ar.to_backend(params, "cupy", device=0)  # doctest: +SKIP
    >>> x = ar.to_backend(np.ones((5, 64, 3), "float32"), "dask", chunks={1: 16})  # doctest: +SKIP
    """
    target = _resolve(name) if name is not None else get_backend()
    if chunks is not None and target != "dask":
        raise ValueError(f"chunks applies to the dask backend only, got chunks={chunks!r} for backend {target!r}")
    if target == "dask":
        if device is not None:
            raise ValueError(
                "device must be None for dask: a dask array lives where its chunks do; move the data to "
                f"the device first (e.g. to_backend(x, 'cupy', device=...)) and then to 'dask', got device={device!r}"
            )
        return map_arrays(lambda array: _to_dask(array, chunks), tree)

    def convert(array: Any) -> Any:
        if backend_name(array) == target and (device is None or _device(array) == device):
            return array
        return _numpy_to(_array_to_numpy(array), target, device)

    return map_arrays(convert, tree)
