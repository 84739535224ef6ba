"""The LSTM variants of Greff et al. (2015), "LSTM: A Search Space Odyssey", on every backend.

Options ``input_gate`` / ``forget_gate`` / ``output_gate=False`` (NIG, NFG, NOG), ``input_activation`` /
``output_activation="identity"`` (NIAF, NOAF), ``coupled=True`` (CIFG), no peepholes (NP) and the full gate
recurrence ``weight_gg`` (FGR), alone and in combination. Oracles: the paper's equations transcribed directly in
torch (float64, autograd for every gradient), and central finite differences for FGR.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params

TOL = 1e-8
INPUT, HIDDEN = 3, 4

# (test id, init_lstm options, call options); every paper variant is "vanilla with peepholes" plus one change
PAPER_VARIANTS = [
    ("V", {"peepholes": True}, {}),
    ("NIG", {"peepholes": True}, {"input_gate": False}),
    ("NFG", {"peepholes": True}, {"forget_gate": False}),
    ("NOG", {"peepholes": True}, {"output_gate": False}),
    ("NIAF", {"peepholes": True}, {"input_activation": "identity"}),
    ("NOAF", {"peepholes": True}, {"output_activation": "identity"}),
    ("NP", {}, {}),
    ("CIFG", {"peepholes": True}, {"coupled": True}),
    ("FGR", {"peepholes": True, "gate_recurrence": True}, {}),
]
#: each option alone (no peepholes), and allowed combinations
OTHER_VARIANTS = [
    ("no-input-gate", {}, {"input_gate": False}),
    ("no-forget-gate", {}, {"forget_gate": False}),
    ("no-output-gate", {}, {"output_gate": False}),
    ("identity-input", {}, {"input_activation": "identity"}),
    ("identity-output", {}, {"output_activation": "identity"}),
    ("gate-recurrence", {"gate_recurrence": True}, {}),
    ("NIG+projection", {"peepholes": True, "proj_size": 2}, {"input_gate": False}),
    ("NOAF+coupled", {"peepholes": True}, {"coupled": True, "output_activation": "identity"}),
    ("FGR+projection", {"peepholes": True, "gate_recurrence": True, "proj_size": 2}, {}),
    ("FGR+coupled", {"peepholes": True, "gate_recurrence": True}, {"coupled": True}),
    ("FGR+clip+NIAF+NOAF", {"gate_recurrence": True, "bias": False},
     {"clip": 0.9, "input_activation": "identity", "output_activation": "identity"}),
    ("NIG+NFG+NOG+clip", {"peepholes": True}, {"input_gate": False, "forget_gate": False, "output_gate": False,
                                               "clip": 0.7}),
    ("NFG+NOAF+clip", {"peepholes": True, "proj_size": 3}, {"forget_gate": False, "output_activation": "identity",
                                                            "clip": 1.2}),
]  # fmt: skip
VARIANTS = PAPER_VARIANTS + OTHER_VARIANTS
IDS = [name for name, _, _ in VARIANTS]


def _params(params_options, seed=5):
    return random_params("lstm", INPUT, HIDDEN, seed=seed, **params_options)


def _state(params, batch_shape, rng):
    state = [
        rng.standard_normal((*batch_shape, params.output_size)),
        rng.standard_normal((*batch_shape, params.hidden_size)),
    ]
    if params.weight_gg is not None:
        state.append(rng.uniform(0.05, 0.95, (*batch_shape, 3 * params.hidden_size)))
    return tuple(state)


# ----------------------------------------------------------------------------------------------
# the oracle: the equations of Greff et al. (2015), one sequence at a time, in torch float64


def _oracle_step(torch, x, h, c, g, p, options):
    """One step for one sequence (vectors); returns ``(h', c', g')`` (``g'`` = [i, f, o] activations)."""
    hidden = c.shape[0]
    clip = options.get("clip")
    coupled = options.get("coupled", False)

    def bound(a):
        return a if clip is None else torch.clamp(a, -clip, clip)

    def squash(a, name):
        return torch.tanh(a) if options.get(name, "tanh") == "tanh" else a

    pre = p["weight_ih"] @ x + p["weight_hh"] @ h
    for name in ("bias_ih", "bias_hh"):
        if name in p:
            pre = pre + p[name]
    a_i, a_f, a_z, a_o = (pre[k * hidden : (k + 1) * hidden] for k in range(4))
    if "weight_gg" in p:  # full gate recurrence: W_gg [i_{t-1}; f_{t-1}; o_{t-1}]
        g_i, g_f, g_o = g[:hidden], g[hidden : 2 * hidden], g[2 * hidden :]
        if coupled:
            g_f = 1.0 - g_i
        rec = p["weight_gg"] @ torch.cat([g_i, g_f, g_o])
        a_i, a_f, a_o = a_i + rec[:hidden], a_f + rec[hidden : 2 * hidden], a_o + rec[2 * hidden :]
    ones = torch.ones(hidden, dtype=torch.float64)
    i = ones
    if options.get("input_gate", True):
        if "peephole_i" in p:
            a_i = a_i + p["peephole_i"] * c
        i = torch.sigmoid(bound(a_i))
    f = ones
    if coupled:
        f = 1.0 - i
    elif options.get("forget_gate", True):
        if "peephole_f" in p:
            a_f = a_f + p["peephole_f"] * c
        f = torch.sigmoid(bound(a_f))
    z = squash(bound(a_z), "input_activation")
    c_new = z * i + c * f
    o = ones
    if options.get("output_gate", True):
        if "peephole_o" in p:
            a_o = a_o + p["peephole_o"] * c_new
        o = torch.sigmoid(bound(a_o))
    y = squash(c_new, "output_activation") * o
    if "weight_hr" in p:
        y = p["weight_hr"] @ y
    return y, c_new, torch.cat([i, f, o])


def _oracle(params, x, state, cotangent, *, lengths=None, reverse=False, **options):
    """Outputs and every gradient of ``<cotangent, (y, final_state)>``; time-major ``x (T, B, I)``."""
    torch = need("torch")

    def leaf(value):
        return torch.tensor(np.array(value, dtype=np.float64), requires_grad=True)

    p = {
        f.name: leaf(getattr(params, f.name)) for f in dataclasses.fields(params) if getattr(params, f.name) is not None
    }
    x_t = leaf(x)
    states = [leaf(s) for s in state]
    steps, batch, _ = x.shape
    lengths = [steps] * batch if lengths is None else list(lengths)
    dy, d_final = cotangent
    y = np.zeros((steps, batch, params.output_size))
    finals = [np.zeros(s.shape) for s in state]
    loss = 0
    for b in range(batch):
        carry = [s[b] for s in states]
        if len(carry) == 2:
            carry.append(None)
        order = list(range(lengths[b]))
        for t in order[::-1] if reverse else order:
            carry = list(_oracle_step(torch, x_t[t, b], *carry, p, options))
            y[t, b] = carry[0].detach().numpy()
            loss = loss + (carry[0] * torch.tensor(dy[t, b])).sum()
        for k, d in enumerate(d_final):
            value = carry[k] if carry[k] is not None else states[k][b]
            finals[k][b] = value.detach().numpy()
            loss = loss + (value * torch.tensor(d[b])).sum()
    loss.backward()

    def grad(tensor):
        return np.zeros(tuple(tensor.shape)) if tensor.grad is None else tensor.grad.numpy()

    grads = {"x": grad(x_t), "state": [grad(s) for s in states]}
    grads.update({f"params.{name}": grad(tensor) for name, tensor in p.items()})
    return y, finals, grads


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL, err_msg=what)


def _cotangent(rng, y_shape, state):
    return rng.standard_normal(y_shape), tuple(rng.standard_normal(s.shape) for s in state)


# ----------------------------------------------------------------------------------------------
# sequences and cells against the oracle, on every backend


@pytest.mark.parametrize("lengths, reverse", [(None, False), ([5, 2, 4], False), ([5, 2, 4], True)],
                         ids=["full", "lengths", "lengths-reverse"])  # fmt: skip
@pytest.mark.parametrize("name, params_options, call_options", VARIANTS, ids=IDS)
def test_sequence_matches_the_equations(backend, name, params_options, call_options, lengths, reverse):
    need("torch")
    rng = np.random.default_rng(3)
    params = _params(params_options)
    x = rng.standard_normal((5, 3, INPUT))
    state = _state(params, (3,), rng)
    cotangent = _cotangent(rng, (5, 3, params.output_size), state)
    want_y, want_final, want = _oracle(params, x, state, cotangent, lengths=lengths, reverse=reverse, **call_options)
    call_lengths = None if lengths is None else backend.asarray(np.array(lengths))
    (y, final), pullback = ar.vjp(
        ar.lstm, backend.asarray(x), backend.tree(params), backend.tree(state), lengths=call_lengths,
        reverse=reverse, **call_options,
    )  # fmt: skip
    assert len(final) == len(state)
    _close(backend.numpy(y), want_y, "y")
    for k, part in enumerate(final):
        _close(backend.numpy(part), want_final[k], f"final state [{k}]")
    # the plain forward agrees with the recording one
    y_plain, final_plain = ar.lstm(
        backend.asarray(x), backend.tree(params), backend.tree(state), lengths=call_lengths, reverse=reverse,
        **call_options,
    )  # fmt: skip
    _close(backend.numpy(y_plain), want_y, "y (ar.lstm)")
    for k, part in enumerate(final_plain):
        _close(backend.numpy(part), want_final[k], f"final state [{k}] (ar.lstm)")
    dx, d_params, d_state = pullback(backend.tree(cotangent))
    _close(backend.numpy(dx), want["x"], "dx")
    assert len(d_state) == len(state)
    for k, part in enumerate(d_state):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is None:
            assert getattr(d_params, f.name) is None
        else:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("name, params_options, call_options", VARIANTS, ids=IDS)
def test_cell_matches_the_equations(backend, name, params_options, call_options, unbatched):
    need("torch")
    rng = np.random.default_rng(4)
    params = _params(params_options, seed=6)
    batch = 1 if unbatched else 2
    x = rng.standard_normal((1, batch, INPUT))
    state = _state(params, (batch,), rng)
    cotangent = _cotangent(rng, (1, batch, params.output_size), state)
    cotangent = (np.zeros_like(cotangent[0]), cotangent[1])  # a cell has no y: only the new state
    _, want_final, want = _oracle(params, x, state, cotangent, **call_options)
    if unbatched:
        x_call, state_call, d_new = x[0, 0], tuple(s[0] for s in state), tuple(d[0] for d in cotangent[1])
        pick = 0
    else:
        x_call, state_call, d_new, pick = x[0], state, cotangent[1], slice(None)
    out, pullback = ar.vjp(ar.lstm_cell, backend.asarray(x_call), backend.tree(state_call), backend.tree(params),
                           **call_options)  # fmt: skip
    plain = ar.lstm_cell(backend.asarray(x_call), backend.tree(state_call), backend.tree(params), **call_options)
    assert len(out) == len(plain) == len(state)
    for k in range(len(state)):
        _close(backend.numpy(out[k]), want_final[k][pick], f"new state [{k}]")
        _close(backend.numpy(plain[k]), want_final[k][pick], f"new state [{k}] (lstm_cell)")
    dx, d_state, d_params = pullback(backend.tree(d_new))
    _close(backend.numpy(dx), want["x"][0][pick], "dx")
    for k, part in enumerate(d_state):
        _close(backend.numpy(part), want["state"][k][pick], f"d state[{k}]")
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is not None:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


# ----------------------------------------------------------------------------------------------
# finite differences for the full gate recurrence


def _directional(loss, value, direction, eps=1e-6):
    return (loss(value + eps * direction) - loss(value - eps * direction)) / (2 * eps)


@pytest.mark.parametrize(
    "params_options, call_options, lengths, reverse",
    [
        ({"gate_recurrence": True}, {}, None, False),
        ({"gate_recurrence": True, "peepholes": True}, {"coupled": True}, [4, 1, 3], True),
        ({"gate_recurrence": True, "proj_size": 2}, {"clip": 0.8, "output_activation": "identity"}, [4, 3, 2], False),
    ],
    ids=["plain", "coupled-peepholes-lengths-reverse", "projection-clip-NOAF-lengths"],
)
def test_gate_recurrence_finite_differences(backend, params_options, call_options, lengths, reverse):
    rng = np.random.default_rng(11)
    params = _params(params_options, seed=9)
    x = rng.standard_normal((4, 3, INPUT))
    state = _state(params, (3,), rng)
    cotangent = _cotangent(rng, (4, 3, params.output_size), state)
    call_lengths = None if lengths is None else backend.asarray(np.array(lengths))

    def loss(x_, params_, state_):
        y, final = ar.lstm(backend.asarray(x_), backend.tree(params_), backend.tree(state_), lengths=call_lengths,
                           reverse=reverse, **call_options)  # fmt: skip
        total = np.sum(backend.numpy(y) * cotangent[0])
        return total + sum(np.sum(backend.numpy(f) * d) for f, d in zip(final, cotangent[1]))

    _, pullback = ar.vjp(ar.lstm, backend.asarray(x), backend.tree(params), backend.tree(state), lengths=call_lengths,
                         reverse=reverse, **call_options)  # fmt: skip
    dx, d_params, d_state = pullback(backend.tree(cotangent))
    direction = rng.standard_normal(x.shape)
    want = _directional(lambda v: loss(v, params, state), x, direction)
    np.testing.assert_allclose(np.sum(backend.numpy(dx) * direction), want, rtol=1e-6, atol=1e-7)
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if value is None:
            continue
        direction = rng.standard_normal(value.shape)
        want = _directional(lambda v, name=f.name: loss(x, dataclasses.replace(params, **{name: v}), state), value,
                            direction)  # fmt: skip
        got = np.sum(backend.numpy(getattr(d_params, f.name)) * direction)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f.name)
    for k in range(3):
        direction = rng.standard_normal(state[k].shape)

        def state_loss(v, k=k):
            return loss(x, params, tuple(v if j == k else s for j, s in enumerate(state)))

        got = np.sum(backend.numpy(d_state[k]) * direction)
        np.testing.assert_allclose(got, _directional(state_loss, state[k], direction), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# absent gates: their rows and peepholes get exact zeros


@pytest.mark.parametrize(
    "call_options, absent",
    [
        ({"input_gate": False}, ["i"]),
        ({"forget_gate": False}, ["f"]),
        ({"output_gate": False}, ["o"]),
        ({"input_gate": False, "output_gate": False, "clip": 0.5}, ["i", "o"]),
        ({"coupled": True, "output_gate": False}, ["f", "o"]),
    ],
    ids=["NIG", "NFG", "NOG", "NIG+NOG+clip", "CIFG+NOG"],
)
def test_absent_gates_get_exact_zero_gradients(backend, call_options, absent):
    rng = np.random.default_rng(2)
    params = _params({"peepholes": True, "proj_size": 2})
    x = rng.standard_normal((5, 3, INPUT))
    state = _state(params, (3,), rng)
    lengths = backend.asarray(np.array([5, 3, 1]))
    (y, final), pullback = ar.vjp(ar.lstm, backend.asarray(x), backend.tree(params), backend.tree(state),
                                  lengths=lengths, **call_options)  # fmt: skip
    _, d_params, _ = pullback(backend.tree(_cotangent(rng, (5, 3, 2), state)))
    H = HIDDEN
    rows = {"i": slice(0, H), "f": slice(H, 2 * H), "o": slice(3 * H, 4 * H)}
    for gate in ("i", "f", "o"):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            block = backend.numpy(getattr(d_params, name))[rows[gate]]
            if gate in absent:
                assert np.all(block == 0.0), f"{name} rows of the absent gate {gate}"
            else:
                assert np.any(block != 0.0), f"{name} rows of gate {gate}"
        peephole = backend.numpy(getattr(d_params, f"peephole_{gate}"))
        assert np.all(peephole == 0.0) if gate in absent else np.any(peephole != 0.0)


def test_absent_gate_rows_and_peepholes_are_ignored(backend):
    """What an absent gate's rows and peephole hold does not change the result."""
    rng = np.random.default_rng(8)
    params = _params({"peepholes": True})
    x = rng.standard_normal((4, 2, INPUT))
    H = HIDDEN
    for option, gate, row in (("input_gate", "i", 0), ("forget_gate", "f", 1), ("output_gate", "o", 3)):
        rows = slice(row * H, (row + 1) * H)
        changed = {}
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            value = np.array(getattr(params, name))
            value[rows] = rng.standard_normal(value[rows].shape) * 5
            changed[name] = value
        changed[f"peephole_{gate}"] = rng.standard_normal(H) * 5
        other = dataclasses.replace(params, **changed)
        y1, (h1, c1) = ar.lstm(backend.asarray(x), backend.tree(params), **{option: False})
        y2, (h2, c2) = ar.lstm(backend.asarray(x), backend.tree(other), **{option: False})
        np.testing.assert_array_equal(backend.numpy(y1), backend.numpy(y2))
        np.testing.assert_array_equal(backend.numpy(c1), backend.numpy(c2))


