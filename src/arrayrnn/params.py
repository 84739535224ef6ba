"""Parameter containers (PyTorch layout and gate order) and their initialisers.

One params object holds one layer in one direction. Fields are arrays of any backend; all of one
object's arrays live on the same backend and device.

``init_*(..., backend="dask")`` returns NumPy params: a dask ``x`` takes params on its chunks' backend
(NumPy, or CuPy for CuPy-backed dask arrays: use ``backend="cupy"`` there), and the graph ships them to
each worker once. Dask params (``to_backend(params, "dask")``) are accepted too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from .backend import backend_name, get_backend, to_backend

__all__ = ["GRUParams", "LSTMParams", "RNNParams", "init_gru", "init_lstm", "init_rnn"]

Array = Any

_FLOAT_DTYPES = ("float16", "float32", "float64")


class _ParamsBase:
    """Shared read-only properties; subclasses are frozen dataclasses with a ``weight_ih`` field."""

    #: number of gates stacked along the first axis of weight_ih / weight_hh
    gates: int = 1

    weight_ih: Array
    weight_hh: Array

    @property
    def input_size(self) -> int:
        return int(self.weight_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.weight_ih.shape[0]) // self.gates

    @property
    def dtype(self) -> Any:
        return self.weight_ih.dtype

    @property
    def backend(self) -> str:
        return backend_name(self.weight_ih)

    @property
    def has_bias(self) -> bool:
        return getattr(self, "bias_ih", None) is not None

    def arrays(self) -> dict[str, Array]:
        """The non-``None`` fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, eq=False)
class RNNParams(_ParamsBase):
    """Elman RNN: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Shapes: ``weight_ih (H, I)``, ``weight_hh (H, H)``, ``bias_ih (H,)``, ``bias_hh (H,)``.
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None

    gates = 1


@dataclasses.dataclass(frozen=True, eq=False)
class LSTMParams(_ParamsBase):
    """LSTM, gates stacked i, f, g, o (PyTorch order).

    Shapes: ``weight_ih (4H, I)``, ``weight_hh (4H, P or H)``, ``bias_ih (4H,)``, ``bias_hh (4H,)``,
    ``weight_hr (P, H)`` (projection, optional), ``peephole_i/f/o (H,)`` (ONNX semantics, optional).
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None
    weight_hr: Optional[Array] = None
    peephole_i: Optional[Array] = None
    peephole_f: Optional[Array] = None
    peephole_o: Optional[Array] = None

    gates = 4

    @property
    def proj_size(self) -> int:
        """``P`` when there is a projection, else 0 (as ``torch.nn.LSTM``)."""
        return 0 if self.weight_hr is None else int(self.weight_hr.shape[0])

    @property
    def output_size(self) -> int:
        """Size of ``h``: ``P`` with a projection, else ``H``."""
        return self.proj_size or self.hidden_size

    @property
    def has_peepholes(self) -> bool:
        return self.peephole_i is not None


@dataclasses.dataclass(frozen=True, eq=False)
class GRUParams(_ParamsBase):
    """GRU, gates stacked r, z, n (PyTorch order).

    Shapes: ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, ``bias_ih (3H,)``, ``bias_hh (3H,)``.
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None

    gates = 3


def _check_sizes(input_size: int, hidden_size: int, dtype: str) -> None:
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if str(dtype) not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_FLOAT_DTYPES)}, got {dtype!r}")


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    # Drawn in float64 on the host, then cast: the same seed gives the same numbers everywhere.
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _place(params: Any, backend: str | None, device: Any) -> Any:
    target = backend if backend is not None else get_backend()
    if target == "dask":
        # A dask x takes params on its chunks' backend (API.md section 1): NumPy, the default chunks.
        # Each worker gets them once; for CuPy-backed dask arrays ask for backend="cupy" instead.
        target = "numpy"
    return to_backend(params, target, device=device)


def init_rnn(
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> RNNParams:
    """Random RNN params, PyTorch's default U(-1/sqrt(H), 1/sqrt(H))."""
    _check_sizes(input_size, hidden_size, dtype)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    H = hidden_size
    params = RNNParams(
        weight_ih=_uniform(rng, bound, (H, input_size), dtype),
        weight_hh=_uniform(rng, bound, (H, H), dtype),
        bias_ih=_uniform(rng, bound, (H,), dtype) if bias else None,
        bias_hh=_uniform(rng, bound, (H,), dtype) if bias else None,
    )
    return _place(params, backend, device)


def init_lstm(
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    proj_size: int = 0,
    peepholes: bool = False,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> LSTMParams:
    """Random LSTM params, PyTorch's default U(-1/sqrt(H), 1/sqrt(H)) for every array."""
    _check_sizes(input_size, hidden_size, dtype)
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size must be an integer in [0, hidden_size={hidden_size}), got {proj_size!r}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    H = hidden_size
    recurrent = proj_size or H
    params = LSTMParams(
        weight_ih=_uniform(rng, bound, (4 * H, input_size), dtype),
        weight_hh=_uniform(rng, bound, (4 * H, recurrent), dtype),
        bias_ih=_uniform(rng, bound, (4 * H,), dtype) if bias else None,
        bias_hh=_uniform(rng, bound, (4 * H,), dtype) if bias else None,
        weight_hr=_uniform(rng, bound, (proj_size, H), dtype) if proj_size else None,
        peephole_i=_uniform(rng, bound, (H,), dtype) if peepholes else None,
        peephole_f=_uniform(rng, bound, (H,), dtype) if peepholes else None,
        peephole_o=_uniform(rng, bound, (H,), dtype) if peepholes else None,
    )
    return _place(params, backend, device)


def init_gru(
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> GRUParams:
    """Random GRU params, PyTorch's default U(-1/sqrt(H), 1/sqrt(H))."""
    _check_sizes(input_size, hidden_size, dtype)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    H = hidden_size
    params = GRUParams(
        weight_ih=_uniform(rng, bound, (3 * H, input_size), dtype),
        weight_hh=_uniform(rng, bound, (3 * H, H), dtype),
        bias_ih=_uniform(rng, bound, (3 * H,), dtype) if bias else None,
        bias_hh=_uniform(rng, bound, (3 * H,), dtype) if bias else None,
    )
    return _place(params, backend, device)
