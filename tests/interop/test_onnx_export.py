"""``ar.convert.to_onnx_model``: the exported graph, run by onnxruntime, computes what the arrayrnn model computes.

onnxruntime's CPU recurrent kernels refuse float64 ("does not support double yet"), so float64 graphs are run by
ONNX's own reference evaluator, which has no ``sequence_lens``, ``input_forget``, ``clip``, ``Relu`` or other
activations (it runs the defaults): those float64 cases are left to the float32 comparison (the graph is the same
but for the element type). float16 graphs run on onnxruntime (it computes them in float32) and are compared at
float16's precision.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need

TOLERANCE = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-10, "atol": 1e-10}}
TOLERANCE["float16"] = {"rtol": 1e-2, "atol": 4e-3}
CLASSES = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}


@pytest.fixture(autouse=True)
def _onnx_installed():
    need("onnx")


def _configs(count: int, seed: int, *, reference: bool = False) -> list[dict]:
    """Random configurations; ``reference``: only what ONNX's reference evaluator implements."""
    rng = np.random.default_rng(seed)
    configs = []
    for index in range(count):
        kind = ("rnn", "lstm", "gru")[index % 3]
        config = {
            "kind": kind,
            "num_layers": int(rng.integers(1, 4)),
            "bidirectional": bool(rng.integers(2)),
            "batch_first": bool(rng.integers(2)),
            "bias": bool(rng.random() < 0.85),
            "lengths_input": bool(rng.integers(2)) and not reference,
            "state_inputs": bool(rng.integers(2)),
            "options": {},
        }
        if kind == "rnn" and not reference:
            config["options"]["nonlinearity"] = ("tanh", "relu")[int(rng.integers(2))]
        if kind == "lstm":
            config["options"]["peepholes"] = bool(rng.integers(2))
            if not reference:
                config["options"]["coupled"] = bool(rng.integers(2))
                config["options"]["clip"] = (None, 0.5, 3.0)[int(rng.integers(3))]
            if index % 2 and not reference:  # Greff et al.'s NIAF / NOAF: ONNX's Affine(alpha=1, beta=0) activations
                config["options"]["input_activation"] = ("tanh", "identity")[int(rng.integers(2))]
                config["options"]["output_activation"] = ("tanh", "identity")[int(rng.integers(2))]
        if kind == "gru":
            config["options"]["linear_before_reset"] = bool(rng.integers(2))
        config["reverse"] = not config["bidirectional"] and bool(rng.integers(2))  # ONNX direction="reverse"
        configs.append(config)
    return configs


def _name(config: dict) -> str:
    options = ",".join(f"{k}={v}" for k, v in config["options"].items())
    flags = [k for k in ("bidirectional", "reverse", "batch_first", "lengths_input", "state_inputs") if config.get(k)]
    flags += [] if config["bias"] else ["no_bias"]
    return f"{config['kind']}-L{config['num_layers']}-{'+'.join(flags) or 'plain'}-{options}"


def _model(config: dict, dtype: str, seed: int = 0):
    return CLASSES[config["kind"]](
        5, 4, config["num_layers"], bidirectional=config["bidirectional"], batch_first=config["batch_first"],
        reverse=config.get("reverse", False), bias=config["bias"], seed=seed, dtype=dtype, **config["options"],
    )  # fmt: skip


def _feeds(model, config: dict, dtype: str, seed: int = 1, batch: int = 3, steps: int = 7):
    """``(onnx feeds, model state, model lengths)``; lengths >= 1 (onnxruntime zeroes the state of length 0)."""
    rng = np.random.default_rng(seed)
    shape = (batch, steps, model.input_size) if model.batch_first else (steps, batch, model.input_size)
    feeds = {"x": rng.standard_normal(shape).astype(dtype)}
    state = lengths = None
    if config["lengths_input"]:
        lengths = rng.integers(1, steps + 1, batch).astype(np.int32)
        lengths[0] = steps
        feeds["lengths"] = lengths
    if config["state_inputs"]:
        state_shape = (model.num_layers * model.num_directions, batch, model.hidden_size)
        feeds["h0"] = (0.5 * rng.standard_normal(state_shape)).astype(dtype)
        state = feeds["h0"]
        if model.kind == "lstm":
            feeds["c0"] = (0.5 * rng.standard_normal(state_shape)).astype(dtype)
            state = (feeds["h0"], feeds["c0"])
    return feeds, state, lengths


