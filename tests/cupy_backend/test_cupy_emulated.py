"""The CuPy fast paths run on the CPU: real kernel source on a warp emulator, CuPy replaced by a stand-in.

Checks, without a GPU, everything about the "fused" and "graph" paths that is not the GPU itself:
kernel index math and gate formulas, lengths/reverse masking, argument order and types, the ping-pong
buffers, graph capture/replay bookkeeping and the plan cache. The oracle is the generic core on NumPy
(float64), itself tested against torch and an independent loop. ``tests/cupy_backend/test_cupy_fast.py`` runs
the same comparisons on a real GPU. The experimental paths' share of these tests (the same checks, and their own)
is in ``experimental/test_cupy_emulated_paths.py``; its helpers are the ones below.
"""

from __future__ import annotations

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest

from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import fused as cupy_kernels
from arrayrnn._backends.cupy import graph as cupy_graph
from arrayrnn._backends.cupy import policy
from arrayrnn._backends.cupy import sources as cupy_sources
from arrayrnn._core.sequence import GENERIC
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.support import random_params
from tests.variants import KERNEL_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")

#: path name -> forward module, for every path ``impl=`` reaches (the experimental ones where ``experimental/`` is)
IMPLS = {name: cupy_dispatch.forward_module(name) for name in cupy_dispatch.paths()}


def _defaults(kind, call_options):
    defaults = {"rnn": {"nonlinearity": "tanh"}, "lstm": {"coupled": False, "clip": None}, "gru": {}}[kind]
    if kind == "gru":
        defaults = {"linear_before_reset": True}
    return {**defaults, **call_options}


def _problem(kind, params_options, dtype, steps, batch, features, hidden, seed):
    rng = np.random.default_rng(seed)
    params = random_params(kind, features, hidden, seed=seed, dtype=dtype, **params_options)
    x = rng.standard_normal((steps, batch, features)).astype(dtype)
    h = rng.standard_normal((batch, getattr(params, "output_size", hidden))).astype(dtype)
    state = (h, rng.standard_normal((batch, hidden)).astype(dtype)) if kind == "lstm" else (h,)
    return params, x, state


def _generic(kind, params, x, state, lengths, reverse, options):
    as64 = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
    from arrayrnn.backend import map_arrays

    y, final = GENERIC[kind](
        xp_numpy,
        as64(x),
        map_arrays(as64, params),
        tuple(as64(s) for s in state),
        None if lengths is None else np.asarray(lengths),
        reverse,
        **options,
    )
    return y, final


def _fast(module, kind, params, x, state, lengths, reverse, options):
    """The CuPy hook with ``impl=module.IMPL`` (the path's refusals, dtype check and empty batch included)."""
    from arrayrnn.backend import map_arrays

    fake_params = map_arrays(fake_cupy.asfake, params)
    fake_state = tuple(fake_cupy.asfake(s) for s in state)
    fake_lengths = None if lengths is None else fake_cupy.asfake(np.asarray(lengths))
    args = (fake_cupy.asfake(x), fake_params, fake_state, fake_lengths, reverse, options)
    return cupy_dispatch.sequence(kind, None, *args, impl=module.IMPL)


def _close(got, want, dtype, steps):
    tol = 1e-12 if dtype == "float64" else 3e-6 * max(1.0, np.sqrt(steps))
    got = np.asarray(got)
    assert not np.isnan(got).any(), "an output element was never written (poisoned with NaN)"
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _check(module_name, kind, params, x, state, lengths, reverse, options, dtype):
    y, final = _fast(IMPLS[module_name], kind, params, x, state, lengths, reverse, options)
    y_ref, final_ref = _generic(kind, params, x, state, lengths, reverse, options)
    assert y.dtype == np.dtype(dtype) and y.shape == y_ref.shape
    _close(y, y_ref, dtype, x.shape[0])
    assert len(final) == len(final_ref)
    for got, want in zip(final, final_ref):
        assert got.dtype == np.dtype(dtype)
        _close(got, want, dtype, x.shape[0])
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert np.all(np.asarray(y)[n:, b] == 0), "padded steps must give exactly 0"


