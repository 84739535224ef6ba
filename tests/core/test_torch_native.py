"""The torch fast path (``_backends/torch``): torch's own ``nn.LSTM/GRU/RNN`` run with the call's tensors.

Oracles: ``torch.nn`` modules holding the same weights (``tests/torch_oracle.py``, ``tests/torch_grad_oracle.py``),
torch autograd through them, and the array-API core (``impl="generic"``). Each delegated call is watched running
torch's module; each declined call is watched not running it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params
from tests.torch_grad_oracle import layer_grads, model_grads
from tests.torch_oracle import run_layer

torch = need("torch")
from arrayrnn._backends.torch import native  # noqa: E402  (imports torch: after need)

T, B, INPUT, HIDDEN = 6, 4, 3, 5
FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=1e-5, atol=1e-5)}
# (test id, kind, init options, call options, bias handling: "both", "none", "ih" (bias_hh None), "hh")
CELLS = [
    ("lstm", "lstm", {}, {}, "both"),
    ("lstm-projection", "lstm", {"proj_size": 2}, {}, "both"),
    ("lstm-nobias", "lstm", {"bias": False}, {}, "none"),
    ("lstm-bias-ih-only", "lstm", {}, {}, "ih"),
    ("gru", "gru", {}, {}, "both"),
    ("gru-bias-hh-only", "gru", {}, {}, "hh"),
    ("gru-bias-ih-only", "gru", {}, {}, "ih"),
    ("rnn-tanh", "rnn", {}, {}, "both"),
    ("rnn-relu-nobias", "rnn", {"bias": False}, {"nonlinearity": "relu"}, "none"),
]
CELL_IDS = [case[0] for case in CELLS]
# (test id, call keywords): lengths include a 0 (torch's packed sequences refuse it: the path restores it)
CALLS = [
    ("plain", {}),
    ("reverse", {"reverse": True}),
    ("lengths", {"lengths": [6, 0, 3, 1]}),
    ("lengths-reverse", {"lengths": [2, 6, 0, 4], "reverse": True}),
    ("lengths-full", {"lengths": [6, 6, 6, 6], "reverse": True}),
    ("all-empty", {"lengths": [0, 0, 0, 0]}),
]
CALL_IDS = [case[0] for case in CALLS]


def _params(kind: str, init: dict, bias: str, dtype: str, seed: int = 1):
    params = random_params(kind, INPUT, HIDDEN, seed=seed, dtype=dtype, **init)
    if bias == "ih":
        params = dataclasses.replace(params, bias_hh=None)
    elif bias == "hh":
        params = dataclasses.replace(params, bias_ih=None)
    return params


def _oracle_params(params):
    """The same cell for torch.nn, which takes both biases or none: an absent one is zeros (the same function)."""
    if (params.bias_ih is None) == (params.bias_hh is None):
        return params
    present = params.bias_ih if params.bias_ih is not None else params.bias_hh
    zeros = np.zeros_like(present)
    return dataclasses.replace(
        params,
        bias_ih=zeros if params.bias_ih is None else params.bias_ih,
        bias_hh=zeros if params.bias_hh is None else params.bias_hh,
    )


def _state(kind: str, params, rng, dtype: str):
    h = rng.standard_normal((B, params.output_size if kind == "lstm" else HIDDEN)).astype(dtype)
    if kind != "lstm":
        return h
    return h, rng.standard_normal((B, HIDDEN)).astype(dtype)


def _to_torch(tree):
    return ar.to_backend(tree, "torch")


def _flat(kind: str, out):
    y, final = out
    return [y, *(final if kind == "lstm" else (final,))]


def _numpy(a):
    return a.detach().numpy()


@pytest.fixture
def watch(monkeypatch):
    """Record each run of torch's module by the fast path."""
    ran: list[str] = []
    real = native.run
    monkeypatch.setattr(native, "run", lambda kind, *a: ran.append(kind) or real(kind, *a))
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    return ran


