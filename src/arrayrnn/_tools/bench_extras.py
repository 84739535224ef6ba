"""``arrayrnn bench``'s timing in blocks and its extra rows: the threads each contender used, arrayrnn
timed right after torch (torch's OpenMP pool still spinning) beside its quiet time, and the first call
in a fresh process (import and first call timed apart, numba on and off)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from .bench_modes import Runner

#: seconds of rest after each contender's block, so its idle threads stop spinning before the next starts
PAUSE_SECONDS = 0.5
#: seconds one timing sample lasts at least (short calls are repeated inside a sample)
MIN_SAMPLE_SECONDS = 0.02
#: the foreign-threads samples are single calls: at least this many, and about this many seconds of them
FOREIGN_MIN_SAMPLES, FOREIGN_SECONDS = 5, 0.5
#: seconds the fresh-process measurement may take per process before it is reported as timed out
FIRST_CALL_TIMEOUT = 300


def pool_threads() -> dict[str, int]:
    """threadpoolctl's view: ``{"<internal_api>:<library prefix>": threads}`` of every BLAS/OpenMP pool loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {f"{pool['internal_api']}:{pool['prefix']}": int(pool["num_threads"]) for pool in threadpool_info()}


def runner_threads(runner: Runner) -> dict[str, Any]:
    """The threads ``runner`` ran with: its own report (torch, onnxruntime) plus threadpoolctl's pools."""
    own = runner.threads() if runner.threads is not None else {}
    return {**own, "pools": pool_threads()}


def _calibrate(runner: Runner) -> int:
    """Calls per sample so that one sample lasts at least ``MIN_SAMPLE_SECONDS`` (after one warm-up call)."""
    runner.call()
    start = time.perf_counter()
    runner.call()
    once = time.perf_counter() - start
    return max(1, math.ceil(MIN_SAMPLE_SECONDS / max(once, 1e-7)))


def time_blocked(
    runners: Sequence[Runner],
    repeats: int,
    on_round: Optional[Callable[[], None]] = None,
    pause: float = PAUSE_SECONDS,
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Seconds per call: all ``repeats`` samples of one runner, a ``pause``, then the next runner.

    Returns ``(samples, threads)``: per runner its samples and the threads it ran with (read right after
    its block). ``on_round`` is called ``repeats`` times in all, spread over the blocks (progress).
    """
    samples: dict[str, list[float]] = {}
    threads: dict[str, dict[str, Any]] = {}
    rounds_done = 0
    for index, runner in enumerate(runners):
        count = _calibrate(runner)
        values = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(count):
                runner.call()
            values.append((time.perf_counter() - start) / count)
        samples[runner.name] = values
        threads[runner.name] = runner_threads(runner)
        rounds_due = repeats * (index + 1) // len(runners)
        for _ in range(rounds_due - rounds_done):
            if on_round is not None:
                on_round()
        rounds_done = rounds_due
        if pause > 0 and index + 1 < len(runners):
            time.sleep(pause)
    return samples, threads


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def foreign_threads(ours: Runner, torch_runner: Runner, repeats: int, pause: float = PAUSE_SECONDS) -> dict[str, Any]:
    """arrayrnn's time right after a torch call (torch's pool still spinning) beside its quiet time.

    Every sample is one arrayrnn call, timed alone: quiet, it follows an untimed arrayrnn call after a
    ``pause``; foreign, it follows an untimed torch call at once. Medians in seconds and their ratio.
    """
    ours.call()
    torch_runner.call()
    time.sleep(pause)
    start = time.perf_counter()
    ours.call()
    once = time.perf_counter() - start
    count = max(repeats, FOREIGN_MIN_SAMPLES, min(200, math.ceil(FOREIGN_SECONDS / max(once, 1e-7))))
    quiet, foreign, torch_times = [], [], []
    for _ in range(count):
        ours.call()
        start = time.perf_counter()
        ours.call()
        quiet.append(time.perf_counter() - start)
    for _ in range(count):
        start = time.perf_counter()
        torch_runner.call()
        middle = time.perf_counter()
        ours.call()
        foreign.append(time.perf_counter() - middle)
        torch_times.append(middle - start)
    time.sleep(pause)
    quiet_s, foreign_s = _median(quiet), _median(foreign)
    return {
        "samples": count,
        "quiet_s": quiet_s,
        "after_torch_s": foreign_s,
        "torch_s": _median(torch_times),
        "ratio": foreign_s / quiet_s,
        "threads": {"arrayrnn": runner_threads(ours), "torch": runner_threads(torch_runner)},
    }


_FIRST_CALL_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import arrayrnn
imported = time.perf_counter()
import numpy as np
kind, steps, batch, features, hidden = sys.argv[1], *map(int, sys.argv[2:6])
init = {"lstm": arrayrnn.init_lstm, "gru": arrayrnn.init_gru, "rnn": arrayrnn.init_rnn}[kind]
function = {"lstm": arrayrnn.lstm, "gru": arrayrnn.gru, "rnn": arrayrnn.rnn}[kind]
params = init(features, hidden, seed=0, dtype="float32", backend="numpy")
x = np.random.default_rng(0).standard_normal((steps, batch, features), dtype=np.float32)
first = time.perf_counter()
function(x, params)
second = time.perf_counter()
function(x, params)
end = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_call_s": second - first, "second_call_s": end - second,
                  "numba_loaded": "numba" in sys.modules}))
"""


