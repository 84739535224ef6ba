"""Loading untrusted files: ``ar.load``, ``from_state_dict`` and ``from_onnx_model`` stay bounded and confined.

Every hostile file is built here with ``zipfile``/``numpy.lib.format`` (or by hand, where the zip directory must lie)
and must be refused with a ``ValueError`` naming the file and the field or member, in well under a second and a few
MB of memory (``tracemalloc``), whatever it claims. See ``docs/security.md``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import arrayrnn as ar
from tests.conftest import need

SECONDS = 1.0
PEAK_BYTES = 20 * 2**20
GiB = 2**30


def _bounded(call, error=ValueError, match=None):
    """Run ``call``, which must raise ``error`` (matching ``match``) within SECONDS and PEAK_BYTES."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as raised:
            call()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < SECONDS, f"took {elapsed:.2f} s"
    assert peak < PEAK_BYTES, f"allocated {peak / 2**20:.1f} MB"
    return raised.value


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _zip(path, entries) -> None:
    """Write a zip by hand: ``entries`` of ``(name, method, payload, crc, size)``, sizes as given (they may lie)."""
    local, central = bytearray(), bytearray()
    for name, method, payload, crc, size in entries:
        encoded = name.encode()
        offset = len(local)
        head = (20, 0, method, 0, 0x21, crc, len(payload), size, len(encoded))
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *head, 0) + encoded + payload
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIH", *head)
        central += struct.pack("<HHHHII", 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def _npy_header(**fields) -> bytes:
    """A version 1.0 ``.npy`` header of a (12, 3) float32 array, with ``fields`` replaced (``shape``, ``descr``)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (12, 3), **fields}
    text = repr(header) if not isinstance(header["shape"], str) else repr(header).replace("'((((", "((((")
    text = text.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def _stored(members: dict[str, bytes]) -> list[tuple]:
    return [(name, 0, data, zlib.crc32(data), len(data)) for name, data in members.items()]


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@pytest.fixture(scope="module")
def saved():
    """``(model, {member name: .npy bytes})`` of a small GRU written by ``ar.save``; loading it once warms up."""
    model = ar.GRU(3, 4, seed=0)
    buffer = io.BytesIO()
    ar.save(buffer, model)
    buffer.seek(0)
    ar.load(buffer, backend="numpy")
    with zipfile.ZipFile(buffer) as archive:
        return model, {name: archive.read(name) for name in archive.namelist()}


def _header(members) -> dict:
    return json.loads(str(np.load(io.BytesIO(members["__arrayrnn__.npy"]))))


def _with_header(members, header) -> dict[str, bytes]:
    text = header if isinstance(header, str) else json.dumps(header)
    return {**members, "__arrayrnn__.npy": _npy(np.array(text))}


@pytest.fixture(scope="module")
def gigabyte_of_zeros():
    """``(raw deflate stream, crc)`` of 1 GiB of zeros, about 1 MB: one independent 1 MiB block repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = 0, bytes(2**24)
    for _ in range(GiB // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    return block * 1024 + compressor.flush(), crc


# --------------------------------------------------------------------------------------------
# ar.load: the reported cases


def test_a_huge_layer_number_in_a_member_name_is_refused_by_name(tmp_path, saved):
    # was: from_state_dict built a set over every layer up to 99999999999 (10 s, 1.2 GB, then MemoryError)
    _, members = saved
    extra = {**members, "weight_ih_l99999999999.npy": members["weight_ih_l0.npy"]}
    path = tmp_path / "huge_layer.npz"
    _zip(path, _stored(extra))
    assert path.stat().st_size < 8192
    error = _bounded(lambda: ar.load(path), match=r"unknown member 'weight_ih_l99999999999.npy'")
    assert str(path) in str(error)


def test_a_zip_bomb_member_is_refused_before_it_is_decompressed(tmp_path, saved, gigabyte_of_zeros):
    # was: every member was read (1 GiB inflated) before any name was checked
    _, members = saved
    bomb, crc = gigabyte_of_zeros
    path = tmp_path / "bomb.npz"
    _zip(path, _stored(members) + [("extra.npy", 8, bomb, crc, GiB)])
    assert path.stat().st_size < 2**21
    _bounded(lambda: ar.load(path), match=r"bomb.npz holds an unknown member 'extra.npy'")
    # the same bomb under a member name the model has: refused from the zip directory's size alone
    renamed = {name: data for name, data in members.items() if name != "weight_ih_l0.npy"}
    _zip(path, _stored(renamed) + [("weight_ih_l0.npy", 8, bomb, crc, GiB)])
    _bounded(lambda: ar.load(path), match=r"member 'weight_ih_l0.npy' declares 1073741824 bytes; .* at most 4384")


def test_a_bomb_behind_a_truthful_directory_is_never_inflated_past_the_declared_size(
    tmp_path, saved, gigabyte_of_zeros
):
    # the directory and .npy header say 272 bytes; the deflate stream goes on for 1 GiB: only 272 are inflated
    model, members = saved
    bomb, _ = gigabyte_of_zeros
    data = members["weight_ih_l0.npy"]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH) + bomb
    others = {name: value for name, value in members.items() if name != "weight_ih_l0.npy"}
    path = tmp_path / "tail.npz"
    _zip(path, _stored(others) + [("weight_ih_l0.npy", 8, payload, zlib.crc32(data), len(data))])
    tracemalloc.start()
    start = time.perf_counter()
    loaded = ar.load(path, backend="numpy")
    elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < SECONDS and peak < PEAK_BYTES
    np.testing.assert_array_equal(loaded.state_dict()["weight_ih_l0"], model.state_dict()["weight_ih_l0"])


def test_a_directory_claiming_more_than_deflate_can_expand_is_refused(tmp_path, saved):
    _, members = saved
    header = _header(members)
    header["config"].update(input_size=1000, hidden_size=1000)
    big = {"__arrayrnn__.npy": _with_header(members, header)["__arrayrnn__.npy"]}
    entries = _stored(big)
    for name, shape in [("weight_ih_l0.npy", (3000, 1000)), ("weight_hh_l0.npy", (3000, 1000))]:
        data = _npy(np.zeros(shape, "float32"))  # 12 MB of zeros: 12 KB deflated
        compressed = _deflate(data)
        entries.append((name, 8, compressed, zlib.crc32(data), 2 * len(data)))  # claims 24 MB
    path = tmp_path / "ratio.npz"
    _zip(path, entries)
    _bounded(lambda: ar.load(path), match=r"member 'weight_ih_l0.npy' claims to inflate .* more than deflate can")


@pytest.mark.parametrize(
    "case, change, match",
    [
        ("a JSON list", lambda h: [1, 2], r"its header must be a JSON object, got an array"),
        ("no config", lambda h: {k: v for k, v in h.items() if k != "config"}, r"its header has no 'config' field"),
        (
            "no batch_first",
            lambda h: {**h, "config": {k: v for k, v in h["config"].items() if k != "batch_first"}},
            r"config has no 'batch_first' field; a GRU needs .*batch_first",
        ),
        ("a string config", lambda h: {**h, "config": "abc"}, r"header field 'config' must be an object, got a string"),
        ("a list class", lambda h: {**h, "class": ["GRU"]}, r"header field 'class' must be a string, got an array"),
        ("an unknown class", lambda h: {**h, "class": "Transformer"}, r"unknown model class 'Transformer'"),
        ("another format", lambda h: {**h, "format": 2}, r"has model file format 2; this arrayrnn reads format 1"),
        ("a float format", lambda h: {**h, "format": 1.0}, r"header field 'format' must be an integer, got the number"),
        ("an unknown field", lambda h: {**h, "pickle": "x"}, r"its header has unknown field\(s\) 'pickle'"),
        (
            "an unknown config field",
            lambda h: {**h, "config": {**h["config"], "weight_decay": 0.5}},
            r"config has unknown field\(s\) 'weight_decay'; a GRU has input_size",
        ),
        (
            "a dropout rate of 1",  # the dropout family's rates are in [0, 1)
            lambda h: {**h, "config": {**h["config"], "dropout": 1.0}},
            r"config field 'dropout' must be a number in \[0, 1\)",
        ),
        (
            "a string size",
            lambda h: {**h, "config": {**h["config"], "hidden_size": "4"}},
            r"config field 'hidden_size' must be a positive integer, got '4'",
        ),
        (
            "a bool size",
            lambda h: {**h, "config": {**h["config"], "input_size": True}},
            r"config field 'input_size' must be a positive integer, got True",
        ),
        (
            "10**12 layers",
            lambda h: {**h, "config": {**h["config"], "num_layers": 10**12}},
            r"config field 'num_layers' is 1000000000000, above the limit of 1024",
        ),
        (
            "a number flag",
            lambda h: {**h, "config": {**h["config"], "bidirectional": 1}},
            r"config field 'bidirectional' must be true or false, got the number 1",
        ),
        ("100000-deep JSON", lambda h: "[" * 100_000 + "]" * 100_000, r"__arrayrnn__.npy' declares 800128 bytes"),
        ("30000-deep JSON", lambda h: "[" * 30_000 + "]" * 30_000, r"its header nests deeper than 32 levels"),
        ("a 65537-character header", lambda h: " " * 65_537, r"its header is longer than 65536 characters"),
        ("not JSON", lambda h: "{'format': 1}", r"its header is not valid JSON"),
    ],
)
def test_malformed_headers_are_refused_by_field(tmp_path, saved, case, change, match):
    # was: AttributeError, KeyError('config'), KeyError('batch_first'), ValueError (dict update), TypeError
    # (unhashable), RecursionError, ...
    _, members = saved
    path = tmp_path / "header.npz"
    _zip(path, _stored(_with_header(members, change(_header(members)))))
    error = _bounded(lambda: ar.load(path), match=match)
    assert str(path) in str(error)


def test_an_lstm_header_with_an_invalid_clip_or_proj_size(tmp_path):
    buffer = io.BytesIO()
    ar.save(buffer, ar.LSTM(3, 4, proj_size=2, clip=1.0, seed=0))
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = _header(members)
    path = tmp_path / "lstm.npz"
    for field, value, match in [
        ("clip", float("nan"), r"'clip' must be null or a positive finite number, got nan"),
        ("clip", -1, r"'clip' must be null or a positive finite number, got -1"),
        ("proj_size", 4, r"'proj_size' must be an integer in \[0, hidden_size\), got 4"),
    ]:
        _zip(path, _stored(_with_header(members, {**header, "config": {**header["config"], field: value}})))
        _bounded(lambda: ar.load(path), match=match)


def test_a_plain_npy_or_a_file_that_is_no_zip_is_named(tmp_path):
    # was: TypeError: 'numpy.ndarray' object does not support the context manager protocol
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(3))
    error = _bounded(lambda: ar.load(path), match=r"is a single .npy array, not an arrayrnn model file")
    assert str(path) in str(error) and "expected a .npz (zip) archive" in str(error)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive at all" * 10)
    _bounded(lambda: ar.load(junk), match=r"junk.npz is not an arrayrnn model file: expected a .npz \(zip\) archive")
    _bounded(lambda: ar.load(io.BytesIO(b"PK\x03\x04 truncated")), match=r"<BytesIO> is not an arrayrnn model file")
    _bounded(lambda: ar.load(12), error=TypeError, match=r"path must be a str, os.PathLike or a readable binary file")


