"""Sequence functions (one layer) against torch.nn and the independent float64 loop, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arrayrnn as ar
from tests import reference
from tests.conftest import need
from tests.support import random_params, tolerance
from tests.variants import VARIANTS
from tests.variants import variant_id as _ids

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}

# kind, params options, call options


def _state(kind, params, batch, rng):
    hidden = params.hidden_size
    if kind == "lstm":
        return (rng.standard_normal((batch, params.output_size)), rng.standard_normal((batch, hidden)))
    return rng.standard_normal((batch, hidden))


def _final_list(kind, final):
    return list(final) if kind == "lstm" else [final]


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_reference_with_lengths_reverse_and_state(backend, variant, dtype):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(1)
    steps, batch, features, hidden = 9, 5, 4, 6
    params = random_params(kind, features, hidden, seed=2, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    state = _state(kind, params, batch, rng)
    state = tuple(s.astype(dtype) for s in state) if kind == "lstm" else state.astype(dtype)
    lengths = np.array([9, 0, 4, 1, 7])
    for reverse in (False, True):
        y_ref, final_ref = reference.sequence(kind, x, params, state, lengths, reverse, **call_options)
        y, final = FUNCTIONS[kind](
            backend.asarray(x),
            backend.tree(params),
            backend.tree(state),
            lengths=backend.asarray(lengths),
            reverse=reverse,
            **call_options,
        )
        np.testing.assert_allclose(backend.numpy(y, dtype), y_ref, **tolerance(dtype, steps))
        for got, want in zip(_final_list(kind, final), _final_list(kind, final_ref)):
            np.testing.assert_allclose(backend.numpy(got, dtype), want, **tolerance(dtype, steps))
    # padded steps give exactly zero output
    assert np.all(backend.numpy(y)[lengths[2] :, 2] == 0)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_batch_first_and_unbatched_layouts(backend, kind):
    rng = np.random.default_rng(3)
    params = random_params(kind, 3, 4, seed=4)
    x = rng.standard_normal((6, 2, 3))
    y_ref, final_ref = reference.sequence(kind, x, params)
    function = FUNCTIONS[kind]
    y_bf, final_bf = function(backend.asarray(np.transpose(x, (1, 0, 2))), backend.tree(params), batch_first=True)
    np.testing.assert_allclose(backend.numpy(y_bf), np.transpose(y_ref, (1, 0, 2)), **tolerance("float64"))
    for got, want in zip(_final_list(kind, final_bf), _final_list(kind, final_ref)):
        assert got.shape == want.shape  # states are never batch-first
        np.testing.assert_allclose(backend.numpy(got), want, **tolerance("float64"))
    # unbatched (T, I): the first sequence alone
    y_one, final_one = function(backend.asarray(x[:, 0]), backend.tree(params))
    assert y_one.shape == (6, y_ref.shape[-1])
    np.testing.assert_allclose(backend.numpy(y_one), y_ref[:, 0], **tolerance("float64"))
    for got, want in zip(_final_list(kind, final_one), _final_list(kind, final_ref)):
        assert got.shape == want.shape[1:]
        np.testing.assert_allclose(backend.numpy(got), want[0], **tolerance("float64"))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("steps", [1, 1000])
def test_matches_torch_float32(backend, kind, steps):
    need("torch")
    from tests.torch_oracle import run_layer

    rng = np.random.default_rng(steps)
    batch = 3 if steps > 1 else 4
    params = random_params(kind, 5, 8, seed=5, dtype="float32")
    x = rng.standard_normal((steps, batch, 5)).astype("float32")
    y_ref, final_ref = run_layer(kind, params, x, dtype=np.float32)
    y, final = FUNCTIONS[kind](backend.asarray(x), backend.tree(params))
    np.testing.assert_allclose(backend.numpy(y, "float32"), y_ref, rtol=1e-5, atol=2e-6)
    for got, want in zip(_final_list(kind, final), _final_list(kind, final_ref)):
        np.testing.assert_allclose(backend.numpy(got, "float32"), want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_torch_packed_sequences(backend, kind, reverse):
    need("torch")
    from tests.torch_oracle import run_layer

    rng = np.random.default_rng(11)
    extra = {"proj_size": 4} if kind == "lstm" else {}
    params = random_params(kind, 3, 7, seed=6, **extra)
    x = rng.standard_normal((12, 4, 3))
    state = _state(kind, params, 4, rng)
    lengths = np.array([12, 5, 1, 9])
    y_ref, final_ref = run_layer(kind, params, x, state, lengths, reverse)
    y, final = FUNCTIONS[kind](
        backend.asarray(x), backend.tree(params), backend.tree(state), lengths=backend.asarray(lengths), reverse=reverse
    )
    np.testing.assert_allclose(backend.numpy(y), y_ref, **tolerance("float64", 12))
    for got, want in zip(_final_list(kind, final), _final_list(kind, final_ref)):
        np.testing.assert_allclose(backend.numpy(got), want, **tolerance("float64", 12))


def test_lengths_as_python_list(backend):
    params = random_params("gru", 2, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    y_list, h_list = ar.gru(backend.asarray(x), backend.tree(params), lengths=[4, 2])
    y_ref, h_ref = reference.sequence("gru", x, params, lengths=[4, 2])
    np.testing.assert_allclose(backend.numpy(y_list), y_ref, **tolerance("float64"))
    np.testing.assert_allclose(backend.numpy(h_list), h_ref, **tolerance("float64"))


def test_impl_generic_is_selectable(backend, monkeypatch):
    params = random_params("lstm", 3, 4, seed=1)
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    y_auto, _ = ar.lstm(backend.asarray(x), backend.tree(params))
    y_generic, _ = ar.lstm(backend.asarray(x), backend.tree(params), impl="generic")
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    y_env, _ = ar.lstm(backend.asarray(x), backend.tree(params))
    np.testing.assert_allclose(backend.numpy(y_auto), backend.numpy(y_generic), **tolerance("float64"))
    np.testing.assert_array_equal(backend.numpy(y_env), backend.numpy(y_generic))
    with pytest.raises(ValueError, match="impl must be one of"):
        ar.lstm(backend.asarray(x), backend.tree(params), impl="turbo")


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["rnn", "lstm", "gru"]),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_padded_batch_equals_each_sequence_alone(kind, lengths, reverse, seed):
    """Property: running a padded batch equals running every sequence alone at its own length."""
    rng = np.random.default_rng(seed)
    steps = 6
    params = random_params(kind, 3, 4, seed=seed)
    x = rng.standard_normal((steps, len(lengths), 3))
    # garbage in the padding must not leak into anything
    y, final = FUNCTIONS[kind](x, params, lengths=np.array(lengths), reverse=reverse)
    finals = _final_list(kind, final)
    for b, n in enumerate(lengths):
        assert np.all(y[n:, b] == 0)
        if n == 0:
            for state in finals:
                assert np.all(state[b] == 0)
            continue
        y_alone, final_alone = FUNCTIONS[kind](x[:n, b], params, reverse=reverse)
        np.testing.assert_allclose(y[:n, b], y_alone, rtol=1e-12, atol=1e-12)
        for state, alone in zip(finals, _final_list(kind, final_alone)):
            np.testing.assert_allclose(state[b], alone, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), steps=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_reverse_equals_forward_on_flipped_input(kind, steps, seed):
    rng = np.random.default_rng(seed)
    params = random_params(kind, 2, 3, seed=seed)
    x = rng.standard_normal((steps, 2, 2))
    y_rev, final_rev = FUNCTIONS[kind](x, params, reverse=True)
    y_fwd, final_fwd = FUNCTIONS[kind](x[::-1].copy(), params)
    np.testing.assert_allclose(y_rev, y_fwd[::-1], rtol=1e-12, atol=1e-12)
    for a, b in zip(_final_list(kind, final_rev), _final_list(kind, final_fwd)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_state_carries_across_calls(backend):
    """Running T steps at once equals running two halves with the state handed over."""
    params = random_params("lstm", 3, 5, seed=9)
    x = np.random.default_rng(9).standard_normal((8, 2, 3))
    y_all, state_all = ar.lstm(backend.asarray(x), backend.tree(params))
    y_a, state_a = ar.lstm(backend.asarray(x[:3]), backend.tree(params))
    y_b, state_b = ar.lstm(backend.asarray(x[3:]), backend.tree(params), state_a)
    np.testing.assert_allclose(backend.numpy(y_all)[3:], backend.numpy(y_b), rtol=1e-12, atol=1e-12)
    for a, b in zip(state_all, state_b):
        np.testing.assert_allclose(backend.numpy(a), backend.numpy(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_float16(backend, kind):
    if backend.name == "array_api_strict":
        pytest.skip("float16 is not a dtype of the array API standard")
    rng = np.random.default_rng(12)
    params = random_params(kind, 3, 4, seed=12, dtype="float16")
    x = rng.standard_normal((5, 2, 3)).astype("float16")
    y_ref, _ = reference.sequence(kind, x, params, lengths=[5, 3])
    y, _ = FUNCTIONS[kind](backend.asarray(x), backend.tree(params), lengths=backend.asarray(np.array([5, 3])))
    np.testing.assert_allclose(backend.numpy(y, "float16").astype("float64"), y_ref, **tolerance("float16"))
