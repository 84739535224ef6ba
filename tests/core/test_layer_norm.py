"""Layer-normalised RNN, LSTM and GRU cells (Ba et al. 2016) on every backend.

Oracle: the equations transcribed directly in torch (float64, ``torch.nn.functional.layer_norm``, autograd for every
gradient), one sequence at a time; the sequences, the cells, the gradients and the models are compared with it.
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
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
LN_FIELDS = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")


def _params(kind, params_options=None, seed=5, drop=()):
    """Random params with random (not 1 / 0) layer-norm gains and shifts, so that each one shows in the result."""
    params = random_params(kind, INPUT, HIDDEN, seed=seed, layer_norm=True, **(params_options or {}))
    rng = np.random.default_rng(seed + 100)
    changed = {}
    for name in LN_FIELDS:
        value = getattr(params, name, None)
        if value is not None:
            changed[name] = (
                None
                if name[: name.rindex("_")] in drop
                else rng.uniform(0.5, 1.5, value.shape) - (1.0 if name.endswith("bias") else 0.0)
            )
    return dataclasses.replace(params, **changed)


def _state(kind, params, batch, rng):
    if kind != "lstm":
        return (rng.standard_normal((batch, params.hidden_size)),)
    state = [rng.standard_normal((batch, params.output_size)), rng.standard_normal((batch, params.hidden_size))]
    if params.weight_gg is not None:
        state.append(rng.uniform(0.05, 0.95, (batch, 3 * params.hidden_size)))
    return tuple(state)


# ----------------------------------------------------------------------------------------------
# the oracle: the equations, one sequence at a time, in torch float64


def _norm(torch, u, p, name):
    """``LN_name(u)``, or ``u`` where the params have no such pair."""
    if f"ln_{name}_weight" not in p:
        return u
    return torch.nn.functional.layer_norm(u, (u.shape[0],), p[f"ln_{name}_weight"], p[f"ln_{name}_bias"], eps=1e-5)


def _bias(p, name, rows=slice(None)):
    return p[name][rows] if name in p else 0.0


def _oracle_step(torch, kind, x, carry, p, options):
    hidden = p["weight_ih"].shape[0] // GATES[kind]
    gx = _norm(torch, p["weight_ih"] @ x, p, "ih") + _bias(p, "bias_ih")
    h = carry[0]
    if kind == "rnn":
        z = gx + _norm(torch, p["weight_hh"] @ h, p, "hh") + _bias(p, "bias_hh")
        return (torch.relu(z) if options.get("nonlinearity") == "relu" else torch.tanh(z),)
    if kind == "gru":
        H = hidden
        if options.get("linear_before_reset", True):
            gh = _norm(torch, p["weight_hh"] @ h, p, "hh") + _bias(p, "bias_hh")
            r = torch.sigmoid(gx[:H] + gh[:H])
            z = torch.sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
            n = torch.tanh(gx[2 * H :] + r * gh[2 * H :])
        else:  # no ln_hh here
            gh = p["weight_hh"][: 2 * H] @ h + _bias(p, "bias_hh", slice(0, 2 * H))
            r = torch.sigmoid(gx[:H] + gh[:H])
            z = torch.sigmoid(gx[H : 2 * H] + gh[H:])
            n = torch.tanh(gx[2 * H :] + p["weight_hh"][2 * H :] @ (r * h) + _bias(p, "bias_hh", slice(2 * H, None)))
        return ((1.0 - z) * n + z * h,)
    c, g = carry[1], carry[2] if len(carry) > 2 else None
    clip = options.get("clip")
    coupled = options.get("coupled", False)

    def bound(a):
        return a if clip is None else torch.clamp(a, -clip, clip)

    def squash(a, name):
        return torch.tanh(a) if options.get(name, "tanh") == "tanh" else a

    pre = gx + _norm(torch, p["weight_hh"] @ h, p, "hh") + _bias(p, "bias_hh")
    a_i, a_f, a_z, a_o = (pre[k * hidden : (k + 1) * hidden] for k in range(4))
    if "weight_gg" in p:
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
    c_new = squash(bound(a_z), "input_activation") * i + c * f
    o = ones
    if options.get("output_gate", True):
        if "peephole_o" in p:
            a_o = a_o + p["peephole_o"] * c_new  # the un-normalised cell
        o = torch.sigmoid(bound(a_o))
    y = squash(_norm(torch, c_new, p, "c"), "output_activation") * o
    if "weight_hr" in p:
        y = p["weight_hr"] @ y
    out = (y, c_new)
    return out + (torch.cat([i, f, o]),) if g is not None else out


def _oracle(kind, params, x, state, cotangent, *, lengths=None, reverse=False, **options):
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
    y = np.zeros((steps, batch, state[0].shape[-1]))
    finals = [np.zeros(s.shape) for s in state]
    loss = 0
    for b in range(batch):
        carry = tuple(s[b] for s in states)
        order = list(range(lengths[b]))
        for t in order[::-1] if reverse else order:
            carry = _oracle_step(torch, kind, x_t[t, b], carry, p, options)
            y[t, b] = carry[0].detach().numpy()
            loss = loss + (carry[0] * torch.tensor(dy[t, b])).sum()
        for k, d in enumerate(d_final):
            finals[k][b] = carry[k].detach().numpy()
            loss = loss + (carry[k] * torch.tensor(d[b])).sum()
    loss.backward()

    def grad(tensor):
        return np.zeros(tuple(tensor.shape)) if tensor.grad is None else tensor.grad.numpy()

    grads = {"x": grad(x_t), "state": [grad(s) for s in states]}
    grads.update({f"params.{name}": grad(tensor) for name, tensor in p.items()})
    return y, finals, grads


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL, err_msg=what)


# (id, kind, init options, call options, ln pairs left out)
CASES = [
    ("rnn-tanh", "rnn", {}, {}, ()),
    ("rnn-relu", "rnn", {}, {"nonlinearity": "relu"}, ()),
    ("rnn-ih-only", "rnn", {"bias": False}, {}, ("ln_hh",)),
    ("gru", "gru", {}, {}, ()),
    ("gru-hh-only", "gru", {}, {}, ("ln_ih",)),
    ("gru-before-reset-ih-only", "gru", {}, {"linear_before_reset": False}, ("ln_hh",)),
    ("lstm", "lstm", {}, {}, ()),
    ("lstm-c-only", "lstm", {}, {}, ("ln_ih", "ln_hh")),
    ("lstm-projection", "lstm", {"proj_size": 2}, {}, ()),
    ("lstm-peepholes-clip", "lstm", {"peepholes": True}, {"clip": 0.8}, ()),
    ("lstm-coupled", "lstm", {"peepholes": True}, {"coupled": True}, ()),
    ("lstm-NOG-NOAF", "lstm", {}, {"output_gate": False, "output_activation": "identity"}, ()),
    ("lstm-NIG-projection", "lstm", {"peepholes": True, "proj_size": 3}, {"input_gate": False}, ()),
    ("lstm-FGR", "lstm", {"peepholes": True, "gate_recurrence": True}, {}, ()),
    ("lstm-FGR-coupled-NOAF", "lstm", {"gate_recurrence": True, "proj_size": 2},
     {"coupled": True, "output_activation": "identity"}, ()),
]  # fmt: skip
IDS = [case[0] for case in CASES]
FUNCTIONS = {"rnn": (ar.rnn, ar.rnn_cell), "lstm": (ar.lstm, ar.lstm_cell), "gru": (ar.gru, ar.gru_cell)}


def _as_final(kind, final):
    return tuple(final) if kind == "lstm" else (final,)


def _cotangent_for(kind, cotangent):
    return cotangent if kind == "lstm" else (cotangent[0], cotangent[1][0])


@pytest.mark.parametrize("lengths, reverse", [(None, False), ([5, 2, 4], False), ([5, 2, 4], True)],
                         ids=["full", "lengths", "lengths-reverse"])  # fmt: skip
@pytest.mark.parametrize("name, kind, params_options, call_options, drop", CASES, ids=IDS)
def test_sequence_matches_the_equations(backend, name, kind, params_options, call_options, drop, lengths, reverse):
    need("torch")
    rng = np.random.default_rng(3)
    params = _params(kind, params_options, drop=drop)
    x = rng.standard_normal((5, 3, INPUT))
    state = _state(kind, params, 3, rng)
    cotangent = (rng.standard_normal((5, 3, state[0].shape[-1])), tuple(rng.standard_normal(s.shape) for s in state))
    want_y, want_final, want = _oracle(kind, params, x, state, cotangent, lengths=lengths, reverse=reverse,
                                       **call_options)  # fmt: skip
    function = FUNCTIONS[kind][0]
    call_lengths = None if lengths is None else backend.asarray(np.array(lengths))
    call_state = backend.tree(state if kind == "lstm" else state[0])
    (y, final), pullback = ar.vjp(function, backend.asarray(x), backend.tree(params), call_state,
                                  lengths=call_lengths, reverse=reverse, **call_options)  # fmt: skip
    y_plain, final_plain = function(backend.asarray(x), backend.tree(params), call_state, lengths=call_lengths,
                                    reverse=reverse, **call_options)  # fmt: skip
    for label, (got_y, got_final) in (("vjp", (y, final)), (kind, (y_plain, final_plain))):
        _close(backend.numpy(got_y), want_y, f"y ({label})")
        for k, part in enumerate(_as_final(kind, got_final)):
            _close(backend.numpy(part), want_final[k], f"final state [{k}] ({label})")
    dx, d_params, d_state = pullback(backend.tree(_cotangent_for(kind, cotangent)))
    _close(backend.numpy(dx), want["x"], "dx")
    for k, part in enumerate(_as_final(kind, d_state)):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is None:
            assert getattr(d_params, f.name) is None, f.name
        else:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


@pytest.mark.parametrize("name, kind, params_options, call_options, drop", CASES, ids=IDS)
def test_cell_matches_the_equations(backend, name, kind, params_options, call_options, drop):
    need("torch")
    rng = np.random.default_rng(4)
    params = _params(kind, params_options, seed=6, drop=drop)
    x = rng.standard_normal((1, 2, INPUT))
    state = _state(kind, params, 2, rng)
    d_new = tuple(rng.standard_normal(s.shape) for s in state)
    cotangent = (np.zeros((1, 2, state[0].shape[-1])), d_new)  # a cell has no y: only the new state
    _, want_final, want = _oracle(kind, params, x, state, cotangent, **call_options)
    cell = FUNCTIONS[kind][1]
    call_state = backend.tree(state if kind == "lstm" else state[0])
    out, pullback = ar.vjp(cell, backend.asarray(x[0]), call_state, backend.tree(params), **call_options)
    plain = cell(backend.asarray(x[0]), call_state, backend.tree(params), **call_options)
    for k in range(len(state)):
        _close(backend.numpy(_as_final(kind, out)[k]), want_final[k], f"new state [{k}]")
        _close(backend.numpy(_as_final(kind, plain)[k]), want_final[k], f"new state [{k}] (cell)")
    dx, d_state, d_params = pullback(backend.tree(d_new if kind == "lstm" else d_new[0]))
    _close(backend.numpy(dx), want["x"][0], "dx")
    for k, part in enumerate(_as_final(kind, d_state)):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for f in dataclasses.fields(params):
        if getattr(params, f.name) is not None:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


# ----------------------------------------------------------------------------------------------
# initialisation, checks, fast paths


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_init_layer_norm_is_ones_and_zeros_and_keeps_the_seed_numbers(kind):
    init = {"rnn": ar.init_rnn, "lstm": ar.init_lstm, "gru": ar.init_gru}[kind]
    extra = {"peepholes": True, "proj_size": 2, "gate_recurrence": True} if kind == "lstm" else {}
    plain = init(3, 5, seed=7, dtype="float64", backend="numpy", **extra)
    normed = init(3, 5, seed=7, dtype="float64", backend="numpy", layer_norm=True, **extra)
    for f in dataclasses.fields(plain):
        if f.name.startswith("ln_"):
            assert getattr(plain, f.name) is None
            continue
        if getattr(plain, f.name) is not None:
            np.testing.assert_array_equal(getattr(plain, f.name), getattr(normed, f.name), err_msg=f.name)
    rows = GATES[kind] * 5
    for name in ("ln_ih", "ln_hh") + (("ln_c",) if kind == "lstm" else ()):
        size = 5 if name == "ln_c" else rows
        np.testing.assert_array_equal(getattr(normed, f"{name}_weight"), np.ones(size))
        np.testing.assert_array_equal(getattr(normed, f"{name}_bias"), np.zeros(size))
        assert getattr(normed, f"{name}_weight").dtype == np.float64
    assert normed.has_layer_norm and not plain.has_layer_norm
    with pytest.raises(TypeError, match="layer_norm"):
        init(3, 5, layer_norm=1)


def test_bad_layer_norm_params_are_refused():
    params = ar.init_gru(3, 4, layer_norm=True, seed=0, backend="numpy")
    x = np.zeros((2, 1, 3), "float32")
    with pytest.raises(ValueError, match="linear_before_reset=True"):
        ar.gru(x, params, linear_before_reset=False)
    with pytest.raises(ValueError, match="linear_before_reset=True"):
        ar.gru_cell(x[0], np.zeros((1, 4), "float32"), params, linear_before_reset=False)
    only_ih = dataclasses.replace(params, ln_hh_weight=None, ln_hh_bias=None)
    assert ar.gru(x, only_ih, linear_before_reset=False)[0].shape == (2, 1, 4)
    with pytest.raises(ValueError, match=r"params.ln_ih_weight needs params.ln_ih_bias"):
        ar.gru(x, dataclasses.replace(params, ln_ih_bias=None))
    with pytest.raises(ValueError, match=r"params.ln_hh_bias must have shape \(3\*hidden_size,\) = \(12,\)"):
        ar.gru(x, dataclasses.replace(params, ln_hh_bias=np.zeros(4, "float32")))
    lstm = ar.init_lstm(3, 4, layer_norm=True, seed=0, backend="numpy")
    with pytest.raises(ValueError, match=r"params.ln_c_weight must have shape \(hidden_size,\) = \(4,\)"):
        ar.lstm(x, dataclasses.replace(lstm, ln_c_weight=np.ones(16, "float32")))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_fast_paths_decline_and_explain_says_why(kind):
    from arrayrnn._backends import numpy as numpy_backend
    from arrayrnn._backends.cupy import common as cupy_common
    from arrayrnn._backends.cupy import route as cupy_route

    init = {"rnn": ar.init_rnn, "lstm": ar.init_lstm, "gru": ar.init_gru}[kind]
    function = FUNCTIONS[kind][0]
    params = init(3, 4, layer_norm=True, seed=0, backend="numpy")
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    text = ar.explain(function, x, params)
    assert "layer_norm (ln_* params)" in text and "array-API core runs" in text, text
    assert "layer_norm" not in ar.explain(function, x, init(3, 4, seed=0, backend="numpy"))
    assert numpy_backend.sequence(kind, np, x, params, (np.zeros((2, 4), "float32"),) * 2, None, False, {}) is None
    for gradient in (False, True):
        path, reason = cupy_route(kind, x, params, {}, impl="graph", gradient=gradient)
        assert path == "generic" and "layer_norm (ln_* params): not in the CuPy kernels" in reason
    assert "does not support layer_norm" in cupy_common.lstm_variant_reason("graph", kind, params, {})
    assert cupy_common.lstm_variant_reason("graph", kind, init(3, 4, seed=0, backend="numpy"), {}) is None


# ----------------------------------------------------------------------------------------------
# models


def test_stacked_bidirectional_lstm_matches_the_equations_layer_by_layer(backend):
    need("torch")
    model = ar.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=2, peepholes=True, layer_norm=True,
                    seed=3, dtype="float64", backend="numpy")  # fmt: skip
    assert model.layer_norm and "layer_norm=True" in repr(model)
    rng = np.random.default_rng(5)  # random gains and shifts, so that each one shows

    def randomised(p):
        return dataclasses.replace(p, **{name: rng.uniform(0.5, 1.5, getattr(p, name).shape) for name in LN_FIELDS})

    stack = tuple(tuple(randomised(p) for p in layer) for layer in model.params)
    model.params = stack
    x = rng.standard_normal((5, 3, INPUT))
    lengths = [5, 2, 4]
    layer_input, h_n, c_n = x, [], []
    for layer in stack:
        outputs = []
        for direction, p in enumerate(layer):
            state = (np.zeros((3, 2)), np.zeros((3, HIDDEN)))
            zero = (np.zeros((5, 3, 2)), tuple(np.zeros(s.shape) for s in state))
            y, finals, _ = _oracle("lstm", p, layer_input, state, zero, lengths=lengths, reverse=direction == 1)
            outputs.append(y)
            h_n.append(finals[0])
            c_n.append(finals[1])
        layer_input = np.concatenate(outputs, axis=-1)
    on_backend = ar.LSTM.from_params(backend.tree(stack))
    y, (h, c) = on_backend(backend.asarray(x), lengths=backend.asarray(np.array(lengths)))
    _close(backend.numpy(y), layer_input, "y")
    _close(backend.numpy(h), np.stack(h_n), "h_n")
    _close(backend.numpy(c), np.stack(c_n), "c_n")


@pytest.mark.parametrize("cls", [ar.RNN, ar.LSTM, ar.GRU], ids=["RNN", "LSTM", "GRU"])
def test_model_state_dict_save_load_and_onnx_refusal(cls, tmp_path):
    model = cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, layer_norm=True, seed=0, dtype="float64",
                backend="numpy")  # fmt: skip
    kind = model.kind
    state_dict = model.state_dict()
    ln_names = {f"{name}_l{layer}{suffix}" for name in LN_FIELDS for layer in (0, 1) for suffix in ("", "_reverse")
                if kind == "lstm" or not name.startswith("ln_c")}  # fmt: skip
    assert ln_names <= set(state_dict)
    assert state_dict["ln_hh_weight_l1_reverse"].shape == (GATES[kind] * HIDDEN,)
    plain = cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0, dtype="float64", backend="numpy")
    assert set(state_dict) - set(plain.state_dict()) == ln_names
    assert model.config()["layer_norm"] is True and plain.config()["layer_norm"] is False
    extra = GATES[kind] * HIDDEN * 4 + (2 * HIDDEN if kind == "lstm" else 0)
    count = sum(v.size for v in state_dict.values())
    assert count == sum(v.size for v in plain.state_dict().values()) + 4 * extra
    back = cls.from_state_dict(state_dict)
    assert back.layer_norm and back.config() == model.config()
    ar.save(tmp_path / "normed", model)
    loaded = ar.load(tmp_path / "normed")
    assert type(loaded) is cls and loaded.config() == model.config()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    x = np.random.default_rng(1).standard_normal((4, 2, INPUT))
    np.testing.assert_array_equal(loaded(x)[0], model(x)[0])
    ar.save(tmp_path / "plain", plain)
    assert ar.load(tmp_path / "plain").layer_norm is False
    need("onnx")
    with pytest.raises(ValueError, match="ONNX .* has no layer normalisation"):
        ar.convert.to_onnx_model(model)
    with pytest.raises(ValueError, match="all layer-norm arrays"):
        cls.from_state_dict({k: v for k, v in state_dict.items() if k not in ("ln_hh_weight_l0", "ln_hh_bias_l0")})
    with pytest.raises(ValueError, match="ln_hh_weight needs params.*ln_hh_bias"):
        cls.from_state_dict({k: v for k, v in state_dict.items() if k != "ln_hh_bias_l0"})
    if kind == "gru":
        with pytest.raises(ValueError, match="linear_before_reset=True"):
            ar.GRU(INPUT, HIDDEN, layer_norm=True, linear_before_reset=False)
