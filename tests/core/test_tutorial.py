"""The tutorial API: exactly the seed's NumPy results, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrnn.tutorial import forward, lstm_step_forward, step_forward
from tests.conftest import need


# The seed tutorial's own code (the oracle; it is theirs, not ours), verbatim in behaviour.
def seed_step_forward(x, h, s, w, b):
    concated = np.concatenate([h, x], axis=-1)
    mul_add = np.dot(concated, w) + b
    return np.tanh(mul_add)


def seed_forward(x, h, s, w, b):
    steps = len(x)
    for t in range(steps):
        xt = x[t, :]
        xt = np.reshape(xt, (1, -1))
        if t == 0:
            ht = h
        ht = seed_step_forward(xt, ht, s, w, b)
    return ht


def _tutorial_example(rng):
    s, n_features, time_steps = 5, 2, 3  # the tutorial's own example sizes
    return (
        s,
        rng.standard_normal((time_steps, n_features)),
        rng.standard_normal((1, s)),
        rng.standard_normal((s + n_features, s)),
        rng.standard_normal((1, s)),
    )


def test_numpy_results_are_exactly_the_seeds():
    rng = np.random.default_rng(0)
    s, x, h, w, b = _tutorial_example(rng)
    np.testing.assert_array_equal(step_forward(x[:1], h, s, w, b), seed_step_forward(x[:1], h, s, w, b))
    np.testing.assert_array_equal(forward(x, h, s, w, b), seed_forward(x, h, s, w, b))
    # the tutorial's zero initial state and zero bias too
    zeros_h, zeros_b = np.zeros((1, s)), np.zeros((1, s))
    result = forward(x, zeros_h, s, w, zeros_b)
    assert result.shape == (1, s)
    np.testing.assert_array_equal(result, seed_forward(x, zeros_h, s, w, zeros_b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_gives_the_seed_result(backend, dtype):
    rng = np.random.default_rng(1)
    s, x, h, w, b = (v if isinstance(v, int) else v.astype(dtype) for v in _tutorial_example(rng))
    want_step = seed_step_forward(x[:1], h, s, w, b)
    want = seed_forward(x, h, s, w, b)
    args = [backend.asarray(v) for v in (h, w, b)]
    got_step = step_forward(backend.asarray(x[:1]), args[0], s, args[1], args[2])
    got = forward(backend.asarray(x), args[0], s, args[1], args[2])
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(backend.numpy(got_step, dtype), want_step, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.numpy(got, dtype), want, rtol=rtol, atol=rtol)


def test_lstm_step_forward_matches_torch_lstm_cell(backend):
    torch = need("torch")
    rng = np.random.default_rng(2)
    s, n = 5, 2
    x, h, c = rng.standard_normal((1, n)), rng.standard_normal((1, s)), rng.standard_normal((1, s))
    W = {g: rng.standard_normal((s + n, s)) for g in "fiot"}
    B = {g: rng.standard_normal((1, s)) for g in "fiot"}
    # torch LSTMCell gate order i, f, g(tanh layer), o; [h, x] @ W = h @ W[:s] + x @ W[s:]
    cell = torch.nn.LSTMCell(n, s).double()
    with torch.no_grad():
        order = "ifto"
        cell.weight_ih.copy_(torch.from_numpy(np.concatenate([W[g][s:].T for g in order])))
        cell.weight_hh.copy_(torch.from_numpy(np.concatenate([W[g][:s].T for g in order])))
        cell.bias_ih.copy_(torch.from_numpy(np.concatenate([B[g][0] for g in order])))
        cell.bias_hh.zero_()
        h_want, c_want = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    h_got, c_got = lstm_step_forward(
        backend.asarray(x), backend.asarray(h), backend.asarray(c),
        *(backend.asarray(W[g]) for g in "fiot"), *(backend.asarray(B[g]) for g in "fiot"),
    )  # fmt: skip
    np.testing.assert_allclose(backend.numpy(h_got), h_want.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.numpy(c_got), c_want.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_tutorial_shapes_are_named():
    rng = np.random.default_rng(3)
    s, x, h, w, b = _tutorial_example(rng)
    with pytest.raises(ValueError, match=r"w must have shape \(s \+ n_features, s\) = \(7, 5\)"):
        forward(x, h, s, w[:6], b)
    with pytest.raises(ValueError, match=r"b must have shape \(1, s\)"):
        step_forward(x[:1], h, s, w, b[:, :4])
    with pytest.raises(ValueError, match=r"h must have shape \(1, s\)"):
        forward(x, h[:, :3], s, w, b)
    with pytest.raises(ValueError, match="at least one time step"):
        forward(x[:0], h, s, w, b)
