"""``ar.convert.from_onnx_model`` imports a whole graph of chained recurrent nodes as one model.

Sources: torch's own exporter (``torch.onnx.export(..., dynamo=False)``: stacked, bidirectional, batch-first,
states given or not) and the chain arrayrnn's exporter writes (one node per layer, ``Y`` -> Transpose(0, 2, 1, 3)
-> Reshape ``[0, 0, -1]`` -> next node), built here by hand. Oracles: the ``torch.nn`` module, and onnxruntime
running the same file. Any other op between layers is refused by name.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
STEPS, BATCH, INPUT, HIDDEN = 5, 2, 3, 4


@pytest.fixture(autouse=True)
def _installed():
    need("onnx")
    need("onnxruntime")


def _export(module, args, path, **kwargs):
    torch = need("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)


def _ort(path, feeds):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _finals(final):
    return list(final) if isinstance(final, tuple) else [final]


# kinds x layers x directions x batch_first: 36 small exports, a few seconds in all
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_exports_import_as_one_model(tmp_path, kind, layers, bidirectional, batch_first):
    torch = need("torch")
    torch.manual_seed(layers)
    module = getattr(torch.nn, kind)(
        INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first
    )
    x = torch.randn((BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT))
    path = tmp_path / "stack.onnx"
    _export(module, (x,), path, input_names=["x"])
    model = ar.convert.from_onnx_model(str(path))
    assert (model.kind, model.num_layers, model.bidirectional, model.batch_first) == (
        kind.lower(),
        layers,
        bidirectional,
        batch_first,
    )
    y, final = model(x.numpy())
    with torch.no_grad():
        y_torch, final_torch = module(x)
    np.testing.assert_allclose(np.asarray(y), y_torch.numpy(), **TOLERANCE)
    for got, want in zip(_finals(final), _finals(final_torch), strict=True):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), **TOLERANCE)
    expected = _ort(path, {"x": x.numpy()})
    np.testing.assert_allclose(np.asarray(y), expected[0], **TOLERANCE)
    for got, want in zip(_finals(final), expected[1:], strict=True):
        np.testing.assert_allclose(np.asarray(got), want, **TOLERANCE)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_export_with_state_inputs_takes_the_state_at_call_time(tmp_path, kind):
    torch = need("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT)
    h0, c0 = torch.randn(4, BATCH, HIDDEN), torch.randn(4, BATCH, HIDDEN)
    state = (h0, c0) if kind == "LSTM" else h0
    names = ["x", "h0", "c0"] if kind == "LSTM" else ["x", "h0"]
    path = tmp_path / "stateful.onnx"
    _export(module, (x, state), path, input_names=names)
    model = ar.convert.from_onnx_model(str(path))
    assert model.default_state is None
    numpy_state = tuple(s.numpy() for s in state) if kind == "LSTM" else state.numpy()
    y, final = model(x.numpy(), numpy_state)
    with torch.no_grad():
        y_torch, final_torch = module(x, state)
    np.testing.assert_allclose(np.asarray(y), y_torch.numpy(), **TOLERANCE)
    for got, want in zip(_finals(final), _finals(final_torch), strict=True):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), **TOLERANCE)


def _chain(
    kind="gru", layers=2, directions=2, *, link=None, constant_states=False, weights_as_inputs=False, reverse=False
):
    """Our exporter's chain: one node per layer, Y -> Transpose(0, 2, 1, 3) -> Reshape [0, 0, -1] -> next X."""
    from onnx import TensorProto, helper, numpy_helper

    op = kind.upper()
    model = getattr(ar, op)(INPUT, HIDDEN, num_layers=layers, bidirectional=directions == 2, reverse=reverse, seed=1)
    nodes, initializers, inputs = [], [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", INPUT])]
    states = {}
    current = "x"
    for layer in range(layers):
        W, R, B = ar.convert.to_onnx(kind, model.params[layer])[:3]
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        for name, array in zip(names, (W, R, B)):
            initializers.append(numpy_helper.from_array(np.asarray(array), name))
            if weights_as_inputs:
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(np.shape(array))))
        node_inputs = [current, *names]
        if constant_states:
            h = np.random.default_rng(layer).standard_normal((directions, BATCH, HIDDEN)).astype(np.float32)
            initializers.append(numpy_helper.from_array(h, f"h{layer}"))
            states[layer] = h
            node_inputs += ["", f"h{layer}"]
        direction = "bidirectional" if directions == 2 else ("reverse" if reverse else "forward")
        attributes = {"hidden_size": HIDDEN, "direction": direction}
        if kind == "gru":
            attributes["linear_before_reset"] = 1
        nodes.append(helper.make_node(op, node_inputs, [f"Y{layer}", f"Yh{layer}"], name=f"rnn{layer}", **attributes))
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"t{layer}"], perm=[0, 2, 1, 3], name=f"tr{layer}"))
        if layer == 0 and link is not None:
            nodes.append(helper.make_node(link, [f"t{layer}"], [f"odd{layer}"], name="odd"))
            reshaped_from = f"odd{layer}"
        else:
            reshaped_from = f"t{layer}"
        shape = f"shape{layer}"
        initializers.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), shape))
        nodes.append(helper.make_node("Reshape", [reshaped_from, shape], [f"x{layer + 1}"], name=f"rs{layer}"))
        current = f"x{layer + 1}"
    if weights_as_inputs:
        initializers = [i for i in initializers if i.name[0] not in "WRB"]
    outputs = [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "chain", inputs, outputs, initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return proto, model, states


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("directions,reverse", [(1, False), (2, False), (1, True)])
def test_our_exporters_chain_imports_and_runs_as_onnxruntime(tmp_path, kind, directions, reverse):
    import onnx

    proto, original, _ = _chain(kind, layers=3, directions=directions, reverse=reverse)
    path = tmp_path / "chain.onnx"
    onnx.save(proto, str(path))
    model = ar.convert.from_onnx_model(str(path))
    assert (model.num_layers, model.bidirectional, model.reverse) == (3, directions == 2, reverse)
    x = np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)).astype(np.float32)
    y, _ = model(x)
    np.testing.assert_allclose(np.asarray(y), _ort(path, {"x": x})[0], **TOLERANCE)
    np.testing.assert_allclose(np.asarray(y), np.asarray(original(x)[0]), **TOLERANCE)


