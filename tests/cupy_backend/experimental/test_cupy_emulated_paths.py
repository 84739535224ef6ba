"""The experimental CuPy paths ("fused_graph", "tiled", "persistent", "cluster") on the CPU emulator: their share of
``tests/cupy_backend/test_cupy_emulated.py``'s checks (run with that file's helpers), and the tests of their own.

Deleting ``_backends/cupy/experimental/`` deletes this folder with it; the shipping file then checks "fused" and
"graph" alone (``test_experimental_removable.py``).
"""

from __future__ import annotations

import pytest

from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import policy
from arrayrnn._backends.cupy import sources as cupy_sources
from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster
from arrayrnn._backends.cupy.experimental import persistent as cupy_persistent
from arrayrnn._backends.cupy.experimental import tiled as cupy_tiled
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.cupy_backend.test_cupy_emulated import (
    FLOAT16_CASES,
    _check,
    _fast,
    _float16_storage,
    _inputs_unmodified_noncontiguous_weights,
    _matches_generic,
    _problem,
    _wide_hidden,
)
from tests.variants import KERNEL_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")


def _refused(impl, params_options, options):
    """What path ``impl`` refuses this variant with (a pattern), or None."""
    if impl in ("tiled", "persistent") and params_options.get("proj_size"):
        return "projection"
    if impl == "tiled" and options.get("linear_before_reset") is False:
        return "impl='tiled' supports GRU with linear_before_reset=True only"
    return None


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
@pytest.mark.parametrize("impl", ["fused_graph", "tiled", "persistent"])
def test_matches_generic_with_lengths_and_reverse(monkeypatch, variant, impl):
    _, params_options, call_options = variant
    _matches_generic(monkeypatch, variant, impl, _refused(impl, params_options, call_options))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["fused_graph", "tiled"])
def test_float32_wide_hidden_spans_several_lane_strides(monkeypatch, kind, impl):
    _wide_hidden(monkeypatch, kind, impl)


@pytest.mark.parametrize("kind,call_options", FLOAT16_CASES)
@pytest.mark.parametrize("impl", ["fused_graph", "tiled", "persistent", "cluster"])
def test_float16_storage_against_float64(monkeypatch, kind, call_options, impl):
    _float16_storage(monkeypatch, kind, call_options, impl)


@pytest.mark.parametrize("impl", ["fused_graph", "tiled"])
def test_inputs_are_not_modified_and_noncontiguous_weights_work(monkeypatch, impl):
    _inputs_unmodified_noncontiguous_weights(monkeypatch, impl)


def test_experimental_impl_names():
    from arrayrnn import _dispatch

    assert _dispatch.paths("cupy") == ("cluster", "fused", "fused_graph", "graph", "persistent", "tiled")
    assert cupy_dispatch.forward_function("cluster") is cupy_cluster.sequence
    assert cupy_dispatch.forward_module("tiled") is cupy_tiled


# ------------------------------------------------------------------------------------------------
# tiled


@pytest.mark.parametrize(
    "kind,options",
    [
        ("lstm", {"coupled": True, "clip": 0.8}),
        ("gru", {"linear_before_reset": True}),
        ("rnn", {"nonlinearity": "tanh"}),
    ],
)
def test_tiled_partial_tiles_and_chunks(monkeypatch, kind, options):
    """B = 21 (a full and a partial tile of 16 rows), H = 70 (units 64..69 in a partial tile of 16; float64's
    columns 64..69 in a second, partial chunk of 64), and float32 at H = 140 (chunks of 128): every (row, unit)
    pair exactly once, every column summed."""
    with fake_cupy.installed(monkeypatch) as fake:
        peepholes = {"peepholes": True} if kind == "lstm" else {}
        params, x, state = _problem(kind, peepholes, "float64", 3, 21, 5, 70, seed=7)
        lengths = [3, 0, 1, 2, 3, 3, 1, 0, 2, 3, 3, 1, 2, 3, 0, 3, 2, 1, 3, 3, 2]
        _check("tiled", kind, params, x, state, lengths, True, options, "float64")
        assert fake.captures_begun == 1 and fake.kernel_launches == 0
        grid, block = cupy_tiled.launch_shape(21, 70)
        assert grid == (2 * 5,) and block == (cupy_tiled.TILED_THREADS,)
        params, x, state = _problem(kind, peepholes, "float32", 2, 3, 4, 140, seed=8)
        _check("tiled", kind, params, x, state, [2, 1, 2], False, options, "float32")


