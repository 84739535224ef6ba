"""cuBLAS matrix products that a CUDA graph can capture (CuPy's own refuse to be captured).

:func:`matmul` returns a :class:`Gemm` that calls the cuBLAS library CuPy loaded (through ``ctypes``, one handle
per device); the capture rules it follows are in ``benchmarks/NOTES.md``. Nothing is loaded until first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import threading
from typing import Any, Optional

import numpy as np

from .. import policy, runtime
from ..common import cupy_module

Array = Any

#: cublasOperation_t
OP_N, OP_T = 0, 1
#: cudaDataType_t of each supported dtype
DATA_TYPES = {"float16": 2, "float32": 0, "float64": 1}
#: cublasComputeType_t
COMPUTE_32F, COMPUTE_32F_FAST_TF32, COMPUTE_64F = 68, 77, 70
#: cublasGemmAlgo_t: let cuBLAS choose
GEMM_DEFAULT = -1


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than ``CUBLAS_STATUS_SUCCESS``."""


class Library:
    """The four cuBLAS entry points used here, from a loaded ``libcublas`` (``ctypes.CDLL``)."""

    def __init__(self, cdll: Any) -> None:
        self._cdll = cdll
        handle_p, size_t, void_p, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int
        self._create = self._function("cublasCreate_v2", [ctypes.POINTER(handle_p)])
        self._set_stream = self._function("cublasSetStream_v2", [handle_p, void_p])
        self._set_workspace = self._function("cublasSetWorkspace_v2", [handle_p, void_p, size_t])
        self._gemm_ex = self._function(
            "cublasGemmEx",
            [handle_p, c_int, c_int, c_int, c_int, c_int, void_p, void_p, c_int, c_int, void_p, c_int, c_int,
             void_p, void_p, c_int, c_int, c_int, c_int],
        )  # fmt: skip

    def _function(self, name: str, argtypes: list[Any]) -> Any:
        function = getattr(self._cdll, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
        return function

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CublasError(f"{what} failed with cuBLAS status {status}")

    def create(self) -> int:
        handle = ctypes.c_void_p()
        self._check(self._create(ctypes.byref(handle)), "cublasCreate")
        return int(handle.value or 0)

    def set_stream(self, handle: int, stream: int) -> None:
        self._check(self._set_stream(handle, stream), "cublasSetStream")

    def set_workspace(self, handle: int, pointer: int, size: int) -> None:
        self._check(self._set_workspace(handle, pointer, size), "cublasSetWorkspace")

    def gemm_ex(self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: Any,
                a: int, a_type: int, lda: int, b: int, b_type: int, ldb: int, beta: Any,
                c: int, c_type: int, ldc: int, compute_type: int) -> None:  # fmt: skip
        """``cublasGemmEx`` (column-major ``C = alpha op(A) op(B) + beta C``); ``alpha``/``beta``: NumPy scalars of
        the compute type, passed by host pointer."""
        alpha_c, beta_c = np.array(alpha), np.array(beta)
        status = self._gemm_ex(
            handle, transa, transb, m, n, k, alpha_c.ctypes.data, a, a_type, lda, b, b_type, ldb,
            beta_c.ctypes.data, c, c_type, ldc, compute_type, GEMM_DEFAULT,
        )  # fmt: skip
        self._check(status, f"cublasGemmEx (m={m}, n={n}, k={k})")


def _loaded_cublas_path() -> Optional[str]:
    """The path of the ``libcublas`` this process has loaded (Linux: ``/proc/self/maps``), or ``None``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and os.path.basename(parts[-1]).startswith("libcublas.so"):
                    return parts[-1]
    except OSError:
        return None
    return None


_library_lock = threading.Lock()
_library: Optional[Library] = None


def library() -> Library:
    """The cuBLAS that CuPy uses (loaded on first use; tests replace this function)."""
    global _library
    with _library_lock:
        if _library is None:
            cp = cupy_module()
            try:
                cp.cuda.device.get_cublas_handle()  # makes CuPy load its cuBLAS: the one to share
            except AttributeError:  # a CuPy without that helper: its cuBLAS module loads the library too
                import cupy_backends.cuda.libs.cublas  # noqa: F401
            path = _loaded_cublas_path() or ctypes.util.find_library("cublas")
            if path is None:
                raise RuntimeError("could not find the cuBLAS library CuPy loaded (no libcublas in this process)")
            _library = Library(ctypes.CDLL(path))
        return _library


#: (id(library), device) -> (library, handle, the lock its users hold around a call)
_handles = runtime.cache("blas.handles")
_handles_lock = runtime.lock("blas.handles")


def handle() -> tuple[Library, int, threading.Lock]:
    """The library, this module's cuBLAS handle on the current device, and the lock its users hold around a call."""
    lib = library()
    device = cupy_module().cuda.Device().id
    key = (id(lib), device)
    with _handles_lock:
        found = _handles.get(key)
        if found is None:
            found = _handles[key] = (lib, lib.create(), threading.Lock())
    return found


def _layout(array: Array, name: str) -> tuple[int, bool, int]:
    """``(pointer, row_major, leading dimension in elements)`` of a 2-D operand that is row-major or a transposed
    view of a row-major array (column-major); any other layout is refused."""
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {array.ndim} dimensions")
    item = array.itemsize
    rows, cols = array.shape
    stride_rows, stride_cols = array.strides
    if stride_cols == item and stride_rows % item == 0 and stride_rows // item >= max(1, cols):
        return int(array.data.ptr), True, stride_rows // item
    if stride_rows == item and stride_cols % item == 0 and stride_cols // item >= max(1, rows):
        return int(array.data.ptr), False, stride_cols // item
    raise ValueError(f"{name} must be row-major or a transposed row-major array, got strides {array.strides}")


def _compute(dtype: str) -> tuple[int, Any, Any]:
    """(compute type, alpha 1, beta 0 as the compute type's scalars) for ``dtype``'s products."""
    if dtype == "float64":
        return COMPUTE_64F, np.float64(1.0), np.float64(0.0)
    tf32 = dtype == "float32" and os.environ.get("CUPY_TF32", "0") == "1"
    return (COMPUTE_32F_FAST_TF32 if tf32 else COMPUTE_32F), np.float32(1.0), np.float32(0.0)


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One product ``out = a @ b``: calling it issues the ``cublasGemmEx`` on the current stream."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    a: int
    lda: int
    b: int
    ldb: int
    c: int
    ldc: int
    data_type: int
    compute_type: int
    alpha: Any
    beta: Any
    workspace: Array
    #: the operands and output, kept alive as long as the call may run (a graph holds their addresses)
    arrays: tuple[Array, ...]

    def shape_key(self) -> tuple[Any, ...]:
        """What decides the kernel cuBLAS picks (not the addresses): for :func:`warm_up`."""
        return (self.transa, self.transb, self.m, self.n, self.k, self.lda, self.ldb, self.ldc, self.data_type,
                self.compute_type)  # fmt: skip

    def __call__(self) -> None:
        lib, cublas, lock = handle()
        stream = int(cupy_module().cuda.get_current_stream().ptr)
        with lock:
            lib.set_stream(cublas, stream)
            # after the stream: cublasSetStream resets the workspace to the library's own pool
            lib.set_workspace(cublas, int(self.workspace.data.ptr), int(self.workspace.nbytes))
            lib.gemm_ex(
                cublas, self.transa, self.transb, self.m, self.n, self.k, self.alpha, self.a, self.data_type,
                self.lda, self.b, self.data_type, self.ldb, self.beta, self.c, self.data_type, self.ldc,
                self.compute_type,
            )  # fmt: skip


def workspace(nbytes: Optional[int] = None) -> Array:
    """A fresh cuBLAS workspace of ``nbytes`` (default: ``policy.Config.fused_graph_workspace_bytes``) on the current
    device, for one plan's products."""
    size = policy.current().fused_graph_workspace_bytes if nbytes is None else nbytes
    return cupy_module().empty((size,), dtype=np.uint8)


def matmul(a: Array, b: Array, out: Array, workspace: Array) -> Gemm:
    """``out (M, N) = a (M, K) @ b (K, N)`` as a capturable cuBLAS call (not issued yet: call the result).

    ``a`` and ``b``: row-major or transposed row-major views; ``out``: row-major (rows may be strided). All three
    of one dtype (float16, float32 or float64). The column-major cuBLAS sees ``out^T = b^T a^T``.
    """
    dtype = np.dtype(out.dtype).name
    if dtype not in DATA_TYPES or a.dtype != out.dtype or b.dtype != out.dtype:
        raise ValueError(f"matmul: a, b and out must share a dtype among {tuple(DATA_TYPES)}, got "
                         f"{a.dtype}, {b.dtype}, {out.dtype}")  # fmt: skip
    (rows, inner), (inner_b, cols) = a.shape, b.shape
    if inner_b != inner or out.shape != (rows, cols):
        raise ValueError(f"matmul: shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    a_ptr, a_row_major, lda = _layout(a, "a")
    b_ptr, b_row_major, ldb = _layout(b, "b")
    c_ptr, c_row_major, ldc = _layout(out, "out")
    if not c_row_major:  # (one row too: a strided row is not the contiguous vector cuBLAS would write)
        raise ValueError(f"matmul: out must be row-major, got strides {out.strides}")
    compute_type, alpha, beta = _compute(dtype)
    return Gemm(
        # cuBLAS's A is b (as b^T: a row-major b is b^T column-major), its B is a
        transa=OP_N if b_row_major else OP_T,
        transb=OP_N if a_row_major else OP_T,
        m=cols, n=rows, k=inner,
        a=b_ptr, lda=ldb, b=a_ptr, ldb=lda, c=c_ptr, ldc=ldc,
        data_type=DATA_TYPES[dtype], compute_type=compute_type, alpha=alpha, beta=beta,
        workspace=workspace, arrays=(a, b, out),
    )  # fmt: skip


def warm_up(calls: list[Any]) -> None:
    """Issue each distinct :class:`Gemm` of ``calls`` once, now (outside any capture): cuBLAS loads the kernels it
    picks and a capture then records launches only. The products write their ``out`` buffers: call this before
    the buffers hold anything."""
    seen: set[tuple[Any, ...]] = set()
    for call in calls:
        if isinstance(call, Gemm) and call.shape_key() not in seen:
            seen.add(call.shape_key())
            call()
