"""``arrayrnn bench``'s blocked timing, per-library threads, foreign-threads and fresh-process rows (tiny shapes)."""

from __future__ import annotations

import json

import pytest

from arrayrnn._tools import bench, bench_extras, cli
from tests.conftest import need

TINY = [(4, 2, 3, 5)]
QUICK = {"grid": TINY, "repeats": 2, "memory_case": None, "progress": False, "pause": 0}


def test_blocked_timing_runs_each_library_in_one_block():
    calls = []
    runners = [bench.Runner(name, lambda name=name: calls.append(name)) for name in "abc"]
    rounds = []
    samples, threads = bench_extras.time_blocked(runners, repeats=3, on_round=lambda: rounds.append(1), pause=0)
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(value >= 0 for values in samples.values() for value in values)
    # every call of "a" (calibration and samples) comes before any call of "b", and so on: no interleaving
    firsts = [calls.index(name) for name in "abc"]
    lasts = [len(calls) - 1 - calls[::-1].index(name) for name in "abc"]
    assert lasts[0] < firsts[1] and lasts[1] < firsts[2]
    assert len(rounds) == 3
    assert set(threads) == {"a", "b", "c"} and all("pools" in used for used in threads.values())


def test_the_record_names_the_threads_each_library_used(tmp_path, capsys):
    need("threadpoolctl")
    record = bench.run_benchmark(
        ["rnn"], threads=1, modes=["forward"], foreign=False, first_call_case=None, out_dir=tmp_path, **QUICK
    )
    written = json.loads(next(tmp_path.glob("bench-numpy-*.json")).read_text())
    assert written["settings"]["timing"] == "blocked"
    (row,) = written["results"]
    assert row["threads"] == json.loads(json.dumps(record["results"][0]["threads"]))
    blas = {name: n for name, n in row["threads"]["arrayrnn"]["pools"].items() if not name.startswith("openmp:")}
    assert blas and set(blas.values()) == {1}  # threadpoolctl's own view after limiting to 1 thread
    assert set(row["threads"]) == set(row["median_s"])
    if "torch" in row["median_s"]:
        assert row["threads"]["torch"]["torch"] == 1
    if "onnxruntime" in row["median_s"]:
        assert row["threads"]["onnxruntime"]["intra_op"] == 1
    out = capsys.readouterr().out
    assert "threads ar/torch/ort" in out and "| RNN | 4, 2, 3, 5 |" in out


def test_foreign_threads_row_sits_beside_the_quiet_time(capsys):
    torch = need("torch")
    record = bench.run_benchmark(
        ["gru"], modes=["forward"], foreign=True, first_call_case=None, out_dir=None, threads=2, **QUICK
    )
    (row,) = record["foreign_threads"]
    assert (row["cell"], row["T"], row["B"], row["I"], row["H"]) == ("gru", *TINY[0])
    assert row["quiet_s"] > 0 and row["after_torch_s"] > 0 and row["torch_s"] > 0
    assert row["ratio"] == pytest.approx(row["after_torch_s"] / row["quiet_s"])
    assert row["samples"] >= bench_extras.FOREIGN_MIN_SAMPLES
    assert row["threads"]["torch"]["torch"] == torch.get_num_threads() == 2
    assert "right after a torch call" in capsys.readouterr().out


def test_first_call_in_a_fresh_process_reports_import_and_call_apart():
    row = bench_extras.first_call("gru", (3, 2, 3, 4), numba=False, threads=1, timeout=60)
    assert "error" not in row, row.get("error")
    assert row["import_s"] > 0 and row["first_call_s"] > 0 and row["second_call_s"] > 0
    assert row["numba_loaded"] is False  # ARRAYRNN_NUMBA=0 reached the child: numba never imported
    table = bench_extras.format_first_call([row, {**row, "numba": True, "error": "boom"}])
    assert "| GRU | 3, 2, 3, 4 | off (ARRAYRNN_NUMBA=0) |" in table and "failed: boom" in table


def test_first_call_failure_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(bench_extras, "_FIRST_CALL_SCRIPT", "raise SystemExit('no such cell')")
    row = bench_extras.first_call("lstm", (3, 2, 3, 4), numba=False, threads=1, timeout=60)
    assert row["error"] == "no such cell"


def test_cli_switches_for_the_new_rows():
    args = cli.build_parser().parse_args(["bench", "--no-foreign-threads", "--no-first-call"])
    assert args.no_foreign_threads and args.no_first_call
    args = cli.build_parser().parse_args(["bench"])
    assert not args.no_foreign_threads and not args.no_first_call
