"""The dropout family on every backend: ``recurrent_dropout`` and ``zoneout`` of the sequence functions, ``dropout``
between the layers of the models, ``train=`` and ``seed=``.

Oracle: the equations in torch float64 (autograd for every gradient), fed the masks re-drawn here from the same seed
in the documented draw order (so these tests also pin that order); zoneout at inference is the expectation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params

TOL = 1e-8
INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 3
ZONED = {"rnn": 1, "lstm": 2, "gru": 1}
FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}


def _close(got, want, what, tol=TOL):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


# ----------------------------------------------------------------------------------------------
# the masks, re-drawn from the seed in the documented order


def _sequence_masks(rng, kind, steps, batch, out_size, hidden, recurrent_dropout, zoneout):
    """1. recurrent dropout ``(B, H_out)``, kept where ``u >= p``, scaled ``1/(1-p)``; 2. zoneout ``(T, B, H_out)``
    for h, then (LSTM) ``(T, B, H)`` for c, 1 (keep the previous value) where ``u < p``."""
    recurrent = None
    if recurrent_dropout:
        recurrent = (rng.random((batch, out_size)) >= recurrent_dropout) / (1.0 - recurrent_dropout)
    zone = None
    if zoneout:
        sizes = [out_size, hidden][: ZONED[kind]]
        zone = [(rng.random((steps, batch, size)) < zoneout).astype(np.float64) for size in sizes]
    return recurrent, zone


# ----------------------------------------------------------------------------------------------
# the oracle: the equations in torch float64, a whole batch per step


def _oracle_layer(torch, kind, x, p, state, options, recurrent, zone, zoneout, lengths, reverse):
    """``x (T, B, I)`` tensors; ``p`` a dict of tensors; ``recurrent (B, H_out)`` or None; ``zone``: a list of
    ``(T, B, ·)`` masks, or None with ``zoneout``: the expectation. Returns ``y``, final state tuple."""
    sig = torch.sigmoid
    steps = x.shape[0]
    state = list(state)
    outputs = [None] * steps
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        h = state[0] if recurrent is None else state[0] * recurrent
        gx = x[t] @ p["weight_ih"].T + (p["bias_ih"] if p.get("bias_ih") is not None else 0.0)
        gh = h @ p["weight_hh"].T + (p["bias_hh"] if p.get("bias_hh") is not None else 0.0)
        if kind == "rnn":
            new = [torch.tanh(gx + gh) if options.get("nonlinearity", "tanh") == "tanh" else torch.relu(gx + gh)]
        elif kind == "lstm":
            c = state[1]
            zi, zf, zg, zo = (gx + gh).chunk(4, dim=-1)
            if p.get("peephole_i") is not None:
                zi, zf = zi + p["peephole_i"] * c, zf + p["peephole_f"] * c
            c_new = sig(zf) * c + sig(zi) * torch.tanh(zg)
            if p.get("peephole_o") is not None:
                zo = zo + p["peephole_o"] * c_new
            h_new = sig(zo) * torch.tanh(c_new)
            if p.get("weight_hr") is not None:
                h_new = h_new @ p["weight_hr"].T
            new = [h_new, c_new]
        else:
            H = h.shape[-1]
            r = sig(gx[:, :H] + gh[:, :H])
            z = sig(gx[:, H : 2 * H] + gh[:, H : 2 * H])
            if options.get("linear_before_reset", True):
                n = torch.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
            else:
                bias_n = p["bias_hh"][2 * H :] if p.get("bias_hh") is not None else 0.0
                n = torch.tanh(gx[:, 2 * H :] + (r * h) @ p["weight_hh"][2 * H :].T + bias_n)
            new = [(1 - z) * n + z * state[0]]  # as Keras: the products read the dropped-out h, the mix does not
        for k in range(ZONED[kind] if zoneout else 0):
            m = zone[k][t] if zone is not None else zoneout
            new[k] = m * state[k] + (1 - m) * new[k]
        if lengths is None:
            state = new
            outputs[t] = new[0]
        else:
            valid = (torch.as_tensor(lengths) > t).reshape(-1, 1)
            state = [torch.where(valid, n_, o_) for n_, o_ in zip(new, state)]
            outputs[t] = torch.where(valid, new[0], torch.zeros_like(new[0]))
    return torch.stack(outputs), tuple(state)


def _tensors(torch, params):
    return {
        f.name: torch.tensor(getattr(params, f.name), requires_grad=True)
        for f in dataclasses.fields(params)
        if getattr(params, f.name) is not None
    }


# ----------------------------------------------------------------------------------------------
# sequence functions: training outputs and every gradient against the oracle, on every backend

CASES = [
    # kind, init options, call options, recurrent_dropout, zoneout
    ("rnn", {}, {}, 0.4, 0.0),
    ("rnn", {}, {"nonlinearity": "relu"}, 0.3, 0.25),
    ("rnn", {}, {}, 0.0, 0.3),
    ("lstm", {}, {}, 0.4, 0.0),
    ("lstm", {}, {}, 0.0, 0.3),
    ("lstm", {"peepholes": True}, {}, 0.3, 0.2),
    ("lstm", {"proj_size": 2}, {}, 0.5, 0.3),
    ("gru", {}, {}, 0.4, 0.0),
    ("gru", {}, {}, 0.0, 0.3),
    ("gru", {}, {"linear_before_reset": False}, 0.3, 0.25),
]
CASE_IDS = [f"{kind}-{'-'.join(map(str, [*init, *call]))}-rd{rd}-zo{zo}" for kind, init, call, rd, zo in CASES]


def _setup(kind, init_options, seed=7):
    rng = np.random.default_rng(seed)
    params = random_params(kind, INPUT, HIDDEN, seed=seed, **init_options)
    out_size = getattr(params, "output_size", HIDDEN)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    state = [rng.standard_normal((BATCH, out_size))]
    if kind == "lstm":
        state.append(rng.standard_normal((BATCH, HIDDEN)))
    cotangent = (rng.standard_normal((STEPS, BATCH, out_size)), [rng.standard_normal(s.shape) for s in state])
    return params, out_size, x, tuple(state), cotangent


def _oracle(torch, kind, params, x, state, options, masks, zoneout, lengths, reverse, cotangent):
    p = _tensors(torch, params)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in state]
    recurrent, zone = masks
    recurrent = None if recurrent is None else torch.tensor(recurrent)
    zone = None if zone is None else [torch.tensor(m) for m in zone]
    y, final = _oracle_layer(torch, kind, xt, p, st, options, recurrent, zone, zoneout, lengths, reverse)
    total = (y * torch.tensor(cotangent[0])).sum() + sum(
        (f * torch.tensor(d)).sum() for f, d in zip(final, cotangent[1])
    )
    total.backward()
    grads = {"x": xt.grad.numpy(), "state": [s.grad.numpy() for s in st]}
    grads.update({f"params.{name}": tensor.grad.numpy() for name, tensor in p.items()})
    return y.detach().numpy(), [f.detach().numpy() for f in final], grads


def _ar_state(kind, state):
    return tuple(state) if kind == "lstm" else state[0]


def _ar_final(kind, final):
    return list(final) if kind == "lstm" else [final]


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(("kind", "init_options", "call_options", "recurrent_dropout", "zoneout"), CASES, ids=CASE_IDS)
def test_training_matches_the_oracle_with_the_same_masks(backend, kind, init_options, call_options, recurrent_dropout,
                                                         zoneout, lengths, reverse):  # fmt: skip
    torch = need("torch")
    params, out_size, x, state, cotangent = _setup(kind, init_options)
    seed = 11
    masks = _sequence_masks(np.random.default_rng(seed), kind, STEPS, BATCH, out_size, HIDDEN, recurrent_dropout,
                            zoneout)  # fmt: skip
    want_y, want_final, want = _oracle(torch, kind, params, x, state, call_options, masks, zoneout, lengths, reverse,
                                       cotangent)  # fmt: skip
    call_lengths = None if lengths is None else backend.asarray(np.array(lengths))
    regularize = {"recurrent_dropout": recurrent_dropout, "zoneout": zoneout, "train": True, "seed": seed}
    args = (backend.asarray(x), backend.tree(params), backend.tree(_ar_state(kind, state)))
    common = {"lengths": call_lengths, "reverse": reverse, **call_options, **regularize}
    (y, final), pullback = ar.vjp(FUNCTIONS[kind], *args, **common)
    _close(backend.numpy(y), want_y, "y (vjp)")
    y_plain, final_plain = FUNCTIONS[kind](*args, **common)
    _close(backend.numpy(y_plain), want_y, "y")
    for k, (part, plain) in enumerate(zip(_ar_final(kind, final), _ar_final(kind, final_plain))):
        _close(backend.numpy(part), want_final[k], f"final state [{k}] (vjp)")
        _close(backend.numpy(plain), want_final[k], f"final state [{k}]")
    d_final = tuple(cotangent[1]) if kind == "lstm" else cotangent[1][0]
    dx, d_params, d_state = pullback(backend.tree((cotangent[0], d_final)))
    _close(backend.numpy(dx), want["x"], "dx")
    for k, part in enumerate(_ar_final(kind, d_state)):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for f in dataclasses.fields(d_params):
        if getattr(params, f.name) is not None:
            _close(backend.numpy(getattr(d_params, f.name)), want[f"params.{f.name}"], f"d params.{f.name}")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_zoneout_inference_is_the_expectation(backend, kind):
    torch = need("torch")
    params, out_size, x, state, cotangent = _setup(kind, {"proj_size": 2} if kind == "lstm" else {})
    lengths = [5, 2, 4]
    want_y, want_final, want = _oracle(torch, kind, params, x, state, {}, (None, None), 0.35, lengths, False,
                                       cotangent)  # fmt: skip
    args = (backend.asarray(x), backend.tree(params), backend.tree(_ar_state(kind, state)))
    options = {"lengths": backend.asarray(np.array(lengths)), "zoneout": 0.35, "recurrent_dropout": 0.5}
    y, final = FUNCTIONS[kind](*args, **options)  # recurrent_dropout is inactive at inference
    _close(backend.numpy(y), want_y, "y")
    (y, final), pullback = ar.vjp(FUNCTIONS[kind], *args, **options)
    _close(backend.numpy(y), want_y, "y (vjp)")
    for k, part in enumerate(_ar_final(kind, final)):
        _close(backend.numpy(part), want_final[k], f"final state [{k}]")
    d_final = tuple(cotangent[1]) if kind == "lstm" else cotangent[1][0]
    dx, d_params, _ = pullback(backend.tree((cotangent[0], d_final)))
    _close(backend.numpy(dx), want["x"], "dx")
    _close(backend.numpy(d_params.weight_hh), want["params.weight_hh"], "d weight_hh")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_same_seed_same_masks_on_every_backend(backend, kind):
    params, _, x, state, _ = _setup(kind, {})
    params32 = random_params(kind, INPUT, HIDDEN, seed=7, dtype="float32")
    x32 = x.astype("float32")
    options = {"recurrent_dropout": 0.3, "zoneout": 0.2, "train": True}
    want, _ = FUNCTIONS[kind](x32, params32, seed=3, **options)
    again, _ = FUNCTIONS[kind](x32, params32, seed=np.random.default_rng(3), **options)
    np.testing.assert_array_equal(again, want)
    other, _ = FUNCTIONS[kind](x32, params32, seed=4, **options)
    assert not np.allclose(other, want)
    got, _ = FUNCTIONS[kind](backend.asarray(x32), backend.tree(params32), seed=3, **options)
    np.testing.assert_allclose(backend.numpy(got, "float32"), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_inference_and_zero_rates_change_nothing(backend, kind):
    params, _, x, state, _ = _setup(kind, {})
    args = (backend.asarray(x), backend.tree(params), backend.tree(_ar_state(kind, state)))
    plain, plain_final = FUNCTIONS[kind](*args)
    for options in ({"recurrent_dropout": 0.5}, {"recurrent_dropout": 0.5, "train": False, "seed": 1},
                    {"recurrent_dropout": 0.0, "zoneout": 0.0, "train": True}):  # fmt: skip
        y, final = FUNCTIONS[kind](*args, **options)
        np.testing.assert_array_equal(backend.numpy(y), backend.numpy(plain))
    assert ar.explain(FUNCTIONS[kind], *args, recurrent_dropout=0.5) == ar.explain(FUNCTIONS[kind], *args)


# ----------------------------------------------------------------------------------------------
# refusals, fast paths


@pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout"])
def test_rates_outside_the_unit_interval_are_refused(name):
    params = ar.init_gru(3, 4, seed=0)
    x = np.zeros((2, 1, 3), "float32")
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\)"):
            ar.gru(x, params, **{name: bad})
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match=f"{name} must be a number"):
            ar.gru(x, params, **{name: bad})


def test_train_needs_a_bool_and_a_seed():
    params = ar.init_lstm(3, 4, seed=0)
    x = np.zeros((2, 1, 3), "float32")
    with pytest.raises(ValueError, match="train=True .* needs seed="):
        ar.lstm(x, params, zoneout=0.1, train=True)
    with pytest.raises(TypeError, match="train must be True or False"):
        ar.lstm(x, params, zoneout=0.1, train=1)
    with pytest.raises(TypeError, match="seed must be an int"):
        ar.lstm(x, params, zoneout=0.1, train=True, seed="0")
    with pytest.raises(ValueError, match="needs seed="):
        ar.vjp(ar.lstm, x, params, recurrent_dropout=0.1, train=True)
    ar.lstm(x, params, train=True)  # nothing to draw: no seed needed


def test_fast_paths_decline_and_explain_says_why():
    params = ar.init_lstm(3, 4, seed=0)
    x = np.zeros((5, 2, 3), "float32")
    text = ar.explain(ar.lstm, x, params, zoneout=0.2)
    assert text.startswith("generic:") and "zoneout=0.2" in text
    text = ar.explain(ar.lstm, x, params, recurrent_dropout=0.2, train=True, seed=0)
    assert text.startswith("generic:") and "recurrent_dropout (training)" in text


def test_fast_paths_decline_on_cupy_route():
    from arrayrnn._backends.cupy import route
    from arrayrnn._core.regularize import Regularization

    params = ar.init_gru(3, 4, seed=0)
    x = np.zeros((5, 2, 3), "float32")
    options = {"linear_before_reset": True, "regularize": Regularization(zoneout=0.1)}
    for gradient in (False, True):
        path, reason = route("gru", x, params, options, impl="graph", gradient=gradient)
        assert path == "generic" and "zoneout=0.1" in reason


# ----------------------------------------------------------------------------------------------
# models: dropout between layers, recurrent dropout and zoneout in every layer, one generator

MODEL_CLASSES = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}


def _stack(kind, layers, directions, init_options, seed=3):
    stack, features = [], INPUT
    for layer in range(layers):
        row = tuple(
            random_params(kind, features, HIDDEN, seed=seed + 10 * layer + d, **init_options) for d in range(directions)
        )
        stack.append(row)
        features = directions * getattr(row[0], "output_size", HIDDEN)
    return tuple(stack)


def _oracle_model(torch, kind, stack, x, state, rates, seed, lengths, cotangent):
    """The stack in torch, masks drawn from ``default_rng(seed)``: per layer, per direction the sequence masks, then
    the layer's output mask ``(T, B, D*H_out)``."""
    rng = np.random.default_rng(seed)
    layers, directions = len(stack), len(stack[0])
    tensors = [[_tensors(torch, p) for p in row] for row in stack]
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in state]
    layer_input, finals = xt, []
    steps, batch = x.shape[0], x.shape[1]
    for layer in range(layers):
        outputs = []
        for d in range(directions):
            p = stack[layer][d]
            out_size = getattr(p, "output_size", HIDDEN)
            recurrent, zone = _sequence_masks(
                rng, kind, steps, batch, out_size, HIDDEN, rates["recurrent_dropout"], rates["zoneout"]
            )
            index = layer * directions + d
            y, final = _oracle_layer(
                torch, kind, layer_input, tensors[layer][d], [s[index] for s in st], {},
                None if recurrent is None else torch.tensor(recurrent),
                None if zone is None else [torch.tensor(m) for m in zone], rates["zoneout"], lengths, d == 1,
            )  # fmt: skip
            outputs.append(y)
            finals.append(final)
        layer_input = torch.cat(outputs, dim=-1)
        if layer < layers - 1 and rates["dropout"]:
            p = rates["dropout"]
            layer_input = layer_input * torch.tensor((rng.random(tuple(layer_input.shape)) >= p) / (1.0 - p))
    final = [torch.stack([f[k] for f in finals]) for k in range(len(finals[0]))]
    total = (layer_input * torch.tensor(cotangent[0])).sum()
    total = total + sum((f * torch.tensor(c)).sum() for f, c in zip(final, cotangent[1]))
    total.backward()
    grads = {"x": xt.grad.numpy(), "state": [s.grad.numpy() for s in st]}
    grads["params"] = [[{n: t.grad.numpy() for n, t in row_d.items()} for row_d in row] for row in tensors]
    return layer_input.detach().numpy(), [f.detach().numpy() for f in final], grads