def _oracle_forward(kind, params, x, state, keywords, options):
    """torch.nn's answer; rows of length 0 (which torch refuses) by the definition: zero outputs, initial state."""
    lengths = keywords.get("lengths")
    rows = list(range(B)) if lengths is None else [b for b in range(B) if lengths[b] > 0]
    y = np.zeros((T, B, params.output_size if kind == "lstm" else HIDDEN), dtype=x.dtype)
    finals = [np.array(s, copy=True) for s in (state if kind == "lstm" else (state,))]
    if rows:
        sub_state = tuple(s[rows] for s in state) if kind == "lstm" else state[rows]
        sub_lengths = None if lengths is None else np.array([lengths[b] for b in rows])
        y_sub, final_sub = run_layer(kind, _oracle_params(params), x[:, rows], sub_state, sub_lengths,
                                     keywords.get("reverse", False), dtype=x.dtype.type, **options)  # fmt: skip
        y[:, rows] = y_sub
        for full, part in zip(finals, final_sub if kind == "lstm" else (final_sub,)):
            full[rows] = part
    return [y, *finals]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("call_id,keywords", CALLS, ids=CALL_IDS)
@pytest.mark.parametrize("case_id,kind,init,options,bias", CELLS, ids=CELL_IDS)
def test_forward_equals_torch_nn_and_the_core(watch, case_id, kind, init, options, bias, call_id, keywords, dtype):
    rng = np.random.default_rng(0)
    params = _params(kind, init, bias, dtype)
    x = rng.standard_normal((T, B, INPUT)).astype(dtype)
    state = _state(kind, params, rng, dtype)
    function = FUNCTIONS[kind]
    call = {**options, **keywords}
    got = function(_to_torch(x), _to_torch(params), _to_torch(state), **call)
    assert watch == [kind]
    core = function(_to_torch(x), _to_torch(params), _to_torch(state), **call, impl="generic")
    assert watch == [kind]  # the core did not run torch's module
    oracle = _oracle_forward(kind, params, x, state, keywords, options)
    for ours, generic, theirs in zip(_flat(kind, got), _flat(kind, core), oracle):
        assert ours.dtype == getattr(torch, dtype)
        np.testing.assert_allclose(_numpy(ours), _numpy(generic), **TOLERANCE[dtype])
        np.testing.assert_allclose(_numpy(ours), theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_batch_first_unbatched_and_default_state(watch, kind):
    rng = np.random.default_rng(2)
    params = _to_torch(random_params(kind, INPUT, HIDDEN, seed=3))
    x = _to_torch(rng.standard_normal((B, T, INPUT)))
    function = FUNCTIONS[kind]
    for args, keywords in [((x, params), {"batch_first": True, "lengths": [3, 6, 0, 2]}), ((x[0], params), {})]:
        got = function(*args, **keywords)
        core = function(*args, **keywords, impl="generic")
        for ours, generic in zip(_flat(kind, got), _flat(kind, core)):
            assert ours.shape == generic.shape
            np.testing.assert_allclose(_numpy(ours), _numpy(generic), rtol=1e-10, atol=1e-12)
    assert watch == [kind, kind]


def test_inputs_are_not_changed(watch):
    rng = np.random.default_rng(4)
    params = _to_torch(random_params("lstm", INPUT, HIDDEN, seed=5))
    x = _to_torch(rng.standard_normal((T, B, INPUT)))
    before = [t.clone() for t in (x, *params.arrays().values())]
    ar.lstm(x, params, lengths=[6, 0, 2, 5], reverse=True)
    for old, new in zip(before, (x, *params.arrays().values())):
        assert torch.equal(old, new)
    assert watch == ["lstm"]


# ----------------------------------------------------------------------------------------------
# gradients: torch autograd through the delegated call, ar.vjp, torch.func


def _leaves(tree):
    from arrayrnn.backend import map_arrays

    return map_arrays(lambda a: _to_torch(a).requires_grad_(True), tree)


@pytest.mark.parametrize("call_id,keywords", CALLS[:4], ids=CALL_IDS[:4])
@pytest.mark.parametrize("case_id,kind,init,options,bias", CELLS, ids=CELL_IDS)
def test_autograd_and_vjp_equal_torch_nn(watch, case_id, kind, init, options, bias, call_id, keywords):
    rng = np.random.default_rng(6)
    params = _params(kind, init, bias, "float64")
    x = rng.standard_normal((T, B, INPUT))
    state = _state(kind, params, rng, "float64")
    dy = rng.standard_normal((T, B, params.output_size if kind == "lstm" else HIDDEN))
    d_final = _state(kind, params, rng, "float64")
    call = {**options, **keywords}
    lengths = keywords.get("lengths")
    rows = [b for b in range(B) if lengths is None or lengths[b] > 0]
    sub = (lambda s: tuple(p[rows] for p in s)) if kind == "lstm" else (lambda s: s[rows])
    oracle = layer_grads(kind, _oracle_params(params), x[:, rows], sub(state), (dy[:, rows], sub(d_final)),
                         lengths=None if lengths is None else [lengths[b] for b in rows],
                         reverse=keywords.get("reverse", False), **options)  # fmt: skip

    def check(dx, dparams, dstate):
        expected_dx = np.zeros_like(x)
        expected_dx[:, rows] = oracle["x"]
        np.testing.assert_allclose(_numpy(dx), expected_dx, rtol=1e-10, atol=1e-10)
        for name in _oracle_params(params).arrays():
            if getattr(params, name) is None:
                assert getattr(dparams, name) is None
                continue
            np.testing.assert_allclose(_numpy(getattr(dparams, name)), oracle[f"params.{name}"], rtol=1e-9,
                                       atol=1e-10, err_msg=name)  # fmt: skip
        for ours, theirs, d in zip(dstate, oracle["state"], d_final if kind == "lstm" else (d_final,)):
            expected = np.array(d, copy=True)  # a row of length 0 passes its final-state cotangent straight through
            expected[rows] = theirs
            np.testing.assert_allclose(_numpy(ours), expected, rtol=1e-10, atol=1e-10)

    # torch autograd through the delegated forward
    leaf_x, leaf_params, leaf_state = _leaves(x), _leaves(params), _leaves(state)
    out = FUNCTIONS[kind](leaf_x, leaf_params, leaf_state, **call)
    cotangents = [_to_torch(dy), *map(_to_torch, d_final if kind == "lstm" else (d_final,))]
    loss = sum((o * c).sum() for o, c in zip(_flat(kind, out), cotangents))
    present = list(leaf_params.arrays())
    grads = torch.autograd.grad(loss, [leaf_x, *leaf_params.arrays().values(), *_flat(kind, (None, leaf_state))[1:]])
    dparams = dataclasses.replace(params, **dict(zip(present, grads[1:])))
    check(grads[0], dparams, grads[1 + len(present) :])
    assert watch == [kind]

    # ar.vjp (the torch gradient path), twice, and the core's vjp
    for impl in (None, None, "generic"):
        out, pullback = ar.vjp(FUNCTIONS[kind], _to_torch(x), _to_torch(params), _to_torch(state), **call, impl=impl)
        dx, dparams, dstate = pullback((_to_torch(dy), _to_torch(d_final)))
        check(dx, dparams, dstate if kind == "lstm" else (dstate,))
    assert watch == [kind] * 3


def test_vjp_partial_cotangents_and_no_grad(watch):
    rng = np.random.default_rng(7)
    params = _to_torch(random_params("lstm", INPUT, HIDDEN, seed=8))
    x = _to_torch(rng.standard_normal((T, B, INPUT)))
    dc = _to_torch(rng.standard_normal((B, HIDDEN)))
    for cotangent in [(None, (None, dc)), None]:
        with torch.no_grad():
            (y, _), pullback = ar.vjp(ar.lstm, x, params, lengths=[1, 6, 3, 0])
            dx, dparams = pullback(cotangent)
        (_, _), generic_pullback = ar.vjp(ar.lstm, x, params, lengths=[1, 6, 3, 0], impl="generic")
        gx, gparams = generic_pullback(cotangent)
        assert not y.requires_grad
        np.testing.assert_allclose(_numpy(dx), _numpy(gx), rtol=1e-10, atol=1e-12)
        for name in params.arrays():
            np.testing.assert_allclose(_numpy(getattr(dparams, name)), _numpy(getattr(gparams, name)), atol=1e-12)
    assert watch == ["lstm", "lstm"]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_torch_func_grad_wrt_x_and_params_equals_autograd(watch, kind):
    rng = np.random.default_rng(9)
    params = _to_torch(random_params(kind, INPUT, HIDDEN, seed=10, **({"proj_size": 2} if kind == "lstm" else {})))
    params = dataclasses.replace(params, bias_ih=None)  # a None field must survive the pytree round trip
    x = _to_torch(rng.standard_normal((T, B, INPUT)))
    weights = _to_torch(rng.standard_normal((T, B, params.output_size if kind == "lstm" else HIDDEN)))

    def loss(p, inputs):
        return (FUNCTIONS[kind](inputs, p, lengths=[6, 2, 0, 4], reverse=True)[0] * weights).sum()

    by_func = torch.func.grad(loss, argnums=(0, 1))(params, x)
    assert isinstance(by_func[0], type(params)) and by_func[0].bias_ih is None
    leaf_x, leaf_params = _leaves(x), _leaves(params)
    by_autograd = torch.autograd.grad(loss(leaf_params, leaf_x), [leaf_x, *leaf_params.arrays().values()])
    np.testing.assert_allclose(_numpy(by_func[1]), _numpy(by_autograd[0]), rtol=1e-10, atol=1e-12)
    for name, expected in zip(leaf_params.arrays(), by_autograd[1:]):
        np.testing.assert_allclose(_numpy(getattr(by_func[0], name)), _numpy(expected), rtol=1e-10, atol=1e-12)
    assert watch == [kind]  # under torch.func the core runs (torch's fused RNN ops refuse its wrapped tensors)
    said = ar.explain(FUNCTIONS[kind], x, params)
    assert said.startswith(f"torch: nn.{kind.upper()} with the call's weights ("), said


def test_params_are_torch_pytrees():
    from torch.utils import _pytree as pytree

    params = _to_torch(random_params("lstm", INPUT, HIDDEN, seed=11, proj_size=2))
    params = dataclasses.replace(params, bias_hh=None)
    leaves, spec = pytree.tree_flatten(params)
    assert [id(leaf) for leaf in leaves] == [id(value) for value in params.arrays().values()]
    rebuilt = pytree.tree_unflatten([leaf * 2 for leaf in leaves], spec)
    assert type(rebuilt) is type(params) and rebuilt.bias_hh is None and rebuilt.peephole_i is None
    assert torch.equal(rebuilt.weight_hr, params.weight_hr * 2)
    model = ar.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0, backend="torch")
    assert len(pytree.tree_leaves(model.params)) == 2 * 2 * 4


