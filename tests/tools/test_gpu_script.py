"""``ci/gpu.sh``'s own logic, dry-run on the CPU: a device call is scarce (15 minutes, some sessions only), so
a mistake in the script's bookkeeping must show here, not there.

The script runs in a copy of the tree with a stand-in for ``python3`` (``PYTHON``): the stand-in answers the
GPU parts (CuPy sees a device; the smoke check hangs on one path; the fast tests fail on another; the benchmark
writes hand-made results) and hands everything else (``gpu_table.py``, ``gpu_decide.py``, ``arrayrnn info``) to
this Python. Checked: a hung path is left out of the fast tests and the benchmark, a failed one is never switched
on, the suite runs with the switches the benchmark supports less those, and the summary names every phase.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.support import needs_experimental
from tests.tools.test_gpu_benchmark_tools import _entry

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

#: the GPU-only files: the fast phase runs them, the suite leaves them out
GPU_ONLY = [
    "tests/cupy_backend/test_cupy_fast.py",
    "tests/cupy_backend/experimental/test_cupy_fast_paths.py",
    "tests/cupy_backend/experimental/test_cupy_cluster.py",
    "tests/cupy_backend/test_cupy_grad.py",
    "tests/cupy_backend/experimental/test_cupy_grad_paths.py",
]
#: what else the suite leaves out: the CPU emulator's and nvcc's files, and the files that never touch CuPy
CPU_ONLY = [
    "tests/cupy_backend/test_cupy_emulated.py",
    "tests/cupy_backend/test_cupy_emulated_grad.py",
    "tests/cupy_backend/experimental/test_cupy_emulated_paths.py",
    "tests/cupy_backend/experimental/test_cupy_emulated_grad_paths.py",
    "tests/cupy_backend/experimental/test_cupy_emulated_cluster.py",
    "tests/cupy_backend/experimental/test_cupy_emulated_fused_graph.py",
    "tests/cupy_backend/experimental/test_experimental_removable.py",
    "tests/cupy_backend/test_cuda_emulator_grid.py",
    "tests/cupy_backend/test_cupy_sources.py",
    "tests/numpy_backend",
    "tests/tools/test_bench.py",
    "tests/tools/test_gpu_benchmark_tools.py",
    "tests/tools/test_gpu_script.py",
]

pytestmark = [
    pytest.mark.skipif(
        shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and coreutils' timeout"
    ),
    needs_experimental,  # gpu_decide.py weighs CLUSTER_AUTO, FUSED_GRAPH_AUTO, TILED_AUTO
]

# the stand-in for the GPU machine's python3: GPU work faked, the rest to this interpreter
FAKE_PYTHON = r"""#!/usr/bin/env bash
args="$*"
case "$args" in
  "-m pip install"*) mkdir -p .site/arrayrnn; exit 0 ;;
  *getDeviceCount*) exit 0 ;;
  ci/gpu_smoke.py*)  # the smoke check hangs in the tiled kernel
    echo "> trying fused forward lstm float32"; echo "> trying tiled forward lstm float32"; exec sleep 30 ;;
  "-m pytest"*)
    echo "pytest $args | ARRAYRNN_CUPY_DISPATCH=${ARRAYRNN_CUPY_DISPATCH:-}" >>"$OUT/calls.txt"
    if [[ "$args" == *"cupy tests/cupy_backend/test_cupy_fast.py"* ]]; then  # the fast phase
      echo "FAILED tests/cupy_backend/experimental/test_cupy_fast_paths.py::test_x[fused_graph-lstm] - AssertionError"
      exit 1
    fi
    exit 0 ;;
  benchmarks/gpu_bench.py*)
    echo "bench $args" >>"$OUT/calls.txt"
    out=$(echo "$args" | sed -E 's/.*--out ([^ ]+).*/\1/')
    cp "$FIXTURE" "$out"
    exit 0 ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def _run_fixture() -> dict:
    """A run in which cluster wins at B = 1, fused_graph at B = 256 and tiled at B = 128: were nothing broken,
    the best combination would switch all three on."""
    small, large, mid = (100, 1, 64, 256), (100, 256, 1024, 1024), (100, 128, 256, 512)
    ok = {"ok": True, "rel_diff": 1e-7}
    return {
        "machine": {"device": "NVIDIA H100 80GB HBM3 (stand-in)", "compute_capability": "9.0"},
        "results": [
            _entry("lstm", small, "cudnn", 2.0),
            _entry("lstm", small, "graph", 2.4, **ok),
            _entry("lstm", small, "cluster", 1.6, **ok),
            _entry("lstm", large, "cudnn", 10.0),
            _entry("lstm", large, "fused", 11.0, **ok),
            _entry("lstm", large, "fused_graph", 9.0, **ok),
            _entry("lstm", mid, "cudnn", 5.0),
            _entry("lstm", mid, "fused", 6.0, **ok),
            _entry("lstm", mid, "graph", 7.0, **ok),
            _entry("lstm", mid, "tiled", 4.0, **ok),
        ],
    }


