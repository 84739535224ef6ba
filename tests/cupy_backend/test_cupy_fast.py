"""The shipping CuPy fast paths ("fused", "graph", and the automatic choice) against the generic core, on a GPU.

Runs on the cupy backend only (skipped elsewhere; ``ci/gpu.sh`` runs it with cupy required). The oracle
is ``impl="generic"`` on the same CuPy arrays (the generic core is itself tested against torch and an
independent float64 loop on every backend), and for float16 a float64 reference. The experimental paths' share
of these tests (run with the helpers below) is in ``experimental/test_cupy_fast_paths.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar
from tests.support import random_params, tolerance
from tests.variants import GPU_VARIANTS
from tests.variants import variant_id as _ids

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}


pytestmark = pytest.mark.only_backends("cupy")

PATHS = ["fused", "graph"]


@pytest.fixture(autouse=True)
def _persistent_barrier_checked():
    """Every persistent-kernel call here reads back the grid barrier's timeout flag (a timed-out barrier
    would otherwise only show up as wrong numbers)."""
    from arrayrnn._backends.cupy import policy

    with policy.configured(persistent_check_barrier=True):
        yield


def _has_clusters():
    from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster

    return cupy_cluster.cluster_shared_limit() > 0


def _require_cupy(backend):
    if backend.name != "cupy":
        pytest.skip("CuPy fast paths: cupy backend only")


def _problem(kind, params_options, dtype, steps, batch, features, hidden, seed):
    rng = np.random.default_rng(seed)
    params = random_params(kind, features, hidden, seed=seed, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    h = rng.standard_normal((batch, getattr(params, "output_size", hidden))).astype(dtype)
    state = (h, rng.standard_normal((batch, hidden)).astype(dtype)) if kind == "lstm" else h
    return params, x, state


def _finals(kind, final):
    return list(final) if kind == "lstm" else [final]


def _run(backend, kind, params, x, state, impl, **options):
    return FUNCTIONS[kind](backend.asarray(x), backend.tree(params), backend.tree(state), impl=impl, **options)


def _assert_same(backend, kind, got, want, dtype, steps):
    tol = tolerance(dtype, steps)
    np.testing.assert_allclose(backend.numpy(got[0], dtype), backend.numpy(want[0], dtype), **tol)
    for a, b in zip(_finals(kind, got[1]), _finals(kind, want[1])):
        np.testing.assert_allclose(backend.numpy(a, dtype), backend.numpy(b, dtype), **tol)


def _matches_generic(backend, variant, dtype, impl, refused=None):
    """Path ``impl`` agrees with the generic core with lengths, both directions and a state; or, where ``refused``
    (a pattern) is given, it refuses the call with a ``ValueError`` matching it."""
    _require_cupy(backend)
    kind, params_options, call_options = variant
    params, x, state = _problem(kind, params_options, dtype, 9, 5, 4, 6, seed=len(_ids(variant)))
    lengths = backend.asarray(np.array([9, 0, 4, 1, 7]))
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            _run(backend, kind, params, x, state, impl, lengths=lengths, **call_options)
        return
    for reverse in (False, True):
        got = _run(backend, kind, params, x, state, impl, lengths=lengths, reverse=reverse, **call_options)
        want = _run(backend, kind, params, x, state, "generic", lengths=lengths, reverse=reverse, **call_options)
        _assert_same(backend, kind, got, want, dtype, 9)
        assert np.all(backend.numpy(got[0])[4:, 2] == 0)  # padded steps are exactly zero


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", [*PATHS, "auto"])
def test_matches_generic_with_lengths_reverse_and_state(backend, variant, dtype, impl):
    _, params_options, _ = variant
    refused = "projection" if impl == "graph" and params_options.get("proj_size") else None
    _matches_generic(backend, variant, dtype, impl, refused)


#: (kind, call options) at the larger shapes
LARGER_CASES = [("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False})]
#: (steps, batch, features, hidden)
LARGER_SHAPES = [(50, 1, 64, 256), (20, 70, 33, 300), (7, 13, 5, 1030)]


def _larger_shapes(backend, kind, options, impl, shape, refused=None):
    """hidden not a multiple of 32 (lanes idle in the last stride), batch spanning several tiles; or, where
    ``refused`` (a pattern) is given, the path refuses the call with a ``ValueError`` matching it."""
    _require_cupy(backend)
    steps, batch, features, hidden = shape
    params, x, state = _problem(kind, {}, "float32", steps, batch, features, hidden, seed=hidden)
    lengths = backend.asarray(np.random.default_rng(0).integers(0, steps + 1, size=batch))
    if refused is not None:
        with pytest.raises(ValueError, match=refused):
            _run(backend, kind, params, x, state, impl, lengths=lengths, **options)
        return
    got = _run(backend, kind, params, x, state, impl, lengths=lengths, **options)
    want = _run(backend, kind, params, x, state, "generic", lengths=lengths, **options)
    _assert_same(backend, kind, got, want, "float32", steps)


@pytest.mark.parametrize("kind,options", LARGER_CASES)
@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("shape", LARGER_SHAPES, ids=str)
def test_larger_shapes(backend, kind, options, impl, shape):
    _larger_shapes(backend, kind, options, impl, shape)


@pytest.mark.parametrize("tile", [1, 2, 4, 8])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_graph_every_batch_tile(backend, tile, kind):
    _require_cupy(backend)
    from arrayrnn._backends.cupy import policy

    params, x, state = _problem(kind, {}, "float64", 6, 11, 3, 40, seed=tile)
    lengths = backend.asarray(np.array([6, 5, 0, 1, 6, 3, 2, 6, 4, 6, 1]))
    with policy.configured(graph_force_batch_tile=tile):
        got = _run(backend, kind, params, x, state, "graph", lengths=lengths, reverse=True)
    want = _run(backend, kind, params, x, state, "generic", lengths=lengths, reverse=True)
    _assert_same(backend, kind, got, want, "float64", 6)


def _float16_against_float64(backend, kind, impl):
    _require_cupy(backend)
    params, x, state = _problem(kind, {}, "float16", 8, 3, 4, 16, seed=21)
    from arrayrnn.backend import map_arrays

    y, final = _run(backend, kind, params, x, state, impl)
    params64 = map_arrays(lambda a: np.asarray(a, dtype=np.float64), params)
    state64 = tuple(np.asarray(s, np.float64) for s in state) if kind == "lstm" else np.asarray(state, np.float64)
    y_ref, final_ref = FUNCTIONS[kind](np.asarray(x, np.float64), params64, state64)
    np.testing.assert_allclose(backend.numpy(y, "float16").astype(np.float64), y_ref, rtol=2e-2, atol=2e-2)
    for a, b in zip(_finals(kind, final), _finals(kind, final_ref)):
        np.testing.assert_allclose(backend.numpy(a, "float16").astype(np.float64), b, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", PATHS)
def test_float16_against_float64_reference(backend, kind, impl):
    _float16_against_float64(backend, kind, impl)


def _layouts(backend, impl):
    _require_cupy(backend)
    params, x, _ = _problem("lstm", {"peepholes": True}, "float64", 6, 2, 3, 5, seed=4)
    y_bf, (h_bf, c_bf) = ar.lstm(
        backend.asarray(np.transpose(x, (1, 0, 2))), backend.tree(params), batch_first=True, impl=impl
    )
    y_ref, (h_ref, c_ref) = ar.lstm(backend.asarray(x), backend.tree(params), impl="generic")
    tol = tolerance("float64", 6)
    np.testing.assert_allclose(backend.numpy(y_bf), np.transpose(backend.numpy(y_ref), (1, 0, 2)), **tol)
    np.testing.assert_allclose(backend.numpy(h_bf), backend.numpy(h_ref), **tol)
    y_one, (h_one, _) = ar.lstm(backend.asarray(x[:, 1]), backend.tree(params), impl=impl)
    assert y_one.shape == (6, 5) and h_one.shape == (5,)
    np.testing.assert_allclose(backend.numpy(y_one), backend.numpy(y_ref)[:, 1], **tol)


@pytest.mark.parametrize("impl", PATHS)
def test_layouts_batch_first_and_unbatched(backend, impl):
    _layouts(backend, impl)


def _inputs_never_modified(backend, impl):
    _require_cupy(backend)
    params, x, state = _problem("gru", {}, "float32", 5, 3, 4, 6, seed=5)
    x_b, params_b, state_b = backend.asarray(x), backend.tree(params), backend.asarray(state)
    lengths = backend.asarray(np.array([5, 2, 0]))
    copies = [a.copy() for a in (x_b, state_b, params_b.weight_hh, params_b.bias_hh, lengths)]
    ar.gru(x_b, params_b, state_b, lengths=lengths, impl=impl)
    for before, after in zip(copies, (x_b, state_b, params_b.weight_hh, params_b.bias_hh, lengths)):
        np.testing.assert_array_equal(backend.numpy(before), backend.numpy(after))


@pytest.mark.parametrize("impl", [*PATHS, "auto"])
def test_inputs_are_never_modified(backend, impl):
    _inputs_never_modified(backend, impl)


def _noncontiguous_weights(backend, impl):
    _require_cupy(backend)
    import cupy

    params, x, state = _problem("lstm", {}, "float32", 5, 2, 4, 6, seed=6)
    params_b = backend.tree(params)
    fortran = dataclasses.replace(params_b, weight_hh=cupy.asfortranarray(params_b.weight_hh))
    assert not fortran.weight_hh.flags.c_contiguous
    got = ar.lstm(backend.asarray(x), fortran, backend.tree(state), impl=impl)
    want = ar.lstm(backend.asarray(x), params_b, backend.tree(state), impl="generic")
    _assert_same(backend, "lstm", got, want, "float32", 5)


@pytest.mark.parametrize("impl", PATHS)
def test_noncontiguous_weights(backend, impl):
    _noncontiguous_weights(backend, impl)


def test_graph_replays_and_sees_in_place_weight_updates(backend):
    _require_cupy(backend)
    from arrayrnn._backends.cupy import graph as cupy_graph
    from arrayrnn._backends.cupy import runtime

    runtime.reset(runtime.PLANS + "graph")
    params, x, state = _problem("lstm", {}, "float32", 12, 2, 4, 8, seed=7)
    params_b, state_b = backend.tree(params), backend.tree(state)
    first = ar.lstm(backend.asarray(x), params_b, state_b, impl="graph")
    first_y = backend.numpy(first[0])
    second = ar.lstm(backend.asarray(x[::-1].copy()), params_b, state_b, impl="graph")
    assert cupy_graph.cached_plans() == 1
    _assert_same(
        backend,
        "lstm",
        second,
        ar.lstm(backend.asarray(x[::-1].copy()), params_b, state_b, impl="generic"),
        "float32",
        12,
    )
    np.testing.assert_array_equal(backend.numpy(first[0]), first_y)  # the caller's result was not overwritten
    params_b.weight_hh[...] *= -0.5  # an in-place optimizer step: same address, new values
    third = ar.lstm(backend.asarray(x), params_b, state_b, impl="graph")
    assert cupy_graph.cached_plans() == 1
    _assert_same(backend, "lstm", third, ar.lstm(backend.asarray(x), params_b, state_b, impl="generic"), "float32", 12)


def test_graph_on_a_non_default_stream(backend):
    _require_cupy(backend)
    import cupy

    params, x, state = _problem("gru", {}, "float32", 10, 3, 4, 8, seed=8)
    want = ar.gru(backend.asarray(x), backend.tree(params), backend.asarray(state), impl="generic")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = ar.gru(backend.asarray(x), backend.tree(params), backend.asarray(state), impl="graph")
        stream.synchronize()
        assert not stream.is_capturing()
    _assert_same(backend, "gru", got, want, "float32", 10)


def test_failed_capture_leaves_no_stream_capturing(backend, monkeypatch):
    _require_cupy(backend)
    import cupy

    from arrayrnn._backends.cupy import common as cupy_common
    from arrayrnn._backends.cupy import graph as cupy_graph
    from arrayrnn._backends.cupy import runtime

    runtime.reset(runtime.PLANS + "graph")
    real_kernel = cupy_common.kernel

    class Exploding:
        def __init__(self, inner):
            self.inner = inner

        @property
        def attributes(self):
            return self.inner.attributes

        def __call__(self, *args, **kwargs):
            raise RuntimeError("injected failure during capture")

    monkeypatch.setattr(cupy_graph, "kernel", lambda name, dtype: Exploding(real_kernel(name, dtype)))
    params, x, state = _problem("rnn", {}, "float32", 4, 2, 3, 5, seed=9)
    with pytest.raises(RuntimeError, match="injected failure"):
        ar.rnn(backend.asarray(x), backend.tree(params), backend.asarray(state), impl="graph")
    assert not cupy.cuda.get_current_stream().is_capturing()
    monkeypatch.setattr(cupy_graph, "kernel", real_kernel)
    runtime.reset(runtime.PLANS + "graph")
    got = ar.rnn(backend.asarray(x), backend.tree(params), backend.asarray(state), impl="graph")
    want = ar.rnn(backend.asarray(x), backend.tree(params), backend.asarray(state), impl="generic")
    _assert_same(backend, "rnn", got, want, "float32", 4)


def test_auto_picks_by_batch_and_matches(backend, monkeypatch):
    _require_cupy(backend)
    from arrayrnn._backends.cupy import policy

    chosen = []
    real = policy.choose_impl
    monkeypatch.setattr(policy, "choose_impl", lambda *a, **k: chosen.append(real(*a, **k)) or chosen[-1])
    for batch in (2, 300):
        params, x, state = _problem("lstm", {}, "float32", 6, batch, 8, 16, seed=batch)
        got = _run(backend, "lstm", params, x, state, "auto")
        want = _run(backend, "lstm", params, x, state, "generic")
        _assert_same(backend, "lstm", got, want, "float32", 6)
    # the small-batch path (the cluster path where CLUSTER_AUTO is on and the GPU has clusters), then fused (the
    # tiled kernels where TILED_AUTO is on; the fused loop as a CUDA graph where FUSED_GRAPH_AUTO is)
    config = policy.current()
    small = "cluster" if config.cluster_auto and _has_clusters() else config.small_batch_impl
    large = "fused_graph" if config.fused_graph_auto else "fused"
    assert chosen == [small, "tiled" if config.tiled_auto else large]


def _large_preactivations(backend, impl):
    _require_cupy(backend)
    params = random_params("lstm", 3, 4, seed=10, dtype="float32")
    x = np.full((5, 2, 3), 1e4, dtype="float32")
    y, (h, c) = ar.lstm(backend.asarray(x), backend.tree(params), impl=impl)
    for a in (y, h, c):
        assert np.all(np.isfinite(backend.numpy(a)))


@pytest.mark.parametrize("impl", PATHS)
def test_large_preactivations_stay_finite(backend, impl):
    _large_preactivations(backend, impl)
