"""What the CuPy fast paths share: compiled kernels, option bits, placeholders, the input projection.

CuPy is imported only inside functions (through :func:`cupy_module`), so importing this module costs
nothing and the tests can put a CPU stand-in in its place.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import runtime
from . import sources as cupy_sources

Array = Any

SUPPORTED_DTYPES = tuple(cupy_sources.ACC_TYPES)


def cupy_module() -> Any:
    """The ``cupy`` module (imported on first use; tests replace this function)."""
    import cupy

    return cupy


def dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def check_dtype(dtype: Any, impl: str) -> str:
    name = dtype_name(dtype)
    if name not in SUPPORTED_DTYPES:
        raise ValueError(f"impl={impl!r} supports {', '.join(SUPPORTED_DTYPES)} arrays, got {name}")
    return name


def lstm_variant_reason(impl: str, kind: str, params: Any, options: dict[str, Any]) -> Optional[str]:
    """Why path ``impl`` cannot run an LSTM variant of Greff et al. (absent gates, identity activations, the full
    gate recurrence ``weight_gg``: no CuPy kernel has them), or ``None``. The hook declines such calls before any
    path sees them (:func:`arrayrnn._backends.cupy.route`: the array-API core runs them). Layer-normalised params
    (``ln_*``, any kind) likewise."""
    from ..._core.layer_norm import layer_norm_changes

    normed = layer_norm_changes(params)
    if normed:
        return f"impl={impl!r} does not support {', '.join(normed)}; the array-API core runs it (impl='generic')"
    if kind != "lstm":
        return None
    from ..._core.steps import lstm_variant_changes

    changes = lstm_variant_changes(params, options)
    if not changes:
        return None
    return f"impl={impl!r} does not support {', '.join(changes)}; the array-API core runs it (impl='generic')"


def refuse(reason: Optional[str]) -> None:
    """``ValueError(reason)`` where a path's ``supports`` gave the reason it cannot run a call; nothing for ``None``."""
    if reason is not None:
        raise ValueError(reason)


#: (id(cupy), name, dtype) -> the compiled kernel; and id(kernel) -> its name (both under the "kernels" lock)
_kernels = runtime.cache("kernels")
_kernel_names = runtime.cache("kernel_names")
_kernel_lock = runtime.lock("kernels")


def kernel(name: str, dtype: str) -> Any:
    """The ``cupy.RawKernel`` ``name`` for ``dtype`` (one compiled module per dtype and source part: a forward
    pass compiles only the forward kernels; loaded on first use)."""
    cp = cupy_module()
    key = (id(cp), name, dtype)
    found = _kernels.get(key)
    if found is None:
        with _kernel_lock:
            found = _kernels.get(key)
            if found is None:
                code = cupy_sources.source(dtype, cupy_sources.part_of(name))
                found = cp.RawKernel(code, name, options=cupy_sources.COMPILE_OPTIONS)
                _kernels[key] = found
                _kernel_names[id(found)] = name
    return found


def kernel_name(k: Any) -> str:
    """The exported name a kernel from :func:`kernel` was made for."""
    return _kernel_names[id(k)]


def int32(value: int) -> np.int32:
    return np.int32(value)


def acc_scalar(dtype: str, value: float) -> Any:
    """``value`` as the kernels' ``acc_t`` (float for float16/float32, double for float64)."""
    return np.dtype(cupy_sources.ACC_TYPES[dtype]).type(value)


def clip_scalar(dtype: str, clip: Optional[float]) -> Any:
    """The kernels' ``clip`` argument: ``clip`` (0 when there is none: ``OPT_CLIP`` is then off) as ``acc_t``."""
    return acc_scalar(dtype, 0.0 if clip is None else float(clip))


