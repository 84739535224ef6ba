"""ar.vjp for cells and sequences: finite differences and torch.autograd, on every backend.

Oracles: central finite differences of the public forward functions in float64 (directional
derivatives, one direction per differentiable leaf), torch.nn layers/cells under autograd, and the
published equations under torch autograd for the options torch.nn lacks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar

from .conftest import need
from .support import random_params

SEQUENCES = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
CELLS = {"rnn": ar.rnn_cell, "lstm": ar.lstm_cell, "gru": ar.gru_cell}

# kind, params options, call options
VARIANTS = [
    ("rnn", {}, {"nonlinearity": "tanh"}),
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}, {}),
    ("lstm", {}, {}),
    ("lstm", {"proj_size": 3}, {}),
    ("lstm", {"peepholes": True}, {}),
    ("lstm", {"peepholes": True, "proj_size": 2}, {"coupled": True, "clip": 0.8}),
    ("lstm", {"bias": False}, {"clip": 0.6}),
    ("lstm", {}, {"coupled": True}),
    ("gru", {}, {}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {"bias": False}, {"linear_before_reset": False}),
]


def _ids(variant):
    kind, params_options, call_options = variant
    return "-".join([kind] + [f"{k}={v}" for k, v in {**params_options, **call_options}.items()])


def _state(kind, params, batch_shape, rng, dtype="float64"):
    if kind == "lstm":
        return (
            rng.standard_normal((*batch_shape, params.output_size)).astype(dtype),
            rng.standard_normal((*batch_shape, params.hidden_size)).astype(dtype),
        )
    return rng.standard_normal((*batch_shape, params.hidden_size)).astype(dtype)


def _parts(value):
    """Flatten an output / state structure into a list of arrays (``None`` skipped)."""
    if value is None:
        return []
    if isinstance(value, (tuple, list)):
        return [a for part in value for a in _parts(part)]
    return [value]


def _like(structure, rng):
    """A random cotangent with the structure and shapes of ``structure``."""
    if isinstance(structure, (tuple, list)):
        return tuple(_like(part, rng) for part in structure)
    return rng.standard_normal(structure.shape).astype(np.asarray(structure).dtype)


def _leaves(kind, arguments):
    """Named differentiable NumPy leaves of ``{"x", "state", "params"}`` (``None`` skipped)."""
    leaves = {"x": arguments["x"]}
    state = arguments["state"]
    if state is not None:
        for k, part in enumerate(state if kind == "lstm" else [state]):
            leaves[f"state{k}"] = part
    for field in dataclasses.fields(arguments["params"]):
        value = getattr(arguments["params"], field.name)
        if value is not None:
            leaves[f"params.{field.name}"] = value
    return leaves


def _with_leaf(kind, arguments, name, value):
    arguments = dict(arguments)
    if name == "x":
        arguments["x"] = value
    elif name.startswith("state"):
        parts = list(arguments["state"]) if kind == "lstm" else [arguments["state"]]
        parts[int(name[5:])] = value
        arguments["state"] = tuple(parts) if kind == "lstm" else parts[0]
    else:
        arguments["params"] = dataclasses.replace(arguments["params"], **{name[7:]: value})
    return arguments


def _grad_leaves(kind, arguments, grads, order):
    """The pullback's gradients keyed like :func:`_leaves` (as NumPy)."""
    by_arg = dict(zip(order, grads))
    leaves = {"x": by_arg["x"]}
    if arguments["state"] is not None:
        state_grad = by_arg["state"]
        for k, part in enumerate(state_grad if kind == "lstm" else [state_grad]):
            leaves[f"state{k}"] = part
    for field in dataclasses.fields(arguments["params"]):
        value = getattr(by_arg["params"], field.name)
        if getattr(arguments["params"], field.name) is None:
            assert value is None, f"gradient for params.{field.name} should be None"
        else:
            leaves[f"params.{field.name}"] = value
    return leaves


