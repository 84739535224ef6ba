"""Bad input gets a clear error naming the argument; inputs are never modified."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests.support import random_params


@pytest.fixture
def lstm_case():
    rng = np.random.default_rng(0)
    params = random_params("lstm", 3, 4, seed=0, dtype="float32")
    x = rng.standard_normal((5, 2, 3)).astype("float32")
    state = (np.zeros((2, 4), "float32"), np.zeros((2, 4), "float32"))
    return x, params, state


def test_wrong_rank_of_x(lstm_case):
    x, params, _ = lstm_case
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, I\) or unbatched \(T, I\), got \(5, 2, 3, 1\)"):
        ar.lstm(x[..., None], params)
    with pytest.raises(ValueError, match=r"x must have shape \(B, I\) or unbatched \(I,\), got \(5, 2, 3\)"):
        ar.lstm_cell(x, (x[0, :, :1], x[0, :, :1]), params)


def test_feature_size_mismatch(lstm_case):
    x, params, _ = lstm_case
    with pytest.raises(ValueError, match="x has 2 features in its last axis but params expect input_size=3"):
        ar.lstm(x[..., :2], params)


def test_state_shape_mismatch(lstm_case):
    x, params, state = lstm_case
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) must have shape \(B, H\) = \(2, 4\), got \(2, 5\)"):
        ar.lstm(x, params, (state[0], np.zeros((2, 5), "float32")))
    with pytest.raises(ValueError, match=r"never batch-first or layer-stacked"):
        ar.lstm(x, params, (state[0][None], state[1]))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\)"):
        ar.lstm(x, params, state[0])
    gru = random_params("gru", 3, 4, seed=0, dtype="float32")
    with pytest.raises(ValueError, match=r"h must have shape \(B, H\) = \(2, 4\), got \(3, 4\)"):
        ar.gru_cell(x[0], np.zeros((3, 4), "float32"), gru)


def test_params_shape_and_type_mismatch(lstm_case):
    x, params, _ = lstm_case
    bad = ar.LSTMParams(params.weight_ih, params.weight_hh[:, :3], params.bias_ih, params.bias_hh)
    with pytest.raises(ValueError, match=r"params.weight_hh must have shape \(4\*hidden_size, hidden_size\)"):
        ar.lstm(x, bad)
    bad_bias = ar.LSTMParams(params.weight_ih, params.weight_hh, params.bias_ih[:5], params.bias_hh)
    with pytest.raises(ValueError, match=r"params.bias_ih must have shape \(4\*hidden_size,\) = \(16,\), got \(5,\)"):
        ar.lstm(x, bad_bias)
    with pytest.raises(TypeError, match=r"params must be an arrayrnn.GRUParams"):
        ar.gru(x, params)
    with pytest.raises(ValueError, match=r"params.weight_ih must have shape \(3\*hidden_size, input_size\)"):
        ar.gru(x, ar.GRUParams(np.zeros((4, 3), "float32"), np.zeros((4, 4), "float32")))


def test_dtype_mismatches(lstm_case):
    x, params, state = lstm_case
    with pytest.raises(TypeError, match="x has dtype float64 but params are float32"):
        ar.lstm(x.astype("float64"), params)
    with pytest.raises(TypeError, match=r"state\[0\] \(h\) has dtype float64 but params are float32"):
        ar.lstm(x, params, (state[0].astype("float64"), state[1]))
    mixed = ar.LSTMParams(params.weight_ih, params.weight_hh.astype("float64"), params.bias_ih, params.bias_hh)
    with pytest.raises(TypeError, match="params.weight_hh has dtype float64 but params.weight_ih has float32"):
        ar.lstm(x, mixed)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_arrays_are_refused(lstm_case, dtype):
    x, params, state = lstm_case
    with pytest.raises(TypeError, match=f"x must be a floating-point array, got dtype {dtype}"):
        ar.lstm(x.astype(dtype), params)
    int_params = ar.RNNParams(np.ones((4, 3), dtype), np.ones((4, 4), dtype))
    with pytest.raises(TypeError, match=f"params.weight_ih must be a floating-point array, got dtype {dtype}"):
        ar.rnn(x, int_params)


def test_lengths_are_checked(lstm_case):
    x, params, _ = lstm_case
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=5\], got values from -1 to 5"):
        ar.lstm(x, params, lengths=np.array([5, -1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=5\], got values from 2 to 6"):
        ar.lstm(x, params, lengths=np.array([6, 2]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(2,\), got \(3,\)"):
        ar.lstm(x, params, lengths=np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="lengths must be an integer array, got dtype float64"):
        ar.lstm(x, params, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="lengths needs batched x"):
        ar.lstm(x[:, 0], params, lengths=np.array([2]))


def test_options_are_checked(lstm_case):
    x, params, _ = lstm_case
    rnn_params = random_params("rnn", 3, 4, seed=0, dtype="float32")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        ar.rnn(x, rnn_params, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        ar.rnn_cell(x[0], np.zeros((2, 4), "float32"), rnn_params, nonlinearity="gelu")
    with pytest.raises(ValueError, match="clip must be None or a positive number, got -1"):
        ar.lstm(x, params, clip=-1)
    with pytest.raises(TypeError, match="reverse must be True or False"):
        ar.lstm(x, params, reverse="yes")
    with pytest.raises(ValueError, match="at least one time step"):
        ar.lstm(x[:0], params)


def test_mixed_backends_raise_and_name_the_arguments(lstm_case):
    torch = pytest.importorskip("torch")
    x, params, state = lstm_case
    with pytest.raises(ar.BackendMismatchError, match=r"x on torch \(device cpu\), params.weight_ih on numpy"):
        ar.lstm(torch.from_numpy(x), params)
    with pytest.raises(TypeError):  # BackendMismatchError is a TypeError
        ar.lstm(x, params, (torch.from_numpy(state[0]), state[1]))
    torch_params = ar.to_backend(params, "torch")
    with pytest.raises(ar.BackendMismatchError, match=r"lengths on numpy"):
        ar.lstm(torch.from_numpy(x), torch_params, lengths=np.array([5, 5]))


def test_mixed_devices_raise(lstm_case):
    strict = pytest.importorskip("array_api_strict")
    x, params, _ = lstm_case
    on_device1 = ar.to_backend(params, "array_api_strict", device=strict.Device("device1"))
    x_default = ar.to_backend(x, "array_api_strict")
    with pytest.raises(ar.BackendMismatchError, match=r"device1"):
        ar.lstm(x_default, on_device1)


def test_inputs_are_never_modified_on_any_backend(backend):
    rng = np.random.default_rng(7)
    params = random_params("lstm", 3, 4, seed=7, peepholes=True)
    x = rng.standard_normal((6, 2, 3))
    state = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    lengths = np.array([6, 3])
    inputs = (backend.asarray(x), backend.tree(params), backend.tree(state), backend.asarray(lengths))
    before = ar.to_numpy(inputs)
    ar.lstm(*inputs[:3], lengths=inputs[3], reverse=True, clip=2.0)
    ar.lstm_cell(inputs[0][0, ...], inputs[2], inputs[1])
    after = ar.to_numpy(inputs)
    for a, b in zip(ar.to_numpy([before[0], *before[1].arrays().values(), *before[2], before[3]]),
                    [after[0], *after[1].arrays().values(), *after[2], after[3]]):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_read_only_numpy_inputs_work():
    params = random_params("gru", 3, 4, seed=1)
    for array in params.arrays().values():
        array.flags.writeable = False
    x = np.random.default_rng(1).standard_normal((2, 4, 3))  # batch-first: B=2, T=4
    x.flags.writeable = False
    lengths = np.array([4, 2])
    lengths.flags.writeable = False
    y, h = ar.gru(x, params, lengths=lengths, batch_first=True)
    assert y.shape == (2, 4, 4) and h.shape == (2, 4)
