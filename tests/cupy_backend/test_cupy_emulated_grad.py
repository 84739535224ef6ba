"""The CuPy gradient paths (``_backends/cupy/grad_*.py``) on the CPU: real kernel source on the warp emulator.

The recording forward and the fused backward run with CuPy replaced by the strict stand-in
(``tests/cupy_backend/fake_cupy.py``: kernel argument types checked, ``cupy.empty`` poisoned with NaN so an
element a kernel forgot to write shows up). The oracle is the generic array-API backward (``_core/backward.py``)
on NumPy in float64, itself tested against torch autograd and finite differences (tests/core/test_grad.py).
``tests/cupy_backend/test_cupy_grad.py`` runs the same comparisons through ``ar.vjp`` on a real GPU. The
experimental paths' share of these tests is in ``experimental/test_cupy_emulated_grad_paths.py``.
"""

from __future__ import annotations

import sys

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn import _dispatch
from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends import numpy as numpy_backend
from arrayrnn._backends.cupy import grad_fused as cupy_grad
from arrayrnn._backends.cupy import grad_graph as cupy_grad_graph
from arrayrnn._backends.cupy import policy, runtime
from arrayrnn._core import backward as core
from arrayrnn.backend import map_arrays
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.cupy_backend.test_cupy_emulated import _defaults, _ids, _problem
from tests.support import random_params
from tests.variants import KERNEL_VARIANTS

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")


def _as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _cotangents(kind, params, x, seed, with_dy=True, with_final=True):
    rng = np.random.default_rng(seed + 100)
    steps, batch, _ = x.shape
    width = getattr(params, "output_size", params.hidden_size)
    dy = rng.standard_normal((steps, batch, width)).astype(x.dtype) if with_dy else None
    finals = [(batch, width)] + ([(batch, params.hidden_size)] if kind == "lstm" else [])
    d_final = tuple(rng.standard_normal(shape).astype(x.dtype) if with_final else None for shape in finals)
    return dy, d_final


def _generic(kind, params, x, state, lengths, reverse, options, dy, d_final):
    lengths = None if lengths is None else np.asarray(lengths)
    y, final, tape = core.forward(
        xp_numpy, kind, _as64(x), map_arrays(_as64, params), tuple(_as64(s) for s in state), lengths, reverse, options
    )
    dx, d_params, d_state = core.backward(xp_numpy, tape, _as64(dy), tuple(_as64(d) for d in d_final))
    return y, final, dx, d_params, d_state


def _vjp(kind, params, x, state, lengths, reverse, options, impl):
    """The CuPy gradient hook with ``impl`` (a path name: its refusals included; "auto": the hook's choice) on the
    stand-in's arrays; ``None`` where it declines."""
    fake = fake_cupy.asfake
    lengths = None if lengths is None else fake(np.asarray(lengths))
    args = (fake(x), map_arrays(fake, params), tuple(fake(s) for s in state), lengths, reverse, options)
    return cupy_dispatch.sequence_vjp(kind, None, *args, impl=impl)


def _fast(kind, params, x, state, lengths, reverse, options, dy, d_final, calls=1, impl="fused"):
    recorded = _vjp(kind, params, x, state, lengths, reverse, options, impl)
    assert recorded is not None
    y, final, backward = recorded
    fake = fake_cupy.asfake
    fake_dy = None if dy is None else fake(dy)
    fake_final = tuple(None if d is None else fake(d) for d in d_final)
    results = [backward(fake_dy, fake_final) for _ in range(calls)]
    return (y, final, *results[-1]), results


def _close(got, want, dtype, steps, what):
    tol = 1e-11 if dtype == "float64" else 2e-5 * max(1.0, np.sqrt(steps))
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), what
    assert np.isfinite(got).all(), f"{what}: NaN/inf (an element never written, or padding leaked)"
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def _compare(fast, generic, dtype, steps):
    y, final, dx, d_params, d_state = fast
    y_ref, final_ref, dx_ref, d_params_ref, d_state_ref = generic
    _close(y, y_ref, dtype, steps, "y")
    for k, (got, want) in enumerate(zip(final, final_ref, strict=True)):
        _close(got, want, dtype, steps, f"final state [{k}]")
    _close(dx, dx_ref, dtype, steps, "dx")
    for k, (got, want) in enumerate(zip(d_state, d_state_ref, strict=True)):
        _close(got, want, dtype, steps, f"d_state [{k}]")
    for name, want in vars(d_params_ref).items():
        got = getattr(d_params, name)
        if want is None:
            assert got is None, name
        else:
            _close(got, want, dtype, steps, f"d_params.{name}")


