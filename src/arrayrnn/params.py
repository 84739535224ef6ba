"""Parameter containers (PyTorch layout and gate order) and their initialisers.

One params object holds one layer in one direction; all of its arrays live on one backend and device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from . import _torch_pytree
from ._jax_pytree import pytree_classes, register_if_jax_loaded
from ._torch_pytree import register_if_torch_loaded
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

    def __post_init__(self) -> None:
        register_if_jax_loaded()  # params built from JAX arrays are pytrees before any arrayrnn call sees them
        register_if_torch_loaded()  # and torch pytrees once torch is imported (torch.func over params)

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

    @property
    def has_layer_norm(self) -> bool:
        """``True`` when any ``ln_*`` array is there (layer normalisation)."""
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self) if f.name.startswith("ln_"))  # type: ignore[arg-type]

    def arrays(self) -> dict[str, Array]:
        """The non-``None`` fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, eq=False)
class RNNParams(_ParamsBase):
    """Params of one Elman RNN layer in one direction: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    A frozen dataclass of arrays in PyTorch's layout, all on one backend and device and of one floating dtype
    (checked when the params are used). :func:`init_rnn` draws random ones.

    Parameters
    ----------
    weight_ih : array, shape (H, I)
        Input weights.
    weight_hh : array, shape (H, H)
        Recurrent weights.
    bias_ih, bias_hh : array, shape (H,), or None
        Biases (``None``: no such bias; each may be ``None`` on its own).
    ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias : array, shape (H,), or None
        Layer normalisation (Ba et al. 2016; ``layer_norm=True`` in :func:`init_rnn`): ``x W_ih^T`` and
        ``h W_hh^T`` are each normalised over their whole ``H`` vector (biased variance, epsilon ``1e-5``, as
        ``torch.nn.LayerNorm``) with these gains and shifts, then ``b_ih`` and ``b_hh`` are added. Each pair is
        optional on its own (``None``: that projection is not normalised).

    Attributes
    ----------
    input_size, hidden_size : int
        ``I`` and ``H``.
    dtype
        The arrays' dtype.
    backend : str
        The arrays' backend name (``"numpy"``, ``"cupy"``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.RNNParams(weight_ih=np.ones((4, 3), "float32"), weight_hh=np.eye(4, dtype="float32"))
    >>> params.input_size, params.hidden_size, params.backend, params.bias_ih is None
    (3, 4, 'numpy', True)
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None
    ln_ih_weight: Optional[Array] = None
    ln_ih_bias: Optional[Array] = None
    ln_hh_weight: Optional[Array] = None
    ln_hh_bias: Optional[Array] = None

    gates = 1


@dataclasses.dataclass(frozen=True, eq=False)
class LSTMParams(_ParamsBase):
    """Params of one LSTM layer in one direction, gates stacked i, f, g, o (PyTorch layout and order).

    A frozen dataclass of arrays, all on one backend and device and of one floating dtype (checked when the
    params are used). :func:`init_lstm` draws random ones; :func:`lstm_cell` gives the formulas.

    Parameters
    ----------
    weight_ih : array, shape (4H, I)
        Input weights.
    weight_hh : array, shape (4H, H), or (4H, P) with a projection
        Recurrent weights.
    bias_ih, bias_hh : array, shape (4H,), or None
        Biases (``None``: no such bias; each may be ``None`` on its own).
    weight_hr : array, shape (P, H), or None
        Projection of ``h`` (``torch.nn.LSTM(proj_size=P)``); ``None``: none.
    peephole_i, peephole_f, peephole_o : array, shape (H,), or None
        Peephole weights (ONNX semantics: ``i, f`` see ``c_{t-1}``, ``o`` sees ``c_t``); each may be ``None`` on
        its own in the functions (a model's stack takes all three or none).
    weight_gg : array, shape (3H, 3H), or None
        Full gate recurrence (Greff et al. 2015, "FGR"): the pre-activations of the gates ``i, f, o`` (rows) each
        get ``weight_gg @ [i_{t-1}; f_{t-1}; o_{t-1}]``, the previous step's gate activations (columns, same
        order). With it the LSTM state is a triple ``(h, c, g)``, ``g (B, 3H)`` being ``[i_t, f_t, o_t]``.
        ``None`` (default): none.
    ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias : array, shape (4H,), or None
        Layer normalisation (Ba et al. 2016; ``layer_norm=True`` in :func:`init_lstm`): ``x W_ih^T`` and
        ``h W_hh^T`` are each normalised over their whole ``4H`` vector (biased variance, epsilon ``1e-5``, as
        ``torch.nn.LayerNorm``) with these gains and shifts, then ``b_ih`` and ``b_hh`` are added. Each pair is
        optional on its own (``None``: that projection is not normalised).
    ln_c_weight, ln_c_bias : array, shape (H,), or None
        Layer normalisation of the cell state as the output sees it: ``h = o * tanh(LN_c(c_t))``; the state
        carried, and the peephole ``o`` sees, is the un-normalised ``c_t``.

    Attributes
    ----------
    input_size, hidden_size, proj_size, output_size : int
        ``I``, ``H``, ``P`` (0 without projection) and the size of ``h`` (``P`` or ``H``).
    dtype
        The arrays' dtype.
    backend : str
        The arrays' backend name.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> H, I = 4, 3
    >>> params = ar.LSTMParams(weight_ih=np.zeros((4 * H, I), "float32"), weight_hh=np.zeros((4 * H, H), "float32"))
    >>> params.hidden_size, params.proj_size, params.output_size
    (4, 0, 4)
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None
    weight_hr: Optional[Array] = None
    peephole_i: Optional[Array] = None
    peephole_f: Optional[Array] = None
    peephole_o: Optional[Array] = None
    weight_gg: Optional[Array] = None
    ln_ih_weight: Optional[Array] = None
    ln_ih_bias: Optional[Array] = None
    ln_hh_weight: Optional[Array] = None
    ln_hh_bias: Optional[Array] = None
    ln_c_weight: Optional[Array] = None
    ln_c_bias: Optional[Array] = None

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

    @property
    def has_gate_recurrence(self) -> bool:
        """``True`` with ``weight_gg`` (full gate recurrence: the state is ``(h, c, g)``)."""
        return self.weight_gg is not None


