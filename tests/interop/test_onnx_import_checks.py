"""``ar.convert.from_onnx_model`` honours or refuses every input and attribute of an ONNX node: never drops one.

Honoured cases run the same model in onnxruntime (the oracle); refused cases check the error names the input or
attribute. Constant ``initial_h``/``initial_c``/``sequence_lens`` become the model's ``default_state`` /
``default_lengths``; lengths here are >= 1 (for a zero length onnxruntime returns a zero final state by contract,
see tests/interop/test_onnx.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.interop.test_onnx import TOLERANCE, _weights
from tests.onnx_oracle import model_bytes, run_model

STEPS, BATCH, INPUT, HIDDEN = 6, 3, 3, 4
LENGTHS = np.array([6, 2, 4], dtype=np.int32)  # >= 1: see the module docstring


@pytest.fixture(autouse=True)
def _oracle_installed():
    need("onnx")
    need("onnxruntime")


def _x(seed=0, shape=(STEPS, BATCH, INPUT)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _state(directions, seed, batch=BATCH):
    return np.random.default_rng(seed).standard_normal((directions, batch, HIDDEN)).astype(np.float32)


def _exported(op_type, direction="forward", *, constants=None, seed=0, peepholes=False, **attributes):
    """A serialised one-node model (node ``rnn0``) with its weights and ``constants`` as initializers."""
    directions = 2 if direction == "bidirectional" else 1
    weights = _weights(op_type, directions, INPUT, HIDDEN, np.random.default_rng(seed), peepholes=peepholes)
    attributes.setdefault("hidden_size", HIDDEN)
    return model_bytes(
        op_type, {**weights, **(constants or {})}, (STEPS, BATCH, INPUT), direction=direction, **attributes
    )


def _proto(data):
    import onnx

    return onnx.load_from_string(data)


def _import(proto_or_bytes, **kwargs):
    proto = _proto(proto_or_bytes) if isinstance(proto_or_bytes, bytes) else proto_or_bytes
    return ar.convert.from_onnx_model(proto, **kwargs)


def _compare(model, expected, x, state=None, lengths=None, to_numpy=np.asarray):
    """``model(x, state, lengths=...)`` against onnxruntime's ``[Y (T, D, B, H), Y_h, (Y_c)]``."""
    y, final = model(x, state, lengths=lengths)
    steps, directions, batch, hidden = expected[0].shape
    want = np.transpose(expected[0], (0, 2, 1, 3)).reshape(steps, batch, directions * hidden)
    np.testing.assert_allclose(to_numpy(y), want, **TOLERANCE)
    finals = list(final) if isinstance(final, tuple) else [final]
    assert len(finals) == len(expected) - 1
    for got, want in zip(finals, expected[1:], strict=True):
        np.testing.assert_allclose(to_numpy(got), want, **TOLERANCE)


def _set_input(proto, slot, name):
    """Point input ``slot`` (its ONNX name, e.g. ``"initial_h"``) of node ``rnn0`` at ``name``."""
    from tests.onnx_oracle import _INPUTS

    node = proto.graph.node[-1]
    position = _INPUTS[node.op_type].index(slot)
    while len(node.input) <= position:
        node.input.append("")
    node.input[position] = name


def _add_graph_input(proto, name, array):
    from onnx import helper

    element = {np.dtype("float32"): 1, np.dtype("int32"): 6}[array.dtype]
    proto.graph.input.append(helper.make_tensor_value_info(name, element, list(array.shape)))


# ----------------------------------------------------------------------------------------------
# sequence_lens, initial_h, initial_c as constants: honoured as default_lengths / default_state


def _constants(op_type, directions, *, h=True, c=True, lengths=True):
    constants = {}
    if lengths:
        constants["sequence_lens"] = LENGTHS
    if h:
        constants["initial_h"] = _state(directions, 11)
    if c and op_type == "LSTM":
        constants["initial_c"] = _state(directions, 12)
    return constants


