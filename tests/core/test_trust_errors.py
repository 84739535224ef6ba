"""Inputs that used to give unclear errors, warnings or silently wrong results now get a clear answer.

Each case names the argument and what was expected (``ValueError``/``TypeError``), or simply works where the call
was valid all along (an empty batch with ``lengths=[]``, a ``clip`` beyond float32's range, a NumPy-scalar learning
rate).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends import numpy as numpy_backend
from tests.support import random_params

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}


@pytest.fixture
def case():
    params = random_params("lstm", 3, 4, seed=0, dtype="float32")
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    return x, params


def _matrix(array):
    with warnings.catch_warnings():  # np.matrix itself warns that it is deprecated
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(array)


# ----------------------------------------------------------------------------------------------
# lengths


def test_lengths_beyond_int64_are_a_value_error_naming_lengths(case):
    x, params = case
    with pytest.raises(
        ValueError, match=r"lengths must lie in \[0, T=5\], got values from 1 to 1180591620717411303424"
    ):
        ar.lstm(x, params, lengths=[2**70, 1])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=5\], got values from -1180591620717411303424"):
        ar.lstm(x, params, lengths=(-(2**70), 1))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=5\]"):
        ar.vjp(ar.lstm, x, params, lengths=[2**70, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(2,\), got \(3,\)"):
        ar.lstm(x, params, lengths=[2**70, 1, 1])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["auto", "generic"])
@pytest.mark.parametrize("lengths", [[], (), np.zeros(0, dtype=np.int64)], ids=["list", "tuple", "array"])
def test_an_empty_batch_takes_empty_lengths(kind, impl, lengths):
    """B = 0 runs (an empty result); its lengths, of shape (0,), are as valid as lengths=None."""
    params = random_params(kind, 3, 4, seed=0, dtype="float32")
    x = np.zeros((5, 0, 3), "float32")
    y, final = FUNCTIONS[kind](x, params, lengths=lengths, impl=impl)
    y_none, final_none = FUNCTIONS[kind](x, params, impl=impl)
    assert y.shape == y_none.shape == (5, 0, 4)
    for got, want in zip(final if kind == "lstm" else (final,), final_none if kind == "lstm" else (final_none,)):
        assert got.shape == want.shape == (0, 4)
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(0,\), got \(1,\)"):
        FUNCTIONS[kind](x, params, lengths=[0], impl=impl)


# ----------------------------------------------------------------------------------------------
# NumPy array subclasses whose meaning would be dropped


def test_masked_x_is_refused_with_what_to_pass_instead(case):
    x, params = case
    masked = np.ma.masked_array(x, mask=x > 1)
    message = r"x is a numpy.ma.MaskedArray, whose mask arrayrnn would ignore; pass x.filled\(0\).*lengths="
    with pytest.raises(TypeError, match=message):
        ar.lstm(masked, params)
    with pytest.raises(TypeError, match=message):
        ar.explain(ar.lstm, masked, params)
    with pytest.raises(TypeError, match=message):
        ar.vjp(ar.lstm, masked, params)
    with pytest.raises(TypeError, match=r"x is a numpy.ma.MaskedArray.*np.asarray\(x\)"):
        ar.lstm_cell(masked[0], (np.zeros((2, 4), "float32"),) * 2, params)
    with pytest.raises(TypeError, match=r"x is a numpy.ma.MaskedArray"):
        ar.LSTM.from_params(((params,),))(masked)


def test_masked_state_params_and_lengths_are_refused(case):
    x, params = case
    h = np.ma.masked_array(np.zeros((2, 4), "float32"))
    with pytest.raises(TypeError, match=r"state\[0\] \(h\) is a numpy.ma.MaskedArray.*np.asarray\(state\[0\] \(h\)\)"):
        ar.lstm(x, params, (h, np.zeros((2, 4), "float32")))
    with pytest.raises(TypeError, match=r"h is a numpy.ma.MaskedArray"):
        ar.gru_cell(x[0], h, random_params("gru", 3, 4, seed=0, dtype="float32"))
    masked_params = dataclasses.replace(params, bias_hh=np.ma.masked_array(params.bias_hh, mask=params.bias_hh > 0))
    with pytest.raises(TypeError, match=r"params.bias_hh is a numpy.ma.MaskedArray"):
        ar.lstm(x, masked_params)
    with pytest.raises(TypeError, match=r"lengths is a numpy.ma.MaskedArray"):
        ar.lstm(x, params, lengths=np.ma.masked_array([5, 3], mask=[False, True]))


def test_np_matrix_is_refused_with_what_to_pass_instead(case):
    x, params = case
    message = r"x is a numpy.matrix .*; pass a plain array: np.asarray\(x\)"
    with pytest.raises(TypeError, match=message):
        ar.lstm(_matrix(x[:, 0]), params)  # unbatched (T, I)
    with pytest.raises(TypeError, match=message):
        ar.lstm_cell(_matrix(x[0]), (np.zeros((2, 4), "float32"),) * 2, params)
    with pytest.raises(TypeError, match=r"state\[1\] \(c\) is a numpy.matrix"):
        ar.lstm(x, params, (np.zeros((2, 4), "float32"), _matrix(np.zeros((2, 4), "float32"))))
    with pytest.raises(TypeError, match=r"params.weight_hh is a numpy.matrix"):
        ar.lstm(x, dataclasses.replace(params, weight_hh=_matrix(params.weight_hh)))


# ----------------------------------------------------------------------------------------------
# clip beyond the dtype's range


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("batch", [2, 64])
def test_clip_beyond_float32_warns_nothing_and_clips_at_the_largest_float32(monkeypatch, case, numba, batch):
    monkeypatch.setenv("ARRAYRNN_NUMBA", numba)
    _, params = case
    x = np.random.default_rng(1).standard_normal((5, batch, 3)).astype("float32") * 100
    largest = float(np.finfo(np.float32).max)
    state = (np.zeros((batch, 4), "float32"), np.zeros((batch, 4), "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for impl in ("auto", "generic"):
            y, final = ar.lstm(x, params, clip=1e300, impl=impl)
            y_max, final_max = ar.lstm(x, params, clip=largest, impl=impl)
            np.testing.assert_array_equal(y, y_max)
            np.testing.assert_array_equal(final[1], final_max[1])
            y_inf, _ = ar.lstm(x, params, clip=float("inf"), impl=impl)
            np.testing.assert_array_equal(y_inf, y_max)
        h, c = ar.lstm_cell(x[0], state, params, clip=1e300)
        h_max, c_max = ar.lstm_cell(x[0], state, params, clip=largest)
        np.testing.assert_array_equal(h, h_max)
        (y, _), pullback = ar.vjp(ar.lstm, x, params, clip=1e300)
        pullback((np.ones_like(y), None))
        ar.LSTM.from_params(((params,),), clip=1e300)(x)
        ar.explain(ar.lstm, x, params, clip=1e300)


def test_clip_beyond_float16_warns_nothing():
    params = random_params("lstm", 3, 4, seed=0, dtype="float16")
    x = np.ones((3, 2, 3), "float16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = ar.lstm(x, params, clip=1e6)
    np.testing.assert_array_equal(y, ar.lstm(x, params, clip=float(np.finfo(np.float16).max))[0])


# ----------------------------------------------------------------------------------------------
# optimizers


def _gru_model_params():
    return {"gru": ((random_params("gru", 3, 4, seed=1, dtype="float32"),),), "scale": np.ones(2, "float32")}


def _grads_like(params, fill=0.5):
    return ar.backend.map_arrays(lambda a: np.full_like(a, fill), params)


@pytest.mark.parametrize("optimizer", [ar.optim.SGD(lr=0.1, momentum=0.9), ar.optim.Adam(lr=0.1)], ids=repr)
def test_optimizers_refuse_gradients_of_another_shape_by_path(optimizer):
    params = _gru_model_params()
    grads = _grads_like(params)
    broadcasting = dataclasses.replace(grads["gru"][0][0], weight_ih=np.ones((1, 3), "float32"))
    bad = {**grads, "gru": ((broadcasting,),)}
    message = r"grads\['gru'\]\[0\]\[0\].weight_ih has shape \(1, 3\) but the params leaf has \(12, 3\)"
    with pytest.raises(ValueError, match=message):
        optimizer.update(params, bad, optimizer.init(params))
    with pytest.raises(ValueError, match=r"grads\['scale'\] has shape \(\) but the params leaf has \(2,\)"):
        optimizer.update(params, {**grads, "scale": np.float32(1.0)}, optimizer.init(params))


@pytest.mark.parametrize("optimizer", [ar.optim.SGD(lr=0.1), ar.optim.Adam(lr=0.1)], ids=repr)
def test_optimizers_refuse_gradients_of_another_dtype_and_keep_the_params_dtype(optimizer):
    params = _gru_model_params()
    grads64 = ar.backend.map_arrays(lambda a: a.astype("float64"), _grads_like(params))
    with pytest.raises(TypeError, match=r"grads\['gru'\]\[0\]\[0\].weight_ih has dtype float64 but the params leaf "):
        optimizer.update(params, grads64, optimizer.init(params))
    new, _ = optimizer.update(params, _grads_like(params), optimizer.init(params))
    assert all(leaf.dtype == np.float32 for leaf in new["gru"][0][0].arrays().values())


def test_optimizers_refuse_other_leaves_and_structures():
    params = _gru_model_params()
    grads = _grads_like(params)
    optimizer = ar.optim.SGD(lr=0.1)
    state = optimizer.init(params)
    with pytest.raises(TypeError, match=r"grads\['scale'\] must be an array like the params leaf, got list"):
        optimizer.update(params, {**grads, "scale": [1.0, 1.0]}, state)
    no_bias = {**params, "gru": ((dataclasses.replace(params["gru"][0][0], bias_hh=None),),)}
    with pytest.raises(ValueError, match=r"grads\['gru'\]\[0\]\[0\].bias_hh is an array but the params leaf is None"):
        optimizer.update(no_bias, grads, optimizer.init(no_bias))
    with pytest.raises(ValueError, match=r"at params\['gru'\] params has a tuple of 1, got a tuple of 2"):
        optimizer.update(params, {**grads, "gru": (grads["gru"][0], grads["gru"][0])}, state)
    with pytest.raises(
        ValueError, match=r"params has a dict with keys \['gru', 'scale'\], got a dict with keys \['gru'"
    ):
        optimizer.update(params, {"gru": grads["gru"]}, state)
    other = ar.optim.SGD(lr=0.1, momentum=0.9)
    small = {**params, "scale": np.ones(3, "float32")}
    with pytest.raises(ValueError, match=r"state.momentum\['scale'\] has shape \(3,\) but the params leaf has \(2,\)"):
        other.update(params, grads, other.init(small))


@pytest.mark.parametrize("lr", [np.float32(0.1), np.float64(0.1), np.float16(0.1), np.int64(1), 1])
def test_any_finite_positive_real_is_a_learning_rate(lr):
    params = {"w": np.ones(3)}
    for optimizer in (ar.optim.SGD(lr=lr, momentum=np.float32(0.5)), ar.optim.Adam(lr=lr, eps=np.float32(1e-8))):
        assert optimizer.lr == float(lr) and type(optimizer.lr) is float
        new, _ = optimizer.update(params, {"w": np.ones(3)}, optimizer.init(params))
        assert new["w"].dtype == np.float64
    adam = ar.optim.Adam(betas=(np.float32(0.5), np.float64(0.9)), weight_decay=np.float32(0.01), clip_norm=np.int32(1))
    assert adam.betas == (0.5, 0.9) and adam.clip_norm == 1.0


@pytest.mark.parametrize("lr", [np.bool_(True), True, np.float32("nan"), np.float64("inf"), "0.1", np.array([0.1])])
def test_what_is_not_a_finite_real_is_refused(lr):
    with pytest.raises(TypeError, match="lr must be a finite number"):
        ar.optim.SGD(lr=lr)
    with pytest.raises(ValueError, match="lr must be > 0"):
        ar.optim.SGD(lr=np.float32(-0.1))


# ----------------------------------------------------------------------------------------------
# the NumPy hook stays in step with explain for the optional fields


def test_explain_lists_every_field_the_numba_kernels_lack(monkeypatch):
    if numpy_backend.compiled_kernels() is None:
        pytest.skip("numba not installed")
    monkeypatch.setenv("ARRAYRNN_NUMBA", "1")
    params = random_params("lstm", 3, 4, seed=0, dtype="float32", peepholes=True, proj_size=2)
    x = np.zeros((2, 3, 3), "float32")
    assert ar.explain(ar.lstm, x, params) == (
        "numpy: NumPy loop (projection, peephole_i, peephole_f, peephole_o: not in the numba kernels)"
    )
