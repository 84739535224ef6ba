"""Forward + backward of one LSTM layer: arrayrnn's vjp on NumPy against torch CPU autograd.

Same weights, same input and output cotangent; the results (y and every gradient) are checked to
agree before anything is timed. Reports the median of ``--repeats`` runs after one warm-up each,
alternating the two so that machine noise hits both alike.

    PYTHONPATH=src python benchmarks/grad_bench.py [--steps 100 --batch 64 --input 256 --hidden 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="threads for both libraries (default: as found)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    import arrayrnn as ar

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    blas_threads = max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=None)

    T, B, I, H = args.steps, args.batch, args.input, args.hidden
    rng = np.random.default_rng(0)
    params = ar.init_lstm(I, H, seed=1, dtype="float32", backend="numpy")
    x = rng.standard_normal((T, B, I)).astype("float32")
    dy = rng.standard_normal((T, B, H)).astype("float32")

    layer = torch.nn.LSTM(I, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(torch.from_numpy(getattr(params, name)))
    x_t = torch.from_numpy(x).requires_grad_(True)
    dy_t = torch.from_numpy(dy)

    def run_ours():
        (y, _), pullback = ar.vjp(ar.lstm, x, params)
        dx, d_params = pullback((dy, None))
        return y, dx, d_params

    def run_torch():
        layer.zero_grad()
        x_t.grad = None
        y, _ = layer(x_t)
        y.backward(dy_t)
        return y

    # agree first
    y, dx, d_params = run_ours()
    y_t = run_torch()
    worst = {"y": _relative(y, y_t.detach().numpy()), "dx": _relative(dx, x_t.grad.numpy())}
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        worst[name] = _relative(getattr(d_params, name), getattr(layer, f"{name}_l0").grad.numpy())
    assert all(error < 1e-3 for error in worst.values()), worst

    times = {"arrayrnn numpy": [], "torch autograd": []}
    for _ in range(args.repeats + 1):  # the first round is the warm-up
        for label, function in (("arrayrnn numpy", run_ours), ("torch autograd", run_torch)):
            start = time.perf_counter()
            function()
            times[label].append(time.perf_counter() - start)
    median = {label: statistics.median(values[1:]) for label, values in times.items()}
    ratio = median["arrayrnn numpy"] / median["torch autograd"]
    result = {
        "shape": {"T": T, "B": B, "I": I, "H": H, "dtype": "float32"},
        "median_ms": {label: round(1e3 * value, 2) for label, value in median.items()},
        "ratio_numpy_over_torch": round(ratio, 3),
        "max_relative_difference": {k: float(f"{v:.2e}") for k, v in worst.items()},
        "threads": {"torch": torch.get_num_threads(), "blas": blas_threads},
        "versions": {"numpy": np.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.machine(),
    }
    print(f"LSTM forward+backward, T={T} B={B} I={I} H={H} float32, median of {args.repeats}")
    for label, value in median.items():
        print(f"  {label:<16} {1e3 * value:8.1f} ms")
    print(
        f"  ratio arrayrnn/torch: {ratio:.2f}x   (outputs and gradients agree: max rel diff {max(worst.values()):.1e})"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / max(float(np.max(np.abs(want))), 1e-30))


if __name__ == "__main__":
    main()
