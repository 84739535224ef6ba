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
from tests.conftest import need
from tests.support import random_params
from tests.variants import GRADIENT_VARIANTS, MODEL_VARIANTS
from tests.variants import variant_id as _ids

SEQUENCES = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
CELLS = {"rnn": ar.rnn_cell, "lstm": ar.lstm_cell, "gru": ar.gru_cell}


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


def _flatten(tree, path=()):
    """``(path, leaf)`` for every array or ``None`` in nested params objects, tuples and lists."""
    if dataclasses.is_dataclass(tree):
        return [item for f in dataclasses.fields(tree) for item in _flatten(getattr(tree, f.name), (*path, f.name))]
    if isinstance(tree, (tuple, list)):
        return [item for k, part in enumerate(tree) for item in _flatten(part, (*path, k))]
    return [(path, tree)]


def _get(tree, path):
    for key in path:
        tree = getattr(tree, key) if isinstance(key, str) else tree[key]
    return tree


def _replace(tree, path, value):
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(key, str):
        return dataclasses.replace(tree, **{key: _replace(getattr(tree, key), rest, value)})
    parts = list(tree)
    parts[key] = _replace(parts[key], rest, value)
    return type(tree)(parts)


def check_directional_derivatives(backend, function, args, options, seed=0, eps=1e-6):
    """<pullback(u), v> == d/de <u, f(args + e v)> for a random direction v in each leaf separately.

    ``args`` are the positional arguments as NumPy (float64); the finite differences run the
    public forward on NumPy, the vjp runs on ``backend``.
    """
    rng = np.random.default_rng(seed)
    out_numpy = function(*args, **options)
    cotangent = _like(out_numpy, rng)
    backend_options = {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    out, pullback = ar.vjp(function, *(backend.tree(a) for a in args), **backend_options)
    for got, want in zip(_parts(out), _parts(out_numpy)):
        np.testing.assert_allclose(backend.numpy(got, "float64"), want, rtol=1e-12, atol=1e-12)
    grads = pullback(backend.tree(cotangent))
    assert isinstance(grads, tuple) and len(grads) == len(args)

    def objective(arguments):
        outputs = _parts(function(*arguments, **options))
        return sum(float(np.sum(a * u)) for a, u in zip(outputs, _parts(cotangent)))

    for path, value in _flatten(tuple(args)):
        grad = _get(grads, path) if _get_parent_exists(grads, path) else None
        if value is None:
            assert grad is None, f"gradient at {path} should be None"
            continue
        assert type(_get(grads, path[:-1])) is type(_get(args, path[:-1])), f"structure differs at {path[:-1]}"
        direction = rng.standard_normal(value.shape)
        plus = objective(_replace(tuple(args), path, value + eps * direction))
        minus = objective(_replace(tuple(args), path, value - eps * direction))
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.sum(backend.numpy(grad, "float64") * direction))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (path, numeric, analytic)


def _get_parent_exists(tree, path):
    for key in path[:-1]:
        tree = getattr(tree, key) if isinstance(key, str) else tree[key]
        if tree is None:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# finite differences: every function and option


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS, ids=_ids)
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_sequence_finite_differences(backend, variant, lengths, reverse):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(7)
    params = random_params(kind, 3, 5, seed=3, **params_options)
    args = (rng.standard_normal((6, 4, 3)), params, _state(kind, params, (4,), rng))
    options = {**call_options, "reverse": reverse}
    if lengths is not None:
        options["lengths"] = np.array(lengths)
    check_directional_derivatives(backend, SEQUENCES[kind], args, options)


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
    x_batch_first = rng.standard_normal((3, 5, 3))
    state = _state(kind, params, (3,), rng)
    options = {"batch_first": True, "lengths": np.array([5, 2, 4])}
    check_directional_derivatives(backend, function, (x_batch_first, params, state), options)
    unbatched = (rng.standard_normal((5, 3)), params, _state(kind, params, (), rng))
    check_directional_derivatives(backend, function, unbatched, {"reverse": True})
    check_directional_derivatives(backend, function, (rng.standard_normal((4, 2, 3)), params, None), {})
    # one gradient per positional argument: a state passed by keyword is not differentiated
    _, pullback = ar.vjp(
        function, backend.asarray(x_batch_first), backend.tree(params), state=backend.tree(state), batch_first=True
    )
    assert len(pullback(None)) == 2


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS, ids=_ids)
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_cell_finite_differences(backend, variant, unbatched):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(13)
    params = random_params(kind, 3, 5, seed=4, **params_options)
    batch_shape = () if unbatched else (4,)
    args = (rng.standard_normal((*batch_shape, 3)), _state(kind, params, batch_shape, rng), params)
    check_directional_derivatives(backend, CELLS[kind], args, call_options)


def _model_ids(variant):
    kind, model_options, apply_options = variant
    return "-".join([kind] + [f"{k}={v}" for k, v in model_options.items()] + (["lengths"] if apply_options else []))


def _model_state(model, batch_shape, rng):
    layers = model.num_layers * model.num_directions
    if model.kind == "lstm":
        return (
            rng.standard_normal((layers, *batch_shape, model.output_size)),
            rng.standard_normal((layers, *batch_shape, model.hidden_size)),
        )
    return rng.standard_normal((layers, *batch_shape, model.hidden_size))


