"""The "fused_graph" CuPy fast path (the fused loop, cuBLAS products included, as one CUDA graph) on the CPU.

The kernels run on the CUDA emulator; the capturable cuBLAS products (``cupy_blas``) run on the stand-in's
``FakeCublas``, which reads each ``cublasGemmEx`` the way cuBLAS does (column-major, leading dimensions) and
enforces cuBLAS's capture rules (a workspace set after the stream, no product of a new shape during capture).
The oracles: the generic core on NumPy (float64) for the sequences, ``numpy.matmul`` for the products.
``experimental/test_cupy_fast_paths.py`` runs the same path on a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import fused as cupy_kernels
from arrayrnn._backends.cupy import policy, runtime
from arrayrnn._backends.cupy.experimental import blas as cupy_blas
from arrayrnn._backends.cupy.experimental import fused_graph as cupy_fused_graph
from arrayrnn._backends.cupy.experimental import grad_fused_graph as cupy_grad_fused_graph
from arrayrnn.backend import map_arrays
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.cupy_backend.test_cupy_emulated import (
    _as_fake_params,
    _as_fake_state,
    _check,
    _close,
    _fast,
    _generic,
    _problem,
)
from tests.cupy_backend.test_cupy_emulated_grad import _compare, _cotangents
from tests.cupy_backend.test_cupy_emulated_grad import _generic as _generic_vjp

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")

LSTM_OPTIONS = {"coupled": False, "clip": None}


# ------------------------------------------------------------------------------------------------
# the products


def _layouts(rng, rows, cols, dtype):
    """The same matrix row-major, as a transposed view of a row-major array, and with strided rows."""
    values = rng.standard_normal((rows, cols)).astype(dtype)
    transposed = fake_cupy.asfake(values.T.copy()).T
    wide = fake_cupy.asfake(np.zeros((rows, cols + 3), dtype=dtype))
    wide[:, :cols] = values
    return values, [fake_cupy.asfake(values), transposed, wide[:, :cols]]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 6, 2), (4, 1, 3), (5, 3, 1)])
def test_matmul_matches_numpy_for_every_operand_layout(monkeypatch, dtype, shape):
    rows, inner, cols = shape
    rng = np.random.default_rng(rows * 100 + inner * 10 + cols)
    with fake_cupy.installed(monkeypatch) as fake:
        a_values, a_layouts = _layouts(rng, rows, inner, dtype)
        b_values, b_layouts = _layouts(rng, inner, cols, dtype)
        want = a_values.astype(np.float64) @ b_values.astype(np.float64)
        tol = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}[dtype]
        for a in a_layouts:
            for b in b_layouts:
                out_wide = fake.zeros((rows, cols + 2), dtype=dtype)
                out = out_wide[:, :cols]
                cupy_blas.matmul(a, b, out, cupy_blas.workspace())()
                np.testing.assert_allclose(np.asarray(out, dtype=np.float64), want, rtol=tol, atol=tol)
                assert np.all(np.asarray(out_wide)[:, cols:] == 0), "wrote outside out"


def test_matmul_refuses_what_cublas_cannot_read(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        a = fake.zeros((4, 6), dtype=np.float32)
        b = fake.zeros((3, 5), dtype=np.float32)
        out = fake.zeros((4, 5), dtype=np.float32)
        ws = cupy_blas.workspace()
        with pytest.raises(ValueError, match="a must be row-major or a transposed row-major array"):
            cupy_blas.matmul(a[:, ::2], b, out, ws)
        with pytest.raises(ValueError, match="out must be row-major"):
            cupy_blas.matmul(a[:, :3], b, fake.zeros((5, 4), dtype=np.float32).T, ws)
        with pytest.raises(ValueError, match="out must be row-major"):  # one row, its elements 4 apart
            cupy_blas.matmul(a[:1, :3], b, fake.zeros((5, 4), dtype=np.float32).T[:1], ws)
        with pytest.raises(ValueError, match="shapes"):
            cupy_blas.matmul(a, b, out, ws)
        with pytest.raises(ValueError, match="share a dtype"):
            cupy_blas.matmul(a[:, :3], b.astype(np.float64).view(fake_cupy.FakeArray), out, ws)


def test_library_binds_the_four_entry_points_and_reports_a_failing_status():
    """``cupy_blas.Library`` over a stand-in for the loaded ``libcublas`` (its ``ctypes`` functions)."""
    calls = []

    class Entry:
        def __init__(self, name, status=0):
            self.name, self.status = name, status

        def __call__(self, *args):
            calls.append((self.name, args))
            return self.status

    class Cdll:
        cublasCreate_v2 = Entry("create")
        cublasSetStream_v2 = Entry("stream")
        cublasSetWorkspace_v2 = Entry("workspace")
        cublasGemmEx = Entry("gemm", status=7)  # CUBLAS_STATUS_INVALID_VALUE

    lib = cupy_blas.Library(Cdll())
    assert len(Cdll.cublasGemmEx.argtypes) == 19 and Cdll.cublasSetWorkspace_v2.argtypes[2] is not None
    lib.set_stream(5, 6)
    lib.set_workspace(5, 1024, 4096)
    assert calls == [("stream", (5, 6)), ("workspace", (5, 1024, 4096))]
    with pytest.raises(cupy_blas.CublasError, match="cublasGemmEx .* status 7"):
        lib.gemm_ex(5, 0, 1, 2, 3, 4, np.float32(1), 10, 0, 2, 20, 0, 4, np.float32(0), 30, 0, 2, 68)


# ------------------------------------------------------------------------------------------------
# the path


@pytest.mark.parametrize("kind,options", [("rnn", {"nonlinearity": "relu"}), ("lstm", LSTM_OPTIONS)])
def test_float32(monkeypatch, kind, options):
    """(float16: ``test_cupy_emulated_paths.py::test_float16_storage_against_float64``.)"""
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float32", 4, 3, 5, 7, seed=21)
        _check("fused_graph", kind, params, x, state, [4, 2, 1], True, options, "float32")


def test_captured_once_with_every_product_inside_the_graph(monkeypatch):
    steps = 4
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {"proj_size": 3}, "float64", steps, 2, 3, 5, seed=22)
        fake_params = _as_fake_params(params)
        first = cupy_fused_graph.sequence(
            "lstm", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        x2 = x[::-1].copy()
        second = cupy_fused_graph.sequence(
            "lstm", None, fake_cupy.asfake(x2), fake_params, _as_fake_state(state), None, False, {}
        )
        assert fake.captures_begun == 1 and fake.graph_launches == 2 and fake.captures_open == 0
        assert fake.kernel_launches == 0, "every step's kernels ran inside the graph"
        # two products per step (recurrent, projection), recorded once; each distinct shape ran once before
        assert fake.cublas.recorded_calls == 2 * steps and fake.cublas.direct_calls == 2
        _close(second[0], _generic("lstm", params, x2, state, None, False, LSTM_OPTIONS)[0], "float64", steps)
        _close(first[0], _generic("lstm", params, x, state, None, False, LSTM_OPTIONS)[0], "float64", steps)
        assert cupy_fused_graph.cached_plans() == 1


def test_without_warm_up_the_capture_fails_and_ends(monkeypatch):
    """The stand-in refuses a product of a new shape during capture (a kernel load): warm_up is what avoids it."""
    with fake_cupy.installed(monkeypatch) as fake:
        monkeypatch.setattr(cupy_blas, "warm_up", lambda calls: None)
        params, x, state = _problem("rnn", {}, "float64", 3, 2, 3, 4, seed=23)
        with pytest.raises(RuntimeError, match="never run before"):
            _fast(cupy_fused_graph, "rnn", params, x, state, None, False, {"nonlinearity": "tanh"})
        assert fake.captures_open == 0


def test_a_failed_launch_during_capture_ends_the_capture_and_the_next_call_works(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("gru", {}, "float64", 3, 2, 3, 4, seed=24)
        options = {"linear_before_reset": False}
        fake.fail_launch_named = "gru_fused_finish"
        with pytest.raises(RuntimeError, match="injected launch failure"):
            _fast(cupy_fused_graph, "gru", params, x, state, None, False, options)
        assert fake.captures_open == 0
        fake.fail_launch_named = None
        runtime.reset(runtime.PLANS + "fused_graph")
        _check("fused_graph", "gru", params, x, state, None, False, options, "float64")


def test_sees_parameters_updated_in_place(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {"peepholes": True}, "float64", 3, 2, 3, 4, seed=25)
        fake_params = _as_fake_params(params)
        cupy_fused_graph.sequence(
            "lstm", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        fake_params.weight_hh[...] *= -0.5  # same addresses, new values (an optimizer step)
        fake_params.peephole_f[...] += 0.25
        fake_params.weight_ih[...] *= 2.0  # read outside the graph (the input projection)
        y, _ = cupy_fused_graph.sequence(
            "lstm", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        assert fake.captures_begun == 1
        from arrayrnn.backend import map_arrays

        updated = map_arrays(np.asarray, fake_params)
        _close(y, _generic("lstm", updated, x, state, None, False, LSTM_OPTIONS)[0], "float64", 3)


def test_plans_per_stream_each_with_its_own_workspace_and_the_cache_is_bounded(monkeypatch):
    with policy.configured(fused_graph_max_plans=2), fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("rnn", {}, "float64", 2, 2, 3, 4, seed=26)
        options = {"nonlinearity": "tanh"}
        streams = [fake.cuda.Stream(non_blocking=True) for _ in range(3)]
        for stream in streams:
            with stream:
                _check("fused_graph", "rnn", params, x, state, None, False, options, "float64")
        assert fake.captures_begun == 3 and cupy_fused_graph.cached_plans() == 2
        plans = cupy_fused_graph._plans.plans()
        workspaces = {int(p.recorder.workspace.data.ptr) for p in plans}
        assert len(workspaces) == 2, "two plans share a cuBLAS workspace"


def test_eager_mode_issues_the_same_calls(monkeypatch):
    with policy.configured(graph_capture=False), fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("gru", {}, "float64", 3, 2, 3, 4, seed=27)
        _check("fused_graph", "gru", params, x, state, [3, 1], False, {"linear_before_reset": False}, "float64")
        assert fake.captures_begun == 0
        assert fake.kernel_launches == 2 * 3 and fake.cublas.direct_calls == 2 * 3


def test_noncontiguous_parameters_are_copied_for_the_graph_and_results_hold(monkeypatch):
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem("gru", {}, "float64", 3, 2, 3, 4, seed=28)
        fake_params = _as_fake_params(params)
        strided = fake_cupy.asfake(np.repeat(np.asarray(fake_params.bias_hh), 2))[::2]
        fake_params = dataclasses.replace(fake_params, bias_hh=strided)
        y, _ = cupy_fused_graph.sequence(
            "gru", None, fake_cupy.asfake(x), fake_params, _as_fake_state(state), None, False, {}
        )
        _close(y, _generic("gru", params, x, state, None, False, {"linear_before_reset": True})[0], "float64", 3)


def test_the_fused_path_runs_the_same_loops_eagerly(monkeypatch):
    """``cupy_kernels`` and ``cupy_fused_graph`` share the loops: the eager one issues CuPy products, no cuBLAS
    calls of its own."""
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {}, "float64", 3, 2, 3, 4, seed=29)
        _check("fused", "lstm", params, x, state, None, False, LSTM_OPTIONS, "float64")
        assert fake.cublas.direct_calls == 0 and fake.kernel_launches == 3
        assert isinstance(cupy_kernels.EAGER, cupy_kernels.Eager)


# ------------------------------------------------------------------------------------------------
# the gradient path (cupy_grad_fused_graph); the shared comparisons are in tests/cupy_backend/test_cupy_emulated_grad.py


def _vjp(kind, params, x, state, lengths, options):
    """The gradient hook with impl="fused_graph"; ``params``: already on the stand-in (the same arrays each call:
    plans are per parameter address)."""
    fake = fake_cupy.asfake
    lengths = None if lengths is None else fake(np.asarray(lengths))
    args = (fake(x), params, tuple(fake(s) for s in state), lengths, False, options)
    return cupy_dispatch.sequence_vjp(kind, None, *args, impl="fused_graph")


def _pull(recorded, dy, d_final):
    y, final, backward = recorded
    fake = fake_cupy.asfake
    return (y, final, *backward(fake(dy), tuple(fake(d) for d in d_final)))


@pytest.mark.parametrize(
    "kind,options",
    [
        ("rnn", {"nonlinearity": "tanh"}),
        ("lstm", {"coupled": True, "clip": 0.9}),
        ("gru", {"linear_before_reset": False}),
    ],
)
def test_gradient_graphs_captured_once_and_pullbacks_held_at_once_give_their_own_gradients(monkeypatch, kind, options):
    """Two forwards of one plan before either pullback runs: the tape in the plan is the second's, so the first
    pullback replays its forward first. Each pullback, called twice, gives its own call's gradients."""
    lengths = [4, 2, 3]
    with fake_cupy.installed(monkeypatch) as fake:
        params, x1, state = _problem(kind, {}, "float64", 4, 3, 3, 5, seed=31)
        x2 = x1[::-1].copy() * 0.5
        dy, d_final = _cotangents(kind, params, x1, seed=31)
        fake_params = map_arrays(fake_cupy.asfake, params)
        first = _vjp(kind, fake_params, x1, state, lengths, options)
        second = _vjp(kind, fake_params, x2, state, lengths, options)
        for recorded, x in ((first, x1), (second, x2), (first, x1), (second, x2)):
            got = _pull(recorded, dy, d_final)
            want = _generic_vjp(kind, params, x, state, lengths, False, options, dy, d_final)
            _compare(got, want, "float64", 4)
        assert fake.captures_begun == 2, "one forward graph and one backward graph (with dy)"
        assert fake.kernel_launches == 0, "every step ran inside a graph"
        # forwards: 2 calls, then before each of the 4 pullbacks a replay of its own forward (the plan's tape was
        # always the other call's by then); backwards: 4
        assert fake.graph_launches == 2 + 4 + 4
        assert cupy_grad_fused_graph.cached_plans() == 1


