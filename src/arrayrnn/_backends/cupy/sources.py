"""CUDA C++ source of the CuPy fast paths, assembled from ``kernels/*.cuh`` (no CuPy import: testable anywhere).

Conventions: arrays C-contiguous; ``gx`` is ``x_t W_ih^T`` without bias; ``lengths`` int64 ``(B,)``; a padded
step writes ``y = 0`` and keeps the state; arithmetic in ``acc_t``. Kernel families: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Optional

from .grad_sources import GRAD_GRAPH_SPECS, GRAD_RECORDS, GRAD_SPECS

#: a kernel's parameters in call order, ``[(kind, name), ...]`` (the kinds are the keys of ``C_TYPES``)
Params = list[tuple[str, str]]

#: run-time option bits (one ``int options`` argument), mirrored as ``#define``s in the source
OPTIONS = {
    "OPT_BIAS_IH": 1,
    "OPT_BIAS_HH": 2,
    "OPT_LENGTHS": 4,
    "OPT_PEEP_I": 8,
    "OPT_PEEP_F": 16,
    "OPT_PEEP_O": 32,
    "OPT_COUPLED": 64,
    "OPT_CLIP": 128,
    "OPT_RELU": 256,
    "OPT_PROJECT": 512,
    # gradient kernels (grad_sources): an output cotangent dy is given; add the pointwise part
    "OPT_DY": 1024,
    "OPT_PART": 2048,
    # persistent kernels / graph executor: grid barrier with release/acquire atomics instead of full fences
    "OPT_ACQREL_BARRIER": 4096,
}

#: batch rows per warp compiled for the graph kernels
BATCH_TILES = (1, 2, 4, 8)

#: dtypes with a source; the value is the numpy type of ``acc_t`` (for the ``clip`` argument)
ACC_TYPES = {"float16": "float32", "float32": "float32", "float64": "float64"}

COMPILE_OPTIONS = ("--std=c++17",)

# Parameter kinds: "in"/"out" (const scalar_t* / scalar_t*), "lengths" (const long long*),
# "int" (int), "acc" (acc_t). The Python callers pass arguments in exactly this order.
FUSED_SPECS: dict[str, Params] = {
    "lstm_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("out", "h"), ("out", "c"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "project_update": [
        ("in", "source"), ("lengths", "lengths"), ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "width"), ("int", "t"), ("int", "options"),
    ],
    "gru_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_fused_reset": [
        ("in", "gx"), ("in", "gh_rz"), ("in", "bias_ih"), ("in", "bias_hh"), ("in", "h"), ("out", "rh"),
        ("int", "batch"), ("int", "hidden"), ("int", "options"),
    ],
    "gru_fused_finish": [
        ("in", "gx"), ("in", "gh_rz"), ("in", "gh_n"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("lengths", "lengths"), ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "rnn_fused_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("out", "h"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
}  # fmt: skip

#: the graph step kernels, compiled per batch tile (``graph_kernel_name``)
GRAPH_SPECS: dict[str, Params] = {
    "lstm_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "c"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_graph_reset": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "h_prev"), ("out", "rh"),
        ("int", "batch"), ("int", "hidden"), ("int", "options"),
    ],
    "gru_graph_finish": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("in", "rh"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "rnn_graph_step": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "y"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
}  # fmt: skip

# Forward kernels whose _impl also serves a recording kernel of the gradient path (template flag RECORD,
# see GRAD_RECORDS): the forward entry point calls it with RECORD = false, these arguments (the LSTM state c
# as both c_prev and c_out, nullptr for the record buffers it never touches).
_FORWARD_CALLS = {
    "lstm_fused_step": "gx, gh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, c, h, c, y, nullptr, "
    "batch, hidden, t, options, clip",
    "gru_fused_step": "gx, gh, bias_ih, bias_hh, lengths, h, y, nullptr, nullptr, batch, hidden, t, options",
    "gru_fused_finish": "gx, gh_rz, gh_n, bias_ih, bias_hh, lengths, h, y, nullptr, batch, hidden, t, options",
    "lstm_graph_step": "gx, weight_hh, bias_ih, bias_hh, peep_i, peep_f, peep_o, lengths, h_prev, c, h_next, c, y, "
    "nullptr, batch, hidden, t, options, clip",
    "gru_graph_step": "gx, weight_hh, bias_ih, bias_hh, lengths, h_prev, h_next, y, nullptr, nullptr, "
    "batch, hidden, t, options",
    "gru_graph_reset": "gx, weight_hh, bias_ih, bias_hh, h_prev, rh, nullptr, batch, hidden, options",
    "gru_graph_finish": "gx, weight_hh, bias_ih, bias_hh, lengths, h_prev, rh, h_next, y, nullptr, "
    "batch, hidden, t, options",
}

#: C type of each parameter kind
C_TYPES = {
    "in": "const scalar_t* __restrict__",
    "out": "scalar_t* __restrict__",
    "lengths": "const long long* __restrict__",
    # read and written by other blocks within one launch (persistent kernels): no __restrict__
    "state": "scalar_t*",
    "counter": "unsigned int*",
    # the graph executor's launch table (64-bit argument slots) and kernel indices
    "table": "const unsigned long long* __restrict__",
    "kinds": "const int* __restrict__",
    "int": "int",
    "acc": "acc_t",
}


def graph_kernel_name(base: str, batch_tile: int) -> str:
    """The exported name of graph kernel ``base`` compiled for ``batch_tile`` batch rows per warp."""
    return f"{base}_nb{batch_tile}"


def signature(params: Params) -> str:
    """The C parameter list of an entry point with ``params``."""
    return ", ".join(f"{C_TYPES[kind]} {name}" for kind, name in params)


def impl_call(name: str, params: Params, batch_tile: Optional[int] = None, task: str = "") -> str:
    """The body of entry point ``name``: a call of its ``_impl`` (or its forward twin's, for a recording kernel).

    With ``task`` (the executor's wrappers), the step body reads state written by other blocks coherently
    (template flag ``COHERENT``) and works on warp task ``task`` instead of its launch index.
    """
    template_args = [] if batch_tile is None else [str(batch_tile)]
    impl, args = name, ", ".join(name for _, name in params)
    if name in GRAD_RECORDS:
        impl = GRAD_RECORDS[name]
        template_args.append("true")
    elif name in _FORWARD_CALLS:
        args = _FORWARD_CALLS[name]
        template_args.append("false")
    if task:
        template_args.append("true")
        args = f"{args}, {task}"
    template = f"<{', '.join(template_args)}>" if template_args else ""
    return f"{impl}_impl{template}({args});"


# ----------------------------------------------------------------------------------------------
# kernel files and parts


@dataclasses.dataclass(frozen=True)
class KernelFile:
    """A CUDA C++ file shipped as package data: ``path`` inside package ``package``."""

    package: str
    path: str

    def text(self) -> str:
        return _read(self.package, self.path)


@functools.cache
def _read(package: str, path: str) -> str:
    return resources.files(package).joinpath(path).read_text(encoding="utf-8")


def kernel_file(name: str) -> KernelFile:
    """This package's kernel file ``kernels/{name}``."""
    return KernelFile(__package__, f"kernels/{name}")


#: the shipping kernel files; every part starts with its dtype's prelude (``kernels/{dtype}.cuh``) and ``COMMON``
COMMON = kernel_file("common.cuh")
FUSED = kernel_file("fused.cuh")
GRAPH = kernel_file("graph.cuh")
GRAD_FUSED = kernel_file("grad_fused.cuh")
GRAD_GRAPH = kernel_file("grad_graph.cuh")


@dataclasses.dataclass(frozen=True)
class Part:
    """One compiled module per dtype: its kernel files (after the prelude and ``COMMON``), its exported kernels
    (name -> parameters), the text of their entry points, and the ``#define``s its files read (per dtype)."""

    files: tuple[KernelFile, ...]
    kernels: Callable[[], dict[str, Params]]
    entries: Callable[[], str]
    defines: Callable[[str], dict[str, int]]


_RULE = "// ---------------------------------------------------------------------------------------------"
_PARTS: dict[str, Part] = {}


def entry_points(part: str, plain: Mapping[str, Params], per_tile: Mapping[str, Params]) -> str:
    """The entry points of kernels ``plain`` (name -> parameters) and ``per_tile`` (compiled for each of
    ``BATCH_TILES``, exported as ``graph_kernel_name(base, tile)``): each calls its ``_impl`` (:func:`impl_call`).
    ``ARRAYRNN_ENTRY`` (``common.cuh``) declares an extern "C" kernel: names CuPy looks up without mangling."""
    lines = [_RULE, f"// entry points of part {part!r}"]
    for name, params in plain.items():
        lines.append(f"ARRAYRNN_ENTRY {name}({signature(params)}) {{ {impl_call(name, params)} }}")
    for base, params in per_tile.items():
        for tile in BATCH_TILES:
            lines.append(
                f"ARRAYRNN_ENTRY {graph_kernel_name(base, tile)}({signature(params)}) "
                f"{{ {impl_call(base, params, tile)} }}"
            )
    return "\n".join(lines) + "\n"


def register_part(
    name: str,
    files: Sequence[KernelFile],
    plain: Optional[Mapping[str, Params]] = None,
    per_tile: Optional[Mapping[str, Params]] = None,
    *,
    kernels: Optional[Callable[[], dict[str, Params]]] = None,
    entries: Optional[Callable[[], str]] = None,
    defines: Optional[Callable[[str], dict[str, int]]] = None,
) -> None:
    """Add (or replace) the kernel part ``name``, one module CuPy compiles per dtype.

    ``files``: its kernel files in order, after the dtype prelude and ``COMMON`` (list the files they use first).
    Its kernels: ``plain`` and ``per_tile`` (see :func:`entry_points`), or ``kernels()`` (name -> parameters) with
    ``entries()`` (their entry points' text). ``defines(dtype)``: ``#define``s ahead of the source.
    The shipping parts are "forward" and "grad"; the experimental ones register themselves on import.
    """
    plain, per_tile = dict(plain or {}), dict(per_tile or {})
    if (kernels is None) != (entries is None) or (kernels is not None and (plain or per_tile)):
        raise TypeError("give either plain/per_tile kernels or both kernels() and entries()")
    if kernels is None:

        def kernels() -> dict[str, Params]:
            compiled = {graph_kernel_name(base, tile): spec for base, spec in per_tile.items() for tile in BATCH_TILES}
            return {**plain, **compiled}

        def entries() -> str:
            return entry_points(name, plain, per_tile)

    _PARTS[name] = Part(tuple(files), kernels, entries, defines or (lambda dtype: {}))
    _index.cache_clear()
    source.cache_clear()


def parts() -> tuple[str, ...]:
    """The registered parts: "forward", "grad", then those of the experimental modules imported so far."""
    return tuple(_PARTS)


@functools.cache
def _index() -> tuple[dict[str, Params], dict[str, str]]:
    specs: dict[str, Params] = {}
    owner: dict[str, str] = {}
    for name, part in _PARTS.items():
        for kernel, params in part.kernels().items():
            if kernel in owner:
                raise ValueError(f"kernel {kernel!r} is in parts {owner[kernel]!r} and {name!r}")
            specs[kernel], owner[kernel] = params, name
    return specs, owner


def kernel_specs() -> dict[str, Params]:
    """Every exported kernel name (of the registered parts) -> its parameter list ``[(kind, name), ...]``."""
    return dict(_index()[0])


def part_of(name: str) -> str:
    """The part (one of :func:`parts`) whose module holds kernel ``name``."""
    try:
        return _index()[1][name]
    except KeyError:
        raise KeyError(f"no CuPy kernel named {name!r}") from None


@functools.cache
def source(dtype: str, part: Optional[str] = None) -> str:
    """The CUDA C++ source for arrays of ``dtype`` ("float16", "float32" or "float64"): the entry points of one
    ``part`` (see :func:`part_of`) or, by default, of every registered part (the CPU checks).

    A part holds the kernel files its entry points need (a device function no entry point uses costs only
    parsing): the dtype prelude, ``COMMON``, then its files; all parts together, each file once."""
    if dtype not in ACC_TYPES:
        raise ValueError(f"the CuPy kernels support float16, float32 and float64, got {dtype}")
    names = parts() if part is None else (part,)
    chosen = [_PARTS[name] for name in names]
    files = list(dict.fromkeys(file for p in chosen for file in p.files))
    defines = {**OPTIONS}
    for p in chosen:
        defines.update(p.defines(dtype))
    return "".join(
        [
            f"// arrayrnn CuPy fast paths, storage dtype {dtype}, parts {', '.join(names)}\n",
            *(f"#define {key} {value}\n" for key, value in defines.items()),
            kernel_file(f"{dtype}.cuh").text(),
            COMMON.text(),
            *(file.text() for file in files),
            *(p.entries() for p in chosen),
        ]
    )


# the shipping parts (the experimental ones register on import of ``experimental``)
register_part("forward", (FUSED, GRAPH), FUSED_SPECS, GRAPH_SPECS)
register_part("grad", (FUSED, GRAPH, GRAD_FUSED, GRAD_GRAPH), GRAD_SPECS, GRAD_GRAPH_SPECS)