# ----------------------------------------------------------------------------------------------
# the state of the full gate recurrence


def test_gate_recurrence_state_defaults_and_padding(backend):
    rng = np.random.default_rng(12)
    params = _params({"gate_recurrence": True})
    x = rng.standard_normal((5, 3, INPUT))
    zeros = (np.zeros((3, HIDDEN)), np.zeros((3, HIDDEN)), np.zeros((3, 3 * HIDDEN)))
    y, final = ar.lstm(backend.asarray(x), backend.tree(params))
    y0, final0 = ar.lstm(backend.asarray(x), backend.tree(params), backend.tree(zeros))
    np.testing.assert_array_equal(backend.numpy(y), backend.numpy(y0))
    for a, b in zip(final, final0):
        np.testing.assert_array_equal(backend.numpy(a), backend.numpy(b))
    assert backend.numpy(final[2]).shape == (3, 3 * HIDDEN)
    # a sequence of length 0 keeps its whole state, g included
    state = _state(params, (3,), rng)
    _, final = ar.lstm(backend.asarray(x), backend.tree(params), backend.tree(state),
                       lengths=backend.asarray(np.array([5, 0, 2])))  # fmt: skip
    for k in range(3):
        np.testing.assert_array_equal(backend.numpy(final[k])[1], state[k][1])
    # the gate state after the last valid step: [i, f, o] of that step, from the cell
    h, c, g = (s[2:3] for s in state)
    for t in range(2):
        h, c, g = ar.lstm_cell(backend.asarray(x[t, 2:3]), backend.tree((h, c, g)), backend.tree(params))
        h, c, g = (backend.numpy(s) for s in (h, c, g))
    np.testing.assert_allclose(backend.numpy(final[2])[2:3], g, rtol=1e-12, atol=1e-12)