def test_gradient_without_dy_has_its_own_backward_graph(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {"proj_size": 2}, "float64", 3, 2, 3, 4, seed=32)
        options = {"coupled": False, "clip": None}
        dy, d_final = _cotangents("lstm", params, x, seed=32)
        recorded = _vjp("lstm", map_arrays(fake_cupy.asfake, params), x, state, None, options)
        y, final, backward = recorded
        for with_dy in (True, False, True):
            given = fake_cupy.asfake(dy) if with_dy else None
            got = (y, final, *backward(given, tuple(fake_cupy.asfake(d) for d in d_final)))
            want = _generic_vjp("lstm", params, x, state, None, False, options, dy if with_dy else None, d_final)
            _compare(got, want, "float64", 3)
        assert fake.captures_begun == 3
        assert fake.graph_launches == 1 + 3, "no forward replayed: the plan's tape was still this call's"


def test_gradient_eager_mode_and_registry(monkeypatch):
    assert cupy_dispatch.gradient_function("fused_graph") is cupy_grad_fused_graph.sequence_vjp
    with policy.configured(graph_capture=False), fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("rnn", {}, "float64", 3, 2, 3, 4, seed=33)
        options = {"nonlinearity": "relu"}
        dy, d_final = _cotangents("rnn", params, x, seed=33)
        got = _pull(_vjp("rnn", map_arrays(fake_cupy.asfake, params), x, state, [3, 1], options), dy, d_final)
        _compare(got, _generic_vjp("rnn", params, x, state, [3, 1], False, options, dy, d_final), "float64", 3)
        assert fake.captures_begun == 0 and fake.kernel_launches == 2 * 3 + 1
