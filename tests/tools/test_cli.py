"""The command line answers mistakes like a Unix tool: exit status 2, one line naming the option, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from arrayrnn import __version__
from arrayrnn._tools import bench, bench_backward, cli

TINY = [(4, 2, 3, 5)]


@pytest.fixture(autouse=True)
def _no_backend_from_the_environment(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_BACKEND", raising=False)
    yield
    from arrayrnn import set_backend

    set_backend(None)  # main() sets the process-wide backend for --backend


def usage_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit with status 2 and exactly one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_backend(capsys):
    line = usage_error(capsys, ["bench", "--backend", "foo"])
    assert line.startswith("arrayrnn bench: error: --backend: ") and "numpy" in line and "'foo'" in line
    assert "--backend" in usage_error(capsys, ["demo", "--backend", "foo"])


def test_misspelled_cell(capsys):
    line = usage_error(capsys, ["bench", "--cells", "lstn"])
    assert line == "arrayrnn bench: error: --cells: expected a comma-separated list of lstm, gru, rnn, got 'lstn'"


def test_misspelled_mode(capsys):
    line = usage_error(capsys, ["bench", "--modes", "forwrd"])
    assert line.startswith("arrayrnn bench: error: --modes: ") and "forward+backward" in line and "'forwrd'" in line


def test_zero_repeats(capsys):
    assert usage_error(capsys, ["bench", "--repeats", "0"]).endswith("--repeats: expected a positive integer, got '0'")


def test_negative_learning_rate(capsys):
    assert usage_error(capsys, ["demo", "--lr", "-1"]).endswith("--lr: expected a positive number, got '-1'")
    assert "--lr" in usage_error(capsys, ["demo", "--lr", "nan"])


def test_negative_seed(capsys):
    line = usage_error(capsys, ["demo", "--seed", "-1"])
    assert line == "arrayrnn demo: error: --seed: expected a non-negative integer, got '-1'"


def test_negative_threads(capsys):
    assert usage_error(capsys, ["bench", "--threads", "-3"]).endswith(
        "--threads: expected a positive integer, got '-3'"
    )


def test_zero_threads(capsys):
    assert usage_error(capsys, ["bench", "--threads", "0"]).endswith("--threads: expected a positive integer, got '0'")


def test_info_with_a_nonsense_backend(capsys):
    line = usage_error(capsys, ["info", "--backend", "nonsense"])
    assert line.startswith("arrayrnn info: error: --backend: ") and "'nonsense'" in line


def test_steps_not_a_number(capsys):
    line = usage_error(capsys, ["demo", "--steps", "abc"])
    assert line == "arrayrnn demo: error: --steps: expected a positive integer, got 'abc'"
    assert "_positive" not in line


def test_backend_that_is_not_installed(capsys, monkeypatch):
    monkeypatch.setattr(cli, "backend_status", lambda name: None if name == "numpy" else "not installed (x)")
    monkeypatch.setattr(cli, "installed", lambda module: module == "numpy")
    line = usage_error(capsys, ["demo", "--backend", "torch"])
    assert line.startswith("arrayrnn demo: error: --backend: backend 'torch' is unavailable: not installed")
    assert 'pip install "torch==2.13.0"' in line


def test_bad_environment_variable(capsys, monkeypatch):
    monkeypatch.setenv("ARRAYRNN_BACKEND", "bogus")
    for command in (["demo", "--steps", "1"], ["info"], ["bench"]):
        line = usage_error(capsys, command)
        assert "ARRAYRNN_BACKEND" in line and "'bogus'" in line


def test_environment_variable_naming_an_unusable_backend(capsys, monkeypatch):
    monkeypatch.setenv("ARRAYRNN_BACKEND", "cupy")
    monkeypatch.setattr(cli, "backend_status", lambda name: None if name == "numpy" else "not installed (x)")
    monkeypatch.setattr(cli, "installed", lambda module: module == "numpy")
    line = usage_error(capsys, ["demo", "--steps", "1"])
    assert "ARRAYRNN_BACKEND='cupy'" in line and 'pip install ".[cuda12]"' in line
    assert cli.main(["info"]) == 0  # info reports it rather than refusing
    out = capsys.readouterr().out
    assert "default backend: none: environment variable ARRAYRNN_BACKEND='cupy'" in out


def test_module_entry_point_reports_a_usage_error_without_a_traceback():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("ARRAYRNN_BACKEND", None)
    done = subprocess.run(
        [sys.executable, "-m", "arrayrnn", "bench", "--cells", "lstn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "arrayrnn bench: error: --cells: expected a comma-separated list of lstm, gru, rnn, got 'lstn'"
    ]
    assert done.stdout == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out == f"arrayrnn {__version__}\n"


# ----------------------------------------------------------------------------------------------
# info


def info_lines(capsys) -> dict[str, str]:
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}


def test_info_reports_backends_and_optional_packages_once(capsys):
    lines = info_lines(capsys)
    for name in ("numpy", "cupy", "array_api_strict", "torch", "jax", "dask", "numba", "onnxruntime"):
        assert name in lines
    assert " usable " in lines["numpy"]
    for line in lines.values():
        assert line.count("not installed") <= 1, line
        assert "pip install torch" not in line  # unpinned torch pulls a multi-GB CUDA build
        assert "arrayrnn[" not in line  # hints work from a clone: pip install ".[extra]"


def test_info_when_packages_are_missing(capsys, monkeypatch):
    missing = {"torch", "numba", "onnxruntime", "onnx"}

    def status(name):
        return (
            f"not installed (No module named {name!r}); install with: pip install {name}" if name in missing else None
        )

    monkeypatch.setattr(cli, "backend_status", lambda name: status(name) if name != "cupy" else status("torch"))
    monkeypatch.setattr(cli, "installed", lambda module: module not in missing | {"cupy"})
    real_version_of = cli.version_of
    monkeypatch.setattr(cli, "version_of", lambda *names: None if set(names) & missing else real_version_of(*names))
    monkeypatch.setattr(cli, "_devices", lambda name: "cpu")
    lines = info_lines(capsys)
    assert lines["torch"].split()[1:4] == ["not", "installed", "-"]
    assert 'install with: pip install "torch==2.13.0"' in lines["torch"]
    assert 'pip install ".[cuda12]"' in lines["cupy"]
    assert "not installed" in lines["numba"] and 'pip install ".[numba]"' in lines["numba"]
    assert "not installed" in lines["onnxruntime"] and 'pip install ".[onnx]"' in lines["onnxruntime"]
    for line in lines.values():
        assert line.count("not installed") <= 1, line


def test_info_tells_cupy_installed_without_a_gpu_from_not_installed(capsys, monkeypatch):
    reason = "CuPy is installed but no usable GPU/driver was found (cudaErrorNoDevice); it needs an NVIDIA GPU"
    monkeypatch.setattr(cli, "backend_status", lambda name: reason if name == "cupy" else None)
    monkeypatch.setattr(cli, "installed", lambda module: True)
    real_version_of = cli.version_of
    monkeypatch.setattr(
        cli, "version_of", lambda *names: "13.6.0" if "cupy-cuda12x" in names else real_version_of(*names)
    )
    monkeypatch.setattr(cli, "_devices", lambda name: "cpu")
    line = info_lines(capsys)["cupy"]
    assert "unavailable" in line and "13.6.0" in line and "no usable GPU/driver" in line
    assert "pip install" not in line and "not installed" not in line


def test_backend_status_for_cupy_installed_without_a_gpu(monkeypatch):
    """The real status logic with a stand-in CuPy whose driver call fails: no advice to install CuPy."""
    import types

    from arrayrnn import backend

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend, "_status_cache", {})
    reason = backend.backend_status("cupy")
    assert "installed" in reason and "no usable GPU/driver" in reason and "insufficient" in reason
    assert "pip install" not in reason and "not installed" not in reason
    line = cli.backend_line("cupy")
    assert line.split()[:2] == ["cupy", "unavailable"] and "no usable GPU/driver" in line and "pip install" not in line

    monkeypatch.setitem(sys.modules, "cupy", None)  # not installed at all
    monkeypatch.setattr(backend, "_status_cache", {})
    reason = backend.backend_status("cupy")
    assert reason.startswith("not installed") and "cuda12" in reason


# ----------------------------------------------------------------------------------------------
# bench


@pytest.fixture
def tiny_bench(monkeypatch):
    """``arrayrnn bench`` on a one-shape grid, without a progress bar; returns the records it made."""
    records = []
    real = bench.run_benchmark

    def run(*args, **kwargs):
        records.append(real(*args, **{**kwargs, "grid": TINY, "progress": False}))
        return records[-1]

    monkeypatch.setattr(bench, "run_benchmark", run)
    return records


QUICK = ["bench", "--cells", "rnn", "--modes", "forward", "--repeats", "1", "--no-memory", "--threads", "1"]


def test_bench_writes_into_arrayrnn_bench_in_the_current_directory(tmp_path, monkeypatch, tiny_bench, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(QUICK) == 0
    written = list((tmp_path / "arrayrnn-bench").glob("bench-numpy-*.json"))
    assert len(written) == 1 and not (tmp_path / "benchmarks").exists()
    assert "arrayrnn-bench" in capsys.readouterr().out
    assert cli.main([*QUICK, "--out", str(tmp_path / "elsewhere")]) == 0
    assert len(list((tmp_path / "elsewhere").glob("bench-numpy-*.json"))) == 1


def test_bench_help_documents_the_default_folder(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "./arrayrnn-bench/" in capsys.readouterr().out


def test_bench_out_that_cannot_be_a_folder(tmp_path, capsys, tiny_bench):
    (tmp_path / "file").write_text("")
    line = usage_error(capsys, [*QUICK, "--out", str(tmp_path / "file" / "sub")])
    assert line.startswith("arrayrnn bench: error: --out: cannot create the folder")
    assert tiny_bench == []


def test_bench_plot_without_matplotlib_refuses_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although --plot cannot be honoured")

    monkeypatch.setattr(bench, "run_benchmark", must_not_run)
    line = usage_error(capsys, [*QUICK, "--plot", "--out", str(tmp_path / "out")])
    assert line.startswith("arrayrnn bench: error: --plot: needs matplotlib") and 'pip install ".[bench]"' in line
    assert not (tmp_path / "out").exists()


def test_run_benchmark_checks_matplotlib_first(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(bench, "limit_threads", lambda threads: pytest.fail("ran before checking matplotlib"))
    with pytest.raises(ImportError, match="matplotlib"):
        bench.run_benchmark(["rnn"], grid=TINY, repeats=1, make_plot=True, out_dir=None, progress=False)


def test_bench_reports_missing_peers_honestly(tmp_path, monkeypatch, capsys):
    """Without torch and onnxruntime: no thread count claimed for them, and "not installed" in every mode."""
    absent = {"torch", "onnx", "onnxruntime"}

    def importable(module):
        return module not in absent and real_importable(module)

    real_importable = bench.importable

    monkeypatch.setattr(bench, "importable", importable)
    monkeypatch.setattr(bench_backward, "importable", importable)
    record = bench.run_benchmark(
        ["rnn"], grid=TINY, repeats=1, threads=1, memory_case=None, out_dir=tmp_path, progress=False
    )
    out = capsys.readouterr().out
    peer_lines = [line for line in out.splitlines() if line.strip().startswith(("torch", "onnxruntime"))]
    assert len(peer_lines) == 2
    for line in peer_lines:
        assert "not installed" in line and "not timed" in line and "threads" not in line
    assert 'pip install "torch==2.13.0"' in out and "intra-op" not in out
    assert record["threads"]["torch"] is None and record["threads"]["onnxruntime_intra_op"] is None
    assert record["peers"]["torch"]["installed"] is False
    assert set(record["skipped_peers"]) == {"forward", "forward+backward"}
    for mode, skipped in record["skipped_peers"].items():
        assert skipped["onnxruntime"].startswith("not installed"), mode
        assert skipped["torch"].startswith("not installed"), mode
    assert out.count("not timed in ") == 2
    written = json.loads(next(tmp_path.glob("bench-numpy-*.json")).read_text())
    assert written["skipped_peers"]["forward+backward"]["onnxruntime"].startswith("not installed")
    assert {row["mode"] for row in written["results"]} == {"forward", "forward+backward"}
    assert all(set(row["median_s"]) <= {"arrayrnn", "gemm"} for row in written["results"])


def test_bench_reports_the_threads_installed_peers_use(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    record = bench.run_benchmark(
        ["rnn"], grid=TINY, repeats=1, threads=1, memory_case=None, modes=["forward"], out_dir=tmp_path, progress=False
    )
    out = capsys.readouterr().out
    assert record["peers"]["torch"]["installed"] and record["peers"]["torch"]["threads"] == torch.get_num_threads() == 1
    assert record["threads"] == {"requested": 1, "torch": 1, "onnxruntime_intra_op": 1}
    assert "onnxruntime" in out and "intra-op 1 threads" in out
