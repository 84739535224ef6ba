"""First check on a GPU machine (ci/gpu.sh): compile and load every CuPy kernel, then run each fast path once
(forward paths and the gradient path).

Prints one line per kernel (registers, local memory = spills) and one line per path with its largest
difference from the generic core, so a broken kernel shows up in seconds, before the test suite runs.
Exit status 1 if anything failed.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import time
import traceback
from typing import Any

import numpy as np

#: the source parts each dtype compiles (the gradient paths, and so the executor, run float32/float64 only)
FLOAT16_PARTS = ("forward", "tiled", "persistent", "cluster")


def _sources() -> Any:
    """``sources`` with every part registered (importing ``experimental`` registers its parts)."""
    from arrayrnn._backends.cupy import experimental  # noqa: F401
    from arrayrnn._backends.cupy import sources as cupy_sources

    return cupy_sources


def _compile_part(dtype: str, part: str) -> float:
    """Compile one (dtype, part) module in this process (CuPy's kernel cache on disk keeps it for every other
    process on this machine). Returns the seconds it took."""
    from arrayrnn._backends.cupy import common as cupy_common

    cupy_sources = _sources()
    start = time.perf_counter()
    name = next(name for name in cupy_sources.kernel_specs() if cupy_sources.part_of(name) == part)
    cupy_common.kernel(name, dtype).compile()
    return time.perf_counter() - start


def precompile() -> int:
    """Compile every (dtype, part) module at once in a process pool: NVRTC is single-threaded and the device
    machine has 16 cores (one after another this took most of the smoke phase's time). Returns failures."""
    cupy_sources = _sources()
    jobs = [(dtype, part) for dtype in ("float32", "float64", "float16") for part in cupy_sources.parts()
            if dtype != "float16" or part in FLOAT16_PARTS]  # fmt: skip
    start, failures = time.perf_counter(), 0
    context = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(len(jobs), 12), mp_context=context) as pool:
        futures = {pool.submit(_compile_part, dtype, part): (dtype, part) for dtype, part in jobs}
        for future in concurrent.futures.as_completed(futures):
            dtype, part = futures[future]
            try:
                print(f"  compiled {dtype:8} {part:13} in {future.result():5.1f} s")
            except Exception:
                failures += 1
                print(f"FAILED to compile {dtype} {part}:")
                traceback.print_exc(limit=2)
    print(f"precompiled {len(jobs)} modules in {time.perf_counter() - start:.1f} s (wall)")
    return failures


def trying(impl: str, what: str) -> None:
    """Say which path runs next, before it runs: a kernel that hangs leaves this as the log's last such line, and
    ``ci/gpu.sh`` then leaves that path out of the later phases (``> trying IMPL ...``: IMPL is the third word)."""
    print(f"> trying {impl} {what}", flush=True)


def main() -> int:
    from arrayrnn._backends.cupy import policy

    # a timed-out grid barrier raises instead of giving wrong numbers
    with policy.configured(persistent_check_barrier=True):
        return smoke()


