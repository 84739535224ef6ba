"""``arrayrnn demo``: runs from the command line, learns, is deterministic, and draws its progress."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

import arrayrnn as ar
from arrayrnn._tools import cli, demo


def test_cli_demo_trains_and_reports(capsys):
    assert cli.main(["demo", "--steps", "60", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "LSTM" in out and "on numpy" in out
    assert "60/60" in out and "[" + "#" * 30 + "]" in out  # the progress bar reached its end
    assert "held-out loss:" in out and "one held-out sequence" in out
    assert out.count("\n") > 20  # the plot and the table were drawn


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_each_cell_learns(cell):
    result = demo.train(cell, steps=60, seed=2, stream=io.StringIO())
    assert result["last_loss"] < result["first_loss"] / 5
    assert result["last_loss"] < result["repeat_input_loss"]  # better than copying the noisy input


def test_deterministic_for_a_fixed_seed():
    first = demo.train("lstm", steps=8, seed=5, stream=io.StringIO())
    again = demo.train("lstm", steps=8, seed=5, stream=io.StringIO())
    other = demo.train("lstm", steps=8, seed=6, stream=io.StringIO())
    assert first["history"] == again["history"] and (first["prediction"] == again["prediction"]).all()
    assert first["history"] != other["history"]


def test_runs_on_another_backend():
    pytest.importorskip("array_api_strict")
    result = demo.train("gru", steps=3, seed=0, backend="array_api_strict", stream=io.StringIO())
    reference = demo.train("gru", steps=3, seed=0, backend="numpy", stream=io.StringIO())
    assert result["last_loss"] == pytest.approx(reference["last_loss"], rel=1e-4)


def test_progress_bar_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = demo._ProgressBar(4, stream)
    for step in range(1, 5):
        if bar.wants_loss(step):
            bar.update(step, 0.5 / step)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "4/4  loss 0.12500" in text


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--steps", "0"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--cell", "transformer"])
    assert raised.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_module_entry_point():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "arrayrnn", "demo", "--steps", "2", "--cell", "rnn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "held-out loss" in done.stdout


def test_trains_on_dask_from_the_command_line(capsys):
    from tests.conftest import need

    need("dask")
    try:
        assert cli.main(["demo", "--backend", "dask", "--steps", "4", "--cell", "gru"]) == 0
    finally:
        ar.set_backend(None)  # --backend sets the process-wide backend; leave it as other tests expect
    out = capsys.readouterr().out
    assert "on dask" in out and "4/4" in out and "held-out loss:" in out


def test_dask_training_follows_the_numpy_run():
    from tests.conftest import need

    need("dask")
    result = demo.train("lstm", steps=5, seed=0, backend="dask", stream=io.StringIO())
    reference = demo.train("lstm", steps=5, seed=0, backend="numpy", stream=io.StringIO())
    # float32 gradients summed over 4 batch blocks instead of one batch: the same run to rounding
    assert result["last_loss"] == pytest.approx(reference["last_loss"], rel=1e-4)
    losses = [loss for _, loss in reference["history"]]
    assert [loss for _, loss in result["history"]] == pytest.approx(losses, rel=1e-4)
