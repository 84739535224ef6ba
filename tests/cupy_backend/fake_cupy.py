"""A CPU stand-in for the small part of CuPy that the CuPy fast paths use, to test them without a GPU.

Arrays are NumPy arrays (a subclass with ``.data.ptr`` and ``.device``), cuBLAS is ``numpy.matmul`` (``matmul``)
or, for the capturable products of ``cupy_blas``, :class:`FakeCublas` (column-major ``cublasGemmEx`` on host memory),
and ``RawKernel`` runs the real kernel source on the CPU emulator (``tests/cupy_backend/cuda_emulator.py``). It is
strict where CuPy/CUDA are strict and a silent CPU run would not be:

* kernel arguments are checked against the kernel's declared parameters: arrays of the right dtype,
  C-contiguous, for pointers; ``numpy.int32`` for ``int``; the exact numpy float of ``acc_t``
  (CuPy passes a Python ``int`` as 8 bytes, which would shift every later parameter on a GPU);
* stream capture records kernel launches with their argument *bytes at capture time* (as CUDA does)
  and replays those on ``Graph.launch``; ``matmul`` during capture raises like CuPy's cuBLAS guard;
  capture on the null stream raises; nested captures raise;
* the fake counts captures and launches so tests can check graph reuse;
* cooperative launches (``RawKernel.kernel(..., enable_cooperative_groups=True)``, as persistent kernels
  with a grid barrier need) run every block at once on the emulator and fail like CUDA when the grid is
  larger than ``MultiProcessorCount`` (``fake.multiprocessors``) times the occupancy that
  ``cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor`` reports (``fake.occupancy``);
* a cluster kernel (compiled with ``__cluster_dims__``: ``cluster_sources.cluster_size``) runs cluster by
  cluster and fails like CUDA on a device without clusters (``fake.compute_capability`` below "90"), a grid
  that is not a whole number of clusters, a cooperative launch, or a cluster of more than 8 blocks unless
  the kernel opted in (``cuda.driver.funcSetAttribute(ptr, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import types
from typing import Any

import numpy as np

from arrayrnn._backends.cupy import sources as cupy_sources
from tests.cupy_backend import cuda_emulator

_EXPERIMENTAL = "arrayrnn._backends.cupy.experimental"
try:  # the experimental paths (importing them registers their kernels with cupy_sources)
    from arrayrnn._backends.cupy.experimental import cluster_sources as _cluster_sources
except ModuleNotFoundError as error:  # experimental/ deleted: the shipping paths only
    if error.name != _EXPERIMENTAL:
        raise
    _cluster_sources = None


def _cluster_size(name: str) -> int:
    """Blocks per cluster that kernel ``name`` was compiled for (1: not a cluster kernel)."""
    return 1 if _cluster_sources is None else _cluster_sources.cluster_size(name)


class _Pointer:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


#: defaults of the device the fake reports; each FakeCupy has its own (``fake.multiprocessors``, ``fake.occupancy``)
DEFAULT_MULTIPROCESSORS = 2
DEFAULT_OCCUPANCY = 1
#: an H100's
DEFAULT_COMPUTE_CAPABILITY = "90"
#: CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED (cuda.h), the one function attribute the fake accepts
NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14

#: the FakeCupy made last (``installed`` restores the one before): whose settings ``FakeDevice`` reports,
#: since a device (``cupy.cuda.Device(0)``, ``array.device``) is made without its module
_current: FakeCupy | None = None


class FakeDevice:
    def __init__(self, device_id: int = 0) -> None:
        self.id = device_id

    @property
    def attributes(self) -> dict[str, int]:
        count = DEFAULT_MULTIPROCESSORS if _current is None else _current.multiprocessors
        # an H100's opt-in limit of dynamic shared memory per block
        return {"MultiProcessorCount": count, "MaxSharedMemoryPerBlockOptin": 227 * 1024}

    @property
    def compute_capability(self) -> str:
        return DEFAULT_COMPUTE_CAPABILITY if _current is None else _current.compute_capability

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeDevice) and other.id == self.id

    def __hash__(self) -> int:
        return self.id


class FakeArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` and ``.device`` like a CuPy array."""

    @property
    def data(self) -> _Pointer:  # type: ignore[override]
        return _Pointer(self.ctypes.data)

    @property
    def device(self) -> FakeDevice:  # type: ignore[override]
        return FakeDevice(0)


