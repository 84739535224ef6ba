"""The JAX fast path (``_backends/jax``: the core's steps in a jitted ``lax.scan``) against the generic core.

Oracle: ``impl="generic"`` (the array-API core, unrolled op by op) for values and ``ar.vjp`` gradients; JAX autodiff
of the fast path for ``jax.grad``; the batched call for ``vmap``. Every cell option, lengths (zeros too), reverse,
masks, ``padding="carry"``, the Greff variants with ``weight_gg``, layer norm, float32 and float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params

jax = need("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
from arrayrnn._backends.jax import compiled  # noqa: E402  (imports jax: after need("jax"))

T, B, INPUT, HIDDEN = 6, 4, 3, 5
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=1e-5, atol=1e-5)}
FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
# (test id, kind, init options, call options): every option of every cell at least once
CASES = [
    ("rnn-tanh", "rnn", {}, {}),
    ("rnn-relu-nobias", "rnn", {"bias": False}, {"nonlinearity": "relu"}),
    ("rnn-layer-norm", "rnn", {"layer_norm": True}, {}),
    ("lstm", "lstm", {}, {}),
    (
        "lstm-peepholes-projection-coupled-clip",
        "lstm",
        {"peepholes": True, "proj_size": 2},
        {"coupled": True, "clip": 0.8},
    ),
    ("lstm-nobias-clip", "lstm", {"bias": False}, {"clip": 0.6}),
    (
        "lstm-greff-variants",
        "lstm",
        {"peepholes": True},
        {"forget_gate": False, "input_activation": "identity", "output_activation": "identity"},
    ),
    ("lstm-no-input-output-gate", "lstm", {}, {"input_gate": False, "output_gate": False}),
    ("lstm-weight-gg", "lstm", {"gate_recurrence": True}, {"coupled": True}),
    ("lstm-layer-norm-projection", "lstm", {"layer_norm": True, "proj_size": 3, "peepholes": True}, {}),
    ("gru", "gru", {}, {}),
    ("gru-before-reset-false", "gru", {}, {"linear_before_reset": False}),
    ("gru-nobias-before-reset-false", "gru", {"bias": False}, {"linear_before_reset": False}),
    ("gru-layer-norm", "gru", {"layer_norm": True}, {}),
]
IDS = [case[0] for case in CASES]
VMAP_CASES = (1, 4, 8, 12)  # relu, projection + clip, weight_gg, GRU without bias
RNG_MASK = np.random.default_rng(99).random((T, B)) > 0.3
MASKINGS = {
    "plain": {},
    "reverse": {"reverse": True},
    "lengths-with-zero": {"lengths": [T, 0, 3, 1]},
    "lengths-reverse": {"lengths": [2, T, 0, 4], "reverse": True},
    "lengths-carry": {"lengths": [T, 0, 3, 1], "padding": "carry"},
    "mask": {"mask": RNG_MASK},
    "mask-carry-reverse": {"mask": RNG_MASK, "padding": "carry", "reverse": True},
}


def _params(kind, init, dtype="float64", seed=1):
    params = random_params(kind, INPUT, HIDDEN, seed=seed, dtype=dtype, **init)
    rng = np.random.default_rng(seed + 100)
    noisy = {  # layer-norm gains 1 and shifts 0 would hide a wrong normalisation
        name: (value + 0.3 * rng.normal(size=value.shape)).astype(dtype)
        for name, value in params.arrays().items()
        if name.startswith("ln_")
    }
    return ar.to_backend(dataclasses.replace(params, **noisy), "jax")


def _x(seed, dtype="float64", shape=(T, B, INPUT)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(dtype))


def _state(kind, params, dtype, seed):
    rng = np.random.default_rng(seed)
    out = params.proj_size if kind == "lstm" and params.proj_size else HIDDEN
    h = jnp.asarray(rng.normal(size=(B, out)).astype(dtype))
    if kind != "lstm":
        return h
    c = jnp.asarray(rng.normal(size=(B, HIDDEN)).astype(dtype))
    if params.weight_gg is None:
        return (h, c)
    return (h, c, jnp.asarray(rng.uniform(size=(B, 3 * HIDDEN)).astype(dtype)))


def _jax_options(options):
    return {k: jnp.asarray(v) if k in ("mask", "lengths") else v for k, v in options.items()}


def _close(actual, expected, dtype="float64"):
    actual_leaves, expected_leaves = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert len(actual_leaves) == len(expected_leaves)
    for a, e in zip(actual_leaves, expected_leaves):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **TOLERANCE[dtype])


@pytest.mark.parametrize("masking", ["plain", "lengths-reverse", "mask", "mask-carry-reverse"])  # more: the vjp test
@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_forward_equals_the_generic_core(kind, init, options, masking):
    params, x = _params(kind, init), _x(1)
    state = _state(kind, params, "float64", 2)
    call = {**options, **_jax_options(MASKINGS[masking])}
    function = FUNCTIONS[kind]
    assert ar.explain(function, x, params, state, **call).startswith("jax: lax.scan, jit-cached (")
    _close(function(x, params, state, **call), function(x, params, state, impl="generic", **call))


@pytest.mark.parametrize("masking", ["plain", "lengths-reverse", "mask-carry-reverse"])
@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_float32_equals_the_generic_core(kind, init, options, masking):
    params, x = _params(kind, init, "float32"), _x(3, "float32")
    state = _state(kind, params, "float32", 4)
    call = {**options, **_jax_options(MASKINGS[masking])}
    function = FUNCTIONS[kind]
    y, final = function(x, params, state, **call)
    assert y.dtype == jnp.float32
    _close((y, final), function(x, params, state, impl="generic", **call), "float32")


@pytest.mark.parametrize("masking", ["plain", "reverse", "lengths-with-zero", "lengths-carry", "mask-carry-reverse"])
@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_vjp_equals_the_generic_recording_core(kind, init, options, masking):
    params, x = _params(kind, init, seed=5), _x(5)
    state = _state(kind, params, "float64", 6)
    call = {**options, **_jax_options(MASKINGS[masking])}
    function = FUNCTIONS[kind]
    out, pullback = ar.vjp(function, x, params, state, **call)
    out_ref, pullback_ref = ar.vjp(function, x, params, state, impl="generic", **call)
    _close(out, out_ref)
    dy = _x(7, shape=out[0].shape)
    final_cotangent = jax.tree_util.tree_map(lambda s: jnp.ones_like(s) * 0.5, out[1])
    for cotangent in [(dy, None), (None, final_cotangent), (dy, final_cotangent)]:
        grads, grads_ref = pullback(cotangent), pullback_ref(cotangent)
        assert type(grads[1]) is type(params)
        assert [f for f, v in grads[1].arrays().items()] == [f for f, v in params.arrays().items()]
        _close(grads, grads_ref)


@pytest.mark.parametrize(("kind", "init", "options"), [case[1:] for case in CASES], ids=IDS)
def test_jax_grad_wrt_params_and_x_equals_ar_vjp(kind, init, options):
    params, x = _params(kind, init, seed=8), _x(8)
    function = FUNCTIONS[kind]
    lengths = jnp.asarray([T, 2, 0, 5])
    (y, _), pullback = ar.vjp(function, x, params, lengths=lengths, impl="generic", **options)
    weights = _x(9, shape=y.shape)
    dx_ref, dparams_ref = pullback((weights, None))

    def loss(x, p, lengths):  # lengths traced under jit: no value check, the loop masks by them all the same
        return jnp.sum(function(x, p, lengths=lengths, **options)[0] * weights)

    dx, dparams = jax.grad(loss, argnums=(0, 1))(x, params, lengths)
    _close((dx, dparams), (dx_ref, dparams_ref))
    _close(jax.jit(jax.grad(loss, argnums=(0, 1)))(x, params, lengths), (dx_ref, dparams_ref))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_jit_with_traced_lengths_and_mask(kind):
    params, x = _params(kind, {}, seed=10), _x(10)
    function = FUNCTIONS[kind]
    lengths, mask = jnp.asarray([T, 0, 3, 1]), jnp.asarray(RNG_MASK)
    expected = function(x, params, lengths=lengths, reverse=True, impl="generic")
    _close(jax.jit(lambda x, p, n: function(x, p, lengths=n, reverse=True))(x, params, lengths), expected)
    expected = function(x, params, mask=mask, padding="carry", impl="generic")
    _close(jax.jit(lambda x, p, m: function(x, p, mask=m, padding="carry"))(x, params, mask), expected)


def test_concrete_lengths_are_still_range_checked():
    params, x = _params("gru", {}), _x(11)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\]"):
        ar.gru(x, params, lengths=jnp.asarray([7, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\]"):
        bad = jnp.asarray([-1, 1, 1, 1])
        jax.jit(lambda x: ar.gru(x, params, lengths=bad)[0])(x)  # closed over, concrete: checked


@pytest.mark.parametrize(
    ("kind", "init", "options"), [CASES[k][1:] for k in VMAP_CASES], ids=[IDS[k] for k in VMAP_CASES]
)
def test_vmap_over_the_batch_axis_equals_the_batched_call(kind, init, options):
    params, x = _params(kind, init, seed=12), _x(12)
    function = FUNCTIONS[kind]
    y, state = function(x, params, impl="generic", **options)
    y_vmap, state_vmap = jax.vmap(lambda s: function(s, params, **options), in_axes=1, out_axes=(1, 0))(x)
    _close((y_vmap, state_vmap), (y, state))
    lengths = jnp.asarray([T, 2, 0, 5])
    y_lengths = function(x, params, lengths=lengths, impl="generic", **options)[0]
    batched = jax.vmap(lambda s, n: function(s[:, None], params, lengths=n[None], **options)[0][:, 0], in_axes=(1, 0))
    _close(jax.jit(batched)(x, lengths), jnp.swapaxes(y_lengths, 0, 1))


def test_each_configuration_compiles_once():
    params, x = _params("lstm", {"peepholes": True}, seed=13), _x(13)
    call = {"clip": 0.77, "lengths": jnp.asarray([T, 1, 2, 3]), "reverse": True}  # a configuration no other test has

    def traces():
        [count] = [n for key, n in compiled.TRACES.items() if key[0] == "lstm" and ("clip", 0.77) in key[1]]
        return count

    ar.lstm(x, params, **call)
    assert traces() == 1
    for seed in (14, 15):  # new values, same shapes and options: the compiled loop is reused
        ar.lstm(_x(seed), _params("lstm", {"peepholes": True}, seed=seed), **call)
    ar.lstm(x, params, lengths=[T, 1, 2, 3], reverse=True, clip=0.77)  # lengths as a list: the same loop
    jax.jit(lambda x, p: ar.lstm(x, p, **call)[0])(x, params)  # inside a user's jit: JAX reuses the traced loop
    assert traces() == 1
    ar.lstm(_x(16, shape=(T + 2, B, INPUT)), params, **{**call, "lengths": jnp.asarray([1, 1, 1, 1])})  # new T
    assert traces() == 2


def test_explain_names_the_path_and_why_it_declines():
    params, x = _params("gru", {}), _x(17)
    text = ar.explain(ar.gru, x, params)
    assert text.startswith("jax: lax.scan, jit-cached (") and "compiled once" in text
    assert ar.explain(ar.gru, x, params, impl="generic") == "generic: impl='generic' asked for the array-API core"
    declined = ar.explain(ar.gru, x, params, recurrent_dropout=0.5, train=True, seed=0)
    assert declined.startswith("generic: recurrent_dropout (training): not in the lax.scan path")


def test_dropout_declines_to_the_core_and_matches_it():
    params, x = _params("gru", {}), _x(18)
    call = {"recurrent_dropout": 0.5, "zoneout": 0.2, "train": True, "seed": 3}
    _close(ar.gru(x, params, **call), ar.gru(x, params, impl="generic", **call))
    _close(ar.gru(x, params, zoneout=0.2), ar.gru(x, params, zoneout=0.2, impl="generic"))