def _backward_matches_generic(monkeypatch, variant, impl, projection):
    """Path ``impl``'s gradient agrees with the generic core with and without lengths, both directions; a path
    without ``projection`` refuses a projected LSTM."""
    kind, params_options, call_options = variant
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem(kind, params_options, "float64", 5, 4, 3, 6, seed=len(_ids(variant)))
        dy, d_final = _cotangents(kind, params, x, seed=len(_ids(variant)))
        if not projection and params_options.get("proj_size"):
            with pytest.raises(ValueError, match="projection"):
                _fast(kind, params, x, state, None, False, options, dy, d_final, impl=impl)
            return
        for lengths, reverse in (([5, 0, 2, 4], False), ([5, 0, 2, 4], True), (None, False), (None, True)):
            fast, _ = _fast(kind, params, x, state, lengths, reverse, options, dy, d_final, impl=impl)
            generic = _generic(kind, params, x, state, lengths, reverse, options, dy, d_final)
            _compare(fast, generic, "float64", 5)
        assert fake.captures_open == 0


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_matches_generic_backward_with_lengths_and_reverse(monkeypatch, variant, impl):
    _backward_matches_generic(monkeypatch, variant, impl, projection=impl == "fused")


#: (kind, params options, call options) with NaN in the padding
NAN_CASES = [
    ("rnn", {}, {"nonlinearity": "relu"}),
    ("lstm", {"peepholes": True, "proj_size": 4}, {"clip": 0.8}),
    ("lstm", {"peepholes": True}, {"clip": 0.8}),
    ("gru", {}, {"linear_before_reset": False}),
    ("gru", {}, {"linear_before_reset": True}),
]


def _nan_in_padding(monkeypatch, kind, params_options, call_options, impl):
    """Padded steps of x hold NaN: the generic core masks with where; so must the kernels."""
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, params_options, "float64", 4, 3, 2, 5, seed=31)
        lengths = [4, 1, 2]
        for b, n in enumerate(lengths):
            x[n:, b] = np.nan
        dy, d_final = _cotangents(kind, params, x, seed=31)
        if impl == "graph" and params_options.get("proj_size"):
            return
        for reverse in (False, True):
            fast, _ = _fast(kind, params, x, state, lengths, reverse, options, dy, d_final, impl=impl)
            generic = _generic(kind, params, x, state, lengths, reverse, options, dy, d_final)
            _compare(fast, generic, "float64", 4)


@pytest.mark.parametrize("kind,params_options,call_options", NAN_CASES)
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_nan_in_padding_never_reaches_a_gradient(monkeypatch, kind, params_options, call_options, impl):
    _nan_in_padding(monkeypatch, kind, params_options, call_options, impl)


#: (with dy, with the final state's cotangents)
MISSING_COTANGENTS = [(False, True), (True, False), (False, False)]


def _missing_cotangents(monkeypatch, kind, with_dy, with_final, impl):
    options = _defaults(kind, {})
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float64", 3, 2, 3, 4, seed=5)
        dy, d_final = _cotangents(kind, params, x, seed=5, with_dy=with_dy, with_final=with_final)
        fast, _ = _fast(kind, params, x, state, [3, 2], True, options, dy, d_final, impl=impl)
        _compare(fast, _generic(kind, params, x, state, [3, 2], True, options, dy, d_final), "float64", 3)