def test_import_arrayrnn_imports_no_torch():
    code = "import sys, arrayrnn, numpy as np; arrayrnn.lstm(np.zeros((2, 1, 3)), arrayrnn.init_lstm(3, 4, dtype='float64')); print('torch' in sys.modules)"  # noqa: E501
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# ----------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_models_delegate_every_layer(watch, kind):
    rng = np.random.default_rng(12)
    classes = {"lstm": ar.LSTM, "gru": ar.GRU, "rnn": ar.RNN}
    extra = {"proj_size": 2} if kind == "lstm" else {"nonlinearity": "relu"} if kind == "rnn" else {}
    model = classes[kind](INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, seed=0,
                          dtype="float64", **extra)  # fmt: skip
    torch_model = model.to("torch")
    x = rng.standard_normal((B, T, INPUT))
    lengths = [6, 3, 1, 5]
    y, final = torch_model(_to_torch(x), lengths=lengths)
    assert watch == [kind] * 4
    core = torch_model(_to_torch(x), lengths=lengths, impl="generic")
    np.testing.assert_allclose(_numpy(y), _numpy(core[0]), rtol=1e-10, atol=1e-12)
    zeros = [np.zeros(tuple(s.shape)) for s in (final if kind == "lstm" else (final,))]
    state = tuple(zeros) if kind == "lstm" else zeros[0]
    dy = rng.standard_normal(tuple(y.shape))
    oracle = model_grads(model, x, state, (dy, state), lengths=lengths)
    (_, _), pullback = ar.vjp(torch_model.apply, torch_model.params, _to_torch(x), lengths=lengths)
    dparams, dx = pullback((_to_torch(dy), None))
    assert watch == [kind] * 8
    np.testing.assert_allclose(_numpy(dx), oracle["x"], rtol=1e-9, atol=1e-10)
    for layer, direction, suffix in [(0, 0, "l0"), (1, 1, "l1_reverse")]:
        for name, value in dparams[layer][direction].arrays().items():
            np.testing.assert_allclose(_numpy(value), oracle[f"{name}_{suffix}"], rtol=1e-9, atol=1e-10)
    lines = ar.explain(torch_model, _to_torch(x)).splitlines()
    assert len(lines) == 4 and all(f"torch: nn.{kind.upper()} with the call's weights (" in line for line in lines)


