"""The experimental CuPy gradient paths ("fused_graph", and "persistent" through the graph executor) on the CPU
emulator: their share of ``tests/cupy_backend/test_cupy_emulated_grad.py``'s checks (run with that file's helpers),
and the tests of their own.
"""

from __future__ import annotations

import pytest

from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import policy
from arrayrnn.backend import map_arrays
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.cupy_backend.test_cupy_emulated import _defaults, _ids, _problem
from tests.cupy_backend.test_cupy_emulated_grad import (
    MISSING_COTANGENTS,
    NAN_CASES,
    WIDE_CASES,
    _backward_matches_generic,
    _compare,
    _cotangents,
    _declines_float16_and_an_empty_batch,
    _fast,
    _generic,
    _missing_cotangents,
    _nan_in_padding,
    _pullback_twice_inputs_unchanged,
    _vjp_end_to_end,
    _wide_hidden_backward,
)
from tests.variants import KERNEL_VARIANTS

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
@pytest.mark.parametrize("impl", ["fused_graph", "persistent"])
def test_matches_generic_backward_with_lengths_and_reverse(monkeypatch, variant, impl):
    _backward_matches_generic(monkeypatch, variant, impl, projection=impl == "fused_graph")


@pytest.mark.parametrize("kind,params_options,call_options", NAN_CASES)
@pytest.mark.parametrize("impl", ["fused_graph"])
def test_nan_in_padding_never_reaches_a_gradient(monkeypatch, kind, params_options, call_options, impl):
    _nan_in_padding(monkeypatch, kind, params_options, call_options, impl)


@pytest.mark.parametrize("with_dy,with_final", MISSING_COTANGENTS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("impl", ["fused_graph"])
def test_missing_cotangents_count_as_zeros(monkeypatch, kind, with_dy, with_final, impl):
    _missing_cotangents(monkeypatch, kind, with_dy, with_final, impl)


@pytest.mark.parametrize("kind,call_options", WIDE_CASES)
@pytest.mark.parametrize("impl", ["fused_graph"])
def test_float32_wide_hidden(monkeypatch, kind, call_options, impl):
    _wide_hidden_backward(monkeypatch, kind, call_options, impl)


@pytest.mark.parametrize("impl", ["fused_graph"])
def test_pullback_twice_and_inputs_unchanged(monkeypatch, impl):
    _pullback_twice_inputs_unchanged(monkeypatch, impl)


@pytest.mark.parametrize("impl", ["fused_graph"])
def test_declines_float16_and_an_empty_batch(monkeypatch, impl):
    _declines_float16_and_an_empty_batch(monkeypatch, impl)


@pytest.mark.parametrize("impl", ["fused_graph"])
def test_vjp_end_to_end_layouts_and_models(monkeypatch, impl):
    _vjp_end_to_end(monkeypatch, impl)


def test_the_hook_routes_tiled_to_the_graph_gradient(monkeypatch):
    """impl="tiled" has no gradient: ``ar.vjp(..., impl="tiled")`` records with the graph path."""
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    with fake_cupy.installed(monkeypatch):
        params, x, _ = _problem("lstm", {}, "float32", 3, 2, 2, 4, seed=0)
        fake_x, fake_params = fake_cupy.asfake(x), map_arrays(fake_cupy.asfake, params)
        route = cupy_dispatch.route
        assert route("lstm", fake_x, fake_params, {}, impl="tiled", gradient=True)[0] == "graph"  # no tiled gradient
        assert cupy_dispatch.gradient_function("tiled") is None


# ------------------------------------------------------------------------------------------------
# the graph executor (the "persistent" gradient)


@pytest.mark.parametrize("tile", [1, 2, 4, 8])
@pytest.mark.parametrize(
    "kind,call_options",
    [
        ("rnn", {"nonlinearity": "tanh"}),
        ("lstm", {"coupled": True, "clip": 0.8}),
        ("gru", {"linear_before_reset": True}),
        ("gru", {"linear_before_reset": False}),
    ],
)
@pytest.mark.parametrize("blocks", [1, 3])
def test_executor_tasks_per_warp_and_barriers(monkeypatch, tile, kind, call_options, blocks):
    """The executor with warps taking several tasks per launch, on every batch tile; one cooperative launch per
    loop (the emulator checks every grid barrier's target and reports deadlocks)."""
    options = _defaults(kind, call_options)
    tiles = {"graph_force_batch_tile": tile, "persistent_force_batch_tile": tile}
    threads = {"executor_threads": 64, "persistent_threads": 64}
    knobs = {**tiles, **threads, "persistent_max_blocks": blocks, "persistent_check_barrier": True}
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(**knobs):
        fake.multiprocessors = 3
        params, x, state = _problem(kind, {"peepholes": True} if kind == "lstm" else {}, "float64", 4, 9, 3, 10, seed=3)
        dy, d_final = _cotangents(kind, params, x, seed=tile)
        lengths = [4, 0, 2, 3, 4, 1, 4, 4, 2]
        for reverse in (False, True):
            before = fake.cooperative_launches
            fast, _ = _fast(kind, params, x, state, lengths, reverse, options, dy, d_final, impl="persistent")
            assert fake.cooperative_launches - before == 2  # the recording forward and the backward
            generic = _generic(kind, params, x, state, lengths, reverse, options, dy, d_final)
            _compare(fast, generic, "float64", 4)
