"""The cell variants the tests run, and their test ids (shared so that a new option is added in one place)."""

from __future__ import annotations

from typing import Any

Variant = tuple[str, dict[str, Any], dict[str, Any]]  # (kind, params options, call options)

#: every option of every cell at least once; the sequence-function tests on every backend and the CuPy fast paths
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


def variant_id(variant: Variant) -> str:
    """``lstm-peepholes=True-coupled=True-clip=0.7``: the kind, then every option."""
    kind, params_options, call_options = variant
    return "-".join([kind] + [f"{k}={v}" for k, v in {**params_options, **call_options}.items()])