def test_tiled_kernel_defines_come_from_python():
    """The CUDA source's tile constants are generated from experimental/sources.py's TILED / TILED_CHUNK (the launch
    shape and the shared memory size use the same)."""
    from arrayrnn._backends.cupy.experimental import sources as experimental_sources

    for dtype in ("float16", "float32", "float64"):
        code = cupy_sources.source(dtype, "tiled")
        defines = {**experimental_sources.TILED, "TILED_CHUNK": experimental_sources.TILED_CHUNK[dtype]}
        for name, value in defines.items():
            assert f"#define {name} {value}\n" in code
        # LSTM: within the 48 KiB a kernel gets without opting in (the launch does not opt in)
        assert experimental_sources.tiled_shared_bytes(4, dtype) <= 48 * 1024
    assert experimental_sources.TILED_THREADS == 256
    # float64 LSTM: the chunk (16 + 64 rows of 65 doubles) is the larger part
    assert experimental_sources.tiled_shared_bytes(4, "float64") == 80 * 65 * 8


# ------------------------------------------------------------------------------------------------
# the choice: auto's switches for the experimental paths (off until a GPU measurement turns them on)


def test_dispatch_fused_graph_in_place_of_fused_only_when_turned_on():
    choose = policy.choose_impl
    assert policy.current().fused_graph_auto is False, "turned on only by a GPU measurement (then update this test)"
    with policy.configured(fused_graph_auto=True):
        assert choose("lstm", steps=100, batch=256, hidden=1024, dtype="float32") == "fused_graph"
        assert choose("lstm", steps=100, batch=1, hidden=256, dtype="float32", has_projection=True) == "fused_graph"
        assert choose("lstm", steps=100, batch=1, hidden=256, dtype="float32") == "graph"  # small batch: unchanged
        # a non-contiguous parameter would be copied (a new plan) each call; a huge plan is not worth caching
        assert choose("gru", steps=100, batch=256, hidden=1024, dtype="float32", weights_contiguous=False) == "fused"
        assert choose("lstm", steps=1000, batch=4096, hidden=1024, dtype="float32") == "fused"
        grad = policy.grad_choice
        assert grad("lstm", "fused_graph", batch=256, hidden=1024, dtype="float32") == "fused_graph"
        assert grad("lstm", "fused", batch=256, hidden=1024, dtype="float32") == "fused"
    assert policy.current().fused_graph_auto is False, "the block put the config back"


def test_dispatch_tiled_only_when_turned_on_and_where_it_applies():
    choose, grad = policy.choose_impl, policy.grad_choice
    assert policy.current().tiled_auto is False, "turned on only by a GPU measurement (then update this test)"
    with policy.configured(tiled_auto=True) as config:
        mid = {"steps": 100, "batch": 64, "hidden": 512, "dtype": "float32"}
        assert choose("lstm", **mid) == "tiled"
        assert choose("lstm", **{**mid, "batch": 256}) == "tiled"
        assert choose("lstm", **{**mid, "batch": 8}) == "graph"  # below tiled_min_batch
        assert choose("lstm", **{**mid, "batch": 4096}) == "fused"  # above tiled_max_batch
        assert choose("lstm", **mid, has_projection=True) == "fused"
        assert choose("gru", **mid, linear_before_reset=False) == "graph"
        # the gradient is not tiled: the path auto would take without tiled_auto
        assert grad("lstm", "tiled", batch=64, hidden=512, dtype="float32") == config.grad_small_batch_impl
        assert grad("lstm", "tiled", batch=256, hidden=1024, dtype="float32") == "fused"


# ------------------------------------------------------------------------------------------------
# persistent