def smoke() -> int:
    import cupy

    import arrayrnn as ar
    from arrayrnn._backends.cupy import common as cupy_common
    from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster
    from arrayrnn._backends.cupy.experimental import cluster_sources
    from arrayrnn._backends.cupy.experimental import persistent as cupy_persistent

    cupy_sources = _sources()

    print(f"cupy {cupy.__version__}, device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    failures = precompile()
    clusters = int(cupy.cuda.Device().compute_capability) >= 90  # thread block clusters: Hopper and later
    try:  # the cuBLAS that the fused_graph paths call through ctypes (the one CuPy loaded)
        from arrayrnn._backends.cupy.experimental import blas as cupy_blas

        cupy_blas.library()
        print(f"cuBLAS for captured products: {cupy_blas._loaded_cublas_path()}")
    except Exception:
        failures += 1
        print("FAILED to load cuBLAS for the captured products (fused_graph):")
        traceback.print_exc(limit=3)
    forward_impls = (
        "fused",
        "fused_graph",
        "graph",
        "tiled",
        "persistent",
        *(("cluster",) if clusters else ()),
        "auto",
    )
    for dtype in ("float32", "float64", "float16"):
        start = time.perf_counter()
        for name in cupy_sources.kernel_specs():
            if dtype == "float16" and cupy_sources.part_of(name) not in FLOAT16_PARTS:
                continue
            try:
                attributes = cupy_common.kernel(name, dtype).attributes
                shown = ("fused", "grad", "record")
                cluster = cluster_sources.cluster_size(name) > 1
                if name.endswith(("_nb8", "persistent_nb1", "_nb1_c8")) or (
                    not cluster and any(word in name for word in shown)
                ):
                    print(
                        f"  {dtype:8} {name:28} regs {attributes['num_regs']:3}  "
                        f"local {attributes['local_size_bytes']} B"
                    )
            except Exception:
                failures += 1
                print(f"FAILED to compile/load {name} ({dtype}):")
                traceback.print_exc(limit=2)
                break
        print(f"{dtype}: all kernels loaded in {time.perf_counter() - start:.1f} s")

    rng = np.random.default_rng(0)
    init = {"rnn": ar.init_rnn, "lstm": ar.init_lstm, "gru": ar.init_gru}
    run = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
    for kind in ("rnn", "lstm", "gru"):
        for dtype, tolerance in (("float32", 1e-4), ("float64", 1e-10)):
            params = init[kind](16, 32, seed=1, dtype=dtype, backend="cupy")
            x = cupy.asarray(rng.standard_normal((20, 3, 16)).astype(dtype))
            lengths = cupy.asarray([20, 7, 0])
            reference = run[kind](x, params, lengths=lengths, impl="generic")[0]
            for impl in forward_impls:
                trying(impl, f"forward {kind} {dtype}")
                try:
                    y = run[kind](x, params, lengths=lengths, impl=impl)[0]
                    error = float(cupy.max(cupy.abs(y - reference)))
                    status = "ok" if error <= tolerance else "MISMATCH"
                    failures += status != "ok"
                    print(f"  {kind:4} {dtype:8} {impl:10} max |fast - generic| = {error:.2e}  {status}")
                except Exception:
                    failures += 1
                    print(f"  {kind:4} {dtype:8} {impl:10} FAILED:")
                    traceback.print_exc(limit=3)
    # the grid barrier alone (both flavours), as the benchmark will run it
    for acqrel in (False, True):
        trying("persistent", "grid barrier")
        try:
            run_barriers = cupy_persistent.barrier_bench(blocks=16, threads=256, steps=100, acqrel=acqrel)
            run_barriers()
            cupy.cuda.get_current_stream().synchronize()
            print(f"  grid barrier ({'release/acquire' if acqrel else 'fences'}): 100 barriers on 16 blocks ran")
        except Exception:
            failures += 1
            print(f"  grid barrier ({'release/acquire' if acqrel else 'fences'}) FAILED:")
            traceback.print_exc(limit=3)
    # the cluster barrier alone, at every cluster size (16 needs the non-portable opt-in)
    for size in (2, 4, 8, 16) if clusters else ():
        trying("cluster", f"cluster barrier of {size} blocks")
        try:
            cupy_cluster.barrier_bench(size, threads=256, steps=100)()
            cupy.cuda.get_current_stream().synchronize()
            print(f"  cluster barrier: 100 barriers in one cluster of {size} blocks ran")
        except Exception:
            failures += 1
            print(f"  cluster barrier ({size} blocks) FAILED:")
            traceback.print_exc(limit=3)
    # the gradient path (cupy_grad): ar.vjp with the default impl against the generic core
    for kind in ("rnn", "lstm", "gru"):
        for dtype, tolerance in (("float32", 1e-4), ("float64", 1e-10)):
            params = init[kind](16, 32, seed=2, dtype=dtype, backend="cupy")
            x = cupy.asarray(rng.standard_normal((20, 3, 16)).astype(dtype))
            dy = cupy.asarray(rng.standard_normal((20, 3, 32)).astype(dtype))
            lengths = cupy.asarray([20, 7, 0])
            grads = {}
            paths = ("fused", "fused_graph", "graph", "persistent", *(("cluster",) if clusters else ()))
            for impl in ("generic", *paths):
                trying(impl, f"vjp {kind} {dtype}")
                try:
                    _, pullback = ar.vjp(run[kind], x, params, lengths=lengths, reverse=True, impl=impl)
                    dx, d_params = pullback((dy, None))
                    grads[impl] = (dx, d_params.weight_hh, d_params.weight_ih, d_params.bias_hh)
                    if impl == "generic":
                        continue
                    error = max(
                        float(cupy.max(cupy.abs(a - b))) / max(1.0, float(cupy.max(cupy.abs(b))))
                        for a, b in zip(grads[impl], grads["generic"])
                    )
                    status = "ok" if error <= tolerance else "MISMATCH"
                    failures += status != "ok"
                    print(f"  {kind:4} {dtype:8} vjp {impl:10} max rel |fast - generic| = {error:.2e}  {status}")
                except Exception:
                    failures += 1
                    print(f"  {kind:4} {dtype:8} vjp {impl:10} FAILED:")
                    traceback.print_exc(limit=3)
    print("smoke: OK" if not failures else f"smoke: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
