"""The "cluster" CuPy fast path (one thread block cluster runs the whole loop) on the CPU emulator.

The emulator runs a cluster's blocks together: the cluster barrier releases when every thread of the cluster
is there, a shared-memory address maps into another block's buffer, and it reports a block that exits while
the others wait, a rank outside the cluster, and a store into a block that has exited. The oracle is the
generic core on NumPy (float64). ``test_cupy_cluster.py`` (beside this file) runs the same path on a real Hopper
GPU.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from arrayrnn._backends import cupy as cupy_dispatch
from arrayrnn._backends.cupy import policy, runtime
from arrayrnn._backends.cupy.experimental import cluster as cupy_cluster
from arrayrnn._backends.cupy.experimental import cluster_sources as cupy_cluster_sources
from arrayrnn._backends.cupy.experimental import grad_cluster as cupy_grad_cluster
from arrayrnn.backend import map_arrays
from tests.cupy_backend import cuda_emulator, fake_cupy
from tests.cupy_backend.test_cupy_emulated import _check, _defaults, _fast, _problem
from tests.cupy_backend.test_cupy_emulated_grad import _compare, _cotangents
from tests.cupy_backend.test_cupy_emulated_grad import _fast as _fast_vjp
from tests.cupy_backend.test_cupy_emulated_grad import _generic as _generic_vjp
from tests.variants import KERNEL_VARIANTS
from tests.variants import variant_id as _ids

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler for the kernel emulator")


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
def test_matches_generic_with_lengths_and_reverse(monkeypatch, variant):
    kind, params_options, call_options = variant
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(cluster_threads=64):
        params, x, state = _problem(kind, params_options, "float64", 5, 4, 3, 6, seed=len(_ids(variant)))
        lengths = [5, 0, 2, 4]
        if params_options.get("proj_size") or options.get("linear_before_reset") is False:
            with pytest.raises(ValueError, match="projection|linear_before_reset=True only"):
                _fast(cupy_cluster, kind, params, x, state, lengths, False, options)
            return
        for reverse in (False, True):
            _check("cluster", kind, params, x, state, lengths, reverse, options, "float64")
        _check("cluster", kind, params, x, state, None, False, options, "float64")
        assert fake.kernel_launches == 3 and fake.cooperative_launches == 0


@pytest.mark.parametrize("size", cupy_cluster_sources.CLUSTER_SIZES)
@pytest.mark.parametrize(
    "kind,options",
    [
        ("rnn", {"nonlinearity": "relu"}),
        ("lstm", {"coupled": False, "clip": 0.9}),
        ("gru", {"linear_before_reset": True}),
    ],
)
def test_every_cluster_size_with_idle_blocks_and_several_tasks_per_warp(monkeypatch, size, kind, options):
    """H = 11 over 2..16 blocks: blocks own 6, 3, 2 or 1 units, and at 16 the last five own none (they still
    stage nothing, exchange nothing and take every barrier); 2 warps take the tasks of 9 batch rows in tiles
    of 2; the state of 9 x 11 is exchanged through every block's shared memory each step."""
    knobs = {"cluster_threads": 64, "cluster_force_cluster_size": size, "cluster_force_batch_tile": 2}
    with fake_cupy.installed(monkeypatch), policy.configured(**knobs):
        params, x, state = _problem(kind, {}, "float64", 4, 9, 3, 11, seed=size)
        for reverse in (False, True):
            _check("cluster", kind, params, x, state, [4, 0, 2, 3, 4, 1, 4, 4, 2], reverse, options, "float64")


@pytest.mark.parametrize("tile", [1, 4, 8])
def test_float32_wide_hidden_and_batch_tiles(monkeypatch, tile):
    """hidden = 70: lanes take several columns, the last stride partial; the chosen cluster size (8) and the
    batch tile forced."""
    with fake_cupy.installed(monkeypatch), policy.configured(cluster_threads=128, cluster_force_batch_tile=tile):
        params, x, state = _problem("lstm", {"peepholes": True}, "float32", 3, 5, 4, 70, seed=tile)
        _check("cluster", "lstm", params, x, state, [3, 1, 2, 3, 0], False, {"coupled": False, "clip": None}, "float32")