def first_call(
    kind: str, shape: tuple[int, int, int, int], numba: bool, threads: int, timeout: float = FIRST_CALL_TIMEOUT
) -> dict[str, Any]:
    """``import arrayrnn`` and the first ``ar.lstm/gru/rnn`` call, timed apart in a fresh Python process.

    ``sys.executable -c``, with ``ARRAYRNN_NUMBA=1`` or ``0`` and the BLAS/OpenMP threads set to ``threads``
    by environment variables. Also reports the second call (what is left once the first-call costs are paid).
    """
    import arrayrnn

    steps, batch, features, hidden = shape
    env = dict(os.environ, ARRAYRNN_NUMBA="1" if numba else "0")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    source = str(Path(arrayrnn.__file__).resolve().parents[1])  # the same arrayrnn, installed or not
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-c", _FIRST_CALL_SCRIPT, kind, str(steps), str(batch), str(features), str(hidden)]
    row: dict[str, Any] = {"cell": kind, "T": steps, "B": batch, "I": features, "H": hidden, "numba": numba}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        return {**row, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def format_foreign(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | T, B, I, H | arrayrnn quiet ms | arrayrnn right after torch ms | ratio | torch ms | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cell'].upper()} | {row['T']}, {row['B']}, {row['I']}, {row['H']} | {row['quiet_s'] * 1e3:.3f} "
            f"| {row['after_torch_s'] * 1e3:.3f} | {row['ratio']:.2f}x | {row['torch_s'] * 1e3:.3f} "
            f"| {row['samples']} |"
        )
    return "\n".join(lines)


def format_first_call(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | T, B, I, H | numba | import arrayrnn s | first call s | second call ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = f"{row['T']}, {row['B']}, {row['I']}, {row['H']}"
        numba = "on" if row["numba"] else "off (ARRAYRNN_NUMBA=0)"
        if "error" in row:
            lines.append(f"| {row['cell'].upper()} | {shape} | {numba} | failed: {row['error']} | - | - |")
            continue
        lines.append(
            f"| {row['cell'].upper()} | {shape} | {numba} | {row['import_s']:.3f} | {row['first_call_s']:.3f} "
            f"| {row['second_call_s'] * 1e3:.3f} |"
        )
    return "\n".join(lines)


def threads_summary(threads: dict[str, Any]) -> str:
    """``runner threads`` in a few characters for the table: torch's own count, ORT's intra-op, else the pools."""
    if "torch" in threads:
        return str(threads["torch"])
    if "intra_op" in threads:
        return str(threads["intra_op"])
    blas = [n for name, n in threads.get("pools", {}).items() if not name.startswith("openmp:")]
    return "/".join(map(str, blas)) or "?"
