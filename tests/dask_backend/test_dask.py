"""Dask arrays through the sequence functions (and models): lazy, batch-chunked, one task per block.

The promise is "the same code per block": every block of the lazy result is exactly what the NumPy
function gives on that block alone (checked bit for bit), which also agrees with one NumPy call on the
whole batch to float rounding (a BLAS may pick another kernel for another batch size, e.g. a 1-row block
runs a matrix-vector product, so the whole-batch comparison allows an ulp or so). The NumPy functions
themselves are checked against torch and the float64 reference in test_sequence.py.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn.backend import backend_status
from tests.conftest import required_backends
from tests.support import random_params, tolerance
from tests.variants import DASK_MODEL_VARIANTS, DASK_VARIANTS
from tests.variants import variant_id as _ids

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

FUNCTIONS = {"rnn": ar.rnn, "lstm": ar.lstm, "gru": ar.gru}

STEPS, BATCH, FEATURES, HIDDEN = 6, 9, 4, 5
LENGTHS = np.array([6, 0, 3, 1, 6, 2, 5, 4, 6])
# batch chunkings: one block, even blocks, uneven blocks with a 1-row block
CHUNKINGS = [(9,), (3, 3, 3), (2, 4, 1, 2)]


def _random_state(kind, params, batch, rng, dtype):
    if kind == "lstm":
        return (
            rng.standard_normal((batch, params.output_size)).astype(dtype),
            rng.standard_normal((batch, params.hidden_size)).astype(dtype),
        )
    return rng.standard_normal((batch, params.hidden_size)).astype(dtype)


def _states(kind, final):
    return list(final) if kind == "lstm" else [final]


def _take(kind, state, rows):
    if state is None:
        return None
    return tuple(s[rows] for s in state) if kind == "lstm" else state[rows]


def _per_block_numpy(kind, x, params, state, lengths, chunks, batch_first, **options):
    """The NumPy function run on each batch block alone, results concatenated: what dask must give exactly."""
    ys, finals, start = [], [], 0
    for size in chunks:
        rows = slice(start, start + size)
        x_block = x[rows] if batch_first else x[:, rows]
        y, final = FUNCTIONS[kind](
            x_block,
            params,
            _take(kind, state, rows),
            lengths=None if lengths is None else lengths[rows],
            batch_first=batch_first,
            **options,
        )
        ys.append(y)
        finals.append(_states(kind, final))
        start += size
    y = np.concatenate(ys, axis=0 if batch_first else 1)
    return y, [np.concatenate(parts, axis=0) for parts in zip(*finals)]


def _wrap(kind, state, chunks, as_dask):
    if state is None or not as_dask:
        return state
    wrap = lambda s: da.from_array(s, chunks=(chunks, -1))  # noqa: E731
    return tuple(wrap(s) for s in state) if kind == "lstm" else wrap(state)


@pytest.mark.parametrize("variant", DASK_VARIANTS, ids=_ids)
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=lambda c: "chunks=" + "-".join(map(str, c)))
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize(
    "extras",
    [
        {},
        {"lengths": True, "reverse": True, "state": True},
        {"lengths": "dask", "state": "dask"},
        {"reverse": True, "lengths": "list"},
    ],
    ids=["plain", "lengths-reverse-state", "dask-lengths-state", "reverse-list-lengths"],
)
def test_every_block_is_the_numpy_function_on_that_block(variant, chunks, batch_first, extras):
    kind, params_options, call_options = variant
    rng = np.random.default_rng(3)
    dtype = "float64"
    params = random_params(kind, FEATURES, HIDDEN, seed=4, dtype=dtype, **params_options)
    x = rng.standard_normal((STEPS, BATCH, FEATURES)).astype(dtype)
    if batch_first:
        x = np.ascontiguousarray(np.swapaxes(x, 0, 1))
    state = _random_state(kind, params, BATCH, rng, dtype) if extras.get("state") else None
    lengths = LENGTHS if extras.get("lengths") else None
    options = {**call_options, "reverse": extras.get("reverse", False)}

    x_chunks = (chunks, -1, -1) if batch_first else (-1, chunks, -1)
    lengths_arg = {
        None: None,
        True: lengths,
        "dask": None if lengths is None else da.from_array(LENGTHS, chunks=(chunks,)),
        "list": None if lengths is None else [int(v) for v in LENGTHS],
    }[extras.get("lengths") if lengths is not None else None]
    y, final = FUNCTIONS[kind](
        da.from_array(x, chunks=x_chunks),
        params,
        _wrap(kind, state, chunks, extras.get("state") == "dask"),
        lengths=lengths_arg,
        batch_first=batch_first,
        **options,
    )
    finals = _states(kind, final)
    # lazy, chunked over the batch like x, NumPy chunks
    for array in [y, *finals]:
        assert isinstance(array, da.Array)
        assert type(array._meta) is np.ndarray
        assert array.dtype == np.dtype(dtype)
    assert y.chunks[0 if batch_first else 1] == chunks
    assert all(s.chunks[0] == chunks for s in finals)
    y_value, *final_values = dask.compute(y, *finals, scheduler="threads")

    y_blocks, finals_blocks = _per_block_numpy(kind, x, params, state, lengths, chunks, batch_first, **options)
    np.testing.assert_array_equal(y_value, y_blocks)
    for got, expected in zip(final_values, finals_blocks):
        np.testing.assert_array_equal(got, expected)

    y_whole, final_whole = FUNCTIONS[kind](x, params, state, lengths=lengths, batch_first=batch_first, **options)
    np.testing.assert_allclose(y_value, y_whole, rtol=1e-13, atol=1e-13)
    for got, expected in zip(final_values, _states(kind, final_whole)):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_dask_input_gives_the_unbatched_numpy_result(kind):
    rng = np.random.default_rng(5)
    params = random_params(kind, FEATURES, HIDDEN, seed=6, dtype="float32")
    x = rng.standard_normal((STEPS, FEATURES)).astype("float32")
    state = _random_state(kind, params, 1, rng, "float32")
    state = tuple(s[0] for s in state) if kind == "lstm" else state[0]
    y, final = FUNCTIONS[kind](da.from_array(x), params, state, reverse=True)
    y_expected, final_expected = FUNCTIONS[kind](x, params, state, reverse=True)
    assert y.shape == (STEPS, HIDDEN) and y.chunks == ((STEPS,), (HIDDEN,))
    np.testing.assert_array_equal(y.compute(), y_expected)
    for got, expected in zip(_states(kind, final), _states(kind, final_expected)):
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.compute(), expected)


def test_dask_params_and_a_dask_state_of_other_chunks_are_accepted():
    rng = np.random.default_rng(7)
    params = random_params("lstm", FEATURES, HIDDEN, seed=8)
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    state = _random_state("lstm", params, BATCH, rng, "float64")
    # params as (several-chunk) dask arrays, state chunked differently from x: both are rechunked lazily
    dask_params = ar.to_backend(params, "dask", chunks=2)
    dask_state = ar.to_backend(state, "dask", chunks=(4, 2))
    y, (h, c) = ar.lstm(ar.to_backend(x, "dask", chunks={1: 3}), dask_params, dask_state, lengths=LENGTHS)
    assert h.chunks == ((3, 3, 3), (HIDDEN,))
    y_expected, (h_expected, c_expected) = _per_block_numpy("lstm", x, params, state, LENGTHS, (3, 3, 3), False)
    y_value, h_value, c_value = dask.compute(y, h, c)
    np.testing.assert_array_equal(y_value, y_expected)
    np.testing.assert_array_equal(h_value, h_expected)
    np.testing.assert_array_equal(c_value, c_expected)


# ------------------------------------------------------------------------------------------------
# models: the whole stack per block

MODELS = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}


def _model_state(kind, model, batch, rng):
    stacked = model.num_layers * model.num_directions
    if kind == "lstm":
        return (
            rng.standard_normal((stacked, batch, model.output_size)),
            rng.standard_normal((stacked, batch, model.hidden_size)),
        )
    return rng.standard_normal((stacked, batch, model.hidden_size))


def _per_block_model(model, x, state, lengths, chunks):
    """The NumPy model run on each batch block alone, results concatenated."""
    ys, finals, start = [], [], 0
    for size in chunks:
        rows = slice(start, start + size)
        block_state = None
        if state is not None:
            block_state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        y, final = model(
            x[rows] if model.batch_first else x[:, rows],
            block_state,
            lengths=None if lengths is None else lengths[rows],
        )
        ys.append(y)
        finals.append(list(final) if isinstance(final, tuple) else [final])
        start += size
    return np.concatenate(ys, axis=0 if model.batch_first else 1), [np.concatenate(p, axis=1) for p in zip(*finals)]


@pytest.mark.parametrize("variant", DASK_MODEL_VARIANTS, ids=lambda v: v[0])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("dask_state", [False, True], ids=["numpy-state", "dask-state"])
def test_bidirectional_stack_on_dask_is_the_numpy_model_per_block(variant, batch_first, dask_state):
    kind, options = variant
    rng = np.random.default_rng(30)
    model = MODELS[kind](
        FEATURES, HIDDEN, 2, bidirectional=True, batch_first=batch_first, seed=31, dtype="float64", **options
    )
    x = rng.standard_normal((BATCH, STEPS, FEATURES) if batch_first else (STEPS, BATCH, FEATURES))
    state = _model_state(kind, model, BATCH, rng)
    chunks = (4, 1, 4)
    state_arg = state
    if dask_state:
        state_arg = ar.to_backend(state, "dask", chunks={1: 3})  # other chunks than x: rechunked lazily
    x_dask = da.from_array(x, chunks={0 if batch_first else 1: chunks})
    y, final = model(x_dask, state_arg, lengths=da.from_array(LENGTHS, chunks=(chunks,)))
    finals = list(final) if kind == "lstm" else [final]
    assert y.chunks[0 if batch_first else 1] == chunks
    assert all(f.chunks[1] == chunks and f.shape[0] == 4 for f in finals)
    # the whole stack is one task per block: no per-layer tasks in the graph
    graph = dict(y.__dask_graph__())
    assert len([k for k in graph if isinstance(k, tuple) and k[0].startswith(f"arrayrnn-{kind}-stack-blocks-")]) == 3
    assert not [k for k in graph if isinstance(k, tuple) and k[0].startswith(f"arrayrnn-{kind}-blocks-")]

    y_value, *final_values = dask.compute(y, *finals)
    y_expected, finals_expected = _per_block_model(model, x, state, LENGTHS, chunks)
    np.testing.assert_array_equal(y_value, y_expected)
    for got, expected in zip(final_values, finals_expected):
        np.testing.assert_array_equal(got, expected)
    y_whole, final_whole = model(x, state, lengths=LENGTHS)
    np.testing.assert_allclose(y_value, y_whole, rtol=1e-13, atol=1e-13)
    for got, expected in zip(final_values, list(final_whole) if kind == "lstm" else [final_whole]):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)


def test_a_reverse_model_on_dask_is_the_numpy_model_per_block():
    rng = np.random.default_rng(34)
    model = ar.LSTM(FEATURES, HIDDEN, 2, reverse=True, seed=35, dtype="float64")
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    chunks = (4, 1, 4)
    y, (h, c) = model(da.from_array(x, chunks={1: chunks}), lengths=da.from_array(LENGTHS, chunks=(chunks,)))
    y_expected, (h_expected, c_expected) = model(x, lengths=LENGTHS)
    for got, expected in zip(dask.compute(y, h, c), (y_expected, h_expected, c_expected)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_models_on_dask_unbatched_params_moved_to_dask_and_chunking_errors():
    rng = np.random.default_rng(32)
    model = ar.GRU(FEATURES, HIDDEN, 2, bidirectional=True, seed=33, dtype="float64")
    x = rng.standard_normal((STEPS, FEATURES))
    y, h = model(da.from_array(x))
    assert y.shape == (STEPS, 2 * HIDDEN) and h.shape == (4, HIDDEN)
    y_expected, h_expected = model(x)
    np.testing.assert_array_equal(y.compute(), y_expected)
    np.testing.assert_array_equal(h.compute(), h_expected)
    # a model moved to dask (its params single-chunk dask arrays) runs dask x the same way
    moved = model.to("dask")
    assert moved.backend == "dask"
    x3 = rng.standard_normal((STEPS, BATCH, FEATURES))
    y, h = moved(da.from_array(x3, chunks=(-1, 3, -1)))
    y_expected, (h_expected,) = _per_block_model(model, x3, None, None, (3, 3, 3))
    np.testing.assert_array_equal(y.compute(), y_expected)
    with pytest.raises(ValueError, match=r"x\.rechunk\(\{0: -1, 2: -1\}\)"):
        model(da.from_array(x3, chunks=(2, 3, -1)))


# ------------------------------------------------------------------------------------------------
# laziness and the graph


class _Counter:
    calls = 0


def _counted_block(block):
    _Counter.calls += 1
    return block


def test_nothing_is_computed_while_the_graph_is_built():
    rng = np.random.default_rng(9)
    params = random_params("gru", FEATURES, HIDDEN, seed=10)
    x = da.from_array(rng.standard_normal((STEPS, BATCH, FEATURES)), chunks=(-1, 3, -1)).map_blocks(_counted_block)
    lengths = da.from_array(LENGTHS, chunks=3).map_blocks(_counted_block)
    state = da.from_array(rng.standard_normal((BATCH, HIDDEN)), chunks=(3, -1)).map_blocks(_counted_block)
    _Counter.calls = 0
    y, h = ar.gru(x, params, state, lengths=lengths, reverse=True)
    assert _Counter.calls == 0
    y.compute(scheduler="sync")
    assert _Counter.calls == 9  # x, lengths and state: three blocks each


def test_out_of_range_lengths_are_reported_when_the_blocks_run():
    params = random_params("rnn", FEATURES, HIDDEN, seed=11)
    x = da.zeros((STEPS, BATCH, FEATURES), chunks=(-1, 3, -1))
    lengths = da.from_array(np.array([1, 2, 3, 4, 5, 6, 7, 2, 1]), chunks=3)  # 7 > T = 6
    y, _ = ar.rnn(x, params, lengths=lengths)  # no error yet: the values are lazy
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\], got values from 1 to 7"):
        y.compute(scheduler="sync")


def test_params_are_one_graph_key_that_every_block_task_reads():
    from dask.core import get_dependencies

    rng = np.random.default_rng(12)
    params = random_params("lstm", FEATURES, HIDDEN, seed=13)
    x = da.from_array(rng.standard_normal((STEPS, 16, FEATURES)), chunks=(-1, 2, -1))
    y, (h, c) = ar.lstm(x, params)
    graph = {**y.__dask_graph__(), **h.__dask_graph__(), **c.__dask_graph__()}
    params_keys = [key for key in graph if isinstance(key, str) and key.startswith("arrayrnn-params-")]
    assert len(params_keys) == 1
    (params_key,) = params_keys
    # the params object is held once, under that key ...
    holders = [key for key, value in graph.items() if getattr(value, "value", value) is params]
    assert holders == [params_key]
    # ... and each of the 8 block tasks reads it (and its one block of x)
    blocks = [key for key in graph if isinstance(key, tuple) and key[0].startswith("arrayrnn-lstm-blocks-")]
    assert len(blocks) == 8
    for key in blocks:
        assert get_dependencies(graph, key) == {params_key, (x.name, 0, key[1], 0)}
    # a second call with equal params reuses the key (a scheduler holding it needs nothing new)
    y2, _ = ar.lstm(x, random_params("lstm", FEATURES, HIDDEN, seed=13))
    assert params_key in dict(y2.__dask_graph__())


def test_persist_and_progress_bar_work_on_the_lazy_result(capsys):
    from dask.diagnostics import ProgressBar

    params = random_params("gru", FEATURES, HIDDEN, seed=14)
    x_numpy = np.random.default_rng(15).standard_normal((STEPS, BATCH, FEATURES))
    y, h = ar.gru(da.from_array(x_numpy, chunks=(-1, 3, -1)), params)
    with ProgressBar():
        y, h = dask.persist(y, h, scheduler="threads")
    assert "100%" in capsys.readouterr().out
    np.testing.assert_allclose(h.compute(), ar.gru(x_numpy, params)[1], **tolerance("float64", STEPS))


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("shape", "chunks", "batch_first", "hint"),
    [
        ((STEPS, BATCH, FEATURES), (2, 3, -1), False, "x.rechunk({0: -1, 2: -1})"),
        ((STEPS, BATCH, FEATURES), (-1, 3, 2), False, "x.rechunk({0: -1, 2: -1})"),
        ((BATCH, STEPS, FEATURES), (3, 2, -1), True, "x.rechunk({1: -1, 2: -1})"),
        ((STEPS, FEATURES), (2, -1), False, "x.rechunk(-1)"),
    ],
)
def test_chunked_time_or_features_say_how_to_rechunk(shape, chunks, batch_first, hint):
    params = random_params("lstm", FEATURES, HIDDEN, seed=16)
    x = da.zeros(shape, chunks=chunks)
    with pytest.raises(ValueError, match="chunked over the batch axis only") as error:
        ar.lstm(x, params, batch_first=batch_first)
    assert hint in str(error.value)


def test_bad_arguments_are_caught_before_any_compute():
    params = random_params("gru", FEATURES, HIDDEN, seed=17)
    x = da.zeros((STEPS, BATCH, FEATURES), chunks=(-1, 3, -1))
    with pytest.raises(TypeError, match="x has dtype float32 but params are float64"):
        ar.gru(x.astype("float32"), params)
    with pytest.raises(ValueError, match="x has 3 features in its last axis but params expect input_size=4"):
        ar.gru(x[..., :3], params)
    with pytest.raises(ValueError, match=r"state must have shape \(B, H\) = \(9, 5\), got \(9, 4\)"):
        ar.gru(x, params, da.zeros((BATCH, 4)))
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(9,\), got \(8,\)"):
        ar.gru(x, params, lengths=da.zeros(8, dtype="int64"))
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        ar.gru(x, params, lengths=da.zeros(BATCH))
    with pytest.raises(ValueError, match="impl must be one of .* got 'quick'"):
        ar.gru(x, params, impl="quick")  # the blocks would fail later: it is caught now
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        ar.gru(x[:, da.from_array(LENGTHS > 0, chunks=3), :], params)  # a lazy mask leaves the batch size unknown


def test_mixed_dask_and_other_backends_raise_backend_mismatch():
    torch = pytest.importorskip("torch")
    params = random_params("rnn", FEATURES, HIDDEN, seed=18)
    x_numpy = np.zeros((STEPS, BATCH, FEATURES))
    x = da.from_array(x_numpy, chunks=(-1, 3, -1))
    # a NumPy x with a dask state, lengths or params: not the dask exception
    with pytest.raises(ar.BackendMismatchError, match="state"):
        ar.rnn(x_numpy, params, da.zeros((BATCH, HIDDEN)))
    with pytest.raises(ar.BackendMismatchError, match="lengths"):
        ar.rnn(x_numpy, params, lengths=da.from_array(LENGTHS))
    with pytest.raises(ar.BackendMismatchError):
        ar.rnn(x_numpy, ar.to_backend(params, "dask"))
    # params half dask, half NumPy
    with pytest.raises(ar.BackendMismatchError, match="params.bias_ih is a dask array but params.weight_ih is a numpy"):
        ar.rnn(x, dataclasses.replace(params, bias_ih=da.from_array(params.bias_ih)))
    # a dask x of NumPy chunks with torch params, state or lengths
    with pytest.raises(ar.BackendMismatchError, match=r"params\.weight_ih is torch but x is a dask array of numpy"):
        ar.rnn(x, ar.to_backend(params, "torch"))
    with pytest.raises(ar.BackendMismatchError, match="state is torch"):
        ar.rnn(x, params, torch.zeros(BATCH, HIDDEN, dtype=torch.float64))
    with pytest.raises(ar.BackendMismatchError, match="lengths is torch"):
        ar.rnn(x, params, lengths=torch.as_tensor(LENGTHS))


# ------------------------------------------------------------------------------------------------
# backend selection and transfers


def test_to_backend_dask_chunks_and_back():
    x = np.arange(24.0).reshape(2, 4, 3)
    moved = ar.to_backend(x, "dask", chunks={1: 2})
    assert moved.chunks == ((2,), (2, 2), (3,))
    assert ar.to_backend(x, "dask").chunks == ((2,), (4,), (3,))  # default: one chunk
    assert ar.to_backend(moved, "dask", chunks={1: 1}).chunks == ((2,), (1, 1, 1, 1), (3,))
    x[0, 0, 0] = -1.0  # the dask array holds a copy
    np.testing.assert_array_equal(ar.to_numpy(moved), np.arange(24.0).reshape(2, 4, 3))
    tree = ar.to_backend({"x": x, "lengths": np.array([1, 2])}, "dask", chunks=1)
    assert tree["lengths"].chunks == ((1, 1),)
    with pytest.raises(ValueError, match="chunks applies to the dask backend only"):
        ar.to_backend(x, "numpy", chunks=2)
    with pytest.raises(ValueError, match="device must be None for dask"):
        ar.to_backend(x, "dask", device="cpu")


def test_params_created_for_dask_are_numpy():
    assert ar.init_lstm(3, 4, backend="dask").backend == "numpy"
    with ar.use_backend("dask"):
        assert ar.init_gru(3, 4).backend == "numpy"


# ------------------------------------------------------------------------------------------------
# a distributed cluster: two worker processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _numpy_like_a_worker(function, *args, **kwargs):
    """The oracle computed with one BLAS thread, as distributed's nannies configure their workers."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return function(*args, **kwargs)


