"""GPU benchmark: arrayrnn's CuPy paths against torch/cuDNN with the same weights, float32 with TF32 off.

For LSTM, GRU and RNN over the (T, B, I, H) grid below, times the forward pass of cuDNN (``torch.nn``)
and of every arrayrnn CuPy implementation ("generic", "fused", "fused_graph", "graph", "tiled", "persistent",
"cluster", and "auto", the per-call choice users get), then forward+backward (torch autograd vs
``arrayrnn.vjp``: the CuPy gradient path, and the generic core for scale), the barriers alone, sweeps of the
cluster and persistent kernels' knobs (cluster size, threads per block, batch tile), and a float16 subset. Every
implementation's output is first compared with cuDNN's (``rel_diff`` = max |ours - cuDNN| / max |cuDNN|);
a result that disagrees is still timed but marked ``ok: false``.

Timing: CUDA events around each call (which also captures host-side launch gaps: the GPU is idle when
the start event is recorded), after warm-up (compilation, graph capture, cuDNN plans); the median of
3-30 calls (fewer for slow paths, so the whole run fits ``--budget`` seconds). Each arrayrnn path is
timed alternately with cuDNN, call for call, and its ``paired_ratio`` is the median of the per-pair
ratios (clock or load drift hits both sides alike); cuDNN's own row is a plain median. The JSON is
rewritten after every measurement, so a run cut short still leaves its results.

    python benchmarks/gpu_bench.py --out gpu_bench.json [--budget 175] [--kinds lstm,gru,rnn]
    python benchmarks/gpu_bench.py --dry-run --out /tmp/b.json   # CPU: numpy + torch CPU, checks the script
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Optional

os.environ.setdefault("CUPY_TF32", "0")  # read when CuPy is imported: full float32 matmuls

import numpy as np  # noqa: E402

SHAPES = [
    (100, 1, 64, 128),
    (100, 1, 64, 256),
    (100, 8, 128, 256),
    (500, 32, 128, 128),
    (100, 64, 256, 512),
    (100, 256, 1024, 1024),
    (50, 4096, 256, 256),
]
FLOAT16_SHAPES = [(100, 8, 128, 256), (100, 256, 1024, 1024)]
KINDS = ("lstm", "gru", "rnn")
IMPLS = ("generic", "fused", "fused_graph", "graph", "tiled", "persistent", "cluster", "auto")
#: the benchmark's sections, in the order they run (--sections picks some)
SECTIONS = ("forward", "backward", "breakdown", "barrier", "cluster_sweep", "persistent_sweep", "float16")
#: aim for this much timed work per measurement; repeats are clamped to [MIN_REPEATS, MAX_REPEATS]
TARGET_SECONDS = 0.2
MIN_REPEATS, MAX_REPEATS = 3, 30
#: a forward that agrees with cuDNN to this relative difference is "ok" (float32, TF32 off)
REL_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


@contextlib.contextmanager
def overridden(module: Any, **values: Any):
    """Set module attributes (functions wrapped for timing) for the duration of a block, and put the old ones back
    whatever happens. (The fast paths' knobs are ``policy.Config`` fields: ``policy.configured``.)"""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def choose_repeats(seconds_per_call: float) -> int:
    if seconds_per_call <= 0:
        return MAX_REPEATS
    return int(min(MAX_REPEATS, max(MIN_REPEATS, TARGET_SECONDS / seconds_per_call)))


def rel_diff(ours: np.ndarray, reference: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(reference))), 1e-30) if reference.size else 1.0
    difference = np.abs(ours - reference)
    if np.isnan(difference).any():
        return float("inf")
    return float(np.max(difference)) / scale if difference.size else 0.0


