"""Stacked / bidirectional models against torch.nn.RNN/LSTM/GRU and the independent reference, on every backend."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import arrayrnn as ar
from tests import reference
from tests.conftest import need
from tests.support import random_params

MODELS = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}

# torch says so once per process for nn.LSTM(proj_size=...) on CPU; it is about torch's speed, not ours
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


# --------------------------------------------------------------------------------------------
# torch as the oracle


def _torch_module(kind, input_size, hidden, layers, *, bidirectional, proj_size, bias, batch_first, nonlinearity, seed):
    torch = need("torch")
    torch.manual_seed(seed)
    common = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    if kind == "lstm":
        module = torch.nn.LSTM(input_size, hidden, proj_size=proj_size, **common)
    elif kind == "gru":
        module = torch.nn.GRU(input_size, hidden, **common)
    else:
        module = torch.nn.RNN(input_size, hidden, nonlinearity=nonlinearity, **common)
    return module


def _torch_run(module, x, state, lengths, batch_first):
    """torch's answer in float64 (the module's weights are used as they are, upcast)."""
    import copy

    import torch

    module = copy.deepcopy(module).double()
    x_t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    state_t = None
    if state is not None:
        state_t = (
            tuple(torch.from_numpy(np.asarray(s, dtype=np.float64)) for s in state)
            if isinstance(state, tuple)
            else torch.from_numpy(np.asarray(state, dtype=np.float64))
        )
    with torch.no_grad():
        if lengths is None:
            y, final = module(x_t, state_t)
        else:
            steps = x.shape[1] if batch_first else x.shape[0]
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x_t, list(lengths), batch_first=batch_first, enforce_sorted=False
            )
            y_packed, final = module(packed, state_t)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=batch_first, total_length=steps)
    finals = [f.numpy() for f in final] if isinstance(final, tuple) else [final.numpy()]
    return y.numpy(), finals


def _as_list(final):
    return list(final) if isinstance(final, tuple) else [final]


def _sample_configs():
    """A fixed, seeded sample: every kind x direction x dtype once, the rest drawn at random."""
    configs = []
    for index, (kind, bidirectional, dtype) in enumerate(
        itertools.product(("rnn", "lstm", "gru"), (False, True), ("float32", "float64"))
    ):
        rng = np.random.default_rng(1000 + index)
        hidden = int(rng.integers(3, 9))
        configs.append(
            dict(
                kind=kind,
                bidirectional=bidirectional,
                dtype=dtype,
                layers=int(rng.integers(1, 4)),
                input_size=int(rng.integers(1, 7)),
                hidden=hidden,
                proj_size=int(rng.integers(1, hidden)) if kind == "lstm" and rng.random() < 0.6 else 0,
                bias=bool(rng.random() < 0.8),
                batch_first=bool(rng.random() < 0.5),
                nonlinearity="relu" if kind == "rnn" and rng.random() < 0.5 else "tanh",
                steps=int(rng.choice([1, 5, 17, 200])) if index % 4 else 200,
                batch=int(rng.integers(1, 5)),
                with_lengths=bool(rng.random() < 0.6),
                with_state=bool(rng.random() < 0.6),
                seed=index,
            )
        )
    return configs


def _config_id(config):
    keys = ("kind", "layers", "bidirectional", "proj_size", "batch_first", "dtype", "steps", "with_lengths")
    return "-".join(f"{config[k]}" if k in ("kind", "dtype") else f"{k}={config[k]}" for k in keys)


@pytest.mark.parametrize("config", _sample_configs(), ids=_config_id)
def test_matches_torch_random_configurations(backend, config):
    kind, dtype, batch_first = config["kind"], config["dtype"], config["batch_first"]
    module = _torch_module(
        kind,
        config["input_size"],
        config["hidden"],
        config["layers"],
        bidirectional=config["bidirectional"],
        proj_size=config["proj_size"],
        bias=config["bias"],
        batch_first=batch_first,
        nonlinearity=config["nonlinearity"],
        seed=config["seed"],
    )
    if dtype == "float64":
        module = module.double()
    rng = np.random.default_rng(config["seed"])
    steps, batch = config["steps"], config["batch"]
    shape = (batch, steps, config["input_size"]) if batch_first else (steps, batch, config["input_size"])
    x = rng.standard_normal(shape).astype(dtype)
    num_states = config["layers"] * (2 if config["bidirectional"] else 1)
    state = None
    if config["with_state"]:
        h_size = config["proj_size"] or config["hidden"]
        h0 = rng.standard_normal((num_states, batch, h_size)).astype(dtype)
        state = (h0, rng.standard_normal((num_states, batch, config["hidden"])).astype(dtype)) if kind == "lstm" else h0
    lengths = rng.integers(1, steps + 1, size=batch) if config["with_lengths"] else None

    options = {"nonlinearity": config["nonlinearity"]} if kind == "rnn" else {}
    # the torch state_dict (torch tensors, the config's dtype) goes straight in
    model = MODELS[kind].from_state_dict(
        module.state_dict(), backend=backend.name, device=backend.device, batch_first=batch_first, **options
    )
    assert model.num_layers == config["layers"] and model.bidirectional == config["bidirectional"]
    assert str(ar.to_numpy(model.params[0][0].weight_ih).dtype) == dtype
    y, final = model(
        backend.asarray(x),
        backend.tree(state),
        lengths=None if lengths is None else backend.asarray(lengths),
    )
    y_ref, finals_ref = _torch_run(module, x, state, lengths, batch_first)
    # float32 against the float64 truth: relative 1e-5 plus a small absolute floor for values near 0
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(backend.numpy(y, dtype), y_ref, **tol)
    for got, want in zip(_as_list(final), finals_ref, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(backend.numpy(got, dtype), want, **tol)
    if lengths is not None:  # padded steps are exactly zero, as pad_packed_sequence gives
        y_np = backend.numpy(y)
        for b, n in enumerate(lengths):
            padded = y_np[b, n:] if batch_first else y_np[n:, b]
            assert np.all(padded == 0)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_input_matches_torch(backend, kind):
    torch = need("torch")
    extra = {"proj_size": 2} if kind == "lstm" else {}
    module = _torch_module(
        kind, 3, 4, 2, bidirectional=True, bias=True, batch_first=False, nonlinearity="tanh", seed=3,
        proj_size=extra.get("proj_size", 0),
    ).double()  # fmt: skip
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3))
    h_size = 2 if kind == "lstm" else 4
    state = rng.standard_normal((4, h_size))
    if kind == "lstm":
        state = (state, rng.standard_normal((4, 4)))
    model = MODELS[kind].from_state_dict(module.state_dict(), backend=backend.name, device=backend.device)
    y, final = model(backend.asarray(x), backend.tree(state))
    with torch.no_grad():
        state_t = tuple(map(torch.from_numpy, state)) if kind == "lstm" else torch.from_numpy(state)
        y_ref, final_ref = module(torch.from_numpy(x), state_t)
    np.testing.assert_allclose(backend.numpy(y), y_ref.numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(_as_list(final), _as_list(final_ref), strict=True):
        assert got.shape == tuple(want.shape)  # (L*D, H)
        np.testing.assert_allclose(backend.numpy(got), want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_a_reverse_model_is_the_backward_half_of_torchs_bidirectional_layer(backend, kind):
    """``reverse=True`` (ONNX ``direction="reverse"``): torch's backward direction, alone, with lengths."""
    torch = need("torch")
    module = _torch_module(
        kind, 3, 4, 1, bidirectional=True, bias=True, batch_first=True, nonlinearity="tanh", seed=7, proj_size=0
    ).double()
    backward_half = {k.replace("_reverse", ""): v for k, v in module.state_dict().items() if k.endswith("_reverse")}
    model = MODELS[kind].from_state_dict(
        backward_half, backend=backend.name, device=backend.device, batch_first=True, reverse=True
    )
    assert model.reverse and model.config()["reverse"] is True and "reverse=True" in repr(model)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 6, 3))
    lengths = np.array([6, 2, 4])
    y, final = model(backend.asarray(x), lengths=backend.asarray(lengths))
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), list(lengths), batch_first=True, enforce_sorted=False
        )
        y_t, final_t = module(packed)
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(y_t, batch_first=True, total_length=6)
    np.testing.assert_allclose(backend.numpy(y), y_t[..., 4:].numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(_as_list(final), _as_list(final_t), strict=True):
        np.testing.assert_allclose(backend.numpy(got), want[1:].numpy(), rtol=1e-10, atol=1e-12)
    assert "layer 0 (reverse)" in ar.explain(model, backend.asarray(x))


def test_reverse_models_stack_run_backwards_in_every_layer_and_refuse_bidirectional():
    model = ar.GRU(3, 4, 2, reverse=True, seed=1, dtype="float64")
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    y, h = model(x)
    forward = ar.GRU.from_params(model.params)  # the same weights, forwards, on the time-flipped input
    y_flipped, h_flipped = forward(np.ascontiguousarray(x[::-1]))
    np.testing.assert_allclose(y, y_flipped[::-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, h_flipped, rtol=1e-12, atol=1e-14)
    weights = np.random.default_rng(3).standard_normal(y.shape)
    grads = ar.vjp(model.apply, model.params, x)[1]((weights, np.ones_like(h)))
    grads_flipped = ar.vjp(forward.apply, forward.params, np.ascontiguousarray(x[::-1]))[1](
        (np.ascontiguousarray(weights[::-1]), np.ones_like(h))
    )
    np.testing.assert_allclose(grads[0][0][0].weight_hh, grads_flipped[0][0][0].weight_hh, rtol=1e-10)
    np.testing.assert_allclose(grads[1], grads_flipped[1][::-1], rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="reverse=True runs a one-direction model backwards"):
        ar.LSTM(3, 4, bidirectional=True, reverse=True)
    with pytest.raises(TypeError, match="reverse must be True or False, got 1"):
        ar.RNN(3, 4, reverse=1)


def test_torch_state_dict_runs_the_same_on_numpy_and_every_backend(backend):
    """A model trained in PyTorch runs in arrayrnn on NumPy and on another backend with the same outputs."""
    torch = need("torch")
    torch.manual_seed(0)
    trained = torch.nn.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(3):  # a few real training steps, so the weights are not just their initial values
        optimizer.zero_grad()
        out, _ = trained(torch.randn(4, 7, 5))
        out.pow(2).mean().backward()
        optimizer.step()
    x = np.random.default_rng(1).standard_normal((4, 7, 5)).astype("float32")
    lengths = np.array([7, 2, 5, 1])
    on_numpy = ar.LSTM.from_state_dict(trained.state_dict(), batch_first=True)
    assert on_numpy.backend == "numpy"
    y_np, (h_np, c_np) = on_numpy(x, lengths=lengths)
    elsewhere = on_numpy.to(backend.name, device=backend.device)
    y_b, (h_b, c_b) = elsewhere(backend.asarray(x), lengths=backend.asarray(lengths))
    for got, want in ((y_b, y_np), (h_b, h_np), (c_b, c_np)):
        np.testing.assert_allclose(backend.numpy(got, "float32"), want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), list(lengths), batch_first=True, enforce_sorted=False
        )
        y_t, (h_t, _) = trained(packed)
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(y_t, batch_first=True, total_length=7)
    np.testing.assert_allclose(y_np, y_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_np, h_t.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_state_dict_loads_into_torch(kind):
    """Our names and shapes are torch's: load_state_dict(strict=True) accepts them, and outputs agree."""
    torch = need("torch")
    extra = {"proj_size": 3} if kind == "lstm" else {}
    model = MODELS[kind](4, 5, 3, bidirectional=True, seed=7, dtype="float64", **extra)
    module = _torch_module(
        kind, 4, 5, 3, bidirectional=True, bias=True, batch_first=False, nonlinearity="tanh", seed=0,
        proj_size=extra.get("proj_size", 0),
    ).double()  # fmt: skip
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()}, strict=True)
    assert list(model.state_dict()) == list(module.state_dict())  # torch's order too
    x = np.random.default_rng(0).standard_normal((5, 2, 4))
    y, _ = model(x)
    with torch.no_grad():
        y_t, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(y, y_t.numpy(), rtol=1e-12, atol=1e-12)