def test_zero_steps_and_empty_batch(monkeypatch):
    with fake_cupy.installed(monkeypatch), policy.configured(cluster_threads=32):
        params, x, state = _problem("gru", {}, "float64", 0, 3, 2, 5, seed=1)
        y, (h,) = _fast(cupy_cluster, "gru", params, x, state, None, False, {"linear_before_reset": True})
        assert y.shape == (0, 3, 5)
        np.testing.assert_array_equal(np.asarray(h), state[0])
        params, x, state = _problem("rnn", {}, "float64", 2, 0, 2, 5, seed=1)
        y, (h,) = _fast(cupy_cluster, "rnn", params, x, state, None, False, {"nonlinearity": "tanh"})
        assert y.shape == (2, 0, 5) and h.shape == (0, 5)


def test_choice_of_cluster_size_and_what_does_not_fit():
    limit = 227 * 1024
    # LSTM H = 256 float32 at B = 8: 8 blocks of 32 units hold 4 * 32 * 256 * 4 B weights + 2 * 8 * 256 * 4 B state
    assert cupy_cluster.choose_cluster_size(4, 8, 256, 4, limit) == 8
    assert cupy_cluster.shared_bytes(4, 8, 256, 8, 4) == (4 * 32 + 16) * 256 * 4
    # H = 384: only 16 blocks hold it (4 * 48 * 384 * 4 B = 288 KiB at 8 blocks, 144 KiB at 16)
    assert cupy_cluster.choose_cluster_size(4, 1, 384, 4, limit) == 16
    with pytest.raises(ValueError, match="shared memory per block even in a cluster of 16"):
        cupy_cluster.choose_cluster_size(4, 1, 512, 4, limit)  # 256 KiB of weights per block at 16 blocks


def test_refusals_are_clear_and_nothing_is_mutated(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        params, x, state = _problem("lstm", {}, "float64", 2, 2, 3, 4, seed=3)
        fake.compute_capability = "80"
        with pytest.raises(ValueError, match="compute capability 9.0.*8.0"):
            _fast(cupy_cluster, "lstm", params, x, state, None, False, {"coupled": False, "clip": None})
        fake.compute_capability = "90"
        params, x, state = _problem("lstm", {}, "float64", 2, 64, 3, 200, seed=3)
        before = [s.copy() for s in state]
        with pytest.raises(ValueError, match="impl='persistent' or 'graph'"):
            _fast(cupy_cluster, "lstm", params, x, state, None, False, {"coupled": False, "clip": None})
        for got, want in zip(state, before):
            np.testing.assert_array_equal(got, want)
        assert fake.kernel_launches == 0


def test_sixteen_blocks_opt_in_to_the_non_portable_size(monkeypatch):
    """A cluster of 16 is refused (as by CUDA) unless the kernel opted in; the path does."""
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(cluster_threads=32, cluster_force_cluster_size=16):
        params, x, state = _problem("rnn", {}, "float64", 2, 1, 2, 16, seed=2)
        _check("cluster", "rnn", params, x, state, None, False, {"nonlinearity": "tanh"}, "float64")
        k = cupy_cluster.kernel(cupy_cluster_sources.cluster_kernel_name("rnn_cluster", 1, 16), "float64")
        assert fake._functions[k.kernel.ptr].non_portable_cluster_size_allowed == 1
        fake._functions[k.kernel.ptr].non_portable_cluster_size_allowed = 0
        runtime.reset("cluster.non_portable")
        monkeypatch.setattr(cupy_cluster, "_allow_non_portable", lambda cp, k: None)
        with pytest.raises(RuntimeError, match="CUDA_ERROR_INVALID_CLUSTER_SIZE"):
            _fast(cupy_cluster, "rnn", params, x, state, None, False, {"nonlinearity": "tanh"})


def test_barrier_bench_launches_one_cluster(monkeypatch):
    with fake_cupy.installed(monkeypatch) as fake:
        for size in cupy_cluster_sources.CLUSTER_SIZES:
            run = cupy_cluster.barrier_bench(size, threads=32, steps=3)
            run()
        assert fake.kernel_launches == len(cupy_cluster_sources.CLUSTER_SIZES)
        fake.compute_capability = "86"
        with pytest.raises(ValueError, match="compute capability 9.0"):
            cupy_cluster.barrier_bench(2, threads=32, steps=1)


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=_ids)
def test_gradient_matches_generic_backward(monkeypatch, variant):
    """ar.vjp's cluster path: the recording cluster forward and the cluster backward (the blocks exchanging
    each step's gate gradients) against the generic backward, with and without dy and final cotangents."""
    kind, params_options, call_options = variant
    options = _defaults(kind, call_options)
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(cluster_threads=64):
        params, x, state = _problem(kind, params_options, "float64", 5, 4, 3, 6, seed=len(_ids(variant)))
        dy, d_final = _cotangents(kind, params, x, seed=len(_ids(variant)))
        if params_options.get("proj_size") or options.get("linear_before_reset") is False:
            with pytest.raises(ValueError, match="projection|linear_before_reset=True only"):
                _fast_vjp(kind, params, x, state, None, False, options, dy, d_final, impl="cluster")
            return
        for lengths, reverse in (([5, 0, 2, 4], False), ([5, 0, 2, 4], True), (None, False), (None, True)):
            fast, _ = _fast_vjp(kind, params, x, state, lengths, reverse, options, dy, d_final, impl="cluster")
            generic = _generic_vjp(kind, params, x, state, lengths, reverse, options, dy, d_final)
            _compare(fast, generic, "float64", 5)
        dy, d_final = _cotangents(kind, params, x, seed=1, with_dy=False, with_final=False)
        fast, _ = _fast_vjp(kind, params, x, state, [2, 5, 1, 3], True, options, None, d_final, impl="cluster")
        _compare(fast, _generic_vjp(kind, params, x, state, [2, 5, 1, 3], True, options, None, d_final), "float64", 5)
        assert fake.cooperative_launches == 0


