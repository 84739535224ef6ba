"""Save and load models as ``.npz`` files: torch-named arrays plus the configuration, no pickle."""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import zipfile
import zlib
from typing import Any, Optional, Union

import numpy as np

from ._validate import shape_text
from .backend import to_numpy

__all__ = ["load", "save"]

_CONFIG_KEY = "__arrayrnn__"
_FORMAT = 1

PathLike = Union[str, "os.PathLike[str]"]


def save(path: Any, model: Any) -> None:
    """Write ``model`` (an ``ar.RNN``, ``ar.LSTM`` or ``ar.GRU``) to ``path`` as a ``.npz`` file, without pickle.

    The file holds the model's :meth:`~arrayrnn.LSTM.state_dict` (torch's names, copied to NumPy arrays on the
    host, dtype kept) and one extra entry, ``__arrayrnn__``: a string array holding a JSON object with the model
    class, its full configuration and the format version. :func:`load` reads it back.

    Parameters
    ----------
    path : str, os.PathLike or file object
        Where to write. Like ``numpy.savez``, a string path without the ``.npz`` suffix gets it appended.
    model : RNN, LSTM or GRU
        The model to save (any backend).

    Returns
    -------
    None

    Raises
    ------
    TypeError
        ``model`` is not an arrayrnn model.
    ValueError
        ``model.default_state`` or ``model.default_lengths`` is set (from an ONNX import): the file format cannot
        hold it, and a model saved without it would run differently.
    OSError
        The file cannot be written.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import arrayrnn as ar
    >>> model = ar.LSTM(3, 4, num_layers=2, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> ar.save(path, model)
    >>> loaded = ar.load(path)
    >>> type(loaded).__name__, loaded.num_layers, loaded.hidden_size
    ('LSTM', 2, 4)
    """
    from ._version import __version__
    from .models import MODEL_CLASSES

    if getattr(model, "kind", None) not in MODEL_CLASSES or not isinstance(model, MODEL_CLASSES[model.kind]):
        raise TypeError(f"model must be an arrayrnn.RNN, LSTM or GRU, got {type(model).__name__}")
    for name in ("default_state", "default_lengths"):
        if getattr(model, name, None) is not None:  # set by from_onnx_model; the file format has no place for it
            raise ValueError(
                f"model.{name} is set (imported from ONNX constants) and ar.save cannot store it: the saved model "
                f"would run differently; set model.{name} = None and pass it at call time, or keep the .onnx file"
            )
    header = {
        "format": _FORMAT,
        "class": type(model).__name__,
        "config": model.config(),
        "arrayrnn_version": __version__,
    }
    arrays = {name: to_numpy(value) for name, value in model.state_dict().items()}
    np.savez(path, **{_CONFIG_KEY: np.array(json.dumps(header))}, **arrays)


#: The JSON header (``__arrayrnn__``) may hold at most this many characters (``ar.save`` writes about 300) ...
MAX_HEADER_CHARS = 64 * 1024
#: ... and nest its arrays and objects at most this deep (``ar.save`` writes 2), both checked before it is parsed.
MAX_HEADER_DEPTH = 32
#: The most bytes of one member's ``.npy`` header (NumPy writes 128 for these arrays).
_MAX_NPY_HEADER = 4096
#: Deflate expands at most 1032-fold: a member that claims more (plus a little slack) cannot be genuine.
_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError)