def _call(function, arguments, order, options):
    return function(*(arguments[name] for name in order), **options)


def check_directional_derivatives(backend, function, kind, arguments, order, options, seed=0, eps=1e-6):
    """<pullback(u), v> == d/de <u, f(args + e v)> for a random direction v in each leaf separately."""
    rng = np.random.default_rng(seed)
    out_numpy = _call(function, arguments, order, options)
    cotangent = _like(out_numpy, rng)
    backend_options = {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    backend_arguments = {name: backend.tree(value) for name, value in arguments.items()}
    out, pullback = ar.vjp(function, *(backend_arguments[name] for name in order), **backend_options)
    for got, want in zip(_parts(out), _parts(out_numpy)):
        np.testing.assert_allclose(backend.numpy(got, "float64"), want, rtol=1e-12, atol=1e-12)
    grads = pullback(backend.tree(cotangent))
    assert isinstance(grads, tuple) and len(grads) == len(order)
    grad_leaves = _grad_leaves(kind, arguments, grads, order)
    leaves = _leaves(kind, arguments)
    assert set(grad_leaves) == set(leaves)

    def objective(args):
        return sum(
            float(np.sum(a * u)) for a, u in zip(_parts(_call(function, args, order, options)), _parts(cotangent))
        )

    for name, value in leaves.items():
        direction = rng.standard_normal(value.shape)
        plus = objective(_with_leaf(kind, arguments, name, value + eps * direction))
        minus = objective(_with_leaf(kind, arguments, name, value - eps * direction))
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.sum(backend.numpy(grad_leaves[name], "float64") * direction))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (name, numeric, analytic)


# ----------------------------------------------------------------------------------------------
# finite differences: every function and option


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_sequence_finite_differences(backend, variant, lengths, reverse):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(7)
    params = random_params(kind, 3, 5, seed=3, **params_options)
    arguments = {"x": rng.standard_normal((6, 4, 3)), "params": params, "state": _state(kind, params, (4,), rng)}
    options = {**call_options, "reverse": reverse}
    if lengths is not None:
        options["lengths"] = np.array(lengths)
    check_directional_derivatives(backend, SEQUENCES[kind], kind, arguments, ["x", "params", "state"], options)