@pytest.mark.parametrize("with_dy,with_final", MISSING_COTANGENTS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_missing_cotangents_count_as_zeros(monkeypatch, kind, with_dy, with_final, impl):
    _missing_cotangents(monkeypatch, kind, with_dy, with_final, impl)


#: (kind, call options) at hidden = 70
WIDE_CASES = [("rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False})]


def _wide_hidden_backward(monkeypatch, kind, call_options, impl):
    """hidden = 70, batch 3: several blocks' worth of index math; in the graph kernels several lane strides."""
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float32", 3, 3, 5, 70, seed=3)
        dy, d_final = _cotangents(kind, params, x, seed=3)
        fast, _ = _fast(kind, params, x, state, [3, 1, 2], False, options, dy, d_final, impl=impl)
        _compare(fast, _generic(kind, params, x, state, [3, 1, 2], False, options, dy, d_final), "float32", 3)


@pytest.mark.parametrize("kind,call_options", WIDE_CASES)
@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_float32_wide_hidden(monkeypatch, kind, call_options, impl):
    _wide_hidden_backward(monkeypatch, kind, call_options, impl)


def _pullback_twice_inputs_unchanged(monkeypatch, impl):
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem("lstm", {"peepholes": True}, "float64", 4, 2, 3, 5, seed=6)
        dy, d_final = _cotangents("lstm", params, x, seed=6)
        inputs = [x, *state, dy, *d_final, params.weight_hh, params.peephole_f]
        before = [np.array(a) for a in inputs]
        options = {"coupled": False, "clip": None}
        _, results = _fast("lstm", params, x, state, [4, 3], False, options, dy, d_final, 2, impl=impl)
        for after, original in zip(inputs, before):
            np.testing.assert_array_equal(after, original)
        first, second = results
        np.testing.assert_array_equal(first[0], second[0])
        np.testing.assert_array_equal(first[1].weight_hh, second[1].weight_hh)


@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_pullback_twice_and_inputs_unchanged(monkeypatch, impl):
    _pullback_twice_inputs_unchanged(monkeypatch, impl)


def _declines_float16_and_an_empty_batch(monkeypatch, impl):
    with fake_cupy.installed(monkeypatch):
        for dtype, batch in (("float16", 2), ("float64", 0)):
            params, x, state = _problem("gru", {}, dtype, 3, batch, 2, 4, seed=7)
            assert _vjp("gru", params, x, state, None, False, {"linear_before_reset": True}, impl) is None


@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_declines_float16_and_an_empty_batch(monkeypatch, impl):
    _declines_float16_and_an_empty_batch(monkeypatch, impl)


def test_backward_launches_per_step(monkeypatch):
    """The point of the path: one pointwise kernel per step (two for GRU without linear-before-reset)."""
    with fake_cupy.installed(monkeypatch) as fake:
        for kind, call_options, per_step in (
            ("rnn", {}, 1),
            ("lstm", {}, 1),
            ("gru", {"linear_before_reset": True}, 1),
            ("gru", {"linear_before_reset": False}, 2),
        ):
            options = _defaults(kind, call_options)
            params, x, state = _problem(kind, {}, "float64", 6, 2, 3, 4, seed=8)
            dy, d_final = _cotangents(kind, params, x, seed=8)
            recorded = cupy_grad.sequence_vjp(
                None,
                kind,
                fake_cupy.asfake(x),
                map_arrays(fake_cupy.asfake, params),
                tuple(fake_cupy.asfake(s) for s in state),
                None,
                False,
                options,
            )
            before = fake.kernel_launches
            recorded[2](fake_cupy.asfake(dy), tuple(fake_cupy.asfake(d) for d in d_final))
            assert fake.kernel_launches - before == 6 * per_step + 1, kind  # + 1: the final carry


# ------------------------------------------------------------------------------------------------
# the gradient hook and ar.vjp


def test_the_hook_selects_the_gradient_path(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    with fake_cupy.installed(monkeypatch):
        params, x, _ = _problem("lstm", {}, "float32", 3, 2, 2, 4, seed=0)
        fake_x, fake_params = fake_cupy.asfake(x), map_arrays(fake_cupy.asfake, params)
        route = cupy_dispatch.route
        for impl in ("auto", "fast"):
            assert route("lstm", fake_x, fake_params, {}, impl=impl, gradient=True)[0] == "graph"
        assert route("lstm", fake_x, fake_params, {}, impl="fused", gradient=True)[0] == "fused"
        # (impl="tiled", which has no gradient: experimental/test_cupy_emulated_grad_paths.py)
        assert cupy_dispatch.gradient_function("fused") is cupy_grad.sequence_vjp
        assert cupy_dispatch.gradient_function("graph") is cupy_grad_graph.sequence_vjp
    monkeypatch.setenv("ARRAYRNN_IMPL", "graph")
    assert _dispatch.resolve_impl("gru", "cupy", None) == "graph"
    assert _dispatch.resolve_impl("gru", "numpy", None) == "auto"


CALLS: list[str] = []


def counting_vjp(kind, xp, x, params, state, lengths, reverse, options, *, impl="auto"):
    """A stand-in gradient hook for NumPy: the generic core, counted; declines unbatched-looking B == 1."""
    CALLS.append(kind)
    if x.shape[1] == 1:
        return None
    y, final, tape = core.forward(xp, kind, x, params, state, lengths, reverse, options)
    return y, final, lambda dy, d_final: core.backward(xp, tape, dy, d_final)


def test_vjp_uses_a_registered_path_unless_generic_and_falls_back_when_declined(monkeypatch):
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    monkeypatch.setattr(numpy_backend, "sequence_vjp", counting_vjp)
    CALLS.clear()
    params = ar.init_gru(3, 4, seed=1, backend="numpy", dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 4))
    out, pullback = ar.vjp(ar.gru, x, params, lengths=np.array([5, 3]), reverse=True)
    assert CALLS == ["gru"]
    dx, d_params = pullback((dy, None))
    out_g, pullback_g = ar.vjp(ar.gru, x, params, lengths=np.array([5, 3]), reverse=True, impl="generic")
    assert CALLS == ["gru"]  # impl="generic": the registered path is not asked
    dx_g, d_params_g = pullback_g((dy, None))
    np.testing.assert_allclose(dx, dx_g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d_params.weight_hh, d_params_g.weight_hh, rtol=1e-12, atol=1e-12)
    # declined (batch 1): the generic core answers, with the same results as generic
    (y1, _), pullback1 = ar.vjp(ar.gru, x[:, :1], params)
    assert CALLS == ["gru", "gru"]
    np.testing.assert_allclose(y1, ar.gru(x[:, :1], params, impl="generic")[0], rtol=1e-12, atol=1e-12)
    assert pullback1((dy[:, :1], None))[0].shape == (5, 1, 3)
    monkeypatch.setenv("ARRAYRNN_IMPL", "generic")
    ar.vjp(ar.gru, x, params)
    assert CALLS == ["gru", "gru"]


# ------------------------------------------------------------------------------------------------
# end to end: ar.vjp (layouts, unbatched calls, models) through the emulated CuPy gradient path


def _view(a):
    return None if a is None else np.asarray(a).view(fake_cupy.FakeArray)


END_TO_END_IMPL = {"impl": "fused"}


def emulated_cupy_vjp(kind, xp, x, params, state, lengths, reverse, options, *, impl="auto"):
    """NumPy's gradient hook in the test below: NumPy arrays viewed as the stand-in's device arrays, on the CuPy
    gradient path ``END_TO_END_IMPL``."""
    CALLS.append(kind)
    args = (_view(x), map_arrays(_view, params), tuple(_view(s) for s in state), _view(lengths), reverse, options)
    recorded = cupy_dispatch.sequence_vjp(kind, xp, *args, impl=END_TO_END_IMPL["impl"])
    y, final, backward = recorded
    return y, final, lambda dy, d_final: backward(_view(dy), tuple(_view(d) for d in d_final))


def _tree_close(got, want, what="result"):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), what
        for k, (a, b) in enumerate(zip(got, want)):
            _tree_close(a, b, f"{what}[{k}]")
    elif hasattr(want, "__dataclass_fields__"):
        for name in want.__dataclass_fields__:
            _tree_close(getattr(got, name), getattr(want, name), f"{what}.{name}")
    elif want is None:
        assert got is None, what
    else:
        _close(got, want, "float64", 7, what)


def _vjp_end_to_end(monkeypatch, impl):
    monkeypatch.delenv("ARRAYRNN_IMPL", raising=False)
    monkeypatch.setitem(END_TO_END_IMPL, "impl", impl)
    rng = np.random.default_rng(17)
    with fake_cupy.installed(monkeypatch):
        monkeypatch.setattr(numpy_backend, "sequence_vjp", emulated_cupy_vjp)
        CALLS.clear()
        # batch_first with lengths, reverse and an initial state; then an unbatched call without state
        projection = {"proj_size": 4} if impl == "fused" else {}  # graph: no projection
        params = random_params("lstm", 3, 5, seed=2, dtype="float64", peepholes=True, **projection)
        x = rng.standard_normal((2, 7, 3))
        width = 4 if projection else 5
        state = (rng.standard_normal((2, width)), rng.standard_normal((2, 5)))
        cotangent = (rng.standard_normal((2, 7, width)), (rng.standard_normal((2, width)), None))
        options = {"batch_first": True, "lengths": np.array([7, 3]), "reverse": True, "clip": 0.9}
        results = {}
        for impl in ("auto", "generic"):
            out, pullback = ar.vjp(ar.lstm, x, params, state, impl=impl, **options)
            out_one, pullback_one = ar.vjp(ar.lstm, x[0], params, impl=impl)
            results[impl] = (out, pullback(cotangent), out_one, pullback_one((cotangent[0][0], None)))
        _tree_close(results["auto"], results["generic"])
        assert CALLS == ["lstm", "lstm"]
        # a two-layer bidirectional GRU with lengths: four recorded layers
        model = ar.GRU(3, 4, num_layers=2, bidirectional=True, seed=4, dtype="float64", backend="numpy")
        x = rng.standard_normal((6, 3, 3))
        for impl in ("auto", "generic"):
            out, pullback = ar.vjp(model.apply, model.params, x, None, lengths=np.array([6, 1, 4]), impl=impl)
            cotangent = (np.sin(np.arange(out[0].size)).reshape(out[0].shape), np.ones(out[1].shape))
            results[impl] = (out, pullback(cotangent))
        _tree_close(results["auto"], results["generic"])
        assert CALLS == ["lstm", "lstm"] + ["gru"] * 4


@pytest.mark.parametrize("impl", ["fused", "graph"])
def test_vjp_end_to_end_layouts_and_models(monkeypatch, impl):
    _vjp_end_to_end(monkeypatch, impl)


# ------------------------------------------------------------------------------------------------
# the graph gradient path: tiles, capture and replay, the choice


@pytest.mark.parametrize("tile", cupy_grad_graph.cupy_graph.choose_batch_tile.__globals__["BATCH_TILES"])
@pytest.mark.parametrize(
    "kind,call_options",
    [("lstm", {"clip": 0.9}), ("gru", {"linear_before_reset": False}), ("gru", {}), ("rnn", {"nonlinearity": "relu"})],
)
def test_graph_every_batch_tile_including_partial_tiles(monkeypatch, tile, kind, call_options):
    """batch 11 is not a multiple of any tile > 1: the last tile of every launch is partial."""
    options = _defaults(kind, call_options)
    with policy.configured(graph_force_batch_tile=tile), fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {"peepholes": True} if kind == "lstm" else {}, "float64", 3, 11, 2, 9, tile)
        dy, d_final = _cotangents(kind, params, x, seed=tile)
        lengths = [3, 2, 1, 0, 3, 3, 1, 2, 0, 3, 2]
        fast, _ = _fast(kind, params, x, state, lengths, True, options, dy, d_final, impl="graph")
        _compare(fast, _generic(kind, params, x, state, lengths, True, options, dy, d_final), "float64", 3)


def test_graph_captured_once_per_plan_and_replayed(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {}, "float64", 4, 2, 3, 5, seed=9)
        options = {"coupled": False, "clip": None}
        fake_params, lengths = map_arrays(fake_cupy.asfake, params), fake_cupy.asfake(np.array([4, 2]))
        fake_state = tuple(fake_cupy.asfake(s) for s in state)
        results = []
        for seed in (1, 2):  # same weight arrays: both plans are replayed, not captured again
            dy, d_final = _cotangents("lstm", params, x, seed=seed)
            y, final, backward = cupy_grad_graph.sequence_vjp(
                None, "lstm", fake_cupy.asfake(x * seed), fake_params, fake_state, lengths, False, options
            )
            grads = backward(fake_cupy.asfake(dy), tuple(fake_cupy.asfake(d) for d in d_final))
            results.append(((y, final, *grads), _generic("lstm", params, x * seed, state, [4, 2], False, options,
                                                          dy, d_final)))  # fmt: skip
        for fast, generic in results:  # the first call's results were not overwritten by the second
            _compare(fast, generic, "float64", 4)
        assert fake.captures_begun == 2  # one forward plan, one backward plan
        assert fake.graph_launches == 4 and fake.kernel_launches == 0
        assert cupy_grad_graph.cached_plans() == 2
        # no dy: another backward plan (its launches differ); the forward plan is reused
        backward = cupy_grad_graph.sequence_vjp(
            None, "lstm", fake_cupy.asfake(x), fake_params, fake_state, lengths, False, options
        )[2]
        backward(None, (None, None))
        assert fake.captures_begun == 3 and cupy_grad_graph.cached_plans() == 3


def test_graph_eager_mode_and_failed_capture(monkeypatch):
    options = {"linear_before_reset": False}
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("gru", {}, "float64", 4, 3, 2, 5, seed=8)
        dy, d_final = _cotangents("gru", params, x, seed=8)
        want = _generic("gru", params, x, state, [4, 1, 3], False, options, dy, d_final)
        with policy.configured(graph_capture=False):
            fast, _ = _fast("gru", params, x, state, [4, 1, 3], False, options, dy, d_final, impl="graph")
        _compare(fast, want, "float64", 4)
        assert fake.captures_begun == 0 and fake.kernel_launches == 2 * 4 + 2 * 4 + 1
        runtime.reset(runtime.PLANS + "grad_graph")
        fake.fail_launch_named = "gru_graph_grad_reset_nb1"
        with pytest.raises(RuntimeError, match="injected launch failure"):
            _fast("gru", params, x, state, [4, 1, 3], False, options, dy, d_final, impl="graph")
        assert fake.captures_open == 0, "a failed capture left a stream capturing"
        fake.fail_launch_named = None
        runtime.reset(runtime.PLANS + "grad_graph")
        fast, _ = _fast("gru", params, x, state, [4, 1, 3], False, options, dy, d_final, impl="graph")
        _compare(fast, want, "float64", 4)


def test_dispatch_picks_graph_at_small_batch(monkeypatch):
    calls = []
    # the gradient functions auto may reach here ("fused_graph" too where experimental/ is present)
    for name in [name for name in ("fused", "fused_graph", "graph") if name in cupy_dispatch.paths()]:
        real = cupy_dispatch.gradient_function(name)
        module = sys.modules[real.__module__]
        monkeypatch.setattr(module, real.__name__, lambda *a, name=name, real=real: calls.append(name) or real(*a))
    with fake_cupy.installed(monkeypatch), policy.configured(graph_max_batch=4):
        for batch in (2, 6):
            params, x, state = _problem("rnn", {}, "float64", 3, batch, 2, 4, seed=batch)
            args = (fake_cupy.asfake(x), map_arrays(fake_cupy.asfake, params), (fake_cupy.asfake(state[0]),))
            cupy_dispatch.sequence_vjp("rnn", None, *args, None, False, {"nonlinearity": "tanh"})
    assert calls == ["graph", "fused"]


@pytest.mark.parametrize("by_matmul", [True, False])
@pytest.mark.parametrize(
    "kind,call_options", [("rnn", {"nonlinearity": "tanh"}), ("lstm", {}), ("gru", {"linear_before_reset": False})]
)
def test_bias_gradients_by_matmul_or_by_reduction(monkeypatch, by_matmul, kind, call_options):
    """Both ways of summing the bias gradients over steps and batch rows (``grad_bias_by_matmul``: the
    benchmark times both) give the generic core's answers; RNN/LSTM share one sum for both biases."""
    options = _defaults(kind, call_options)
    with policy.configured(grad_bias_by_matmul=by_matmul), fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float64", 4, 3, 2, 5, seed=11)
        dy, d_final = _cotangents(kind, params, x, seed=11)
        fast, _ = _fast(kind, params, x, state, [4, 2, 0], False, options, dy, d_final)
        _compare(fast, _generic(kind, params, x, state, [4, 2, 0], False, options, dy, d_final), "float64", 4)
        d_params = fast[3]
        assert d_params.bias_ih is not d_params.bias_hh


@pytest.mark.parametrize("chunks", [None, 3])
@pytest.mark.parametrize("kind,call_options", [("lstm", {"clip": 0.8}), ("gru", {"linear_before_reset": False})])
def test_weight_gradients_in_one_matmul_or_in_chunks(monkeypatch, chunks, kind, call_options):
    """``grad_weight_grad_chunks`` (the benchmark times both): the rows (T*B = 5*7 = 35) in 3 chunks of 11 and the
    2 left over, or one matmul, give the generic core's answers."""
    options = _defaults(kind, call_options)
    knobs = {"grad_weight_grad_chunks": chunks, "grad_weight_grad_min_rows": 2}
    with policy.configured(**knobs), fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {"proj_size": 2} if kind == "lstm" else {}, "float64", 5, 7, 3, 4, seed=12)
        dy, d_final = _cotangents(kind, params, x, seed=12)
        lengths = [5, 2, 0, 5, 1, 4, 5]  # the last row (t = 4, b = 6) is valid: the rows left over count
        fast, _ = _fast(kind, params, x, state, lengths, True, options, dy, d_final)
        _compare(fast, _generic(kind, params, x, state, lengths, True, options, dy, d_final), "float64", 5)