_HEADER_FIELDS = {"format": "an integer", "class": "a string", "config": "an object", "arrayrnn_version": "a string"}
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
_CONFIG_FIELDS = {
    "common": {
        "input_size": "size",
        "hidden_size": "size",
        "num_layers": "size",
        "bidirectional": "bool",
        "bias": "bool",
        "batch_first": "bool",
        "reverse": "bool",
        "layer_norm": "bool",
        "dropout": "rate",
        "recurrent_dropout": "rate",
        "zoneout": "rate",
    },
    "RNN": {"nonlinearity": "nonlinearity"},
    "LSTM": {
        "proj_size": "proj_size",
        "peepholes": "bool",
        "coupled": "bool",
        "clip": "clip",
        "gate_recurrence": "bool",
        "input_gate": "bool",
        "forget_gate": "bool",
        "output_gate": "bool",
        "input_activation": "activation",
        "output_activation": "activation",
    },  # fmt: skip
    "GRU": {"linear_before_reset": "bool"},
}
#: fields added after the first release, with the value a file written before them means
_LATER_FIELDS: dict[str, Any] = {
    "reverse": False, "gate_recurrence": False, "input_gate": True, "forget_gate": True, "output_gate": True,
    "input_activation": "tanh", "output_activation": "tanh", "layer_norm": False,
    "dropout": 0.0, "recurrent_dropout": 0.0, "zoneout": 0.0,
}  # fmt: skip
_MEMBER = re.compile(
    r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|peephole_i|peephole_f|peephole_o|weight_gg"
    r"|ln_ih_weight|ln_ih_bias|ln_hh_weight|ln_hh_bias|ln_c_weight|ln_c_bias)"
    r"_l(0|[1-9][0-9]{0,5})(_reverse)?"
)


def load(path: Any, *, backend: Optional[str] = None, device: Any = None) -> Any:
    """Read a model written by :func:`save`, onto ``backend`` and ``device``; bounded, and never runs code.

    Nothing is unpickled and nothing is trusted before it is checked, in this order: the JSON header (at most
    :data:`MAX_HEADER_CHARS` characters nested at most :data:`MAX_HEADER_DEPTH` deep, before it is parsed; then
    its fields, each of its type, known keys only, sizes within the limits of the model constructors); then, from
    the zip directory and each member's ``.npy`` header alone, every member's name, shape, dtype and size against
    what the configuration implies (unknown or missing members are refused by name); only then is any array data
    decompressed, never more bytes than were declared. Work and memory are therefore proportional to the model
    the header declares, and a few-KB file fails in milliseconds whatever it claims. Arrays are returned in
    native byte order. The model is rebuilt with :meth:`~arrayrnn.LSTM.from_state_dict` and checked against the
    stored configuration. See ``docs/security.md``.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        The file; a string path without ``.npz`` also finds ``path + ".npz"`` (as :func:`save` names it). A file
        object must be readable and seekable.
    backend : str, optional
        Where to put the arrays; ``None`` (default): the current backend (:func:`get_backend`).
    device : optional
        The device on that backend; ``None``: the backend's default.

    Returns
    -------
    RNN, LSTM or GRU
        The model, of the class and configuration that was saved.

    Raises
    ------
    ValueError
        Anything wrong with the file's content; the message names the file and the field or member, and says what
        was expected: not a zip archive (a plain ``.npy`` array is named as such), no ``__arrayrnn__`` header, a
        header too long, too deep, not JSON or not a JSON object, another format version, an unknown model class,
        a missing, unknown or mistyped header or configuration field, sizes above the limits, an unknown,
        duplicate, missing, encrypted, corrupt or oversized member, a member whose shape or dtype does not match
        the configuration (dtypes must be float16, float32 or float64 and all alike), or arrays that do not match
        the stored configuration.
    TypeError
        ``path`` is neither a path nor a readable, seekable binary file object.
    OSError
        The file cannot be read (``FileNotFoundError`` when it does not exist).
    BackendUnavailableError
        ``backend`` is unknown or not usable here.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> import arrayrnn as ar
    >>> model = ar.GRU(3, 4, bidirectional=True, batch_first=True, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "gru")
    >>> ar.save(path, model)  # written as gru.npz
    >>> loaded = ar.load(path, backend="numpy")
    >>> loaded.bidirectional, loaded.batch_first, loaded.dtype
    (True, True, dtype('float32'))
    >>> bool(np.array_equal(loaded.state_dict()["weight_hh_l0_reverse"], model.state_dict()["weight_hh_l0_reverse"]))
    True
    """
    if isinstance(path, (str, os.PathLike)):
        if not os.path.exists(path) and os.path.exists(f"{os.fspath(path)}.npz"):
            path = f"{os.fspath(path)}.npz"  # numpy.savez appended the suffix
        label = os.fsdecode(os.fspath(path))
        with open(path, "rb") as file:
            cls, config, arrays = _read_model_file(file, label)
    elif all(callable(getattr(path, name, None)) for name in ("read", "seek", "tell")):
        name = getattr(path, "name", None)
        label = name if isinstance(name, str) else f"<{type(path).__name__}>"
        cls, config, arrays = _read_model_file(path, label)
    else:
        raise TypeError(f"path must be a str, os.PathLike or a readable binary file object, got {type(path).__name__}")
    options = {name: config[name] for name in cls._option_defaults}
    model = cls.from_state_dict(
        arrays, backend=backend, device=device, batch_first=config["batch_first"], reverse=config["reverse"], **options
    )
    if model.config() != config:
        raise ValueError(f"{label} is inconsistent: its arrays give {model.config()} but its header says {config}")
    return model