def test_big_endian_arrays_load_in_native_byte_order(tmp_path, saved):
    # was: loaded as >f4, then every native float32 input was refused
    model, members = saved
    swapped = {
        name: data if name.startswith("__") else _npy(np.load(io.BytesIO(data)).astype(">f4"))
        for name, data in members.items()
    }
    assert np.load(io.BytesIO(swapped["weight_ih_l0.npy"])).dtype.str == ">f4"
    path = tmp_path / "big_endian.npz"
    _zip(path, _stored(swapped))
    loaded = ar.load(path, backend="numpy")
    assert loaded.dtype == np.dtype("float32") and all(a.dtype.isnative for a in loaded.state_dict().values())
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x, impl="generic")[0], model(x, impl="generic")[0])


def test_members_are_checked_against_the_header_from_their_npy_headers(tmp_path, saved):
    _, members = saved
    path = tmp_path / "members.npz"

    def write(changed):
        _zip(path, _stored({**members, **changed}))

    # a .npy header declaring a huge array in a tiny member: refused from the header, nothing allocated
    write({"weight_ih_l0.npy": _npy_header(shape=(10**9, 10**9)) + b"\0" * 144})
    _bounded(
        lambda: ar.load(path), match=r"'weight_ih_l0.npy' has shape \(1000000000, 1000000000\); .* needs \(12, 3\)"
    )
    write({"weight_ih_l0.npy": _npy(np.zeros((12, 3), "int32"))})
    _bounded(lambda: ar.load(path), match=r"'weight_ih_l0.npy' has dtype '<i4'; expected float16, float32 or float64")
    write({"weight_ih_l0.npy": _npy(np.zeros((12, 3), "float64"))})
    _bounded(lambda: ar.load(path), match=r"has dtype float(32|64) but .* has float(32|64); all arrays share one")
    write({"weight_ih_l0.npy": _npy(np.zeros((12, 4), "float32"))})
    _bounded(lambda: ar.load(path), match=r"'weight_ih_l0.npy' has shape \(12, 4\); .* needs \(12, 3\)")
    write({"weight_ih_l0.npy": _npy_header(descr="|O") + b"\0" * 288})  # object arrays would need pickle
    _bounded(lambda: ar.load(path), match=r"'weight_ih_l0.npy' has dtype '\|O'; expected float16, float32 or float64")
    write({"weight_ih_l0.npy": _npy_header(shape="((((" * 50) + b"\0" * 144})
    _bounded(lambda: ar.load(path), match=r"'weight_ih_l0.npy' has an invalid .npy header")
    write({"weight_ih_l0.npy": members["weight_ih_l0.npy"] + b"\0" * 8})
    _bounded(lambda: ar.load(path), match=r"'weight_ih_l0.npy' is 280 bytes in the zip directory but .* declares 272")
    write({"weight_ih_l0_reverse.npy": members["weight_ih_l0.npy"]})
    _bounded(lambda: ar.load(path), match=r"unknown member 'weight_ih_l0_reverse.npy': a 1-layer GRU has only")
    write({"weight_ih_l00.npy": members["weight_ih_l0.npy"]})
    _bounded(lambda: ar.load(path), match=r"unknown member 'weight_ih_l00.npy'")
    _zip(path, _stored({name: data for name, data in members.items() if name != "bias_hh_l0.npy"}))
    _bounded(lambda: ar.load(path), match=r"has no member 'bias_hh_l0.npy', which a 1-layer GRU needs")
    _zip(path, _stored(members) + _stored({"bias_hh_l0.npy": members["bias_hh_l0.npy"]}))
    _bounded(lambda: ar.load(path), match=r"holds member 'bias_hh_l0.npy' twice")
    _zip(path, _stored({k: v for k, v in members.items() if k != "__arrayrnn__.npy"}))
    _bounded(lambda: ar.load(path), match=r"not an arrayrnn model file \(no __arrayrnn__ entry\)")