@dataclasses.dataclass(frozen=True, eq=False)
class GRUParams(_ParamsBase):
    """Params of one GRU layer in one direction, gates stacked r, z, n (PyTorch layout and order).

    A frozen dataclass of arrays, all on one backend and device and of one floating dtype (checked when the
    params are used). :func:`init_gru` draws random ones; :func:`gru_cell` gives the formulas.

    Parameters
    ----------
    weight_ih : array, shape (3H, I)
        Input weights.
    weight_hh : array, shape (3H, H)
        Recurrent weights.
    bias_ih, bias_hh : array, shape (3H,), or None
        Biases (``None``: no such bias; each may be ``None`` on its own).
    ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias : array, shape (3H,), or None
        Layer normalisation (Ba et al. 2016; ``layer_norm=True`` in :func:`init_gru`): ``x W_ih^T`` and
        ``h W_hh^T`` are each normalised over their whole ``3H`` vector (biased variance, epsilon ``1e-5``, as
        ``torch.nn.LayerNorm``) with these gains and shifts, then ``b_ih`` and ``b_hh`` are added. Each pair is
        optional on its own (``None``: that projection is not normalised). ``ln_hh_*`` needs
        ``linear_before_reset=True``.

    Attributes
    ----------
    input_size, hidden_size : int
        ``I`` and ``H``.
    dtype
        The arrays' dtype.
    backend : str
        The arrays' backend name.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.GRUParams(weight_ih=np.zeros((12, 3)), weight_hh=np.zeros((12, 4)), bias_ih=np.zeros(12),
    ...                       bias_hh=np.zeros(12))
    >>> params.input_size, params.hidden_size, params.dtype
    (3, 4, dtype('float64'))
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Optional[Array] = None
    bias_hh: Optional[Array] = None
    ln_ih_weight: Optional[Array] = None
    ln_ih_bias: Optional[Array] = None
    ln_hh_weight: Optional[Array] = None
    ln_hh_bias: Optional[Array] = None

    gates = 3


pytree_classes(RNNParams, LSTMParams, GRUParams)  # JAX pytrees once JAX is met (jit/grad/vmap over params)
_torch_pytree.pytree_classes(RNNParams, LSTMParams, GRUParams)  # torch pytrees once torch is met (torch.func)


def _check_sizes(input_size: int, hidden_size: int, dtype: str) -> None:
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if str(dtype) not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_FLOAT_DTYPES)}, got {dtype!r}")


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    # Drawn in float64 on the host, then cast: the same seed gives the same numbers everywhere.
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _with_layer_norm(params: Any, layer_norm: bool, dtype: str) -> Any:
    """``params`` with the ``ln_*`` arrays of layer normalisation (gains 1, shifts 0: nothing is drawn)."""
    if not isinstance(layer_norm, bool):
        raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
    if not layer_norm:
        return params
    rows = params.weight_ih.shape[0]
    fields = {"ln_ih_weight": np.ones(rows, dtype), "ln_ih_bias": np.zeros(rows, dtype),
              "ln_hh_weight": np.ones(rows, dtype), "ln_hh_bias": np.zeros(rows, dtype)}  # fmt: skip
    if isinstance(params, LSTMParams):
        fields.update(ln_c_weight=np.ones(params.hidden_size, dtype), ln_c_bias=np.zeros(params.hidden_size, dtype))
    return dataclasses.replace(params, **fields)


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
    layer_norm: bool = False,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> RNNParams:
    """Random RNN params, PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)).

    The numbers are drawn on the host from ``numpy.random.default_rng(seed)`` (in float64, then cast), so one
    seed gives the same params on every backend.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units.
    bias : bool, optional
        Draw ``bias_ih`` and ``bias_hh`` (default ``True``); ``False`` leaves them ``None``.
    layer_norm : bool, optional
        Add the arrays of layer normalisation (Ba et al. 2016):
        ``ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias (H,)``, gains 1 and shifts 0
        (nothing is drawn: a seed gives the other arrays the numbers it gives without it). Default ``False``.
    seed : int, numpy.random.Generator or None, optional
        Seed of ``numpy.random.default_rng``; ``None`` (default) draws fresh entropy.
    dtype : {"float32", "float64", "float16"}, optional
        The arrays' dtype. Default ``"float32"``.
    backend : str, optional
        Where to put the arrays (``"numpy"``, ``"cupy"``, ``"torch"``, ...). ``None`` (default): the current
        backend (:func:`get_backend`). ``"dask"`` gives NumPy params, which a dask ``x`` takes (its chunks'
        backend; use ``"cupy"`` for CuPy-backed dask arrays).
    device : optional
        The device on that backend (e.g. a CUDA device id); ``None``: the backend's default.

    Returns
    -------
    RNNParams
        ``weight_ih (H, I)``, ``weight_hh (H, H)``, biases ``(H,)`` or ``None``.

    Raises
    ------
    ValueError
        A size is not a positive integer; ``dtype`` is not a floating dtype above.
    TypeError
        ``layer_norm`` is not a bool.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> params = ar.init_rnn(3, 4, seed=0)
    >>> params.weight_ih.shape, params.weight_hh.shape, params.bias_ih.shape, params.dtype
    ((4, 3), (4, 4), (4,), dtype('float32'))
    >>> ar.init_rnn(3, 4, bias=False, dtype="float64", backend="numpy").bias_ih is None
    True
    """
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
    return _place(_with_layer_norm(params, layer_norm, dtype), backend, device)


def init_lstm(
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    proj_size: int = 0,
    peepholes: bool = False,
    gate_recurrence: bool = False,
    layer_norm: bool = False,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> LSTMParams:
    """Random LSTM params, PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)) for every array.

    The numbers are drawn on the host from ``numpy.random.default_rng(seed)`` (in float64, then cast), so one
    seed gives the same params on every backend.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units.
    proj_size : int, optional
        ``P``, the size of a projection of ``h`` (``weight_hr (P, H)``), ``0 <= P < H``; 0 (default): none.
    peepholes : bool, optional
        Draw peephole weights ``peephole_i, peephole_f, peephole_o (H,)`` (ONNX semantics). Default ``False``.
    gate_recurrence : bool, optional
        Draw ``weight_gg (3H, 3H)``, the full gate recurrence of Greff et al. (2015); the LSTM state is then
        ``(h, c, g)`` (see :class:`LSTMParams`). Drawn after every other array, so a seed gives the other arrays
        the numbers it gives without it. Default ``False``.
    bias : bool, optional
        Draw ``bias_ih`` and ``bias_hh`` (default ``True``); ``False`` leaves them ``None``.
    layer_norm : bool, optional
        Add the arrays of layer normalisation (Ba et al. 2016):
        ``ln_ih_*, ln_hh_* (4H,)`` and ``ln_c_weight, ln_c_bias (H,)``, gains 1 and shifts 0
        (nothing is drawn: a seed gives the other arrays the numbers it gives without it). Default ``False``.
    seed : int, numpy.random.Generator or None, optional
        Seed of ``numpy.random.default_rng``; ``None`` (default) draws fresh entropy.
    dtype : {"float32", "float64", "float16"}, optional
        The arrays' dtype. Default ``"float32"``.
    backend : str, optional
        Where to put the arrays (``"numpy"``, ``"cupy"``, ``"torch"``, ...). ``None`` (default): the current
        backend (:func:`get_backend`). ``"dask"`` gives NumPy params, which a dask ``x`` takes (its chunks'
        backend; use ``"cupy"`` for CuPy-backed dask arrays).
    device : optional
        The device on that backend (e.g. a CUDA device id); ``None``: the backend's default.

    Returns
    -------
    LSTMParams
        ``weight_ih (4H, I)``, ``weight_hh (4H, H or P)``, biases ``(4H,)``, optional ``weight_hr``, peepholes and
        ``weight_gg``.

    Raises
    ------
    ValueError
        A size is not a positive integer or ``proj_size`` is not in ``[0, hidden_size)``; ``dtype`` is not a
        floating dtype above.
    TypeError
        ``gate_recurrence`` or ``layer_norm`` is not a bool.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import arrayrnn as ar
    >>> params = ar.init_lstm(3, 8, proj_size=4, peepholes=True, seed=0)
    >>> params.weight_ih.shape, params.weight_hh.shape, params.weight_hr.shape, params.peephole_o.shape
    ((32, 3), (32, 4), (4, 8), (8,))
    >>> params.hidden_size, params.output_size
    (8, 4)
    >>> ar.init_lstm(3, 8, gate_recurrence=True, seed=0).weight_gg.shape  # full gate recurrence
    (24, 24)
    >>> normed = ar.init_lstm(3, 8, layer_norm=True, seed=0)  # layer normalisation: gains 1, shifts 0
    >>> normed.ln_ih_weight.shape, normed.ln_c_bias.shape, float(normed.ln_hh_weight[0]), float(normed.ln_hh_bias[0])
    ((32,), (8,), 1.0, 0.0)
    """
    _check_sizes(input_size, hidden_size, dtype)
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size must be an integer in [0, hidden_size={hidden_size}), got {proj_size!r}")
    if not isinstance(gate_recurrence, bool):
        raise TypeError(f"gate_recurrence must be True or False, got {gate_recurrence!r}")
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
    if gate_recurrence:  # drawn last: the arrays above keep the numbers this seed gives without it
        params = dataclasses.replace(params, weight_gg=_uniform(rng, bound, (3 * H, 3 * H), dtype))
    return _place(_with_layer_norm(params, layer_norm, dtype), backend, device)


def init_gru(
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    layer_norm: bool = False,
    seed: int | np.random.Generator | None = None,
    dtype: str = "float32",
    backend: str | None = None,
    device: Any = None,
) -> GRUParams:
    """Random GRU params, PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)).

    The numbers are drawn on the host from ``numpy.random.default_rng(seed)`` (in float64, then cast), so one
    seed gives the same params on every backend.

    Parameters
    ----------
    input_size : int
        ``I``, the features of the input.
    hidden_size : int
        ``H``, the hidden units.
    bias : bool, optional
        Draw ``bias_ih`` and ``bias_hh`` (default ``True``); ``False`` leaves them ``None``.
    layer_norm : bool, optional
        Add the arrays of layer normalisation (Ba et al. 2016):
        ``ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias (3H,)``, gains 1 and shifts 0
        (nothing is drawn: a seed gives the other arrays the numbers it gives without it). Default ``False``.
    seed : int, numpy.random.Generator or None, optional
        Seed of ``numpy.random.default_rng``; ``None`` (default) draws fresh entropy.
    dtype : {"float32", "float64", "float16"}, optional
        The arrays' dtype. Default ``"float32"``.
    backend : str, optional
        Where to put the arrays (``"numpy"``, ``"cupy"``, ``"torch"``, ...). ``None`` (default): the current
        backend (:func:`get_backend`). ``"dask"`` gives NumPy params, which a dask ``x`` takes (its chunks'
        backend; use ``"cupy"`` for CuPy-backed dask arrays).
    device : optional
        The device on that backend (e.g. a CUDA device id); ``None``: the backend's default.

    Returns
    -------
    GRUParams
        ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, biases ``(3H,)`` or ``None``.

    Raises
    ------
    ValueError
        A size is not a positive integer; ``dtype`` is not a floating dtype above.
    TypeError
        ``layer_norm`` is not a bool.
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> params = ar.init_gru(3, 4, seed=0)
    >>> params.weight_ih.shape, params.weight_hh.shape
    ((12, 3), (12, 4))
    >>> bool(np.array_equal(params.weight_hh, ar.init_gru(3, 4, seed=0).weight_hh))  # one seed, same numbers
    True
    """
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
    return _place(_with_layer_norm(params, layer_norm, dtype), backend, device)
