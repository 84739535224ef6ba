"""The ``--backend jax`` benchmark rows: the hand-written ``lax.scan`` peer computes what arrayrnn computes."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrnn._tools import bench
from tests.conftest import need
from tests.support import random_params


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_the_lax_scan_peer_computes_the_same_function(kind):
    need("jax")
    from arrayrnn._tools import bench_jax

    params = random_params(kind, 3, 5, seed=1, dtype="float32")
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32")
    runners = bench_jax.jax_runners(kind, params, x)
    assert [r.name for r in runners] == ["arrayrnn", "lax.scan"]
    differences = bench._check_outputs(runners, kind)
    assert set(differences) == {"lax.scan"} and differences["lax.scan"] < 1e-5
    for runner in runners:
        assert runner.threads()["first_call_s"] > 0


def test_jax_rows_in_the_record(tmp_path, capsys):
    need("jax")
    record = bench.run_benchmark(
        ["gru"], backend="jax", grid=[(4, 2, 3, 5)], repeats=1, memory_case=None, modes=["forward"], foreign=False,
        first_call_case=None, pause=0.0, out_dir=tmp_path, progress=False,
    )  # fmt: skip
    row = record["results"][0]
    assert set(row["median_s"]) >= {"arrayrnn", "lax.scan", "gemm"}
    assert row["ratio"]["lax.scan"] == pytest.approx(row["median_s"]["arrayrnn"] / row["median_s"]["lax.scan"])
    assert "| forward | GRU | 4, 2, 3, 5 |" in capsys.readouterr().out.split("vs lax.scan")[1]