def test_options_are_exercised():
    """The clip and relu variants above really cut: otherwise their gradient tests could not fail."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4, 3))
    for params_options, clip in (({"peepholes": True, "proj_size": 2}, 0.8), ({"bias": False}, 0.6)):
        params = random_params("lstm", 3, 5, seed=3, **params_options)
        clipped, _ = ar.lstm(x, params, clip=clip)
        assert not np.allclose(clipped, ar.lstm(x, params)[0])
    relu_y, _ = ar.rnn(x, random_params("rnn", 3, 5, seed=3), nonlinearity="relu")
    assert 0 < np.mean(relu_y == 0) < 1


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_sequence_layouts_finite_differences(backend, kind):
    """batch_first, unbatched and state=None, each against finite differences."""
    rng = np.random.default_rng(11)
    extra = {"proj_size": 2} if kind == "lstm" else {}
    params = random_params(kind, 3, 4, seed=5, **extra)
    function = SEQUENCES[kind]
    batch_first = {"x": rng.standard_normal((3, 5, 3)), "params": params, "state": _state(kind, params, (3,), rng)}
    check_directional_derivatives(
        backend,
        function,
        kind,
        batch_first,
        ["x", "params", "state"],
        {"batch_first": True, "lengths": np.array([5, 2, 4])},
    )
    unbatched = {"x": rng.standard_normal((5, 3)), "params": params, "state": _state(kind, params, (), rng)}
    check_directional_derivatives(backend, function, kind, unbatched, ["x", "params", "state"], {"reverse": True})
    no_state = {"x": rng.standard_normal((4, 2, 3)), "params": params, "state": None}
    check_directional_derivatives(backend, function, kind, no_state, ["x", "params", "state"], {})
    # a state passed by keyword is an option: gradients come back for the positional arguments only
    x_only = {"x": batch_first["x"], "params": params}
    _, pullback = ar.vjp(function, backend.asarray(x_only["x"]), backend.tree(params), batch_first=True)
    assert len(pullback(None)) == 2


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_cell_finite_differences(backend, variant, unbatched):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(13)
    params = random_params(kind, 3, 5, seed=4, **params_options)
    batch_shape = () if unbatched else (4,)
    arguments = {
        "x": rng.standard_normal((*batch_shape, 3)),
        "params": params,
        "state": _state(kind, params, batch_shape, rng),
    }
    check_directional_derivatives(backend, CELLS[kind], kind, arguments, ["x", "state", "params"], call_options)


# ----------------------------------------------------------------------------------------------
# torch.autograd with the same weights


def _torch_configurations(count, seed):
    """Random (kind, params options, lengths, reverse, nonlinearity, batch) configurations torch.nn supports."""
    rng = np.random.default_rng(seed)
    configurations = []
    for k in range(count):
        kind = ["rnn", "lstm", "gru"][k % 3]
        batch = int(rng.integers(1, 5))
        steps = int(rng.integers(1, 9))
        params_options = {"bias": bool(rng.integers(0, 4) > 0)}
        if kind == "lstm" and rng.integers(0, 2):
            params_options["proj_size"] = int(rng.integers(1, 4))
        lengths = [int(n) for n in rng.integers(1, steps + 1, size=batch)] if rng.integers(0, 2) else None
        configurations.append(
            (
                kind,
                params_options,
                steps,
                batch,
                lengths,
                bool(rng.integers(0, 2)),
                ["tanh", "relu"][int(rng.integers(0, 2))],
            )
        )
    return configurations


def _compare(got, want, tol):
    got = np.asarray(got, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-4)])
@pytest.mark.parametrize("configuration", _torch_configurations(9, seed=21), ids=lambda c: f"{c[0]}-T{c[2]}-B{c[3]}")
def test_sequence_matches_torch_autograd(backend, configuration, dtype, tol):
    need("torch")
    from .torch_grad_oracle import layer_grads

    kind, params_options, steps, batch, lengths, reverse, nonlinearity = configuration
    rng = np.random.default_rng(steps * 10 + batch)
    params = random_params(kind, 4, 6, seed=steps, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, 4)).astype(dtype)
    state = _state(kind, params, (batch,), rng, dtype)
    options = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    y, final = SEQUENCES[kind](x, params, state, lengths=lengths, reverse=reverse, **options)
    cotangent = (_like(y, rng), _like(final, rng))
    want = layer_grads(
        kind, params, x, state, cotangent, lengths=lengths, reverse=reverse, dtype=np.dtype(dtype).type, **options
    )
    lengths_b = None if lengths is None else backend.asarray(np.array(lengths))
    _, pullback = ar.vjp(
        SEQUENCES[kind],
        backend.asarray(x),
        backend.tree(params),
        backend.tree(state),
        lengths=lengths_b,
        reverse=reverse,
        **options,
    )
    dx, d_params, d_state = pullback(backend.tree(cotangent))
    _compare(backend.numpy(dx, dtype), want["x"], tol)
    for k, part in enumerate(d_state if kind == "lstm" else [d_state]):
        _compare(backend.numpy(part, dtype), want["state"][k], tol)
    for key, value in want.items():
        if key.startswith("params."):
            _compare(backend.numpy(getattr(d_params, key[7:]), dtype), value, tol)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[1].get("peepholes") or v[2]], ids=_ids)
def test_sequence_options_match_torch_autograd_of_the_equations(backend, variant):
    """Peepholes, coupled, clip, relu and linear_before_reset=False: autograd through the published equations."""
    need("torch")
    from .torch_grad_oracle import equation_grads

    kind, params_options, call_options = variant
    rng = np.random.default_rng(17)
    params = random_params(kind, 3, 5, seed=8, **params_options)
    x = rng.standard_normal((7, 3, 3))
    state = _state(kind, params, (3,), rng)
    lengths = [7, 2, 5]
    y, final = SEQUENCES[kind](x, params, state, lengths=np.array(lengths), reverse=True, **call_options)
    cotangent = (_like(y, rng), _like(final, rng))
    want = equation_grads(kind, params, x, state, cotangent, lengths=lengths, reverse=True, **call_options)
    _, pullback = ar.vjp(
        SEQUENCES[kind],
        backend.asarray(x),
        backend.tree(params),
        backend.tree(state),
        lengths=backend.asarray(np.array(lengths)),
        reverse=True,
        **call_options,
    )
    dx, d_params, d_state = pullback(backend.tree(cotangent))
    _compare(backend.numpy(dx), want["x"], 1e-8)
    for k, part in enumerate(d_state if kind == "lstm" else [d_state]):
        _compare(backend.numpy(part), want["state"][k], 1e-8)
    for key, value in want.items():
        if key.startswith("params."):
            _compare(backend.numpy(getattr(d_params, key[7:])), value, 1e-8)


@pytest.mark.parametrize(
    "kind, options", [("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {})]
)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-4)])
def test_cell_matches_torch_autograd(backend, kind, options, dtype, tol):
    need("torch")
    from .torch_grad_oracle import cell_grads

    rng = np.random.default_rng(19)
    params = random_params(kind, 4, 6, seed=9, dtype=dtype)
    x = rng.standard_normal((3, 4)).astype(dtype)
    state = _state(kind, params, (3,), rng, dtype)
    out = CELLS[kind](x, state, params, **options)
    cotangent = _like(out, rng)
    want = cell_grads(kind, params, x, state, cotangent, dtype=np.dtype(dtype).type, **options)
    _, pullback = ar.vjp(CELLS[kind], backend.asarray(x), backend.tree(state), backend.tree(params), **options)
    dx, d_state, d_params = pullback(backend.tree(cotangent))
    _compare(backend.numpy(dx, dtype), want["x"], tol)
    for k, part in enumerate(d_state if kind == "lstm" else [d_state]):
        _compare(backend.numpy(part, dtype), want["state"][k], tol)
    for key, value in want.items():
        if key.startswith("params."):
            _compare(backend.numpy(getattr(d_params, key[7:]), dtype), value, tol)


# ----------------------------------------------------------------------------------------------
# the pullback's contract


def test_none_cotangent_parts_count_as_zeros(backend):
    rng = np.random.default_rng(23)
    params = random_params("lstm", 3, 4, seed=1)
    x, state = rng.standard_normal((5, 2, 3)), _state("lstm", params, (2,), rng)
    out, pullback = ar.vjp(ar.lstm, backend.asarray(x), backend.tree(params), backend.tree(state))
    dy = rng.standard_normal((5, 2, 4))
    zeros = np.zeros((2, 4))
    explicit = pullback((backend.asarray(dy), (backend.asarray(zeros), backend.asarray(zeros))))
    for implicit in (pullback((backend.asarray(dy), None)), pullback((backend.asarray(dy), (None, None)))):
        for a, b in zip(_parts(implicit[0]), _parts(explicit[0])):
            np.testing.assert_array_equal(backend.numpy(a), backend.numpy(b))
        np.testing.assert_array_equal(backend.numpy(implicit[1].weight_hh), backend.numpy(explicit[1].weight_hh))
    nothing = pullback(None)
    assert np.all(backend.numpy(nothing[0]) == 0) and np.all(backend.numpy(nothing[1].weight_ih) == 0)
    # the pullback only reads its tape: a second call gives the same answer
    again = pullback((backend.asarray(dy), (backend.asarray(zeros), backend.asarray(zeros))))
    np.testing.assert_array_equal(backend.numpy(again[2][1]), backend.numpy(explicit[2][1]))


def test_structure_of_gradients():
    rng = np.random.default_rng(29)
    params = random_params("lstm", 3, 4, seed=2, bias=False)
    x = rng.standard_normal((4, 2, 3))
    state_list = [np.zeros((2, 4)), np.zeros((2, 4))]
    (y, _), pullback = ar.vjp(ar.lstm, x, params, state_list)
    dx, d_params, d_state = pullback((np.ones_like(y), None))
    assert isinstance(d_state, list) and len(d_state) == 2
    assert isinstance(d_params, ar.LSTMParams) and d_params.bias_ih is None and d_params.weight_hr is None
    assert dx.shape == x.shape and dx.dtype == x.dtype
    _, pullback = ar.vjp(ar.gru, x, random_params("gru", 3, 4, seed=2), None)
    assert pullback(None)[2] is None


def test_padding_garbage_never_reaches_gradients():
    """NaN in the padded steps of x: the forward ignores it, and so must every gradient."""
    rng = np.random.default_rng(31)
    lengths = np.array([5, 2, 0])
    for kind, params_options, call_options in VARIANTS:
        params = random_params(kind, 3, 4, seed=3, **params_options)
        x = rng.standard_normal((5, 3, 3))
        dirty = x.copy()
        for b, n in enumerate(lengths):
            dirty[n:, b] = np.nan
        for reverse in (False, True):
            outs = []
            for data in (x, dirty):
                out, pullback = ar.vjp(
                    SEQUENCES[kind], data, params, None, lengths=lengths, reverse=reverse, **call_options
                )
                outs.append(pullback((np.ones_like(out[0]), _like(out[1], np.random.default_rng(0))))[:2])
            clean, noisy = outs
            assert np.all(np.isfinite(noisy[0]))  # the output does not depend on padding: dx is 0 there
            np.testing.assert_allclose(noisy[0], clean[0], atol=1e-12)
            for field in dataclasses.fields(params):
                if getattr(params, field.name) is not None:
                    np.testing.assert_allclose(getattr(noisy[1], field.name), getattr(clean[1], field.name), atol=1e-12)


def test_dx_is_zero_at_padded_steps():
    params = random_params("gru", 3, 4, seed=4)
    x = np.random.default_rng(37).standard_normal((5, 2, 3))
    (y, h), pullback = ar.vjp(ar.gru, x, params, None, lengths=[5, 2])
    dx = pullback((np.ones_like(y), np.ones_like(h)))[0]
    assert np.all(dx[2:, 1] == 0) and np.all(dx[:2, 1] != 0)


def test_bad_calls_raise_clear_errors(backend):
    params = backend.tree(random_params("gru", 3, 4, seed=5))
    x = backend.asarray(np.zeros((4, 2, 3)))
    (y, h), pullback = ar.vjp(ar.gru, x, params)
    with pytest.raises(ValueError, match=r"out_cotangent\[0\] must have the shape"):
        pullback((backend.asarray(np.zeros((4, 2, 5))), None))
    with pytest.raises(TypeError, match=r"out_cotangent\[1\] must have the output's dtype \S*float64, got \S*float32"):
        pullback((None, backend.asarray(np.zeros((2, 4), dtype=np.float32))))
    with pytest.raises(TypeError, match="out_cotangent must be None or a tuple of 2"):
        pullback(backend.asarray(np.zeros((4, 2, 4))))
    with pytest.raises(TypeError, match="vjp supports"):
        ar.vjp(np.tanh, x)
    with pytest.raises(ValueError, match="x has 3 features"):
        ar.vjp(ar.lstm, x, backend.tree(random_params("lstm", 2, 4, seed=1)))
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        ar.vjp(ar.gru, x, params, colour="red")
    if backend.name != "numpy":
        with pytest.raises(ar.BackendMismatchError, match="out_cotangent"):
            pullback((np.zeros((4, 2, 4)), None))
