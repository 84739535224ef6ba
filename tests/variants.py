"""The cell variants the tests run, and their test ids: every list of them lives here (a new option is added in
one place; each list keeps the contents, and so the test ids, its tests have always had)."""

from __future__ import annotations

from typing import Any

Variant = tuple[str, dict[str, Any], dict[str, Any]]  # (kind, params options, call options)

#: every option of every cell at least once; the sequence-function tests on every backend
VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {"peepholes": True}, {"coupled": True, "clip": 0.7}),
    ("lstm", {"bias": False}, {"clip": 1.5}),
    ("gru", {}, {}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {}),
]

#: the CuPy fast paths on a GPU (forward and gradient, every path): as ``VARIANTS``, but the bias-free GRU puts the
#: reset gate before the product (the kernels' other GRU branch)
GPU_VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {"peepholes": True}, {"coupled": True, "clip": 0.7}),
    ("lstm", {"bias": False}, {"clip": 1.5}),
    ("gru", {}, {}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {"linear_before_reset": False}),
]

#: the CuPy kernels on the CPU emulator (forward and gradient, every path): every option bit the kernels read,
#: spelled out, and the GRU's reset placement both ways with and without bias
KERNEL_VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {"nonlinearity": "tanh"}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {"peepholes": True}, {"coupled": True, "clip": 0.7}),
    ("lstm", {"bias": False}, {"clip": 1.5}),
    ("gru", {}, {"linear_before_reset": True}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {"linear_before_reset": True}),
    ("gru", {"bias": False}, {"linear_before_reset": False}),
]

#: the gradients (finite differences, torch autograd): every option, and projection with peepholes, coupling and
#: clipping at once, coupling alone
GRADIENT_VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {"peepholes": True, "proj_size": 2}, {"coupled": True, "clip": 0.8}),
    ("lstm", {"bias": False}, {"clip": 0.6}),
    ("lstm", {}, {"coupled": True}),
    ("gru", {}, {}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {"linear_before_reset": False}),
]

#: the NumPy fast path (loop and numba kernels): every option it implements, alone and in combination
NUMPY_LOOP_VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {}, {"coupled": True}),
    ("lstm", {"peepholes": True}, {"coupled": True, "clip": 0.7}),
    ("lstm", {"peepholes": True, "proj_size": 2}, {"clip": 0.9}),
    ("lstm", {"bias": False}, {"clip": 1.5}),
    ("gru", {}, {}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {}),
    ("gru", {"bias": False}, {"linear_before_reset": False}),
]

#: Dask (one task per batch block): one variant per cell, with the options that change the shapes or the branches
DASK_VARIANTS: list[Variant] = [
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("lstm", {"proj_size": 3, "peepholes": True}, {"clip": 1.5}),
    ("gru", {}, {"linear_before_reset": False}),
]

ModelVariant = tuple[str, dict[str, Any], dict[str, Any]]  # (kind, constructor options, apply options)

#: the models' gradients: stacks, both directions, lengths, batch_first and the cell options through a model
MODEL_VARIANTS: list[ModelVariant] = [
    ("rnn", {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"}, {"lengths": [5, 3, 1]}),
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 2}, {"lengths": [5, 0, 2]}),
    ("lstm", {"num_layers": 2, "peepholes": True, "coupled": True, "clip": 0.9, "batch_first": True}, {}),
    ("gru", {"num_layers": 3, "linear_before_reset": False}, {"lengths": [4, 5, 1]}),
    ("gru", {"num_layers": 1, "bidirectional": True, "bias": False, "batch_first": True}, {"lengths": [2, 5, 3]}),
]

#: Dask models (the whole stack per block): (kind, constructor options), one per cell
DASK_MODEL_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {"proj_size": 2}),
    ("gru", {}),
]


def variant_id(variant: Variant) -> str:
    """``lstm-peepholes=True-coupled=True-clip=0.7``: the kind, then every option."""
    kind, params_options, call_options = variant
    return "-".join([kind] + [f"{k}={v}" for k, v in {**params_options, **call_options}.items()])