@pytest.mark.parametrize("size", cupy_cluster_sources.CLUSTER_SIZES)
@pytest.mark.parametrize(
    "kind,options",
    [
        ("rnn", {"nonlinearity": "tanh"}),
        ("lstm", {"coupled": True, "clip": 0.8}),
        ("gru", {"linear_before_reset": True}),
    ],
)
def test_gradient_every_cluster_size_with_idle_blocks(monkeypatch, size, kind, options):
    """H = 11 over 2..16 blocks (at 16 five blocks own nothing), 7 batch rows in tiles of 4 over 2 warps."""
    knobs = {"cluster_threads": 64, "cluster_force_cluster_size": size, "cluster_force_batch_tile": 4}
    with fake_cupy.installed(monkeypatch), policy.configured(**knobs):
        params_options = {"peepholes": True} if kind == "lstm" else {}
        params, x, state = _problem(kind, params_options, "float64", 4, 7, 3, 11, seed=size)
        dy, d_final = _cotangents(kind, params, x, seed=size)
        lengths = [4, 0, 2, 3, 4, 1, 4]
        fast, _ = _fast_vjp(kind, params, x, state, lengths, False, options, dy, d_final, impl="cluster")
        _compare(fast, _generic_vjp(kind, params, x, state, lengths, False, options, dy, d_final), "float64", 4)


def test_gradient_float32_and_refusals(monkeypatch):
    assert cupy_dispatch.gradient_function("cluster") is cupy_grad_cluster.sequence_vjp
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(cluster_threads=128):
        params, x, state = _problem("lstm", {"peepholes": True}, "float32", 6, 5, 4, 40, seed=3)
        dy, d_final = _cotangents("lstm", params, x, seed=3)
        options = {"coupled": False, "clip": None}
        fast, _ = _fast_vjp("lstm", params, x, state, [6, 1, 0, 3, 6], True, options, dy, d_final, impl="cluster")
        generic = _generic_vjp("lstm", params, x, state, [6, 1, 0, 3, 6], True, options, dy, d_final)
        _compare(fast, generic, "float32", 6)
        # the backward's gate gradients (2 x 64 x 4H) do not fit: refused before anything runs
        params, x, state = _problem("lstm", {}, "float32", 2, 64, 3, 128, seed=3)
        launches = fake.kernel_launches
        with pytest.raises(ValueError, match="gate gradients of B=64, H=128"):
            _fast_vjp("lstm", params, x, state, None, False, options, None, (None, None), impl="cluster")
        assert fake.kernel_launches == launches
        params, x, state = _problem("gru", {}, "float16", 2, 2, 3, 4, seed=3)  # float16: declined (generic core)
        fake_params = map_arrays(fake_cupy.asfake, params)
        fake_state = tuple(fake_cupy.asfake(s) for s in state)
        args = (fake_cupy.asfake(x), fake_params, fake_state, None, False, {})
        assert cupy_dispatch.sequence_vjp("gru", None, *args, impl="cluster") is None