class Machine:
    """Where arrays live and how time is measured: CuPy + CUDA events, or (dry run) NumPy + wall clock."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.dry_run = dry_run
        self.torch = torch
        self.torch_device = "cpu" if dry_run else "cuda"
        if dry_run:
            self.backend = "numpy"
            self.cupy = None
        else:
            import cupy

            self.cupy = cupy
            self.backend = "cupy"
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
            torch.set_float32_matmul_precision("highest")

    def asarray(self, array: np.ndarray) -> Any:
        return np.array(array) if self.dry_run else self.cupy.asarray(array)

    def numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array) if self.dry_run else self.cupy.asnumpy(array)

    def sync(self) -> None:
        if not self.dry_run:
            self.cupy.cuda.get_current_stream().synchronize()
            self.torch.cuda.synchronize()

    def time_calls(self, function: Callable[[], Any], warmup: int = 1, for_torch: bool = False) -> dict[str, Any]:
        """Median/min milliseconds of ``function()`` (after warm-up), with adaptive repeats."""
        for _ in range(warmup):
            function()
        self.sync()
        first = self._one(function, for_torch)
        repeats = choose_repeats(first / 1e3)
        times = [first] + [self._one(function, for_torch) for _ in range(repeats - 1)]
        return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": len(times)}

    def time_pairs(self, function: Callable[[], Any], reference: Callable[[], Any], warmup: int = 1) -> dict[str, Any]:
        """``function`` (arrayrnn, CuPy) and ``reference`` (torch) timed alternately, call for call: the ratio is
        the median of the per-pair ratios, so a clock or load change during the run hits both sides alike."""
        for _ in range(warmup):
            reference()
            function()
        self.sync()
        references, times = [self._one(reference, True)], [self._one(function, False)]
        repeats = choose_repeats((references[0] + times[0]) / 1e3)
        for _ in range(repeats - 1):
            references.append(self._one(reference, True))
            times.append(self._one(function, False))
        return {
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "repeats": len(times),
            "reference_median_ms": statistics.median(references),
            "paired_ratio": statistics.median(t / r for t, r in zip(times, references)),
        }

    def _one(self, function: Callable[[], Any], for_torch: bool) -> float:
        if self.dry_run:
            start = time.perf_counter()
            function()
            return (time.perf_counter() - start) * 1e3
        if for_torch:
            start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        start.record()
        function()
        end.record()
        end.synchronize()
        return float(self.cupy.cuda.get_elapsed_time(start, end))

    def describe(self) -> dict[str, Any]:
        torch = self.torch
        info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
        if self.dry_run:
            info["device"] = "CPU (dry run)"
            return info
        cupy = self.cupy
        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info.update(
            device=properties["name"].decode(),
            compute_capability=f"{properties['major']}.{properties['minor']}",
            multiprocessors=properties["multiProcessorCount"],
            cuda_driver=cupy.cuda.runtime.driverGetVersion(),
            cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
            torch_device=torch.cuda.get_device_name(0),
        )
        return info


def versions(machine: Machine) -> dict[str, Any]:
    import arrayrnn

    torch = machine.torch
    found: dict[str, Any] = {
        "arrayrnn": arrayrnn.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cudnn": None if machine.dry_run else torch.backends.cudnn.version(),
    }
    if machine.cupy is not None:
        found["cupy"] = machine.cupy.__version__
    if os.environ.get("ARRAYRNN_GIT_COMMIT"):  # set by ci/gpu.sh from the wheels' build (ci/gpu-prepare.sh)
        found["git_commit"] = os.environ["ARRAYRNN_GIT_COMMIT"]
        return found
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        found["git_commit"] = (
            subprocess.run(
                ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except Exception:
        found["git_commit"] = None
    return found


def release_plans(machine: Machine) -> None:
    """Drop the cached CUDA-graph plans of earlier problems (each holds buffers the size of a whole sequence; a new
    problem's weights are new arrays, so those plans would never run again) and the memory pool's free blocks."""
    if machine.dry_run:
        return
    from arrayrnn._backends.cupy import runtime

    runtime.reset(runtime.PLANS)  # every path's plans; the compiled kernels stay
    machine.cupy.get_default_memory_pool().free_all_blocks()


class Problem:
    """One (cell, shape, dtype): the same weights and input for arrayrnn and torch."""

    def __init__(self, machine: Machine, kind: str, shape: tuple[int, int, int, int], dtype: str, seed: int = 0):
        import arrayrnn as ar

        release_plans(machine)

        steps, batch, features, hidden = shape
        self.machine, self.kind, self.shape, self.dtype = machine, kind, shape, dtype
        init = {"rnn": ar.init_rnn, "lstm": ar.init_lstm, "gru": ar.init_gru}[kind]
        # drawn and kept in float32 on the host, cast once: both sides get exactly the same numbers
        host_params = init(features, hidden, seed=seed, dtype="float32", backend="numpy")
        rng = np.random.default_rng(seed + 1)
        host_x = rng.standard_normal((steps, batch, features)).astype(np.float32)
        host_dy = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
        from arrayrnn.backend import map_arrays

        self.params = map_arrays(lambda a: machine.asarray(a.astype(dtype)), host_params)
        self.x = machine.asarray(host_x.astype(dtype))
        self.dy = machine.asarray(host_dy.astype(dtype))
        self.function = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}[kind]
        torch = machine.torch
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](features, hidden)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(module, f"{name}_l0").copy_(torch.from_numpy(getattr(host_params, name)))
        torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
        self.layer = module.to(device=machine.torch_device, dtype=torch_dtype)
        self.torch_x = torch.from_numpy(host_x).to(device=machine.torch_device, dtype=torch_dtype)
        self.torch_dy = torch.from_numpy(host_dy).to(device=machine.torch_device, dtype=torch_dtype)

    # forward ------------------------------------------------------------------------------------
    def torch_forward(self) -> Any:
        with self.machine.torch.no_grad():
            return self.layer(self.torch_x)

    def ours_forward(self, impl: str) -> Any:
        return self.function(self.x, self.params, impl=impl)

    def torch_output(self) -> np.ndarray:
        y, _ = self.torch_forward()
        return y.float().cpu().numpy()

    def ours_output(self, impl: str) -> np.ndarray:
        y, _ = self.ours_forward(impl)
        return self.machine.numpy(y).astype(np.float32)

    # forward + backward ---------------------------------------------------------------------------
    def torch_forward_backward(self) -> Any:
        self.layer.zero_grad(set_to_none=True)
        y, _ = self.layer(self.torch_x)
        y.backward(self.torch_dy)
        return self.layer.weight_hh_l0.grad

    def ours_forward_backward(self, impl: str = "auto") -> Any:
        """``arrayrnn.vjp``: the cotangent is dy on y, nothing on the states.

        ``impl="auto"``: the CuPy gradient path chosen per call; ``"fused"`` / ``"graph"`` / ``"persistent"``: the
        gradient paths (``_backends/cupy/grad_fused.py``, ``grad_graph.py`` replayed as graphs or run by the graph
        executor); ``"generic"``: the array-API recording core.
        """
        import arrayrnn as ar

        _, pullback = ar.vjp(self.function, self.x, self.params, impl=impl)
        return pullback(self.cotangent())[1].weight_hh

    def cotangent(self) -> tuple[Any, Any]:
        """The output cotangent of the forward+backward measurements: dy on y, nothing on the final state."""
        return self.dy, (None, None) if self.kind == "lstm" else None


class Report:
    def __init__(self, path: str, header: dict[str, Any]) -> None:
        self.path = path
        self.data = {**header, "results": []}
        self.save()

    def add(self, entry: dict[str, Any]) -> None:
        self.data["results"].append(entry)
        self.save()
        shape = "x".join(str(n) for n in entry["shape"])
        status = entry.get("error") or entry.get("skipped")
        if status is None:
            difference = entry.get("rel_diff")
            agreement = (
                "" if difference is None else f"  rel_diff {difference:.1e} {'ok' if entry['ok'] else 'MISMATCH'}"
            )
            status = f"{entry['median_ms']:9.3f} ms{agreement}"
        print(f"{entry['cell']:4} {shape:>18} {entry['dtype']:7} {entry['direction']:16} {entry['impl']:12} {status}")

    def save(self) -> None:
        # one write of the finished text (no temporary file: the device tool returns at most 8 files)
        text = json.dumps(self.data, indent=1, default=str)
        with open(self.path, "w") as handle:
            handle.write(text)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def measure(
    report: Report,
    budget: Budget,
    base: dict[str, Any],
    impl: str,
    run: Callable[[], Any],
    machine: Machine,
    check: Optional[Callable[[], float]] = None,
    tolerance: Optional[float] = None,
    for_torch: bool = False,
    reserve: float = 0.0,
    reference: Optional[Callable[[], Any]] = None,
) -> Optional[dict[str, Any]]:
    """Check (optional) and time ``run``; with ``reference`` (cuDNN), alternately with it (``paired_ratio``)."""
    entry = {**base, "impl": impl}
    if budget.left() <= reserve:
        report.add({**entry, "skipped": "time budget"})
        return None
    try:
        if check is not None:
            difference = check()
            entry["rel_diff"] = difference
            entry["ok"] = bool(difference <= tolerance)
        if reference is not None:
            entry.update(machine.time_pairs(run, reference))
        else:
            entry.update(machine.time_calls(run, for_torch=for_torch))
    except Exception as error:  # record and go on: one broken path must not cost the whole run
        entry["error"] = f"{type(error).__name__}: {error}"
        entry["traceback"] = traceback.format_exc(limit=4)
    report.add(entry)
    return entry


def _cluster_shared(machine: Machine) -> int:
    """What auto's choice assumes of the GPU's thread block clusters (``policy.choose_impl``)."""
    from arrayrnn._backends.cupy import policy
    from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster

    if machine.dry_run or not policy.current().cluster_auto:
        return 0
    return cupy_cluster.cluster_shared_limit()


def forward_section(report, budget, machine, kinds, shapes, dtype, impls, reserve):
    from arrayrnn._backends.cupy import policy

    for kind in kinds:
        for shape in shapes:
            if budget.left() <= reserve:
                report.add({"cell": kind, "shape": list(shape), "dtype": dtype, "direction": "forward",
                            "impl": "all", "skipped": "time budget"})  # fmt: skip
                continue
            base = {"cell": kind, "shape": list(shape), "dtype": dtype, "direction": "forward"}
            try:
                problem = Problem(machine, kind, shape, dtype)
                reference = problem.torch_output()
            except Exception as error:
                report.add({**base, "impl": "setup", "error": f"{type(error).__name__}: {error}"})
                continue
            measure(report, budget, base, "cudnn", problem.torch_forward, machine, for_torch=True, reserve=reserve)
            steps, batch, _, hidden = shape
            auto_choice = policy.choose_impl(
                kind, steps=steps, batch=batch, hidden=hidden, dtype=dtype, cluster_shared=_cluster_shared(machine)
            )
            for impl in impls:
                extra = {"auto_choice": auto_choice} if impl == "auto" else {}
                measure(
                    report,
                    budget,
                    {**base, **extra},
                    impl,
                    lambda impl=impl, problem=problem: problem.ours_forward(impl),
                    machine,
                    check=lambda impl=impl, problem=problem, reference=reference: rel_diff(
                        problem.ours_output(impl), reference
                    ),
                    tolerance=REL_TOLERANCE[dtype],
                    reserve=reserve,
                    reference=problem.torch_forward,
                )


#: (entry name, impl) of the forward+backward measurements of arrayrnn.vjp
VJP_IMPLS = (
    ("vjp", "auto"),
    ("vjp-fused", "fused"),
    ("vjp-fused_graph", "fused_graph"),
    ("vjp-graph", "graph"),
    ("vjp-persistent", "persistent"),
    ("vjp-cluster", "cluster"),
    ("vjp-generic", "generic"),
)


def backward_section(report, budget, machine, kinds, shapes, reserve, vjp_impls=VJP_IMPLS):
    import arrayrnn as ar
    from arrayrnn._backends.cupy import policy

    has_vjp = hasattr(ar, "vjp")
    for kind in kinds:
        for shape in shapes:
            base = {"cell": kind, "shape": list(shape), "dtype": "float32", "direction": "forward+backward"}
            try:
                problem = Problem(machine, kind, shape, "float32")
            except Exception as error:
                report.add({**base, "impl": "setup", "error": f"{type(error).__name__}: {error}"})
                continue
            measure(
                report, budget, base, "cudnn", problem.torch_forward_backward, machine, for_torch=True, reserve=reserve
            )
            if not has_vjp:
                report.add({**base, "impl": "vjp", "skipped": "arrayrnn.vjp does not exist yet"})
                continue

            # "vjp": the default (on CuPy the gradient path auto picks, "graph" or "fused"); the two paths
            # themselves; "vjp-generic": the array-API core, for scale
            steps, batch, _, hidden = shape
            shared = _cluster_shared(machine)
            forward_choice = policy.choose_impl(
                kind,
                steps=steps * policy.current().grad_buffer_factor,
                batch=batch,
                hidden=hidden,
                dtype="float32",
                cluster_shared=shared,
            )
            auto_choice = policy.grad_choice(
                kind, forward_choice, batch=batch, hidden=hidden, dtype="float32", cluster_shared=shared
            )
            for name, impl in vjp_impls:

                def check(problem=problem, impl=impl):
                    reference = problem.torch_forward_backward().float().cpu().numpy()
                    return rel_diff(machine.numpy(problem.ours_forward_backward(impl)).astype(np.float32), reference)

                def run(problem=problem, impl=impl):
                    return problem.ours_forward_backward(impl)

                extra = {"auto_choice": auto_choice} if impl == "auto" else {}
                measure(report, budget, {**base, **extra}, name, run, machine, check=check, tolerance=1e-3,
                        reserve=reserve, reference=problem.torch_forward_backward)  # fmt: skip


#: (threads per block, blocks per multiprocessor, acquire/release barrier, at most this many blocks) of the
#: persistent kernel in the sweep; one block: every weight in one SM's shared memory (GRU/RNN H = 128) and
#: the step barrier is a __syncthreads
PERSISTENT_CONFIGS = ((256, 1, False, None), (512, 1, False, None), (512, 1, True, None), (512, 1, False, 1))


def _small_batch_problems(report, machine, kinds, shapes):
    """(shape, base entry, problem) of the small-batch shapes (B <= 64) of a sweep, forward float32; a
    problem that cannot be set up is reported and passed over."""
    for kind in kinds:
        for shape in shapes:
            if shape[1] > 64:
                continue
            base = {"cell": kind, "shape": list(shape), "dtype": "float32", "direction": "forward"}
            try:
                problem = Problem(machine, kind, shape, "float32")
            except Exception as error:
                report.add({**base, "impl": "setup", "error": f"{type(error).__name__}: {error}"})
                continue
            yield shape, base, problem


def persistent_sweep_section(report, budget, machine, kinds, shapes, reserve):
    """The persistent kernel at every batch tile and block size (forward, float32), for tuning its defaults."""
    from arrayrnn._backends.cupy import policy
    from arrayrnn._backends.cupy import sources as cupy_sources
    from arrayrnn._backends.cupy.experimental import persistent as cupy_persistent

    for shape, base, problem in _small_batch_problems(report, machine, kinds, shapes):
        sms = 0 if machine.dry_run else int(machine.cupy.cuda.Device().attributes["MultiProcessorCount"])
        config = policy.current()
        warps = sms * config.persistent_blocks_per_sm * config.persistent_threads // 32
        chosen = cupy_persistent.choose_batch_tile(shape[1], shape[3], warps, config)
        for threads, per_sm, acqrel, max_blocks in PERSISTENT_CONFIGS:
            for tile in cupy_sources.BATCH_TILES:
                if tile > 1 and tile >= 2 * shape[1]:
                    continue
                knobs = {"persistent_force_batch_tile": tile, "persistent_threads": threads,
                         "persistent_blocks_per_sm": per_sm, "persistent_acqrel_barrier": acqrel,
                         "persistent_max_blocks": max_blocks}  # fmt: skip
                run = lambda problem=problem: problem.ours_forward("persistent")  # noqa: E731
                flags = (",acqrel" if acqrel else "") + (f",max_blocks={max_blocks}" if max_blocks else "")
                name = f"persistent[nb={tile},t={threads},b={per_sm}{flags}]"
                extra = {"chosen_tile": chosen, "tile": tile, "threads": threads, "blocks_per_sm": per_sm,
                         "acqrel_barrier": acqrel, "max_blocks": max_blocks}  # fmt: skip
                with policy.configured(**knobs):
                    measure(report, budget, {**base, **extra}, name, run, machine, reserve=reserve)


#: (blocks per cluster, threads per block) of the cluster kernel in the sweep (each at its chosen batch tile;
#: 8 blocks of 256 threads also at every tile)
CLUSTER_CONFIGS = ((2, 512), (4, 256), (4, 512), (8, 256), (8, 512), (16, 256), (16, 512))


def cluster_sweep_section(report, budget, machine, kinds, shapes, reserve):
    """The cluster kernel at several cluster sizes, block sizes and batch tiles (forward, float32), where the
    shape fits one cluster, for choosing its defaults (and whether auto should pick it)."""
    from arrayrnn._backends.cupy import policy
    from arrayrnn._backends.cupy import sources as cupy_sources
    from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster

    for shape, base, problem in _small_batch_problems(report, machine, kinds, shapes):
        configs = [(size, threads, None) for size, threads in CLUSTER_CONFIGS]
        configs += [(8, 256, tile) for tile in cupy_sources.BATCH_TILES if tile < 2 * shape[1]]
        for size, threads, tile in configs:
            units = -(-shape[3] // size)
            chosen = cupy_cluster.tile_for_warps(shape[1], units, threads // 32)
            knobs = {"cluster_force_cluster_size": size, "cluster_threads": threads, "cluster_force_batch_tile": tile}
            tile = chosen if tile is None else tile
            name = f"cluster[c={size},t={threads},nb={tile}]"
            extra = {"cluster_size": size, "threads": threads, "tile": tile, "chosen_tile": chosen}
            run = lambda problem=problem: problem.ours_forward("cluster")  # noqa: E731
            with policy.configured(**knobs):
                measure(report, budget, {**base, **extra}, name, run, machine, reserve=reserve)


#: shapes where the fused gradient path trails cuDNN most (H100, 2026-11-27): where its time goes
BREAKDOWN_SHAPES = [(50, 4096, 256, 256), (100, 256, 1024, 1024)]


#: the fused gradient path's variants the breakdown times: (entry name, knobs as the report names them)
BREAKDOWN_VARIANTS = (
    ("fused", {"BIAS_BY_MATMUL": True}),
    ("fused[bias=sum]", {"BIAS_BY_MATMUL": False}),
    ("fused[split-k=16]", {"BIAS_BY_MATMUL": True, "WEIGHT_GRAD_CHUNKS": 16}),
)
#: the ``policy.Config`` field of each knob of ``BREAKDOWN_VARIANTS`` (the report keeps the older names, which
#: ``gpu_decide.py`` and the stored results read)
BREAKDOWN_CONFIG = {"BIAS_BY_MATMUL": "grad_bias_by_matmul", "WEIGHT_GRAD_CHUNKS": "grad_weight_grad_chunks"}


def breakdown_section(report, budget, machine, kinds, reserve, rounds=3):
    """The fused gradient path split up: recording forward, backward loop, the previous-hidden copy and the
    parameter gradients (dx and the weight/bias GEMMs), each between device synchronisations (medians of
    ``rounds``), so the next optimisation goes where the time is; once per variant (``BREAKDOWN_VARIANTS``:
    bias gradients by a matmul with ones, or by CuPy's reduction; weight gradients in one matmul or in chunks)."""
    for kind in kinds:
        for shape in BREAKDOWN_SHAPES:
            for variant, knobs in BREAKDOWN_VARIANTS:
                _breakdown_entry(report, budget, machine, kind, shape, variant, knobs, reserve, rounds)


def _breakdown_entry(report, budget, machine, kind, shape, variant, knobs, reserve, rounds):
    from arrayrnn._backends.cupy import grad_fused as cupy_grad
    from arrayrnn._backends.cupy import policy

    base = {"cell": kind, "shape": list(shape), "dtype": "float32", "direction": "vjp-breakdown", "impl": variant}
    base.update(knobs)
    if budget.left() <= reserve:
        report.add({**base, "skipped": "time budget"})
        return
    parts: dict[str, float] = {}

    def timed(name, function, parts=parts):
        def wrapper(*args, **kwargs):
            machine.sync()
            start = time.perf_counter()
            result = function(*args, **kwargs)
            machine.sync()
            parts[name] = parts.get(name, 0.0) + (time.perf_counter() - start) * 1e3
            return result

        return wrapper

    # the parts of a pullback timed on their own (module functions of ``arrayrnn._backends.cupy.grad_fused``)
    names = ("previous_hidden", f"{kind}_param_grads")
    wrapped = {name: timed(name, getattr(cupy_grad, name)) for name in names}
    try:
        problem = Problem(machine, kind, shape, "float32")
        config = {BREAKDOWN_CONFIG[name]: value for name, value in knobs.items()}
        with overridden(cupy_grad, **wrapped), policy.configured(**config):
            entry = {**base, **_breakdown(machine, problem, parts, rounds)}
        entry["backward_loop_ms"] = entry["backward_ms"] - sum(entry.get(f"{n}_ms", 0.0) for n in wrapped)
        entry["median_ms"] = entry["forward_ms"] + entry["backward_ms"]
    except Exception as error:
        failure = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=4)}
        entry = {**base, **failure}
    report.add(entry)