def test_gpu_script_leaves_out_hung_and_failed_paths(tmp_path):
    tree = tmp_path / "tree"
    (tree / "ci").mkdir(parents=True)
    shutil.copy(ROOT / "ci" / "gpu.sh", tree / "ci" / "gpu.sh")
    for name in ("src", "benchmarks"):
        (tree / name).symlink_to(ROOT / name)
    (tree / ".whl").mkdir()
    (tree / ".whl" / "stand_in-0-py3-none-any.whl").write_bytes(b"")
    (tree / ".whl" / "COMMIT").write_text("0123abc\n")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    fixture = tmp_path / "fixture.json"
    fixture.write_text(json.dumps(_run_fixture()))
    out = tmp_path / "out"
    environment = {
        key: value for key, value in os.environ.items() if key not in ("ARRAYRNN_CUPY_DISPATCH", "GPU_BENCH_ARGS")
    }
    environment.update(
        OUT=str(out), PYTHON=str(fake), REAL_PYTHON=sys.executable, FIXTURE=str(fixture), LIMIT_SMOKE="2",
        GPU_PHASES="smoke fast bench suite",
    )  # fmt: skip
    done = subprocess.run(
        ["bash", str(tree / "ci" / "gpu.sh")], env=environment, capture_output=True, text=True, timeout=300
    )
    log = (out / "gpu.log").read_text()
    calls = (out / "calls.txt").read_text().splitlines()
    assert done.returncode == 1, (done.returncode, log)  # the smoke timeout and the fast failure count

    assert "smoke timed out while trying 'tiled'" in log, log
    fast = next(line for line in calls if "--backend cupy tests/cupy_backend/test_cupy_fast.py" in line)
    assert "-k not tiled" in fast, fast
    assert fast.split("--backend cupy ")[1].split(" | ")[0].split() == GPU_ONLY, fast
    bench = next(line for line in calls if line.startswith("bench "))
    impls = bench.split("--impls ")[1].split()[0].split(",")
    vjp_impls = bench.split("--vjp-impls ")[1].split()[0].split(",")
    assert "tiled" not in impls and "fused_graph" in impls and "cluster" in impls, bench
    assert "vjp-tiled" not in vjp_impls and "vjp-fused_graph" in vjp_impls, bench

    # the suite: the benchmark's best switches, less the hung (tiled) and the failed (fused_graph) paths
    assert "not switched on for the suite (failed or hung above): tiled,fused_graph" in log, log
    suite = next(line for line in calls if "--ignore=tests/cupy_backend/test_cupy_fast.py" in line)
    switches = suite.split("ARRAYRNN_CUPY_DISPATCH=")[1].strip()
    assert "CLUSTER_AUTO=1" in switches, switches
    assert "FUSED_GRAPH_AUTO=1" not in switches and "TILED_AUTO=1" not in switches, switches
    assert f"suite phase: ARRAYRNN_CUPY_DISPATCH={switches}" in log, log

    # the README table came out of the benchmark's JSON, and the summary names each phase's end
    assert "| LSTM | 100, 128, 256, 512 | 5.00 ms |" in (out / "gpu_table.md").read_text()
    summary = log.split("=== summary")[1].splitlines()
    for phase, state in (("smoke", "TIMEOUT"), ("fast", "FAILED"), ("bench", "ok"), ("suite", "ok")):
        assert any(line.split()[:1] == [phase] and line.split()[1].startswith(state) for line in summary), summary
    # the suite leaves out the fast phase's files, the CPU-only ones (this one included), and nothing else
    ignored = [word.removeprefix("--ignore=") for word in suite.split() if word.startswith("--ignore=")]
    assert sorted(ignored) == sorted(GPU_ONLY + CPU_ONLY), suite
    for path in ignored:
        assert (ROOT / path).exists(), path