def asfake(array: Any) -> FakeArray:
    return np.array(array, copy=True).view(FakeArray)


class FakeGraph:
    """``recorded``: ``(dtype, name, grid, block, arg_bytes, cooperative)`` per captured launch."""

    def __init__(self, recorded: list[tuple[str, str, int, int, list[bytes], bool]], module: FakeCupy) -> None:
        self.recorded = recorded
        self.module = module

    def launch(self, stream: Any = None) -> None:
        self.module.graph_launches += 1
        for entry in self.recorded:
            if isinstance(entry, FakeGemmNode):
                entry.run()
                continue
            dtype, name, grid, block, arg_bytes, cooperative, shared_mem = entry
            cluster = _cluster_size(name)
            cuda_emulator.launch(dtype, name, grid, block, arg_bytes, cooperative, shared_mem, cluster)


class FakeStream:
    _next_ptr = 1000

    def __init__(self, module: FakeCupy, null: bool = False, non_blocking: bool = False) -> None:
        self.module = module
        if null:
            self.ptr = 0
        else:
            FakeStream._next_ptr += 1
            self.ptr = FakeStream._next_ptr
        self.recording: list | None = None
        module._streams[self.ptr] = self

    def __enter__(self) -> FakeStream:
        self.module._stream_stack.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module._stream_stack.pop()

    def begin_capture(self, mode: Any = None) -> None:
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self.recording is not None:
            raise RuntimeError("stream is already capturing")
        self.recording = []
        self.module.captures_begun += 1
        self.module.captures_open += 1

    def end_capture(self) -> FakeGraph:
        if self.recording is None:
            raise RuntimeError("stream is not capturing")
        recorded, self.recording = self.recording, None
        self.module.captures_open -= 1
        if self.module.fail_end_capture:
            raise RuntimeError("cudaErrorStreamCaptureInvalidated")
        return FakeGraph(recorded, self.module)

    def is_capturing(self) -> bool:
        return self.recording is not None

    def synchronize(self) -> None:
        return None


class FakeFunction:
    """``RawKernel.kernel``: the loaded function (``cupy.cuda.function.Function``), with its ``ptr`` for the
    occupancy API and the launch that can be cooperative."""

    _next_ptr = 0x7F0000000000

    def __init__(self, raw: FakeRawKernel) -> None:
        self.raw = raw
        FakeFunction._next_ptr += 0x100
        self.ptr = FakeFunction._next_ptr
        self.non_portable_cluster_size_allowed = 0

    def __call__(
        self,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: tuple[Any, ...],
        shared_mem: int = 0,
        stream: Any = None,
        enable_cooperative_groups: bool = False,
    ) -> None:
        self.raw._launch(grid, block, args, shared_mem, stream, enable_cooperative_groups)


#: integer array parameters: the grid barrier's counter, the graph executor's launch table and kernel indices
_INDEX_ARRAY_DTYPES = {"counter": np.uint32, "table": np.uint64, "kinds": np.int32}


