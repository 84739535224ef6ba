"""Command line: ``arrayrnn info``, ``arrayrnn bench`` (and the subcommands other modules add)."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from collections.abc import Sequence

from ..backend import BACKEND_NAMES, backend_status


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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


_DISTRIBUTIONS = {
    "numpy": "numpy",
    "cupy": "cupy-cuda12x|cupy-cuda13x|cupy",
    "array_api_strict": "array-api-strict",
    "torch": "torch",
    "jax": "jax",
    "dask": "dask",
}


def _backend_version(name: str) -> str:
    for distribution in _DISTRIBUTIONS[name].split("|"):
        version = _version(distribution)
        if version != "not installed":
            return version
    return "not installed"


def info(args: argparse.Namespace) -> int:
    from .. import __version__, get_backend

    print(f"arrayrnn {__version__} (Python {platform.python_version()}, {platform.machine()})")
    print(f"array-api-compat {_version('array-api-compat')}")
    print(f"default backend: {get_backend()}")
    print("backends:")
    for name in BACKEND_NAMES:
        reason = backend_status(name)
        version = _backend_version(name)
        if reason is None:
            print(f"  {name:<17} usable       {version:<14} devices: {_devices(name)}")
        else:
            print(f"  {name:<17} unavailable  {version:<14} {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arrayrnn", description="RNN, LSTM and GRU on any array API backend.")
    commands = parser.add_subparsers(dest="command", required=True)
    info_parser = commands.add_parser("info", help="versions, usable backends (and why others are not), devices")
    info_parser.add_argument("--backend", help="accepted for symmetry; info lists every backend")
    info_parser.set_defaults(handler=info)
    from .demo import add_parser as add_demo_parser

    add_demo_parser(commands)
    from . import bench  # NumPy and the standard library only; peers are imported when it runs

    bench_parser = commands.add_parser("bench", help="time arrayrnn against torch and onnxruntime (same weights)")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=bench.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "backend", None):
        from ..backend import set_backend

        set_backend(args.backend)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