def _breakdown(machine: Machine, problem: Problem, parts: dict[str, float], rounds: int) -> dict[str, float]:
    """Medians over ``rounds`` of the recording forward, the pullback, and the ``parts`` timed inside it."""
    import arrayrnn as ar

    problem.ours_forward_backward("fused")  # warm-up
    measured = []
    for _ in range(rounds):
        parts.clear()
        machine.sync()
        start = time.perf_counter()
        _, pullback = ar.vjp(problem.function, problem.x, problem.params, impl="fused")
        machine.sync()
        recorded = time.perf_counter()
        pullback(problem.cotangent())
        machine.sync()
        done = time.perf_counter()
        measured.append({"forward_ms": (recorded - start) * 1e3, "backward_ms": (done - recorded) * 1e3,
                         **{f"{name}_ms": ms for name, ms in parts.items()}})  # fmt: skip
    return {key: statistics.median(m[key] for m in measured) for key in measured[0]}


#: blocks (of 256 threads) and barriers per launch of the barrier-only measurement
BARRIER_BLOCKS = (1, 16, 66, 132)
BARRIER_STEPS = 1000


def barrier_section(report, budget, machine, reserve):
    """The barriers alone: microseconds per barrier of the grid barrier for a few grid sizes (fences vs
    release/acquire), and of the cluster barrier for each cluster size."""
    from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster
    from arrayrnn._backends.cupy.experimental import cluster_sources as cupy_cluster_sources
    from arrayrnn._backends.cupy.experimental import persistent as cupy_persistent

    for size in cupy_cluster_sources.CLUSTER_SIZES:
        base = {"cell": "barrier", "shape": [BARRIER_STEPS, size, 256, 0], "dtype": "-", "direction": "barrier",
                "blocks": size}  # fmt: skip
        try:
            run = cupy_cluster.barrier_bench(size, 256, BARRIER_STEPS)
        except Exception as error:
            report.add({**base, "impl": "setup", "error": f"{type(error).__name__}: {error}"})
            continue
        entry = measure(report, budget, base, "cluster", run, machine, reserve=reserve)
        if entry and "median_ms" in entry:
            entry["us_per_barrier"] = entry["median_ms"] * 1e3 / BARRIER_STEPS
            report.save()

    for blocks in BARRIER_BLOCKS:
        for acqrel in (False, True):
            base = {"cell": "barrier", "shape": [BARRIER_STEPS, blocks, 256, 0], "dtype": "-", "direction": "barrier",
                    "blocks": blocks, "acqrel_barrier": acqrel}  # fmt: skip
            try:
                run = cupy_persistent.barrier_bench(blocks, 256, BARRIER_STEPS, acqrel)
            except Exception as error:
                report.add({**base, "impl": "setup", "error": f"{type(error).__name__}: {error}"})
                continue
            entry = measure(report, budget, base, "acqrel" if acqrel else "fences", run, machine, reserve=reserve)
            if entry and "median_ms" in entry:
                entry["us_per_barrier"] = entry["median_ms"] * 1e3 / BARRIER_STEPS
                report.save()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON results file (rewritten after every measurement)")
    parser.add_argument("--budget", type=float, default=175.0, help="seconds for the whole run (default 175)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--dry-run", action="store_true", help="CPU: arrayrnn on NumPy, torch on CPU, tiny shapes")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, in this order: {', '.join(SECTIONS)} (default: all; a rerun picks a few)",
    )
    parser.add_argument("--impls", default=",".join(IMPLS), help="forward paths to time (default: all)")
    parser.add_argument(
        "--vjp-impls",
        default=",".join(name for name, _ in VJP_IMPLS),
        help="forward+backward entries to time (default: all)",
    )
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    kinds = [k for k in args.kinds.split(",") if k]
    machine = Machine(args.dry_run)
    budget = Budget(args.budget)
    shapes = [(6, 2, 3, 4), (5, 3, 4, 8)] if args.dry_run else SHAPES
    half_shapes = [(5, 3, 4, 8)] if args.dry_run else FLOAT16_SHAPES
    impls = ("generic",) if args.dry_run else tuple(i for i in args.impls.split(",") if i)
    header = {
        "schema": 1,
        "benchmark": "arrayrnn GPU forward and forward+backward vs torch/cuDNN",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "versions": versions(machine),
        "settings": {
            "tf32": False,
            "CUPY_TF32": os.environ.get("CUPY_TF32"),
            "torch.backends.cudnn.allow_tf32": False if not args.dry_run else None,
            "torch.backends.cuda.matmul.allow_tf32": False if not args.dry_run else None,
            "timing": "CUDA events, median after warm-up" if not args.dry_run else "wall clock (dry run)",
            "budget_s": args.budget,
            "initial_state": "zeros",
        },
        "shapes": [list(s) for s in shapes],
    }
    report = Report(args.out, header)
    print(f"{header['machine'].get('device')}  {header['versions']}")
    started = time.monotonic()
    # most important first; later sections keep a reserve so the earlier ones always finish
    if "forward" in sections:
        forward_section(report, budget, machine, kinds, shapes, "float32", impls, reserve=0.35 * args.budget)
    vjp_known = dict(VJP_IMPLS)
    unknown = [n for n in args.vjp_impls.split(",") if n and n not in vjp_known]
    if unknown:
        parser.error(f"--vjp-impls: unknown {unknown}; known: {', '.join(vjp_known)}")
    vjp_impls = tuple((n, vjp_known[n]) for n in args.vjp_impls.split(",") if n)
    if args.dry_run:  # NumPy has no fused/graph
        vjp_impls = VJP_IMPLS[:1] + VJP_IMPLS[-1:]
    if "backward" in sections:
        backward_section(report, budget, machine, kinds, shapes, reserve=0.15 * args.budget, vjp_impls=vjp_impls)
    gpu_sections = {
        "breakdown": lambda: breakdown_section(report, budget, machine, kinds, reserve=0.12 * args.budget),
        "barrier": lambda: barrier_section(report, budget, machine, reserve=0.1 * args.budget),
        "cluster_sweep": lambda: cluster_sweep_section(
            report, budget, machine, kinds, shapes, reserve=0.07 * args.budget
        ),
        "persistent_sweep": lambda: persistent_sweep_section(
            report, budget, machine, kinds, shapes, reserve=0.05 * args.budget
        ),
    }
    for name, section in gpu_sections.items():
        if name in sections and not args.dry_run:
            section()
    if "float16" in sections:
        forward_section(report, budget, machine, ["lstm"], half_shapes, "float16", impls, reserve=0.0)
    report.data["elapsed_s"] = round(time.monotonic() - started, 1)
    report.save()
    bad = [e for e in report.data["results"] if e.get("error") or e.get("ok") is False]
    entries = len(report.data["results"])
    print(f"done in {report.data['elapsed_s']} s; {entries} entries, {len(bad)} with errors or mismatches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
