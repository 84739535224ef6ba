"""The experimental CuPy gradient paths ("fused_graph", "persistent") through ``ar.vjp``, against the generic core, on
a GPU: their share of ``tests/cupy_backend/test_cupy_grad.py``'s checks (run with that file's helpers), and the tests
of their own. ("cluster": ``test_cupy_cluster.py``.)

Runs on the cupy backend only (skipped elsewhere; ``ci/gpu.sh`` runs it in its "fast" phase).
"""

from __future__ import annotations

import pytest

from arrayrnn._backends.cupy import policy
from tests.cupy_backend.test_cupy_grad import (
    LARGER_CASES,
    LARGER_SHAPES,
    _assert_same,
    _grads,
    _larger_shapes,
    _matches_generic,
    _problem,
    _record_fast_calls,
    _require_cupy,
)
from tests.variants import GPU_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.only_backends("cupy")


@pytest.fixture
def fast_calls(monkeypatch):
    return _record_fast_calls(monkeypatch)


@pytest.fixture(autouse=True)
def _persistent_barrier_checked():
    with policy.configured(persistent_check_barrier=True):
        yield


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["fused_graph", "persistent"])
def test_matches_generic_with_lengths_and_reverse(backend, fast_calls, variant, dtype, impl):
    _matches_generic(backend, fast_calls, variant, dtype, impl, projection=impl == "fused_graph")


@pytest.mark.parametrize("kind,options", LARGER_CASES)
@pytest.mark.parametrize("shape", LARGER_SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["fused_graph", "persistent"])
def test_larger_shapes(backend, fast_calls, kind, options, shape, impl):
    _larger_shapes(backend, fast_calls, kind, options, shape, impl)


@pytest.mark.parametrize(
    "kind,options", [("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False})]
)
def test_persistent_long_sequence(backend, fast_calls, kind, options):
    """600 steps through the executor on the full grid: a missed barrier or stale read would show as drift."""
    _require_cupy(backend)
    params, x, state, dy, d_final = _problem(kind, {}, "float64", 600, 24, 8, 96, seed=4)
    got = _grads(backend, kind, params, x, state, dy, d_final, "persistent", **options)
    want = _grads(backend, kind, params, x, state, dy, d_final, "generic", **options)
    _assert_same(backend, got, want, "float64", 600)
    assert fast_calls == [("persistent", True)]