def test_distributed_cluster_gives_the_per_block_numpy_result_for_functions_and_models(client):
    rng = np.random.default_rng(19)
    params = random_params("lstm", FEATURES, HIDDEN, seed=20, proj_size=2)
    x = rng.standard_normal((STEPS, 12, FEATURES))
    lengths = rng.integers(0, STEPS + 1, size=12)
    y, (h, c) = ar.lstm(da.from_array(x, chunks=(-1, 3, -1)), params, lengths=lengths, reverse=True)
    y_value, h_value, c_value = client.gather(client.compute([y, h, c]))
    y_expected, (h_expected, c_expected) = _numpy_like_a_worker(
        _per_block_numpy, "lstm", x, params, None, lengths, (3, 3, 3, 3), False, reverse=True
    )
    np.testing.assert_array_equal(y_value, y_expected)
    np.testing.assert_array_equal(h_value, h_expected)
    np.testing.assert_array_equal(c_value, c_expected)
    # a bidirectional two-layer GRU with lengths, the whole stack per block
    model = ar.GRU(FEATURES, HIDDEN, 2, bidirectional=True, seed=25, dtype="float64")
    y, h = model(da.from_array(x, chunks=(-1, 5, -1)), lengths=da.from_array(lengths, chunks=5))
    y_value, h_value = client.gather(client.compute([y, h]))
    y_expected, (h_expected,) = _numpy_like_a_worker(_per_block_model, model, x, None, lengths, (5, 5, 2))
    np.testing.assert_array_equal(y_value, y_expected)
    np.testing.assert_array_equal(h_value, h_expected)
    assert len(client.scheduler_info()["workers"]) == 2