# --------------------------------------------------------------------------------------------
# reading, bounded: header first, then the zip directory and .npy headers, then (only then) the data


def _read_model_file(file: Any, label: str) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """``(model class, configuration, arrays by name)`` from an open binary file, checked as :func:`load` says."""
    try:
        archive = zipfile.ZipFile(file)
    except (*_CORRUPT, ValueError, OverflowError) as error:
        file.seek(0)
        start = file.read(6)
        if start == b"\x93NUMPY":
            raise ValueError(
                f"{label} is a single .npy array, not an arrayrnn model file; expected a .npz (zip) archive "
                "written by ar.save"
            ) from None
        raise ValueError(
            f"{label} is not an arrayrnn model file: expected a .npz (zip) archive written by ar.save ({error})"
        ) from None
    with archive:
        infos = archive.infolist()
        seen: set[str] = set()
        for info in infos:
            if info.filename in seen:
                raise ValueError(
                    f"{label} holds member {info.filename!r} twice; an arrayrnn model file names each once"
                )
            seen.add(info.filename)
        header_name = f"{_CONFIG_KEY}.npy"
        header_info = next((info for info in infos if info.filename == header_name), None)
        if header_info is None:
            raise ValueError(f"{label} is not an arrayrnn model file (no {_CONFIG_KEY} entry)")
        cls, config = _read_header(archive, header_info, label)
        shapes = _expected_shapes(cls.__name__, config)
        members = {}
        for info in infos:
            if info is header_info:
                continue
            shape = shapes(info.filename)
            if shape is None:
                raise ValueError(
                    f"{label} holds an unknown member {info.filename!r}: a {_describe(cls.__name__, config)} has "
                    f"only {_example_names(cls.__name__, config)}"
                )
            _check_entry(info, label, math.prod(shape) * 8 + _MAX_NPY_HEADER)
            members[info.filename] = (info, shape)
        expected_count = _member_count(cls.__name__, config)
        if len(members) != expected_count:
            missing = next(name for name in _all_member_names(cls.__name__, config) if name not in members)
            raise ValueError(f"{label} has no member {missing!r}, which a {_describe(cls.__name__, config)} needs")
        # pass 1: every member's .npy header (a few hundred bytes each) against the configuration
        layouts = {}
        reference = None
        for filename, (info, shape) in members.items():
            with _MemberStream(archive, info, label) as stream:
                declared, fortran, dtype, header_bytes = _read_npy_header(stream, label, filename)
            what = f"{label}: member {filename!r}"
            if tuple(declared) != shape:
                raise ValueError(
                    f"{what} has shape {shape_text(declared)}; the header's configuration needs {shape_text(shape)}"
                )
            if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
                raise ValueError(f"{what} has dtype {dtype.str!r}; expected float16, float32 or float64")
            native = dtype.newbyteorder("=")
            if reference is None:
                reference = (filename, native)
            elif native != reference[1]:
                raise ValueError(
                    f"{what} has dtype {native.name} but {reference[0]!r} has {reference[1].name}; all arrays share one"
                )
            data_bytes = math.prod(shape) * dtype.itemsize
            if info.file_size != header_bytes + data_bytes:
                raise ValueError(
                    f"{what} is {info.file_size} bytes in the zip directory but its .npy header declares "
                    f"{header_bytes + data_bytes}"
                )
            layouts[filename] = (info, shape, fortran, dtype, header_bytes)
        from .models import MAX_PARAMETER_BYTES

        total = sum(math.prod(shape) * dtype.itemsize for _, shape, _, dtype, _ in layouts.values())
        if total > MAX_PARAMETER_BYTES:
            raise ValueError(
                f"{label} declares {total} bytes of parameters, above the limit of {MAX_PARAMETER_BYTES} bytes "
                "(arrayrnn.models.MAX_PARAMETER_BYTES)"
            )
        # pass 2: the data, exactly the declared bytes of each member
        arrays = {}
        for filename, (info, shape, fortran, dtype, header_bytes) in layouts.items():
            with _MemberStream(archive, info, label) as stream:
                arrays[filename[: -len(".npy")]] = _read_npy_data(
                    stream, label, filename, shape, fortran, dtype, header_bytes
                )
    return cls, config, arrays


