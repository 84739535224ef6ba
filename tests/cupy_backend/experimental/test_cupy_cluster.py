"""The "cluster" CuPy fast path (one thread block cluster runs the whole loop) against the generic core, on a GPU.

Runs on the cupy backend only, like ``tests/cupy_backend/test_cupy_fast.py`` (whose helpers it uses). On a GPU
without thread block clusters (compute capability below 9.0) it checks that the path refuses clearly instead.
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from tests.cupy_backend.test_cupy_fast import _assert_same, _problem, _require_cupy, _run
from tests.variants import GPU_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.only_backends("cupy")

CLUSTER_SIZES = (2, 4, 8, 16)


def _has_clusters() -> bool:
    import cupy

    return int(cupy.cuda.Device().compute_capability) >= 90


def _refused_without_clusters(backend) -> bool:
    """True (after checking the refusal) on a GPU without clusters: the caller returns."""
    if _has_clusters():
        return False
    params, x, state = _problem("rnn", {}, "float32", 3, 2, 3, 4, seed=0)
    with pytest.raises(ValueError, match="compute capability 9.0"):
        _run(backend, "rnn", params, x, state, "cluster")
    return True


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_generic_with_lengths_reverse_and_state(backend, variant, dtype):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    kind, params_options, call_options = variant
    params, x, state = _problem(kind, params_options, dtype, 9, 5, 4, 6, seed=len(_ids(variant)))
    lengths = backend.asarray(np.array([9, 0, 4, 1, 7]))
    if params_options.get("proj_size") or call_options.get("linear_before_reset") is False:
        with pytest.raises(ValueError, match="projection|linear_before_reset=True only"):
            _run(backend, kind, params, x, state, "cluster", lengths=lengths, **call_options)
        return
    for reverse in (False, True):
        got = _run(backend, kind, params, x, state, "cluster", lengths=lengths, reverse=reverse, **call_options)
        want = _run(backend, kind, params, x, state, "generic", lengths=lengths, reverse=reverse, **call_options)
        _assert_same(backend, kind, got, want, dtype, 9)
        assert np.all(backend.numpy(got[0])[4:, 2] == 0)  # padded steps are exactly zero


@pytest.mark.parametrize("size", CLUSTER_SIZES)
@pytest.mark.parametrize("tile", [1, 2, 4, 8])
@pytest.mark.parametrize("kind,options", [("rnn", {}), ("lstm", {"clip": 2.0}), ("gru", {})])
@pytest.mark.parametrize("threads", [64, 256])
def test_every_cluster_size_tile_and_block(backend, size, tile, kind, options, threads):
    """H = 70 over 2..16 blocks (at 16 the last block owns no unit), 11 batch rows in tiles, warps with several
    tasks per step (64 threads) or not."""
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    from arrayrnn._backends.cupy import policy

    knobs = {"cluster_force_cluster_size": size, "cluster_force_batch_tile": tile, "cluster_threads": threads}
    params, x, state = _problem(kind, {}, "float64", 12, 11, 3, 70, seed=tile)
    lengths = backend.asarray(np.array([12, 5, 0, 1, 12, 3, 2, 12, 4, 9, 1]))
    for reverse in (False, True):
        with policy.configured(**knobs):
            got = _run(backend, kind, params, x, state, "cluster", lengths=lengths, reverse=reverse, **options)
        want = _run(backend, kind, params, x, state, "generic", lengths=lengths, reverse=reverse, **options)
        _assert_same(backend, kind, got, want, "float64", 12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", [(2000, 32, 16, 128), (300, 1, 64, 256), (200, 8, 128, 256)], ids=str)
def test_long_sequences_and_benchmark_shapes(backend, kind, shape):
    """2000 steps: a missed barrier or a stale state read shows up as drift; and the small-batch benchmark shapes."""
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    steps, batch, features, hidden = shape
    dtype = "float64" if steps == 2000 else "float32"
    params, x, state = _problem(kind, {}, dtype, steps, batch, features, hidden, seed=5)
    got = _run(backend, kind, params, x, state, "cluster")
    want = _run(backend, kind, params, x, state, "generic")
    _assert_same(backend, kind, got, want, dtype, steps)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_float16_against_float64_reference(backend, kind):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    from arrayrnn.backend import map_arrays
    from tests.cupy_backend.test_cupy_fast import FUNCTIONS, _finals

    params, x, state = _problem(kind, {}, "float16", 8, 3, 4, 16, seed=21)
    y, final = _run(backend, kind, params, x, state, "cluster")
    params64 = map_arrays(lambda a: np.asarray(a, dtype=np.float64), params)
    state64 = tuple(np.asarray(s, np.float64) for s in state) if kind == "lstm" else np.asarray(state, np.float64)
    y_ref, final_ref = FUNCTIONS[kind](np.asarray(x, np.float64), params64, state64)
    np.testing.assert_allclose(backend.numpy(y, "float16").astype(np.float64), y_ref, rtol=2e-2, atol=2e-2)
    for a, b in zip(_finals(kind, final), _finals(kind, final_ref)):
        np.testing.assert_allclose(backend.numpy(a, "float16").astype(np.float64), b, rtol=2e-2, atol=2e-2)


def test_non_default_stream_inputs_untouched_and_layouts(backend):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    import cupy

    params, x, state = _problem("lstm", {"peepholes": True}, "float32", 10, 3, 4, 8, seed=8)
    x_b, params_b, state_b = backend.asarray(x), backend.tree(params), backend.tree(state)
    copies = [a.copy() for a in (x_b, *state_b, params_b.weight_hh)]
    want = ar.lstm(x_b, params_b, state_b, impl="generic")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = ar.lstm(x_b, params_b, state_b, impl="cluster")
        stream.synchronize()
    _assert_same(backend, "lstm", got, want, "float32", 10)
    for before, after in zip(copies, (x_b, *state_b, params_b.weight_hh)):
        np.testing.assert_array_equal(backend.numpy(before), backend.numpy(after))
    y_bf, _ = ar.lstm(backend.asarray(np.transpose(x, (1, 0, 2))), params_b, batch_first=True, impl="cluster")
    y_ref, _ = ar.lstm(x_b, params_b, impl="generic")
    np.testing.assert_allclose(backend.numpy(y_bf), np.transpose(backend.numpy(y_ref), (1, 0, 2)), rtol=1e-5, atol=1e-5)


def test_too_large_for_one_cluster_says_what_to_use(backend):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    params, x, state = _problem("lstm", {}, "float32", 3, 2, 4, 1024, seed=1)
    with pytest.raises(ValueError, match="impl='persistent' or 'graph'"):
        _run(backend, "lstm", params, x, state, "cluster")


# ---- the gradient path (ar.vjp with impl="cluster")


@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=_ids)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_matches_generic(backend, monkeypatch, variant, dtype):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    from arrayrnn._backends.cupy.experimental import grad_cluster as cupy_grad_cluster
    from tests.cupy_backend.test_cupy_grad import _assert_same as _assert_same_grads
    from tests.cupy_backend.test_cupy_grad import _grads
    from tests.cupy_backend.test_cupy_grad import _problem as _grad_problem

    calls = []
    real = cupy_grad_cluster.sequence_vjp
    monkeypatch.setattr(cupy_grad_cluster, "sequence_vjp", lambda *a, **k: calls.append(1) or real(*a, **k))
    kind, params_options, call_options = variant
    params, x, state, dy, d_final = _grad_problem(kind, params_options, dtype, 9, 5, 4, 6, seed=len(_ids(variant)))
    lengths = backend.asarray(np.array([9, 0, 4, 1, 7]))
    if params_options.get("proj_size") or call_options.get("linear_before_reset") is False:
        with pytest.raises(ValueError, match="projection|linear_before_reset=True only"):
            _grads(backend, kind, params, x, state, dy, d_final, "cluster", lengths=lengths, **call_options)
        return
    for reverse in (False, True):
        options = {"lengths": lengths, "reverse": reverse, **call_options}
        got = _grads(backend, kind, params, x, state, dy, d_final, "cluster", **options)
        want = _grads(backend, kind, params, x, state, dy, d_final, "generic", **options)
        _assert_same_grads(backend, got, want, dtype, 9)
    assert len(calls) == 2  # the cluster path ran (no silent fallback)


@pytest.mark.parametrize("kind,options", [("rnn", {}), ("lstm", {"clip": 2.0}), ("gru", {})])
@pytest.mark.parametrize(
    "shape", [(500, 32, 128, 128), (100, 1, 64, 256), (100, 8, 128, 256), (600, 16, 8, 96)], ids=str
)
def test_gradient_benchmark_shapes_and_long_sequences(backend, kind, options, shape):
    _require_cupy(backend)
    if _refused_without_clusters(backend):
        return
    from tests.cupy_backend.test_cupy_grad import _assert_same as _assert_same_grads
    from tests.cupy_backend.test_cupy_grad import _grads
    from tests.cupy_backend.test_cupy_grad import _problem as _grad_problem

    steps, batch, features, hidden = shape
    dtype = "float64" if steps == 600 else "float32"
    params, x, state, dy, d_final = _grad_problem(kind, {}, dtype, steps, batch, features, hidden, seed=7)
    lengths = backend.asarray(np.random.default_rng(1).integers(0, steps + 1, size=batch))
    got = _grads(backend, kind, params, x, state, dy, d_final, "cluster", lengths=lengths, **options)
    want = _grads(backend, kind, params, x, state, dy, d_final, "generic", lengths=lengths, **options)
    _assert_same_grads(backend, got, want, dtype, steps)