# ----------------------------------------------------------------------------------------------
# what declines: the core runs, and explain says why


def _declines():
    lstm = random_params("lstm", INPUT, HIDDEN, seed=13)
    rnn = random_params("rnn", INPUT, HIDDEN, seed=13)
    gru = random_params("gru", INPUT, HIDDEN, seed=13)
    cases = [
        ("peepholes", ar.lstm, random_params("lstm", INPUT, HIDDEN, seed=13, peepholes=True), {}, "peepholes"),
        ("coupled", ar.lstm, lstm, {"coupled": True}, "coupled=True"),
        ("clip", ar.lstm, lstm, {"clip": 0.5}, "clip=0.5"),
        ("forget-gate-off", ar.lstm, lstm, {"forget_gate": False}, "forget_gate=False"),
        ("layer-norm", ar.gru, random_params("gru", INPUT, HIDDEN, seed=13, layer_norm=True), {}, "layer_norm"),
        ("mask", ar.rnn, rnn, {"mask": np.ones((T, B), bool)}, "mask="),
        ("carry", ar.gru, gru, {"lengths": [6, 2, 3, 1], "padding": "carry"}, "padding='carry'"),
        ("zoneout", ar.lstm, lstm, {"zoneout": 0.3}, "zoneout"),
        ("gru-before-reset", ar.gru, gru, {"linear_before_reset": False}, "linear_before_reset=False"),
        ("float16-cpu", ar.rnn, random_params("rnn", INPUT, HIDDEN, seed=13, dtype="float16"), {}, "float16 on cpu"),
    ]
    return cases


