"""The torch gradient path: a forward through torch's module on detached leaves that require grad, and a pullback
by ``torch.autograd.grad`` in the form of the recording core's (``_core/backward.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from . import native

Tensor = torch.Tensor


def sequence_vjp(kind: str, x: Tensor, params: Any, state: tuple[Tensor, ...], lengths: Optional[Tensor],
                 reverse: bool, relu: bool) -> tuple[Tensor, tuple[Tensor, ...], Any]:  # fmt: skip
    """``(y, final_state, backward)``; ``backward(dy, d_final) -> (dx, dparams, d_state)`` may run many times."""
    fields = [field.name for field in dataclasses.fields(params) if getattr(params, field.name) is not None]
    absent = [field.name for field in dataclasses.fields(params) if getattr(params, field.name) is None]
    leaf_x = x.detach().requires_grad_(True)
    leaf_fields = {name: getattr(params, name).detach().requires_grad_(True) for name in fields}
    leaf_state = tuple(s.detach().requires_grad_(True) for s in state)
    leaf_params = dataclasses.replace(params, **leaf_fields)
    with torch.enable_grad():  # a vjp records even inside the caller's torch.no_grad()
        y, final = native.run(kind, leaf_x, leaf_params, leaf_state, lengths, reverse, relu)
    inputs = (leaf_x, *leaf_fields.values(), *leaf_state)

    def backward(dy: Optional[Tensor], d_final: tuple[Optional[Tensor], ...]) -> tuple[Tensor, Any, tuple]:
        pairs = [(out, d) for out, d in zip((y, *final), (dy, *d_final)) if d is not None]
        grads: Any = (None,) * len(inputs)
        if pairs:
            outs, cotangents = zip(*pairs)
            grads = torch.autograd.grad(outs, inputs, cotangents, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, inputs)]
        d_params = type(params)(**{name: None for name in absent}, **dict(zip(fields, grads[1 : 1 + len(fields)])))
        return grads[0], d_params, tuple(grads[1 + len(fields) :])

    return y.detach(), tuple(s.detach() for s in final), backward
