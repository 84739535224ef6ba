"""The experimental CuPy fast paths ("fused_graph", "tiled", "persistent") against the generic core, on a GPU: their
share of ``tests/cupy_backend/test_cupy_fast.py``'s checks (run with that file's helpers), and the tests of their own.
("cluster": ``test_cupy_cluster.py``.)

Runs on the cupy backend only (skipped elsewhere; ``ci/gpu.sh`` runs it in its "fast" phase).
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests.cupy_backend.test_cupy_fast import (
    FUNCTIONS,
    LARGER_CASES,
    LARGER_SHAPES,
    _assert_same,
    _float16_against_float64,
    _inputs_never_modified,
    _large_preactivations,
    _larger_shapes,
    _layouts,
    _matches_generic,
    _noncontiguous_weights,
    _problem,
    _require_cupy,
    _run,
)
from tests.variants import GPU_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.only_backends("cupy")

PATHS = ["fused_graph", "tiled", "persistent"]


@pytest.fixture(autouse=True)
def _persistent_barrier_checked():
    """Every persistent-kernel call here reads back the grid barrier's timeout flag (a timed-out barrier
    would otherwise only show up as wrong numbers)."""
    from arrayrnn._backends.cupy import policy

    with policy.configured(persistent_check_barrier=True):
        yield


def _refused(impl, params_options, call_options):
    """What path ``impl`` refuses this call with (a pattern), or None."""
    if impl in ("tiled", "persistent") and params_options.get("proj_size"):
        return "projection"
    if impl == "tiled" and call_options.get("linear_before_reset") is False:
        return "linear_before_reset=True only"
    return None


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", PATHS)
def test_matches_generic_with_lengths_reverse_and_state(backend, variant, dtype, impl):
    _, params_options, call_options = variant
    _matches_generic(backend, variant, dtype, impl, _refused(impl, params_options, call_options))


@pytest.mark.parametrize("kind,options", LARGER_CASES)
@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("shape", LARGER_SHAPES, ids=str)
def test_larger_shapes(backend, kind, options, impl, shape):
    _larger_shapes(backend, kind, options, impl, shape, _refused(impl, {}, options))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", PATHS)
def test_float16_against_float64_reference(backend, kind, impl):
    _float16_against_float64(backend, kind, impl)


@pytest.mark.parametrize("impl", PATHS)
def test_layouts_batch_first_and_unbatched(backend, impl):
    _layouts(backend, impl)


@pytest.mark.parametrize("impl", PATHS)
def test_inputs_are_never_modified(backend, impl):
    _inputs_never_modified(backend, impl)


@pytest.mark.parametrize("impl", PATHS)
def test_noncontiguous_weights(backend, impl):
    _noncontiguous_weights(backend, impl)


@pytest.mark.parametrize("impl", PATHS)
def test_large_preactivations_stay_finite(backend, impl):
    _large_preactivations(backend, impl)


# ------------------------------------------------------------------------------------------------
# fused_graph


def test_fused_graph_replays_sees_in_place_updates_and_runs_on_any_stream(backend):
    """The cuBLAS products inside the captured graph (cupy_blas, through ctypes): captured once per stream, the
    weights read in place, the results the generic core's."""
    _require_cupy(backend)
    import cupy

    from arrayrnn._backends.cupy import runtime
    from arrayrnn._backends.cupy.experimental import fused_graph as cupy_fused_graph

    runtime.reset(runtime.PLANS + "fused_graph")
    params, x, state = _problem("lstm", {"proj_size": 3, "peepholes": True}, "float32", 12, 40, 4, 8, seed=17)
    params_b, state_b = backend.tree(params), backend.tree(state)
    first = ar.lstm(backend.asarray(x), params_b, state_b, impl="fused_graph")
    _assert_same(backend, "lstm", first, ar.lstm(backend.asarray(x), params_b, state_b, impl="generic"), "float32", 12)
    params_b.weight_hh[...] *= 0.5
    params_b.weight_hr[...] *= -1.0
    again = ar.lstm(backend.asarray(x), params_b, state_b, impl="fused_graph")
    _assert_same(backend, "lstm", again, ar.lstm(backend.asarray(x), params_b, state_b, impl="generic"), "float32", 12)
    assert cupy_fused_graph.cached_plans() == 1
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        other = ar.lstm(backend.asarray(x), params_b, state_b, impl="fused_graph")
        stream.synchronize()
    _assert_same(backend, "lstm", other, again, "float32", 12)
    assert cupy_fused_graph.cached_plans() == 2
    assert not cupy.cuda.get_current_stream().is_capturing()