def test_from_state_dict_of_arrays_never_imports_torch():
    code = (
        "import sys, numpy as np, arrayrnn as ar\n"
        "m = ar.GRU(3, 4, 2, bidirectional=True, seed=0)\n"
        "sd = {k: np.asarray(v) for k, v in m.state_dict().items()}\n"
        "m2 = ar.GRU.from_state_dict(sd)\n"
        "y, h = m2(np.ones((2, 1, 3), dtype='float32'))\n"
        "assert h.shape == (4, 1, 4)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# options torch does not have: against the independent reference, stacked by hand here


def _reference_stack(kind, x, params, state, lengths, **options):
    """Layer by layer with tests/reference.py: direction 1 reversed, outputs concatenated, states stacked."""
    directions = len(params[0])
    layer_input = x
    finals = []
    for layer, layer_params in enumerate(params):
        outputs = []
        for d, p in enumerate(layer_params):
            k = layer * directions + d
            s = None if state is None else (tuple(c[k] for c in state) if kind == "lstm" else state[k])
            y, final = reference.sequence(kind, layer_input, p, s, lengths, reverse=d == 1, **options)
            outputs.append(y)
            finals.append(final)
        layer_input = np.concatenate(outputs, axis=-1)
    if kind == "lstm":
        return layer_input, [np.stack([f[0] for f in finals]), np.stack([f[1] for f in finals])]
    return layer_input, [np.stack(finals)]


@pytest.mark.parametrize(
    "kind, structure, options",
    [
        ("lstm", {"peepholes": True, "proj_size": 2}, {"coupled": True, "clip": 0.9}),
        ("lstm", {"peepholes": True}, {}),
        ("gru", {}, {"linear_before_reset": False}),
        ("rnn", {"bias": False}, {"nonlinearity": "relu"}),
    ],
    ids=["lstm-peep-proj-coupled-clip", "lstm-peep", "gru-lbr0", "rnn-relu-nobias"],
)
def test_variants_in_stacks_match_reference(backend, kind, structure, options):
    rng = np.random.default_rng(8)
    model = MODELS[kind](3, 4, 3, bidirectional=True, batch_first=True, seed=9, dtype="float64", **structure, **options)
    steps, batch = 8, 3
    x = rng.standard_normal((batch, steps, 3))
    lengths = np.array([8, 3, 5])
    h_size = structure.get("proj_size") or 4
    state = rng.standard_normal((6, batch, h_size))
    if kind == "lstm":
        state = (state, rng.standard_normal((6, batch, 4)))
    moved = model.to(backend.name, device=backend.device)
    y, final = moved(backend.asarray(x), backend.tree(state), lengths=backend.asarray(lengths))
    y_ref, finals_ref = _reference_stack(
        kind, np.transpose(x, (1, 0, 2)), model.params, state, lengths, **{k: v for k, v in options.items()}
    )
    np.testing.assert_allclose(backend.numpy(y), np.transpose(y_ref, (1, 0, 2)), rtol=1e-10, atol=1e-12)
    for got, want in zip(_as_list(final), finals_ref, strict=True):
        np.testing.assert_allclose(backend.numpy(got), want, rtol=1e-10, atol=1e-12)


def test_apply_is_pure_and_run_stack_is_the_structure():
    model = ar.GRU(2, 3, 2, bidirectional=True, seed=0, dtype="float64")
    other = tuple(
        tuple(random_params("gru", p.input_size, 3, seed=50 + i) for i, p in enumerate(layer)) for layer in model.params
    )
    x = np.random.default_rng(1).standard_normal((4, 2, 2))
    y_other, h_other = model.apply(other, x)
    y_ref, (h_ref,) = _reference_stack("gru", x, other, None, None)
    np.testing.assert_allclose(y_other, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_other, h_ref, rtol=1e-12, atol=1e-12)
    # the model's own params are untouched by apply, and run_stack with ar.gru is what the model runs
    y_self, h_self = model(x)
    y_stack, h_stack = ar.models.run_stack(ar.gru, x, model.params)
    np.testing.assert_array_equal(y_self, y_stack)
    np.testing.assert_array_equal(h_self, h_stack)
    assert not np.allclose(y_self, y_other)


def test_run_stack_calls_the_sequence_function_per_layer_and_direction():
    calls = []

    def recording(x, params, state, **kw):
        calls.append((x.shape, kw["reverse"], None if state is None else state.shape))
        return ar.rnn(x, params, state, **kw)

    model = ar.RNN(2, 3, 2, bidirectional=True, seed=0, dtype="float64")
    h0 = np.zeros((4, 5, 3))
    ar.models.run_stack(recording, np.ones((7, 5, 2)), model.params, h0)
    assert calls == [
        ((7, 5, 2), False, (5, 3)),
        ((7, 5, 2), True, (5, 3)),
        ((7, 5, 6), False, (5, 3)),
        ((7, 5, 6), True, (5, 3)),
    ]


# --------------------------------------------------------------------------------------------
# construction, moving, saving


def test_shapes_and_properties_like_torch():
    model = ar.LSTM(6, 8, num_layers=2, bidirectional=True, proj_size=3, seed=1)
    assert (model.input_size, model.hidden_size, model.num_layers, model.proj_size) == (6, 8, 2, 3)
    assert model.params[1][1].weight_ih.shape == (32, 6)  # 2 directions * proj_size
    y, (h, c) = model(np.zeros((5, 4, 6), dtype="float32"))
    assert y.shape == (5, 4, 6) and h.shape == (4, 4, 3) and c.shape == (4, 4, 8)
    assert "proj_size=3" in repr(model) and "bidirectional=True" in repr(model)
    # one seed, one model, on every backend
    again = ar.LSTM(6, 8, num_layers=2, bidirectional=True, proj_size=3, seed=1)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_to_backend_and_to_numpy_work_on_models(backend):
    model = ar.GRU(3, 4, 2, seed=2, linear_before_reset=False, batch_first=True)
    moved = ar.to_backend(model, backend.name, device=backend.device)
    assert moved.backend == backend.name and moved.linear_before_reset is False and moved.batch_first
    back = ar.to_numpy(moved)
    assert back.backend == "numpy"
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        np.testing.assert_array_equal(a, b)
    as64 = model.to("numpy", dtype="float64")
    assert as64.dtype == np.float64 and model.dtype == np.float32


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("lstm", dict(num_layers=2, bidirectional=True, proj_size=2, peepholes=True, coupled=True, clip=1.5)),
        ("gru", dict(num_layers=3, linear_before_reset=False, batch_first=True, bias=False)),
        ("rnn", dict(bidirectional=True, nonlinearity="relu", dtype="float64")),
        ("gru", dict(num_layers=2, reverse=True)),
    ],
)
def test_save_load_round_trip(tmp_path, backend, kind, kwargs):
    model = MODELS[kind](3, 4, seed=5, **kwargs)
    path = tmp_path / "model.npz"
    ar.save(path, model)
    with np.load(path, allow_pickle=False) as data:  # no pickle anywhere in the file
        assert "__arrayrnn__" in data.files
    loaded = ar.load(path, backend=backend.name, device=backend.device)
    assert type(loaded) is type(model) and loaded.config() == model.config() and loaded.backend == backend.name
    assert loaded.dtype == model.to(backend.name, device=backend.device).dtype
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(str(model.dtype))
    y, _ = model(x)
    y_loaded, _ = loaded(backend.asarray(x))
    np.testing.assert_allclose(backend.numpy(y_loaded), y, rtol=1e-6, atol=1e-7)


