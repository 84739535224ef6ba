"""Masks with holes (``mask=``) and carry-padding (``padding="carry"``, Keras's rule) on every backend.

Oracle: a float64 per-sequence loop in torch that skips the masked steps and applies the padding rule itself, with
``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` holding the same weights (the full gate recurrence: its equations
written out here), autograd for every gradient. Also: a mask equal to lengths, models, dask, refusals, fast paths.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params

TOL = 1e-8
INPUT, HIDDEN, STEPS, BATCH = 3, 4, 6, 5

# (test id, kind, init options, call options)
KINDS = [
    ("rnn", "rnn", {}, {}),
    ("rnn-relu", "rnn", {}, {"nonlinearity": "relu"}),
    ("lstm", "lstm", {}, {}),
    ("gru", "gru", {}, {}),
]
KIND_IDS = [name for name, _, _, _ in KINDS]
FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}


def _mask(rng, steps=STEPS, batch=BATCH):
    """Random holes, plus one row with leading padding, one all masked and one all valid."""
    mask = rng.random((steps, batch)) < 0.6
    mask[:, 0] = True
    mask[:, 1] = False
    mask[:3, 2] = False
    mask[3:, 2] = True
    mask[2, 3] = False  # a hole
    return mask


def _state(kind, params, batch, rng):
    if kind != "lstm":
        return (rng.standard_normal((batch, params.hidden_size)),)
    state = [rng.standard_normal((batch, params.output_size)), rng.standard_normal((batch, params.hidden_size))]
    if params.weight_gg is not None:
        state.append(rng.uniform(0.05, 0.95, (batch, 3 * params.hidden_size)))
    return tuple(state)


# ----------------------------------------------------------------------------------------------
# the oracle: one sequence at a time, masked steps skipped, the padding rule applied here


def _torch_cell(torch, kind, params, options):
    """A torch.nn cell holding ``params`` (float64 Parameters), or for the full gate recurrence a step function
    written from its equations; returns ``(step(x, carry) -> carry, named parameters)``."""
    if kind == "lstm" and params.weight_gg is not None:
        p = {f.name: torch.nn.Parameter(torch.tensor(np.array(getattr(params, f.name))))
             for f in dataclasses.fields(params) if getattr(params, f.name) is not None}  # fmt: skip

        def gate_step(x, carry):
            h, c, g = carry
            H = c.shape[0]
            pre = p["weight_ih"] @ x + p["bias_ih"] + p["weight_hh"] @ h + p["bias_hh"]
            rec = p["weight_gg"] @ g  # [i, f, o] of the previous step
            i = torch.sigmoid(pre[:H] + rec[:H])
            f = torch.sigmoid(pre[H : 2 * H] + rec[H : 2 * H])
            z = torch.tanh(pre[2 * H : 3 * H])
            o = torch.sigmoid(pre[3 * H :] + rec[2 * H :])
            c_new = f * c + i * z
            return [o * torch.tanh(c_new), c_new, torch.cat([i, f, o])]

        return gate_step, p
    hidden, inputs = params.hidden_size, params.input_size
    if kind == "rnn":
        cell = torch.nn.RNNCell(inputs, hidden, nonlinearity=options.get("nonlinearity", "tanh"), dtype=torch.float64)
    else:
        cell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](inputs, hidden, dtype=torch.float64)
    with torch.no_grad():
        for name, parameter in cell.named_parameters():
            parameter.copy_(torch.tensor(np.array(getattr(params, name))))

    def step(x, carry):
        if kind == "lstm":
            h, c = cell(x[None], (carry[0][None], carry[1][None]))
            return [h[0], c[0]]
        return [cell(x[None], carry[0][None])[0]]

    return step, dict(cell.named_parameters())


def _run_rows(torch, step, x, states, mask, reverse, padding):
    """``x (T, B, I)`` tensors through ``step`` row by row: ``(y (T, B, P), final state list)`` as tensors."""
    steps, batch = mask.shape
    ys, finals = [], [[] for _ in states]
    for b in range(batch):
        carry = [s[b] for s in states]
        outputs = [None] * steps
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            if mask[t, b]:
                carry = step(x[t, b], carry)
                outputs[t] = carry[0]
            else:  # skipped: the state stays; y gets 0 or the carried h
                outputs[t] = carry[0] if padding == "carry" else torch.zeros_like(carry[0])
        ys.append(torch.stack(outputs, 0))
        for k, part in enumerate(carry):
            finals[k].append(part)
    return torch.stack(ys, 1), [torch.stack(part, 0) for part in finals]


def _leaf(torch, value):
    return torch.tensor(np.array(value, dtype=np.float64), requires_grad=True)


def _oracle(kind, params, x, state, mask, cotangent, *, reverse=False, padding="zeros", **options):
    """Outputs and every gradient of ``<cotangent, (y, final_state)>``; time-major ``x (T, B, I)``, ``mask (T, B)``."""
    torch = need("torch")
    step, named = _torch_cell(torch, kind, params, options)
    x_t = _leaf(torch, x)
    states = [_leaf(torch, s) for s in state]
    y, finals = _run_rows(torch, step, x_t, states, mask, reverse, padding)
    dy, d_final = cotangent
    loss = (y * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(finals, d_final))
    loss.backward()

    def grad(tensor):
        return np.zeros(tuple(tensor.shape)) if tensor.grad is None else tensor.grad.numpy()

    grads = {"x": grad(x_t), "state": [grad(s) for s in states]}
    grads.update({f"params.{name}": grad(tensor) for name, tensor in named.items()})
    return y.detach().numpy(), [f.detach().numpy() for f in finals], grads


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL, err_msg=what)


def _cotangent(rng, y_shape, state):
    return rng.standard_normal(y_shape), tuple(rng.standard_normal(s.shape) for s in state)


def _final_tuple(kind, final):
    return tuple(final) if kind == "lstm" else (final,)


def _check_grads(backend, kind, params, d_params, d_state, dx, want, dx_want, state_want):
    _close(backend.numpy(dx), dx_want, "dx")
    for k, part in enumerate(_final_tuple(kind, d_state)):
        _close(backend.numpy(part), state_want[k], f"d state[{k}]")
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is not None:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


# ----------------------------------------------------------------------------------------------
# sequence functions against the oracle, on every backend


@pytest.mark.parametrize("layout", ["time-major", "batch-first", "unbatched"])
@pytest.mark.parametrize("padding", ["zeros", "carry"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name, kind, params_options, call_options", KINDS, ids=KIND_IDS)
def test_sequence_matches_the_oracle(backend, name, kind, params_options, call_options, reverse, padding, layout):
    need("torch")
    rng = np.random.default_rng(7)
    params = random_params(kind, INPUT, HIDDEN, seed=3, **params_options)
    batch = 1 if layout == "unbatched" else BATCH
    x = rng.standard_normal((STEPS, batch, INPUT))
    mask = _mask(rng) if batch > 1 else np.array([[False], [True], [False], [True], [True], [False]])
    state = _state(kind, params, batch, rng)
    cotangent = _cotangent(rng, (STEPS, batch, HIDDEN), state)
    want_y, want_final, want = _oracle(kind, params, x, state, mask, cotangent, reverse=reverse, padding=padding,
                                       **call_options)  # fmt: skip
    if layout == "unbatched":
        x_call, mask_call, state_call = x[:, 0], mask[:, 0], tuple(s[0] for s in state)
        dy_call, d_final_call = cotangent[0][:, 0], tuple(d[0] for d in cotangent[1])
    elif layout == "batch-first":
        x_call, mask_call, state_call = np.swapaxes(x, 0, 1), mask.T, state
        dy_call, d_final_call = np.swapaxes(cotangent[0], 0, 1), cotangent[1]
    else:
        x_call, mask_call, state_call, (dy_call, d_final_call) = x, mask, state, cotangent

    def back(y):  # the caller's layout -> time-major (T, B, ·)
        y = backend.numpy(y)
        return y[:, None] if layout == "unbatched" else (np.swapaxes(y, 0, 1) if layout == "batch-first" else y)

    def back_state(s):
        s = backend.numpy(s)
        return s[None] if layout == "unbatched" else s

    state_arg = backend.tree(state_call if kind == "lstm" else state_call[0])
    options = dict(mask=backend.asarray(mask_call), padding=padding, reverse=reverse,
                   batch_first=layout == "batch-first", **call_options)  # fmt: skip
    function = FUNCTIONS[kind]
    (y, final), pullback = ar.vjp(function, backend.asarray(x_call), backend.tree(params), state_arg, **options)
    y_plain, final_plain = function(backend.asarray(x_call), backend.tree(params), state_arg, **options)
    for got_y, got_final, what in ((y, final, "vjp"), (y_plain, final_plain, "plain")):
        _close(back(got_y), want_y, f"y ({what})")
        for k, part in enumerate(_final_tuple(kind, got_final)):
            _close(back_state(part), want_final[k], f"final state [{k}] ({what})")
    d_final_arg = tuple(backend.asarray(d) for d in d_final_call)
    d_final_arg = d_final_arg if kind == "lstm" else d_final_arg[0]
    dx, d_params, d_state = pullback((backend.asarray(dy_call), d_final_arg))
    dx_time_major = back(dx)
    state_want = [s[0] if layout == "unbatched" else s for s in want["state"]]
    _check_grads(backend, kind, params, d_params, d_state, backend.asarray(dx_time_major), want, want["x"],
                 state_want)  # fmt: skip
    assert np.all(dx_time_major[~mask] == 0.0), "a masked step's input gets exactly zero gradient"


@pytest.mark.parametrize("padding", ["zeros", "carry"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gate_recurrence_keeps_its_whole_state_at_masked_steps(backend, reverse, padding):
    need("torch")
    rng = np.random.default_rng(5)
    params = random_params("lstm", INPUT, HIDDEN, seed=4, gate_recurrence=True)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    mask = _mask(rng)
    state = _state("lstm", params, BATCH, rng)
    cotangent = _cotangent(rng, (STEPS, BATCH, HIDDEN), state)
    want_y, want_final, want = _oracle("lstm", params, x, state, mask, cotangent, reverse=reverse, padding=padding)
    (y, final), pullback = ar.vjp(ar.lstm, backend.asarray(x), backend.tree(params), backend.tree(state),
                                  mask=backend.asarray(mask), padding=padding, reverse=reverse)  # fmt: skip
    _close(backend.numpy(y), want_y, "y")
    assert len(final) == 3
    for k in range(3):
        _close(backend.numpy(final[k]), want_final[k], f"final state [{k}]")
        np.testing.assert_array_equal(backend.numpy(final[k])[1], state[k][1])  # all masked: the state as given
    dx, d_params, d_state = pullback(backend.tree(cotangent))
    _check_grads(backend, "lstm", params, d_params, d_state, dx, want, want["x"], want["state"])


@pytest.mark.parametrize("padding", ["zeros", "carry"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name, kind, params_options, call_options", KINDS, ids=KIND_IDS)
def test_a_mask_equal_to_lengths_gives_the_lengths_result(backend, name, kind, params_options, call_options,
                                                          reverse, padding):  # fmt: skip
    rng = np.random.default_rng(9)
    params = random_params(kind, INPUT, HIDDEN, seed=2, **params_options)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    lengths = np.array([6, 0, 3, 1, 5])
    mask = np.arange(STEPS)[:, None] < lengths
    function = FUNCTIONS[kind]
    common = dict(reverse=reverse, padding=padding, impl="generic", **call_options)
    x_arg, params_arg = backend.asarray(x), backend.tree(params)
    (y_l, final_l), pull_l = ar.vjp(function, x_arg, params_arg, lengths=backend.asarray(lengths), **common)
    (y_m, final_m), pull_m = ar.vjp(function, x_arg, params_arg, mask=backend.asarray(mask), **common)
    np.testing.assert_array_equal(backend.numpy(y_m), backend.numpy(y_l))
    for a, b in zip(_final_tuple(kind, final_m), _final_tuple(kind, final_l)):
        np.testing.assert_array_equal(backend.numpy(a), backend.numpy(b))
    dy = backend.asarray(rng.standard_normal((STEPS, BATCH, HIDDEN)))
    (dx_l, dp_l), (dx_m, dp_m) = pull_l((dy, None)), pull_m((dy, None))
    np.testing.assert_array_equal(backend.numpy(dx_m), backend.numpy(dx_l))
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is not None:
            np.testing.assert_array_equal(backend.numpy(getattr(dp_m, f.name)), backend.numpy(getattr(dp_l, f.name)))
    # whichever implementation runs the lengths call (a fast path where there is one), the numbers agree
    y_auto, _ = function(backend.asarray(x), backend.tree(params), lengths=backend.asarray(lengths), reverse=reverse,
                         padding=padding, **call_options)  # fmt: skip
    np.testing.assert_allclose(backend.numpy(y_auto), backend.numpy(y_m), rtol=1e-12, atol=1e-12)


def test_carry_with_lengths_writes_the_last_state(backend):
    need("torch")
    rng = np.random.default_rng(1)
    params = random_params("gru", INPUT, HIDDEN, seed=1)
    x = rng.standard_normal((STEPS, 3, INPUT))
    lengths = np.array([6, 2, 0])
    mask = np.arange(STEPS)[:, None] < lengths
    state = _state("gru", params, 3, rng)
    cotangent = _cotangent(rng, (STEPS, 3, HIDDEN), state)
    want_y, want_final, want = _oracle("gru", params, x, state, mask, cotangent, reverse=True, padding="carry")
    (y, h_n), pullback = ar.vjp(ar.gru, backend.asarray(x), backend.tree(params), backend.asarray(state[0]),
                                lengths=backend.asarray(lengths), reverse=True, padding="carry")  # fmt: skip
    _close(backend.numpy(y), want_y, "y")
    _close(backend.numpy(h_n), want_final[0], "h_n")
    dx, d_params, d_state = pullback((backend.asarray(cotangent[0]), backend.asarray(cotangent[1][0])))
    _check_grads(backend, "gru", params, d_params, d_state, dx, want, want["x"], want["state"])


def test_masked_inputs_get_zero_gradient_even_when_not_finite(backend):
    rng = np.random.default_rng(6)
    params = random_params("lstm", INPUT, HIDDEN, seed=6)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    mask = _mask(rng)
    x_nan = np.where(mask[..., None], x, np.nan)  # what a masked step holds is never read
    for padding in ("zeros", "carry"):
        (y, final), pullback = ar.vjp(ar.lstm, backend.asarray(x_nan), backend.tree(params),
                                      mask=backend.asarray(mask), padding=padding)  # fmt: skip
        y_clean, _ = ar.lstm(backend.asarray(x), backend.tree(params), mask=backend.asarray(mask), padding=padding)
        np.testing.assert_array_equal(backend.numpy(y), backend.numpy(y_clean))
        dx, d_params = pullback((backend.asarray(np.ones((STEPS, BATCH, HIDDEN))), None))
        dx = backend.numpy(dx)
        assert np.all(dx[~mask] == 0.0) and np.all(np.isfinite(dx))
        for f in dataclasses.fields(params):
            if getattr(params, f.name) is not None:
                assert np.all(np.isfinite(backend.numpy(getattr(d_params, f.name)))), f.name


# ----------------------------------------------------------------------------------------------
# models: both directions, two layers, the oracle layer by layer


def _oracle_stack(kind, stack, x, mask, cotangent, padding, *, state=None):
    """A bidirectional stack through :func:`_run_rows`; returns y, the final states (L*D, B, ·) and gradients."""
    torch = need("torch")
    x_t = _leaf(torch, x)
    layer_input = x_t
    finals: list[list] = []
    named_all = {}
    states = None if state is None else [_leaf(torch, s) for s in state]
    for layer, directions in enumerate(stack):
        outputs = []
        for direction, params in enumerate(directions):
            step, named = _torch_cell(torch, kind, params, {})
            named_all.update({(layer, direction, name): value for name, value in named.items()})
            index = layer * len(directions) + direction
            if states is None:
                zeros = [torch.zeros((x.shape[1], params.hidden_size), dtype=torch.float64)]
                start = zeros * (2 if kind == "lstm" else 1)
            else:
                start = [s[index] for s in states]
            y, final = _run_rows(torch, step, layer_input, start, mask, direction == 1, padding)
            outputs.append(y)
            finals.append(final)
        layer_input = torch.cat(outputs, dim=-1)
    stacked = [torch.stack([final[k] for final in finals], 0) for k in range(len(finals[0]))]
    dy, d_final = cotangent
    loss = (layer_input * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(stacked, d_final))
    loss.backward()
    grads = {key: value.grad.numpy() for key, value in named_all.items()}
    grads["x"] = x_t.grad.numpy()
    if states is not None:
        grads["state"] = [s.grad.numpy() for s in states]
    return layer_input.detach().numpy(), [s.detach().numpy() for s in stacked], grads


@pytest.mark.parametrize("padding", ["zeros", "carry"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bidirectional_two_layer_model_matches_the_oracle(backend, kind, padding):
    need("torch")
    rng = np.random.default_rng(8)
    model_class = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}[kind]
    model = model_class(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=3, dtype="float64", backend="numpy")
    stack = model.params
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    mask = _mask(rng)
    parts = 2 if kind == "lstm" else 1
    state = tuple(rng.standard_normal((4, BATCH, HIDDEN)) for _ in range(parts))
    cotangent = (rng.standard_normal((STEPS, BATCH, 2 * HIDDEN)), [rng.standard_normal((4, BATCH, HIDDEN))] * parts)
    want_y, want_final, want = _oracle_stack(kind, stack, x, mask, cotangent, padding, state=state)
    on_backend = model.to(backend.name, device=backend.device)
    state_arg = backend.tree(state if kind == "lstm" else state[0])
    mask_arg = backend.asarray(mask)
    (y, final), pullback = ar.vjp(on_backend.apply, on_backend.params, backend.asarray(x), state_arg, mask=mask_arg,
                                  padding=padding)  # fmt: skip
    y_call, final_call = on_backend(backend.asarray(x), state_arg, mask=mask_arg, padding=padding)
    for got_y, got_final, what in ((y, final, "vjp"), (y_call, final_call, "__call__")):
        _close(backend.numpy(got_y), want_y, f"y ({what})")
        for k, part in enumerate(_final_tuple(kind, got_final)):
            _close(backend.numpy(part), want_final[k], f"final state [{k}] ({what})")
    d_final = tuple(backend.asarray(d) for d in cotangent[1])
    d_params, dx, d_state = pullback((backend.asarray(cotangent[0]), d_final if kind == "lstm" else d_final[0]))
    _close(backend.numpy(dx), want["x"], "dx")
    assert np.all(backend.numpy(dx)[~mask] == 0.0)
    for k, part in enumerate(_final_tuple(kind, d_state)):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for layer in range(2):
        for direction in range(2):
            for f in dataclasses.fields(stack[layer][direction]):
                if getattr(stack[layer][direction], f.name) is not None:
                    _close(backend.numpy(getattr(d_params[layer][direction], f.name)),
                           want[(layer, direction, f.name)], f"d params[{layer}][{direction}].{f.name}")  # fmt: skip


def test_model_batch_first_mask_and_default_lengths(backend):
    need("torch")
    rng = np.random.default_rng(3)
    model = ar.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, seed=1, dtype="float64",
                    backend="numpy")  # fmt: skip
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    mask = _mask(rng)
    cotangent = (np.zeros((STEPS, BATCH, 2 * HIDDEN)), [np.zeros((4, BATCH, HIDDEN))] * 2)
    want_y, want_final, _ = _oracle_stack("lstm", model.params, x, mask, cotangent, "carry")
    on_backend = model.to(backend.name, device=backend.device)
    on_backend.default_lengths = (STEPS,) * BATCH  # a mask replaces the default lengths
    y, (h_n, c_n) = on_backend(backend.asarray(np.swapaxes(x, 0, 1)), mask=backend.asarray(mask.T), padding="carry")
    _close(np.swapaxes(backend.numpy(y), 0, 1), want_y, "y")
    _close(backend.numpy(h_n), want_final[0], "h_n")
    _close(backend.numpy(c_n), want_final[1], "c_n")


# ----------------------------------------------------------------------------------------------
# dask: the mask is chunked like x over the batch


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_dask_matches_numpy(batch_first):
    need("dask")
    import dask.array as da

    rng = np.random.default_rng(4)
    params = random_params("gru", INPUT, HIDDEN, seed=5)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    mask = _mask(rng)
    if batch_first:
        x, mask = np.swapaxes(x, 0, 1), mask.T
    x_chunks = (2, STEPS, INPUT) if batch_first else (STEPS, 2, INPUT)
    x_dask = da.from_array(x, chunks=x_chunks)
    for mask_arg in (mask, da.from_array(mask, chunks=(STEPS, 3) if not batch_first else (3, STEPS)), mask.tolist()):
        for padding in ("zeros", "carry"):
            want_y, want_h = ar.gru(x, params, mask=mask, padding=padding, reverse=True, batch_first=batch_first)
            y, h_n = ar.gru(x_dask, params, mask=mask_arg, padding=padding, reverse=True, batch_first=batch_first)
            assert y.chunks[0 if batch_first else 1] == (2, 2, 1)
            np.testing.assert_allclose(y.compute(), want_y, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(h_n.compute(), want_h, rtol=1e-12, atol=1e-12)
    model = ar.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=batch_first, seed=2,
                    dtype="float64", backend="numpy")  # fmt: skip
    want_y, (want_h, want_c) = model(x, mask=mask, padding="carry")
    y, (h_n, c_n) = model(x_dask, mask=da.from_array(mask), padding="carry")
    np.testing.assert_allclose(y.compute(), want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n.compute(), want_c, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="mask must have shape"):
        ar.gru(x_dask, params, mask=mask[:-1], batch_first=batch_first)
    with pytest.raises(ValueError, match="padding must be"):
        model(x_dask, padding="same")


# ----------------------------------------------------------------------------------------------
# refusals


def test_refusals(backend):
    rng = np.random.default_rng(0)
    params = backend.tree(random_params("lstm", INPUT, HIDDEN, seed=0))
    x_numpy = rng.standard_normal((STEPS, 2, INPUT))
    x = backend.asarray(x_numpy)
    mask = np.ones((STEPS, 2), dtype=bool)
    with pytest.raises(ValueError, match=r"mask must have shape \(T, B\) = \(6, 2\), got \(2, 6\)"):
        ar.lstm(x, params, mask=backend.asarray(mask.T))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\) with batch_first = \(6, 2\)"):
        ar.lstm(x, params, mask=backend.asarray(mask[:, :1]), batch_first=True)
    with pytest.raises(ValueError, match=r"mask must have shape \(T,\) for unbatched x"):
        ar.lstm(backend.asarray(x_numpy[:, 0]), params, mask=backend.asarray(mask))
    with pytest.raises(TypeError, match="mask must be a boolean array.*got dtype"):
        ar.lstm(x, params, mask=backend.asarray(mask.astype(np.int64)))
    with pytest.raises(TypeError, match="mask must be a boolean array or nested lists of bools"):
        ar.lstm(x, params, mask=[[1, 0]] * STEPS)
    with pytest.raises(ValueError, match="give lengths or mask, not both"):
        ar.lstm(x, params, mask=backend.asarray(mask), lengths=[6, 6])
    for bad in ("same", "Zeros", None, 0):
        with pytest.raises(ValueError, match="padding must be 'zeros'.*or 'carry'"):
            ar.lstm(x, params, padding=bad)
    with pytest.raises(ValueError, match="padding must be"):
        ar.vjp(ar.lstm, x, params, padding="same")
    with pytest.raises(TypeError, match="mask is a numpy.ma.MaskedArray"):
        ar.lstm(x, params, mask=np.ma.masked_array(mask))
    if backend.name != "numpy":
        with pytest.raises(ar.BackendMismatchError, match="mask"):
            ar.lstm(x, params, mask=mask)
    model = ar.GRU(INPUT, HIDDEN, seed=0, dtype="float64", backend="numpy").to(backend.name, device=backend.device)
    x_gru = backend.asarray(rng.standard_normal((STEPS, 2, INPUT)))
    with pytest.raises(ValueError, match="padding must be"):
        model(x_gru, padding="keras")
    with pytest.raises(ValueError, match="give lengths or mask, not both"):
        model(x_gru, mask=backend.asarray(mask), lengths=[6, 6])
    with pytest.raises(ValueError, match="mask must have shape"):
        model(x_gru, mask=backend.asarray(mask[:3]))


def test_a_list_mask_works_like_an_array(backend):
    rng = np.random.default_rng(2)
    params = backend.tree(random_params("rnn", INPUT, HIDDEN, seed=0))
    x = backend.asarray(rng.standard_normal((STEPS, 2, INPUT)))
    mask = _mask(rng)[:, 2:4]  # leading padding; a hole
    y_list, h_list = ar.rnn(x, params, mask=mask.tolist(), padding="carry")
    y, h_n = ar.rnn(x, params, mask=backend.asarray(mask), padding="carry")
    np.testing.assert_array_equal(backend.numpy(y_list), backend.numpy(y))
    np.testing.assert_array_equal(backend.numpy(h_list), backend.numpy(h_n))


# ----------------------------------------------------------------------------------------------
# fast paths decline, explain says why; default calls stay on them


def test_numpy_fast_path_declines_and_explain_says_why():
    from arrayrnn._backends import numpy as numpy_hook

    rng = np.random.default_rng(0)
    params = random_params("lstm", INPUT, HIDDEN, seed=0, dtype="float32")
    x = rng.standard_normal((STEPS, 2, INPUT)).astype(np.float32)
    mask = np.ones((STEPS, 2), dtype=bool)
    state = (np.zeros((2, HIDDEN), np.float32),) * 2
    for options in ({"coupled": False, "mask": mask}, {"coupled": False, "padding": "carry"}):
        assert numpy_hook.sequence("lstm", np, x, params, state, None, False, options) is None
    text = ar.explain(ar.lstm, x, params, mask=mask)
    assert text.startswith("generic:") and "mask=" in text
    text = ar.explain(ar.lstm, x, params, lengths=[6, 2], padding="carry")
    assert text.startswith("generic:") and "padding='carry'" in text
    model = ar.GRU(INPUT, HIDDEN, num_layers=2, seed=0, backend="numpy")
    assert all("mask=" in line for line in ar.explain(model, x, mask=mask).splitlines())
    # default calls: the fast path as before, and the same numbers with the defaults spelled out
    default = ar.explain(ar.lstm, x, params)
    assert not default.startswith("generic") and ar.explain(ar.lstm, x, params, padding="zeros") == default
    y, (h, c) = ar.lstm(x, params, lengths=[6, 2])
    y2, (h2, c2) = ar.lstm(x, params, lengths=[6, 2], mask=None, padding="zeros")
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(c, c2)


def test_cupy_route_declines_mask_and_carry():
    from arrayrnn._backends import cupy as cupy_hook

    params = random_params("gru", INPUT, HIDDEN, seed=0, dtype="float32")
    x = np.zeros((STEPS, 2, INPUT), np.float32)
    for options, said in (({"mask": np.ones((STEPS, 2), bool)}, "mask="), ({"padding": "carry"}, "padding='carry'")):
        for gradient in (False, True):
            for impl in ("auto", "fast", "graph"):
                path, reason = cupy_hook.route("gru", x, params, {"linear_before_reset": True, **options}, impl=impl,
                                               gradient=gradient)  # fmt: skip
                assert path == "generic" and said in reason and "CuPy kernels" in reason


# ----------------------------------------------------------------------------------------------
# real Keras 3 layers (the test extra installs keras; conftest picks its torch backend)


def test_carry_matches_a_keras_gru_with_a_masked_input():
    keras = need("keras")
    rng = np.random.default_rng(1)
    params = random_params("gru", INPUT, HIDDEN, seed=1)
    x = rng.standard_normal((3, STEPS, INPUT))
    mask = np.ones((3, STEPS), dtype=bool)
    mask[0, :3] = False  # leading padding
    mask[1, 2:4] = False  # a hole
    mask[2, -2:] = False  # trailing padding
    layer = keras.layers.GRU(HIDDEN, return_sequences=True, return_state=True, dtype="float64", reset_after=True)
    layer.build((None, STEPS, INPUT))
    kernel, recurrent_kernel, bias = ar.convert.to_keras("gru", params, reset_after=True)
    layer.set_weights([np.asarray(kernel), np.asarray(recurrent_kernel), np.asarray(bias)])
    y_keras, h_keras = (keras.ops.convert_to_numpy(a) for a in layer(x, mask=mask))
    y, h_n = ar.gru(x, params, mask=mask, padding="carry", batch_first=True)
    np.testing.assert_allclose(y, y_keras, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h_n, h_keras, rtol=1e-6, atol=1e-6)


def test_carry_matches_a_keras_lstm_with_a_masked_input():
    keras = need("keras")
    rng = np.random.default_rng(0)
    params = random_params("lstm", INPUT, HIDDEN, seed=0)
    x = rng.standard_normal((2, STEPS, INPUT))
    mask = np.ones((2, STEPS), dtype=bool)
    mask[0, :2] = False
    mask[1, 3] = False
    layer = keras.layers.LSTM(HIDDEN, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, STEPS, INPUT))
    w_ih, w_hh = np.array(params.weight_ih), np.array(params.weight_hh)
    # Keras: kernel (I, 4H), recurrent (H, 4H), one bias, gates i, f, c, o (torch's order)
    layer.set_weights([w_ih.T, w_hh.T, np.array(params.bias_ih) + np.array(params.bias_hh)])
    y_keras, h_keras, c_keras = (keras.ops.convert_to_numpy(a) for a in layer(x, mask=mask))
    y, (h_n, c_n) = ar.lstm(x, params, mask=mask, padding="carry", batch_first=True)
    np.testing.assert_allclose(y, y_keras, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h_n, h_keras, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c_n, c_keras, rtol=1e-6, atol=1e-6)
