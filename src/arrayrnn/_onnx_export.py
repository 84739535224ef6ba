"""ONNX export of ``ar.RNN/LSTM/GRU``: one ONNX RNN/LSTM/GRU node per layer, layout 0, dynamic ``T`` and ``B``.

Implements :func:`arrayrnn.convert.to_onnx_model` (needs the ``onnx`` package); arrays go to the host with
``ar.to_numpy``. Layers are chained with Transpose + Reshape, final states are concatenated over layers.
"""

from __future__ import annotations

import os
from typing import Any, Optional

#: the opset written when none is asked for (onnxruntime 1.17+ runs it), and the lowest accepted
DEFAULT_OPSET = 17
MIN_OPSET = 14
_DTYPES = ("float16", "float32", "float64")
#: an LSTM's g / h activation as ONNX names it (the identity is Affine with alpha 1, beta 0)
_ONNX_ACTIVATION = {"tanh": "Tanh", "identity": "Affine"}


def _check(model: Any, opset: Any) -> int:
    """The opset to write; refuses by name what ONNX cannot express."""
    import onnx

    from .models import GRU, LSTM, RNN

    if not isinstance(model, (RNN, LSTM, GRU)):
        raise TypeError(f"model must be an arrayrnn RNN, LSTM or GRU, got {type(model).__name__}")
    if opset is None:
        opset = DEFAULT_OPSET
    highest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= highest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {highest} (this onnx), got {opset!r}")
    if model.kind == "lstm" and model.proj_size:
        raise ValueError(
            f"ONNX LSTM has no projection: this model has proj_size={model.proj_size} (weight_hr); "
            "export a model with proj_size=0"
        )
    if model.kind == "lstm":
        absent = [f"{gate}=False" for gate in ("input_gate", "forget_gate", "output_gate") if not getattr(model, gate)]
        if absent:
            raise ValueError(
                f"ONNX LSTM has no option for an absent gate ({', '.join(absent)}): one activation serves all three "
                "gates, so a gate fixed at 1 cannot be written; export a model with every gate"
            )
        if model.gate_recurrence:
            raise ValueError(
                "ONNX LSTM has no full gate recurrence (weight_gg, variant 'FGR'); export a model without it"
            )
    if getattr(model, "layer_norm", False):
        raise ValueError(
            f"ONNX {model.kind.upper()} has no layer normalisation: this model has layer_norm=True (ln_* arrays); "
            "export a model without it"
        )
    if getattr(model, "_options", {}).get("zoneout", 0.0):  # dropout, recurrent_dropout: identity at inference
        raise ValueError(
            f"ONNX {model.kind.upper()} has no zoneout: this model has zoneout={model._options['zoneout']!r}, whose "
            "inference (p h_(t-1) + (1 - p) h~_t) differs from the plain cell; export a model with zoneout=0"
        )
    dtype = str(model.dtype).replace("torch.", "")
    if not any(dtype.endswith(name) for name in _DTYPES):
        raise ValueError(f"ONNX export supports float16, float32 and float64 models, not {dtype}")
    return opset