# ------------------------------------------------------------------------------------------------
# persistent


@pytest.mark.parametrize("tile", [1, 2, 4, 8])
@pytest.mark.parametrize(
    "kind,options", [("rnn", {}), ("lstm", {"clip": 2.0}), ("gru", {}), ("gru", {"linear_before_reset": False})]
)
@pytest.mark.parametrize("blocks", [1, 2, 7, None])
def test_persistent_every_tile_and_grid(backend, tile, kind, options, blocks):
    """Each batch tile, with the grid capped so that warps take several tasks per step (1, 2, 7 blocks) or not."""
    _require_cupy(backend)
    from arrayrnn._backends.cupy import policy

    params, x, state = _problem(kind, {}, "float64", 12, 11, 3, 70, seed=tile)
    lengths = backend.asarray(np.array([12, 5, 0, 1, 12, 3, 2, 12, 4, 9, 1]))
    for reverse in (False, True):
        with policy.configured(persistent_force_batch_tile=tile, persistent_max_blocks=blocks):
            got = _run(backend, kind, params, x, state, "persistent", lengths=lengths, reverse=reverse, **options)
        want = _run(backend, kind, params, x, state, "generic", lengths=lengths, reverse=reverse, **options)
        _assert_same(backend, kind, got, want, "float64", 12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_persistent_long_sequence_many_blocks(backend, kind):
    """2000 steps over the full grid (every SM): any missed barrier or stale state read shows up as drift."""
    _require_cupy(backend)
    params, x, state = _problem(kind, {}, "float64", 2000, 48, 16, 256, seed=5)
    got = _run(backend, kind, params, x, state, "persistent")
    want = _run(backend, kind, params, x, state, "generic")
    _assert_same(backend, kind, got, want, "float64", 2000)


def test_persistent_on_a_non_default_stream(backend):
    _require_cupy(backend)
    import cupy

    params, x, state = _problem("lstm", {}, "float32", 10, 3, 4, 8, seed=8)
    want = ar.lstm(backend.asarray(x), backend.tree(params), backend.tree(state), impl="generic")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = ar.lstm(backend.asarray(x), backend.tree(params), backend.tree(state), impl="persistent")
        stream.synchronize()
    _assert_same(backend, "lstm", got, want, "float32", 10)


@pytest.mark.parametrize("kind,options", [("lstm", {}), ("gru", {"linear_before_reset": False})])
def test_persistent_with_the_acquire_release_barrier(backend, kind, options):
    """The barrier flavour the benchmark compares (not the default yet) gives the same answers, also through
    the graph executor of the gradient path."""
    _require_cupy(backend)
    from arrayrnn._backends.cupy import policy

    params, x, state = _problem(kind, {}, "float64", 300, 20, 8, 96, seed=6)
    with policy.configured(persistent_acqrel_barrier=True):
        got = _run(backend, kind, params, x, state, "persistent", **options)
        want = _run(backend, kind, params, x, state, "generic", **options)
        _assert_same(backend, kind, got, want, "float64", 300)
        x_b, params_b, state_b = backend.asarray(x), backend.tree(params), backend.tree(state)
        grads = {}
        for impl in ("persistent", "generic"):
            _, pullback = ar.vjp(FUNCTIONS[kind], x_b, params_b, state_b, impl=impl, **options)
            grads[impl] = pullback((backend.asarray(np.ones((300, 20, 96))), None))
    np.testing.assert_allclose(
        backend.numpy(grads["persistent"][1].weight_hh), backend.numpy(grads["generic"][1].weight_hh), rtol=1e-9
    )
