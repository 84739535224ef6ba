"""Cells (one step) against torch.nn.*Cell and the independent float64 reference, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests import reference
from tests.conftest import need
from tests.support import random_params, tolerance


def _reference_cell(kind, x, state, params, **options):
    if kind == "lstm":
        pairs = [reference.lstm_step(x[b], state[0][b], state[1][b], params, **options) for b in range(x.shape[0])]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    step = reference.gru_step if kind == "gru" else reference.rnn_step
    return np.stack([step(x[b], state[b], params, **options) for b in range(x.shape[0])])


def _call(kind, backend, x, state, params, **options):
    function = {"rnn": ar.rnn_cell, "lstm": ar.lstm_cell, "gru": ar.gru_cell}[kind]
    return function(backend.asarray(x), backend.tree(state), backend.tree(params), **options)


def _state(kind, params, batch, rng, dtype):
    if kind == "lstm":
        return (
            rng.standard_normal((batch, params.output_size)).astype(dtype),
            rng.standard_normal((batch, params.hidden_size)).astype(dtype),
        )
    return rng.standard_normal((batch, params.hidden_size)).astype(dtype)


def _as_list(kind, out):
    return list(out) if kind == "lstm" else [out]


@pytest.mark.parametrize(
    "kind, options",
    [
        ("rnn", {"nonlinearity": "tanh"}),
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {}),
        ("gru", {}),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_torch_cells(backend, kind, options, dtype):
    need("torch")
    from tests.torch_oracle import run_cell

    rng = np.random.default_rng(0)
    params = random_params(kind, 6, 5, seed=1, dtype=dtype)
    x = rng.standard_normal((3, 6)).astype(dtype)
    state = _state(kind, params, 3, rng, dtype)
    want = run_cell(kind, params, x, state, dtype=np.dtype(dtype).type, **options)
    got = _call(kind, backend, x, state, params, **options)
    for g, w in zip(_as_list(kind, got), _as_list(kind, want)):
        np.testing.assert_allclose(
            backend.numpy(g, dtype),
            w,
            rtol=1e-5 if dtype == "float32" else 1e-12,
            atol=1e-6 if dtype == "float32" else 1e-12,
        )


@pytest.mark.parametrize(
    "kind, params_options, options",
    [
        ("lstm", {"proj_size": 2}, {}),
        ("lstm", {"peepholes": True}, {}),
        ("lstm", {"peepholes": True}, {"coupled": True}),
        ("lstm", {}, {"clip": 0.5}),
        ("gru", {}, {"linear_before_reset": False}),
        ("rnn", {"bias": False}, {}),
    ],
)
def test_variants_match_reference(backend, kind, params_options, options):
    rng = np.random.default_rng(4)
    params = random_params(kind, 4, 5, seed=3, **params_options)
    x = rng.standard_normal((2, 4))
    state = _state(kind, params, 2, rng, "float64")
    want = _reference_cell(kind, x, state, params, **options)
    got = _call(kind, backend, x, state, params, **options)
    for g, w in zip(_as_list(kind, got), _as_list(kind, want)):
        np.testing.assert_allclose(backend.numpy(g, "float64"), w, **tolerance("float64"))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_cell(backend, kind):
    rng = np.random.default_rng(5)
    params = random_params(kind, 3, 4, seed=2)
    x = rng.standard_normal((1, 3))
    state = _state(kind, params, 1, rng, "float64")
    want = _reference_cell(kind, x, state, params)
    single_state = tuple(s[0] for s in state) if kind == "lstm" else state[0]
    got = _call(kind, backend, x[0], single_state, params)
    for g, w in zip(_as_list(kind, got), _as_list(kind, want)):
        assert g.shape == w.shape[1:]
        np.testing.assert_allclose(backend.numpy(g), w[0], **tolerance("float64"))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_huge_preactivations_stay_finite_without_warnings(backend, kind):
    params = random_params(kind, 2, 3, seed=0, dtype="float32")
    x = np.full((2, 2), 1e4, dtype="float32")
    x[1] = -1e4
    state = _state(kind, params, 2, np.random.default_rng(0), "float32")
    with np.errstate(all="raise"):
        out = _call(kind, backend, x, state, params)
        sequence = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}[kind]
        y, _ = sequence(backend.asarray(np.stack([x, -x, x])), backend.tree(params))
    for value in _as_list(kind, out) + [y]:
        assert np.all(np.isfinite(backend.numpy(value)))
