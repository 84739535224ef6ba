"""Layer normalisation (Ba et al. 2016) of the cells' projections, written only against the array API standard.

``W_ih x`` and ``W_hh h`` are each normalised over their whole gate vector (gain ``ln_*_weight``, shift
``ln_*_bias``) before the usual biases are added; an LSTM's ``h`` sees ``LN_c(c_t)``. Each pair is optional.
"""

from __future__ import annotations

from typing import Any, Optional

Array = Any

#: the epsilon added to the (biased) variance, as ``torch.nn.LayerNorm``
EPS = 1e-5
#: the params fields of layer normalisation, in pairs (gain, shift)
PAIRS = (("ln_ih_weight", "ln_ih_bias"), ("ln_hh_weight", "ln_hh_bias"), ("ln_c_weight", "ln_c_bias"))
FIELDS = tuple(name for pair in PAIRS for name in pair)


def has_layer_norm(params: Any) -> bool:
    """Whether ``params`` holds any ``ln_*`` array."""
    return any(getattr(params, name, None) is not None for name in FIELDS)


def layer_norm_changes(params: Any) -> list[str]:
    """``["layer_norm (ln_* params)"]`` for layer-normalised params (which no fast path runs), else empty."""
    return ["layer_norm (ln_* params)"] if has_layer_norm(params) else []


def normalise(xp: Any, u: Array, weight: Array, bias: Array) -> tuple[Array, Array, Array]:
    """``(weight * u_hat + bias, u_hat, 1/std)`` over the last axis of ``u``."""
    mean = xp.mean(u, axis=-1, keepdims=True)
    centred = u - mean
    variance = xp.mean(centred * centred, axis=-1, keepdims=True)
    inverse_std = 1.0 / xp.sqrt(variance + EPS)
    u_hat = centred * inverse_std
    return u_hat * weight + bias, u_hat, inverse_std


def normalise_backward(xp: Any, d_out: Array, u_hat: Array, inverse_std: Array, weight: Array) -> Array:
    """The gradient of ``u`` from that of :func:`normalise`'s output (the gains' gradient is ``d_out * u_hat``)."""
    d_hat = d_out * weight
    mean_d = xp.mean(d_hat, axis=-1, keepdims=True)
    mean_du = xp.mean(d_hat * u_hat, axis=-1, keepdims=True)
    return inverse_std * (d_hat - mean_d - u_hat * mean_du)


def _linear(xp: Any, x: Array, weight: Array) -> Array:
    return xp.matmul(x, xp.matrix_transpose(weight))


def _with_bias(value: Array, bias: Optional[Array]) -> Array:
    return value if bias is None else value + bias


def input_projection(xp: Any, x: Array, params: Any) -> Array:
    """``LN_ih(x W_ih^T) + b_ih`` with ``params.ln_ih_weight``, else ``x W_ih^T + b_ih``; ``x (N, I)``."""
    weight = getattr(params, "ln_ih_weight", None)
    if weight is None:
        return _with_bias(_linear(xp, x, params.weight_ih), params.bias_ih)
    normed, _, _ = normalise(xp, _linear(xp, x, params.weight_ih), weight, params.ln_ih_bias)
    return _with_bias(normed, params.bias_ih)


def recurrent_projection(xp: Any, h: Array, params: Any) -> Array:
    """``LN_hh(h W_hh^T) + b_hh`` with ``params.ln_hh_weight``, else ``h W_hh^T + b_hh``; ``h (B, H or P)``."""
    weight = getattr(params, "ln_hh_weight", None)
    if weight is None:
        return _with_bias(_linear(xp, h, params.weight_hh), params.bias_hh)
    normed, _, _ = normalise(xp, _linear(xp, h, params.weight_hh), weight, params.ln_hh_bias)
    return _with_bias(normed, params.bias_hh)


def cell_output(xp: Any, c: Array, params: Any) -> Array:
    """``LN_c(c)`` with ``params.ln_c_weight`` (the LSTM cell as ``h`` sees it), else ``c``."""
    weight = getattr(params, "ln_c_weight", None)
    return c if weight is None else normalise(xp, c, weight, params.ln_c_bias)[0]


def _sum_rows(xp: Any, a: Array) -> Array:
    return xp.sum(xp.reshape(a, (-1, a.shape[-1])), axis=0)


def input_projection_backward(xp: Any, params: Any, d_projected: Array, x: Array) -> tuple[Array, dict[str, Array]]:
    """From the gradient of :func:`input_projection`'s output ``(T, B, G*H)`` (``x (T, B, I)``, finite): the
    gradient of ``x W_ih^T`` and the gradients of ``ln_ih_*``; without ``ln_ih_weight`` ``d_projected`` itself."""
    weight = getattr(params, "ln_ih_weight", None)
    if weight is None:
        return d_projected, {}
    _, u_hat, inverse_std = normalise(xp, _linear(xp, x, params.weight_ih), weight, params.ln_ih_bias)
    grads = {"ln_ih_weight": _sum_rows(xp, d_projected * u_hat), "ln_ih_bias": _sum_rows(xp, d_projected)}
    return normalise_backward(xp, d_projected, u_hat, inverse_std, weight), grads