def test_odd_zip_entries_are_refused(tmp_path, saved):
    _, members = saved
    path = tmp_path / "odd.npz"
    data = members["weight_hh_l0.npy"]
    rest = _stored({k: v for k, v in members.items() if k != "weight_hh_l0.npy"})
    _zip(path, rest + [("weight_hh_l0.npy", 12, data, zlib.crc32(data), len(data))])  # bzip2
    _bounded(lambda: ar.load(path), match=r"'weight_hh_l0.npy' uses zip compression method 12")
    _zip(path, rest + [("weight_hh_l0.npy", 0, data, zlib.crc32(data) ^ 1, len(data))])  # a bad CRC
    _bounded(lambda: ar.load(path), match=r"'weight_hh_l0.npy' is corrupt")
    _zip(path, rest + [("weight_hh_l0.npy", 0, data[:100], zlib.crc32(data), len(data))])
    _bounded(lambda: ar.load(path), match=r"'weight_hh_l0.npy' is stored uncompressed but its sizes differ")


def test_files_ar_save_and_numpy_write_still_load(tmp_path, saved):
    model, members = saved
    arrays = {name[:-4]: np.load(io.BytesIO(data)) for name, data in members.items()}
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **arrays)  # deflated members
    np.testing.assert_array_equal(ar.load(compressed).state_dict()["weight_hh_l0"], arrays["weight_hh_l0"])
    fortran = {**members, "weight_ih_l0.npy": _npy(np.asfortranarray(arrays["weight_ih_l0"]))}
    path = tmp_path / "fortran.npz"
    _zip(path, _stored(fortran))
    np.testing.assert_array_equal(ar.load(path).state_dict()["weight_ih_l0"], arrays["weight_ih_l0"])
    buffer = io.BytesIO()
    ar.save(buffer, ar.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, peepholes=True, seed=1))
    buffer.seek(0)
    assert ar.load(buffer).config()["peepholes"] is True


