"""Converters: Keras layouts against Keras's documented equations, the concatenated layout against its
formula, round trips, and errors. (ONNX is checked against onnxruntime in test_onnx.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests import reference
from tests.conftest import need
from tests.support import random_params, tolerance

SEQUENCES = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# --------------------------------------------------------------------------------------------
# a tiny float64 Keras reference, written from Keras's equations (SimpleRNNCell, LSTMCell, GRUCell
# with the default activations tanh / sigmoid); kernel (I, G*units), recurrent_kernel (units, G*units)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def keras_sequence(kind, x, kernel, recurrent_kernel, bias, *, reset_after=True):
    """Keras's recurrence over ``x (T, B, I)``; returns every ``h (T, B, units)`` and the last carry."""
    units = recurrent_kernel.shape[0]
    steps, batch, _ = x.shape
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    outputs = []
    for t in range(steps):
        x_t = x[t]
        if kind == "rnn":
            h = np.tanh(x_t @ kernel + (0 if bias is None else bias) + h @ recurrent_kernel)
        elif kind == "lstm":
            z = x_t @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
            z0, z1, z2, z3 = (z[:, k * units : (k + 1) * units] for k in range(4))
            i, f, o = _sigmoid(z0), _sigmoid(z1), _sigmoid(z3)
            c = f * c + i * np.tanh(z2)
            h = o * np.tanh(c)
        elif reset_after:  # GRU, bias (2, 3*units): input bias, recurrent bias
            input_bias, recurrent_bias = (0, 0) if bias is None else (bias[0], bias[1])
            matrix_x = x_t @ kernel + input_bias
            matrix_inner = h @ recurrent_kernel + recurrent_bias
            x_z, x_r, x_h = (matrix_x[:, k * units : (k + 1) * units] for k in range(3))
            rec_z, rec_r, rec_h = (matrix_inner[:, k * units : (k + 1) * units] for k in range(3))
            z = _sigmoid(x_z + rec_z)
            r = _sigmoid(x_r + rec_r)
            hh = np.tanh(x_h + r * rec_h)
            h = z * h + (1 - z) * hh
        else:  # GRU, reset_after=False, bias (3*units,)
            matrix_x = x_t @ kernel + (0 if bias is None else bias)
            x_z, x_r, x_h = (matrix_x[:, k * units : (k + 1) * units] for k in range(3))
            z = _sigmoid(x_z + h @ recurrent_kernel[:, :units])
            r = _sigmoid(x_r + h @ recurrent_kernel[:, units : 2 * units])
            hh = np.tanh(x_h + (r * h) @ recurrent_kernel[:, 2 * units :])
            h = z * h + (1 - z) * hh
        outputs.append(h)
    return np.stack(outputs), (h, c)


def _keras_weights(kind, input_size, units, rng, *, use_bias=True, reset_after=True):
    gates = GATES[kind]
    kernel = rng.uniform(-0.6, 0.6, (input_size, gates * units))
    recurrent_kernel = rng.uniform(-0.6, 0.6, (units, gates * units))
    bias = None
    if use_bias:
        shape = (2, gates * units) if kind == "gru" and reset_after else (gates * units,)
        bias = rng.uniform(-0.6, 0.6, shape)
    return kernel, recurrent_kernel, bias


KERAS_CASES = [
    ("rnn", True, True),
    ("lstm", True, True),
    ("gru", True, True),
    ("gru", True, False),
    ("gru", False, True),
    ("gru", False, False),
    ("lstm", False, True),
]


@pytest.mark.parametrize(
    "kind, use_bias, reset_after",
    KERAS_CASES,
    ids=[f"{k}-bias={b}-reset_after={r}" for k, b, r in KERAS_CASES],
)
def test_from_keras_matches_keras_equations(backend, kind, use_bias, reset_after):
    rng = np.random.default_rng(KERAS_CASES.index((kind, use_bias, reset_after)))
    input_size, units, steps, batch = 3, 4, 9, 2
    kernel, recurrent_kernel, bias = _keras_weights(
        kind, input_size, units, rng, use_bias=use_bias, reset_after=reset_after
    )
    x = rng.standard_normal((steps, batch, input_size))
    y_ref, (h_ref, c_ref) = keras_sequence(kind, x, kernel, recurrent_kernel, bias, reset_after=reset_after)
    params = ar.convert.from_keras(
        kind,
        backend.asarray(kernel),
        backend.asarray(recurrent_kernel),
        backend.asarray(bias),
        reset_after=None if use_bias else reset_after,
    )
    assert params.backend == backend.name  # follows its inputs
    options = {"linear_before_reset": reset_after} if kind == "gru" else {}
    y, final = SEQUENCES[kind](backend.asarray(x), params, **options)
    np.testing.assert_allclose(backend.numpy(y, "float64"), y_ref, **tolerance("float64", steps))
    if kind == "lstm":
        np.testing.assert_allclose(backend.numpy(final[1]), c_ref, **tolerance("float64", steps))
    # and back: exactly the arrays Keras had (a missing recurrent bias is a zero one)
    back = ar.convert.to_keras(kind, params, reset_after=reset_after)
    for got, want in zip(back, (kernel, recurrent_kernel, bias), strict=True):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(backend.numpy(got), want)