def test_save_appends_npz_like_numpy_and_load_finds_it(tmp_path):
    model = ar.RNN(2, 3, seed=0)
    ar.save(str(tmp_path / "plain"), model)
    assert (tmp_path / "plain.npz").exists()
    assert ar.load(str(tmp_path / "plain")).config() == model.config()
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an arrayrnn model file"):
        ar.load(tmp_path / "other.npz")
    with pytest.raises(TypeError, match="model must be an arrayrnn.RNN, LSTM or GRU"):
        ar.save(tmp_path / "bad.npz", model.params)


# --------------------------------------------------------------------------------------------
# errors that name the argument


def test_wrong_state_shapes_are_named():
    model = ar.LSTM(3, 4, 2, bidirectional=True, proj_size=2, seed=0)
    x = np.zeros((5, 3, 3), dtype="float32")
    expected = r"state\[0\] \(h_0\) must have shape .*proj_size\) = \(4, 3, 2\), got \(2, 3, 2\)"
    with pytest.raises(ValueError, match=expected):
        model(x, (np.zeros((2, 3, 2), "float32"), np.zeros((4, 3, 4), "float32")))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h_0, c_0\)"):
        model(x, np.zeros((4, 3, 2), "float32"))
    gru = ar.GRU(3, 4, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=r"state must have shape .* = \(1, 5, 4\), got \(1, 3, 4\)"):
        gru(np.zeros((5, 3, 3), "float32"), np.zeros((1, 3, 4), "float32"))


