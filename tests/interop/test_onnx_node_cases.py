"""ONNX's own backend node cases for RNN, LSTM and GRU (``onnx.backend.test.case.node``: the models and expected
outputs the ONNX project ships, computed by its reference code): every one imports and matches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need


def _cases():
    need("onnx")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other operators' case generators warn about their own numbers
        cases = collect_testcases(None)
    return [case for case in cases if case.name.split("_")[1] in ("lstm", "gru", "rnn", "simple")]


def _expected_y(y, model):
    """ONNX ``Y (T, D, B, H)`` (``(B, T, D, H)`` with layout 1) as the model's ``y``."""
    if model.batch_first:
        return y.reshape(y.shape[0], y.shape[1], -1)
    return np.transpose(y, (0, 2, 1, 3)).reshape(y.shape[0], y.shape[2], -1)


def test_every_recurrent_node_case_imports_and_matches():
    cases = _cases()
    names = {case.name for case in cases}
    assert {"test_lstm_reverse", "test_gru_reverse", "test_simple_rnn_reverse", "test_lstm_with_peepholes"} <= names
    for case in cases:
        graph = case.model.graph
        node = next(n for n in graph.node if n.op_type in ("RNN", "LSTM", "GRU"))
        slots = list(node.input) + [""] * (8 - len(node.input))
        for inputs, outputs in case.data_sets:
            feeds = dict(zip([value.name for value in graph.input], inputs))
            weights = {name: feeds[name] for name in (slots[1], slots[2], slots[3], slots[7]) if name in feeds}
            model = ar.convert.from_onnx_model(case.model, values=weights, backend="numpy")
            assert model.reverse == (case.name.endswith("_reverse")), case.name
            state = feeds.get(slots[5])
            if node.op_type == "LSTM" and state is not None:
                state = (state, feeds.get(slots[6], np.zeros_like(state)))
            y, final = model(feeds[slots[0]], state, lengths=feeds.get(slots[4]))
            finals = final if isinstance(final, tuple) else (final,)
            for output, expected in zip(graph.output, outputs):
                index = list(node.output).index(output.name)
                if index == 0:
                    got, want = np.asarray(y), _expected_y(expected, model)
                else:
                    got = np.asarray(finals[index - 1])
                    want = np.transpose(expected, (1, 0, 2)) if model.batch_first else expected
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=case.name)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_onnx_case_names_cover_the_directions(op):
    names = {case.name for case in _cases()}
    assert any(op.lower() in name and "bidirectional" in name for name in names)