_EMULATOR_SOURCE = r"""
extern "C" __global__ void exit_early(unsigned int* out) {
  if (blockIdx.x == 1) return;  // block 1 never reaches the barrier the others wait at
  ARRAYRNN_CLUSTER_SYNC();
  out[blockIdx.x] = 1;
}
extern "C" __global__ void bad_rank(unsigned int* out) {
  unsigned int* mine = (unsigned int*)ARRAYRNN_DYNAMIC_SHARED();
  ARRAYRNN_CLUSTER_SYNC();
  ARRAYRNN_CLUSTER_MAP(mine, (unsigned int)out[0])[threadIdx.x] = 1;
  ARRAYRNN_CLUSTER_SYNC();
}
extern "C" __global__ void ring(unsigned int* out) {
  unsigned int* mine = (unsigned int*)ARRAYRNN_DYNAMIC_SHARED();
  const unsigned int rank = blockIdx.x % (unsigned int)out[0];
  ARRAYRNN_CLUSTER_SYNC();
  ARRAYRNN_CLUSTER_MAP(mine, (rank + 1) % (unsigned int)out[0])[threadIdx.x] = blockIdx.x * 100 + threadIdx.x;
  ARRAYRNN_CLUSTER_SYNC();
  out[1 + blockIdx.x * blockDim.x + threadIdx.x] = mine[threadIdx.x];
}
extern "C" __global__ void store_after_exit(unsigned int* out) {
  unsigned int* mine = (unsigned int*)ARRAYRNN_DYNAMIC_SHARED();
  ARRAYRNN_CLUSTER_SYNC();
  if (blockIdx.x == 0) return;
  for (int i = 0; i < 100; ++i) __syncthreads();  // block 0 has exited by now
  ARRAYRNN_CLUSTER_MAP(mine, 0u)[threadIdx.x] = 1;
}
"""
_SPECS = {name: [("counter", "out")] for name in ("exit_early", "bad_rank", "ring", "store_after_exit")}


def _emulate(name, grid, block, out, cluster):
    lib = cuda_emulator.library_for_source(_EMULATOR_SOURCE, _SPECS)
    cuda_emulator.run(lib, name, grid, block, [np.uint64(out.ctypes.data).tobytes()], shared_mem=64, cluster=cluster)


def test_emulator_cluster_barrier_and_distributed_shared_memory():
    out = np.zeros(1 + 4 * 8, dtype=np.uint32)
    out[0] = 2
    _emulate("ring", 4, 8, out, cluster=2)  # two clusters of two blocks: each writes into its partner
    partner = [1, 0, 3, 2]
    want = [partner[b] * 100 + t for b in range(4) for t in range(8)]
    assert out[1:].tolist() == want
    with pytest.raises(RuntimeError, match="deadlock"):
        _emulate("exit_early", 2, 4, np.zeros(2, dtype=np.uint32), cluster=2)
    bad = np.array([2], dtype=np.uint32)
    with pytest.raises(RuntimeError, match="outside the cluster"):
        _emulate("bad_rank", 2, 4, bad, cluster=2)
    with pytest.raises(RuntimeError, match="whose threads have all exited"):
        _emulate("store_after_exit", 2, 32, np.zeros(1, dtype=np.uint32), cluster=2)
    with pytest.raises(RuntimeError, match="without clusters"):
        _emulate("exit_early", 2, 4, np.zeros(2, dtype=np.uint32), cluster=1)
    with pytest.raises(ValueError, match="clusters of 2"):
        _emulate("ring", 3, 8, out, cluster=2)


