"""``ar.vjp`` on dask arrays: per-block pullbacks, params gradients summed over the blocks, all lazy.

The oracle is the whole-batch NumPy ``ar.vjp`` (float64, 1e-10), itself checked against torch autograd and
finite differences in tests/core/test_grad.py; here the batch is split into blocks, so only the summation
order of the params gradients differs.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need
from tests.support import random_params
from tests.variants import DASK_VARIANTS
from tests.variants import variant_id as _ids

dask = need("dask")
da = pytest.importorskip("dask.array")  # present wherever dask is (need() above fails or skips first)

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}
MODELS = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}
STEPS, BATCH, FEATURES, HIDDEN = 6, 9, 4, 5
LENGTHS = np.array([6, 0, 3, 1, 6, 2, 5, 4, 6])
CHUNKINGS = [(9,), (3, 3, 3), (2, 4, 1, 2)]
RTOL = 1e-10


def _close(got, expected, what):
    """Every array of two trees equal to ``RTOL`` (``None`` where the other is ``None``)."""
    got_leaves, expected_leaves = [], []
    ar.backend.map_arrays(lambda a: got_leaves.append(np.asarray(a)) or a, got)
    ar.backend.map_arrays(lambda a: expected_leaves.append(np.asarray(a)) or a, expected)
    assert len(got_leaves) == len(expected_leaves), what
    for k, (g, e) in enumerate(zip(got_leaves, expected_leaves)):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(e).max(initial=0))),
                                   err_msg=f"{what}[{k}]")  # fmt: skip


def _random_state(kind, params, batch, rng):
    if kind == "lstm":
        return (rng.standard_normal((batch, params.output_size)), rng.standard_normal((batch, params.hidden_size)))
    return rng.standard_normal((batch, params.hidden_size))


def _cotangent(out, rng, as_dask):
    """Random cotangents of every output; dask ones chunked differently from the output (rechunked inside)."""

    def one(array):
        value = rng.standard_normal(array.shape)
        return da.from_array(value, chunks=tuple(max(1, n // 2) for n in value.shape)) if as_dask else value

    y, final = out
    return one(y), (tuple(one(s) for s in final) if isinstance(final, tuple) else one(final))


def _as_numpy_cotangent(cotangent):
    return ar.backend.map_arrays(lambda a: a.compute() if hasattr(a, "compute") else a, cotangent)


# ------------------------------------------------------------------------------------------------
# sequence functions


@pytest.mark.parametrize("variant", DASK_VARIANTS, ids=_ids)
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize(
    "extras",
    [{}, {"lengths": True}, {"reverse": True, "state": True}, {"lengths": True, "reverse": True, "state": True}],
    ids=["plain", "lengths", "reverse-state", "lengths-reverse-state"],
)
def test_sequence_vjp_on_dask_equals_the_whole_batch_numpy_vjp(variant, chunks, batch_first, extras):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(len(chunks) + 10 * batch_first)
    params = random_params(kind, FEATURES, HIDDEN, seed=1, **params_options)
    x = rng.standard_normal((BATCH, STEPS, FEATURES) if batch_first else (STEPS, BATCH, FEATURES))
    state = _random_state(kind, params, BATCH, rng) if extras.get("state") else None
    options = dict(call_options, batch_first=batch_first, reverse=extras.get("reverse", False))
    if extras.get("lengths"):
        options["lengths"] = LENGTHS
    x_dask = da.from_array(x, chunks=(chunks, -1, -1) if batch_first else (-1, chunks, -1))
    state_dask = None if state is None else ar.to_backend(state, "dask", chunks={0: 2})  # other chunks: rechunked

    out, pullback = ar.vjp(FUNCTIONS[kind], x_dask, params, state_dask, **options)
    cotangent = _cotangent(out, rng, as_dask=len(chunks) == 3)  # dask cotangents for one chunking, NumPy for others
    grads = pullback(cotangent)

    expected_out, expected_pullback = ar.vjp(FUNCTIONS[kind], x, params, state, **options)
    expected = expected_pullback(_as_numpy_cotangent(cotangent))
    dx, d_params, d_state = grads
    assert dx.chunks == x_dask.chunks
    if state is not None:
        for d in d_state if kind == "lstm" else (d_state,):
            assert d.chunks == (chunks, (d.shape[1],))
    else:
        assert d_state is None
    for array in ar.backend.map_arrays(lambda a: [a], d_params).__dict__.values():
        if array is not None:
            assert array[0].numblocks == (1,) * array[0].ndim  # one chunk, lazy
    (computed,) = dask.compute(grads)
    _close(computed, expected, "grads")
    _close(dask.compute(out)[0], expected_out, "out")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_masked_and_dask_params(kind):
    rng = np.random.default_rng(3)
    params = random_params(kind, FEATURES, HIDDEN, seed=4)
    # unbatched x: one block
    x1 = rng.standard_normal((STEPS, FEATURES))
    out, pullback = ar.vjp(FUNCTIONS[kind], da.from_array(x1), params)
    cotangent = _cotangent(out, rng, as_dask=False)
    expected = ar.vjp(FUNCTIONS[kind], x1, params)[1](cotangent)
    _close(dask.compute(pullback(cotangent))[0], expected, "unbatched")
    # a mask with holes and padding="carry"; params given as dask arrays of one chunk
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    mask = rng.random((STEPS, BATCH)) < 0.7
    options = {"mask": mask, "padding": "carry"}
    out, pullback = ar.vjp(
        FUNCTIONS[kind], da.from_array(x, chunks=(-1, 4, -1)), ar.to_backend(params, "dask"),
        mask=da.from_array(mask, chunks=(-1, 3)), padding="carry",
    )  # fmt: skip
    cotangent = _cotangent(out, rng, as_dask=False)
    expected = ar.vjp(FUNCTIONS[kind], x, params, **options)[1](cotangent)
    _close(dask.compute(pullback(cotangent))[0], expected, "masked")


def test_none_cotangent_parts_count_as_zeros_and_grads_follow_the_positional_arguments():
    rng = np.random.default_rng(5)
    params = random_params("lstm", FEATURES, HIDDEN, seed=6)
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    state = [rng.standard_normal((BATCH, HIDDEN)), rng.standard_normal((BATCH, HIDDEN))]  # a list stays a list
    out, pullback = ar.vjp(ar.lstm, da.from_array(x, chunks=(-1, 5, -1)), params, state)
    dc = rng.standard_normal((BATCH, HIDDEN))
    grads = pullback((None, (None, dc)))
    expected = ar.vjp(ar.lstm, x, params, state)[1]((None, (None, dc)))
    assert isinstance(grads[2], list)
    _close(dask.compute(grads)[0], expected, "grads")
    # params by keyword: only x gets a gradient
    out, pullback = ar.vjp(ar.gru, da.from_array(x, chunks=(-1, 5, -1)), params=random_params("gru", 4, 5, seed=7))
    (dx,) = pullback((np.ones(out[0].shape), None))
    assert dx.shape == x.shape


# ------------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("chunks", [(3, 3, 3), (2, 4, 1, 2)], ids=str)
def test_bidirectional_two_layer_model_vjp_on_dask(kind, batch_first, chunks):
    rng = np.random.default_rng(11)
    extra = {"proj_size": 2} if kind == "lstm" else {}
    model = MODELS[kind](FEATURES, HIDDEN, 2, bidirectional=True, batch_first=batch_first, seed=12, dtype="float64",
                         **extra)  # fmt: skip
    x = rng.standard_normal((BATCH, STEPS, FEATURES) if batch_first else (STEPS, BATCH, FEATURES))
    out_size = 2 if kind == "lstm" else HIDDEN
    h0 = rng.standard_normal((4, BATCH, out_size))
    state = (h0, rng.standard_normal((4, BATCH, HIDDEN))) if kind == "lstm" else h0
    x_dask = da.from_array(x, chunks=(chunks, -1, -1) if batch_first else (-1, chunks, -1))
    out, pullback = ar.vjp(model.apply, model.params, x_dask, state, lengths=LENGTHS)
    cotangent = _cotangent(out, rng, as_dask=True)
    grads = pullback(cotangent)
    expected = ar.vjp(model.apply, model.params, x, state, lengths=LENGTHS)[1](_as_numpy_cotangent(cotangent))
    assert grads[1].chunks == x_dask.chunks
    for d in grads[2] if kind == "lstm" else (grads[2],):
        assert d.chunks[1] == chunks
    _close(dask.compute(grads)[0], expected, "model grads")


def test_a_reverse_model_with_default_lengths_and_no_state():
    rng = np.random.default_rng(13)
    model = ar.GRU(FEATURES, HIDDEN, 2, reverse=True, seed=14, dtype="float64")
    model.default_lengths = list(LENGTHS)
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    out, pullback = ar.vjp(model.apply, model.params, da.from_array(x, chunks=(-1, 2, -1)))
    cotangent = (rng.standard_normal(out[0].shape), None)
    expected = ar.vjp(model.apply, model.params, x)[1](cotangent)
    _close(dask.compute(pullback(cotangent))[0], expected, "reverse model")


# ------------------------------------------------------------------------------------------------
# laziness and errors


class _Counter:
    calls = 0


def _counted_block(block):
    _Counter.calls += 1
    return block


def test_nothing_is_computed_until_compute():
    rng = np.random.default_rng(15)
    params = random_params("lstm", FEATURES, HIDDEN, seed=16)
    x = da.from_array(rng.standard_normal((STEPS, BATCH, FEATURES)), chunks=(-1, 3, -1)).map_blocks(_counted_block)
    dy = da.from_array(rng.standard_normal((STEPS, BATCH, HIDDEN)), chunks=(-1, 3, -1)).map_blocks(_counted_block)
    _Counter.calls = 0
    (y, _), pullback = ar.vjp(ar.lstm, x, params, lengths=LENGTHS)
    dx, d_params = pullback((dy, None))
    model = ar.LSTM(FEATURES, HIDDEN, 2, bidirectional=True, seed=17, dtype="float64")
    (y2, _), model_pullback = ar.vjp(model.apply, model.params, x)
    model_grads = model_pullback((da.concatenate([dy, dy], axis=-1), None))
    assert _Counter.calls == 0
    dask.compute(dx, d_params, scheduler="sync")
    assert _Counter.calls == 6  # x and dy: three blocks each, the forward recomputed inside each block task
    _Counter.calls = 0
    dask.compute(model_grads, scheduler="sync")
    assert _Counter.calls == 6


def test_bad_cotangents_and_training_with_dropout_are_refused_clearly():
    params = random_params("gru", FEATURES, HIDDEN, seed=18)
    x = da.zeros((STEPS, BATCH, FEATURES), chunks=(-1, 3, -1))
    out, pullback = ar.vjp(ar.gru, x, params)
    with pytest.raises(ValueError, match=r"out_cotangent\[0\] must have the shape"):
        pullback((np.zeros((STEPS, BATCH, 3)), None))
    with pytest.raises(TypeError, match=r"out_cotangent\[1\] must have the output's dtype float64, got float32"):
        pullback((None, np.zeros((BATCH, HIDDEN), "float32")))
    with pytest.raises(TypeError, match=r"out_cotangent must be None or a tuple of 2 parts"):
        pullback(np.zeros((STEPS, BATCH, HIDDEN)))
    strict = need("array_api_strict")
    with pytest.raises(ar.BackendMismatchError, match=r"out_cotangent\[0\] is array_api_strict"):
        pullback((strict.zeros((STEPS, BATCH, HIDDEN), dtype=strict.float64), None))
    with pytest.raises(ValueError, match="train=True with recurrent_dropout or zoneout is not supported on dask"):
        ar.vjp(ar.gru, x, params, recurrent_dropout=0.5, train=True, seed=0)
    model = ar.GRU(FEATURES, HIDDEN, 2, dropout=0.5, seed=0, dtype="float64")
    with pytest.raises(ValueError, match="train=True with dropout, recurrent_dropout or zoneout is not supported"):
        ar.vjp(model.apply, model.params, x, train=True, seed=0)
    with pytest.raises(ValueError, match=r"time axis 0 in 2 chunks"):
        ar.vjp(ar.gru, x.rechunk((3, 3, -1)), params)
    with pytest.raises(ar.BackendMismatchError, match="params.weight_ih is array_api_strict"):
        ar.vjp(ar.gru, x, ar.to_backend(params, "array_api_strict"))


# ------------------------------------------------------------------------------------------------
# a distributed cluster: two worker processes


@pytest.fixture(scope="module")
def client():
    distributed = need("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _training_step(model, params, x, target):
    """Mean squared error of ``y`` against ``target``: its gradient by ``ar.vjp`` (lazy on dask)."""
    (y, _), pullback = ar.vjp(model.apply, params, x)
    d_y = (y - target) * (2.0 / np.prod(target.shape))
    return pullback((d_y, None))[0]


def test_a_training_step_on_a_cluster_equals_the_whole_batch_numpy_gradient(client):
    rng = np.random.default_rng(19)
    model = ar.LSTM(FEATURES, HIDDEN, 2, bidirectional=True, seed=20, dtype="float64")
    x = rng.standard_normal((STEPS, 12, FEATURES))
    target = rng.standard_normal((STEPS, 12, 2 * HIDDEN))
    grads = _training_step(model, model.params, da.from_array(x, chunks=(-1, 5, -1)), target)
    computed = client.gather(client.compute(grads))
    _close(computed, _training_step(model, model.params, x, target), "cluster grads")
    # an optimizer step with the computed (NumPy) gradients
    optimizer = ar.optim.SGD(lr=0.1)
    new_params, _ = optimizer.update(model.params, computed, optimizer.init(model.params))
    assert new_params[1][1].weight_hh.shape == model.params[1][1].weight_hh.shape
    assert len(client.scheduler_info()["workers"]) == 2


def _executing_blocks(dask_worker):
    tasks = dask_worker.state.tasks.values()
    return [task.key for task in tasks if task.state == "executing" and "vjp-blocks" in str(task.key)]


def test_a_worker_killed_mid_gradient_is_survived(client):
    steps, batch = 6000, 8  # 8 blocks of a few tenths of a second over 2 single-thread workers
    rng = np.random.default_rng(21)
    model = ar.GRU(FEATURES, HIDDEN, seed=22, dtype="float64")
    x = rng.standard_normal((steps, batch, FEATURES))
    target = rng.standard_normal((steps, batch, HIDDEN))
    grads = _training_step(model, model.params, da.from_array(x, chunks=(-1, 1, -1)), target)
    futures = client.compute(grads)

    deadline = time.monotonic() + 60
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no block task started within 60 s"
        running = client.run(_executing_blocks)
        victim = next((address for address, keys in running.items() if keys), None)
        time.sleep(0.005)
    os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)

    computed = client.gather(futures)
    _close(computed, _training_step(model, model.params, x, target), "grads after a killed worker")
    scheduler = client.cluster.scheduler
    assert victim not in scheduler.workers
    graph = grads[0][0].weight_ih.__dask_graph__()
    block_keys = [key for key in graph if isinstance(key, tuple) and "vjp-blocks" in key[0]]
    runs = [sum(entry[2] == "processing" for entry in scheduler.story(key)) for key in block_keys]
    assert len(block_keys) == batch and max(runs) >= 2, runs  # the blocks it ran or held ran again
    client.wait_for_workers(2, timeout=60)
