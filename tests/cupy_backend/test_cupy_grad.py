"""The CuPy gradient paths (``_backends/cupy/grad_*.py``) through ``ar.vjp``, against the generic core, on a GPU.

Runs on the cupy backend only (skipped elsewhere; ``ci/gpu.sh`` runs it in its "fast" phase). The oracle is
``ar.vjp(..., impl="generic")`` on the same CuPy arrays: the generic recording core, itself tested against
torch autograd and finite differences on every backend (tests/core/test_grad.py, which on CuPy now runs the fast
path by default too). ``tests/cupy_backend/test_cupy_emulated_grad.py`` checks the same kernels on the CPU. The
experimental paths' share of these tests (run with the helpers below) is in ``experimental/test_cupy_grad_paths.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import grad_graph as cupy_grad_graph
from arrayrnn._backends.cupy import policy
from tests.support import random_params, tolerance
from tests.variants import GPU_VARIANTS
from tests.variants import variant_id as _ids

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}

pytestmark = pytest.mark.only_backends("cupy")


def _require_cupy(backend):
    if backend.name != "cupy":
        pytest.skip("CuPy gradient path: cupy backend only")


def _record_fast_calls(monkeypatch):
    """Records each call of a gradient path as (name, accepted) (so a silent fallback cannot pass): every path
    with a gradient ("fused", "graph"; "fused_graph", "persistent" and "cluster" where experimental/ is present)."""
    calls = []
    for name in cupy_dispatch.paths():
        real = cupy_dispatch.gradient_function(name)
        if real is None:  # "tiled": no gradient of its own
            continue
        module, attribute = sys.modules[real.__module__], real.__name__

        def counted(*args, name=name, real=real, **kwargs):
            result = real(*args, **kwargs)
            calls.append((name, result is not None))
            return result

        monkeypatch.setattr(module, attribute, counted)
    return calls


@pytest.fixture
def fast_calls(monkeypatch):
    return _record_fast_calls(monkeypatch)


def _auto_path(kind, steps, batch, hidden, dtype="float32", linear_before_reset=True):
    """The gradient path auto routes this call to on this GPU (cupy_dispatch's own rule: "cluster" only with
    CLUSTER_AUTO on a GPU with clusters, else the small-batch path, "fused" or, with FUSED_GRAPH_AUTO,
    "fused_graph")."""
    config = policy.current()
    shared = 0
    if config.cluster_auto:
        from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster

        shared = cupy_cluster.cluster_shared_limit()
    forward = policy.choose_impl(
        kind, steps=steps * config.grad_buffer_factor, batch=batch, hidden=hidden, dtype=dtype,
        cluster_shared=shared, linear_before_reset=linear_before_reset,
    )  # fmt: skip
    return policy.grad_choice(kind, forward, batch=batch, hidden=hidden, dtype=dtype, cluster_shared=shared)


@pytest.fixture(autouse=True)
def _persistent_barrier_checked():
    with policy.configured(persistent_check_barrier=True):
        yield


def _problem(kind, params_options, dtype, steps, batch, features, hidden, seed):
    rng = np.random.default_rng(seed)
    params = random_params(kind, features, hidden, seed=seed, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    width = getattr(params, "output_size", hidden)
    h = rng.standard_normal((batch, width)).astype(dtype)
    state = (h, rng.standard_normal((batch, hidden)).astype(dtype)) if kind == "lstm" else h
    dy = rng.standard_normal((steps, batch, width)).astype(dtype)
    d_final = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state) if kind == "lstm" else h * 0.5
    return params, x, state, dy, d_final


def _grads(backend, kind, params, x, state, dy, d_final, impl, **options):
    out, pullback = ar.vjp(
        FUNCTIONS[kind], backend.asarray(x), backend.tree(params), backend.tree(state), impl=impl, **options
    )
    return out, pullback((backend.asarray(dy), backend.tree(d_final)))


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for part in tree for leaf in _leaves(part)]
    if hasattr(tree, "__dataclass_fields__"):
        return [leaf for name in tree.__dataclass_fields__ for leaf in _leaves(getattr(tree, name))]
    return [tree]


def _assert_same(backend, got, want, dtype, steps):
    tol = tolerance(dtype, steps)
    got_leaves, want_leaves = _leaves(got), _leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for a, b in zip(got_leaves, want_leaves):
        assert (a is None) == (b is None)
        if a is not None:
            expected = backend.numpy(b, dtype)
            scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
            np.testing.assert_allclose(backend.numpy(a, dtype), expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def _matches_generic(backend, fast_calls, variant, dtype, impl, projection):
    """Path ``impl``'s gradient agrees with the generic core with lengths, both directions and a state; a path
    without ``projection`` refuses a projected LSTM."""
    _require_cupy(backend)
    kind, params_options, call_options = variant
    params, x, state, dy, d_final = _problem(kind, params_options, dtype, 9, 5, 4, 6, seed=len(_ids(variant)))
    lengths = backend.asarray(np.array([9, 0, 4, 1, 7]))
    if not projection and params_options.get("proj_size"):
        with pytest.raises(ValueError, match="projection"):
            _grads(backend, kind, params, x, state, dy, d_final, impl, lengths=lengths, **call_options)
        return
    for reverse in (False, True):
        options = {"lengths": lengths, "reverse": reverse, **call_options}
        got = _grads(backend, kind, params, x, state, dy, d_final, impl, **options)
        want = _grads(backend, kind, params, x, state, dy, d_final, "generic", **options)
        _assert_same(backend, got, want, dtype, 9)
    assert fast_calls == [(impl, True)] * 2  # "generic" never asked a fast path


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_matches_generic_with_lengths_and_reverse(backend, fast_calls, variant, dtype, impl):
    _matches_generic(backend, fast_calls, variant, dtype, impl, projection=impl == "fused")


#: (kind, call options) at the larger shapes
LARGER_CASES = [("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False})]
#: (steps, batch, features, hidden)
LARGER_SHAPES = [(40, 1, 16, 64), (12, 70, 33, 300), (6, 13, 5, 1030)]


def _larger_shapes(backend, fast_calls, kind, options, shape, impl):
    """hidden not a multiple of 32, batch spanning several tiles; "auto" picks graph at B=1, fused at B=70."""
    _require_cupy(backend)
    steps, batch, features, hidden = shape
    params, x, state, dy, d_final = _problem(kind, {}, "float32", steps, batch, features, hidden, seed=hidden)
    lengths = backend.asarray(np.random.default_rng(0).integers(0, steps + 1, size=batch))
    got = _grads(backend, kind, params, x, state, dy, d_final, impl, lengths=lengths, **options)
    want = _grads(backend, kind, params, x, state, dy, d_final, "generic", lengths=lengths, **options)
    _assert_same(backend, got, want, "float32", steps)
    small = batch <= 64 and hidden <= 1024
    auto = _auto_path(kind, steps, batch, hidden, linear_before_reset=options.get("linear_before_reset", True))
    # the rule itself: a small-batch path (or, with CLUSTER_AUTO, the cluster one) at small batch, fused beyond
    small_paths = (policy.current().grad_small_batch_impl, "cluster")
    assert auto in (small_paths if small else ("fused", "fused_graph"))
    assert fast_calls == [(auto if impl == "auto" else impl, True)]


@pytest.mark.parametrize("kind,options", LARGER_CASES)
@pytest.mark.parametrize("shape", LARGER_SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["graph", "auto"])
def test_larger_shapes(backend, fast_calls, kind, options, shape, impl):
    _larger_shapes(backend, fast_calls, kind, options, shape, impl)


def test_layouts_none_cotangents_and_environment(backend, fast_calls, monkeypatch):
    _require_cupy(backend)
    params, x, state, dy, _ = _problem("lstm", {"peepholes": True}, "float64", 6, 2, 3, 5, seed=4)
    x_bf = backend.asarray(np.transpose(x, (1, 0, 2)))
    for impl in ("auto", "generic"):
        out, pullback = ar.vjp(ar.lstm, x_bf, backend.tree(params), None, batch_first=True, impl=impl)
        grads = pullback((backend.asarray(np.transpose(dy, (1, 0, 2))), None))
        out_one, pullback_one = ar.vjp(ar.lstm, backend.asarray(x[:, 1]), backend.tree(params), impl=impl)
        grads_one = pullback_one((None, (backend.asarray(dy[0, 1]), None)))
        if impl == "auto":
            fast = (out, grads, out_one, grads_one)
        else:
            _assert_same(backend, fast, (out, grads, out_one, grads_one), "float64", 6)
    assert fast_calls == [(_auto_path("lstm", 6, 2, 5, "float64"), True)] * 2  # auto at batch 2
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    ar.vjp(ar.lstm, x_bf, backend.tree(params), batch_first=True)
    assert len(fast_calls) == 2


def test_bidirectional_model(backend, fast_calls):
    _require_cupy(backend)
    model = ar.GRU(4, 6, num_layers=2, bidirectional=True, seed=3, dtype="float32", backend="cupy")
    rng = np.random.default_rng(5)
    x = backend.asarray(rng.standard_normal((7, 3, 4)).astype("float32"))
    lengths = backend.asarray(np.array([7, 2, 5]))
    results = []
    for impl in ("auto", "generic"):
        out, pullback = ar.vjp(model.apply, model.params, x, None, lengths=lengths, impl=impl)
        cotangent = (backend.asarray(rng.standard_normal(out[0].shape).astype("float32")), None)
        results.append((out, cotangent, pullback))
    (out_fast, cotangent, pullback_fast), (out_generic, _, pullback_generic) = results
    _assert_same(
        backend, (out_fast, pullback_fast(cotangent)), (out_generic, pullback_generic(cotangent)), "float32", 7
    )
    assert fast_calls == [(_auto_path("gru", 7, 3, 6), True)] * 4  # 2 layers x 2 directions, auto, batch 3


def test_inputs_unchanged_and_pullback_repeatable(backend):
    _require_cupy(backend)
    params, x, state, dy, d_final = _problem("gru", {}, "float32", 5, 3, 4, 6, seed=5)
    x_b, params_b, state_b = backend.asarray(x), backend.tree(params), backend.asarray(state)
    dy_b, d_final_b = backend.asarray(dy), backend.asarray(d_final)
    copies = [a.copy() for a in (x_b, state_b, params_b.weight_hh, dy_b, d_final_b)]
    _, pullback = ar.vjp(ar.gru, x_b, params_b, state_b, lengths=backend.asarray(np.array([5, 2, 0])))
    first = pullback((dy_b, d_final_b))
    second = pullback((dy_b, d_final_b))
    for before, after in zip(copies, (x_b, state_b, params_b.weight_hh, dy_b, d_final_b)):
        np.testing.assert_array_equal(backend.numpy(before), backend.numpy(after))
    for a, b in zip(_leaves(first), _leaves(second)):
        np.testing.assert_array_equal(backend.numpy(a), backend.numpy(b))


def test_float16_falls_back_to_the_generic_core(backend, fast_calls):
    _require_cupy(backend)
    params, x, state, dy, d_final = _problem("rnn", {}, "float16", 4, 2, 3, 5, seed=6)
    got = _grads(backend, "rnn", params, x, state, dy, d_final, "auto")
    want = _grads(backend, "rnn", params, x, state, dy, d_final, "generic")
    for a, b in zip(_leaves(got), _leaves(want)):
        np.testing.assert_array_equal(backend.numpy(a), backend.numpy(b))
    assert fast_calls == []  # the hook declined float16 before asking a gradient path


def test_graph_replays_and_sees_in_place_weight_updates(backend, fast_calls):
    _require_cupy(backend)
    params, x, state, dy, d_final = _problem("gru", {}, "float32", 10, 3, 4, 8, seed=7)
    params_b, x_b, state_b = backend.tree(params), backend.asarray(x), backend.asarray(state)
    cotangent = (backend.asarray(dy), backend.asarray(d_final))
    for _ in range(2):
        params_b.weight_hh[...] *= 0.9  # an in-place optimizer step between calls: same plans, new values
        _, pullback = ar.vjp(ar.gru, x_b, params_b, state_b, impl="graph")
        got = pullback(cotangent)
        _, pullback = ar.vjp(ar.gru, x_b, params_b, state_b, impl="generic")
        _assert_same(backend, got, pullback(cotangent), "float32", 10)
    assert cupy_grad_graph.cached_plans() >= 2
