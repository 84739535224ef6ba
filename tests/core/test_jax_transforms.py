"""arrayrnn under ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (float64): traced arrays, params pytrees.

Oracles: an independent float64 NumPy GRU loop from the equations; the hand-written BPTT of ``ar.vjp`` for
``jax.grad`` (JAX autodiff through the forward is a second, independent derivation); the batched call for ``vmap``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params

jax = need("jax")
jax.config.update("jax_enable_x64", True)  # as tests/support.py does for the cross-backend suite
jnp = jax.numpy

T, B, INPUT, HIDDEN = 5, 3, 3, 4
RTOL, ATOL = 1e-10, 1e-12
FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
# (test id, kind, init options, call options)
CASES = [
    ("rnn", "rnn", {}, {}),
    ("rnn-relu-nobias", "rnn", {"bias": False}, {"nonlinearity": "relu"}),
    ("lstm", "lstm", {}, {}),
    ("lstm-peepholes-projection", "lstm", {"peepholes": True, "proj_size": 2}, {}),
    ("gru", "gru", {}, {}),
    ("gru-reverse", "gru", {}, {"reverse": True}),
]
IDS = [case[0] for case in CASES]


def _to_jax(tree):
    return ar.to_backend(tree, "jax")


def _x(seed=0, shape=(T, B, INPUT)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def _close(actual, expected):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=RTOL, atol=ATOL)


def _gru_oracle(x, p):
    """The GRU equations (PyTorch's r, z, n order), float64 NumPy, written out here."""
    w_ih, w_hh, b_ih, b_hh = (np.asarray(a, dtype=np.float64) for a in (p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh))
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h = np.zeros((x.shape[1], w_hh.shape[1]))
    ys = []
    for x_t in np.asarray(x, dtype=np.float64):
        gi, gh = x_t @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
        r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
        n = np.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), h


def test_import_arrayrnn_does_not_import_jax_and_params_made_after_jax_are_pytrees():
    code = (
        "import sys, numpy as np, arrayrnn as ar\n"
        "ar.init_gru(3, 4, seed=0)\n"
        "assert 'jax' not in sys.modules, 'arrayrnn imported jax'\n"
        "import jax, jax.numpy as jnp\n"
        "p = ar.GRUParams(weight_ih=jnp.ones((12, 3)), weight_hh=jnp.ones((12, 4)))\n"  # no arrayrnn call saw JAX
        "print(len(jax.tree_util.tree_leaves(p)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


def test_params_are_pytrees_with_none_fields_kept():
    params = _to_jax(random_params("lstm", INPUT, HIDDEN, seed=1, peepholes=True, proj_size=2))
    leaves = jax.tree_util.tree_leaves(params)
    assert [id(a) for a in leaves] == [id(a) for a in params.arrays().values()]
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert paths == [f".{name}" for name in params.arrays()]
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, params)
    assert type(doubled) is ar.LSTMParams and doubled.weight_gg is None and doubled.ln_ih_weight is None
    _close(doubled.weight_hr, 2 * params.weight_hr)
    no_bias = _to_jax(random_params("gru", INPUT, HIDDEN, seed=1, bias=False))
    assert len(jax.tree_util.tree_leaves(no_bias)) == 2
    assert jax.tree_util.tree_map(lambda a: a, no_bias).bias_ih is None


def test_jitted_gru_matches_the_numpy_equations():
    params = random_params("gru", INPUT, HIDDEN, seed=2)
    x = _x(2)
    y, h_n = jax.jit(lambda x, p: ar.gru(x, p))(x, _to_jax(params))
    y_ref, h_ref = _gru_oracle(x, params)
    _close((y, h_n), (y_ref, h_ref))


@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_jit_equals_eager(kind, init, options):
    params, x = _to_jax(random_params(kind, INPUT, HIDDEN, seed=3, **init)), _x(3)
    function = FUNCTIONS[kind]
    eager = function(x, params, **options)
    _close(jax.jit(lambda x: function(x, params, **options))(x), eager)  # params closed over: concrete
    _close(jax.jit(lambda x, p: function(x, p, **options))(x, params), eager)  # params traced too


@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_grad_equals_the_handwritten_vjp(kind, init, options):
    params, x = _to_jax(random_params(kind, INPUT, HIDDEN, seed=4, **init)), _x(4)
    function = FUNCTIONS[kind]
    (y, _), pullback = ar.vjp(function, x, params, **options)
    weights = _x(5, y.shape)
    dx_ref, dparams_ref = pullback((weights, None))

    def loss(x, p):
        return jnp.sum(function(x, p, **options)[0] * weights)

    dx, dparams = jax.grad(loss, argnums=(0, 1))(x, params)
    assert type(dparams) is type(params)
    _close(dx, dx_ref)
    _close(dparams, dparams_ref)
    dx_jit, dparams_jit = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, params)
    _close((dx_jit, dparams_jit), (dx_ref, dparams_ref))


@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_vmap_over_unbatched_sequences_equals_the_batched_call(kind, init, options):
    params, x = _to_jax(random_params(kind, INPUT, HIDDEN, seed=6, **init)), _x(6)
    function = FUNCTIONS[kind]
    y, state = function(x, params, **options)
    y_vmap, state_vmap = jax.vmap(lambda s: function(s, params, **options), in_axes=1, out_axes=(1, 0))(x)
    _close(y_vmap, y)
    _close(state_vmap, state)
    _close(jax.jit(jax.vmap(lambda s: function(s, params, **options)[0], in_axes=1, out_axes=1))(x), y)


def test_vmap_over_stacked_params_runs_an_ensemble():
    members = [_to_jax(random_params("gru", INPUT, HIDDEN, seed=seed)) for seed in (7, 8)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *members)
    x = _x(7)
    y = jax.vmap(lambda p: ar.gru(x, p)[0])(stacked)
    for k, member in enumerate(members):
        _close(y[k], ar.gru(x, member)[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_model_apply_under_jit_and_grad(bidirectional):
    model = ar.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, dtype="float64", backend="jax", seed=9)
    x = _x(9)
    eager = model.apply(model.params, x)
    _close(jax.jit(model.apply)(model.params, x), eager)
    (y, _), pullback = ar.vjp(model.apply, model.params, x)
    weights = _x(10, y.shape)
    dparams_ref, dx_ref = pullback((weights, None))
    dparams, dx = jax.grad(lambda p, x: jnp.sum(model.apply(p, x)[0] * weights), argnums=(0, 1))(model.params, x)
    _close(dx, dx_ref)
    _close(dparams, dparams_ref)
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(model.params)


def test_a_real_mismatch_is_still_refused():
    numpy_params = random_params("gru", INPUT, HIDDEN, seed=11)
    x = _x(11)
    with pytest.raises(ar.BackendMismatchError, match="x on jax"):
        ar.gru(x, numpy_params)
    with pytest.raises(ar.BackendMismatchError, match=r"x on jax \(device None\)"):
        jax.jit(lambda x: ar.gru(x, numpy_params)[0])(x)
    need("torch")
    torch_params = ar.to_backend(numpy_params, "torch")
    with pytest.raises(ar.BackendMismatchError, match="on torch"):
        jax.jit(lambda x: ar.gru(x, torch_params)[0])(x)