# --------------------------------------------------------------------------------------------
# from_state_dict


def test_from_state_dict_never_counts_up_to_a_huge_layer_number(saved):
    # was: a set over every layer index up to the largest key (10 s, 1.2 GB, MemoryError)
    model, _ = saved
    state_dict = model.state_dict()
    hostile = {**state_dict, "weight_ih_l99999999999": state_dict["weight_ih_l0"]}
    _bounded(
        lambda: ar.GRU.from_state_dict(hostile),
        match=r"key 'weight_ih_l99999999999' names layer 99999999999 but the state dict has only 5 entries",
    )
    digits = {**state_dict, "weight_ih_l" + "9" * 100_000: state_dict["weight_ih_l0"]}
    _bounded(lambda: ar.GRU.from_state_dict(digits), match=r"names layer 99999999999999999999\.\.\. but")
    gap = {**state_dict, **{f"{k[:-1]}2": v for k, v in state_dict.items()}}
    _bounded(lambda: ar.GRU.from_state_dict(gap), match=r"no weights for layer 1 forward .*see key '\w+_l2'")
    second = {f"{k[:-1]}1": v for k, v in state_dict.items()}
    reverse = {**state_dict, **second, **{f"{k[:-1]}1_reverse": v for k, v in state_dict.items()}}
    _bounded(lambda: ar.GRU.from_state_dict(reverse), match=r"unexpected weights for layer 1 reverse .*_l1_reverse'")
    _bounded(
        lambda: ar.GRU.from_state_dict({**state_dict, "weight_ih_l01": 0}),
        match=r"'weight_ih_l01' writes its layer number with a leading zero",
    )
    _bounded(lambda: ar.GRU.from_state_dict({**state_dict, "weight_ih_l\u0663": 0}), match=r"is not a GRU weight")
    _bounded(lambda: ar.GRU.from_state_dict({**state_dict, "weight_ih_l0\n": 0}), match=r"is not a GRU weight")
    assert ar.GRU.from_state_dict(state_dict).config() == model.config()