def _model(kind, model_options, seed=0):
    cls = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}[kind]
    return cls(3, 4, seed=seed, dtype="float64", backend="numpy", **model_options)


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=_model_ids)
def test_model_apply_finite_differences(backend, variant):
    kind, model_options, apply_options = variant
    rng = np.random.default_rng(41)
    model = _model(kind, model_options)
    steps, batch = 5, 3
    x = rng.standard_normal((batch, steps, 3) if model.batch_first else (steps, batch, 3))
    options = {k: np.array(v) if isinstance(v, list) else v for k, v in apply_options.items()}
    check_directional_derivatives(backend, model.apply, (model.params, x, _model_state(model, (batch,), rng)), options)
    # unbatched, no state
    check_directional_derivatives(backend, model.apply, (model.params, rng.standard_normal((steps, 3)), None), {})


# ----------------------------------------------------------------------------------------------
# torch.autograd with the same weights


# kind, params options, T, B, lengths, reverse, nonlinearity
TORCH_CONFIGURATIONS = [
    ("rnn", {}, 7, 2, [4, 7], False, "tanh"),
    ("rnn", {"bias": False}, 6, 4, [6, 3, 1, 5], True, "relu"),
    ("rnn", {}, 3, 4, None, True, "relu"),
    ("lstm", {"proj_size": 3}, 8, 3, [8, 2, 5], True, "tanh"),
    ("lstm", {"proj_size": 1}, 6, 2, None, False, "tanh"),
    ("lstm", {"bias": False}, 5, 4, [1, 5, 3, 4], False, "tanh"),
    ("gru", {}, 8, 3, [8, 2, 7], True, "tanh"),
    ("gru", {"bias": False}, 6, 1, None, False, "tanh"),
    ("gru", {}, 2, 4, [2, 1, 2, 1], False, "tanh"),
]


def _compare(got, want, tol):
    got = np.asarray(got, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-4)])
@pytest.mark.parametrize("configuration", TORCH_CONFIGURATIONS, ids=lambda c: f"{c[0]}-T{c[2]}-B{c[3]}")
def test_sequence_matches_torch_autograd(backend, configuration, dtype, tol):
    need("torch")
    from tests.torch_grad_oracle import layer_grads

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


@pytest.mark.parametrize("variant", [v for v in GRADIENT_VARIANTS if v[1].get("peepholes") or v[2]], ids=_ids)
def test_sequence_options_match_torch_autograd_of_the_equations(backend, variant):
    """Peepholes, coupled, clip, relu and linear_before_reset=False: autograd through the published equations."""
    need("torch")
    from tests.torch_grad_oracle import equation_grads

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
    from tests.torch_grad_oracle import cell_grads

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


# kind, model options, T, B, lengths
TORCH_MODEL_CONFIGURATIONS = [
    ("lstm", {"num_layers": 2, "bidirectional": True, "proj_size": 3}, 7, 4, [7, 2, 5, 1]),
    ("lstm", {"num_layers": 3, "batch_first": True, "bias": False}, 6, 3, None),
    ("gru", {"num_layers": 3, "bidirectional": True, "batch_first": True}, 6, 3, [3, 6, 1]),
    ("gru", {"num_layers": 1}, 8, 2, None),
    ("rnn", {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu", "bias": False}, 5, 4, [5, 4, 2, 3]),
    ("rnn", {"num_layers": 2, "batch_first": True}, 5, 2, [2, 5]),
]


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-8), ("float32", 1e-4)])
@pytest.mark.parametrize("configuration", TORCH_MODEL_CONFIGURATIONS, ids=lambda c: f"{c[0]}-L{c[1]['num_layers']}")
def test_model_apply_matches_torch_autograd(backend, configuration, dtype, tol):
    need("torch")
    from tests.torch_grad_oracle import model_grads

    kind, model_options, steps, batch, lengths = configuration
    rng = np.random.default_rng(steps * 7 + batch)
    cls = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}[kind]
    model = cls(4, 5, seed=steps, dtype=dtype, backend="numpy", **model_options)
    shape = (batch, steps, 4) if model.batch_first else (steps, batch, 4)
    x = rng.standard_normal(shape).astype(dtype)
    state = _model_state(model, (batch,), rng)
    state = tuple(s.astype(dtype) for s in state) if kind == "lstm" else state.astype(dtype)
    out = model(x, state, lengths=lengths)
    cotangent = (_like(out[0], rng), _like(out[1], rng))
    want = model_grads(model, x, state, cotangent, lengths=lengths, dtype=np.dtype(dtype).type)
    lengths_b = None if lengths is None else backend.asarray(np.array(lengths))
    backend_model = model.to(backend.name, device=backend.device)
    _, pullback = ar.vjp(
        backend_model.apply, backend_model.params, backend.asarray(x), backend.tree(state), lengths=lengths_b
    )
    d_params, dx, d_state = pullback(backend.tree(cotangent))
    _compare(backend.numpy(dx, dtype), want["x"], tol)
    for k, part in enumerate(d_state if kind == "lstm" else [d_state]):
        _compare(backend.numpy(part, dtype), want["state"][k], tol)
    grads_by_name = cls.from_params(d_params, batch_first=model.batch_first).state_dict()
    assert set(grads_by_name) == {k for k in want if k not in ("x", "state")}
    for name, value in grads_by_name.items():
        _compare(backend.numpy(value, dtype), want[name], tol)


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
    for kind, params_options, call_options in GRADIENT_VARIANTS:
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