def test_init_lstm_gate_recurrence_keeps_the_seed_numbers():
    plain = ar.init_lstm(3, 5, peepholes=True, proj_size=2, seed=7, dtype="float64", backend="numpy")
    with_gg = ar.init_lstm(3, 5, peepholes=True, proj_size=2, gate_recurrence=True, seed=7, dtype="float64",
                           backend="numpy")  # fmt: skip
    for f in dataclasses.fields(plain):
        if getattr(plain, f.name) is not None:
            np.testing.assert_array_equal(getattr(plain, f.name), getattr(with_gg, f.name))
    assert plain.weight_gg is None and not plain.has_gate_recurrence
    assert with_gg.weight_gg.shape == (15, 15) and with_gg.has_gate_recurrence
    assert np.all(np.abs(with_gg.weight_gg) <= 1 / np.sqrt(5))
    # drawn after every other array of the stream
    rng = np.random.default_rng(7)
    for f in dataclasses.fields(plain):
        value = getattr(plain, f.name)
        if value is not None:
            rng.uniform(-1, 1, size=value.shape)
    np.testing.assert_array_equal(with_gg.weight_gg, rng.uniform(-1 / np.sqrt(5), 1 / np.sqrt(5), size=(15, 15)))


def test_default_options_are_bit_identical(backend):
    rng = np.random.default_rng(1)
    params = _params({"peepholes": True})
    x = backend.asarray(rng.standard_normal((4, 2, INPUT)))
    defaults = {"input_gate": True, "forget_gate": True, "output_gate": True, "input_activation": "tanh",
                "output_activation": "tanh"}  # fmt: skip
    y1, (h1, c1) = ar.lstm(x, backend.tree(params))
    y2, (h2, c2) = ar.lstm(x, backend.tree(params), **defaults)
    np.testing.assert_array_equal(backend.numpy(y1), backend.numpy(y2))
    np.testing.assert_array_equal(backend.numpy(c1), backend.numpy(c2))


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("function", ["lstm", "lstm_cell", "vjp-lstm"])
@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"input_gate": 0}, TypeError, ["input_gate"]),
        ({"forget_gate": "no"}, TypeError, ["forget_gate"]),
        ({"output_gate": None}, TypeError, ["output_gate"]),
        ({"input_activation": "relu"}, ValueError, ["input_activation", "identity"]),
        ({"output_activation": "sigmoid"}, ValueError, ["output_activation", "identity"]),
        ({"output_activation": None}, ValueError, ["output_activation"]),
        ({"coupled": True, "forget_gate": False}, ValueError, ["coupled", "forget_gate", "1 - input gate"]),
        ({"coupled": True, "input_gate": False}, ValueError, ["coupled", "input_gate"]),
    ],
)
def test_bad_options_are_refused(function, options, error, words):
    params = ar.init_lstm(3, 4, seed=0, dtype="float64", backend="numpy")
    x = np.zeros((2, 1, 3))
    state = (np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(error) as info:
        if function == "lstm":
            ar.lstm(x, params, **options)
        elif function == "lstm_cell":
            ar.lstm_cell(x[0], state, params, **options)
        else:
            ar.vjp(ar.lstm, x, params, **options)
    for word in words:
        assert word in str(info.value)


def test_gate_recurrence_refusals():
    params = ar.init_lstm(3, 4, gate_recurrence=True, seed=0, dtype="float64", backend="numpy")
    plain = ar.init_lstm(3, 4, seed=0, dtype="float64", backend="numpy")
    x = np.zeros((2, 1, 3))
    pair = (np.zeros((1, 4)), np.zeros((1, 4)))
    triple = (*pair, np.zeros((1, 12)))
    for option in ("input_gate", "forget_gate", "output_gate"):
        with pytest.raises(ValueError, match=f"{option}=False.*weight_gg"):
            ar.lstm(x, params, **{option: False})
        with pytest.raises(ValueError, match=f"{option}=False.*weight_gg"):
            ar.lstm_cell(x[0], triple, params, **{option: False})
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c, g\).*weight_gg"):
        ar.lstm(x, params, pair)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c, g\).*weight_gg"):
        ar.lstm_cell(x[0], pair, params)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\).*weight_gg"):
        ar.lstm(x, plain, triple)
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\).*weight_gg"):
        ar.lstm_cell(x[0], triple, plain)
    with pytest.raises(ValueError, match=r"state\[2\] \(g\) must have shape \(B, 3H\) = \(1, 12\)"):
        ar.lstm(x, params, (*pair, np.zeros((1, 4))))
    with pytest.raises(ValueError, match=r"params.weight_gg must have shape \(3\*hidden_size, 3\*hidden_size\)"):
        ar.lstm(x, dataclasses.replace(params, weight_gg=np.zeros((12, 4))))
    with pytest.raises(TypeError, match="gate_recurrence must be True or False"):
        ar.init_lstm(3, 4, gate_recurrence=1)