# --------------------------------------------------------------------------------------------
# from_onnx_model: external data from the model's folder only


@pytest.fixture
def onnx_folder(tmp_path):
    """A folder holding ``model.onnx`` (a GRU), its weights in ``weights.bin`` beside it: ``(folder, W, R, B)``."""
    onnx = need("onnx")
    from onnx.external_data_helper import convert_model_to_external_data

    from tests.onnx_oracle import model_bytes

    W, R, B = ar.convert.to_onnx("gru", ar.init_gru(3, 4, seed=0))
    model = onnx.load_from_string(model_bytes("GRU", {"W": W, "R": R, "B": B}, (5, 2, 3), hidden_size=4))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save_model(model, str(folder / "model.onnx"))
    assert (folder / "weights.bin").exists()
    return folder, W, R, B


def _rewrite_locations(folder, **external):
    """Rewrite ``model.onnx``'s external data entries (``location=``, ``offset=``, ``length=``), nothing else."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key in external:
                entry.value = str(external[entry.key])
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def test_a_path_reads_external_data_from_its_own_folder(onnx_folder, tmp_path, monkeypatch):
    folder, W, R, B = onnx_folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = ar.convert.from_onnx_model(folder / "model.onnx", backend="numpy")
    expected = ar.convert.from_onnx("gru", W, R, B)[0]
    np.testing.assert_array_equal(model.params[0][0].weight_hh, expected.weight_hh)


def test_a_proto_without_a_folder_never_reads_the_current_directory(onnx_folder, monkeypatch):
    # was: resolved against the current directory and read weights.bin there
    onnx = need("onnx")
    folder, W, R, B = onnx_folder
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    monkeypatch.chdir(folder)  # weights.bin is right here: it must still not be read
    _bounded(lambda: ar.convert.from_onnx_model(proto), match=r"tensor '[WRB]' keeps its data in an external file")
    model = ar.convert.from_onnx_model(proto, base_dir=folder, backend="numpy")
    np.testing.assert_array_equal(model.params[0][0].weight_ih, ar.convert.from_onnx("gru", W, R, B)[0].weight_ih)
    assert proto.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL  # the caller's proto is untouched
    _bounded(lambda: ar.convert.from_onnx_model(proto, base_dir=folder / "nowhere"), match=r"is not a folder")
    _bounded(lambda: ar.convert.from_onnx_model(proto, base_dir=3), error=TypeError, match=r"base_dir must be")


def test_a_constant_node_with_external_data_needs_a_folder_too(onnx_folder, monkeypatch):
    onnx = need("onnx")
    from onnx import helper, numpy_helper

    folder, *_ = onnx_folder
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    value = numpy_helper.from_array(np.zeros(4, "float32"), "c")
    onnx.external_data_helper.set_external_data(value, "weights.bin", offset=0, length=16)
    value.data_location = onnx.TensorProto.EXTERNAL
    value.ClearField("raw_data")
    proto.graph.node.append(helper.make_node("Constant", [], ["unused"], value=value))
    monkeypatch.chdir(folder)
    _bounded(lambda: ar.convert.from_onnx_model(proto), match=r"tensor 'c' keeps its data in an external file")


@pytest.mark.parametrize(
    "location, match",
    [
        ("../secret.bin", r"location '../secret.bin' escapes the model's folder"),
        ("sub/../../secret.bin", r"escapes the model's folder"),
        ("ABSOLUTE", r"is not a relative path inside"),
        ("link.bin", r"location 'link.bin' resolves \(through a symlink\) to .*secret.bin', outside"),
        ("sub", r"location 'sub' is not a regular file"),
        ("missing.bin", r"external data file 'missing.bin' does not exist in"),
    ],
)
def test_external_locations_outside_the_folder_are_refused_by_name(onnx_folder, tmp_path, location, match):
    folder, *_ = onnx_folder
    secret = tmp_path / "secret.bin"
    secret.write_bytes((folder / "weights.bin").read_bytes())
    (folder / "sub").mkdir()
    os.symlink(secret, folder / "link.bin")
    if location == "ABSOLUTE":
        location = str(secret)
    _rewrite_locations(folder, location=location)
    error = FileNotFoundError if location == "missing.bin" else ValueError
    _bounded(lambda: ar.convert.from_onnx_model(str(folder / "model.onnx")), error=error, match=match)


def test_external_offsets_and_lengths_are_bounded_by_the_file(onnx_folder):
    folder, *_ = onnx_folder
    size = (folder / "weights.bin").stat().st_size
    _rewrite_locations(folder, length=10**12)
    _bounded(lambda: ar.convert.from_onnx_model(folder / "model.onnx"), match=r"external data length 1000000000000")
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "length":
                entry.value = str(4 * int(np.prod(tensor.dims)))
            if entry.key == "offset":
                entry.value = str(size)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    _bounded(lambda: ar.convert.from_onnx_model(folder / "model.onnx"), match=rf"which has only {size}")