def test_auto_choice_with_cluster_auto():
    """Pure choice: off by default; on, "cluster" where the GPU has clusters, the small-batch path would run and
    the shape fits one cluster; the gradient only where its gate gradients fit too."""
    choose, shared = policy.choose_impl, 227 * 1024
    small = {"steps": 100, "batch": 32, "hidden": 128, "dtype": "float32"}
    assert choose("lstm", **small, cluster_shared=shared) == policy.current().small_batch_impl  # cluster_auto off
    with policy.configured(cluster_auto=True) as config:
        assert choose("lstm", **small, cluster_shared=shared) == "cluster"
        assert choose("lstm", **small) == config.small_batch_impl  # no clusters on this GPU
        assert choose("gru", **small, cluster_shared=shared, linear_before_reset=False) != "cluster"
        assert choose("lstm", steps=100, batch=64, hidden=512, dtype="float32", cluster_shared=shared) != "cluster"
        assert choose("lstm", steps=100, batch=256, hidden=128, dtype="float32", cluster_shared=shared) == "fused"
        grad = policy.grad_choice
        assert grad("lstm", "cluster", batch=32, hidden=128, dtype="float32", cluster_shared=shared) == "cluster"
        # B = 64, H = 128: the forward fits, the backward's 2 x 64 x 512 gate gradients do not
        assert choose("lstm", steps=10, batch=64, hidden=128, dtype="float32", cluster_shared=shared) == "cluster"
        assert grad("lstm", "cluster", batch=64, hidden=128, dtype="float32", cluster_shared=shared) == (
            config.grad_small_batch_impl
        )
        assert grad("lstm", "fused", batch=300, hidden=128, dtype="float32") == "fused"


@pytest.mark.parametrize("capability", ["90", "80"])
def test_auto_runs_the_cluster_path_when_enabled(monkeypatch, capability):
    """Through ar.lstm / ar.vjp with impl="auto" on the stand-in: the cluster kernels run (or, without clusters,
    the graph kernels) and agree with the generic core."""
    from tests.cupy_backend import test_cupy_emulated

    # the helpers call the hook with impl=IMPL: "auto" lets it choose
    monkeypatch.setitem(test_cupy_emulated.IMPLS, "auto", types.SimpleNamespace(IMPL="auto"))
    with fake_cupy.installed(monkeypatch) as fake, policy.configured(cluster_auto=True, cluster_threads=64):
        fake.compute_capability = capability
        params, x, state = _problem("lstm", {}, "float64", 4, 3, 2, 5, seed=9)
        options = {"coupled": False, "clip": None}
        _check("auto", "lstm", params, x, state, [4, 1, 3], False, options, "float64")
        dy, d_final = _cotangents("lstm", params, x, seed=9)
        fast, _ = _fast_vjp("lstm", params, x, state, [4, 1, 3], True, options, dy, d_final, impl="auto")
        _compare(fast, _generic_vjp("lstm", params, x, state, [4, 1, 3], True, options, dy, d_final), "float64", 4)
        cluster_launches = fake.kernel_launches_named("cluster")
        assert (cluster_launches == 3) == (capability == "90"), cluster_launches  # forward, record, backward


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", [(2, 1, 64, 128), (2, 1, 64, 256), (2, 8, 128, 256), (2, 32, 128, 128)], ids=str)
def test_benchmark_shapes_with_the_default_knobs(monkeypatch, kind, shape):
    """The small-batch benchmark shapes (two steps of them) with the defaults the GPU will run: 512 threads,
    the chosen cluster size and batch tile, shared memory near the opt-in limit (the stand-in enforces it)."""
    options = _defaults(kind, {})
    with fake_cupy.installed(monkeypatch):
        params, x, state = _problem(kind, {}, "float32", *shape, seed=1)
        _check("cluster", kind, params, x, state, None, False, options, "float32")
        dy, d_final = _cotangents(kind, params, x, seed=1)
        fast, _ = _fast_vjp(kind, params, x, state, None, False, options, dy, d_final, impl="cluster")
        _compare(fast, _generic_vjp(kind, params, x, state, None, False, options, dy, d_final), "float32", shape[0])