MODEL_CASES = [
    ("rnn", {}, {"dropout": 0.4}),
    ("rnn", {}, {"dropout": 0.3, "recurrent_dropout": 0.2, "zoneout": 0.25}),
    ("lstm", {}, {"dropout": 0.3, "recurrent_dropout": 0.3, "zoneout": 0.2}),
    ("lstm", {"proj_size": 2}, {"dropout": 0.5, "zoneout": 0.3}),
    ("gru", {}, {"dropout": 0.3, "recurrent_dropout": 0.2, "zoneout": 0.2}),
]


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize(
    ("kind", "init_options", "rates"), MODEL_CASES, ids=[f"{k}-{i}-{r}" for k, i, r in MODEL_CASES]
)
def test_model_training_matches_the_oracle(backend, kind, init_options, rates, lengths):
    torch = need("torch")
    layers, directions = 3, 2
    stack = _stack(kind, layers, directions, init_options)
    rng = np.random.default_rng(0)
    out_size = getattr(stack[0][0], "output_size", HIDDEN)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    state = [rng.standard_normal((layers * directions, BATCH, out_size))]
    if kind == "lstm":
        state.append(rng.standard_normal((layers * directions, BATCH, HIDDEN)))
    cotangent = (
        rng.standard_normal((STEPS, BATCH, directions * out_size)),
        [rng.standard_normal(s.shape) for s in state],
    )
    full_rates = {"dropout": 0.0, "recurrent_dropout": 0.0, "zoneout": 0.0, **rates}
    want_y, want_final, want = _oracle_model(torch, kind, stack, x, state, full_rates, 9, lengths, cotangent)
    model = MODEL_CLASSES[kind].from_params(backend.tree(stack), **rates)
    call_lengths = None if lengths is None else backend.asarray(np.array(lengths))
    ar_state = backend.tree(_ar_state(kind, state))
    y, final = model(backend.asarray(x), ar_state, lengths=call_lengths, train=True, seed=9)
    _close(backend.numpy(y), want_y, "y")
    (y, final), pullback = ar.vjp(
        model.apply, model.params, backend.asarray(x), ar_state, lengths=call_lengths, train=True, seed=9
    )
    _close(backend.numpy(y), want_y, "y (vjp)")
    for k, part in enumerate(_ar_final(kind, final)):
        _close(backend.numpy(part), want_final[k], f"final state [{k}]")
    d_final = tuple(cotangent[1]) if kind == "lstm" else cotangent[1][0]
    d_params, dx, d_state = pullback(backend.tree((cotangent[0], d_final)))
    _close(backend.numpy(dx), want["x"], "dx")
    for k, part in enumerate(_ar_final(kind, d_state)):
        _close(backend.numpy(part), want["state"][k], f"d state[{k}]")
    for layer in range(layers):
        for d in range(directions):
            for name, value in want["params"][layer][d].items():
                got = backend.numpy(getattr(d_params[layer][d], name))
                _close(got, value, f"d params[{layer}][{d}].{name}")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_model_inference_is_unchanged_and_layouts_share_masks(backend, kind):
    stack = _stack(kind, 2, 2, {})
    x = np.random.default_rng(1).standard_normal((STEPS, BATCH, INPUT))
    plain = MODEL_CLASSES[kind].from_params(backend.tree(stack))
    model = MODEL_CLASSES[kind].from_params(backend.tree(stack), dropout=0.5, recurrent_dropout=0.5)
    want, _ = plain(backend.asarray(x))
    got, _ = model(backend.asarray(x))  # train=False: dropout and recurrent_dropout are the identity
    np.testing.assert_array_equal(backend.numpy(got), backend.numpy(want))
    model = MODEL_CLASSES[kind].from_params(backend.tree(stack), dropout=0.3, recurrent_dropout=0.2, zoneout=0.2)
    time_major, _ = model(backend.asarray(x), train=True, seed=4)
    model.batch_first = True
    batch_first, _ = model(backend.asarray(np.swapaxes(x, 0, 1)), train=True, seed=4)
    _close(np.swapaxes(backend.numpy(batch_first), 0, 1), backend.numpy(time_major), "batch_first: same masks")
    model.batch_first = False
    one, _ = model(backend.asarray(x[:, :1]), train=True, seed=4)
    unbatched, _ = model(backend.asarray(x[:, 0]), train=True, seed=4)
    _close(backend.numpy(unbatched), backend.numpy(one)[:, 0], "unbatched: B = 1 masks")


