"""``arrayrnn bench``: arrayrnn against the real peers (torch CPU, onnxruntime) on the same weights.

Per cell and shape, each library timed in its own block after outputs are checked equal, plus foreign-threads and
first-call rows (bench_extras); a table, JSON in ``--out`` (default ``./arrayrnn-bench/``) and ``--plot``."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._args import OneLineParser, UsageError, backend_name, comma_list, positive_int
from ._hints import INSTALL_HINTS
from .bench_extras import (
    PAUSE_SECONDS,
    first_call,
    foreign_threads,
    format_first_call,
    format_foreign,
    threads_summary,
    time_blocked,
)
from .bench_modes import MODES, Runner, importable, register_mode

__all__ = ["GRID", "LONG_SEQUENCE", "Runner", "add_arguments", "main", "register_mode", "run_benchmark"]

#: (T, B, I, H): fixed in advance (issue 5), never tuned to the results
GRID: tuple[tuple[int, int, int, int], ...] = (
    (100, 1, 32, 64),
    (100, 16, 128, 128),
    (100, 64, 256, 256),
    (50, 256, 512, 512),
)
#: (T, B, I, H) of the long-sequence memory measurement
LONG_SEQUENCE = (100_000, 8, 64, 256)
LONG_SEQUENCE_QUICK = (10_000, 8, 64, 256)
#: (T, B, I, H) of the first call in a fresh process (the smallest grid shape: where one-time costs show most)
FIRST_CALL_CASE = GRID[0]
CELLS = ("lstm", "gru", "rnn")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: seconds one timing sample lasts at least (short calls are repeated inside a sample)
MIN_SAMPLE_SECONDS = 0.02
#: where results go unless ``--out`` says otherwise: a folder in the current directory
DEFAULT_OUT = "arrayrnn-bench"
#: peer -> the modules it needs
PEERS = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}


# ----------------------------------------------------------------------------------------------
# peers


def _torch_runner(kind: str, params: Any, x: np.ndarray, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    input_size, hidden = params.input_size, params.hidden_size
    layer_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    layer = layer_class(input_size, hidden)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(torch.from_numpy(np.asarray(getattr(params, name))))
    layer.requires_grad_(False)
    inputs = torch.from_numpy(x)

    def call() -> Any:
        with torch.inference_mode():
            return layer(inputs)[0]

    return Runner("torch", call, lambda y: y.numpy(), lambda: {"torch": torch.get_num_threads()})


def _onnx_order(kind: str, array: np.ndarray, hidden: int) -> np.ndarray:
    """Torch gate order -> ONNX gate order along axis 0 (LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h)."""
    blocks = [array[k * hidden : (k + 1) * hidden] for k in range(GATES[kind])]
    if kind == "lstm":
        blocks = [blocks[0], blocks[3], blocks[1], blocks[2]]
    elif kind == "gru":
        blocks = [blocks[1], blocks[0], blocks[2]]
    return np.concatenate(blocks, axis=0)


def onnx_model(kind: str, params: Any, steps: int, batch: int) -> bytes:
    """A one-node ONNX LSTM/GRU/RNN model holding ``params`` as initializers (so ORT may prepack them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden, features = params.hidden_size, params.input_size

    def ordered(name: str) -> np.ndarray:
        return _onnx_order(kind, np.asarray(getattr(params, name), dtype=np.float32), hidden)

    initializers = [
        numpy_helper.from_array(ordered("weight_ih")[None], "W"),
        numpy_helper.from_array(ordered("weight_hh")[None], "R"),
        numpy_helper.from_array(np.concatenate([ordered("bias_ih"), ordered("bias_hh")])[None], "B"),
    ]
    attributes: dict[str, Any] = {"hidden_size": hidden}
    if kind == "gru":
        attributes["linear_before_reset"] = 1  # torch's GRU
    node = helper.make_node(kind.upper(), ["X", "W", "R", "B"], ["Y"], **attributes)
    graph = helper.make_graph(
        [node],
        f"arrayrnn_bench_{kind}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, batch, features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, 1, batch, hidden])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnxruntime_runner(kind: str, params: Any, x: np.ndarray, threads: int) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # idle ORT threads spin by default and steal the cores from whatever runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    steps, batch, _ = x.shape
    session = onnxruntime.InferenceSession(
        onnx_model(kind, params, steps, batch), options, providers=["CPUExecutionProvider"]
    )
    feed = {"X": x}
    used = session.get_session_options()
    return Runner(
        "onnxruntime",
        lambda: session.run(["Y"], feed)[0],
        lambda y: y.reshape(steps, batch, params.hidden_size),
        lambda: {"intra_op": used.intra_op_num_threads, "inter_op": used.inter_op_num_threads},
    )


def _arrayrnn_runner(kind: str, params: Any, x: np.ndarray, backend: str) -> Runner:
    import arrayrnn

    function = {"lstm": arrayrnn.lstm, "gru": arrayrnn.gru, "rnn": arrayrnn.rnn}[kind]
    placed_params = arrayrnn.to_backend(params, backend)
    placed_x = arrayrnn.to_backend(x, backend)
    synchronize = _synchronizer(backend)
    if backend == "torch":  # like the torch peer: torch picks other (faster) CPU kernels without autograd
        import torch

        def call() -> Any:
            with torch.inference_mode():
                y = function(placed_x, placed_params)[0]
            if y.is_cuda:
                torch.cuda.synchronize()
            return y

        return Runner("arrayrnn", call, arrayrnn.to_numpy, lambda: {"torch": torch.get_num_threads()})

    def call() -> Any:
        y = function(placed_x, placed_params)[0]
        synchronize()
        return y

    return Runner("arrayrnn", call, arrayrnn.to_numpy)


def _synchronizer(backend: str) -> Callable[[], None]:
    """Wait for queued device work, so a timing covers the computation and not just its launch."""
    if backend == "cupy":
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    return lambda: None


def _gemm_runner(kind: str, steps: int, batch: int, features: int, hidden: int) -> Runner:
    """One NumPy GEMM with the FLOPs of the cell: ``(T*B, I+H) @ (I+H, G*H)``."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((steps * batch, features + hidden), dtype=np.float32)
    right = rng.standard_normal((features + hidden, GATES[kind] * hidden), dtype=np.float32)
    out = np.empty((steps * batch, GATES[kind] * hidden), dtype=np.float32)
    return Runner("gemm", lambda: np.matmul(left, right, out=out))


def _forward_runners(
    kind: str, params: Any, x: np.ndarray, threads: int, backend: str
) -> tuple[list[Runner], dict[str, str]]:
    if backend == "jax":  # arrayrnn waiting for JAX's async dispatch, and the jitted lax.scan peer (bench_jax.py)
        from .bench_jax import jax_runners

        runners = jax_runners(kind, params, x)
    else:
        runners = [_arrayrnn_runner(kind, params, x, backend)]
    skipped: dict[str, str] = {}
    for name, factory, modules in (
        ("torch", _torch_runner, ("torch",)),
        ("onnxruntime", _onnxruntime_runner, ("onnx", "onnxruntime")),
    ):
        missing = [module for module in modules if not importable(module)]
        if missing:
            skipped[name] = f"not installed ({', '.join(missing)})"
            continue
        runners.append(factory(kind, params, x, threads))
    steps, batch, features = x.shape
    runners.append(_gemm_runner(kind, steps, batch, features, params.hidden_size))
    return runners, skipped


register_mode("forward", _forward_runners)


# ----------------------------------------------------------------------------------------------
# timing


def _check_outputs(runners: Sequence[Runner], case: str) -> dict[str, float]:
    """Run each checked runner once; every output must match arrayrnn's. Returns max |difference|."""
    reference = None
    differences: dict[str, float] = {}
    for runner in runners:
        if runner.to_numpy is None:
            runner.call()
            continue
        output = np.asarray(runner.to_numpy(runner.call()), dtype=np.float64)
        if reference is None:
            reference = output
            continue
        if output.shape != reference.shape or not np.allclose(output, reference, rtol=1e-3, atol=1e-4):
            worst = float(np.max(np.abs(output - reference))) if output.shape == reference.shape else math.inf
            raise RuntimeError(
                f"{case}: {runner.name} output differs from arrayrnn's (shape {output.shape} vs "
                f"{reference.shape}, max |difference| {worst:.3g}); refusing to time different computations"
            )
        differences[runner.name] = float(np.max(np.abs(output - reference)))
    return differences


def _calibrate(runner: Runner) -> int:
    """Calls per sample so that one sample lasts at least ``MIN_SAMPLE_SECONDS`` (after one warm-up call)."""
    runner.call()
    start = time.perf_counter()
    runner.call()
    once = time.perf_counter() - start
    return max(1, math.ceil(MIN_SAMPLE_SECONDS / max(once, 1e-7)))


def time_interleaved(
    runners: Sequence[Runner], repeats: int, on_round: Optional[Callable[[], None]] = None
) -> dict[str, list[float]]:
    """Seconds per call of each runner: ``repeats`` samples each, rounds interleaved, order rotated."""
    calls = {runner.name: _calibrate(runner) for runner in runners}
    samples: dict[str, list[float]] = {runner.name: [] for runner in runners}
    for round_index in range(repeats):
        shift = round_index % len(runners)
        for runner in [*runners[shift:], *runners[:shift]]:
            count = calls[runner.name]
            start = time.perf_counter()
            for _ in range(count):
                runner.call()
            samples[runner.name].append((time.perf_counter() - start) / count)
        if on_round is not None:
            on_round()
    return samples


def peak_extra_memory(kind: str, steps: int, batch: int, features: int, hidden: int) -> dict[str, Any]:
    """Peak NumPy memory of one float32 inference beyond its output array (tracemalloc)."""
    import arrayrnn

    init = {"lstm": arrayrnn.init_lstm, "gru": arrayrnn.init_gru, "rnn": arrayrnn.init_rnn}[kind]
    function = {"lstm": arrayrnn.lstm, "gru": arrayrnn.gru, "rnn": arrayrnn.rnn}[kind]
    params = init(features, hidden, seed=0, dtype="float32", backend="numpy")
    x = np.random.default_rng(0).standard_normal((steps, batch, features), dtype=np.float32)
    function(x[:2], params)  # one-time costs (e.g. numba compiling) are not per-call memory
    tracemalloc.start()
    try:
        start = time.perf_counter()
        y = function(x, params)[0]
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    extra = peak - y.nbytes
    return {
        "cell": kind,
        "T": steps,
        "B": batch,
        "I": features,
        "H": hidden,
        "output_bytes": int(y.nbytes),
        "peak_extra_bytes": int(extra),
        "extra_over_output": extra / y.nbytes,
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------------------------
# environment record


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> Optional[list[float]]:
    """1, 5 and 15-minute load averages (other work on the machine skews every timing), if known."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def limit_threads(threads: int) -> tuple[Any, list[dict[str, Any]]]:
    """Set every thread pool (BLAS, OpenMP, torch) to ``threads``; returns (limiter, threadpoolctl info)."""
    if importable("torch"):
        import torch  # imported first so threadpoolctl sees its OpenMP/MKL pools

        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None, []
    limiter = threadpool_limits(limits=threads)
    return limiter, threadpool_info()


def peer_status(threads: int) -> dict[str, dict[str, Any]]:
    """Each peer: installed or not (and why), its version and the threads it actually runs with."""
    peers: dict[str, dict[str, Any]] = {}
    for name, modules in PEERS.items():
        missing = [module for module in modules if not importable(module)]
        if missing:
            reason = f"not installed ({', '.join(missing)}); install with: {INSTALL_HINTS[name]}"
            peers[name] = {"installed": False, "version": None, "threads": None, "reason": reason}
            continue
        used = threads
        if name == "torch":
            import torch

            used = torch.get_num_threads()
        peers[name] = {"installed": True, "version": _version(name), "threads": used, "reason": None}
    return peers


def environment(threads: int, pools: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    import arrayrnn

    versions = {"python": platform.python_version(), "arrayrnn": arrayrnn.__version__}
    for distribution in ("numpy", "torch", "onnxruntime", "onnx", "threadpoolctl", "numba"):
        versions[distribution] = _version(distribution)
    peers = peer_status(threads)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu": _cpu_model(),
            "cores_available": _available_cores(),
            "node": platform.node(),
        },
        "versions": versions,
        "backend": backend,
        "peers": peers,
        "threads": {
            "requested": threads,
            "torch": peers["torch"]["threads"],
            "onnxruntime_intra_op": peers["onnxruntime"]["threads"],
        },
        "thread_pools": [
            {key: pool.get(key) for key in ("user_api", "internal_api", "prefix", "num_threads", "version")}
            | ({"architecture": pool["architecture"]} if "architecture" in pool else {})
            for pool in pools
        ],
        "blas_kernels": sorted({pool.get("architecture") for pool in pools if pool.get("user_api") == "blas"} - {None}),
        "env": {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")},
    }


# ----------------------------------------------------------------------------------------------
# output


class _Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = max(total, 1), 0, enabled
        self.tty = sys.stderr.isatty()
        self.label = ""

    def advance(self, steps: int = 1, label: Optional[str] = None) -> None:
        self.done = min(self.total, self.done + steps)
        if label is not None:
            self.label = label
        self.show()

    def show(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.label}"
        if self.tty:
            sys.stderr.write("\r" + line[:110].ljust(110))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _peer_lines(peers: dict[str, dict[str, Any]]) -> list[str]:
    """One line per peer: its version and the threads it runs with, or that it is not installed (and not timed)."""
    lines = []
    for name, peer in peers.items():
        if not peer["installed"]:
            lines.append(f"  {name:<11} {peer['reason']}: not timed")
        elif name == "onnxruntime":
            lines.append(f"  {name:<11} {peer['version']}, intra-op {peer['threads']} threads, inter-op 1, no spinning")
        else:
            lines.append(f"  {name:<11} {peer['version']}, {peer['threads']} threads")
    return lines


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _threads_cell(threads: dict[str, Any]) -> str:
    """The threads each library ran with (arrayrnn: its BLAS pools per threadpoolctl), ``-`` if not timed."""
    return "/".join(
        threads_summary(threads[name]) if name in threads else "-" for name in ("arrayrnn", "torch", "onnxruntime")
    )


def format_table(record: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable on the terminal)."""
    lines = [
        "| mode | cell | T, B, I, H | arrayrnn ms | torch ms | onnxruntime ms | GEMM ms "
        "| vs torch | vs onnxruntime | GEMM efficiency | threads ar/torch/ort |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["results"]:
        times, ratios = row["median_s"], row["ratio"]
        efficiency = row.get("gemm_efficiency")
        lines.append(
            f"| {row['mode']} | {row['cell'].upper()} | {row['T']}, {row['B']}, {row['I']}, {row['H']} "
            f"| {_ms(times.get('arrayrnn'))} | {_ms(times.get('torch'))} | {_ms(times.get('onnxruntime'))} "
            f"| {_ms(times.get('gemm'))} | {_ratio(ratios.get('torch'))} | {_ratio(ratios.get('onnxruntime'))} "
            f"| {'-' if efficiency is None else f'{efficiency:.0%}'} | {_threads_cell(row.get('threads', {}))} |"
        )
    return "\n".join(lines)


def format_memory(record: dict[str, Any]) -> str:
    lines = []
    for row in record.get("memory", []):
        lines.append(
            f"{row['cell'].upper()} T={row['T']} B={row['B']} I={row['I']} H={row['H']}: output "
            f"{row['output_bytes'] / 2**20:.0f} MiB, peak extra {row['peak_extra_bytes'] / 2**20:.1f} MiB "
            f"({row['extra_over_output']:.3f}x the output), {row['seconds']:.2f} s"
        )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> Optional[Path]:
    """Time vs batch size per library, one panel per cell and mode (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('--plot needs matplotlib: pip install ".[bench]"', file=sys.stderr)
        return None
    panels = sorted({(row["mode"], row["cell"]) for row in record["results"]})
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for axis, (mode, cell) in zip(axes[0], panels):
        rows = sorted((r for r in record["results"] if r["mode"] == mode and r["cell"] == cell), key=lambda r: r["B"])
        libraries = [name for name in ("arrayrnn", "torch", "onnxruntime", "gemm") if name in rows[0]["median_s"]]
        for name in libraries:
            label = "one GEMM, same FLOPs" if name == "gemm" else name
            axis.plot(
                [r["B"] for r in rows],
                [r["median_s"][name] * 1e3 for r in rows],
                marker="o",
                linestyle=":" if name == "gemm" else "-",
                label=label,
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("batch size B (grid: T, B, I, H)")
        axis.set_ylabel("median time (ms)")
        axis.set_title(f"{cell.upper()} {mode}, float32, {record['threads']['requested']} threads")
        for r in rows:
            axis.annotate(f"{r['T']},{r['B']},{r['I']},{r['H']}", (r["B"], r["median_s"]["arrayrnn"] * 1e3), fontsize=6)
        axis.legend(fontsize=7)
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ----------------------------------------------------------------------------------------------
# driver


def _foreign_rows(
    cells: Sequence[str],
    grid: Sequence[tuple[int, int, int, int]],
    repeats: int,
    threads: int,
    backend: str,
    pause: float,
    bar: _Progress,
) -> list[dict[str, Any]]:
    """Per cell and shape: arrayrnn quiet and right after a torch call (:func:`bench_extras.foreign_threads`)."""
    import arrayrnn

    rows = []
    for kind in cells:
        init = {"lstm": arrayrnn.init_lstm, "gru": arrayrnn.init_gru, "rnn": arrayrnn.init_rnn}[kind]
        for steps, batch, features, hidden in grid:
            bar.advance(0, f"foreign threads {kind} T={steps} B={batch} I={features} H={hidden}")
            params = init(features, hidden, seed=1, dtype="float32", backend="numpy")
            x = np.random.default_rng(2).standard_normal((steps, batch, features), dtype=np.float32)
            ours = _arrayrnn_runner(kind, params, x, backend)
            measured = foreign_threads(ours, _torch_runner(kind, params, x, threads), repeats, pause)
            rows.append({"cell": kind, "T": steps, "B": batch, "I": features, "H": hidden, **measured})
            bar.advance(1)
    return rows


def run_benchmark(
    cells: Sequence[str] = CELLS,
    *,
    backend: str = "numpy",
    grid: Sequence[tuple[int, int, int, int]] = GRID,
    repeats: int = 5,
    threads: Optional[int] = None,
    memory_case: Optional[tuple[int, int, int, int]] = LONG_SEQUENCE,
    modes: Optional[Sequence[str]] = None,
    foreign: bool = True,
    first_call_case: Optional[tuple[int, int, int, int]] = FIRST_CALL_CASE,
    pause: float = PAUSE_SECONDS,
    out_dir: Optional[Path] = Path(DEFAULT_OUT),
    make_plot: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON (and PNG) into ``out_dir``; returns the record.

    Every argument is checked (and ``make_plot``'s matplotlib looked for) before anything runs. Each library is
    timed in its own block (all its ``repeats``), with ``pause`` seconds of rest before the next. ``foreign``: also
    time arrayrnn right after torch (needs torch); ``first_call_case``: the shape of the fresh-process rows.
    """
    import arrayrnn

    unknown = [cell for cell in cells if cell not in GATES]
    if unknown:
        raise ValueError(f"cells must be among {', '.join(CELLS)}, got {', '.join(unknown)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    modes = list(modes) if modes is not None else list(MODES)
    unknown_modes = [mode for mode in modes if mode not in MODES]
    if unknown_modes:
        raise ValueError(f"modes must be among {', '.join(MODES)}, got {', '.join(unknown_modes)}")
    if make_plot and not importable("matplotlib"):
        raise ImportError('make_plot needs matplotlib, which is not installed; install with: pip install ".[bench]"')
    threads = threads or _available_cores()
    limiter, pools = limit_threads(threads)
    record = environment(threads, pools, backend)
    record["settings"] = {
        "repeats": repeats,
        "dtype": "float32",
        "grid": [list(shape) for shape in grid],
        "timing": "blocked",  # every sample of one library, a pause, then the next library (one process)
        "pause_s": pause,
    }
    record["load_average_at_start"] = _load_average()
    record["modes"] = modes
    print(f"arrayrnn bench: backend {backend}, {threads} threads for every library")
    for pool in record["thread_pools"]:
        kernel = f", kernel {pool['architecture']}" if "architecture" in pool else ""
        print(f"  {pool['user_api']:<11} {pool['internal_api']:<9} {pool['num_threads']} threads{kernel}")
    if limiter is None:
        print('  threadpoolctl not installed: BLAS threads not limited (install with: pip install ".[bench]")')
    for line in _peer_lines(record["peers"]):
        print(line)
    blas_env = {k: v for k, v in record["env"].items() if k.startswith("OPENBLAS") and v is not None}
    if blas_env:
        print(f"  note: {blas_env} set in the environment; the BLAS kernel above is the one that runs")

    total = len(modes) * len(cells) * len(grid) * (repeats + 1) + (len(cells) if memory_case else 0)
    foreign = foreign and importable("torch")
    total += (len(cells) * len(grid) if foreign else 0) + (2 * len(cells) if first_call_case else 0)
    bar = _Progress(total, progress)
    results: list[dict[str, Any]] = []
    skipped_all: dict[str, dict[str, str]] = {mode: {} for mode in modes}
    try:
        for mode in modes:
            for kind in cells:
                for steps, batch, features, hidden in grid:
                    case = f"{mode} {kind} T={steps} B={batch} I={features} H={hidden}"
                    bar.advance(0, case)
                    init = {"lstm": arrayrnn.init_lstm, "gru": arrayrnn.init_gru, "rnn": arrayrnn.init_rnn}[kind]
                    params = init(features, hidden, seed=1, dtype="float32", backend="numpy")
                    rng = np.random.default_rng(2)
                    x = rng.standard_normal((steps, batch, features), dtype=np.float32)
                    runners, skipped = MODES[mode](kind, params, x, threads, backend)
                    skipped_all[mode].update(skipped)
                    differences = _check_outputs(runners, case)
                    bar.advance(1)
                    samples, used_threads = time_blocked(runners, repeats, on_round=bar.advance, pause=pause)
                    median = {name: float(np.median(values)) for name, values in samples.items()}
                    ours = median["arrayrnn"]
                    flops = 2 * steps * batch * (features + hidden) * GATES[kind] * hidden
                    results.append(
                        {
                            "mode": mode,
                            "cell": kind,
                            "T": steps,
                            "B": batch,
                            "I": features,
                            "H": hidden,
                            "flops": flops,
                            "median_s": median,
                            "samples_s": samples,
                            "ratio": {
                                name: ours / value for name, value in median.items() if name not in ("arrayrnn", "gemm")
                            },
                            "gemm_efficiency": median["gemm"] / ours if "gemm" in median else None,
                            "arrayrnn_gflops": flops / ours / 1e9,
                            "max_abs_difference": differences,
                            "threads": used_threads,
                        }
                    )
        record["results"] = results
        record["skipped_peers"] = skipped_all  # per mode: {peer: why}
        if "forward+backward" not in modes:
            record["forward_backward"] = "not measured: not among the modes asked for"
        memory = []
        if memory_case is not None and backend == "numpy":
            for kind in cells:
                bar.advance(0, f"memory {kind} T={memory_case[0]} B={memory_case[1]}")
                memory.append(peak_extra_memory(kind, *memory_case))
                bar.advance(1)
        record["memory"] = memory
        record["foreign_threads"] = _foreign_rows(cells, grid, repeats, threads, backend, pause, bar) if foreign else []
        if not foreign:
            why = "torch not installed" if not importable("torch") else "not asked for"
            record["foreign_threads_skipped"] = why
        record["first_call"] = []
        if first_call_case is not None:
            for kind in cells:
                for numba in (True, False):
                    bar.advance(0, f"first call {kind} numba {'on' if numba else 'off'} (fresh process)")
                    record["first_call"].append(first_call(kind, first_call_case, numba, threads))
                    bar.advance(1)
        record["load_average_at_end"] = _load_average()
    finally:
        bar.close()
        if limiter is not None:
            limiter.restore_original_limits()

    print()
    print(format_table(record))
    if backend == "jax":
        from .bench_jax import format_jax

        print(format_jax(record))
    print(
        f"load average (1, 5, 15 min): at start {record['load_average_at_start']}, "
        f"at end {record['load_average_at_end']}"
    )
    for mode, skipped in skipped_all.items():
        if skipped:
            print(f"not timed in {mode}: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    if record["memory"]:
        print()
        print(format_memory(record))
    if record["foreign_threads"]:
        print("\narrayrnn right after a torch call in the same process (torch's OpenMP pool still spinning):")
        print(format_foreign(record["foreign_threads"]))
    if record["first_call"]:
        print("\nfirst call in a fresh process (import includes NumPy's; numba on: compiled or loaded from its cache):")
        print(format_first_call(record["first_call"]))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        json_path = out_dir / f"bench-{backend}-{stamp}.json"
        json_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {json_path}")
        if make_plot:
            png = plot(record, json_path.with_suffix(".png"))
            if png is not None:
                print(f"wrote {png}")
                record["plot"] = str(png)
        record["json"] = str(json_path)
    return record


# the forward+backward mode (arrayrnn.vjp against torch autograd) registers itself through the hook above
from . import bench_backward  # noqa: E402,F401  (registers the forward+backward mode)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", type=backend_name, default=None, help="arrayrnn backend to time (default: numpy)")
    parser.add_argument(
        "--cells",
        type=comma_list(CELLS),
        default=",".join(CELLS),
        help=f"comma-separated cells among {', '.join(CELLS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds and a 10x shorter memory case (same grid, noisier numbers)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=None, help="timed rounds per case, >= 1 (default 5; quick: 3)"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="threads for every library, >= 1 (default: all cores)"
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"folder for the JSON (and PNG), created if missing (default: ./{DEFAULT_OUT}/ in the current directory)",
    )
    parser.add_argument("--plot", action="store_true", help="also write a PNG (needs matplotlib, checked first)")
    parser.add_argument("--no-memory", action="store_true", help="skip the long-sequence memory measurement")
    parser.add_argument(
        "--no-foreign-threads", action="store_true", help="skip arrayrnn timed right after torch (its pool spinning)"
    )
    parser.add_argument(
        "--no-first-call", action="store_true", help="skip the import and first-call times in fresh processes"
    )
    parser.add_argument(
        "--modes",
        type=comma_list(MODES),
        default=None,
        help=f"comma-separated modes among {', '.join(MODES)} (default: all)",
    )


def _check_needs(args: argparse.Namespace) -> tuple[str, Path]:
    """Everything the run needs, before it starts: a usable backend, matplotlib for --plot, a writable --out."""
    from ..backend import BackendUnavailableError, use_backend

    try:
        with use_backend(args.backend or "numpy") as backend:  # resolves "auto"
            pass
    except BackendUnavailableError as error:
        raise UsageError("--backend", str(error)) from None
    if args.plot and not importable("matplotlib"):
        raise UsageError("--plot", 'needs matplotlib, which is not installed; install with: pip install ".[bench]"')
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError("--out", f"cannot create the folder {str(out)!r}: {error.strerror or error}") from None
    if not os.access(out, os.W_OK):
        raise UsageError("--out", f"the folder {str(out)!r} is not writable")
    return backend, out


def command(args: argparse.Namespace) -> int:
    """Entry point of ``arrayrnn bench`` (and ``benchmarks/bench.py``); raises UsageError for a bad option."""
    backend, out = _check_needs(args)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    memory_case = None if args.no_memory else (LONG_SEQUENCE_QUICK if args.quick else LONG_SEQUENCE)
    run_benchmark(
        args.cells,
        modes=args.modes,
        backend=backend,
        repeats=repeats,
        threads=args.threads,
        memory_case=memory_case,
        foreign=not args.no_foreign_threads,
        first_call_case=None if args.no_first_call else FIRST_CALL_CASE,
        out_dir=out,
        make_plot=args.plot,
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="arrayrnn bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return command(parser.parse_args(argv))
    except UsageError as error:
        parser.error(str(error))