def test_constant_states_of_a_chain_become_one_default_state():
    proto, _, states = _chain("gru", layers=2, directions=2, constant_states=True)
    model = ar.convert.from_onnx_model(proto)
    np.testing.assert_array_equal(np.asarray(model.default_state), np.concatenate([states[0], states[1]]))
    x = np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)).astype(np.float32)
    expected = _ort_proto(proto, {"x": x})
    np.testing.assert_allclose(np.asarray(model(x)[0]), expected[0], **TOLERANCE)


def _ort_proto(proto, feeds):
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("link", ["Relu", "Neg"])
def test_an_unexpected_op_between_layers_is_refused_by_name(link):
    proto, _, _ = _chain("lstm", layers=2, directions=2, link=link)
    with pytest.raises(ValueError, match=rf"input X of LSTM node 'rnn1' comes from a {link} node 'odd'"):
        ar.convert.from_onnx_model(proto)
    # one node alone is still importable
    assert ar.convert.from_onnx_model(proto, node="rnn1").num_layers == 1


def test_a_wrong_transpose_or_reshape_between_layers_is_refused():
    from onnx import helper

    proto, _, _ = _chain("gru", layers=2, directions=2)
    transpose = next(n for n in proto.graph.node if n.name == "tr0")
    transpose.attribute[0].CopyFrom(helper.make_attribute("perm", [0, 1, 2, 3]))
    with pytest.raises(
        ValueError,
        match=r"input X of GRU node 'rnn1' comes from GRU node 'rnn0' through Transpose 'tr0', Reshape 'rs0', which",
    ):
        ar.convert.from_onnx_model(proto)
    proto, _, _ = _chain("gru", layers=2, directions=2)
    shape = next(i for i in proto.graph.initializer if i.name == "shape0")
    from onnx import numpy_helper

    shape.CopyFrom(numpy_helper.from_array(np.array([0, -1, 4], dtype=np.int64), "shape0"))
    with pytest.raises(ValueError, match=r"through Transpose 'tr0', Reshape 'rs0', which is not what arrayrnn accepts"):
        ar.convert.from_onnx_model(proto)


def test_a_chain_mixing_forward_and_reverse_nodes_is_refused_by_name():
    from onnx import helper

    proto, _, _ = _chain("gru", layers=2, directions=1)
    node = next(n for n in proto.graph.node if n.name == "rnn1")
    for attribute in node.attribute:
        if attribute.name == "direction":
            attribute.CopyFrom(helper.make_attribute("direction", "reverse"))
    with pytest.raises(ValueError, match=r"GRU node 'rnn1' \(layer 1\) differs from GRU node 'rnn0' in its options"):
        ar.convert.from_onnx_model(proto)
    one = ar.convert.from_onnx_model(proto, node="rnn1")  # alone, the reverse node is a reverse model
    assert one.reverse and one.num_layers == 1


def test_weights_given_as_graph_inputs_need_values():
    proto, original, _ = _chain("lstm", layers=2, directions=1, weights_as_inputs=True)
    with pytest.raises(ValueError, match=r"input W \('W0'\) of LSTM node 'rnn0' is not an initializer but a graph"):
        ar.convert.from_onnx_model(proto)
    values = {}
    for layer in range(2):
        W, R, B = ar.convert.to_onnx("lstm", original.params[layer])[:3]
        values.update({f"W{layer}": W, f"R{layer}": R, f"B{layer}": B})
    model = ar.convert.from_onnx_model(proto, values=values)
    x = np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)[0]), np.asarray(original(x)[0]), **TOLERANCE)
    with pytest.raises(ValueError, match=r"values names 'nope', which is not an input of the graph"):
        ar.convert.from_onnx_model(proto, values={"nope": np.zeros(1)})