class _MemberStream:
    """``with _MemberStream(archive, info, label) as stream``: a member's stream; zip errors become ValueError."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> None:
        self.archive, self.info, self.label = archive, info, label
        self.stream: Any = None

    def __enter__(self) -> Any:
        try:
            self.stream = self.archive.open(self.info)
        except (*_CORRUPT, RuntimeError) as error:
            raise ValueError(f"{self.label}: member {self.info.filename!r} cannot be read: {error}") from None
        return self.stream

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        self.stream.close()
        if error is not None and isinstance(error, _CORRUPT):
            raise ValueError(f"{self.label}: member {self.info.filename!r} is corrupt: {error}") from None
        return False


def _check_entry(info: zipfile.ZipInfo, label: str, most: int, why: str = "the header's configuration allows") -> None:
    """Refuse, from the zip directory alone, a member that is encrypted, oddly compressed or too big to be genuine."""
    what = f"{label}: member {info.filename!r}"
    if info.flag_bits & 0x1:
        raise ValueError(f"{what} is encrypted; ar.save never encrypts")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{what} uses zip compression method {info.compress_type}; expected stored or deflated")
    if info.file_size > most:
        raise ValueError(f"{what} declares {info.file_size} bytes; {why} at most {most}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(
            f"{what} is stored uncompressed but its sizes differ ({info.compress_size} != {info.file_size})"
        )
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _DEFLATE_RATIO * info.compress_size + 1024:
        raise ValueError(
            f"{what} claims to inflate {info.compress_size} bytes to {info.file_size}, more than deflate can"
        )


def _read_exact(stream: Any, count: int, label: str, filename: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ValueError(f"{label}: member {filename!r} is truncated")
    return data


def _read_npy_header(stream: Any, label: str, filename: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header bytes)`` of a ``.npy`` stream, its header length checked first."""
    prefix = _read_exact(stream, 10, label, filename)
    if prefix[:6] != b"\x93NUMPY":
        raise ValueError(f"{label}: member {filename!r} is not a .npy array")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{label}: member {filename!r} has .npy format {version}; expected (1, 0) or (2, 0)")
    if version == (2, 0):
        prefix += _read_exact(stream, 2, label, filename)
    length = int.from_bytes(prefix[8:], "little")
    if length > _MAX_NPY_HEADER:
        raise ValueError(f"{label}: member {filename!r} has a {length}-byte .npy header; at most {_MAX_NPY_HEADER}")
    buffer = io.BytesIO(prefix + _read_exact(stream, length, label, filename))
    np.lib.format.read_magic(buffer)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(buffer, max_header_size=_MAX_NPY_HEADER)
    except Exception as error:  # NumPy's parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise ValueError(f"{label}: member {filename!r} has an invalid .npy header ({error})") from None
    return tuple(shape), bool(fortran), dtype, len(prefix) + length