def test_model_config_repr_save_and_load(tmp_path):
    model = ar.LSTM(3, 4, num_layers=2, dropout=0.25, zoneout=0.1, seed=0)
    config = model.config()
    assert (config["dropout"], config["recurrent_dropout"], config["zoneout"]) == (0.25, 0.0, 0.1)
    assert "dropout=0.25" in repr(model) and "zoneout=0.1" in repr(model) and "recurrent_dropout" not in repr(model)
    assert "dropout" not in repr(ar.LSTM(3, 4, seed=0))
    ar.save(tmp_path / "m", model)
    loaded = ar.load(tmp_path / "m")
    assert loaded.config() == config
    x = np.ones((5, 2, 3), "float32")
    np.testing.assert_array_equal(loaded(x, train=True, seed=2)[0], model(x, train=True, seed=2)[0])
    again = ar.GRU.from_params(ar.GRU(3, 4, seed=0).params, recurrent_dropout=0.5)
    assert again.config()["recurrent_dropout"] == 0.5


def test_model_refusals():
    for bad in (-0.5, 1.0):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            ar.GRU(3, 4, dropout=bad)
    with pytest.raises(TypeError, match="zoneout must be a number"):
        ar.RNN(3, 4, zoneout="0.1")
    model = ar.GRU(3, 4, num_layers=2, dropout=0.2, seed=0)
    x = np.ones((5, 2, 3), "float32")
    with pytest.raises(ValueError, match="needs seed="):
        model(x, train=True)
    with pytest.raises(TypeError, match="train must be True or False"):
        model(x, train="yes", seed=0)
    with pytest.raises(ValueError, match="needs seed="):
        ar.vjp(model.apply, model.params, x, train=True)
    model(x, train=True, seed=0)  # dropout between layers only: the layers may still take the fast path