@pytest.mark.parametrize("tile", cupy_sources.BATCH_TILES)
@pytest.mark.parametrize(
    "kind,options",
    [
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {"coupled": False, "clip": 0.9}),
        ("gru", {"linear_before_reset": True}),
        ("gru", {"linear_before_reset": False}),
    ],
)
@pytest.mark.parametrize("blocks", [1, 2])
def test_persistent_tasks_per_warp_and_barriers(monkeypatch, tile, kind, options, blocks):
    """Warps take several tasks per step (4 warps for 9 rows x 12 units), the grid barrier separates the steps
    (the emulator checks every barrier's target against the counter and reports deadlocks)."""
    knobs = {"persistent_force_batch_tile": tile, "persistent_threads": 64, "persistent_max_blocks": blocks}
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(**knobs, persistent_check_barrier=True):
        params, x, state = _problem(kind, {}, "float64", 4, 9, 3, 12, seed=tile)
        for reverse in (False, True):
            _check("persistent", kind, params, x, state, [4, 0, 2, 3, 4, 1, 4, 4, 2], reverse, options, "float64")
        assert fake.cooperative_launches == 2


def test_persistent_grid_fits_the_device(monkeypatch):
    """The grid is sized from the device's multiprocessors and the kernel's occupancy (a cooperative launch
    of more blocks than fit at once is refused by CUDA)."""
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(persistent_threads=32):
        fake.multiprocessors, fake.occupancy = 3, 1
        params, x, state = _problem("gru", {}, "float64", 3, 2, 3, 40, seed=1)
        _check("persistent", "gru", params, x, state, None, False, {"linear_before_reset": True}, "float64")
        assert fake.cooperative_launches == 1


def test_persistent_acquire_release_barrier_option_and_barrier_bench(monkeypatch):
    """The barrier flavour travels in the options bits (the emulator's barrier is the same for both: this checks
    the plumbing); the barrier benchmark launches one cooperative kernel of the asked size."""
    knobs = {"persistent_acqrel_barrier": True, "persistent_threads": 64}
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(**knobs):
        params, x, state = _problem("lstm", {}, "float64", 3, 2, 3, 5, seed=2)
        _check("persistent", "lstm", params, x, state, [3, 1], True, {"coupled": False, "clip": None}, "float64")
        run = cupy_persistent.barrier_bench(blocks=2, threads=64, steps=5, acqrel=True)
        before = fake.cooperative_launches
        run()
        run()  # the counter is reset before every launch (the emulator checks each barrier's target)
        assert fake.cooperative_launches - before == 2
        with pytest.raises(ValueError, match="do not fit"):
            cupy_persistent.barrier_bench(blocks=3, threads=64, steps=1, acqrel=False)


@pytest.mark.parametrize(
    "kind,options", [("lstm", {"coupled": False, "clip": None}), ("rnn", {"nonlinearity": "tanh"})]
)
def test_persistent_units_per_block_and_shared_memory(monkeypatch, kind, options):
    """Blocks own hidden units (the last one fewer: 10 units over blocks of 4) and stage those units' weight rows
    in dynamic shared memory, opting in beyond 48 KiB; beyond what a block may have it says so."""
    with fake_cupy.installed(monkeypatch), policy.configured(persistent_threads=64, persistent_max_blocks=3):
        params, x, state = _problem(kind, {}, "float64", 4, 3, 2, 10, seed=4)
        _check("persistent", kind, params, x, state, [4, 2, 0], False, options, "float64")
    # every unit in one block
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(persistent_max_blocks=1):
        params, x, state = _problem("lstm", {}, "float64", 2, 1, 2, 80, seed=5)  # 4 * 80 * 80 * 8 B = 200 KiB
        _check("persistent", "lstm", params, x, state, None, False, {"coupled": False, "clip": None}, "float64")
        kernel = cupy_persistent.kernel("lstm_persistent_nb8", "float64")
        assert kernel.attributes["max_dynamic_shared_size_bytes"] == 4 * 80 * 80 * 8
        params, x, state = _problem("lstm", {}, "float64", 2, 1, 2, 100, seed=5)  # 312 KiB: too much
        with pytest.raises(ValueError, match="shared memory"):
            _fast(cupy_persistent, "lstm", params, x, state, None, False, {"coupled": False, "clip": None})
        assert fake.cooperative_launches == 1