def _read_npy_data(
    stream: Any,
    label: str,
    filename: str,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype,
    header_bytes: int,
) -> np.ndarray:
    """The array of a ``.npy`` stream whose header was checked: exactly its declared bytes, in native byte order."""
    _read_exact(stream, header_bytes, label, filename)
    flat = np.empty(math.prod(shape), dtype=dtype)
    view = memoryview(flat).cast("B")
    position = 0
    while position < len(view):
        chunk = stream.read(min(_CHUNK, len(view) - position))
        if not chunk:
            raise ValueError(f"{label}: member {filename!r} is truncated")
        view[position : position + len(chunk)] = chunk
        position += len(chunk)
    if stream.read(1):  # also makes zipfile check the CRC
        raise ValueError(f"{label}: member {filename!r} holds more bytes than its .npy header declares")
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(array, dtype=dtype.newbyteorder("="))


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> tuple[Any, dict[str, Any]]:
    """The model class and its checked configuration, from the ``__arrayrnn__`` member."""
    from .models import MODEL_CLASSES

    _check_entry(
        info, label, 4 * MAX_HEADER_CHARS + _MAX_NPY_HEADER, f"a header of {MAX_HEADER_CHARS} characters takes"
    )
    with _MemberStream(archive, info, label) as stream:
        shape, _, dtype, header_bytes = _read_npy_header(stream, label, info.filename)
        if dtype.kind != "U" or shape != () or dtype.itemsize > 4 * MAX_HEADER_CHARS:
            if dtype.kind == "U" and shape == ():
                raise ValueError(f"{label}: its header is longer than {MAX_HEADER_CHARS} characters")
            raise ValueError(
                f"{label}: its {_CONFIG_KEY} entry must be one string (a 0-d unicode array), got dtype "
                f"{dtype.str!r} and shape {shape_text(shape)}"
            )
        if info.file_size != header_bytes + dtype.itemsize:
            raise ValueError(f"{label}: its {_CONFIG_KEY} entry's size does not match its .npy header")
        data = _read_exact(stream, dtype.itemsize, label, info.filename)
        if stream.read(1):
            raise ValueError(f"{label}: its {_CONFIG_KEY} entry holds more bytes than its .npy header declares")
    try:
        text = data.decode("utf-32-be" if dtype.byteorder == ">" else "utf-32-le").rstrip("\x00")
    except UnicodeDecodeError:
        raise ValueError(f"{label}: its header is not valid unicode") from None
    depth = _json_depth(text)
    if depth > MAX_HEADER_DEPTH:
        raise ValueError(f"{label}: its header nests deeper than {MAX_HEADER_DEPTH} levels")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{label}: its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{label}: its header must be a JSON object, got {_json_type(header)}")
    unknown = sorted(set(header) - set(_HEADER_FIELDS))
    if unknown:
        raise ValueError(
            f"{label}: its header has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(_HEADER_FIELDS)}"
        )
    for key in ("format", "class", "config"):
        if key not in header:
            raise ValueError(f"{label}: its header has no {key!r} field")
    for key, value in header.items():
        expected = {"an integer": int, "a string": str, "an object": dict}[_HEADER_FIELDS[key]]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ValueError(f"{label}: header field {key!r} must be {_HEADER_FIELDS[key]}, got {_json_type(value)}")
    if header["format"] != _FORMAT:
        raise ValueError(f"{label} has model file format {header['format']!r}; this arrayrnn reads format {_FORMAT}")
    classes = {cls.__name__: cls for cls in MODEL_CLASSES.values()}
    if header["class"] not in classes:
        raise ValueError(
            f"{label} holds an unknown model class {header['class'][:100]!r}; expected one of {', '.join(classes)}"
        )
    name = header["class"]
    return classes[name], _check_config(header["config"], name, label)