def test_from_state_dict_errors():
    torch = need("torch")
    gru_sd = torch.nn.GRU(3, 4, 2).state_dict()
    with pytest.raises(ValueError, match="weight_hh_l0 has shape .* another kind of layer"):
        ar.LSTM.from_state_dict(gru_sd)
    with pytest.raises(ValueError, match="not a LSTM weight|not a GRU weight"):
        ar.GRU.from_state_dict({**gru_sd, "dropout_l0": gru_sd["weight_ih_l0"]})
    partial = {k: v for k, v in gru_sd.items() if not k.endswith("l1")}
    partial["weight_ih_l2"] = gru_sd["weight_ih_l1"]
    with pytest.raises(ValueError, match="no weights for layer 1"):
        ar.GRU.from_state_dict(partial)
    without_bias_hh = {k: v for k, v in gru_sd.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match="only one of bias_ih_l1 and bias_hh_l1"):
        ar.GRU.from_state_dict(without_bias_hh)
    with pytest.raises(TypeError, match="unexpected option"):
        ar.GRU.from_state_dict(gru_sd, nonlinearity="relu")
    # a prefixed submodule of a bigger state dict
    wrapped = {f"encoder.rnn.{k}": v for k, v in gru_sd.items()} | {"head.weight": torch.zeros(2)}
    assert ar.GRU.from_state_dict(wrapped, prefix="encoder.rnn.").num_layers == 2


def test_params_structure_errors():
    model = ar.RNN(3, 4, 2, seed=0)
    p0, p1 = model.params[0][0], model.params[1][0]
    expected = r"params\[1\]\[0\].weight_ih must have input_size = num_directions \* hidden_size = 4"
    with pytest.raises(ValueError, match=expected):
        ar.RNN.from_params(((p0,), (p0,)))
    with pytest.raises(ValueError, match="every layer must have the same number of directions"):
        ar.RNN.from_params(((p0, p0), (p1,)))
    with pytest.raises(TypeError, match=r"params\[0\]\[0\] must be an arrayrnn.RNNParams"):
        ar.RNN.from_params(((random_params("gru", 3, 4, seed=0),),))
    with pytest.raises(ValueError, match="differs in num_layers"):
        model.params = ((p0,),)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        ar.GRU(3, 4, 0)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        ar.RNN(3, 4, nonlinearity="sigmoid")