@pytest.mark.parametrize("op_type", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_constant_states_and_lengths_are_honoured(backend, op_type, direction):
    directions = 2 if direction == "bidirectional" else 1
    constants = _constants(op_type, directions)
    data = _exported(op_type, direction, constants=constants, peepholes=op_type == "LSTM")
    model = _import(data, backend=backend.name, device=backend.device)
    assert model.default_lengths == tuple(int(v) for v in LENGTHS)
    x = _x()
    _compare(model, run_model(data, {"X": x}), backend.asarray(x), to_numpy=lambda a: backend.numpy(a, "float32"))


@pytest.mark.parametrize(
    "which",
    [
        {"h": True, "c": False, "lengths": False},
        {"h": False, "c": True, "lengths": False},
        {"h": False, "c": False, "lengths": True},
        {"h": True, "c": True, "lengths": False},
    ],
    ids=["initial_h-only", "initial_c-only", "sequence_lens-only", "states-only"],
)
def test_each_constant_input_alone_is_honoured(which):
    data = _exported("LSTM", "bidirectional", constants=_constants("LSTM", 2, **which))
    model = _import(data)
    assert (model.default_state is None) == (not which["h"] and not which["c"])
    assert (model.default_lengths is None) == (not which["lengths"])
    x = _x(1)
    _compare(model, run_model(data, {"X": x}), x)


def test_constant_that_is_also_a_graph_input_is_an_overridable_default():
    """An initializer whose name is a graph input too is ONNX's default for it: the call may pass its own."""
    constants = _constants("GRU", 1)
    proto = _proto(_exported("GRU", constants=constants))
    _add_graph_input(proto, "initial_h", constants["initial_h"])
    _add_graph_input(proto, "sequence_lens", constants["sequence_lens"])
    data = proto.SerializeToString()
    model = _import(proto)
    x = _x(2)
    _compare(model, run_model(data, {"X": x}), x)
    other_h, other_lengths = _state(1, 13), np.array([3, 6, 1], dtype=np.int32)
    expected = run_model(data, {"X": x, "initial_h": other_h, "sequence_lens": other_lengths})
    _compare(model, expected, x, state=other_h, lengths=other_lengths)


def test_constant_node_states_are_honoured():
    from onnx import helper, numpy_helper

    constants = _constants("LSTM", 1, lengths=False)
    proto = _proto(_exported("LSTM"))
    for slot, value in constants.items():
        constant = helper.make_node("Constant", [], [f"{slot}_value"], value=numpy_helper.from_array(value))
        proto.graph.node.insert(0, constant)
        _set_input(proto, slot, f"{slot}_value")
    model = _import(proto)
    x = _x(3)
    _compare(model, run_model(proto.SerializeToString(), {"X": x}), x)


def test_constant_states_with_layout_1_are_transposed():
    """onnxruntime refuses layout=1, so its oracle is the same node with layout 0 (states (D, B, H), X (T, B, I))."""
    constants = _constants("LSTM", 2)
    batch_major = {**constants}
    for slot in ("initial_h", "initial_c"):
        batch_major[slot] = np.ascontiguousarray(np.transpose(constants[slot], (1, 0, 2)))  # (B, D, H)
    data = _exported("LSTM", "bidirectional", constants=batch_major, layout=1)
    model = _import(data)
    assert model.batch_first
    np.testing.assert_array_equal(model.default_state[0], constants["initial_h"])
    x = _x(4)
    expected = run_model(_exported("LSTM", "bidirectional", constants=constants), {"X": x})
    y, (h, c) = model(np.ascontiguousarray(np.transpose(x, (1, 0, 2))))
    steps, directions, batch, hidden = expected[0].shape
    want = np.transpose(expected[0], (2, 0, 1, 3)).reshape(batch, steps, directions * hidden)
    np.testing.assert_allclose(y, want, **TOLERANCE)
    np.testing.assert_allclose(h, expected[1], **TOLERANCE)
    np.testing.assert_allclose(c, expected[2], **TOLERANCE)


def test_default_state_and_lengths_follow_the_model_and_refuse_another_batch():
    model = _import(_exported("GRU", constants=_constants("GRU", 1)))
    moved = model.to("numpy", dtype="float64")
    assert moved.default_state.dtype == np.float64 and moved.default_lengths == model.default_lengths
    y, h = moved(_x(5).astype(np.float64))
    y32, h32 = model(_x(5))
    np.testing.assert_allclose(h, h32, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="default_state"):
        model(_x(5, (STEPS, BATCH + 1, INPUT)))
    model.default_state = None
    with pytest.raises(ValueError, match="default_lengths"):
        model(_x(5, (STEPS, BATCH + 1, INPUT)))
    with pytest.raises(ValueError, match="default_lengths"):
        model(_x(5, (2, BATCH, INPUT)))  # T = 2 < max(LENGTHS)
    model.default_lengths = None
    assert model(_x(5, (STEPS, BATCH + 1, INPUT)))[1].shape == (1, BATCH + 1, HIDDEN)


# ----------------------------------------------------------------------------------------------
# graph inputs (passed at call time) and computed inputs


def test_graph_input_states_and_lengths_are_passed_at_call_time():
    proto = _proto(_exported("LSTM", "bidirectional"))
    h, c = _state(2, 14), _state(2, 15)
    for slot, value in (("sequence_lens", LENGTHS), ("initial_h", h), ("initial_c", c)):
        _add_graph_input(proto, slot, value)
        _set_input(proto, slot, slot)
    model = _import(proto)
    assert model.default_state is None and model.default_lengths is None
    x = _x(6)
    expected = run_model(proto.SerializeToString(), {"X": x, "initial_h": h, "initial_c": c, "sequence_lens": LENGTHS})
    _compare(model, expected, x, state=(h, c), lengths=LENGTHS)


def test_computed_all_zero_states_as_torch_exports_them_are_onnx_defaults():
    """torch writes its default state as ConstantOfShape(Concat(.., Shape(X)[1], ..)) then Slice per layer."""
    from onnx import TensorProto, helper, numpy_helper

    proto = _proto(_exported("LSTM"))
    int64 = lambda name, values: numpy_helper.from_array(np.array(values, dtype=np.int64), name)  # noqa: E731
    proto.graph.initializer.extend([int64("one", [1]), int64("hid", [HIDDEN]), int64("zero", [0])])
    zero = helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["batch"], axis=0),
        helper.make_node("Concat", ["one", "batch", "hid"], ["state_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["state_shape"], ["zeros"], value=zero),
        helper.make_node("Slice", ["zeros", "zero", "one", "zero"], ["h0"]),
        helper.make_node("Expand", ["h0", "state_shape"], ["c0"]),
    ]
    for n in reversed(nodes):
        proto.graph.node.insert(0, n)
    _set_input(proto, "initial_h", "h0")
    _set_input(proto, "initial_c", "c0")
    model = _import(proto)
    assert model.default_state is None
    x = _x(7)
    _compare(model, run_model(proto.SerializeToString(), {"X": x}), x)


def test_torch_export_imports():
    torch = need("torch")
    import io
    import warnings

    lstm = torch.nn.LSTM(INPUT, HIDDEN)
    buffer = io.BytesIO()
    x = _x(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on exporting RNNs with a batch size
        torch.onnx.export(lstm, (torch.from_numpy(x),), buffer, dynamo=False, input_names=["X"])
    data = buffer.getvalue()
    model = _import(data)
    feed = {_proto(data).graph.input[0].name: x}
    expected = run_model(data, feed)
    y, (h, c) = model(x)
    np.testing.assert_allclose(y, expected[0], **TOLERANCE)  # torch squeezes Y to (T, B, H)
    np.testing.assert_allclose(h, expected[1], **TOLERANCE)
    np.testing.assert_allclose(c, expected[2], **TOLERANCE)


@pytest.mark.parametrize("slot", ["initial_h", "initial_c", "sequence_lens"])
def test_computed_inputs_are_refused_by_name(slot):
    from onnx import helper

    value = LENGTHS if slot == "sequence_lens" else _state(1, 16)
    proto = _proto(_exported("LSTM"))
    _add_graph_input(proto, "given", value)
    proto.graph.node.insert(0, helper.make_node("Abs" if slot == "sequence_lens" else "Tanh", ["given"], ["made"]))
    _set_input(proto, slot, "made")
    with pytest.raises(ValueError, match=rf"input {slot} \('made'\) of LSTM node 'rnn0' is computed by a"):
        _import(proto)


def test_constant_beside_graph_input_state_is_refused():
    proto = _proto(_exported("LSTM", constants={"initial_h": _state(1, 17)}))
    _add_graph_input(proto, "initial_c", _state(1, 18))
    _set_input(proto, "initial_c", "initial_c")
    with pytest.raises(ValueError, match="initial_h of LSTM node 'rnn0' is a constant but initial_c is a graph input"):
        _import(proto)


@pytest.mark.parametrize(
    "constants, match",
    [
        ({"initial_h": np.zeros((1, BATCH, HIDDEN + 1), np.float32)}, r"initial_h .* must have shape"),
        ({"initial_h": np.zeros((2, BATCH, HIDDEN), np.float32)}, r"initial_h .* must have shape"),
        ({"initial_h": np.zeros((1, BATCH, HIDDEN), np.float64)}, r"initial_h .* has dtype float64"),
        ({"sequence_lens": np.array([1.0, 2.0, 3.0], np.float32)}, r"sequence_lens .* non-negative integers"),
        ({"sequence_lens": np.array([1, -2, 3], np.int32)}, r"sequence_lens .* non-negative integers"),
        (
            {"sequence_lens": np.array([1, 2], np.int32), "initial_h": np.zeros((1, BATCH, HIDDEN), np.float32)},
            r"disagree on batch_size: sequence_lens has 2 entries, initial_h has batch_size 3",
        ),
    ],
    ids=["hidden", "directions", "dtype", "float-lengths", "negative-lengths", "batch"],
)
def test_constant_inputs_that_do_not_fit_are_refused_by_name(constants, match):
    with pytest.raises(ValueError, match=match):
        _import(_exported("GRU", constants=constants))


# ----------------------------------------------------------------------------------------------
# attributes, checked against the ONNX spec


def _with_attribute(data, name, value):
    from onnx import helper

    proto = _proto(data)
    proto.graph.node[-1].attribute.append(helper.make_attribute(name, value))
    return proto


@pytest.mark.parametrize(
    "op_type, direction, attributes, match",
    [
        ("LSTM", "sideways", {}, r"direction='sideways' is not one of 'forward', 'reverse', 'bidirectional'"),
        ("LSTM", "forward", {"hidden_size": 99}, r"hidden_size=99 does not match the weights: W has shape"),
        ("RNN", "forward", {"hidden_size": 3}, r"hidden_size=3 does not match the weights"),
        ("GRU", "forward", {"layout": 2}, r"layout=2 is not 0 \(time-major\) or 1"),
        (
            "LSTM",
            "forward",
            {"activations": ["HardSigmoid", "Tanh", "Tanh"]},
            r"activations=\['HardSigmoid', 'Tanh', 'Tanh'\] is not supported",
        ),
        ("GRU", "forward", {"activations": ["Sigmoid", "Relu"]}, r"activations=\['Sigmoid', 'Relu'\] is not supported"),
        (
            "LSTM",
            "bidirectional",
            {"activations": ["Sigmoid", "Tanh", "Tanh"]},  # 3 for 2 directions
            r"activations=\['Sigmoid', 'Tanh', 'Tanh'\] is not supported",
        ),
        (
            "RNN",
            "bidirectional",
            {"activations": ["Tanh", "Relu"]},
            r"activations=\['Tanh', 'Relu'\] is not supported",
        ),
        ("RNN", "forward", {"activations": ["relu"]}, r"activations=\['relu'\] is not supported"),  # names are cased
        (
            "GRU",
            "forward",
            {"activations": ["HardSigmoid", "Tanh"], "activation_alpha": [0.3], "activation_beta": [0.6]},
            r"activations=\['HardSigmoid', 'Tanh'\] with activation_alpha=\[0\.3.*\] with activation_beta=",
        ),
        (
            "LSTM",
            "forward",
            {"activations": ["Sigmoid", "Affine", "Tanh"], "activation_alpha": [2.0]},  # 2x is not the identity
            r"activations=\['Sigmoid', 'Affine', 'Tanh'\] with activation_alpha=\[2\.0\] is not supported",
        ),
        (
            "LSTM",
            "bidirectional",
            {"activations": ["Sigmoid", "Affine", "Tanh", "Sigmoid", "Tanh", "Tanh"]},  # directions differ
            r"arrayrnn runs \[Sigmoid, g, h\] with g and h each Tanh or Affine with activation_alpha 1 and",
        ),
        (
            "LSTM",
            "forward",
            {"activations": ["Sigmoid", "Tanh", "Affine"]},  # alpha/beta not given: runtimes disagree on Affine's
            r"activations=\['Sigmoid', 'Tanh', 'Affine'\] is not supported",
        ),
        ("LSTM", "forward", {"clip": 0.0}, r"clip=0.0 must be a positive number"),
        ("LSTM", "forward", {"clip": -1.0}, r"clip=-1.0 must be a positive number"),
        ("GRU", "forward", {"clip": 0.5}, r"clip=0.5 is not supported: arrayrnn clips only LSTM cells"),
        ("RNN", "forward", {"clip": 2.0}, r"clip=2.0 is not supported: arrayrnn clips only LSTM cells"),
        ("LSTM", "forward", {"input_forget": 2}, r"input_forget=2 must be 0 or 1"),
        ("GRU", "forward", {"linear_before_reset": 2}, r"linear_before_reset=2 must be 0 or 1"),
    ],
)
def test_attributes_outside_the_spec_or_arrayrnn_are_refused_by_name(op_type, direction, attributes, match):
    data = _exported(op_type, direction, **attributes)
    with pytest.raises(ValueError, match=match):
        _import(data)


@pytest.mark.parametrize(
    "direction, weights_directions",
    [("bidirectional", 1), ("forward", 2)],
)
def test_direction_must_match_the_weights(direction, weights_directions):
    written = "bidirectional" if weights_directions == 2 else "forward"
    proto = _proto(_exported("LSTM", written))
    attribute = next(a for a in proto.graph.node[-1].attribute if a.name == "direction")
    attribute.s = direction.encode()
    with pytest.raises(ValueError, match=rf"direction='{direction}' needs num_directions = .* W has shape"):
        _import(proto)


@pytest.mark.parametrize(
    "op_type, name, value",
    [
        ("LSTM", "foo", 1),
        ("GRU", "input_forget", 1),  # an LSTM attribute
        ("LSTM", "linear_before_reset", 1),  # a GRU attribute
        ("RNN", "output_sequence", 1),  # LSTM-1's, gone since opset 7
    ],
)
def test_unknown_attributes_are_refused_by_name(op_type, name, value):
    with pytest.raises(ValueError, match=rf"{op_type} node 'rnn0' has attribute '{name}', which ONNX"):
        _import(_with_attribute(_exported(op_type), name, value))


def test_attributes_of_the_wrong_type_are_refused_by_name():
    from onnx import helper

    proto = _proto(_exported("GRU"))
    node = proto.graph.node[-1]
    kept = [a for a in node.attribute if a.name != "direction"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("direction", 1)])
    with pytest.raises(ValueError, match=r"attribute 'direction' must be of type STRING, got INT"):
        _import(proto)


def test_other_domains_and_extra_inputs_are_refused():
    proto = _proto(_exported("GRU"))
    proto.graph.node[-1].domain = "com.example"
    with pytest.raises(ValueError, match=r"GRU node 'rnn0' is in domain 'com.example'"):
        _import(proto)
    proto = _proto(_exported("GRU"))
    while len(proto.graph.node[-1].input) < 7:
        proto.graph.node[-1].input.append("")
    with pytest.raises(ValueError, match=r"GRU node 'rnn0' has 7 inputs; ONNX GRU takes at most 6"):
        _import(proto)


@pytest.mark.parametrize(
    "op_type, attributes",
    [
        ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"] * 2, "activation_alpha": [1.0] * 6}),
        ("GRU", {"activations": ["Sigmoid", "Tanh"] * 2, "activation_beta": [2.0] * 4, "linear_before_reset": 1}),
        ("RNN", {"activations": ["Relu", "Relu"], "clip": None}),
        ("LSTM", {"clip": 0.3, "input_forget": 1, "hidden_size": HIDDEN, "layout": 0}),
        ("RNN", {"activations": ["Relu", "Relu"], "activation_alpha": [0.5, 0.5]}),  # Relu takes none: ignored
        (
            "LSTM",
            {
                "activations": ["Sigmoid", "Affine", "Tanh"] * 2,
                "activation_alpha": [1.0] * 2,
                "activation_beta": [0.0] * 2,
            },
        ),  # NIAF
        (
            "LSTM",
            {
                "activations": ["Sigmoid", "Tanh", "Affine"] * 2,
                "activation_alpha": [1.0] * 2,
                "activation_beta": [0.0] * 2,
            },
        ),  # NOAF
        (
            "LSTM",
            {
                "activations": ["Sigmoid", "Affine", "Affine"] * 2,
                "activation_alpha": [1.0] * 4,
                "activation_beta": [0.0] * 4,
            },
        ),  # NIAF and NOAF
    ],
    ids=[
        "lstm-alpha-with-defaults",
        "gru-beta-with-defaults",
        "rnn-relu",
        "lstm-every-attribute",
        "rnn-relu-alpha",
        "lstm-niaf",
        "lstm-noaf",
        "lstm-both-identity",
    ],
)
def test_accepted_attributes_run_as_onnxruntime(op_type, attributes):
    """Spec-valid attributes arrayrnn honours; alpha/beta mean nothing to Sigmoid/Tanh/Relu (onnxruntime agrees)."""
    attributes = {k: v for k, v in attributes.items() if v is not None}
    data = _exported(op_type, "bidirectional", peepholes=op_type == "LSTM", **attributes)
    x = _x(9)
    _compare(_import(data), run_model(data, {"X": x}), x)