def _matches_generic(monkeypatch, variant, impl, refused=None):
    """Path ``impl`` agrees with the generic core with lengths, reverse and without lengths; or, where ``refused``
    (a pattern) is given, it refuses the call with a ``ValueError`` matching it."""
    kind, params_options, call_options = variant
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem(kind, params_options, "float64", 5, 4, 3, 6, seed=len(_ids(variant)))
        lengths = [5, 0, 2, 4]
        if refused is not None:
            with pytest.raises(ValueError, match=refused):
                _fast(IMPLS[impl], kind, params, x, state, lengths, False, options)
            return
        for reverse in (False, True):
            _check(impl, kind, params, x, state, lengths, reverse, options, "float64")
        _check(impl, kind, params, x, state, None, False, options, "float64")
        assert fake.captures_open == 0


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_matches_generic_with_lengths_and_reverse(monkeypatch, variant, impl):
    _, params_options, _ = variant
    refused = "projection" if impl == "graph" and params_options.get("proj_size") else None
    _matches_generic(monkeypatch, variant, impl, refused)


def _wide_hidden(monkeypatch, kind, impl):
    """hidden = 70 > 2 * 32: each lane handles several columns, the last stride is partial."""
    options = _defaults(kind, {})
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float32", 3, 2, 5, 70, seed=3)
        _check(impl, kind, params, x, state, [3, 1], False, options, "float32")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_float32_wide_hidden_spans_several_lane_strides(monkeypatch, kind, impl):
    _wide_hidden(monkeypatch, kind, impl)


#: the float16 cases: (kind, call options)
FLOAT16_CASES = [("rnn", {"nonlinearity": "relu"}), ("lstm", {"clip": 0.9}), ("gru", {"linear_before_reset": True})]


def _float16_storage(monkeypatch, kind, call_options, impl):
    """float16 arrays (every step rounds h to float16, the arithmetic runs in float32): within float16's
    precision of the float64 generic core on the same (float16-representable) inputs."""
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch), policy.configured(cluster_threads=64):
        params, x, state = _problem(kind, {}, "float16", 6, 3, 4, 10, seed=41)
        lengths = [6, 2, 4]
        y, final = _fast(IMPLS[impl], kind, params, x, state, lengths, True, options)
        y_ref, final_ref = _generic(kind, params, x, state, lengths, True, options)
        assert y.dtype == np.float16
        np.testing.assert_allclose(np.asarray(y, dtype=np.float64), y_ref, rtol=1e-2, atol=1e-2)
        for got, want in zip(final, final_ref):
            assert got.dtype == np.float16
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-2, atol=1e-2)
        assert np.all(np.asarray(y)[2:, 1] == 0), "padded steps must give exactly 0"


@pytest.mark.parametrize("kind,call_options", FLOAT16_CASES)
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_float16_storage_against_float64(monkeypatch, kind, call_options, impl):
    _float16_storage(monkeypatch, kind, call_options, impl)


@pytest.mark.parametrize("tile", cupy_sources.BATCH_TILES)
@pytest.mark.parametrize(
    "kind,options", [("lstm", {"coupled": False, "clip": None}), ("gru", {"linear_before_reset": False})]
)
def test_graph_every_batch_tile_including_partial_tiles(monkeypatch, tile, kind, options):
    """batch 11 is not a multiple of any tile > 1: the last tile of every launch is partial."""
    with policy.configured(graph_force_batch_tile=tile), fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float64", 3, 11, 2, 9, seed=tile)
        lengths = [3, 2, 1, 0, 3, 3, 1, 2, 0, 3, 2]
        _check("graph", kind, params, x, state, lengths, True, options, "float64")


def test_graph_eager_mode_runs_the_same_launches(monkeypatch):
    with policy.configured(graph_capture=False), fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("gru", {}, "float64", 4, 3, 2, 5, seed=8)
        _check("graph", "gru", params, x, state, [4, 1, 3], False, {"linear_before_reset": False}, "float64")
        assert fake.captures_begun == 0 and fake.kernel_launches == 2 * 4


