"""One truth for the optional params fields: every path computes what the generic core computes.

Each bias (``bias_ih``, ``bias_hh``), each LSTM peephole (``peephole_i``, ``peephole_f``, ``peephole_o``) and the
projection (``weight_hr``) may be ``None`` on its own, in any combination. A property test draws such params with
random shapes, dtypes, lengths, direction and cell options, and runs every registered path on them against
``impl="generic"``: the NumPy loop (``ARRAYRNN_NUMBA=0``), its numba kernels (feature-major, batch-major, batch-major
split over threads) and the CuPy hook's ``auto``, ``fused`` and ``graph`` on the CPU emulator. A path may decline
(the core runs) or refuse by name an option it does not have (graph and the projection); it may never differ.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayrnn as ar
from arrayrnn._backends import numpy as numpy_backend
from arrayrnn.backend import map_arrays
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.support import random_params, tolerance

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
OPTIONAL = {
    "rnn": ("bias_ih", "bias_hh"),
    "gru": ("bias_ih", "bias_hh"),
    "lstm": ("bias_ih", "bias_hh", "peephole_i", "peephole_f", "peephole_o", "weight_hr"),
}
#: the NumPy backend's drivers, each forced for any batch size
NUMPY_ENGINES = ("loop", "numba feature-major", "numba batch-major", "numba batch-major split")
CUPY_IMPLS = ("auto", "fused", "graph")


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    features, hidden = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    keep = {name: draw(st.booleans()) for name in OPTIONAL[kind]}
    proj_size = draw(st.integers(1, hidden - 1)) if keep.get("weight_hr") else 0
    lengths = draw(st.none() | st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
    reverse = draw(st.booleans())
    if kind == "rnn":
        options = {"nonlinearity": draw(st.sampled_from(["tanh", "relu"]))}
    elif kind == "lstm":
        options = {"coupled": draw(st.booleans()), "clip": draw(st.sampled_from([None, 0.8, 3.0]))}
    else:
        options = {"linear_before_reset": draw(st.booleans())}
    seed = draw(st.integers(0, 2**16))
    extra = {"peepholes": True, "proj_size": proj_size} if kind == "lstm" else {}
    params = random_params(kind, features, hidden, seed=seed, dtype=dtype, **extra)
    params = dataclasses.replace(params, **{name: None for name, kept in keep.items() if not kept})
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    state = [rng.standard_normal((batch, getattr(params, "output_size", hidden))).astype(dtype)]
    if kind == "lstm":
        state.append(rng.standard_normal((batch, hidden)).astype(dtype))
    return kind, params, x, tuple(state), lengths, reverse, options


def _public_state(kind, state):
    return tuple(state) if kind == "lstm" else state[0]


def _numpy_engine(monkeypatch, engine):
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0" if engine == "loop" else "1")
    batch_major = engine.startswith("numba batch-major")
    monkeypatch.setattr(numpy_backend, "ROWS_MIN_BATCH", 1 if batch_major else 1 << 30)
    monkeypatch.setattr(numpy_backend, "ROWS_MAX_SMALL_BATCH", 0)
    monkeypatch.setattr(numpy_backend, "ROWS_MAX_SMALL_PRODUCT", 0)
    monkeypatch.setattr(numpy_backend, "ROWS_PER_THREAD", 1)
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "2" if engine.endswith("split") else "1")


def _assert_same(got, want, dtype, steps, what):
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else tolerance(dtype, steps)
    got_y, got_final = got
    want_y, want_final = want
    assert np.asarray(got_y).dtype == np.dtype(dtype), what
    np.testing.assert_allclose(np.asarray(got_y), want_y, err_msg=what, **tol)
    assert len(got_final) == len(want_final), what
    for got_part, want_part in zip(got_final, want_final):
        np.testing.assert_allclose(np.asarray(got_part), want_part, err_msg=what, **tol)


def _cupy_hook(kind, params, x, state, lengths, reverse, options, impl):
    """The CuPy hook (``_backends/cupy.sequence``, what ``_dispatch`` calls) on the emulator; ``None``: declined."""
    from arrayrnn._backends import cupy as cupy_hook

    fake_lengths = None if lengths is None else fake_cupy.asfake(np.asarray(lengths, dtype=np.int64))
    return cupy_hook.sequence(
        kind,
        None,
        fake_cupy.asfake(x),
        map_arrays(fake_cupy.asfake, params),
        tuple(fake_cupy.asfake(s) for s in state),
        fake_lengths,
        reverse,
        dict(options),
        impl=impl,
    )


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(problem=problems())
def test_every_path_equals_the_core_whichever_optional_fields_are_none(problem):
    kind, params, x, state, lengths, reverse, options = problem
    dtype, steps = x.dtype.name, x.shape[0]
    call = {"lengths": lengths, "reverse": reverse, **options}
    described = f"{kind} {dtype} fields={sorted(params.arrays())} lengths={lengths} reverse={reverse} {options}"
    want = FUNCTIONS[kind](x, params, _public_state(kind, state), impl="generic", **call)
    want = (want[0], want[1] if kind == "lstm" else (want[1],))
    saved_numba = os.environ.get("ARRAYRNN_NUMBA")
    for engine in NUMPY_ENGINES:
        if engine != "loop" and numpy_backend.compiled_kernels() is None:
            continue  # numba not installed
        with pytest.MonkeyPatch.context() as monkeypatch:
            _numpy_engine(monkeypatch, engine)
            got = FUNCTIONS[kind](x, params, _public_state(kind, state), impl="auto", **call)
        got = (got[0], got[1] if kind == "lstm" else (got[1],))
        _assert_same(got, want, dtype, steps, f"numpy {engine}: {described}")
    assert os.environ.get("ARRAYRNN_NUMBA") == saved_numba
    if cuda_emulator.compiler() is None:
        return
    with pytest.MonkeyPatch.context() as monkeypatch, fake_cupy.installed(monkeypatch) as fake:
        for impl in CUPY_IMPLS:
            try:
                got = _cupy_hook(kind, params, x, state, lengths, reverse, options, impl)
            except ValueError as refusal:  # a named path refuses an option it does not have, by name
                assert impl != "auto" and params.weight_hr is not None and "projection" in str(refusal), refusal
                continue
            if got is not None:
                _assert_same(got, want, dtype, steps, f"cupy {impl}: {described}")
        assert fake.captures_open == 0


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("dropped", ["bias_ih", "bias_hh"])
def test_one_bias_alone_on_numpy(monkeypatch, kind, dtype, numba, dropped):
    """The reported cases: the NumPy loop dropped ``bias_hh`` when ``bias_ih`` was ``None`` and crashed the other
    way round."""
    monkeypatch.setenv("ARRAYRNN_NUMBA", numba)
    params = dataclasses.replace(random_params(kind, 3, 4, seed=2, dtype=dtype), **{dropped: None})
    x = np.random.default_rng(2).standard_normal((5, 3, 3)).astype(dtype)
    y, _ = FUNCTIONS[kind](x, params)
    y_generic, _ = FUNCTIONS[kind](x, params, impl="generic")
    np.testing.assert_allclose(y, y_generic, **tolerance(dtype, 5))


@pytest.mark.parametrize("kept", ["peephole_i", "peephole_f", "peephole_o"])
def test_one_peephole_alone_on_numpy_and_explain_says_where_it_runs(monkeypatch, kept):
    """Only ``peephole_f`` set: the numba kernels (which have no peepholes) ran and ignored it."""
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    params = random_params("lstm", 3, 4, seed=3, dtype="float32", peepholes=True)
    params = dataclasses.replace(params, **{name: None for name in OPTIONAL["lstm"][2:5] if name != kept})
    x = np.random.default_rng(3).standard_normal((5, 3, 3)).astype("float32")
    y, _ = ar.lstm(x, params)
    np.testing.assert_allclose(y, ar.lstm(x, params, impl="generic")[0], **tolerance("float32", 5))
    if numpy_backend.compiled_kernels() is not None:
        assert ar.explain(ar.lstm, x, params) == f"numpy: NumPy loop ({kept}: not in the numba kernels)"