# ----------------------------------------------------------------------------------------------
# the fast paths decline, and ar.explain says why


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "params_options, call_options, words",
    [
        ({}, {"input_gate": False}, "input_gate=False"),
        ({}, {"forget_gate": False}, "forget_gate=False"),
        ({}, {"output_gate": False}, "output_gate=False"),
        ({}, {"input_activation": "identity"}, "input_activation='identity'"),
        ({}, {"output_activation": "identity"}, "output_activation='identity'"),
        ({"gate_recurrence": True}, {}, "weight_gg (full gate recurrence)"),
    ],
    ids=["NIG", "NFG", "NOG", "NIAF", "NOAF", "FGR"],
)
def test_numpy_fast_path_declines(monkeypatch, dtype, params_options, call_options, words):
    from arrayrnn._backends import numpy as numpy_backend

    params = ar.init_lstm(3, 4, seed=0, dtype=dtype, backend="numpy", **params_options)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    text = ar.explain(ar.lstm, x, params, **call_options)
    assert text.startswith("generic:") and words in text, text
    assert ar.explain(ar.vjp, ar.lstm, x, params, **call_options).startswith("generic:")  # no NumPy gradient path
    vanilla = dataclasses.replace(params, weight_gg=None)
    assert not ar.explain(ar.lstm, x, vanilla).startswith("generic")  # without the variant: the fast path
    want = ar.lstm(x, params, impl="generic", **call_options)

    def refuse(*args, **kwargs):
        raise AssertionError("the NumPy loop ran a Greff variant")

    monkeypatch.setattr(numpy_backend, "lstm_sequence", refuse)
    for impl in ("auto", "fast"):
        got = ar.lstm(x, params, impl=impl, **call_options)
        np.testing.assert_array_equal(got[0], want[0])
        for a, b in zip(got[1], want[1]):
            np.testing.assert_array_equal(a, b)


