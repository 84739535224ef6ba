"""Feature-major vs batch-major numba kernels, interleaved in one process, against onnxruntime.

"before": the feature-major kernels (``numba_loop``) for every batch size, as before the batch-major
kernels existed; "after": the default dispatch (batch-major ``numba_rows`` for B = 1 and
B >= ``ROWS_MIN_BATCH``). Same grid, weights, thread counts and timing as ``arrayrnn bench``.

    PYTHONPATH=src python benchmarks/layout_bench.py [out.json]
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import arrayrnn as ar
from arrayrnn._backends import numpy as numpy_loop
from arrayrnn._tools import bench


def main() -> None:
    if numpy_loop.compiled_kernels() is None:
        sys.exit('needs numba: pip install "arrayrnn[numba]"')
    bench.limit_threads(2)
    rows = []
    header = "| cell | T, B, I, H | before ms | after ms | ORT ms | before/ORT | after/ORT | GEMM eff before | after |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in bench.CELLS:
        init = {"lstm": ar.init_lstm, "gru": ar.init_gru, "rnn": ar.init_rnn}[kind]
        function = {"lstm": ar.lstm, "gru": ar.gru, "rnn": ar.rnn}[kind]
        for steps, batch, features, hidden in bench.GRID:
            params = init(features, hidden, seed=1, dtype="float32", backend="numpy")
            x = np.random.default_rng(2).standard_normal((steps, batch, features), dtype=np.float32)

            def runner(name, min_batch, max_small, params=params, x=x, function=function):
                def call():
                    numpy_loop.ROWS_MIN_BATCH, numpy_loop.ROWS_MAX_SMALL_BATCH = min_batch, max_small
                    return function(x, params)[0]

                return bench.Runner(name, call, lambda y: y)

            runners = [
                runner("before", 1 << 30, 0),
                runner("after", numpy_loop.ROWS_MIN_BATCH, numpy_loop.ROWS_MAX_SMALL_BATCH),
                bench._onnxruntime_runner(kind, params, x, 2),
                bench._gemm_runner(kind, steps, batch, features, hidden),
            ]
            bench._check_outputs(runners, kind)
            median = {k: float(np.median(v)) for k, v in bench.time_interleaved(runners, 7).items()}
            row = {"cell": kind, "shape": [steps, batch, features, hidden], "median_s": median}
            rows.append(row)
            ort, gemm = median["onnxruntime"], median["gemm"]
            print(
                f"| {kind.upper()} | {steps}, {batch}, {features}, {hidden} | {median['before'] * 1e3:.3f} "
                f"| {median['after'] * 1e3:.3f} | {ort * 1e3:.3f} | {median['before'] / ort:.2f}x "
                f"| {median['after'] / ort:.2f}x | {gemm / median['before']:.0%} | {gemm / median['after']:.0%} |",
                flush=True,
            )
    record = {"rows": rows, "load_average_at_end": list(os.getloadavg())}
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