@pytest.mark.parametrize("case_id,function,params,keywords,reason", _declines(), ids=[c[0] for c in _declines()])
def test_declines_run_the_core_and_say_why(watch, case_id, function, params, keywords, reason):
    rng = np.random.default_rng(14)
    x = _to_torch(rng.standard_normal((T, B, INPUT)).astype(params.weight_ih.dtype))
    params = _to_torch(params)
    keywords = {name: _to_torch(value) if isinstance(value, np.ndarray) else value for name, value in keywords.items()}
    said = ar.explain(function, x, params, **keywords)
    assert said.startswith("generic: ") and reason in said and "the array-API core runs" in said, said
    got = function(x, params, **keywords)
    core = function(x, params, **keywords, impl="generic")
    kind = "lstm" if function is ar.lstm else "other"
    for ours, generic in zip(_flat(kind, got), _flat(kind, core)):
        np.testing.assert_array_equal(_numpy(ours), _numpy(generic))  # the same code ran
    if params.weight_ih.dtype != torch.float16:
        out, pullback = ar.vjp(function, x, params, **keywords)
        pullback((torch.ones_like(out[0]), None))
    assert watch == []


def test_empty_batch_declines(watch):
    params = _to_torch(random_params("gru", INPUT, HIDDEN, seed=15))
    x = _to_torch(np.zeros((T, 0, INPUT)))
    assert ar.explain(ar.gru, x, params).startswith("generic: empty batch")
    y, h = ar.gru(x, params)
    assert tuple(y.shape) == (T, 0, HIDDEN) and tuple(h.shape) == (0, HIDDEN)
    assert watch == []