def _expected(model, state, lengths, feeds):
    y, final = model(feeds["x"], state, lengths=lengths)
    return [np.asarray(y), *(np.asarray(f) for f in (final if isinstance(final, tuple) else (final,)))]


def _onnxruntime(proto, feeds):
    ort = need("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _compare(got, expected, dtype):
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), **TOLERANCE[dtype])


ORT_CONFIGS = _configs(36, seed=2024)


@pytest.mark.parametrize("config", ORT_CONFIGS, ids=[_name(c) for c in ORT_CONFIGS])
def test_float32_onnxruntime_equals_the_model(config):
    model = _model(config, "float32")
    proto = ar.convert.to_onnx_model(model, lengths_input=config["lengths_input"], state_inputs=config["state_inputs"])
    recurrent = [n for n in proto.graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    assert len(recurrent) == config["num_layers"]  # one node per layer, both directions in it
    for batch, steps in ((3, 7), (1, 2)):  # dynamic T and B: one graph, two shapes
        feeds, state, lengths = _feeds(model, config, "float32", batch=batch, steps=steps)
        _compare(_onnxruntime(proto, feeds), _expected(model, state, lengths, feeds), "float32")


REFERENCE_CONFIGS = _configs(12, seed=7, reference=True)


@pytest.mark.parametrize("config", REFERENCE_CONFIGS, ids=[_name(c) for c in REFERENCE_CONFIGS])
def test_float64_reference_evaluator_equals_the_model(config):
    from onnx.reference import ReferenceEvaluator

    model = _model(config, "float64")
    proto = ar.convert.to_onnx_model(model, state_inputs=config["state_inputs"])
    feeds, state, lengths = _feeds(model, config, "float64")
    _compare(ReferenceEvaluator(proto).run(None, feeds), _expected(model, state, lengths, feeds), "float64")


FLOAT16_CONFIGS = _configs(6, seed=16)


@pytest.mark.parametrize("config", FLOAT16_CONFIGS, ids=[_name(c) for c in FLOAT16_CONFIGS])
def test_float16_onnxruntime_equals_the_model(config):
    model = _model(config, "float16")
    proto = ar.convert.to_onnx_model(model, lengths_input=config["lengths_input"], state_inputs=config["state_inputs"])
    feeds, state, lengths = _feeds(model, config, "float16")
    _compare(_onnxruntime(proto, feeds), _expected(model, state, lengths, feeds), "float16")


def test_params_on_any_backend(backend):
    config = {"kind": "lstm", "num_layers": 2, "bidirectional": True, "batch_first": True, "bias": True}
    config.update(lengths_input=True, state_inputs=False, options={"peepholes": True})
    host = _model(config, "float32")
    proto = ar.convert.to_onnx_model(host.to(backend.name, device=backend.device), lengths_input=True)
    feeds, state, lengths = _feeds(host, config, "float32")
    _compare(_onnxruntime(proto, feeds), _expected(host, state, lengths, feeds), "float32")


def test_graph_structure_and_path(tmp_path):
    onnx = need("onnx")
    model = ar.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    path = tmp_path / "gru.onnx"
    proto = ar.convert.to_onnx_model(model, path, lengths_input=True, state_inputs=True)
    assert onnx.load(str(path)) == proto
    assert [value.name for value in proto.graph.input] == ["x", "lengths", "h0"]
    assert [value.name for value in proto.graph.output] == ["y", "h_n"]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output]
    assert dims == [["batch", "seq_len", 8], [4, "batch", 4]]
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in grus]
    assert all(a["direction"] == b"bidirectional" and a.get("layout", 0) == 0 for a in attributes)
    assert all(n.input[4] == "lengths" for n in grus)
    assert proto.opset_import[0].version == 17
    assert ar.convert.to_onnx_model(model, opset=21).opset_import[0].version == 21