class FakeRawKernel:
    def __init__(self, module: FakeCupy, code: str, name: str, options: tuple[str, ...] = ()) -> None:
        self.module = module
        self.name = name
        parts = (None, *cupy_sources.parts())
        self.dtype = next(d for d in cupy_sources.ACC_TYPES for p in parts if code == cupy_sources.source(d, p))
        specs = cupy_sources.kernel_specs()
        if name not in specs:
            raise AttributeError(f"no kernel named {name} in the source")
        self.params = specs[name]
        self.loaded = False
        self._function: FakeFunction | None = None
        self.max_dynamic_shared_size_bytes = 48 * 1024  # CUDA's default limit until a kernel opts in

    def compile(self, log_stream: Any = None) -> None:
        cuda_emulator.library(self.dtype)
        self.loaded = True

    @property
    def kernel(self) -> FakeFunction:
        if self._function is None:
            self.compile()
            self._function = FakeFunction(self)
            self.module._functions[self._function.ptr] = self._function
        return self._function

    @property
    def attributes(self) -> dict[str, int]:
        self.compile()
        return {"num_regs": 0, "local_size_bytes": 0, "max_threads_per_block": 1024,
                "max_dynamic_shared_size_bytes": self.max_dynamic_shared_size_bytes}  # fmt: skip

    def _arg_bytes(self, args: tuple[Any, ...]) -> list[bytes]:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        acc = np.dtype(cupy_sources.ACC_TYPES[self.dtype]).type
        out = []
        for (kind, pname), value in zip(self.params, args):
            where = f"{self.name} parameter {pname}"
            if kind in ("in", "out", "state", "lengths"):
                if not isinstance(value, FakeArray):
                    raise TypeError(f"{where}: expected a device array, got {type(value).__name__}")
                expected = np.int64 if kind == "lengths" else np.dtype(self.dtype)
                if value.dtype != expected:
                    raise TypeError(f"{where}: dtype {value.dtype}, expected {np.dtype(expected)}")
                if not value.flags.c_contiguous:
                    raise TypeError(f"{where}: not C-contiguous")
                if kind == "in":
                    self.module.read_pointers.add(value.ctypes.data)
                out.append(np.uint64(value.ctypes.data).tobytes())
            elif kind in _INDEX_ARRAY_DTYPES:
                expected = _INDEX_ARRAY_DTYPES[kind]
                if not isinstance(value, FakeArray):
                    raise TypeError(f"{where}: expected a device array, got {type(value).__name__}")
                if value.dtype != expected:
                    raise TypeError(f"{where}: dtype {value.dtype}, expected {np.dtype(expected)}")
                if not value.flags.c_contiguous:
                    raise TypeError(f"{where}: not C-contiguous")
                out.append(np.uint64(value.ctypes.data).tobytes())
            elif kind == "int":
                if type(value) is not np.int32:
                    raise TypeError(f"{where}: expected numpy.int32, got {type(value).__name__}")
                out.append(value.tobytes())
            else:
                if type(value) is not acc:
                    raise TypeError(f"{where}: expected numpy.{acc.__name__}, got {type(value).__name__}")
                out.append(value.tobytes())
        return out

    def __call__(
        self,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: tuple[Any, ...],
        shared_mem: int = 0,
        stream: Any = None,
        enable_cooperative_groups: bool = False,
    ) -> None:
        self._launch(grid, block, args, shared_mem, stream, enable_cooperative_groups)

    def _launch(
        self,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: tuple[Any, ...],
        shared_mem: int,
        stream: Any,
        cooperative: bool,
    ) -> None:
        if len(grid) != 1 or len(block) != 1 or grid[0] < 1 or not 1 <= block[0] <= 1024:
            raise ValueError(f"{self.name}: bad launch configuration grid={grid} block={block}")
        cluster = _cluster_size(self.name)
        if cluster > 1:
            allowed = self._function is not None and self._function.non_portable_cluster_size_allowed
            if int(self.module.compute_capability) < 90:
                raise RuntimeError(f"CUDA_ERROR_INVALID_CLUSTER_SIZE: {self.name}: no clusters before compute 9.0")
            if cooperative or grid[0] % cluster or (cluster > 8 and not allowed):
                raise RuntimeError(
                    f"CUDA_ERROR_INVALID_CLUSTER_SIZE: {self.name}: grid {grid[0]} in clusters of {cluster} "
                    f"(cooperative={cooperative}, non-portable size allowed={bool(allowed)})"
                )
        if cooperative:
            resident = self.module.multiprocessors * self.module.occupancy
            if grid[0] > resident:
                raise RuntimeError(
                    f"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: too many blocks in cooperative launch "
                    f"({self.name}: grid {grid[0]} > {resident} resident blocks)"
                )
        arg_bytes = self._arg_bytes(args)
        if stream is None:
            stream = self.module.cuda.get_current_stream()
        if self.module.fail_launch_named == self.name:
            raise RuntimeError(f"injected launch failure in {self.name}")
        if stream.recording is not None:
            if not self.loaded:
                raise RuntimeError(f"{self.name}: module loaded during stream capture")
            stream.recording.append((self.dtype, self.name, grid[0], block[0], arg_bytes, cooperative, shared_mem))
            return
        self.module.kernel_launches += 1
        self.module.launches_by_name[self.name] += 1
        if cooperative:
            self.module.cooperative_launches += 1
        self.loaded = True
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise RuntimeError(
                f"CUDA_ERROR_INVALID_VALUE: {self.name} asks for {shared_mem} bytes of dynamic shared memory, "
                f"its limit is {self.max_dynamic_shared_size_bytes} (set max_dynamic_shared_size_bytes)"
            )
        cuda_emulator.launch(self.dtype, self.name, grid[0], block[0], arg_bytes, cooperative, shared_mem, cluster)


