"""The ``--backend jax`` rows of ``arrayrnn bench``: arrayrnn on JAX arrays against a hand-written jitted
``jax.lax.scan`` of the same cell (same weights), each waiting for JAX's asynchronous dispatch; the first call of
each (tracing and XLA compilation) is timed apart and kept out of the samples."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .bench_modes import Runner

#: the peer's name in the record and the table
PEER = "lax.scan"


def _peer_cell(kind: str) -> Any:
    """The cell's equations (PyTorch's gate order; GRU with the reset gate after the product), written out here."""
    import jax
    import jax.numpy as jnp

    def lstm(carry: Any, gx_t: Any, w_hh_t: Any, b_hh: Any) -> Any:
        h, c = carry
        i, f, g, o = jnp.split(gx_t + h @ w_hh_t + b_hh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru(carry: Any, gx_t: Any, w_hh_t: Any, b_hh: Any) -> Any:
        (h,) = carry
        x_r, x_z, x_n = jnp.split(gx_t, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h @ w_hh_t + b_hh, 3, axis=-1)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        h = (1 - z) * jnp.tanh(x_n + r * h_n) + z * h
        return (h,), h

    def rnn(carry: Any, gx_t: Any, w_hh_t: Any, b_hh: Any) -> Any:
        h = jnp.tanh(gx_t + carry[0] @ w_hh_t + b_hh)
        return (h,), h

    return {"lstm": lstm, "gru": gru, "rnn": rnn}[kind]


def peer_function(kind: str) -> Any:
    """``f(x (T, B, I), w_ih, w_hh, b_ih, b_hh) -> y (T, B, H)``, jitted: input projection, then ``lax.scan``."""
    import jax
    import jax.numpy as jnp

    cell = _peer_cell(kind)

    @jax.jit
    def run(x: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> Any:
        gx = x @ w_ih.T + b_ih  # all steps at once, as any hand-written RNN does
        w_hh_t = w_hh.T  # (H, G*H), as flax keeps its kernels: the step multiplies without a transpose
        zeros = jnp.zeros((x.shape[1], w_hh.shape[1]), dtype=x.dtype)
        carry = (zeros, zeros) if kind == "lstm" else (zeros,)
        _, y = jax.lax.scan(lambda c, g: cell(c, g, w_hh_t, b_hh), carry, gx)
        return y

    return run


def _first_call(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def jax_runners(kind: str, params: Any, x: np.ndarray) -> list[Runner]:
    """``[arrayrnn, lax.scan]`` on JAX arrays for NumPy float32 ``params`` (with biases) and ``x (T, B, I)``.

    Each runner's ``threads()`` report carries ``first_call_s``: its first call (trace + compile + one run).
    """
    import arrayrnn

    function = {"lstm": arrayrnn.lstm, "gru": arrayrnn.gru, "rnn": arrayrnn.rnn}[kind]
    placed = arrayrnn.to_backend(params, "jax")
    placed_x = arrayrnn.to_backend(x, "jax")
    weights = (placed.weight_ih, placed.weight_hh, placed.bias_ih, placed.bias_hh)
    peer = peer_function(kind)

    def ours() -> Any:
        return function(placed_x, placed)[0].block_until_ready()

    def theirs() -> Any:
        return peer(placed_x, *weights).block_until_ready()

    first = {"arrayrnn": _first_call(ours), PEER: _first_call(theirs)}
    return [
        Runner("arrayrnn", ours, np.asarray, lambda: {"first_call_s": first["arrayrnn"]}),
        Runner(PEER, theirs, np.asarray, lambda: {"first_call_s": first[PEER]}),
    ]


def format_jax(record: dict[str, Any]) -> str:
    """The arrayrnn-on-JAX rows against the jitted ``lax.scan`` peer, with each one's first call, as Markdown."""
    lines = [
        f"| mode | cell | T, B, I, H | arrayrnn ms | {PEER} ms | vs {PEER} | first call arrayrnn / {PEER} s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["results"]:
        if PEER not in row["median_s"]:
            continue
        first = [row["threads"].get(name, {}).get("first_call_s") for name in ("arrayrnn", PEER)]
        first_text = " / ".join("-" if value is None else f"{value:.3f}" for value in first)
        lines.append(
            f"| {row['mode']} | {row['cell'].upper()} | {row['T']}, {row['B']}, {row['I']}, {row['H']} "
            f"| {row['median_s']['arrayrnn'] * 1e3:.3f} | {row['median_s'][PEER] * 1e3:.3f} "
            f"| {row['ratio'][PEER]:.2f}x | {first_text} |"
        )
    return "\n".join(lines)