def test_explain_names_the_torch_path():
    params = _to_torch(random_params("lstm", INPUT, HIDDEN, seed=16))
    x = _to_torch(np.zeros((T, B, INPUT)))
    said = ar.explain(ar.lstm, x, params)
    assert said.startswith("torch: nn.LSTM with the call's weights (CPU kernels, cuDNN on CUDA"), said
    assert ar.explain(ar.vjp, ar.lstm, x, params).endswith("backward by torch.autograd)")
    assert ar.explain(ar.lstm, x, params, impl="generic") == "generic: impl='generic' asked for the array-API core"
    peepholes = _to_torch(random_params("lstm", INPUT, HIDDEN, seed=16, peepholes=True))
    said = ar.explain(ar.lstm, x, peepholes)
    assert said == (
        "generic: peepholes (peephole_i, peephole_f, peephole_o): not in torch.nn.LSTM, the array-API core runs"
    ), said


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_nan_padding_stays_out_of_outputs_and_gradients(watch, kind):
    rng = np.random.default_rng(17)
    params = _to_torch(random_params(kind, INPUT, HIDDEN, seed=18))
    x = rng.standard_normal((T, B, INPUT))
    lengths = [6, 0, 3, 2]
    for b, n in enumerate(lengths):
        x[n:, b] = np.nan  # padding that must never be read
    x = _to_torch(x)
    for reverse in (False, True):
        out, pullback = ar.vjp(FUNCTIONS[kind], x, params, lengths=lengths, reverse=reverse)
        d_final = tuple(map(torch.ones_like, out[1])) if kind == "lstm" else torch.ones_like(out[1])
        grads = pullback((torch.ones_like(out[0]), d_final))
        core_out, core_pullback = ar.vjp(FUNCTIONS[kind], x, params, lengths=lengths, reverse=reverse, impl="generic")
        core_grads = core_pullback((torch.ones_like(out[0]), None))
        assert torch.isfinite(out[0]).all() and torch.isfinite(grads[0]).all()
        for name, value in grads[1].arrays().items():
            assert torch.isfinite(value).all(), name
        np.testing.assert_allclose(_numpy(out[0]), _numpy(core_out[0]), rtol=1e-10, atol=1e-12)
        assert core_grads is not None
    assert watch == [kind, kind]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_cuda_runs_cudnn_and_leaves_the_weights_where_they_are(watch, kind):
    rng = np.random.default_rng(19)
    params = ar.to_backend(random_params(kind, INPUT, HIDDEN, seed=20), "torch", device="cuda")
    x = ar.to_backend(rng.standard_normal((T, B, INPUT)), "torch", device="cuda")
    pointers = {name: value.data_ptr() for name, value in params.arrays().items()}
    lengths = torch.tensor([6, 0, 3, 2], device="cuda")
    said = ar.explain(FUNCTIONS[kind], x, params, lengths=lengths)
    assert said.startswith(f"torch: nn.{kind.upper()} with the call's weights (cuDNN on CUDA"), said
    for keywords in ({}, {"lengths": lengths, "reverse": True}):
        got = FUNCTIONS[kind](x, params, **keywords)
        core = FUNCTIONS[kind](x, params, **keywords, impl="generic")
        for ours, generic in zip(_flat(kind, got), _flat(kind, core)):
            assert ours.device == x.device
            np.testing.assert_allclose(ours.cpu().numpy(), generic.cpu().numpy(), rtol=1e-9, atol=1e-10)
        out, pullback = ar.vjp(FUNCTIONS[kind], x, params, **keywords)
        dx, dparams = pullback((torch.ones_like(out[0]), None))
        _, core_pullback = ar.vjp(FUNCTIONS[kind], x, params, **keywords, impl="generic")
        gx, gparams = core_pullback((torch.ones_like(out[0]), None))
        np.testing.assert_allclose(dx.cpu().numpy(), gx.cpu().numpy(), rtol=1e-9, atol=1e-10)
        for name in params.arrays():
            np.testing.assert_allclose(getattr(dparams, name).cpu().numpy(), getattr(gparams, name).cpu().numpy(),
                                       rtol=1e-9, atol=1e-9)  # fmt: skip
    assert {name: value.data_ptr() for name, value in params.arrays().items()} == pointers
    assert watch == [kind] * 4
    half = ar.to_backend(random_params(kind, INPUT, HIDDEN, seed=20, dtype="float16"), "torch", device="cuda")
    x_half = x.to(torch.float16)
    y_half = FUNCTIONS[kind](x_half, half)[0]
    y_core = FUNCTIONS[kind](x_half, half, impl="generic")[0]
    np.testing.assert_allclose(y_half.float().cpu().numpy(), y_core.float().cpu().numpy(), atol=1e-2)