def export(
    to_onnx: Any,
    model: Any,
    path: Any = None,
    *,
    opset: Optional[int] = None,
    lengths_input: bool = False,
    state_inputs: bool = False,
) -> Any:
    """See :func:`arrayrnn.convert.to_onnx_model`, which passes its ``to_onnx`` (no import cycle)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .backend import to_numpy

    opset = _check(model, opset)
    for name, flag in (("lengths_input", lengths_input), ("state_inputs", state_inputs)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    kind, op = model.kind, model.kind.upper()
    params = to_numpy(model.params)
    dtype = np.dtype(params[0][0].weight_ih.dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    L, D, H, I = model.num_layers, model.num_directions, model.hidden_size, model.input_size
    batch_first = model.batch_first
    lstm = kind == "lstm"

    nodes: list[Any] = []
    initializers: list[Any] = []
    x_shape = ["batch", "seq_len", I] if batch_first else ["seq_len", "batch", I]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    state_names = ["h0", "c0"] if lstm else ["h0"]
    if lengths_input:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]))
    if state_inputs:
        inputs += [helper.make_tensor_value_info(s, elem, [L * D, "batch", H]) for s in state_names]

    def constant(name: str, array: Any) -> str:
        if any(tensor.name == name for tensor in initializers):  # shared (the Slice bounds of h0 and c0)
            return name
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    # constants a model may carry (set by from_onnx_model): honoured unless the caller asked for graph inputs
    lengths_name = "lengths" if lengths_input else ""
    if not lengths_input and model.default_lengths is not None:
        lengths_name = constant("default_lengths", np.asarray(model.default_lengths, dtype=np.int32))
    default_state = None
    if not state_inputs and model.default_state is not None:
        default_state = to_numpy(model.default_state)
        default_state = tuple(default_state) if lstm else (default_state,)

    def layer_state(which: int, layer: int) -> str:
        if state_inputs:
            if L == 1:
                return state_names[which]
            starts = constant(f"state_start_l{layer}", np.array([layer * D], np.int64))
            ends = constant(f"state_end_l{layer}", np.array([(layer + 1) * D], np.int64))
            axes = constant("state_axes", np.array([0], np.int64))
            out = f"{state_names[which]}_l{layer}"
            nodes.append(helper.make_node("Slice", [state_names[which], starts, ends, axes], [out], name=out))
            return out
        if default_state is not None:
            return constant(f"initial_{'hc'[which]}_l{layer}", default_state[which][layer * D : (layer + 1) * D])
        return ""

    attributes: dict[str, Any] = {"hidden_size": H}
    if D == 2:
        attributes["direction"] = "bidirectional"
    elif model.reverse:
        attributes["direction"] = "reverse"
    options = model._options
    if kind == "rnn" and options.get("nonlinearity") == "relu":
        attributes["activations"] = ["Relu"] * D
    if kind == "gru":
        attributes["linear_before_reset"] = int(bool(options["linear_before_reset"]))
    if lstm:
        if options.get("coupled"):
            attributes["input_forget"] = 1
        if options.get("clip") is not None:
            attributes["clip"] = float(options["clip"])
        if "identity" in (options["input_activation"], options["output_activation"]):
            # ONNX's Affine(alpha=1, beta=0) is the identity; alpha/beta are read in order by the activations that
            # take them, so each direction lists its own pair
            names = [_ONNX_ACTIVATION[options["input_activation"]], _ONNX_ACTIVATION[options["output_activation"]]]
            attributes["activations"] = ["Sigmoid", *names] * D
            affine = names.count("Affine") * D
            attributes["activation_alpha"] = [1.0] * affine
            attributes["activation_beta"] = [0.0] * affine

    reshape_shape = constant("layer_output_shape", np.array([0, 0, -1], np.int64))
    current = "x"
    if batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2], name="x_time_major"))
        current = "x_time_major"
    finals: list[list[str]] = [[] for _ in state_names]
    for layer in range(L):
        arrays = to_onnx(kind, params[layer])
        names = [constant(f"{n}_l{layer}", a) if a is not None else "" for n, a in zip("WRB", arrays[:3])]
        node_inputs = [current, *names, lengths_name, layer_state(0, layer)]
        if lstm:
            node_inputs += [layer_state(1, layer), constant(f"P_l{layer}", arrays[3]) if arrays[3] is not None else ""]
        while node_inputs[-1] == "":
            node_inputs.pop()
        outputs = [f"Y_l{layer}", f"Y_h_l{layer}"] + ([f"Y_c_l{layer}"] if lstm else [])
        nodes.append(helper.make_node(op, node_inputs, outputs, name=f"{op.lower()}_l{layer}", **attributes))
        for k, out in enumerate(outputs[1:]):
            finals[k].append(out)
        nodes.append(helper.make_node("Transpose", [outputs[0]], [f"Y_tbdh_l{layer}"], perm=[0, 2, 1, 3]))
        current = f"y_l{layer}" if (layer < L - 1 or batch_first) else "y"
        nodes.append(helper.make_node("Reshape", [f"Y_tbdh_l{layer}", reshape_shape], [current]))
    if batch_first:
        nodes.append(helper.make_node("Transpose", [current], ["y"], perm=[1, 0, 2], name="y_batch_first"))
    output_names = ["h_n", "c_n"] if lstm else ["h_n"]
    for name, parts in zip(output_names, finals):
        nodes.append(
            helper.make_node("Concat", parts, [name], axis=0) if L > 1 else helper.make_node("Identity", parts, [name])
        )
    y_shape = ["batch", "seq_len", D * H] if batch_first else ["seq_len", "batch", D * H]
    outputs = [helper.make_tensor_value_info("y", elem, y_shape)]
    outputs += [helper.make_tensor_value_info(n, elem, [L * D, "batch", H]) for n in output_names]
    graph = helper.make_graph(nodes, f"arrayrnn_{kind}", inputs, outputs, initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="arrayrnn")
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))  # the oldest runtime that can
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto
