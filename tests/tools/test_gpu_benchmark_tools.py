"""The GPU benchmark's pure helpers and the README table generator, on hand-made results (no GPU)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from tests.support import needs_experimental

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("gpu_bench")


@pytest.fixture(scope="module")
def table():
    return _load("gpu_table")


def test_repeats_are_clamped(bench):
    assert bench.choose_repeats(10.0) == bench.MIN_REPEATS
    assert bench.choose_repeats(1e-6) == bench.MAX_REPEATS
    assert bench.MIN_REPEATS <= bench.choose_repeats(0.02) <= bench.MAX_REPEATS


def test_rel_diff_flags_nan_and_shape_mismatch(bench):
    reference = np.array([[1.0, -2.0]])
    assert bench.rel_diff(reference + 1e-3, reference) == pytest.approx(5e-4)
    assert bench.rel_diff(np.array([[np.nan, 0.0]]), reference) == float("inf")
    assert bench.rel_diff(np.zeros((2, 1)), reference) == float("inf")


def _entry(cell, shape, impl, ms, direction="forward", dtype="float32", **extra):
    return {"cell": cell, "shape": list(shape), "dtype": dtype, "direction": direction, "impl": impl,
            "median_ms": ms, **extra}  # fmt: skip


def test_table_ratios_bold_mismatch_and_targets(table):
    small, large = (100, 1, 64, 256), (100, 256, 1024, 1024)
    data = {
        "date": "2026-12-01T00:00:00+00:00",
        "machine": {"device": "NVIDIA H100 80GB HBM3"},
        "versions": {"cupy": "14.2.0", "torch": "2.11.0", "cudnn": 91900, "arrayrnn": "0.1.0"},
        "settings": {"tf32": False},
        "results": [
            _entry("lstm", small, "cudnn", 2.0),
            _entry("lstm", small, "generic", 34.0, ok=True, rel_diff=1e-7),
            _entry("lstm", small, "fused", 6.0, ok=True, rel_diff=1e-7),
            _entry("lstm", small, "graph", 1.0, ok=True, rel_diff=1e-7),
            _entry("lstm", small, "auto", 1.1, ok=True, rel_diff=1e-7, auto_choice="graph"),
            _entry("lstm", large, "cudnn", 10.0),
            _entry("lstm", large, "fused", 9.0, ok=False, rel_diff=0.5),
            _entry("lstm", large, "auto", 12.0, ok=True, rel_diff=1e-7, auto_choice="fused"),
            {**_entry("lstm", large, "graph", 0.0), "error": "RuntimeError: boom"},
            _entry("lstm", small, "cudnn", 4.0, direction="forward+backward"),
            _entry("lstm", small, "vjp", 4.4, direction="forward+backward", ok=True, rel_diff=1e-6),
            _entry("lstm", small, "graph[nb=1]", 1.0, chosen_tile=1),
        ],
    }
    text = table.render(data)
    assert "NVIDIA H100 80GB HBM3" in text and "TF32 off" in text
    # no run measured "persistent" or "cluster": no column of dashes for them
    assert "| LSTM | 100, 1, 64, 256 | 2.00 ms | 17× | 3.00× | **0.50×** | **0.55×** (graph) |" in text
    assert "0.90× (mismatch)" in text  # faster, but wrong: never bold, never counted
    assert "error" in text and "1 measurement(s) failed" in text
    assert "| LSTM | 100, 1, 64, 256 | 4.00 ms | **1.10×** |" in text  # fwd+bwd target is 1.2x
    assert "forward: target ≤ 1.0× cuDNN met on 1 of 2 shapes" in text
    assert "LSTM (100, 256, 1024, 1024): 1.20× (target 1.0×)" in text
    assert "forward+backward: target ≤ 1.2× cuDNN met on 1 of 1 shapes" in text


def test_table_merges_runs_and_follows_the_current_heuristic(table):
    """A row comes whole from the first run that timed cuDNN for it (marked with its run letter); where a run's
    auto chose another path than today's heuristic, the auto column shows that path's measurement, marked †."""
    from arrayrnn._backends.cupy import policy

    small = (100, 1, 64, 256)  # today's heuristic: the small-batch path
    current = policy.current().small_batch_impl
    other = "persistent" if current == "graph" else "graph"
    newer = {
        "results": [
            _entry("gru", small, "cudnn", 2.0),
            _entry("gru", small, current, 1.0, ok=True),
            _entry("gru", small, other, 3.0, ok=True),
            _entry("gru", small, "auto", 3.1, ok=True, auto_choice=other),
            {**_entry("gru", small, "cudnn", 0.0, direction="forward+backward"), "skipped": "time budget"},
        ]
    }
    older = {
        "results": [
            _entry("gru", small, "cudnn", 4.0, direction="forward+backward"),
            _entry("gru", small, "vjp", 2.0, direction="forward+backward", ok=True),
        ]
    }
    text = table.render([newer, older], ["new.json", "old.json"])
    assert f"**0.50×** ({current}†)" in text  # today's pick, measured in the same run: 1.0 / 2.0
    assert "| GRU | 100, 1, 64, 256 (B) | 4.00 ms | **0.50×** |" in text  # fwd+bwd from the older run
    assert "Rows marked (B):" in text and "`old.json`" in text


def test_barrier_and_sweep_tables(table):
    data = {
        "results": [
            {"cell": "barrier", "shape": [1000, 16, 256, 0], "dtype": "-", "direction": "barrier", "impl": "fences",
             "blocks": 16, "acqrel_barrier": False, "median_ms": 2.0, "us_per_barrier": 2.0},
            {"cell": "barrier", "shape": [1000, 16, 256, 0], "dtype": "-", "direction": "barrier", "impl": "acqrel",
             "blocks": 16, "acqrel_barrier": True, "median_ms": 1.0, "us_per_barrier": 1.0},
            _entry("lstm", (100, 8, 128, 256), "persistent[nb=2,t=512,b=1,acqrel]", 1.5, chosen_tile=1, tile=2,
                   threads=512, blocks_per_sm=1, acqrel_barrier=True),
        ]
    }  # fmt: skip
    text = table.render(data)
    assert "| 16 | 2.00 | 1.00 |" in text
    row = "| LSTM | 100, 8, 128, 256 | persistent, 512 threads, 1/SM, acq/rel barrier | – / 1.500 / – / – | 2 | 1 |"
    assert row in text


def test_paired_ratio_is_preferred(table):
    small = (100, 1, 64, 256)
    data = {
        "results": [
            _entry("lstm", small, "cudnn", 2.0),
            _entry("lstm", small, "graph", 1.0, ok=True, paired_ratio=0.4, reference_median_ms=2.5),
        ]
    }
    assert "**0.40×**" in table.render(data)  # the alternating measurement, not 1.0 / 2.0


def test_time_pairs_alternates(bench):
    calls = []

    class Clock(bench.Machine):
        def __init__(self):
            self.dry_run = True

        def sync(self):
            pass

        def _one(self, function, for_torch):
            calls.append("ref" if for_torch else "ours")
            function()
            return 2.0 if for_torch else 1.0

    result = Clock().time_pairs(lambda: None, lambda: None)
    assert calls[:4] == ["ref", "ours", "ref", "ours"] and result["paired_ratio"] == 0.5
    assert result["repeats"] == bench.MAX_REPEATS and result["reference_median_ms"] == 2.0


def test_breakdown_table(table):
    entry = _entry("rnn", (50, 4096, 256, 256), "fused", 19.0, direction="vjp-breakdown", forward_ms=3.0,
                   backward_ms=16.0, previous_hidden_ms=1.0, rnn_param_grads_ms=5.0, backward_loop_ms=10.0)  # fmt: skip
    other = {**entry, "impl": "fused[bias=sum]", "rnn_param_grads_ms": 9.0, "median_ms": 23.0}
    text = table.render({"results": [entry, other]})
    assert "| RNN | 50, 4096, 256, 256 | fused | 3.00 | 10.00 | 1.00 | 5.00 | 19.00 |" in text
    assert "| RNN | 50, 4096, 256, 256 | fused[bias=sum] | 3.00 | 10.00 | 1.00 | 9.00 | 23.00 |" in text


def test_overridden_puts_the_knobs_back(bench):
    import types

    module = types.SimpleNamespace(THREADS=256, MAX_BLOCKS=None)
    with pytest.raises(RuntimeError):
        with bench.overridden(module, THREADS=512, MAX_BLOCKS=1):
            assert (module.THREADS, module.MAX_BLOCKS) == (512, 1)
            raise RuntimeError("a failed measurement")
    assert (module.THREADS, module.MAX_BLOCKS) == (256, None)


def test_cluster_column_refusals_barrier_and_sweep(table):
    """The cluster column appears once a run measured it; a shape the path refuses reads "n/a" (not "error");
    the cluster barrier gets its own column and the cluster sweep its own rows."""
    small, large = (100, 1, 64, 128), (100, 256, 1024, 1024)
    refused = "ValueError: impl='cluster': the weights and state of B=256, H=1024 need ..."
    data = {
        "results": [
            _entry("lstm", small, "cudnn", 2.0),
            _entry("lstm", small, "graph", 3.0, ok=True),
            _entry("lstm", small, "cluster", 1.0, ok=True),
            _entry("lstm", large, "cudnn", 2.0),
            {**_entry("lstm", large, "cluster", 0.0), "error": refused},
            {**_entry("lstm", large, "graph", 0.0), "error": "RuntimeError: CUDA_ERROR_LAUNCH_FAILED"},
            {"cell": "barrier", "shape": [1000, 8, 256, 0], "dtype": "-", "direction": "barrier", "impl": "cluster",
             "blocks": 8, "median_ms": 0.3, "us_per_barrier": 0.3},
            _entry("lstm", small, "cluster[c=8,t=256,nb=1]", 0.9, cluster_size=8, threads=256, tile=1, chosen_tile=1),
        ]
    }  # fmt: skip
    text = table.render(data)
    assert "| cell | T, B, I, H | cuDNN | graph | cluster | auto (picks) |" in text
    assert "| LSTM | 100, 1, 64, 128 | 2.00 ms | 1.50× | **0.50×** |" in text
    assert "| LSTM | 100, 256, 1024, 1024 | 2.00 ms | error | n/a |" in text
    assert "| 8 | – | – | 0.30 |" in text and "cluster barrier" in text
    assert "| LSTM | 100, 1, 64, 128 | cluster, 8 blocks of 256 threads | 0.900 / – / – / – | 1 | 1 |" in text
    without = table.render({"results": data["results"][:2]})
    assert "cluster" not in without
    backward = [
        _entry("rnn", small, "cudnn", 2.0, direction="forward+backward"),
        _entry("rnn", small, "vjp", 3.0, direction="forward+backward", ok=True, auto_choice="graph"),
        _entry("rnn", small, "vjp-graph", 3.0, direction="forward+backward", ok=True),
        _entry("rnn", small, "vjp-cluster", 2.2, direction="forward+backward", ok=True),
    ]
    text = table.render({"results": backward})
    assert "| cell | T, B, I, H | cuDNN fwd+bwd | arrayrnn.vjp (picks) | graph | cluster |" in text
    assert "| RNN | 100, 1, 64, 128 | 2.00 ms | 1.50× (graph) | 1.50× | **1.10×** |" in text


@needs_experimental
def test_decide_ranks_switch_combinations_on_the_run(monkeypatch):
    """A run where fused_graph beats fused at B = 256 and cluster beats graph at B = 1: the combination with both
    switches on meets the most targets; a path the run did not time counts as unknown, not as met."""
    decide = _load("gpu_decide")
    from arrayrnn._backends.cupy import policy

    small, large, mid = (100, 1, 64, 256), (100, 256, 1024, 1024), (100, 128, 256, 512)
    ok = {"ok": True, "rel_diff": 1e-7}
    data = {
        "machine": {"device": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
        "results": [
            _entry("lstm", small, "cudnn", 2.0),
            _entry("lstm", small, "graph", 2.4, **ok),
            _entry("lstm", small, "cluster", 1.6, **ok),
            _entry("lstm", small, "auto", 2.4, auto_choice="graph", **ok),
            _entry("lstm", large, "cudnn", 10.0),
            _entry("lstm", large, "fused", 11.0, **ok),
            _entry("lstm", large, "fused_graph", 9.0, **ok),
            _entry("lstm", large, "auto", 11.0, auto_choice="fused", **ok),
            # (a gradient plan holds about 4x the forward's buffers: at `large` fused_graph's would be too big)
            _entry("lstm", mid, "cudnn", 30.0, direction="forward+backward"),
            _entry("lstm", mid, "vjp", 40.0, direction="forward+backward", auto_choice="fused", **ok),
            _entry("lstm", mid, "vjp-fused", 40.0, direction="forward+backward", **ok),
            _entry("lstm", mid, "vjp-fused_graph", 33.0, direction="forward+backward", **ok),
            # the breakdown's variants of the fused gradient
            _entry("lstm", large, "fused", 20.0, direction="vjp-breakdown", BIAS_BY_MATMUL=True),
            _entry("lstm", large, "fused[bias=sum]", 25.0, direction="vjp-breakdown", BIAS_BY_MATMUL=False),
        ],
    }
    monkeypatch.setattr(decide, "SWITCHES", {"CLUSTER_AUTO": (False, True), "FUSED_GRAPH_AUTO": (False, True)})
    before = policy.current()
    ranked = decide.rank([data])
    assert policy.current() is before, "the switches are put back"
    best, result = ranked[0]
    assert best == {"CLUSTER_AUTO": True, "FUSED_GRAPH_AUTO": True}
    assert decide.environment(best) == "CLUSTER_AUTO=1,FUSED_GRAPH_AUTO=1"  # for ARRAYRNN_CUPY_DISPATCH
    assert (result["met"], result["total"], result["unknown"]) == (3, 3, 0)
    as_is = next(r for s, r in ranked if s == {"CLUSTER_AUTO": False, "FUSED_GRAPH_AUTO": False})
    assert (as_is["met"], as_is["unknown"]) == (0, 0)
    text = decide.report([data])
    assert "Best: CLUSTER_AUTO = True, FUSED_GRAPH_AUTO = True" in text
    assert "fused[bias=sum] {'BIAS_BY_MATMUL': False}: 1.25x the time of 'fused'" in text
    # a path whose tests failed (--exclude) or that mismatched cuDNN in the run is never switched on
    assert decide.rank([data], excluded={"cluster"})[0][0] == {"CLUSTER_AUTO": False, "FUSED_GRAPH_AUTO": True}
    data["results"].append(_entry("lstm", mid, "vjp-fused_graph", 1.0, direction="forward+backward", ok=False))
    assert decide.broken_paths([data]) == {"fused_graph"}
    assert decide.rank([data])[0][0] == {"CLUSTER_AUTO": True, "FUSED_GRAPH_AUTO": False}
    assert "Never switched on: fused_graph" in decide.report([data])
    data["results"].pop()
    # without the fused_graph timing at B = 256, turning its switch on leaves that row unknown
    data["results"] = [e for e in data["results"] if e["impl"] != "fused_graph"]
    unknown = next(r for s, r in decide.rank([data]) if s == {"CLUSTER_AUTO": True, "FUSED_GRAPH_AUTO": True})
    assert unknown["unknown"] == 1


def test_auto_column_without_an_auto_timing_takes_the_path_auto_picks(table):
    """gpu.sh no longer times auto itself: the column shows the measurement of the path the heuristic picks."""
    small = (100, 1, 64, 256)
    data = {"results": [_entry("lstm", small, "cudnn", 2.0), _entry("lstm", small, "graph", 1.0, ok=True),
                        _entry("lstm", small, "fused", 6.0, ok=True)]}  # fmt: skip
    text = table.render(data)
    assert "| **0.50×** (graph†) |" in text
    assert "did not time auto itself" in text