def test_to_keras_folds_torch_biases_exactly_as_keras_computes():
    """torch-layout params (two biases) -> Keras weights -> Keras's equations give torch's outputs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    for kind, reset_after in (("rnn", True), ("lstm", True), ("gru", True)):
        params = random_params(kind, 3, 4, seed=1)
        y_ours, _ = SEQUENCES[kind](x, params)
        y_keras, _ = keras_sequence(kind, x, *ar.convert.to_keras(kind, params, reset_after=reset_after))
        np.testing.assert_allclose(y_keras, y_ours, rtol=1e-12, atol=1e-12)
    params = random_params("gru", 3, 4, seed=2)
    y_ours, _ = ar.gru(x, params, linear_before_reset=False)
    y_keras, _ = keras_sequence("gru", x, *ar.convert.to_keras("gru", params, reset_after=False), reset_after=False)
    np.testing.assert_allclose(y_keras, y_ours, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# ONNX round trips (the semantics are checked by onnxruntime in test_onnx.py)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_onnx_round_trip_is_exact(backend, kind):
    extra = {"peepholes": True} if kind == "lstm" else {}
    forward = backend.tree(random_params(kind, 3, 5, seed=1, **extra))
    backward = backend.tree(random_params(kind, 3, 5, seed=2, **extra))
    arrays = ar.convert.to_onnx(kind, (forward, backward))
    assert arrays[0].shape == (2, GATES[kind] * 5, 3) and arrays[2].shape == (2, 2 * GATES[kind] * 5)
    assert len(arrays) == (4 if kind == "lstm" else 3)
    again = ar.convert.from_onnx(kind, *arrays)
    for original, converted in zip((forward, backward), again, strict=True):
        for name, value in original.arrays().items():
            np.testing.assert_array_equal(backend.numpy(getattr(converted, name)), backend.numpy(value))


def test_onnx_gate_order_by_hand():
    """ONNX LSTM rows are i, o, f, c; GRU z, r, h; our rows are i, f, g, o and r, z, n."""
    hidden = 2
    W = np.repeat(np.arange(4.0), hidden)[None, :, None]  # row block k holds the value k
    R = np.zeros((1, 8, hidden))
    (p,) = ar.convert.from_onnx("lstm", W, R)
    np.testing.assert_array_equal(p.weight_ih[:, 0], [0, 0, 2, 2, 3, 3, 1, 1])  # i, f, c, o from i, o, f, c
    (g,) = ar.convert.from_onnx("gru", W[:, :6], R[:, :6])
    np.testing.assert_array_equal(g.weight_ih[:, 0], [1, 1, 0, 0, 2, 2])  # r, z, n from z, r, h


# --------------------------------------------------------------------------------------------
# the tutorial's concatenated layout


def test_from_concat_matches_the_concatenated_formula(backend):
    rng = np.random.default_rng(3)
    hidden, input_size, steps = 4, 3, 7
    x = rng.standard_normal((steps, 1, input_size))
    # RNN: h' = tanh([h, x] @ w + b)
    w = rng.uniform(-0.5, 0.5, (hidden + input_size, hidden))
    b = rng.uniform(-0.5, 0.5, (1, hidden))
    h = np.zeros((1, hidden))
    for t in range(steps):
        h = np.tanh(np.concatenate([h, x[t]], axis=1) @ w + b)
    params = ar.convert.from_concat("rnn", backend.asarray(w), backend.asarray(b), input_size)
    _, h_n = ar.rnn(backend.asarray(x), params)
    np.testing.assert_allclose(backend.numpy(h_n), h, **tolerance("float64", steps))
    # LSTM: z = [h, x] @ w + b with gate columns i, f, g, o
    w = rng.uniform(-0.5, 0.5, (hidden + input_size, 4 * hidden))
    b = rng.uniform(-0.5, 0.5, (4 * hidden,))
    h, c = np.zeros((1, hidden)), np.zeros((1, hidden))
    for t in range(steps):
        z = np.concatenate([h, x[t]], axis=1) @ w + b
        i, f, g, o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
    params = ar.convert.from_concat("lstm", backend.asarray(w), backend.asarray(b), input_size)
    _, (h_n, c_n) = ar.lstm(backend.asarray(x), params)
    np.testing.assert_allclose(backend.numpy(h_n), h, **tolerance("float64", steps))
    np.testing.assert_allclose(backend.numpy(c_n), c, **tolerance("float64", steps))


def test_from_concat_runs_the_tutorial_weights():
    from arrayrnn.tutorial import forward

    rng = np.random.default_rng(4)
    s, n_features = 5, 3
    w = rng.uniform(-0.5, 0.5, (s + n_features, s))
    b = rng.uniform(-0.5, 0.5, (1, s))
    x = rng.standard_normal((8, n_features))
    h0 = np.zeros((1, s))
    _, h_n = ar.rnn(x[:, None, :], ar.convert.from_concat("rnn", w, b, n_features), h0)
    np.testing.assert_allclose(h_n, forward(x, h0, s, w, b), rtol=1e-12, atol=1e-12)
    w_back, b_back = ar.convert.to_concat("rnn", ar.convert.from_concat("rnn", w, b, n_features))
    np.testing.assert_array_equal(w_back, w)
    np.testing.assert_array_equal(b_back, b)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_to_concat_keeps_outputs(kind):
    params = random_params(kind, 3, 4, seed=6)
    options = {}
    if kind == "gru":  # b_hn folds only when the reset gate is applied before the recurrent matmul
        options = {"linear_before_reset": False}
    w, b = ar.convert.to_concat(kind, params, **options)
    assert w.shape == (7, GATES[kind] * 4) and b.shape == (1, GATES[kind] * 4)
    x = np.random.default_rng(7).standard_normal((5, 2, 3))
    y_ref, _ = reference.sequence(kind, x, params, **options)
    y, _ = SEQUENCES[kind](x, ar.convert.from_concat(kind, w, b, 3), **options)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)


def test_to_concat_refuses_a_gru_recurrent_candidate_bias():
    params = random_params("gru", 3, 4, seed=0)
    with pytest.raises(ValueError, match="b_hn.*cannot be folded"):
        ar.convert.to_concat("gru", params)
    zero_bhn = ar.GRUParams(
        params.weight_ih, params.weight_hh, params.bias_ih, np.concatenate([params.bias_hh[:8], np.zeros(4)])
    )
    w, b = ar.convert.to_concat("gru", zero_bhn)
    x = np.random.default_rng(1).standard_normal((4, 1, 3))
    np.testing.assert_allclose(
        ar.gru(x, ar.convert.from_concat("gru", w, b, 3))[0], ar.gru(x, zero_bhn)[0], rtol=1e-12, atol=1e-12
    )


# --------------------------------------------------------------------------------------------
# results are new arrays; errors name the expected layout


def test_results_never_alias_the_inputs():
    rng = np.random.default_rng(0)
    kernel, recurrent_kernel, bias = _keras_weights("rnn", 3, 4, rng)
    p = ar.convert.from_keras("rnn", kernel, recurrent_kernel, bias)
    W, R, B = (rng.standard_normal(s) for s in ((1, 4, 3), (1, 4, 4), (1, 8)))
    (q,) = ar.convert.from_onnx("rnn", W, R, B)
    w, b = rng.standard_normal((7, 4)), rng.standard_normal((1, 4))
    r = ar.convert.from_concat("rnn", w, b, 3)
    for params, sources in ((p, (kernel, recurrent_kernel, bias)), (q, (W, R, B)), (r, (w, b))):
        for value in params.arrays().values():
            assert not any(np.shares_memory(value, source) for source in sources)


def test_wrong_shapes_name_the_expected_layout():
    rng = np.random.default_rng(0)
    k, rk, b = _keras_weights("lstm", 3, 4, rng)
    with pytest.raises(
        ValueError, match=r"kernel must have shape \(input_size, 4\*units\) \(Keras LSTM, gates i, f, c, o\)"
    ):
        ar.convert.from_keras("lstm", k[:, :-1], rk, b)
    with pytest.raises(
        ValueError, match=r"recurrent_kernel must have shape \(units, 4\*units\) .* = \(4, 16\), got \(3, 16\)"
    ):
        ar.convert.from_keras("lstm", k, rk[:3], b)
    with pytest.raises(ValueError, match=r"bias must have shape \(4\*units,\)"):
        ar.convert.from_keras("lstm", k, rk, b[:5])
    gk, grk, gb = _keras_weights("gru", 3, 4, rng, reset_after=True)
    with pytest.raises(ValueError, match=r"reset_after=False but bias has shape \(2, 12\)"):
        ar.convert.from_keras("gru", gk, grk, gb, reset_after=False)
    with pytest.raises(
        ValueError, match=r"W must have shape \(num_directions \(1 or 2\), 4\*hidden_size, input_size\)"
    ):
        ar.convert.from_onnx("lstm", np.zeros((3, 16, 2)), np.zeros((3, 16, 4)))
    with pytest.raises(
        ValueError, match=r"W must have shape \(num_directions, 3\*hidden_size, input_size\) \(ONNX GRU"
    ):
        ar.convert.from_onnx("gru", np.zeros((12, 2)), np.zeros((1, 12, 4)))
    with pytest.raises(ValueError, match=r"R must have shape .* = \(1, 12, 4\), got \(1, 12, 3\)"):
        ar.convert.from_onnx("gru", np.zeros((1, 12, 2)), np.zeros((1, 12, 3)))
    with pytest.raises(ValueError, match=r"B must have shape \(num_directions, 2\*3\*hidden_size\) = \[Wb, Rb\]"):
        ar.convert.from_onnx("gru", np.zeros((1, 12, 2)), np.zeros((1, 12, 4)), np.zeros((1, 12)))
    with pytest.raises(ValueError, match=r"P \(peepholes\) exists only for ONNX LSTM"):
        ar.convert.from_onnx("gru", np.zeros((1, 12, 2)), np.zeros((1, 12, 4)), None, np.zeros((1, 12)))
    with pytest.raises(ValueError, match=r"P must have shape \(num_directions, 3\*hidden_size\), peepholes i, o, f"):
        ar.convert.from_onnx("lstm", np.zeros((1, 16, 2)), np.zeros((1, 16, 4)), None, np.zeros((1, 16)))
    with pytest.raises(
        ValueError, match=r"w must have shape \(hidden_size \+ input_size, 4\*hidden_size\) acting on \[h, x\]"
    ):
        ar.convert.from_concat("lstm", np.zeros((7, 12)), None, 3)
    with pytest.raises(ValueError, match=r"b must have shape \(4\*hidden_size,\) or \(1, 4\*hidden_size\)"):
        ar.convert.from_concat("lstm", np.zeros((7, 16)), np.zeros((2, 16)), 3)
    with pytest.raises(ValueError, match="kind must be 'rnn', 'lstm' or 'gru'"):
        ar.convert.from_concat("elman", np.zeros((7, 4)), None, 3)
    projected = random_params("lstm", 3, 4, seed=0, proj_size=2)
    for to in (ar.convert.to_keras, ar.convert.to_onnx, ar.convert.to_concat):
        with pytest.raises(ValueError, match="no LSTM projection"):
            to("lstm", projected)
    with pytest.raises(ValueError, match="Keras has no LSTM peepholes"):
        ar.convert.to_keras("lstm", random_params("lstm", 3, 4, seed=0, peepholes=True))
    with pytest.raises(TypeError, match=r"params must be an arrayrnn.GRUParams"):
        ar.convert.to_onnx("gru", random_params("lstm", 3, 4, seed=0))


def test_matches_real_keras():
    """Real Keras 3 layers (the test extra installs keras; conftest picks its torch backend) agree too."""
    keras = need("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 3)).astype("float32")  # Keras is batch-first
    cases = [
        (keras.layers.SimpleRNN(4, return_sequences=True), "rnn", {}),
        (keras.layers.LSTM(4, return_sequences=True), "lstm", {}),
        (keras.layers.GRU(4, return_sequences=True), "gru", {}),
        (keras.layers.GRU(4, reset_after=False, return_sequences=True), "gru", {"linear_before_reset": False}),
    ]
    for layer, kind, options in cases:
        layer.build((None, 9, 3))
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype("float32") for w in layer.get_weights()])
        y_keras = keras.ops.convert_to_numpy(layer(x))
        y, _ = SEQUENCES[kind](x, ar.convert.from_keras(kind, *layer.get_weights()), batch_first=True, **options)
        np.testing.assert_allclose(y, y_keras, rtol=1e-5, atol=1e-6)
