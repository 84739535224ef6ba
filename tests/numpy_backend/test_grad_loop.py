"""The NumPy gradient loop (``_backends/numpy/grad_loop.py``) behind ``ar.vjp`` on NumPy arrays.

Oracles: torch autograd through the published equations (``tests/torch_grad_oracle.py``, float64) and ``torch.nn``
(float32, stacks), plus the recording core (``impl="generic"``) as the semantics. Every test checks that the loop
actually ran (or declined) through a spy on the hook; tests taking ``engine`` run the pure-NumPy loop
(``ARRAYRNN_NUMBA=0``) and the numba backward kernels (LSTM without peepholes/projection, GRU linear before reset);
float32 LSTM without peepholes/projection/clip runs the whole-sequence kernels (tests ``test_fused_*``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends.numpy import grad_loop
from tests import torch_grad_oracle as oracle
from tests.conftest import need
from tests.support import random_params

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 3

# (id, kind, init options, call options)
CONFIGS = [
    ("rnn-tanh", "rnn", {}, {}),
    ("rnn-relu", "rnn", {}, {"nonlinearity": "relu"}),
    ("rnn-nobias", "rnn", {"bias": False}, {}),
    ("gru", "gru", {}, {}),
    ("gru-lbr-false", "gru", {}, {"linear_before_reset": False}),
    ("gru-nobias", "gru", {"bias": False}, {}),
    ("gru-lbr-false-nobias", "gru", {"bias": False}, {"linear_before_reset": False}),
    ("lstm", "lstm", {}, {}),
    ("lstm-nobias", "lstm", {"bias": False}, {}),
    ("lstm-coupled", "lstm", {}, {"coupled": True}),
    ("lstm-clip", "lstm", {}, {"clip": 0.6}),
    ("lstm-peepholes", "lstm", {"peepholes": True}, {}),
    ("lstm-projection", "lstm", {"proj_size": 2}, {}),
    ("lstm-all", "lstm", {"peepholes": True, "proj_size": 3}, {"coupled": True, "clip": 0.8}),
    ("lstm-peepholes-clip", "lstm", {"peepholes": True}, {"clip": 0.5}),
]
IDS = [c[0] for c in CONFIGS]
LENGTHS = {"full": None, "with-0-and-T": [STEPS, 0, 3], "all-short": [2, 4, 1]}


@pytest.fixture(params=["numpy", "numba"])
def engine(request, monkeypatch):
    """The pure-NumPy loop, or the numba kernels where the call has them (needs numba)."""
    if request.param == "numba":
        need("numba")
        monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
        assert grad_loop.compiled_kernels() is not None
    else:
        monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    return request.param


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls the gradient loop ran (``ran``) and declined (``declined``)."""
    counts = {"ran": 0, "declined": 0}
    original = grad_loop.sequence_vjp

    def counting(*args, **kwargs):
        result = original(*args, **kwargs)
        counts["declined" if result is None else "ran"] += 1
        return result

    monkeypatch.setattr(grad_loop, "sequence_vjp", counting)
    return counts


def _params(kind, init, dtype="float64", seed=2):
    return random_params(kind, INPUT, HIDDEN, seed=seed, dtype=dtype, **init)


def _inputs(kind, params, dtype, rng, steps=STEPS, batch=BATCH):
    out = params.output_size if kind == "lstm" else params.hidden_size
    x = rng.standard_normal((steps, batch, INPUT)).astype(dtype)
    h = rng.standard_normal((batch, out)).astype(dtype)
    state = (h, rng.standard_normal((batch, params.hidden_size)).astype(dtype)) if kind == "lstm" else h
    dy = rng.standard_normal((steps, batch, out)).astype(dtype)
    d_final = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state) if kind == "lstm" else (
        rng.standard_normal(h.shape).astype(dtype))  # fmt: skip
    return x, state, (dy, d_final)