def blocks_for(count: int, block: int) -> tuple[int]:
    return ((count + block - 1) // block,)


#: (id(cupy), device, dtype) -> the placeholder
_placeholders = runtime.cache("placeholders")
_placeholder_lock = runtime.lock("placeholders")


def placeholder(dtype: Any) -> Array:
    """A one-element device array standing in for an absent optional argument (never read).

    Cached per device and dtype so its address is stable (graphs may hold it).
    """
    cp = cupy_module()
    device = cp.cuda.Device().id
    key = (id(cp), device, np.dtype(dtype).str)
    found = _placeholders.get(key)
    if found is None:
        with _placeholder_lock:
            found = _placeholders.get(key)
            if found is None:
                found = cp.zeros((1,), dtype=dtype)
                _placeholders[key] = found
    return found


def contiguous_or_placeholder(array: Optional[Array], dtype: Any) -> Array:
    """A C-contiguous view (or copy) of an optional 1-D/2-D parameter, or the placeholder when absent."""
    if array is None:
        return placeholder(dtype)
    return cupy_module().ascontiguousarray(array)


def options_mask(
    *,
    bias_ih: Any = None,
    bias_hh: Any = None,
    lengths: Any = None,
    peephole_i: Any = None,
    peephole_f: Any = None,
    peephole_o: Any = None,
    coupled: bool = False,
    clip: Optional[float] = None,
    relu: bool = False,
) -> int:
    """The ``options`` bit mask the kernels read (see ``cupy_sources.OPTIONS``)."""
    bits = cupy_sources.OPTIONS
    mask = 0
    for present, name in (
        (bias_ih is not None, "OPT_BIAS_IH"),
        (bias_hh is not None, "OPT_BIAS_HH"),
        (lengths is not None, "OPT_LENGTHS"),
        (peephole_i is not None, "OPT_PEEP_I"),
        (peephole_f is not None, "OPT_PEEP_F"),
        (peephole_o is not None, "OPT_PEEP_O"),
        (coupled, "OPT_COUPLED"),
        (clip is not None, "OPT_CLIP"),
        (relu, "OPT_RELU"),
    ):
        if present:
            mask |= bits[name]
    return mask


def lstm_options(params: Any, lengths: Any, coupled: bool, clip: Optional[float]) -> int:
    """The ``options`` bits of an LSTM call (biases, lengths, peepholes, coupled, clip)."""
    return options_mask(
        bias_ih=params.bias_ih,
        bias_hh=params.bias_hh,
        lengths=lengths,
        peephole_i=params.peephole_i,
        peephole_f=params.peephole_f,
        peephole_o=params.peephole_o,
        coupled=coupled,
        clip=clip,
    )


def lengths_int64(lengths: Optional[Array]) -> Array:
    """``lengths`` as a contiguous int64 device array (the placeholder when there are none)."""
    cp = cupy_module()
    if lengths is None:
        return placeholder(np.int64)
    return cp.ascontiguousarray(lengths, dtype=np.int64)


def project_inputs(x: Array, weight_ih: Array, out: Optional[Array] = None) -> Array:
    """``x (T, B, I) @ weight_ih^T`` for all steps in one cuBLAS call, **without** bias: ``(T, B, G*H)``.

    The kernels add ``bias_ih`` themselves (one pass less over the projection).
    """
    cp = cupy_module()
    steps, batch, features = x.shape
    flat = cp.ascontiguousarray(x).reshape(steps * batch, features)
    if out is None:
        return cp.ascontiguousarray(cp.matmul(flat, weight_ih.T)).reshape(steps, batch, weight_ih.shape[0])
    cp.matmul(flat, weight_ih.T, out=out.reshape(steps * batch, weight_ih.shape[0]))
    return out


def empty_batch_result(x: Array, state: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
    """The result for a batch of 0 sequences (nothing to launch: a grid of 0 blocks is an error)."""
    cp = cupy_module()
    steps = x.shape[0]
    return cp.zeros((steps, 0, state[0].shape[1]), dtype=x.dtype), tuple(s.copy() for s in state)


def time_order(steps: int, reverse: bool) -> range:
    return range(steps - 1, -1, -1) if reverse else range(steps)


def cooperative_launch(k: Any, grid: tuple[int], block: tuple[int], args: tuple[Any, ...], shared_mem: int = 0) -> None:
    """Launch ``k`` with ``cuLaunchCooperativeKernel``: CUDA guarantees every block is resident at once (or
    refuses the launch), which a grid barrier needs. The kernel itself needs no cooperative-groups build."""
    k.kernel(grid, block, args, shared_mem=shared_mem, enable_cooperative_groups=True)


#: (id(cupy), device, kernel name, threads, shared memory) -> blocks resident at once
_resident = runtime.cache("resident_blocks")
_resident_lock = runtime.lock("resident_blocks")


def resident_blocks(k: Any, name: str, threads: int, shared_mem: int = 0) -> int:
    """How many blocks of ``threads`` threads (and ``shared_mem`` bytes of dynamic shared memory) of kernel ``k``
    fit on the current device at once."""
    cp = cupy_module()
    device = cp.cuda.Device()
    key = (id(cp), device.id, name, threads, shared_mem)
    found = _resident.get(key)
    if found is None:
        per_sm = cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(k.kernel.ptr, threads, shared_mem)
        found = int(per_sm) * int(device.attributes["MultiProcessorCount"])
        with _resident_lock:
            _resident[key] = found
    return found