#: cuBLAS's enumerations the fake understands (cublas_api.h, library_types.h)
_CUBLAS_DTYPES = {2: np.float16, 0: np.float32, 1: np.float64}
_CUBLAS_COMPUTE = {68: np.float32, 77: np.float32, 70: np.float64}


def _column_major(pointer: int, dtype: Any, rows: int, cols: int, ld: int) -> np.ndarray:
    """The ``rows x cols`` column-major matrix with leading dimension ``ld`` at host address ``pointer`` (a view)."""
    item = np.dtype(dtype).itemsize
    count = (cols - 1) * ld + rows
    raw = np.ctypeslib.as_array((ctypes.c_char * (count * item)).from_address(pointer))
    flat = np.frombuffer(raw, dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(item, ld * item))


class FakeGemmNode:
    """A ``cublasGemmEx`` as a captured graph node: its arguments, run on replay."""

    def __init__(self, fake: FakeCublas, args: tuple[Any, ...]) -> None:
        self.fake, self.args = fake, args

    def run(self) -> None:
        self.fake._compute(*self.args)


class FakeCublas:
    """``cupy_blas.Library`` on the CPU, with cuBLAS's rules that a CPU run would not enforce:

    * ``set_stream`` resets the workspace (as ``cublasSetStream`` does): a product recorded while a stream captures
      must have had ``set_workspace`` after it, or cuBLAS would allocate memory during capture;
    * a product of a shape never run outside capture fails during capture (the kernel cuBLAS picks would be
      loaded during capture: ``cupy_blas.warm_up`` must run first);
    * scalars must be NumPy scalars of the compute type; leading dimensions must fit the matrices (column-major);
    * outside capture the product runs at once (``numpy.matmul`` on the column-major views, in float64).
    """

    def __init__(self, module: FakeCupy) -> None:
        self.module = module
        self.handles: dict[int, dict[str, Any]] = {}
        self.warm: set[tuple[Any, ...]] = set()
        self.direct_calls = 0
        self.recorded_calls = 0

    def create(self) -> int:
        handle = 0x5000 + len(self.handles)
        self.handles[handle] = {"stream": None, "workspace": None}
        return handle

    def _state(self, handle: int) -> dict[str, Any]:
        if handle not in self.handles:
            raise RuntimeError(f"CUBLAS_STATUS_NOT_INITIALIZED: handle {handle:#x}")
        return self.handles[handle]

    def set_stream(self, handle: int, stream: int) -> None:
        if stream not in self.module._streams:
            raise RuntimeError(f"cublasSetStream: no stream {stream}")
        state = self._state(handle)
        state["stream"], state["workspace"] = self.module._streams[stream], None

    def set_workspace(self, handle: int, pointer: int, size: int) -> None:
        if pointer == 0 or size <= 0:
            raise RuntimeError("cublasSetWorkspace: empty workspace")
        self._state(handle)["workspace"] = (pointer, size)

    def gemm_ex(self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: Any,
                a: int, a_type: int, lda: int, b: int, b_type: int, ldb: int, beta: Any,
                c: int, c_type: int, ldc: int, compute_type: int) -> None:  # fmt: skip
        state = self._state(handle)
        if state["stream"] is None:
            raise RuntimeError("cublasGemmEx: no stream set on the handle")
        if not (a_type == b_type == c_type) or a_type not in _CUBLAS_DTYPES or compute_type not in _CUBLAS_COMPUTE:
            raise RuntimeError(f"CUBLAS_STATUS_NOT_SUPPORTED: types {a_type}, {b_type}, {c_type}, {compute_type}")
        scalar = _CUBLAS_COMPUTE[compute_type]
        if type(alpha) is not scalar or type(beta) is not scalar:
            raise TypeError(f"cublasGemmEx: alpha/beta must be numpy.{scalar.__name__}")
        if (_CUBLAS_DTYPES[a_type] is np.float64) != (scalar is np.float64):
            raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED: float64 data needs the float64 compute type")
        a_rows = m if transa == 0 else k
        b_rows = k if transb == 0 else n
        if min(m, n, k) < 1 or lda < max(1, a_rows) or ldb < max(1, b_rows) or ldc < max(1, m):
            raise RuntimeError(f"CUBLAS_STATUS_INVALID_VALUE: m={m} n={n} k={k} lda={lda} ldb={ldb} ldc={ldc}")
        args = (transa, transb, m, n, k, alpha, a, a_type, lda, b, ldb, beta, c, ldc)
        shape = (transa, transb, m, n, k, lda, ldb, ldc, a_type, compute_type)
        stream = state["stream"]
        if stream.recording is not None:
            if state["workspace"] is None:
                raise RuntimeError("cublasGemmEx during capture without cublasSetWorkspace after cublasSetStream")
            if shape not in self.warm:
                raise RuntimeError(f"cublasGemmEx during capture of a shape never run before (kernel load): {shape}")
            stream.recording.append(FakeGemmNode(self, args))
            self.recorded_calls += 1
            return
        self.warm.add(shape)
        self.direct_calls += 1
        self._compute(*args)

    def _compute(self, transa, transb, m, n, k, alpha, a, a_type, lda, b, ldb, beta, c, ldc) -> None:  # noqa: ANN001
        dtype = _CUBLAS_DTYPES[a_type]
        a_matrix = _column_major(a, dtype, *((m, k) if transa == 0 else (k, m)), lda)
        b_matrix = _column_major(b, dtype, *((k, n) if transb == 0 else (n, k)), ldb)
        c_matrix = _column_major(c, dtype, m, n, ldc)
        op_a = a_matrix if transa == 0 else a_matrix.T
        op_b = b_matrix if transb == 0 else b_matrix.T
        product = float(alpha) * (op_a.astype(np.float64) @ op_b.astype(np.float64))
        if float(beta) != 0.0:
            product += float(beta) * c_matrix.astype(np.float64)
        c_matrix[...] = product.astype(dtype)