def test_attributes_mapped():
    onnx = need("onnx")

    def attributes(model):
        (node,) = [n for n in ar.convert.to_onnx_model(model).graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}, list(node.input)

    lstm, inputs = attributes(ar.LSTM(3, 4, peepholes=True, coupled=True, clip=2.5, seed=0))
    assert lstm["input_forget"] == 1 and lstm["clip"] == pytest.approx(2.5) and inputs[7] == "P_l0"
    assert attributes(ar.GRU(3, 4, seed=0))[0]["linear_before_reset"] == 1
    assert attributes(ar.GRU(3, 4, linear_before_reset=False, seed=0))[0]["linear_before_reset"] == 0
    assert attributes(ar.RNN(3, 4, nonlinearity="relu", bidirectional=True, seed=0))[0]["activations"] == [b"Relu"] * 2
    assert "activations" not in attributes(ar.RNN(3, 4, seed=0))[0]
    niaf, _ = attributes(ar.LSTM(3, 4, bidirectional=True, input_activation="identity", seed=0))
    assert niaf["activations"] == [b"Sigmoid", b"Affine", b"Tanh"] * 2
    assert niaf["activation_alpha"] == [1.0, 1.0] and niaf["activation_beta"] == [0.0, 0.0]


def test_refusals():
    with pytest.raises(ValueError, match="proj_size=2"):
        ar.convert.to_onnx_model(ar.LSTM(3, 4, proj_size=2, seed=0))
    with pytest.raises(ValueError, match="opset"):
        ar.convert.to_onnx_model(ar.GRU(3, 4, seed=0), opset=9)
    with pytest.raises(TypeError, match="RNN, LSTM or GRU"):
        ar.convert.to_onnx_model(ar.init_gru(3, 4, seed=0))
    with pytest.raises(TypeError, match="lengths_input"):
        ar.convert.to_onnx_model(ar.GRU(3, 4, seed=0), lengths_input=1)
    for variant, match in (("NIG", "input_gate=False"), ("NFG", "forget_gate=False"), ("NOG", "output_gate=False")):
        with pytest.raises(ValueError, match=f"ONNX LSTM has no option for an absent gate \\({match}\\)"):
            ar.convert.to_onnx_model(ar.LSTM(3, 4, variant=variant, seed=0))
    with pytest.raises(ValueError, match="ONNX LSTM has no full gate recurrence"):
        ar.convert.to_onnx_model(ar.LSTM(3, 4, variant="FGR", seed=0))
    with pytest.raises(ValueError, match="ONNX has no full gate recurrence"):
        ar.convert.to_onnx("lstm", ar.init_lstm(3, 4, gate_recurrence=True, seed=0))


ROUND_TRIP = [
    (kind, layers, bidirectional, batch_first, reverse)
    for kind in ("rnn", "lstm", "gru")
    for layers, bidirectional, batch_first, reverse in (
        (1, False, False, False),
        (1, True, False, False),
        (1, True, True, False),
        (2, True, False, False),
        (1, False, False, True),
        (3, False, True, True),
    )  # fmt: skip
]


@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,reverse", ROUND_TRIP)
def test_round_trip_through_the_importer(kind, layers, bidirectional, batch_first, reverse):
    lstm = {"peepholes": True, "clip": 2.0, "input_activation": "identity", "output_activation": "identity"}
    if layers == 1 and not bidirectional:
        lstm = {"peepholes": True, "output_activation": "identity"}  # Greff et al.'s NOAF
    options = {"rnn": {"nonlinearity": "relu"}, "lstm": lstm, "gru": {}}[kind]
    config = {"kind": kind, "num_layers": layers, "bidirectional": bidirectional, "batch_first": batch_first}
    model = _model({**config, "reverse": reverse, "bias": True, "options": options}, "float32")
    proto = ar.convert.to_onnx_model(model)
    back = ar.convert.from_onnx_model(proto, backend="numpy")
    assert type(back) is type(model)
    assert back.config() == model.config()
    for layer, layer_back in zip(model.params, back.params):
        for params, params_back in zip(layer, layer_back):
            for field in dataclasses.fields(params):
                value, got = getattr(params, field.name), getattr(params_back, field.name)
                assert (value is None) == (got is None), field.name
                assert value is None or np.array_equal(np.asarray(got), np.asarray(value)), field.name
