"""The params dataclasses as JAX pytrees, registered lazily: when JAX is first met, never at ``import arrayrnn``.

Children are the non-``None`` fields (keyed by name); the aux data is which fields they are, so ``None`` fields
survive ``jax.jit``/``jax.grad``/``jax.vmap`` and ``jax.tree_util`` round trips.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

_CLASSES: list[type] = []
_registered: set[type] = set()


def pytree_classes(*classes: type) -> None:
    """Declare dataclasses to register as pytrees (now if JAX is already imported, else when it is met)."""
    _CLASSES.extend(cls for cls in classes if cls not in _CLASSES)
    register_if_jax_loaded()


def register_if_jax_loaded() -> None:
    """Register the declared classes when ``jax`` is already imported (cheap when done; never imports JAX)."""
    if len(_registered) < len(_CLASSES) and "jax" in sys.modules:
        register()


def register() -> None:
    """Register every declared class with ``jax.tree_util`` (once each); a no-op when JAX is not installed."""
    if len(_registered) == len(_CLASSES):
        return
    try:
        import jax.tree_util as tree_util
    except ImportError:
        return
    for cls in _CLASSES:
        if cls in _registered:
            continue
        names = tuple(field.name for field in dataclasses.fields(cls))
        try:
            tree_util.register_pytree_with_keys(
                cls, _flatten_with_keys(names), _unflatten(cls), flatten_func=_flatten(names)
            )
        except ValueError:  # registered already (e.g. by a reloaded arrayrnn): keep that registration
            pass
        _registered.add(cls)


def _flatten(names: tuple[str, ...]) -> Any:
    def flatten(params: Any) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        present = tuple(name for name in names if getattr(params, name) is not None)
        return tuple(getattr(params, name) for name in present), present

    return flatten


def _flatten_with_keys(names: tuple[str, ...]) -> Any:
    from jax.tree_util import GetAttrKey

    def flatten_with_keys(params: Any) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        present = tuple(name for name in names if getattr(params, name) is not None)
        return tuple((GetAttrKey(name), getattr(params, name)) for name in present), present

    return flatten_with_keys


def _unflatten(cls: type) -> Any:
    def unflatten(present: tuple[str, ...], children: Any) -> Any:
        return cls(**dict(zip(present, children)))

    return unflatten