class FakeCupy(types.ModuleType):
    """``fake = FakeCupy()`` behaves like ``import cupy`` for the fast paths."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.captures_begun = 0
        self.captures_open = 0
        self.graph_launches = 0
        self.kernel_launches = 0
        #: direct launches per kernel name (captured ones are in the graph)
        self.launches_by_name: collections.Counter[str] = collections.Counter()
        #: cooperative launches run directly (counted in ``kernel_launches`` too; captured ones are in the graph)
        self.cooperative_launches = 0
        self.multiprocessors = DEFAULT_MULTIPROCESSORS
        self.occupancy = DEFAULT_OCCUPANCY
        self.compute_capability = DEFAULT_COMPUTE_CAPABILITY
        self._functions: dict[int, FakeFunction] = {}
        self.fail_end_capture = False
        self.fail_launch_named: str | None = None
        self.read_pointers: set[int] = set()
        self._streams: dict[int, FakeStream] = {}
        self._null = FakeStream(self, null=True)
        self.cublas = FakeCublas(self)
        self._stream_stack: list[FakeStream] = []
        module = self

        cuda = types.SimpleNamespace()
        cuda.Stream = lambda null=False, non_blocking=False: FakeStream(module, null, non_blocking)
        cuda.get_current_stream = lambda: module._stream_stack[-1] if module._stream_stack else module._null
        cuda.Device = FakeDevice
        cuda.driver = types.SimpleNamespace(
            occupancyMaxActiveBlocksPerMultiprocessor=self._occupancy, funcSetAttribute=self._set_attribute
        )
        self.cuda = cuda
        self.float16, self.float32, self.float64, self.int64 = np.float16, np.float32, np.float64, np.int64
        self.uint32 = np.uint32
        global _current
        _current = self

    def _occupancy(self, func: int, block_size: int, dynamic_smem: int) -> int:
        """``cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor``: ``fake.occupancy`` for a loaded kernel."""
        if func not in self._functions:
            raise RuntimeError(f"CUDA_ERROR_INVALID_HANDLE: {func!r} is not a loaded function")
        if not 1 <= block_size <= 1024 or dynamic_smem < 0:
            raise RuntimeError(
                f"CUDA_ERROR_INVALID_VALUE: block size {block_size}, dynamic shared memory {dynamic_smem}"
            )
        return self.occupancy

    def kernel_launches_named(self, fragment: str) -> int:
        """Direct launches of kernels whose name contains ``fragment``."""
        return sum(count for name, count in self.launches_by_name.items() if fragment in name)

    def _set_attribute(self, func: int, attribute: int, value: int) -> None:
        """``cupy.cuda.driver.funcSetAttribute``: only the non-portable cluster size is modelled."""
        if func not in self._functions:
            raise RuntimeError(f"CUDA_ERROR_INVALID_HANDLE: {func!r} is not a loaded function")
        if attribute != NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
            raise NotImplementedError(f"the fake models function attribute {NON_PORTABLE_CLUSTER_SIZE_ALLOWED} only")
        self._functions[func].non_portable_cluster_size_allowed = int(value)

    def _capturing(self) -> bool:
        return self.cuda.get_current_stream().recording is not None

    def RawKernel(self, code: str, name: str, options: tuple[str, ...] = ()) -> FakeRawKernel:  # noqa: N802
        return FakeRawKernel(self, code, name, options)

    def empty(self, shape: Any, dtype: Any = np.float64) -> FakeArray:
        # poison: kernels must write every element they are responsible for
        array = np.empty(shape, dtype=dtype)
        if np.issubdtype(array.dtype, np.floating):
            array.fill(np.nan)
        elif array.dtype == np.int64:
            array.fill(-(2**40))
        else:
            array.fill(np.iinfo(array.dtype).max)
        return array.view(FakeArray)

    def asarray(self, array: Any, dtype: Any = None) -> FakeArray:
        return np.array(array, dtype=dtype, copy=True).view(FakeArray)

    def ones(self, shape: Any, dtype: Any = np.float64) -> FakeArray:
        return np.ones(shape, dtype=dtype).view(FakeArray)

    def zeros(self, shape: Any, dtype: Any = np.float64) -> FakeArray:
        return np.zeros(shape, dtype=dtype).view(FakeArray)

    def ascontiguousarray(self, array: Any, dtype: Any = None) -> FakeArray:
        result = np.ascontiguousarray(array, dtype=dtype)
        return result if isinstance(result, FakeArray) else result.view(FakeArray)

    def matmul(self, a: Any, b: Any, out: Any = None) -> FakeArray:
        if self._capturing():
            raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
        if out is not None:
            if not out.flags.c_contiguous:
                raise ValueError("out must be C-contiguous")
            np.matmul(a, b, out=out)
            return out
        return np.matmul(a, b).view(FakeArray)

    def copyto(self, dst: Any, src: Any, casting: str = "same_kind") -> None:
        np.copyto(dst, src, casting=casting)

    # used once per call by the gradient path (cupy_grad), outside the time loop
    def concatenate(self, arrays: Any, axis: int = 0) -> FakeArray:
        return np.concatenate([np.asarray(a) for a in arrays], axis=axis).view(FakeArray)

    def where(self, condition: Any, x: Any, y: Any) -> FakeArray:
        return np.where(condition, x, y).view(FakeArray)

    def arange(self, *args: Any, **kwargs: Any) -> FakeArray:
        return np.arange(*args, **kwargs).view(FakeArray)


@contextlib.contextmanager
def installed(monkeypatch: Any):
    """Make the fast paths use a fresh FakeCupy, the experimental paths too where ``experimental/`` is present; every
    cache of the CuPy runtime (kernels, placeholders, plans, per-device limits, cuBLAS handles) is emptied before
    and after, so nothing made with another CuPy is found."""
    import importlib

    from arrayrnn._backends.cupy import common as cupy_common
    from arrayrnn._backends.cupy import runtime

    global _current
    previous = _current
    fake = FakeCupy()
    monkeypatch.setattr(cupy_common, "cupy_module", lambda: fake)
    names = [f"arrayrnn._backends.cupy.{name}" for name in ("fused", "graph", "grad_fused", "grad_graph")]
    if _cluster_sources is not None:
        experimental = ("blas", "fused_graph", "grad_fused_graph", "persistent", "executor", "cluster", "grad_cluster")
        names += [f"{_EXPERIMENTAL}.{name}" for name in experimental]
    modules = {name.rpartition(".")[2]: importlib.import_module(name) for name in names}
    for module in modules.values():
        monkeypatch.setattr(module, "cupy_module", lambda: fake)
    if _cluster_sources is not None:
        monkeypatch.setattr(modules["blas"], "library", lambda: fake.cublas)
    runtime.reset()
    try:
        yield fake
    finally:
        runtime.reset()
        _current = previous