def _executing_blocks(dask_worker):
    """Keys of the block tasks a worker is running now."""
    tasks = dask_worker.state.tasks.values()
    return [task.key for task in tasks if task.state == "executing" and "gru-blocks" in str(task.key)]


def test_a_worker_killed_mid_block_is_survived(client):
    # 8 blocks of ~0.15 s each over 2 single-thread workers: long enough to catch one running
    steps, batch = 8000, 8
    rng = np.random.default_rng(21)
    params = random_params("gru", FEATURES, HIDDEN, seed=22)
    x = rng.standard_normal((steps, batch, FEATURES))
    y, h = ar.gru(da.from_array(x, chunks=(-1, 1, -1)), params)
    futures = client.compute([y, h])

    deadline = time.monotonic() + 60
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no block task started within 60 s"
        running = client.run(_executing_blocks)
        victim = next((address for address, keys in running.items() if keys), None)
        time.sleep(0.005)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)

    y_value, h_value = client.gather(futures)
    blocks = (1,) * batch
    y_expected, (h_expected,) = _numpy_like_a_worker(_per_block_numpy, "gru", x, params, None, None, blocks, False)
    np.testing.assert_array_equal(y_value, y_expected)
    np.testing.assert_array_equal(h_value, h_expected)
    # the scheduler saw the worker go, and ran again the blocks it was running or holding
    scheduler = client.cluster.scheduler
    assert victim not in scheduler.workers
    block_keys = [key for key in y.__dask_graph__() if isinstance(key, tuple) and "gru-blocks" in key[0]]
    runs = [sum(entry[2] == "processing" for entry in scheduler.story(key)) for key in block_keys]
    assert len(block_keys) == batch and max(runs) >= 2, runs
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it; leave the cluster whole


