"""Command line: ``arrayrnn info``, ``demo``, ``bench``, ``convert``, ``odyssey`` and ``arrayrnn --version``.

A bad option value (or ``$ARRAYRNN_BACKEND``) is a one-line usage error with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence

from ..backend import BACKEND_NAMES, BackendUnavailableError, backend_status
from ._args import OneLineParser, UsageError, backend_name
from ._hints import INSTALL_HINTS

#: backend -> (importable top-level module, distributions that may provide it)
_BACKEND_MODULES = {
    "numpy": ("numpy", ("numpy",)),
    "cupy": ("cupy", ("cupy-cuda12x", "cupy-cuda13x", "cupy")),
    "array_api_strict": ("array_api_strict", ("array-api-strict",)),
    "torch": ("torch", ("torch",)),
    "jax": ("jax", ("jax",)),
    "dask": ("dask", ("dask",)),
}

#: optional packages that are not backends: (module, distribution, what it is for)
_OPTIONAL = (
    ("numba", "numba", "compiled kernels for the NumPy fast path"),
    ("onnxruntime", "onnxruntime", "bench peer, ONNX export checks"),
    ("onnx", "onnx", "bench peer (builds the ONNX model), ONNX export"),
    ("threadpoolctl", "threadpoolctl", "bench: limits BLAS threads"),
    ("matplotlib", "matplotlib", "bench --plot, odyssey's box plot"),
    ("music21", "music21", "odyssey: the Bach chorales"),
)


def version_of(*distributions: str) -> str | None:
    """The installed version of the first of ``distributions`` that is installed, else ``None``."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed(module: str) -> bool:
    """Whether ``module`` can be found (without importing it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _devices(name: str) -> str:
    """Human-readable devices of a usable backend."""
    if name == "cupy":
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        names = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(count)]
        return ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
    if name == "torch":
        import torch

        cuda = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        return ", ".join(["cpu", *cuda])
    if name == "jax":
        import jax

        return ", ".join(str(d) for d in jax.devices())
    if name == "array_api_strict":
        return "CPU_DEVICE, device1, device2 (simulated)"
    return "cpu"


def backend_problem(name: str) -> str | None:
    """``None`` when backend ``name`` is usable, else why not, said once: not installed (and how to install
    it as the README does), or installed but unusable (e.g. CuPy without a GPU/driver: no install hint)."""
    reason = backend_status(name)
    if reason is None or name == "numpy":
        return reason
    if not installed(_BACKEND_MODULES[name][0]):
        return f"not installed; install with: {INSTALL_HINTS[name]}"
    reason = reason.split("; install with:")[0]  # installed: its hint would say to install it again
    if reason.startswith("not installed ("):  # the module is there but something it imports is not
        reason = "installed but fails to import (" + reason[len("not installed (") :]
    return reason


def backend_line(name: str) -> str:
    """One line of ``arrayrnn info`` for backend ``name``: usable (version, devices), not installed, or why not."""
    version = version_of(*_BACKEND_MODULES[name][1]) or "-"
    problem = backend_problem(name)
    if problem is None:
        return f"  {name:<17} usable         {version:<14} devices: {_devices(name)}"
    if problem.startswith("not installed;"):
        return f"  {name:<17} not installed  {'-':<14} {problem[len('not installed; ') :]}"
    return f"  {name:<17} unavailable    {version:<14} {problem}"


def selection_problem(name: str) -> str | None:
    """Why backend ``name`` (a known name or "auto") cannot be selected here, else ``None``."""
    if name == "auto":
        return None
    problem = backend_problem(name)
    return None if problem is None else f"backend {name!r} is unavailable: {problem}"


def optional_line(module: str, distribution: str, purpose: str) -> str:
    """One line of ``arrayrnn info`` for an optional package that is not a backend."""
    version = version_of(distribution)
    if version is None or not installed(module):
        return f"  {module:<17} not installed  {'-':<14} {purpose}; install with: {INSTALL_HINTS[module]}"
    return f"  {module:<17} installed      {version:<14} {purpose}"


def _default_backend() -> str:
    """The default backend, or why ``$ARRAYRNN_BACKEND`` names one that is not usable here."""
    from .. import get_backend

    value = os.environ.get("ARRAYRNN_BACKEND")
    problem = selection_problem(value) if value in (*BACKEND_NAMES, "auto") else None
    if problem is not None:
        return f"none: environment variable ARRAYRNN_BACKEND={value!r}: {problem}"
    return get_backend() + (f" (from ARRAYRNN_BACKEND={value!r})" if value else "")


def info(args: argparse.Namespace) -> int:
    from .. import __version__

    print(f"arrayrnn {__version__} (Python {platform.python_version()}, {platform.machine()})")
    print(f"array-api-compat {version_of('array-api-compat') or 'not installed'}")
    print(f"default backend: {_default_backend()}")
    print("backends:")
    for name in BACKEND_NAMES:
        print(backend_line(name))
    print("optional packages:")
    for module, distribution, purpose in _OPTIONAL:
        print(optional_line(module, distribution, purpose))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(prog="arrayrnn", description="RNN, LSTM and GRU on any array API backend.")
    parser.add_argument("--version", action="version", version=f"arrayrnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,demo,bench,convert,odyssey}")
    info_parser = commands.add_parser("info", help="versions, usable backends (and why others are not), devices")
    info_parser.add_argument(
        "--backend", type=backend_name, help="accepted for symmetry (checked, not used): info lists every backend"
    )
    info_parser.set_defaults(handler=info, parser=info_parser)
    from .demo import add_parser as add_demo_parser

    add_demo_parser(commands)
    from . import bench  # NumPy and the standard library only; peers are imported when it runs

    bench_parser = commands.add_parser("bench", help="time arrayrnn against torch and onnxruntime (same weights)")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=bench.command, parser=bench_parser)
    from .convert_command import add_parser as add_convert_parser

    add_convert_parser(commands)
    from .odyssey import add_parser as add_odyssey_parser

    add_odyssey_parser(commands)
    return parser


def _check_environment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``$ARRAYRNN_BACKEND`` must name a backend (for info) or a usable one (for commands that compute)."""
    from ..backend import get_backend

    value = os.environ.get("ARRAYRNN_BACKEND")
    if not value or getattr(args, "backend", None):
        return
    if value not in (*BACKEND_NAMES, "auto"):
        try:
            get_backend()  # its error names the variable
        except BackendUnavailableError as error:
            parser.error(str(error))
    problem = selection_problem(value)
    if problem is not None and args.command != "info":  # info reports it instead of refusing
        parser.error(f"environment variable ARRAYRNN_BACKEND={value!r}: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command_parser = getattr(args, "parser", parser)
    _check_environment(command_parser, args)
    if getattr(args, "backend", None) and args.command != "info":
        from ..backend import set_backend

        problem = selection_problem(args.backend)
        if problem is not None:
            command_parser.error(f"--backend: {problem}")
        set_backend(args.backend)
    try:
        return int(args.handler(args) or 0)
    except UsageError as error:
        command_parser.error(str(error))
    except BrokenPipeError:  # e.g. `arrayrnn info | head -3`: the reader left; exit quietly like a Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"{command_parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
