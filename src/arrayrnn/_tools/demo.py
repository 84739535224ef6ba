"""``arrayrnn demo``: train a small recurrent model on noisy sine waves, on any backend.

An ``ar.LSTM`` (or ``ar.GRU`` / ``ar.RNN``) plus a linear readout, trained with ``ar.vjp`` and
``ar.optim.Adam``; deterministic for a fixed seed.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from typing import Any, TextIO

import numpy as np

from ._args import backend_name, non_negative_int, positive_float, positive_int

__all__ = ["add_parser", "main", "train"]

CELLS = ("lstm", "gru", "rnn")
SEQUENCE_LENGTH = 48
BATCH = 32
HIDDEN = 24
NOISE = 0.1


def make_batch(rng: np.random.Generator, batch: int, steps: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy inputs ``(B, T, 1)`` and the next clean values ``(B, T, 1)``, float32."""
    frequency = rng.uniform(0.15, 0.5, size=(batch, 1))
    phase = rng.uniform(0.0, 2.0 * math.pi, size=(batch, 1))
    clean = np.sin(frequency * np.arange(steps + 1) + phase)
    noisy = clean[:, :-1] + noise * rng.standard_normal((batch, steps))
    return noisy[..., None].astype("float32"), clean[:, 1:, None].astype("float32")


