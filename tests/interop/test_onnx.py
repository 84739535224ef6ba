"""ONNX RNN/LSTM/GRU nodes run by onnxruntime against arrayrnn, weights mapped by ar.convert.from_onnx.

onnxruntime's CPU kernels are float32 only, so these compare float32 with float32. Its LSTM
implements peepholes, ``input_forget`` and ``clip``, the options torch lacks. One known difference,
by contract: for ``sequence_lens[b] == 0`` onnxruntime returns a zero final state while arrayrnn
returns the initial state unchanged (what a padded step does everywhere else); with zero initial
states the two agree, so the cases with a zero length use zero initial states.
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 against float32
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}


@pytest.fixture(autouse=True)
def _oracle_installed():
    need("onnx")
    need("onnxruntime")


def _weights(op_type, directions, input_size, hidden, rng, *, peepholes=False):
    gates = GATES[op_type]
    # torch's init scale: contractive dynamics, so float32 rounding does not grow chaotically over 200 steps
    scale = 1.0 / np.sqrt(hidden)
    arrays = {
        "W": rng.uniform(-scale, scale, (directions, gates * hidden, input_size)),
        "R": rng.uniform(-scale, scale, (directions, gates * hidden, hidden)),
        "B": rng.uniform(-scale, scale, (directions, 2 * gates * hidden)),  # non-zero biases, both halves
    }
    if peepholes:
        arrays["P"] = rng.uniform(-1, 1, (directions, 3 * hidden))
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def _lengths(kind, batch, steps, rng):
    if kind is None:
        return None
    lengths = rng.integers(1, steps + 1, size=batch)
    if kind == "with_zero":
        lengths[1 % batch] = 0
    lengths[0] = steps
    return lengths.astype(np.int32)


def _run_ours(backend, op_type, direction, weights, x, state, lengths, options):
    """arrayrnn on ``backend``: one sequence call per direction, or a bidirectional model."""
    kind = op_type.lower()
    params = ar.convert.from_onnx(kind, weights["W"], weights["R"], weights.get("B"), weights.get("P"))
    params = backend.tree(params)
    lengths_b = None if lengths is None else backend.asarray(lengths.astype(np.int64))
    if direction == "bidirectional":
        model = ar.models.MODEL_CLASSES[kind].from_params((params,), **options)
        y, final = model(backend.asarray(x), backend.tree(state), lengths=lengths_b)
        return backend.numpy(y, "float32"), [
            backend.numpy(s, "float32") for s in (final if kind == "lstm" else [final])
        ]
    function = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}[kind]
    one_state = None if state is None else (tuple(s[0] for s in state) if kind == "lstm" else state[0])
    y, final = function(
        backend.asarray(x),
        params[0],
        backend.tree(one_state),
        lengths=lengths_b,
        reverse=direction == "reverse",
        **options,
    )
    finals = list(final) if kind == "lstm" else [final]
    return backend.numpy(y, "float32"), [backend.numpy(s, "float32")[None] for s in finals]


def _compare(op_type, direction, weights, x, state, lengths, attributes, options, backend):
    from tests.onnx_oracle import run_node

    hidden = weights["R"].shape[-1]
    directions = weights["W"].shape[0]
    feeds = dict(X=x, **weights, sequence_lens=lengths)
    if state is not None:
        feeds["initial_h"] = state[0] if op_type == "LSTM" else state
        if op_type == "LSTM":
            feeds["initial_c"] = state[1]
    expected = run_node(op_type, feeds, hidden_size=hidden, direction=direction, **attributes)
    y_onnx, finals_onnx = expected[0], expected[1:]
    steps, _, batch, _ = y_onnx.shape
    y, finals = _run_ours(backend, op_type, direction, weights, x, state, lengths, options)
    # ONNX Y is (T, D, B, H); ours is (T, B, D*H), forward then backward, as torch
    np.testing.assert_allclose(
        y, np.transpose(y_onnx, (0, 2, 1, 3)).reshape(steps, batch, directions * hidden), **TOLERANCE
    )
    for got, want in zip(finals, finals_onnx, strict=True):
        np.testing.assert_allclose(got, want, **TOLERANCE)


# direction, peepholes, input_forget, clip, lengths, initial state, T
LSTM_CASES = [
    ("forward", False, 0, None, None, True, 200),
    ("forward", True, 0, None, "mixed", True, 13),
    ("forward", True, 1, 0.5, "with_zero", False, 9),
    ("reverse", True, 1, None, "mixed", True, 13),
    ("reverse", False, 0, 0.5, "with_zero", False, 9),
    ("bidirectional", True, 0, 1.0, "mixed", True, 200),
    ("bidirectional", True, 1, 0.7, "with_zero", False, 11),
    ("bidirectional", False, 0, None, None, True, 1),
]


@pytest.mark.parametrize(
    "direction, peepholes, input_forget, clip, lengths_kind, with_state, steps",
    LSTM_CASES,
    ids=[f"{c[0]}-peep={c[1]}-input_forget={c[2]}-clip={c[3]}-lengths={c[4]}-T={c[6]}" for c in LSTM_CASES],
)
def test_lstm_matches_onnxruntime(backend, direction, peepholes, input_forget, clip, lengths_kind, with_state, steps):
    rng = np.random.default_rng(steps + 7 * input_forget + (3 if peepholes else 0))
    directions = 2 if direction == "bidirectional" else 1
    batch, input_size, hidden = 3, 4, 5
    weights = _weights("LSTM", directions, input_size, hidden, rng, peepholes=peepholes)
    x = (2 * rng.standard_normal((steps, batch, input_size))).astype(np.float32)
    state = None
    if with_state:
        state = tuple(rng.standard_normal((directions, batch, hidden)).astype(np.float32) for _ in range(2))
    lengths = _lengths(lengths_kind, batch, steps, rng)
    attributes = {"input_forget": input_forget, "clip": clip}
    options = {"coupled": bool(input_forget), "clip": clip}
    _compare("LSTM", direction, weights, x, state, lengths, attributes, options, backend)


# direction, linear_before_reset, lengths, initial state, T
GRU_CASES = [
    ("forward", 0, None, True, 200),
    ("forward", 1, "mixed", True, 17),
    ("reverse", 0, "with_zero", False, 9),
    ("reverse", 1, None, True, 6),
    ("bidirectional", 0, "mixed", True, 12),
    ("bidirectional", 1, "with_zero", False, 200),
]


@pytest.mark.parametrize(
    "direction, linear_before_reset, lengths_kind, with_state, steps",
    GRU_CASES,
    ids=[f"{c[0]}-lbr={c[1]}-lengths={c[2]}-T={c[4]}" for c in GRU_CASES],
)
def test_gru_matches_onnxruntime(backend, direction, linear_before_reset, lengths_kind, with_state, steps):
    rng = np.random.default_rng(100 + steps + linear_before_reset)
    directions = 2 if direction == "bidirectional" else 1
    batch, input_size, hidden = 3, 4, 5
    weights = _weights("GRU", directions, input_size, hidden, rng)
    x = rng.standard_normal((steps, batch, input_size)).astype(np.float32)
    state = rng.standard_normal((directions, batch, hidden)).astype(np.float32) if with_state else None
    lengths = _lengths(lengths_kind, batch, steps, rng)
    _compare(
        "GRU",
        direction,
        weights,
        x,
        state,
        lengths,
        {"linear_before_reset": linear_before_reset},
        {"linear_before_reset": bool(linear_before_reset)},
        backend,
    )


# direction, activation, lengths, initial state, T
RNN_CASES = [
    ("forward", "Tanh", None, True, 200),
    ("forward", "Relu", "mixed", True, 15),
    ("reverse", "Relu", "with_zero", False, 8),
    ("bidirectional", "Tanh", "mixed", True, 10),
    ("bidirectional", "Relu", None, False, 200),
]


@pytest.mark.parametrize(
    "direction, activation, lengths_kind, with_state, steps",
    RNN_CASES,
    ids=[f"{c[0]}-{c[1]}-lengths={c[2]}-T={c[4]}" for c in RNN_CASES],
)
def test_rnn_matches_onnxruntime(backend, direction, activation, lengths_kind, with_state, steps):
    rng = np.random.default_rng(200 + steps)
    directions = 2 if direction == "bidirectional" else 1
    batch, input_size, hidden = 3, 4, 5
    weights = _weights("RNN", directions, input_size, hidden, rng)
    x = rng.standard_normal((steps, batch, input_size)).astype(np.float32)
    state = rng.standard_normal((directions, batch, hidden)).astype(np.float32) if with_state else None
    lengths = _lengths(lengths_kind, batch, steps, rng)
    _compare(
        "RNN",
        direction,
        weights,
        x,
        state,
        lengths,
        {"activations": [activation] * directions},
        {"nonlinearity": activation.lower()},
        backend,
    )


def test_to_onnx_runs_in_onnxruntime_like_arrayrnn():
    """The inverse converter, checked by onnxruntime: our params -> W, R, B, P -> the same outputs."""
    from tests.onnx_oracle import run_node

    model = ar.LSTM(3, 4, bidirectional=True, peepholes=True, clip=0.8, seed=3)
    W, R, B, P = ar.convert.to_onnx("lstm", model.params[0])
    assert W.shape == (2, 16, 3) and R.shape == (2, 16, 4) and B.shape == (2, 32) and P.shape == (2, 12)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    Y, Y_h, Y_c = run_node("LSTM", dict(X=x, W=W, R=R, B=B, P=P), hidden_size=4, direction="bidirectional", clip=0.8)
    y, (h, c) = model(x)
    np.testing.assert_allclose(y, np.transpose(Y, (0, 2, 1, 3)).reshape(6, 2, 8), **TOLERANCE)
    np.testing.assert_allclose(h, Y_h, **TOLERANCE)
    np.testing.assert_allclose(c, Y_c, **TOLERANCE)
    gru = ar.GRU(3, 4, seed=4, linear_before_reset=False)
    W, R, B = ar.convert.to_onnx("gru", gru.params[0][0])
    Y, Y_h = run_node("GRU", dict(X=x, W=W, R=R, B=B), hidden_size=4, linear_before_reset=0)
    y, h = gru(x)
    np.testing.assert_allclose(y, Y[:, 0], **TOLERANCE)
    np.testing.assert_allclose(h, Y_h, **TOLERANCE)


@pytest.mark.parametrize(
    "op_type, attributes",
    [
        ("LSTM", {"direction": "bidirectional", "clip": 0.9, "input_forget": 1}),
        ("GRU", {"direction": "forward"}),  # linear_before_reset defaults to 0 in ONNX
        ("GRU", {"direction": "reverse", "linear_before_reset": 1}),
        ("LSTM", {"direction": "reverse", "input_forget": 1}),
        ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Relu"]}),
    ],
)
def test_from_onnx_model_reads_weights_and_attributes(tmp_path, op_type, attributes):
    from tests.onnx_oracle import model_bytes, run_model

    rng = np.random.default_rng(5)
    directions = 2 if attributes["direction"] == "bidirectional" else 1
    weights = _weights(op_type, directions, 3, 4, rng, peepholes=op_type == "LSTM")
    data = model_bytes(op_type, weights, (7, 2, 3), hidden_size=4, **attributes)
    path = tmp_path / "exported.onnx"
    path.write_bytes(data)
    model = ar.convert.from_onnx_model(str(path))
    assert model.kind == op_type.lower() and model.bidirectional == (directions == 2)
    assert model.reverse == (attributes["direction"] == "reverse")
    if op_type == "GRU":
        assert model.linear_before_reset is (attributes.get("linear_before_reset") == 1)
    x = rng.standard_normal((7, 2, 3)).astype(np.float32)
    expected = run_model(data, {"X": x})
    y, final = model(x)
    np.testing.assert_allclose(y, np.transpose(expected[0], (0, 2, 1, 3)).reshape(7, 2, directions * 4), **TOLERANCE)
    for got, want in zip(final if op_type == "LSTM" else [final], expected[1:], strict=True):
        np.testing.assert_allclose(got, want, **TOLERANCE)


def test_from_onnx_model_refuses_what_it_cannot_run():
    from tests.onnx_oracle import model_bytes

    rng = np.random.default_rng(0)
    weights = _weights("GRU", 1, 3, 4, rng)
    odd = model_bytes("GRU", weights, (2, 1, 3), hidden_size=4, activations=["HardSigmoid", "Tanh"])
    onnx = need("onnx")
    with pytest.raises(ValueError, match=r"activations=\['HardSigmoid', 'Tanh'\] is not supported; arrayrnn runs"):
        ar.convert.from_onnx_model(onnx.load_from_string(odd))