def _check_config(config: dict[str, Any], name: str, label: str) -> dict[str, Any]:
    """The header's configuration, every field of its type and within the limits of the model constructors."""
    from .models import MAX_LAYERS

    fields = {**_CONFIG_FIELDS["common"], **_CONFIG_FIELDS[name]}
    config = {**{key: value for key, value in _LATER_FIELDS.items() if key in fields}, **config}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        shown = ", ".join(repr(key[:100]) for key in unknown[:5])
        raise ValueError(f"{label}: config has unknown field(s) {shown}; a {name} has {', '.join(fields)}")
    for key, kind in fields.items():
        if key not in config:
            raise ValueError(f"{label}: config has no {key!r} field; a {name} needs {', '.join(fields)}")
        value = config[key]
        where = f"{label}: config field {key!r}"
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {_json_type(value)}")
        if kind == "size" and not (is_int and value >= 1):
            raise ValueError(f"{where} must be a positive integer, got {_short(value)}")
        if key == "num_layers" and value > MAX_LAYERS:
            raise ValueError(f"{where} is {value}, above the limit of {MAX_LAYERS} (arrayrnn.models.MAX_LAYERS)")
        if kind == "proj_size" and not (is_int and 0 <= value < config["hidden_size"]):
            raise ValueError(f"{where} must be an integer in [0, hidden_size), got {_short(value)}")
        if kind == "nonlinearity" and value not in ("tanh", "relu"):
            raise ValueError(f"{where} must be 'tanh' or 'relu', got {_short(value)}")
        if kind == "activation" and value not in ("tanh", "identity"):
            raise ValueError(f"{where} must be 'tanh' or 'identity', got {_short(value)}")
        if kind == "rate" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
            raise ValueError(f"{where} must be a number in [0, 1), got {_short(value)}")
        if kind == "clip" and value is not None:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise ValueError(f"{where} must be null or a positive finite number, got {_short(value)}")
    return dict(config)


def _json_depth(text: str) -> int:
    """How deep ``text``'s JSON arrays and objects nest (brackets inside strings not counted); stops past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_HEADER_DEPTH:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {_short(value)}"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- what the configuration implies


def _fields(name: str, config: dict[str, Any]) -> tuple[str, ...]:
    fields = ["weight_ih", "weight_hh"]
    if config["bias"]:
        fields += ["bias_ih", "bias_hh"]
    if config.get("proj_size"):
        fields.append("weight_hr")
    if config.get("peepholes"):
        fields += ["peephole_i", "peephole_f", "peephole_o"]
    if config.get("gate_recurrence"):
        fields.append("weight_gg")
    if config.get("layer_norm"):
        fields += ["ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias"]
        fields += ["ln_c_weight", "ln_c_bias"] if name == "LSTM" else []
    return tuple(fields)


def _expected_shapes(name: str, config: dict[str, Any]) -> Any:
    """``shape(member_filename)``: the shape the configuration implies for that member, ``None`` if it has none."""
    fields = _fields(name, config)
    gates, hidden, layers = _GATES[name], config["hidden_size"], config["num_layers"]
    directions = 2 if config["bidirectional"] else 1
    projection = config.get("proj_size", 0)
    output = projection or hidden

    def shape(filename: str) -> Optional[tuple[int, ...]]:
        match = _MEMBER.fullmatch(filename[: -len(".npy")]) if filename.endswith(".npy") else None
        if match is None:
            return None
        field, layer, reverse = match.group(1), int(match.group(2)), match.group(3) is not None
        if field not in fields or layer >= layers or (reverse and directions == 1):
            return None
        if field == "weight_ih":
            return (gates * hidden, config["input_size"] if layer == 0 else directions * output)
        if field == "weight_hh":
            return (gates * hidden, output)
        if field == "weight_hr":
            return (projection, hidden)
        if field.startswith("ln_"):
            return (hidden,) if field.startswith("ln_c_") else (gates * hidden,)
        if field.startswith("bias"):
            return (gates * hidden,)
        if field == "weight_gg":
            return (3 * hidden, 3 * hidden)
        return (hidden,)  # peepholes

    return shape


def _member_count(name: str, config: dict[str, Any]) -> int:
    return config["num_layers"] * (2 if config["bidirectional"] else 1) * len(_fields(name, config))


def _all_member_names(name: str, config: dict[str, Any]) -> Any:
    for layer in range(config["num_layers"]):
        for suffix in ("", "_reverse") if config["bidirectional"] else ("",):
            for field in _fields(name, config):
                yield f"{field}_l{layer}{suffix}.npy"


def _describe(name: str, config: dict[str, Any]) -> str:
    return f"{config['num_layers']}-layer {'bidirectional ' if config['bidirectional'] else ''}{name}"


def _example_names(name: str, config: dict[str, Any]) -> str:
    fields = _fields(name, config)
    last = config["num_layers"] - 1
    reverse = ", ..._reverse" if config["bidirectional"] else ""
    return f"{', '.join(f + '_l0.npy' for f in fields)}, ... up to _l{last}{reverse} (and {_CONFIG_KEY}.npy)"
