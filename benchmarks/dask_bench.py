"""Throughput of batch LSTM inference on a local Dask cluster: 1 worker process against 2.

    python benchmarks/dask_bench.py                      # B=16384, T=100, I=H=128, float32, chunks of 2048
    python benchmarks/dask_bench.py --batch 4096 --repeats 2 --json results.json
    python benchmarks/dask_bench.py --train              # a training step: ar.vjp + pullback, gradients summed

Each worker is one process with one thread (and one BLAS thread: distributed's nanny sets
OPENBLAS_NUM_THREADS=1), so the ratio measures scaling over processes, as over the machines of a
real cluster. The input is generated on the workers and persisted there first, and the outputs
(``y``, ``h_n``, ``c_n``) are persisted on the workers, so what is timed is the recurrence and the
scheduling, not moving data to and from the client. For scale, the same batch is also run in this
process as one plain NumPy call with 1 and 2 BLAS threads.

The workers start without distributed's ``MALLOC_TRIM_THRESHOLD_`` (see ``RECOMMENDED_CONFIG``;
``--nanny-malloc-default`` keeps it, to measure what it costs).

Throughput is sequences per second (``B / seconds``); the best of ``--repeats`` runs is reported,
with the mean compute time of one block task and how busy the workers were (summed block compute
time over workers x wall time): a low "busy" means scheduling or transfer overhead, a block time that
grows with the workers means they compete for cores or memory bandwidth.
On a shared or busy machine the numbers are noisy: rerun on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np

import arrayrnn as ar

#: distributed's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker, which also pins glibc's mmap
#: threshold at 128 KiB: code that allocates its temporaries every step then page-faults them in fresh
#: each time (measured here: the generic path 3-4x slower). The NumPy fast path reuses its buffers and
#: does not care (measured: no difference). Unsetting it restores glibc's adaptive threshold.
RECOMMENDED_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _cluster_run(workers: int, args: argparse.Namespace, params: ar.LSTMParams) -> dict[str, float]:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream, wait

    with (
        dask.config.set({} if args.nanny_malloc_default else RECOMMENDED_CONFIG),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        rng = da.random.default_rng(args.seed)
        x = rng.standard_normal((args.steps, args.batch, args.input), chunks=(-1, args.chunk, -1), dtype="float32")
        x = client.persist(x)
        wait(x)
        warm_y, _ = ar.lstm(x[:, : args.chunk], params)  # imports arrayrnn on every worker, fills caches
        client.run(lambda: __import__("arrayrnn"))
        wait(client.persist(warm_y))
        times, block_seconds = [], []
        for repeat in range(args.repeats):
            # other params each run (same shapes): equal params would give equal graph keys, and a
            # scheduler still holding the last run's results would hand them back without computing
            params = ar.init_lstm(args.input, args.hidden, seed=args.seed + 1 + repeat, dtype="float32")
            with get_task_stream(client) as stream:
                start = time.perf_counter()
                outputs = client.persist(_work(x, params, args.train))
                wait(outputs)
                times.append(time.perf_counter() - start)
            del outputs  # releases the results on the workers
            block_seconds.append(_block_compute_seconds(stream.data))
        best = min(range(len(times)), key=times.__getitem__)
        return {
            "seconds": times[best],
            "all_seconds": times,
            # compute time of each block task in the best run: if it grows with the workers, they are
            # competing for cores or memory bandwidth; busy = their sum / (workers * wall time)
            "block_seconds": block_seconds[best],
            "busy": sum(block_seconds[best]) / (workers * times[best]),
        }


def _work(x: Any, params: ar.LSTMParams, train: bool) -> list[Any]:
    """The lazy arrays one timed run computes: the forward outputs, or with ``train`` a training step's gradients
    (``ar.vjp`` of ``y.sum()``: ``dx`` chunked like ``x`` and the params gradients summed over the blocks)."""
    if not train:
        y, (h, c) = ar.lstm(x, params)
        return [y, h, c]
    import dask.array as da

    (y, _), pullback = ar.vjp(ar.lstm, x, params)
    dx, dparams = pullback((da.ones_like(y), None))
    return [dx, *(value for value in vars(dparams).values() if value is not None)]


def _block_compute_seconds(task_stream: list[dict]) -> list[float]:
    """Seconds each block task spent computing, from distributed's task stream."""
    return [
        sum(span["stop"] - span["start"] for span in record["startstops"] if span["action"] == "compute")
        for record in task_stream
        if "-blocks-" in str(record["key"])
    ]


