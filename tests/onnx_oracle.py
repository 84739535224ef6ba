"""Run one ONNX RNN/LSTM/GRU node in onnxruntime: the second oracle we did not write.

The node is built with ``onnx.helper``; every array (weights included) is a graph input, so one
model per configuration is enough. Sessions use one intra-op thread and no spinning, so the
tests behave on a shared 2-core machine.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

OPSET = 14  # LSTM/GRU/RNN gained `layout` in 14; onnxruntime refuses layout=1 anyway

_ELEMENT = {np.dtype("float32"): 1, np.dtype("float64"): 11, np.dtype("int32"): 6}
#: ONNX input slots of each operator (position = input index)
_INPUTS = {
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
}


def _outputs(names: list[str], element: int) -> list[Any]:
    from onnx import helper

    # Y is (T, D, B, H); Y_h and Y_c are (D, B, H); sizes left symbolic
    return [helper.make_tensor_value_info(name, element, [None] * (4 if name == "Y" else 3)) for name in names]


def run_node(
    op_type: str,
    arrays: dict[str, Optional[np.ndarray]],
    *,
    hidden_size: int,
    **attributes: Any,
) -> list[np.ndarray]:
    """Run one ``op_type`` node on ``arrays`` (named by ONNX input name, ``None`` = absent).

    Returns ``[Y (T, D, B, H), Y_h (D, B, H)]`` and ``Y_c`` for an LSTM.
    """
    import onnx
    from onnx import helper

    slots = _INPUTS[op_type]
    present = {name: value for name, value in arrays.items() if value is not None}
    unknown = set(present) - set(slots)
    assert not unknown, f"unknown ONNX inputs {unknown}"
    last = max(slots.index(name) for name in present)
    node_inputs = [name if name in present else "" for name in slots[: last + 1]]
    graph_inputs = [
        helper.make_tensor_value_info(name, _ELEMENT[present[name].dtype], list(present[name].shape))
        for name in slots
        if name in present
    ]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op_type == "LSTM" else [])
    element = _ELEMENT[present["X"].dtype]
    graph_outputs = _outputs(outputs, element)
    attrs = {key: value for key, value in attributes.items() if value is not None}
    node = helper.make_node(op_type, node_inputs, outputs, hidden_size=hidden_size, **attrs)
    graph = helper.make_graph([node], "one_node", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return run_model(model.SerializeToString(), present)


def model_bytes(op_type: str, initializers: dict[str, np.ndarray], x_shape, *, hidden_size: int, **attributes):
    """A serialised one-node model whose weights are initializers (what an exported file looks like)."""
    import onnx
    from onnx import helper, numpy_helper

    slots = _INPUTS[op_type]
    last = max(slots.index(name) for name in initializers)
    node_inputs = ["X"] + [name if name in initializers else "" for name in slots[1 : last + 1]]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op_type == "LSTM" else [])
    element = _ELEMENT[next(iter(initializers.values())).dtype]
    node = helper.make_node(op_type, node_inputs, outputs, hidden_size=hidden_size, name="rnn0", **attributes)
    graph = helper.make_graph(
        [node],
        "exported",
        [helper.make_tensor_value_info("X", element, list(x_shape))],
        _outputs(outputs, element),
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run_model(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a serialised model in onnxruntime (one thread, no spinning); all outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
