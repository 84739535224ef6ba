"""The benchmark harness on a tiny grid: records, equal-output check, peers, CLI wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arrayrnn._tools import bench, cli
from tests.conftest import need
from tests.support import random_params

TINY = [(4, 2, 3, 5)]


def test_record_and_json(tmp_path, capsys):
    record = bench.run_benchmark(
        ["lstm", "gru", "rnn"],
        grid=TINY,
        repeats=1,
        memory_case=(50, 2, 3, 4),
        modes=["forward"],
        out_dir=tmp_path,
        progress=False,
        foreign=False,
        first_call_case=None,
        pause=0,
    )
    written = json.loads(next(tmp_path.glob("bench-numpy-*.json")).read_text())
    assert written["results"] == json.loads(json.dumps(record["results"]))
    assert {row["cell"] for row in written["results"]} == {"lstm", "gru", "rnn"}
    for row in written["results"]:
        assert row["flops"] == 2 * 4 * 2 * (3 + 5) * bench.GATES[row["cell"]] * 5
        assert set(row["median_s"]) >= {"arrayrnn", "gemm"}
        assert row["gemm_efficiency"] == pytest.approx(row["median_s"]["gemm"] / row["median_s"]["arrayrnn"])
        for peer, ratio in row["ratio"].items():
            assert ratio == pytest.approx(row["median_s"]["arrayrnn"] / row["median_s"][peer])
    assert written["threads"]["requested"] >= 1
    assert written["versions"]["numpy"] == np.__version__
    memory = {row["cell"]: row for row in written["memory"]}
    assert memory["lstm"]["output_bytes"] == 50 * 2 * 4 * 4
    assert "| LSTM | 4, 2, 3, 5 |" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_peers_compute_the_same_function(kind):
    """torch and the generated ONNX model agree with arrayrnn on the same weights (gate reordering)."""
    torch = need("torch")
    need("onnxruntime")
    threads = torch.get_num_threads()
    params = random_params(kind, 3, 5, seed=1, dtype="float32")
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32")
    runners, skipped = bench._forward_runners(kind, params, x, threads, "numpy")
    assert skipped == {}
    assert [r.name for r in runners] == ["arrayrnn", "torch", "onnxruntime", "gemm"]
    differences = bench._check_outputs(runners, kind)
    assert set(differences) == {"torch", "onnxruntime"}
    assert max(differences.values()) < 1e-5


def test_mismatching_peer_is_refused():
    params = random_params("gru", 3, 5, seed=1, dtype="float32")
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32")
    good = bench._arrayrnn_runner("gru", params, x, "numpy")
    wrong = bench.Runner("wrong", lambda: good.call() + 1e-2, good.to_numpy)
    with pytest.raises(RuntimeError, match="wrong output differs"):
        bench._check_outputs([good, wrong], "case")


def test_interleaved_timing_gives_every_runner_its_samples():
    calls = []
    runners = [bench.Runner(name, lambda name=name: calls.append(name)) for name in "abc"]
    samples = bench.time_interleaved(runners, repeats=3)
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(value >= 0 for values in samples.values() for value in values)


def test_cli_has_bench(tmp_path):
    args = cli.build_parser().parse_args(["bench", "--cells", "rnn", "--quick", "--out", str(tmp_path)])
    assert args.handler is bench.command
    assert args.cells == ["rnn"] and args.quick and args.out == str(tmp_path)
    assert cli.build_parser().parse_args(["bench"]).out == "arrayrnn-bench"  # in the current directory
    with pytest.raises(ValueError, match="cells must be among"):
        bench.run_benchmark(["lstmx"], grid=TINY, repeats=1, out_dir=None, progress=False)
    with pytest.raises(ValueError, match="modes must be among"):
        bench.run_benchmark(["rnn"], grid=TINY, repeats=1, modes=["backward"], out_dir=None, progress=False)
    args = cli.build_parser().parse_args(["bench", "--modes", "forward+backward"])
    assert args.modes == ["forward+backward"]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_forward_backward_mode_agrees_with_torch_autograd(kind):
    """The registered forward+backward runners: y, dx and every weight/bias gradient equal torch's."""
    need("torch")
    from arrayrnn._tools import bench_backward

    params = random_params(kind, 3, 5, seed=2, dtype="float32")
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype("float32")
    runners, skipped = bench.MODES["forward+backward"](kind, params, x, 1, "numpy")
    assert [r.name for r in runners] == ["arrayrnn", "torch"] and "onnxruntime" in skipped
    assert max(bench._check_outputs(runners, kind).values()) < 1e-4
    # a wrong weight gradient is caught (the check covers the gradients, not only y)
    ours = runners[0]

    def off_by_a_bit():
        y, dx, d_params = ours.call()
        return y, dx, type(d_params)(**{**vars(d_params), "weight_hh": d_params.weight_hh * 1.01})

    wrong = bench.Runner("wrong", off_by_a_bit, ours.to_numpy)
    with pytest.raises(RuntimeError, match="wrong output differs"):
        bench._check_outputs([runners[1], wrong], kind)
    assert bench_backward.forward_backward_runners is bench.MODES["forward+backward"]


def test_forward_backward_rows_in_the_record(tmp_path):
    need("torch")
    record = bench.run_benchmark(
        ["gru"],
        grid=TINY,
        repeats=1,
        memory_case=None,
        modes=["forward+backward"],
        out_dir=tmp_path,
        progress=False,
        foreign=False,
        first_call_case=None,
        pause=0,
    )
    (row,) = record["results"]
    assert row["mode"] == "forward+backward" and set(row["median_s"]) == {"arrayrnn", "torch"}
    assert row["ratio"]["torch"] == pytest.approx(row["median_s"]["arrayrnn"] / row["median_s"]["torch"])