def _numpy_run(threads: int, args: argparse.Namespace, params: ar.LSTMParams) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    x = np.random.default_rng(args.seed).standard_normal((args.steps, args.batch, args.input), dtype=np.float32)
    times = []
    with threadpool_limits(threads):
        for _ in range(args.repeats):
            start = time.perf_counter()
            if args.train:
                (y, _), pullback = ar.vjp(ar.lstm, x, params)
                pullback((np.ones_like(y), None))
            else:
                ar.lstm(x, params)
            times.append(time.perf_counter() - start)
    return {"seconds": min(times), "all_seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=2048, help="batch rows per dask block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train", action="store_true", help="time a training step (ar.vjp and its pullback) instead of inference"
    )
    parser.add_argument("--no-numpy", action="store_true", help="skip the in-process NumPy reference runs")
    parser.add_argument(
        "--nanny-malloc-default",
        action="store_true",
        help="keep distributed's MALLOC_TRIM_THRESHOLD_=65536 in the workers (slow here; see RECOMMENDED_CONFIG)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    params = ar.init_lstm(args.input, args.hidden, seed=args.seed, dtype="float32", backend="numpy")
    shape = f"T={args.steps}, B={args.batch}, I={args.input}, H={args.hidden}, float32, chunks of {args.chunk} rows"
    malloc = "nanny default MALLOC_TRIM_THRESHOLD_" if args.nanny_malloc_default else "MALLOC_TRIM_THRESHOLD_ unset"
    print(f"LSTM {'training step' if args.train else 'inference'}, {shape}; workers: {malloc}")
    load_at_start = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load_at_start:.2f} at start")
    results: dict[str, dict[str, float]] = {}
    for workers in (1, 2):
        results[f"dask, {workers} worker{'s' if workers > 1 else ''}"] = _cluster_run(workers, args, params)
    if not args.no_numpy:
        for threads in (1, 2):
            results[f"numpy in-process, {threads} BLAS thread{'s' if threads > 1 else ''}"] = _numpy_run(
                threads, args, params
            )
    print(f"{'run':<34} {'best s':>8} {'sequences/s':>12} {'s per block':>12} {'busy':>6}")
    for name, result in results.items():
        result["sequences_per_second"] = args.batch / result["seconds"]
        per_block = f"{np.mean(result['block_seconds']):.2f}" if "block_seconds" in result else ""
        busy = f"{result['busy']:.0%}" if "busy" in result else ""
        print(f"{name:<34} {result['seconds']:>8.2f} {result['sequences_per_second']:>12.0f} {per_block:>12} {busy:>6}")
    ratio = results["dask, 2 workers"]["sequences_per_second"] / results["dask, 1 worker"]["sequences_per_second"]
    print(f"scaling 1 -> 2 workers: {ratio:.2f}x (ideal 2.00x); load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        import dask
        import distributed

        record = {
            "benchmark": "dask_bench",
            "shape": vars(args),
            "results": results,
            "scaling_1_to_2_workers": ratio,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "load_average": {"start": load_at_start, "end": os.getloadavg()[0]},
            "versions": {
                "arrayrnn": ar.__version__,
                "numpy": np.__version__,
                "dask": dask.__version__,
                "distributed": distributed.__version__,
            },
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
