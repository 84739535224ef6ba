"""Command-line argument checking: a parser whose errors are one line, and ``type=`` callables.

A bad value is a usage error (exit status 2) naming the option and what it accepts, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import NoReturn

__all__ = [
    "OneLineParser",
    "UsageError",
    "backend_name",
    "comma_list",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


class UsageError(Exception):
    """A bad option value found after parsing (e.g. ``--plot`` without matplotlib): ``option: message``."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr, ``prog: error: message``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):  # "argument --cells: ..." -> "--cells: ..."
            message = message[len("argument ") :]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def comma_list(accepted: Iterable[str]) -> Callable[[str], list[str]]:
    """A ``type=`` for a comma-separated list of names among ``accepted`` (case-insensitive, duplicates dropped)."""
    names = tuple(accepted)

    def parse(text: str) -> list[str]:
        items = [item.strip().lower() for item in text.split(",")]
        if not items or any(item not in names for item in items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(names)}, got {text!r}")
        return list(dict.fromkeys(items))

    return parse


def backend_name(text: str) -> str:
    """A backend name the selector knows, or ``"auto"`` (whether it is usable here is checked later)."""
    from ..backend import BACKEND_NAMES

    if text not in (*BACKEND_NAMES, "auto"):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(BACKEND_NAMES)}, auto, got {text!r}")
    return text
