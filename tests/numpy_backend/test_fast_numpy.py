"""The NumPy fast path (``_fast/numpy_loop.py``) against the generic core and the float64 reference.

The generic core is the semantics; ``tests/reference.py`` is an oracle we did not derive from
either implementation. Every option, both dtypes, lengths, reverse, batch-first and chunked
projection (several chunks, chunks of one step) are covered, and so is switching the fast path off.
Tests taking ``engine`` run twice: the pure NumPy loop (``ARRAYRNN_NUMBA=0``) and, when numba is
installed, the compiled kernels (float32 LSTM without peepholes/projection, GRU, RNN).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arrayrnn as ar
from arrayrnn import _dispatch
from arrayrnn._backends import numpy as numpy_loop
from tests import reference
from tests.support import Backend, random_params, tolerance
from tests.variants import NUMPY_LOOP_VARIANTS
from tests.variants import variant_id as _ids

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}

NUMPY = Backend("numpy")  # read-only inputs: proves the fast path never writes them


@pytest.fixture(params=["numpy", "numba", "numba-rows", "numba-rows-split"])
def engine(request, monkeypatch):
    """Which loop runs: pure NumPy, or the numba kernels (skipped when numba is not installed):
    feature-major (``numba_loop``) or batch-major (``numba_rows``), forced for any batch size, on one
    slice or split over 3 threads (uneven slices and the thread hand-over run even at B = 4 or 5)."""
    if request.param.startswith("numba"):
        monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
        if numpy_loop.compiled_kernels() is None:
            pytest.skip("numba not installed (pip install '.[numba]')")
        rows = request.param.startswith("numba-rows")
        monkeypatch.setattr(numpy_loop, "ROWS_MIN_BATCH", 1 if rows else 1 << 30)
        monkeypatch.setattr(numpy_loop, "ROWS_MAX_SMALL_BATCH", 0)
        monkeypatch.setattr(numpy_loop, "ROWS_MAX_SMALL_PRODUCT", 0)
        monkeypatch.setattr(numpy_loop, "ROWS_PER_THREAD", 1)
        monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "3" if request.param == "numba-rows-split" else "1")
    else:
        monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    return request.param


def _state(kind, params, batch, rng, dtype):
    if kind == "lstm":
        return (
            rng.standard_normal((batch, params.output_size)).astype(dtype),
            rng.standard_normal((batch, params.hidden_size)).astype(dtype),
        )
    return rng.standard_normal((batch, params.hidden_size)).astype(dtype)


def _finals(kind, final):
    return list(final) if kind == "lstm" else [final]


def _run_both(kind, x, params, state, *, call_options, **kwargs):
    function = FUNCTIONS[kind]
    args = (NUMPY.asarray(x), NUMPY.tree(params), NUMPY.tree(state))
    fast = function(*args, impl="fast", **kwargs, **call_options)
    generic = function(*args, impl="generic", **kwargs, **call_options)
    return fast, generic


@pytest.mark.parametrize("variant", NUMPY_LOOP_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["one-chunk", "step-chunks"])
def test_fast_matches_generic_and_reference(variant, dtype, chunk_bytes, monkeypatch, engine):
    if chunk_bytes is not None:  # 1 byte: every time step is its own projection chunk
        monkeypatch.setattr(numpy_loop, "CHUNK_BYTES", chunk_bytes)
    kind, params_options, call_options = variant
    rng = np.random.default_rng(7)
    steps, batch, features, hidden = 9, 5, 4, 6
    params = random_params(kind, features, hidden, seed=3, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    state = _state(kind, params, batch, rng, dtype)
    for lengths in (None, np.array([9, 0, 4, 1, 7])):
        for reverse in (False, True):
            (y, final), (y_generic, final_generic) = _run_both(
                kind, x, params, state, call_options=call_options, lengths=lengths, reverse=reverse
            )
            y_ref, final_ref = reference.sequence(kind, x, params, state, lengths, reverse, **call_options)
            tol = tolerance(dtype, steps)
            np.testing.assert_allclose(NUMPY.numpy(y, dtype), NUMPY.numpy(y_generic), **tol)
            np.testing.assert_allclose(NUMPY.numpy(y, dtype), y_ref, **tol)
            for got, generic, want in zip(_finals(kind, final), _finals(kind, final_generic), _finals(kind, final_ref)):
                np.testing.assert_allclose(NUMPY.numpy(got, dtype), NUMPY.numpy(generic), **tol)
                np.testing.assert_allclose(NUMPY.numpy(got, dtype), want, **tol)
                assert not np.shares_memory(got, y)  # final states are not views into y
            if lengths is not None:
                for b, n in enumerate(lengths):
                    assert np.all(NUMPY.numpy(y)[n:, b] == 0), "padded steps must give exactly zero"


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("chunk_bytes", [None, 200])
def test_batch_first_and_unbatched(kind, chunk_bytes, monkeypatch, engine):
    if chunk_bytes is not None:
        monkeypatch.setattr(numpy_loop, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(5)
    params = random_params(kind, 3, 5, seed=8, dtype="float32")
    x = rng.standard_normal((7, 4, 3)).astype("float32")
    lengths = np.array([7, 3, 0, 5])
    y_ref, final_ref = reference.sequence(kind, x, params, lengths=lengths, reverse=True)
    y, final = FUNCTIONS[kind](
        NUMPY.asarray(np.transpose(x, (1, 0, 2))),
        NUMPY.tree(params),
        lengths=NUMPY.asarray(lengths),
        reverse=True,
        batch_first=True,
        impl="fast",
    )
    np.testing.assert_allclose(NUMPY.numpy(y, "float32"), np.transpose(y_ref, (1, 0, 2)), **tolerance("float32", 7))
    for got, want in zip(_finals(kind, final), _finals(kind, final_ref)):
        np.testing.assert_allclose(NUMPY.numpy(got, "float32"), want, **tolerance("float32", 7))
    y_one, _ = FUNCTIONS[kind](NUMPY.asarray(x[:, 1]), NUMPY.tree(params), impl="fast")
    y_one_ref, _ = reference.sequence(kind, x[:, 1:2], params)
    np.testing.assert_allclose(NUMPY.numpy(y_one, "float32"), y_one_ref[:, 0], **tolerance("float32", 7))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["rnn", "lstm", "gru"]),
    steps=st.integers(1, 12),
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    reverse=st.booleans(),
    chunk_bytes=st.sampled_from([1, 100, 1000, 1 << 20]),
    seed=st.integers(0, 2**16),
)
def test_property_fast_equals_generic(kind, steps, lengths, reverse, chunk_bytes, seed, dtype):
    """Any shape, any lengths (all full, all empty, ragged), any chunking: fast == generic.

    float32 runs the numba kernels when numba is installed (the NumPy loop otherwise)."""
    lengths = np.minimum(np.array(lengths), steps)
    rng = np.random.default_rng(seed)
    params = random_params(kind, 2, 3, seed=seed, dtype=dtype)
    x = rng.standard_normal((steps, len(lengths), 2)).astype(dtype)
    state = _state(kind, params, len(lengths), rng, dtype)
    saved = numpy_loop.CHUNK_BYTES
    numpy_loop.CHUNK_BYTES = chunk_bytes
    try:
        (y, final), (y_generic, final_generic) = _run_both(
            kind, x, params, state, call_options={}, lengths=lengths, reverse=reverse
        )
    finally:
        numpy_loop.CHUNK_BYTES = saved
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else tolerance(dtype, steps)
    np.testing.assert_allclose(y, y_generic, **tol)
    for got, want in zip(_finals(kind, final), _finals(kind, final_generic)):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_registered_for_numpy_and_switchable_off(kind, monkeypatch):
    assert _dispatch.hooks("numpy") is numpy_loop
    assert _dispatch.resolve_impl(kind, "numpy", None) == "auto"
    assert _dispatch.resolve_impl(kind, "numpy", "fast") == "fast"
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    assert _dispatch.resolve_impl(kind, "numpy", None) == "generic"
    monkeypatch.delenv("ARRAYRNN_IMPL")

    # through the public function: a broken fast path is used by default and bypassed by impl="generic"
    def broken(*args, **kwargs):
        raise RuntimeError("fast path called")

    monkeypatch.setattr(numpy_loop, f"{kind}_sequence", broken)
    params = random_params(kind, 2, 3, seed=1)
    x = np.random.default_rng(1).standard_normal((4, 2, 2))
    with pytest.raises(RuntimeError, match="fast path called"):
        FUNCTIONS[kind](x, params)
    y, _ = FUNCTIONS[kind](x, params, impl="generic")
    np.testing.assert_allclose(y, reference.sequence(kind, x, params)[0], **tolerance("float64", 4))
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    FUNCTIONS[kind](x, params)  # the environment variable bypasses it too


def test_float16_falls_back_to_generic():
    params = random_params("lstm", 3, 4, seed=2, dtype="float16")
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype("float16")
    y, (h, c) = ar.lstm(x, params, impl="fast")
    y_generic, (h_generic, c_generic) = ar.lstm(x, params, impl="generic")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, y_generic)
    np.testing.assert_array_equal(c, c_generic)


def test_matches_torch_float32_long_sequence(engine):
    """T=1000 against torch.nn.LSTM (the fast path's chunking and state hand-over at scale)."""
    from tests.conftest import need

    need("torch")
    from tests.torch_oracle import run_layer

    params = random_params("lstm", 6, 10, seed=4, dtype="float32")
    x = np.random.default_rng(4).standard_normal((1000, 3, 6)).astype("float32")
    saved = numpy_loop.CHUNK_BYTES
    numpy_loop.CHUNK_BYTES = 7 * 3 * 40 * 4  # 7 steps per chunk: chunks do not divide T
    try:
        y, (h, c) = ar.lstm(x, params, impl="fast")
    finally:
        numpy_loop.CHUNK_BYTES = saved
    y_ref, (h_ref, c_ref) = run_layer("lstm", params, x, dtype=np.float32)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_long_sequence_extra_memory_is_bounded(kind, engine):
    """Peak memory beyond the output stays far below the unchunked projection (G x the output)."""
    steps, batch, features, hidden = 20_000, 4, 8, 32
    params = random_params(kind, features, hidden, seed=0, dtype="float32")
    x = np.random.default_rng(0).standard_normal((steps, batch, features)).astype("float32")
    output_bytes = steps * batch * hidden * 4
    FUNCTIONS[kind](x[:3], params, impl="fast")  # one-time costs (numba compiles) are not per-call memory
    saved = numpy_loop.CHUNK_BYTES
    numpy_loop.CHUNK_BYTES = 256 << 10
    tracemalloc.start()
    try:
        FUNCTIONS[kind](x, params, impl="fast")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        numpy_loop.CHUNK_BYTES = saved
    extra = peak - output_bytes
    assert extra <= 0.5 * output_bytes, f"extra memory {extra} bytes for an output of {output_bytes} bytes"


def test_numba_kernels_are_really_used(monkeypatch):
    """With numba installed, float32 calls go through the compiled kernels (and ARRAYRNN_NUMBA=0 stops that)."""
    kernels = numpy_loop.compiled_kernels()
    if kernels is None:
        pytest.skip("numba not installed")
    calls = []
    original = kernels.gru_chunk
    monkeypatch.setattr(kernels, "gru_chunk", lambda *args: calls.append(1) or original(*args))
    params = random_params("gru", 2, 3, seed=0, dtype="float32")
    x = np.random.default_rng(0).standard_normal((5, 2, 2)).astype("float32")
    ar.gru(x, params, linear_before_reset=False)  # only the feature-major kernels have this one
    assert calls, "float32 GRU did not use the numba kernel"
    calls.clear()
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    ar.gru(x, params, linear_before_reset=False)
    ar.gru(x.astype("float64"), random_params("gru", 2, 3, seed=0), linear_before_reset=False)
    assert not calls


def test_batch_major_kernels_are_used_by_size_and_restore_blas_threads(monkeypatch):
    """Defaults: B = 1, B >= ROWS_MIN_BATCH and small per-step products go batch-major, the others feature-major;
    a split call leaves NumPy's BLAS thread count as it found it; a bad ARRAYRNN_ROW_THREADS is refused."""
    kernels = numpy_loop.compiled_kernels()
    if kernels is None:
        pytest.skip("numba not installed")
    rows = numpy_loop._rows_kernels()
    calls = []
    original = rows.rnn_rows
    monkeypatch.setattr(rows, "rnn_rows", lambda *args: calls.append(args[4].shape[0]) or original(*args))
    params = random_params("rnn", 2, 3, seed=0, dtype="float32")
    rng = np.random.default_rng(0)
    cases = [(1, None, [1]), (2, None, [2]), (2, 0, []), (numpy_loop.ROWS_MIN_BATCH, 0, [numpy_loop.ROWS_MIN_BATCH])]
    for batch, small_product, expected in cases:  # small_product: ROWS_MAX_SMALL_PRODUCT (None: the default)
        if small_product is not None:
            monkeypatch.setattr(numpy_loop, "ROWS_MAX_SMALL_PRODUCT", small_product)
        calls.clear()
        x = rng.standard_normal((3, batch, 2)).astype("float32")
        y, h = ar.rnn(x, params)
        assert calls == expected, (batch, calls)
        y_ref, h_ref = reference.sequence("rnn", x, params)
        np.testing.assert_allclose(y, y_ref, **tolerance("float32", 3))
    before = kernels.blas_get_num_threads()
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "2")
    calls.clear()
    split = max(numpy_loop.ROWS_MIN_BATCH, 2 * numpy_loop.ROWS_PER_THREAD)
    x = rng.standard_normal((3, split, 2)).astype("float32")
    y, _ = ar.rnn(x, params)
    assert calls == [split // 2] * 2  # two slices, one chunk (T = 3)
    np.testing.assert_allclose(y, reference.sequence("rnn", x, params)[0], **tolerance("float32", 3))
    assert kernels.blas_get_num_threads() == before
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "0")
    with pytest.raises(ValueError, match="ARRAYRNN_ROW_THREADS"):
        ar.rnn(x, params)