def test_graph_is_captured_once_and_replayed(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {}, "float64", 4, 2, 3, 5, seed=9)
        fake_params = _as_fake_params(params)
        first = cupy_graph.sequence(
            "lstm", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        x2 = x[::-1].copy()
        second = cupy_graph.sequence(
            "lstm", None, fake_cupy.asfake(x2), fake_params, _as_fake_state(state), None, False, {}
        )
        assert fake.captures_begun == 1 and fake.graph_launches == 2
        assert fake.kernel_launches == 0  # every step ran inside the graph
        _close(second[0], _generic("lstm", params, x2, state, None, False, {})[0], "float64", 4)
        # the first result is the caller's: the second call must not have overwritten it
        _close(first[0], _generic("lstm", params, x, state, None, False, {})[0], "float64", 4)


def test_graph_sees_weights_updated_in_place(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("rnn", {}, "float64", 3, 2, 3, 4, seed=10)
        fake_params = _as_fake_params(params)
        cupy_graph.sequence("rnn", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {})
        fake_params.weight_hh[...] *= -0.5  # same address, new values (an optimizer step)
        fake_params.bias_hh[...] += 1.0
        y, _ = cupy_graph.sequence(
            "rnn", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        assert fake.captures_begun == 1
        from arrayrnn.backend import map_arrays

        updated = map_arrays(np.asarray, fake_params)
        _close(y, _generic("rnn", updated, x, state, None, False, {"nonlinearity": "tanh"})[0], "float64", 3)


def test_graph_new_weight_arrays_get_a_new_plan_and_cache_is_bounded(monkeypatch):
    with policy.configured(graph_max_plans=2), fake_cupy.installed(monkeypatch) as fake:
        for seed in range(3):
            params, x, state = _problem("rnn", {}, "float64", 2, 2, 3, 4, seed=seed)
            _check("graph", "rnn", params, x, state, None, False, {"nonlinearity": "tanh"}, "float64")
        assert fake.captures_begun == 3
        assert cupy_graph.cached_plans() == 2


def test_failed_capture_ends_the_capture_and_the_next_call_works(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {}, "float64", 3, 2, 3, 4, seed=11)
        fake.fail_launch_named = cupy_sources.graph_kernel_name("lstm_graph_step", 1)
        with pytest.raises(RuntimeError, match="injected launch failure"):
            _fast(cupy_graph, "lstm", params, x, state, None, False, {})
        assert fake.captures_open == 0, "a failed capture left a stream capturing"
        fake.fail_launch_named = None
        _check("graph", "lstm", params, x, state, None, False, {"coupled": False, "clip": None}, "float64")


def test_failing_end_capture_is_reported(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("gru", {}, "float64", 2, 2, 3, 4, seed=12)
        fake.fail_end_capture = True
        with pytest.raises(RuntimeError, match="Invalidated"):
            _fast(cupy_graph, "gru", params, x, state, None, False, {"linear_before_reset": True})
        assert fake.captures_open == 0


def _inputs_unmodified_noncontiguous_weights(monkeypatch, impl):
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem("lstm", {"peepholes": True}, "float64", 3, 2, 3, 4, seed=13)
        fake_params = _as_fake_params(params)
        # a Fortran-ordered weight_hh: same values, not C-contiguous
        import dataclasses

        fortran = np.asfortranarray(np.asarray(fake_params.weight_hh)).view(fake_cupy.FakeArray)
        fake_params = dataclasses.replace(fake_params, weight_hh=fortran)
        fake_x, fake_state = fake_cupy.asfake(x), _as_fake_state(state)
        before = [np.array(a) for a in (fake_x, *fake_state, fake_params.weight_hh, fake_params.bias_ih)]
        y, _ = IMPLS[impl].sequence("lstm", None, fake_x, fake_params, fake_state, None, False, {})
        after = [np.array(a) for a in (fake_x, *fake_state, fake_params.weight_hh, fake_params.bias_ih)]
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
        _close(y, _generic("lstm", params, x, state, None, False, {})[0], "float64", 3)


@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_inputs_are_not_modified_and_noncontiguous_weights_work(monkeypatch, impl):
    _inputs_unmodified_noncontiguous_weights(monkeypatch, impl)


def test_empty_batch(monkeypatch):
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem("gru", {}, "float64", 3, 0, 2, 4, seed=14)
        for module in IMPLS.values():
            y, (h,) = _fast(module, "gru", params, x, state, None, False, {"linear_before_reset": True})
            assert y.shape == (3, 0, 4) and h.shape == (0, 4)


def test_wrong_argument_types_are_caught_by_the_stand_in(monkeypatch):
    """The stand-in itself must reject a Python int where the kernel takes an int (else it proves nothing)."""
    with fake_cupy.installed(monkeypatch) as fake:
        from arrayrnn._backends.cupy import common as cupy_common

        k = cupy_common.kernel("project_update", "float64")
        a = fake.zeros((2,), dtype=np.float64)
        lengths = fake.zeros((1,), dtype=np.int64)
        with pytest.raises(TypeError, match="numpy.int32"):
            k((1,), (32,), (a, lengths, a, a, 1, np.int32(2), np.int32(0), np.int32(0)))
        with pytest.raises(TypeError, match="dtype"):
            k((1,), (32,), (a, a, a, a, np.int32(1), np.int32(2), np.int32(0), np.int32(0)))


def _as_fake_params(params):
    from arrayrnn.backend import map_arrays

    return map_arrays(fake_cupy.asfake, params)


def _as_fake_state(state):
    return tuple(fake_cupy.asfake(s) for s in state)


# ------------------------------------------------------------------------------------------------
# the choices (pure functions)


def test_batch_tile_keeps_enough_warps():
    assert cupy_graph.choose_batch_tile(1, 128) == 1
    # the best tiles measured on an H100 (benchmarks/results/gpu_h100_2026-11-27_run1.json, graph sweep)
    assert cupy_graph.choose_batch_tile(8, 256) == 1
    assert cupy_graph.choose_batch_tile(32, 128) == 1
    assert cupy_graph.choose_batch_tile(64, 512) == 4
    assert cupy_graph.choose_batch_tile(1000, 1024) == 8
    assert cupy_graph.choose_batch_tile(3, 64) == 1
    for batch in (1, 2, 5, 64, 1000):
        for hidden in (1, 33, 1024):
            tile = cupy_graph.choose_batch_tile(batch, hidden)
            assert tile in cupy_sources.BATCH_TILES and tile < 2 * batch  # never more than the next power of 2


def test_dispatch_prefers_graph_at_small_batch_and_fused_at_large():
    choose = policy.choose_impl
    assert choose("lstm", steps=100, batch=1, hidden=256, dtype="float32") == "graph"
    assert choose("lstm", steps=100, batch=64, hidden=512, dtype="float32") == "graph"
    assert choose("lstm", steps=100, batch=256, hidden=1024, dtype="float32") == "fused"
    assert choose("lstm", steps=100, batch=4, hidden=4096, dtype="float32") == "fused"
    assert choose("lstm", steps=100, batch=1, hidden=256, dtype="float32", has_projection=True) == "fused"
    assert choose("gru", steps=100, batch=1, hidden=256, dtype="float32", weights_contiguous=False) == "fused"
    assert choose("rnn", steps=100, batch=0, hidden=8, dtype="float32") == "generic"
    assert choose("rnn", steps=100, batch=4, hidden=8, dtype="int32") == "generic"
    # huge buffers (the graph gradient path caches them per plan): fused instead
    assert choose("lstm", steps=100_000, batch=64, hidden=512, dtype="float32") == "fused"


def test_dispatch_switches_from_the_environment():
    config = policy.from_switches("CLUSTER_AUTO=1, FUSED_GRAPH_AUTO=on,GRAD_SMALL_BATCH_IMPL=persistent")
    assert policy.parse_switches("CLUSTER_AUTO=1, FUSED_GRAPH_AUTO=on,GRAD_SMALL_BATCH_IMPL=persistent") == {
        "CLUSTER_AUTO": True, "FUSED_GRAPH_AUTO": True, "GRAD_SMALL_BATCH_IMPL": "persistent"
    }  # fmt: skip
    assert config.cluster_auto is True and config.grad_small_batch_impl == "persistent"
    assert (
        policy.choose_impl("lstm", steps=100, batch=256, hidden=1024, dtype="float32", config=config) == "fused_graph"
    )
    assert policy.from_switches("CLUSTER_AUTO=false", config).cluster_auto is False
    with pytest.raises(ValueError, match="ARRAYRNN_CUPY_DISPATCH: unknown switch 'GRAPH_AUTO'; known: CLUSTER_AUTO"):
        policy.parse_switches("GRAPH_AUTO=1")
    with pytest.raises(ValueError, match="SMALL_BATCH_IMPL must be graph or persistent, got 'fused'"):
        policy.parse_switches("SMALL_BATCH_IMPL=fused")
    with pytest.raises(ValueError, match="FUSED_GRAPH_AUTO must be 1/0, got 'yes please'"):
        policy.parse_switches("FUSED_GRAPH_AUTO=yes please")
    smaller = policy.from_switches("GRAPH_MAX_BATCH=32", config)
    assert smaller.graph_max_batch == 32
    assert policy.choose_impl("lstm", steps=100, batch=64, hidden=512, dtype="float32", config=smaller) == "fused_graph"
    with pytest.raises(ValueError, match="GRAPH_MAX_BATCH must be 8 or 32 or 64, got '48'"):
        policy.parse_switches("GRAPH_MAX_BATCH=48")


def test_the_environment_sets_the_process_config(monkeypatch):
    import subprocess
    import sys

    code = "from arrayrnn._backends.cupy import policy; c = policy.current(); print(c.cluster_auto, c.graph_max_batch)"
    env = {**__import__("os").environ, "ARRAYRNN_CUPY_DISPATCH": "CLUSTER_AUTO=1,GRAPH_MAX_BATCH=8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "8"]


def test_impl_names_are_per_backend(monkeypatch):
    from arrayrnn import _dispatch

    # (the experimental paths: experimental/test_cupy_emulated_paths.py::test_experimental_impl_names)
    assert _dispatch.paths("cupy") == cupy_dispatch.paths() and {"fused", "graph"} <= set(cupy_dispatch.paths())
    assert _dispatch.paths("numpy") == ()
    assert cupy_dispatch.forward_function("fused") is cupy_kernels.sequence
    assert cupy_dispatch.forward_function("graph") is cupy_graph.sequence
    assert _dispatch.resolve_impl("gru", "cupy", "fused") == "fused"
    with pytest.raises(ValueError, match="impl must be one of auto, generic, fast for lstm on numpy"):
        _dispatch.resolve_impl("lstm", "numpy", "graph")  # the keyword is strict
    with pytest.raises(ValueError, match="impl='fast' was asked for, but no fast path for lstm exists on array_api_st"):
        _dispatch.resolve_impl("lstm", "array_api_strict", "fast")
    assert _dispatch.resolve_impl("lstm", "torch", "fast") == _dispatch.resolve_impl("gru", "jax", "fast") == "fast"
    monkeypatch.setenv("ARRAYRNN_IMPL", "graph")  # the environment steers where the path exists
    assert _dispatch.resolve_impl("lstm", "numpy", None) == "auto"
    assert _dispatch.resolve_impl("lstm", "cupy", None) == "graph"
    monkeypatch.setenv("ARRAYRNN_IMPL", "grpah")
    with pytest.raises(ValueError, match="ARRAYRNN_IMPL must be one of"):
        _dispatch.resolve_impl("lstm", "cupy", None)


def test_route_names_the_path_and_why():
    route = cupy_dispatch.route
    small = fake_cupy.asfake(np.zeros((10, 8, 16), np.float32))
    large = fake_cupy.asfake(np.zeros((10, 256, 16), np.float32))
    params = random_params("lstm", 16, 256, seed=0, dtype="float32")
    assert route("lstm", small, params, {}) == ("graph", "B = 8 <= 64, H = 256 <= 1024: small batch")
    assert route("lstm", large, params, {}) == ("fused", "B = 256 > 64: cuBLAS per step")
    projected = random_params("lstm", 16, 256, seed=0, dtype="float32", proj_size=8)
    assert route("lstm", small, projected, {})[0] == "fused"
    assert "projection" in route("lstm", small, projected, {})[1]
    assert route("lstm", small, params, {}, impl="fused") == ("fused", "asked for by impl")
    half = fake_cupy.asfake(np.zeros((10, 8, 16), np.float16))
    assert route("lstm", half, params, {}, gradient=True)[0] == "generic"


def test_import_arrayrnn_imports_no_gpu_library():
    import subprocess
    import sys

    code = "import arrayrnn, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'torch', 'jax')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
