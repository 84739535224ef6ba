"""``arrayrnn convert IN OUT``: .npz <-> .onnx, and one-line usage errors (exit status 2) for what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._tools import cli
from tests.conftest import need
from tests.tools.test_cli import usage_error


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_BACKEND", raising=False)


def test_npz_to_onnx_to_npz(tmp_path, capsys):
    need("onnx")
    ort = need("onnxruntime")
    model = ar.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, peepholes=True, seed=0)
    ar.save(tmp_path / "m.npz", model)
    assert cli.main(["convert", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype("float32")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y, h_n, c_n = session.run(None, {"x": x})
    expected_y, (expected_h, expected_c) = model(x)
    for got, expected in ((y, expected_y), (h_n, expected_h), (c_n, expected_c)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    assert cli.main(["convert", str(tmp_path / "m.onnx"), str(tmp_path / "back.npz")]) == 0
    back = ar.load(tmp_path / "back.npz")
    assert back.config() == model.config()
    np.testing.assert_array_equal(back.params[1][1].weight_hh, model.params[1][1].weight_hh)


def test_opset(tmp_path):
    onnx = need("onnx")
    ar.save(tmp_path / "g.npz", ar.GRU(3, 4, seed=0))
    assert cli.main(["convert", str(tmp_path / "g.npz"), str(tmp_path / "g.onnx"), "--opset", "18"]) == 0
    assert onnx.load(str(tmp_path / "g.onnx")).opset_import[0].version == 18


def test_usage_errors(tmp_path, capsys):
    need("onnx")
    ar.save(tmp_path / "m.npz", ar.GRU(3, 4, seed=0))
    ar.save(tmp_path / "p.npz", ar.LSTM(3, 4, proj_size=2, seed=0))
    (tmp_path / "m.txt").write_text("x")
    m, p = str(tmp_path / "m.npz"), str(tmp_path / "p.npz")
    assert "IN: " in usage_error(capsys, ["convert", str(tmp_path / "m.txt"), str(tmp_path / "m.onnx")])
    assert "must end in .onnx" in usage_error(capsys, ["convert", m, str(tmp_path / "m.npz2")])
    assert "must end in .npz" in usage_error(capsys, ["convert", str(tmp_path / "x.onnx"), str(tmp_path / "x.onnx")])
    assert "does not exist" in usage_error(capsys, ["convert", str(tmp_path / "missing.npz"), "out.onnx"])
    assert "proj_size=2" in usage_error(capsys, ["convert", p, str(tmp_path / "p.onnx")])
    assert "--opset" in usage_error(capsys, ["convert", m, str(tmp_path / "m.onnx"), "--opset", "x"])
    assert "opset" in usage_error(capsys, ["convert", m, str(tmp_path / "m.onnx"), "--opset", "3"])
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert "cannot convert" in usage_error(capsys, ["convert", str(tmp_path / "bad.onnx"), str(tmp_path / "b.npz")])
    assert not (tmp_path / "p.onnx").exists()