def test_dask_refuses_training_and_runs_zoneout_inference():
    need("dask")
    import dask.array as da

    params = ar.init_gru(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 4, 3)).astype("float32")
    lazy = da.from_array(x, chunks=(5, 2, 3))
    with pytest.raises(ValueError, match="not supported on dask"):
        ar.gru(lazy, params, zoneout=0.2, train=True, seed=0)
    y, _ = ar.gru(lazy, params, zoneout=0.2)
    np.testing.assert_allclose(np.asarray(y.compute()), ar.gru(x, params, zoneout=0.2)[0], rtol=1e-6, atol=1e-6)
    model = ar.GRU(3, 4, num_layers=2, dropout=0.2, seed=0)
    with pytest.raises(ValueError, match="not supported on dask"):
        model(lazy, train=True, seed=0)


def test_onnx_export_refuses_zoneout_and_ignores_dropout():
    need("onnx")
    with pytest.raises(ValueError, match="no zoneout"):
        ar.convert.to_onnx_model(ar.GRU(3, 4, zoneout=0.1, seed=0))
    ar.convert.to_onnx_model(ar.GRU(3, 4, num_layers=2, dropout=0.5, recurrent_dropout=0.5, seed=0))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layer_norm_with_masks_finite_differences(kind):
    """Layer normalisation composes with the masks: gradients against central finite differences (float64)."""
    params = random_params(kind, INPUT, HIDDEN, seed=2, layer_norm=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((STEPS, BATCH, INPUT))
    dy = rng.standard_normal((STEPS, BATCH, HIDDEN))
    options = {"recurrent_dropout": 0.3, "zoneout": 0.25, "train": True, "seed": 8, "lengths": [5, 3, 4]}

    def loss(x_, params_):
        return float(np.sum(FUNCTIONS[kind](x_, params_, **options)[0] * dy))

    (y, _), pullback = ar.vjp(FUNCTIONS[kind], x, params, **options)
    dx, d_params = pullback((dy, None))
    eps = 1e-6
    direction = rng.standard_normal(x.shape)
    want = (loss(x + eps * direction, params) - loss(x - eps * direction, params)) / (2 * eps)
    np.testing.assert_allclose(np.sum(dx * direction), want, rtol=1e-6, atol=1e-7)
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if value is None:
            continue
        direction = rng.standard_normal(value.shape)
        plus = dataclasses.replace(params, **{f.name: value + eps * direction})
        minus = dataclasses.replace(params, **{f.name: value - eps * direction})
        want = (loss(x, plus) - loss(x, minus)) / (2 * eps)
        got = np.sum(getattr(d_params, f.name) * direction)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f.name)
