"""``arrayrnn convert IN OUT``: ``.npz`` (``ar.load``) -> ``.onnx`` (``ar.convert.to_onnx_model``), or back.

``.onnx`` -> ``.npz`` runs ``ar.convert.from_onnx_model`` then ``ar.save``. Unknown extensions, a missing file or a
model the target cannot hold are one-line usage errors (exit status 2).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._args import OneLineParser, UsageError, positive_int
from ._hints import INSTALL_HINTS

#: input extension -> output extension
_PAIRS = {".npz": ".onnx", ".onnx": ".npz"}


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def command(args: argparse.Namespace) -> int:
    """Convert ``args.input`` to ``args.output``; prints one line saying what was written."""
    source, target = args.input, args.output
    wanted = _PAIRS.get(_extension(source))
    if wanted is None:
        raise UsageError("IN", f"{source!r} must end in .npz (an ar.save file) or .onnx")
    if _extension(target) != wanted:
        raise UsageError("OUT", f"{target!r} must end in {wanted} when IN is a {_extension(source)} file")
    if not os.path.isfile(source):
        raise UsageError("IN", f"{source!r} does not exist or is not a file")
    if args.opset is not None and wanted != ".onnx":
        raise UsageError("--opset", "applies only when writing .onnx")
    if not _onnx_available():
        raise UsageError("convert", f"needs the onnx package; install with: {INSTALL_HINTS['onnx']}")
    from google.protobuf.message import DecodeError  # onnx's dependency: a file that is not an ONNX model

    from .. import convert, io

    try:
        if wanted == ".onnx":
            model: Any = io.load(source)
            convert.to_onnx_model(model, target, opset=args.opset)
        else:
            model = convert.from_onnx_model(source, backend="numpy")
            io.save(target, model)
    except (ValueError, TypeError, OSError, DecodeError) as error:
        raise UsageError("convert", f"cannot convert {source!r}: {error}") from None
    print(f"wrote {target} ({model!r})")
    return 0


def _onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def add_parser(commands: Any) -> OneLineParser:
    """Register ``arrayrnn convert`` on the CLI's subcommands."""
    parser = commands.add_parser(
        "convert", help="convert a model: .npz (ar.save) -> .onnx, or .onnx -> .npz (needs the onnx package)"
    )
    parser.add_argument("input", metavar="IN", help="a .npz file written by ar.save, or a .onnx model")
    parser.add_argument("output", metavar="OUT", help="the file to write: .onnx for a .npz IN, .npz for a .onnx IN")
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset to write (default 17)")
    parser.set_defaults(handler=command, parser=parser)
    return parser