class _ProgressBar:
    """One line redrawn in place on a terminal; a few plain lines otherwise (logs, pipes)."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.last_drawn = -1.0
        self.checkpoints = {max(1, round(total * k / 4)) for k in range(1, 5)}

    def update(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        done = step == self.total
        if self.interactive and (done or now - self.last_drawn > 0.1):
            self.last_drawn = now
            self.stream.write("\r" + self._line(step, loss, now) + ("\n" if done else ""))
            self.stream.flush()
        elif not self.interactive and step in self.checkpoints:
            self.stream.write(self._line(step, loss, now) + "\n")

    def wants_loss(self, step: int) -> bool:
        """Whether ``update`` will draw at ``step`` (reading the loss waits for the device)."""
        if step == self.total:
            return True
        if self.interactive:
            return time.perf_counter() - self.last_drawn > 0.1
        return step in self.checkpoints

    def _line(self, step: int, loss: float, now: float) -> str:
        filled = int(self.width * step / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"  [{bar}] {step:>{len(str(self.total))}}/{self.total}  loss {loss:.5f}  {now - self.started:5.1f}s"


def _readout(xp: Any, hidden: Any, readout: dict[str, Any]) -> Any:
    """``hidden (B, T, H) -> (B, T, 1)``."""
    return xp.matmul(hidden, xp.matrix_transpose(readout["weight"])) + readout["bias"]


def train(
    cell: str = "lstm",
    steps: int = 400,
    seed: int = 0,
    *,
    backend: str | None = None,
    lr: float = 0.01,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Train and report; returns the losses before/after, the history and an example prediction."""
    import arrayrnn as ar

    stream = sys.stdout if stream is None else stream
    backend = backend if backend is not None else ar.get_backend()
    model_class = {"lstm": ar.LSTM, "gru": ar.GRU, "rnn": ar.RNN}[cell]
    model = model_class(1, HIDDEN, batch_first=True, seed=seed, backend=backend)
    xp = ar.backend.namespace(backend)
    rng = np.random.default_rng(seed)
    weight = rng.uniform(-1, 1, size=(1, HIDDEN)).astype("float32") / math.sqrt(HIDDEN)
    params = {
        "model": model.params,
        "readout": ar.to_backend({"weight": weight, "bias": np.zeros(1, "float32")}, model.params[0][0].backend),
    }
    optimizer = ar.optim.Adam(lr=lr, clip_norm=1.0)
    opt_state = optimizer.init(params)
    # dask: batches chunked over the batch axis (4 blocks of 8), params NumPy (the chunks' backend)
    place = functools.partial(ar.to_backend, chunks={0: BATCH // 4}) if backend == "dask" else ar.to_backend
    held_out = place(make_batch(np.random.default_rng(seed + 10_000), 64, SEQUENCE_LENGTH, NOISE), backend)

    def evaluate(current: dict[str, Any]) -> tuple[float, Any]:
        hidden, _ = model.apply(current["model"], held_out[0])
        prediction = _readout(xp, hidden, current["readout"])
        return float(xp.mean((prediction - held_out[1]) ** 2)), prediction

    first_loss, _ = evaluate(params)
    stream.write(
        f"arrayrnn demo: {cell.upper()} (hidden {HIDDEN}) + linear readout on {backend}; next-step prediction of "
        f"noisy sine waves (batch {BATCH}, {SEQUENCE_LENGTH} steps), Adam lr={lr}, {steps} steps, seed {seed}\n"
    )
    progress = _ProgressBar(steps, stream)
    history = []
    for step in range(1, steps + 1):
        x, target = place(make_batch(rng, BATCH, SEQUENCE_LENGTH, NOISE), backend)
        (hidden, _), pullback = ar.vjp(model.apply, params["model"], x)
        prediction = _readout(xp, hidden, params["readout"])
        error = prediction - target
        # mean squared error and its gradient through the readout, by hand
        d_prediction = error * (2.0 / math.prod(error.shape))
        flat_hidden = xp.reshape(hidden, (-1, HIDDEN))
        flat_d = xp.reshape(d_prediction, (-1, 1))
        readout_grads = {
            "weight": xp.matmul(xp.matrix_transpose(flat_d), flat_hidden),
            "bias": xp.sum(flat_d, axis=0),
        }
        d_hidden = xp.matmul(d_prediction, params["readout"]["weight"])
        model_grads, _ = pullback((d_hidden, None))
        grads = {"model": model_grads, "readout": readout_grads}
        if backend == "dask":  # lazy gradients: one compute runs the step's blocks; params stay NumPy
            import dask

            (grads,) = dask.compute(grads)
        params, opt_state = optimizer.update(params, grads, opt_state)
        if progress.wants_loss(step):
            loss = float(xp.mean(error * error))
            history.append((step, loss))
            progress.update(step, loss)
    last_loss, prediction = evaluate(params)
    example_input = ar.to_numpy(held_out[0][0, :, 0])
    example_target = ar.to_numpy(held_out[1][0, :, 0])
    example_prediction = ar.to_numpy(prediction[0, :, 0])
    repeat_input = float(np.mean((ar.to_numpy(held_out[0]) - ar.to_numpy(held_out[1])) ** 2))
    stream.write(
        f"held-out loss: {first_loss:.5f} -> {last_loss:.5f}  ({first_loss / max(last_loss, 1e-12):.0f}x lower; "
        f"repeating the last noisy input would score {repeat_input:.5f})\n\n"
    )
    stream.write(plot(example_target, example_prediction) + "\n")
    stream.write(table(example_input, example_target, example_prediction) + "\n")
    return {
        "first_loss": first_loss,
        "last_loss": last_loss,
        "repeat_input_loss": repeat_input,
        "history": history,
        "prediction": example_prediction,
        "target": example_target,
    }


def plot(target: np.ndarray, prediction: np.ndarray, height: int = 11) -> str:
    """A small ASCII chart: ``.`` the target, ``o`` the prediction, ``@`` where they coincide."""
    low, high = -1.2, 1.2

    def row(value: float) -> int:
        return int(round((high - min(max(value, low), high)) / (high - low) * (height - 1)))

    grid = [[" "] * len(target) for _ in range(height)]
    for t, (want, got) in enumerate(zip(target, prediction)):
        grid[row(want)][t] = "."
        grid[row(got)][t] = "@" if row(got) == row(want) else "o"
    lines = [f"  {high - k * (high - low) / (height - 1):+5.2f} |" + "".join(cells) for k, cells in enumerate(grid)]
    axis = "        +" + "-" * len(target)
    return "\n".join(["  one held-out sequence: . target (next clean value)  o prediction  @ both", *lines, axis])


def table(inputs: np.ndarray, target: np.ndarray, prediction: np.ndarray, rows: int = 6) -> str:
    """The last few steps of the example as numbers."""
    steps = len(target)
    lines = ["     t   input (noisy)   target   prediction"]
    for t in range(steps - rows, steps):
        lines.append(f"  {t:>4}   {inputs[t]:+13.3f}   {target[t]:+6.3f}   {prediction[t]:+10.3f}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    train(args.cell, args.steps, args.seed, lr=args.lr)
    return 0


def add_parser(commands: Any) -> None:
    """Register ``arrayrnn demo`` on the CLI's subcommands."""
    parser = commands.add_parser("demo", help="train a small model on noisy sine waves (progress bar, final plot)")
    parser.add_argument(
        "--backend", type=backend_name, help="backend to train on (default: $ARRAYRNN_BACKEND, else numpy)"
    )
    parser.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell (default lstm)")
    parser.add_argument("--steps", type=positive_int, default=400, help="training steps, >= 1 (default 400)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed for weights and data, >= 0 (default 0)")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="Adam learning rate, > 0 (default 0.01)")
    parser.set_defaults(handler=main, parser=parser)