# ------------------------------------------------------------------------------------------------
# CuPy-backed dask arrays (where a GPU is usable)


def test_cupy_backed_dask_array_runs_cupy_per_block():
    reason = backend_status("cupy")
    if reason is not None:
        if "cupy" in required_backends():
            pytest.fail(f"required backend cupy is unavailable: {reason}")
        pytest.skip(f"cupy unavailable: {reason}")
    import cupy

    rng = np.random.default_rng(23)
    params = random_params("lstm", FEATURES, HIDDEN, seed=24)
    gpu_params = ar.to_backend(params, "cupy")
    x = rng.standard_normal((STEPS, BATCH, FEATURES))
    x_gpu = ar.to_backend(x, "cupy")
    y, (h, c) = ar.lstm(ar.to_backend(x_gpu, "dask", chunks={1: 3}), gpu_params, lengths=cupy.asarray(LENGTHS))
    assert type(y._meta) is cupy.ndarray and type(h._meta) is cupy.ndarray
    y_value, h_value, c_value = dask.compute(y, h, c, scheduler="threads")
    assert isinstance(y_value, cupy.ndarray)
    start = 0
    for size in (3, 3, 3):
        rows = slice(start, start + size)
        y_block, (h_block, c_block) = ar.lstm(x_gpu[:, rows], gpu_params, lengths=cupy.asarray(LENGTHS[rows]))
        cupy.testing.assert_array_equal(y_value[:, rows], y_block)
        cupy.testing.assert_array_equal(h_value[rows], h_block)
        cupy.testing.assert_array_equal(c_value[rows], c_block)
        start += size
    # NumPy params with CuPy chunks: a mismatch, named
    with pytest.raises(ar.BackendMismatchError, match="params.weight_ih is numpy but x is a dask array of cupy"):
        ar.lstm(ar.to_backend(x_gpu, "dask"), params)