def test_node_picks_one_layer_of_a_torch_export(tmp_path):
    torch = need("torch")
    module = torch.nn.GRU(INPUT, HIDDEN, num_layers=2)
    path = tmp_path / "two.onnx"
    _export(module, (torch.randn(STEPS, BATCH, INPUT),), path)
    import onnx

    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "GRU"]
    layer = ar.convert.from_onnx_model(str(path), node=names[1])
    assert (layer.num_layers, layer.input_size) == (1, HIDDEN)
    with pytest.raises(ValueError, match="expected exactly one RNN/LSTM/GRU node named 'nope'"):
        ar.convert.from_onnx_model(str(path), node="nope")


@pytest.mark.parametrize("kind,bidirectional,batch_first", [("lstm", True, True), ("gru", False, False)])
def test_torchs_dynamo_export_imports_and_runs_as_torch_and_onnxruntime(tmp_path, kind, bidirectional, batch_first):
    """torch's default exporter: recurrent nodes joined by a Reshape whose shape is computed from Shape(Y)."""
    torch = need("torch")
    need("onnxscript")  # torch.onnx.export(dynamo=True) needs it
    torch.manual_seed(3)
    module = getattr(torch.nn, kind.upper())(
        INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, batch_first=batch_first
    ).eval()
    x = torch.randn(*((BATCH, STEPS) if batch_first else (STEPS, BATCH)), INPUT)
    path = tmp_path / "dynamo.onnx"
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("steps")} if batch_first else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True, dynamic_shapes=(dims,) if dims else None)
    model = ar.convert.from_onnx_model(str(path))
    assert (model.num_layers, model.bidirectional, model.batch_first) == (2, bidirectional, batch_first)
    longer = torch.randn(*((BATCH + 1, STEPS + 2) if batch_first else (STEPS, BATCH)), INPUT)  # dynamic T, B
    with torch.no_grad():
        expected, final = module(longer)
    y, final_ar = model(longer.numpy())
    np.testing.assert_allclose(np.asarray(y), expected.numpy(), **TOLERANCE)
    for got, want in zip(final_ar if kind == "lstm" else (final_ar,), final if kind == "lstm" else (final,)):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), **TOLERANCE)
    np.testing.assert_allclose(np.asarray(y), _ort(path, {_input_name(path): longer.numpy()})[0], **TOLERANCE)


def _input_name(path):
    import onnx

    return onnx.load(str(path)).graph.input[0].name


def test_a_computed_reshape_that_is_not_T_B_DH_is_refused():
    """The computed-shape check runs the shape arithmetic: a shape giving (T, B*D, H) is not a layer link."""
    from onnx import helper, numpy_helper

    proto, _, _ = _chain("gru", layers=2, directions=2)
    reshape = next(n for n in proto.graph.node if n.name == "rs0")
    # shape = Concat(Shape(t0)[0:1], Shape(t0)[1:2] * Shape(t0)[2:3], Shape(t0)[3:4]) = (T, B*D, H): wrong
    extra = [
        helper.make_node("Shape", ["t0"], ["s"]),
        helper.make_node("Slice", ["s", "i0", "i1"], ["s0"]),
        helper.make_node("Slice", ["s", "i1", "i2"], ["s1"]),
        helper.make_node("Slice", ["s", "i2", "i3"], ["s2"]),
        helper.make_node("Slice", ["s", "i3", "i4"], ["s3"]),
        helper.make_node("Mul", ["s1", "s2"], ["s12"]),
        helper.make_node("Concat", ["s0", "s12", "s3"], ["computed"], axis=0),
    ]
    proto.graph.initializer.extend(numpy_helper.from_array(np.array([k], np.int64), f"i{k}") for k in range(5))
    position = list(proto.graph.node).index(reshape)
    for offset, node in enumerate(extra):
        proto.graph.node.insert(position + offset, node)
    reshape.input[1] = "computed"
    with pytest.raises(ValueError, match=r"through Transpose 'tr0', Reshape 'rs0', which is not what arrayrnn accepts"):
        ar.convert.from_onnx_model(proto)
    # the same arithmetic with the right factors, (T, B, D*H), is accepted (the graph holds copies of the nodes)
    by_output = {n.output[0]: n for n in proto.graph.node}
    by_output["s12"].CopyFrom(helper.make_node("Mul", ["s2", "s3"], ["s12"]))
    by_output["computed"].CopyFrom(helper.make_node("Concat", ["s0", "s1", "s12"], ["computed"], axis=0))
    assert ar.convert.from_onnx_model(proto).num_layers == 2
