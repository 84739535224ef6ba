"""The params dataclasses as torch pytrees (``torch.func.grad`` over params), registered lazily: once torch is
imported, never at ``import arrayrnn``. Children are the non-``None`` fields; the aux data names them."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

_done = [False]
_CLASSES: list[type] = []


def pytree_classes(*classes: type) -> None:
    """Declare the dataclasses to register (``params.py`` declares its three; registered once torch is met)."""
    _CLASSES.extend(cls for cls in classes if cls not in _CLASSES)
    register_if_torch_loaded()


def register_if_torch_loaded() -> None:
    """Register the params classes when ``torch`` is already imported (cheap once done; never imports torch)."""
    if not _done[0] and "torch" in sys.modules:
        register()


def register() -> None:
    """Register the declared classes (``RNNParams``, ``LSTMParams``, ``GRUParams``) with ``torch.utils._pytree``
    (once)."""
    if _done[0] or not _CLASSES:
        return
    _done[0] = True
    import torch.utils._pytree as pytree  # the registry torch.func and torch.export flatten with

    for cls in _CLASSES:
        names = tuple(field.name for field in dataclasses.fields(cls))
        try:
            pytree.register_pytree_node(
                cls, _flatten(names), _unflatten(cls), serialized_type_name=f"arrayrnn.{cls.__name__}",
                flatten_with_keys_fn=_flatten_with_keys(names, pytree.GetAttrKey),
            )  # fmt: skip
        except ValueError:  # registered already (a reloaded arrayrnn): keep that registration
            pass


def _flatten(names: tuple[str, ...]) -> Any:
    def flatten(params: Any) -> tuple[list[Any], tuple[str, ...]]:
        present = tuple(name for name in names if getattr(params, name) is not None)
        return [getattr(params, name) for name in present], present

    return flatten


def _flatten_with_keys(names: tuple[str, ...], key: Any) -> Any:
    def flatten_with_keys(params: Any) -> tuple[list[Any], tuple[str, ...]]:
        present = tuple(name for name in names if getattr(params, name) is not None)
        return [(key(name), getattr(params, name)) for name in present], present

    return flatten_with_keys


def _unflatten(cls: type) -> Any:
    def unflatten(children: Any, present: tuple[str, ...]) -> Any:
        return cls(**dict(zip(present, children)))

    return unflatten