def _leaves(tree):
    if tree is None:
        return []
    if isinstance(tree, (tuple, list)):
        return [leaf for part in tree for leaf in _leaves(part)]
    if dataclasses.is_dataclass(tree):
        return [leaf for f in dataclasses.fields(tree) for leaf in _leaves(getattr(tree, f.name))]
    return [np.asarray(tree)]


def _assert_same(ours, theirs, rtol, atol):
    a, b = _leaves(ours), _leaves(theirs)
    assert len(a) == len(b)
    for left, right in zip(a, b):
        assert left.shape == right.shape and left.dtype == right.dtype
        np.testing.assert_allclose(left, right, rtol=rtol, atol=atol)


def _vjp(kind, x, params, state, cotangent, **options):
    out, pullback = ar.vjp(FUNCTIONS[kind], x, params, state, **options)
    return out, pullback(cotangent)


def _compare_oracle(grads, expected, params, rtol, atol):
    dx, dparams, dstate = grads
    np.testing.assert_allclose(dx, expected["x"], rtol=rtol, atol=atol)
    states = list(dstate) if isinstance(dstate, tuple) else [dstate]
    for ours, theirs in zip(states, expected["state"]):
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is None:
            assert getattr(dparams, f.name) is None
        else:
            np.testing.assert_allclose(getattr(dparams, f.name), expected[f"params.{f.name}"], rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# one layer, float64: the core (rtol 1e-10) and torch autograd through the equations


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
@pytest.mark.parametrize("name, kind, init, options", CONFIGS, ids=IDS)
def test_float64_matches_core_and_torch(spy, engine, name, kind, init, options, lengths, reverse):
    torch = need("torch")
    del torch
    params = _params(kind, init)
    x, state, cotangent = _inputs(kind, params, np.float64, np.random.default_rng(7))
    call = dict(lengths=lengths, reverse=reverse, **options)
    out, grads = _vjp(kind, x, params, state, cotangent, **call)
    assert spy == {"ran": 1, "declined": 0}
    core_out, core_grads = _vjp(kind, x, params, state, cotangent, impl="generic", **call)
    assert spy["ran"] == 1  # impl="generic" never asks the hook
    _assert_same(out, core_out, rtol=1e-10, atol=1e-12)
    _assert_same(grads, core_grads, rtol=1e-10, atol=1e-12)
    expected = oracle.equation_grads(kind, params, x, state, cotangent, lengths=lengths, reverse=reverse, **options)
    _compare_oracle(grads, expected, params, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name, kind, init, options", CONFIGS, ids=IDS)
def test_float32_matches_core(spy, engine, name, kind, init, options):
    params = _params(kind, init, dtype="float32")
    x, state, cotangent = _inputs(kind, params, np.float32, np.random.default_rng(3), steps=7, batch=6)
    call = dict(lengths=[7, 0, 4, 7, 1, 6], reverse=True, **options)
    out, grads = _vjp(kind, x, params, state, cotangent, **call)
    assert spy == {"ran": 1, "declined": 0}
    core_out, core_grads = _vjp(kind, x, params, state, cotangent, impl="generic", **call)
    _assert_same(out, core_out, rtol=1e-5, atol=1e-5)
    _assert_same(grads, core_grads, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [None, [5, 1, 3, 5]], ids=["full", "lengths"])  # torch packs no 0
@pytest.mark.parametrize("kind, init", [("rnn", {}), ("gru", {}), ("lstm", {}), ("lstm", {"proj_size": 2})],
                         ids=["rnn", "gru", "lstm", "lstm-projection"])  # fmt: skip
def test_float32_matches_torch_nn(spy, engine, kind, init, lengths):
    need("torch")
    params = _params(kind, init, dtype="float32")
    x, state, cotangent = _inputs(kind, params, np.float32, np.random.default_rng(4), batch=4)
    _, grads = _vjp(kind, x, params, state, cotangent, lengths=lengths)
    assert spy["ran"] == 1
    expected = oracle.layer_grads(kind, params, x, state, cotangent, lengths=lengths, dtype=np.float32)
    _compare_oracle(grads, expected, params, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# layouts, missing state and cotangents, padding, repeated pullbacks


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_batch_first_unbatched_and_no_state(spy, engine, kind):
    params = _params(kind, {"proj_size": 2} if kind == "lstm" else {})
    x, state, (dy, d_final) = _inputs(kind, params, np.float64, np.random.default_rng(5))
    cases = [
        ((np.swapaxes(x, 0, 1).copy(), params, state), {"batch_first": True, "lengths": [5, 2, 0]},
         (np.swapaxes(dy, 0, 1).copy(), d_final)),
        ((x[:, 0], params), {"reverse": True}, (dy[:, 0], None)),
        ((x, params), {"lengths": [1, 5, 3]}, (None, d_final)),
    ]  # fmt: skip
    for args, options, cotangent in cases:
        out, pullback = ar.vjp(FUNCTIONS[kind], *args, **options)
        core_out, core_pullback = ar.vjp(FUNCTIONS[kind], *args, impl="generic", **options)
        _assert_same(out, core_out, rtol=1e-10, atol=1e-12)
        first = pullback(cotangent)
        _assert_same(first, core_pullback(cotangent), rtol=1e-10, atol=1e-12)
        _assert_same(pullback(cotangent), first, rtol=0, atol=0)  # the pullback may run again
    assert spy == {"ran": len(cases), "declined": 0}


NAN_CASES = [("rnn", {}), ("gru", {}), ("gru", {"linear_before_reset": False}), ("lstm", {"clip": 0.5})]


@pytest.mark.parametrize("kind, options", NAN_CASES, ids=["rnn", "gru", "gru-lbr-false", "lstm"])
def test_nan_padding_does_not_leak(spy, engine, kind, options):
    params = _params(kind, {"peepholes": True, "proj_size": 2} if kind == "lstm" else {})
    x, state, cotangent = _inputs(kind, params, np.float64, np.random.default_rng(6))
    lengths = [5, 2, 0]
    x = x.copy()
    x[2:, 1] = np.nan
    x[:, 2] = np.nan
    for reverse in (False, True):
        out, grads = _vjp(kind, x, params, state, cotangent, lengths=lengths, reverse=reverse, **options)
        core = _vjp(kind, x, params, state, cotangent, lengths=lengths, reverse=reverse, impl="generic", **options)
        assert all(np.isfinite(leaf).all() for leaf in _leaves(grads))
        _assert_same((out, grads), core, rtol=1e-10, atol=1e-12)
    assert spy["ran"] == 2


def test_inputs_are_not_written(spy):
    params = _params("lstm", {"peepholes": True})
    x, state, cotangent = _inputs("lstm", params, np.float64, np.random.default_rng(8))
    for array in (x, *state, cotangent[0], *cotangent[1]):
        array.flags.writeable = False
    _vjp("lstm", x, params, state, cotangent, lengths=[5, 1, 3])
    assert spy["ran"] == 1


# ----------------------------------------------------------------------------------------------
# stacks through model.apply


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_model_apply_matches_torch_and_core(spy, engine, kind, dtype):
    need("torch")
    extra = {"proj_size": 2} if kind == "lstm" else {}
    cls = {"rnn": ar.RNN, "gru": ar.GRU, "lstm": ar.LSTM}[kind]
    model = cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, seed=1, dtype=dtype, **extra)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, STEPS, INPUT)).astype(dtype)
    lengths = [5, 3, 1, 5]
    out, pullback = ar.vjp(model.apply, model.params, x, lengths=lengths)
    assert spy == {"ran": 4, "declined": 0}
    y, final = out
    dy = rng.standard_normal(y.shape).astype(dtype)
    d_final = tuple(rng.standard_normal(f.shape).astype(dtype) for f in final) if kind == "lstm" else (
        rng.standard_normal(final.shape).astype(dtype))  # fmt: skip
    dparams, dx = pullback((dy, d_final))
    core_out, core_pullback = ar.vjp(model.apply, model.params, x, lengths=lengths, impl="generic")
    tol = 1e-10 if dtype == "float64" else 1e-5
    _assert_same(out, core_out, rtol=tol, atol=tol)
    _assert_same((dparams, dx), core_pullback((dy, d_final)), rtol=tol, atol=tol)
    zero_state = np.zeros((4, 4, HIDDEN), dtype=dtype)
    state = (np.zeros((4, 4, 2), dtype=dtype), zero_state) if kind == "lstm" else zero_state
    expected = oracle.model_grads(model, x, state, (dy, d_final), lengths=lengths, dtype=np.dtype(dtype).type)
    loose = {"rtol": 1e-9, "atol": 1e-10} if dtype == "float64" else {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(dx, expected["x"], **loose)
    for layer in range(2):
        for direction, suffix in enumerate(["", "_reverse"]):
            for f in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") + (("weight_hr",) if kind == "lstm" else ()):
                np.testing.assert_allclose(getattr(dparams[layer][direction], f), expected[f"{f}_l{layer}{suffix}"],
                                           **loose)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# what it declines, and what ar.explain says


def test_explain_names_the_path(monkeypatch):
    params = _params("gru", {})
    x = np.zeros((STEPS, 2, INPUT))
    monkeypatch.setenv("ARRAYRNN_NUMBA", "0")
    assert ar.explain(ar.vjp, ar.gru, x, params) == "numpy: NumPy gradient loop (B = 2, NumPy ufuncs: ARRAYRNN_NUMBA=0)"
    need("numba")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    said = ar.explain(ar.vjp, ar.gru, x, params)
    kernels = "numba whole-sequence kernels for float32 (float64: numba backward kernels)"
    assert said == f"numpy: NumPy gradient loop (B = 2, {kernels})"
    said = ar.explain(ar.vjp, ar.gru, x, params, linear_before_reset=False)
    assert said.endswith("(B = 2, NumPy ufuncs: linear_before_reset=False not in the numba kernels)")
    lstm_params = _params("lstm", {"proj_size": 2})
    assert "weight_hr not in the numba kernels" in ar.explain(ar.vjp, ar.lstm, x, lstm_params)
    assert ar.explain(ar.vjp, ar.gru, x, params, impl="generic").startswith("generic: impl='generic'")
    assert ar.explain(ar.gru, x, params).startswith("numpy: NumPy loop")  # the forward path is unchanged


DECLINED = [
    ("float16", "gru", {}, {}, "float16", "float16 is not supported"),
    ("mask", "rnn", {}, {"mask": [[True, False, True]] * STEPS}, "float64", "mask="),
    ("layer-norm", "lstm", {"layer_norm": True}, {}, "float64", "layer_norm"),
    ("greff", "lstm", {"peepholes": True}, {"input_gate": False}, "float64", "input_gate=False"),
    ("full-gate-recurrence", "lstm", {"gate_recurrence": True}, {}, "float64", "weight_gg"),
    ("zoneout", "gru", {}, {"zoneout": 0.3, "train": True, "seed": 0}, "float64", "zoneout"),
]


@pytest.mark.parametrize("name, kind, init, options, dtype, reason", DECLINED, ids=[d[0] for d in DECLINED])
def test_declines_to_the_core(spy, name, kind, init, options, dtype, reason):
    params = _params(kind, init, dtype=dtype)
    x, _, (dy, _) = _inputs(kind, params, np.dtype(dtype), np.random.default_rng(1))
    state, cotangent = None, (dy, None)  # no state: weight_gg's state has a third part
    said = ar.explain(ar.vjp, FUNCTIONS[kind], x, params, state, **options)
    assert said.startswith("generic: ") and reason in said, said
    out, grads = _vjp(kind, x, params, state, cotangent, **options)
    assert spy == {"ran": 0, "declined": 1}
    core_out, core_grads = _vjp(kind, x, params, state, cotangent, impl="generic", **options)
    _assert_same((out, grads), (core_out, core_grads), rtol=0, atol=0)  # the core itself ran


def test_large_batches_decline_to_the_core(spy):
    from arrayrnn._backends.numpy import grad_loop

    params = _params("gru", {}, dtype="float32")
    x = np.ones((2, grad_loop.MAX_BATCH + 1, params.input_size), np.float32)
    # the per-step loop (here: GRU without linear before reset) keeps the bound; whole-sequence kernels have none
    said = ar.explain(ar.vjp, ar.gru, x, params, linear_before_reset=False)
    assert said.startswith(f"generic: B = {grad_loop.MAX_BATCH + 1} > {grad_loop.MAX_BATCH}"), said
    ar.vjp(ar.gru, x, params, linear_before_reset=False)
    assert spy == {"ran": 0, "declined": 1}


# ----------------------------------------------------------------------------------------------
# float32 LSTM, GRU and RNN on the whole-sequence kernels: slices of rows, batches above MAX_BATCH, separate tapes


def _fused_case(batch, seed=11, steps=6, kind="lstm", **init):
    params = _params(kind, init, dtype="float32", seed=seed)
    x, state, cotangent = _inputs(kind, params, np.float32, np.random.default_rng(seed), steps=steps, batch=batch)
    return params, x, state, cotangent


FUSED_CASES = {
    "lstm-B1": ("lstm", 1, None, {}),
    "lstm-B1-reverse-coupled": ("lstm", 1, [4], {"reverse": True, "coupled": True}),
    "lstm-B6-lengths": ("lstm", 6, [6, 0, 4, 6, 1, 5], {"reverse": True}),
    "lstm-B7-coupled-lengths": ("lstm", 7, [1, 6, 6, 0, 3, 2, 6], {"coupled": True}),
    "rnn-B1": ("rnn", 1, None, {}),
    "rnn-B6-relu-lengths": ("rnn", 6, [6, 2, 4, 6, 1, 5], {"nonlinearity": "relu"}),
    "rnn-B7-reverse-lengths": ("rnn", 7, [1, 6, 6, 0, 3, 2, 6], {"reverse": True}),
    "rnn-B5-nobias": ("rnn", 5, [3, 6, 6, 1, 2], {"bias": False}),
    "gru-B1": ("gru", 1, None, {}),
    "gru-B6-lengths": ("gru", 6, [6, 2, 4, 6, 1, 5], {}),
    "gru-B7-reverse-lengths": ("gru", 7, [1, 6, 6, 0, 3, 2, 6], {"reverse": True}),
    "gru-B5-nobias": ("gru", 5, [3, 6, 6, 1, 2], {"bias": False}),
}


@pytest.mark.parametrize("slices", [1, 3], ids=["one-slice", "three-slices"])
@pytest.mark.parametrize("case", list(FUSED_CASES), ids=list(FUSED_CASES))
def test_fused_matches_core_and_torch(spy, monkeypatch, case, slices):
    need("numba")
    need("torch")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    kind, batch, lengths, options = FUSED_CASES[case]
    init = {"bias": options.pop("bias")} if "bias" in options else {}
    params, x, state, cotangent = _fused_case(batch, kind=kind, **init)
    assert grad_loop.fused_kernels(kind, x.dtype, params, options) is not None
    used = []
    original = grad_loop._slices

    def split(b):
        bounds = sorted({0, b, *(b * k // slices for k in range(1, slices))})
        used.append(len(bounds) - 1)
        return list(zip(bounds[:-1], bounds[1:]))

    monkeypatch.setattr(grad_loop, "_slices", split if slices > 1 else original)
    out, grads = _vjp(kind, x, params, state, cotangent, lengths=lengths, **options)
    assert spy == {"ran": 1, "declined": 0}
    assert slices == 1 or used == [min(slices, batch)]  # the backward runs the same slices
    core_out, core_grads = _vjp(kind, x, params, state, cotangent, impl="generic", lengths=lengths, **options)
    _assert_same(out, core_out, rtol=1e-5, atol=1e-5)
    _assert_same(grads, core_grads, rtol=1e-5, atol=1e-5)
    if options or (lengths is not None and min(lengths) == 0):
        return  # the torch oracle runs the defaults (no reversed, coupled or relu layer) and packs no empty sequence
    expected = oracle.layer_grads(kind, params, x, state, cotangent, lengths=lengths, dtype=np.float32)
    _compare_oracle(grads, expected, params, rtol=1e-4, atol=1e-5)


def test_fused_kernels_split_rows_as_row_threads_says(monkeypatch):
    need("numba")
    from arrayrnn._backends.numpy import openblas

    assert grad_loop._slices(64) == [(0, 64)]  # the default: one slice, on the caller's BLAS threads
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "3")
    bounds = grad_loop._slices(30)
    assert bounds == [(0, 10), (10, 20), (20, 30)]
    assert grad_loop._slices(20) == [(0, 10), (10, 20)]  # at least ROWS_PER_SLICE rows each
    assert grad_loop._slices(7) == [(0, 7)]
    threads = None if openblas.get_num_threads is None else openblas.get_num_threads()
    for kind in ("lstm", "rnn", "gru"):
        params, x, state, cotangent = _fused_case(30, steps=3, kind=kind)
        out, grads = _vjp(kind, x, params, state, cotangent)
        _assert_same((out, grads), _vjp(kind, x, params, state, cotangent, impl="generic"), rtol=1e-5, atol=1e-5)
    if threads is not None:
        assert openblas.get_num_threads() == threads  # the caller's count is back
    monkeypatch.setenv("ARRAYRNN_ROW_THREADS", "0")
    with pytest.raises(ValueError, match="ARRAYRNN_ROW_THREADS must be a positive integer"):
        grad_loop._slices(30)


@pytest.mark.parametrize("small", [True, False], ids=["one-blas-thread", "callers-blas-threads"])
def test_fused_kernels_give_back_the_blas_thread_count(monkeypatch, small):
    need("numba")
    from arrayrnn._backends.numpy import openblas

    if openblas.get_num_threads is None:
        pytest.skip("another BLAS than NumPy's OpenBLAS: no thread count to restore")
    # tiny products run on one BLAS thread, larger ones on the caller's: both branches at this test's small sizes
    monkeypatch.setattr(openblas, "small_product", lambda *shape: small)
    monkeypatch.setattr(openblas, "small_call", lambda *shape: small)
    threads = openblas.get_num_threads()
    for batch in (1, 20, 64):
        for kind in ("lstm", "rnn", "gru"):
            params, x, state, cotangent = _fused_case(batch, steps=3, kind=kind)
            out, grads = _vjp(kind, x, params, state, cotangent)
            core = _vjp(kind, x, params, state, cotangent, impl="generic")
            _assert_same((out, grads), core, rtol=1e-5, atol=1e-5)
            assert openblas.get_num_threads() == threads  # the caller's count is back


@pytest.mark.parametrize("kind", ["lstm", "rnn", "gru"])
def test_fused_above_max_batch_and_nan_padding(spy, monkeypatch, kind):
    need("numba")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    batch = grad_loop.MAX_BATCH + 5
    params, x, state, cotangent = _fused_case(batch, steps=4, kind=kind)
    rng = np.random.default_rng(12)
    lengths = rng.integers(0, 5, size=batch)
    x = x.copy()
    for b, length in enumerate(lengths):
        x[length:, b] = np.nan  # padding must not reach any gradient
    function = FUNCTIONS[kind]
    said = ar.explain(ar.vjp, function, x, params, state)
    assert said == f"numpy: NumPy gradient loop (B = {batch}, {grad_loop.engine(kind, params, {})})", said
    assert "whole-sequence kernels" in said
    for reverse in (False, True):
        out, grads = _vjp(kind, x, params, state, cotangent, lengths=lengths, reverse=reverse)
        core = _vjp(kind, x, params, state, cotangent, lengths=lengths, reverse=reverse, impl="generic")
        assert all(np.isfinite(leaf).all() for leaf in _leaves(grads))
        _assert_same((out, grads), core, rtol=1e-5, atol=1e-5)
    assert spy == {"ran": 2, "declined": 0}
    # float64 keeps the bound (its per-step loop measured no faster than the core there), as does the LSTM's clip
    said = ar.explain(ar.vjp, function, x.astype(np.float64), _params(kind, {}, seed=11))
    assert said.startswith(f"generic: B = {batch} > {grad_loop.MAX_BATCH}"), said
    if kind == "lstm":
        said = ar.explain(ar.vjp, function, x, params, clip=0.5)
        assert said.startswith(f"generic: B = {batch} > {grad_loop.MAX_BATCH}"), said


def test_fused_lstm_calls_keep_their_own_tape(monkeypatch):
    need("numba")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    params, x1, state1, cot1 = _fused_case(5)
    _, x2, state2, cot2 = _fused_case(5, seed=12)
    lengths1 = [6, 2, 6, 0, 4]
    for array in (x1, *state1, cot1[0], *cot1[1]):
        array.flags.writeable = False  # inputs are never written

    def core(x, state, cot, lengths):
        return _vjp("lstm", x, params, state, cot, lengths=lengths, impl="generic")

    # the first call's pullback alive while a second call of the same shape runs and pulls back
    out1, pull1 = ar.vjp(ar.lstm, x1, params, state1, lengths=lengths1)
    out2, pull2 = ar.vjp(ar.lstm, x2, params, state2)
    grads2 = pull2(cot2)
    grads1 = pull1(cot1)
    _assert_same((out1, grads1), core(x1, state1, cot1, lengths1), rtol=1e-5, atol=1e-5)
    _assert_same((out2, grads2), core(x2, state2, cot2, None), rtol=1e-5, atol=1e-5)
    kept = [np.array(leaf) for leaf in _leaves((out1, grads1))]
    _assert_same(pull1(cot1), grads1, rtol=0, atol=0)  # the pullback may run again
    del pull1, pull2
    out3, pull3 = ar.vjp(ar.lstm, x2, params, state2)
    _assert_same((out3, pull3(cot2)), (out2, grads2), rtol=0, atol=0)
    for before, after in zip(kept, _leaves((out1, grads1))):  # what the first call returned stays as it was
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_fused_pullback_from_several_threads(kind, monkeypatch):
    need("numba")
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    params, x, state, cotangent = _fused_case(20, steps=5, kind=kind)
    out, pullback = ar.vjp(FUNCTIONS[kind], x, params, state, lengths=[5, 3] * 10)
    expected = pullback(cotangent)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: pullback(cotangent), range(6)))
    for result in results:
        _assert_same(result, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dropped", ["bias_ih", "bias_hh"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_fused_with_one_bias(spy, monkeypatch, kind, dropped):
    """Each bias is optional on its own: the missing one gets no gradient, the other the core's."""
    need("numba")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    params, x, state, cotangent = _fused_case(5, kind=kind)
    params = dataclasses.replace(params, **{dropped: None})
    assert grad_loop.fused_kernels(kind, x.dtype, params, {}) is not None
    out, grads = _vjp(kind, x, params, state, cotangent, lengths=[6, 2, 0, 5, 6])
    assert spy == {"ran": 1, "declined": 0}
    assert getattr(grads[1], dropped) is None
    core = _vjp(kind, x, params, state, cotangent, lengths=[6, 2, 0, 5, 6], impl="generic")
    _assert_same((out, grads), core, rtol=1e-5, atol=1e-5)