def test_numpy_fast_path_still_runs_default_options(monkeypatch):
    from arrayrnn._backends import numpy as numpy_backend

    seen = []
    original = numpy_backend.lstm_sequence

    def spy(*args, **kwargs):
        seen.append(sorted(kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(numpy_backend, "lstm_sequence", spy)
    params = ar.init_lstm(3, 4, seed=0, backend="numpy", peepholes=True)
    x = np.ones((3, 2, 3), "float32")
    ar.lstm(x, params, coupled=True, clip=2.0)
    assert seen == [["clip", "coupled"]]  # the loop sees only the options it has always seen


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize("impl", ["auto", "fast", "graph", "fused", "cluster", "persistent", "tiled", "fused_graph"])
def test_cupy_paths_decline(impl, gradient):
    """The CuPy hook (forward and gradient) leaves the variants to the core whatever impl names; every path's
    ``supports`` names them too (decided without a GPU: route reads shapes and options only)."""
    import types

    from arrayrnn._backends import cupy as cupy_backend

    stand_in = types.SimpleNamespace(shape=(5, 2, 3), dtype=np.dtype("float32"), ndim=3)
    plain = ar.init_lstm(3, 4, seed=0, backend="numpy")
    for params, options, words in (
        (plain, {"coupled": False, "clip": None, "forget_gate": False}, "forget_gate=False"),
        (plain, {"output_activation": "identity"}, "output_activation='identity'"),
        (ar.init_lstm(3, 4, seed=0, backend="numpy", gate_recurrence=True), {}, "weight_gg"),
    ):
        path, reason = cupy_backend.route("lstm", stand_in, params, options, impl=impl, gradient=gradient)
        assert path == "generic" and words in reason, reason
        if impl in cupy_backend.paths():
            module = cupy_backend.forward_module(impl)
            if hasattr(module, "supports"):
                assert words in module.supports("lstm", params, options)
    if impl in ("graph", "cluster", "persistent"):  # their gradient modules have supports too
        module, _ = cupy_backend._gradient_target(impl)
        assert "weight_gg" in module.supports("lstm", ar.init_lstm(3, 4, seed=0, backend="numpy",
                                                                   gate_recurrence=True), {})  # fmt: skip


def test_explain_cell_and_dask():
    params = ar.init_lstm(3, 4, seed=0, backend="numpy", gate_recurrence=True)
    x = np.ones((2, 3), "float32")
    state = (np.zeros((2, 4), "float32"), np.zeros((2, 4), "float32"), np.zeros((2, 12), "float32"))
    assert ar.explain(ar.lstm_cell, x, state, params).startswith("generic")
    need("dask")
    import dask.array as da

    xs = da.from_array(np.ones((5, 4, 3), "float32"), chunks=(5, 2, 3))
    assert "weight_gg" in ar.explain(ar.lstm, xs, params)
    y, (h, c, g) = ar.lstm(xs, params)
    want_y, want_final = ar.lstm(np.ones((5, 4, 3), "float32"), params)
    np.testing.assert_allclose(y.compute(), want_y, rtol=1e-6)
    for got, want in zip((h, c, g), want_final):
        np.testing.assert_allclose(got.compute(), want, rtol=1e-6)
