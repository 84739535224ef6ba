"""``arrayrnn odyssey``: Greff et al. 2015, "LSTM: A Search Space Odyssey", on Bach chorales, in one command.

Piano rolls from music21's corpus, one ``ar.LSTM`` variant + sigmoid readout per key, next-step NLL; a random
search per variant with one budget, the best config retrained over seeds, then a table and a box plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np

from ._args import backend_name, non_negative_int, positive_int

__all__ = [
    "PAPER",
    "VARIANTS",
    "add_parser",
    "available_variants",
    "load_chorales",
    "loss_and_grads",
    "main",
    "model_for",
    "nll",
    "run",
    "split",
    "stream_to_roll",
    "synthetic_rolls",
    "train_model",
]

#: the paper's variants, in its order: V (vanilla, peepholes on) and one change each
VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
#: Greff et al. 2015 (Sec. 5.1, Fig. 3), on music modelling (JSB Chorales) against V
PAPER = {
    "V": "baseline (vanilla LSTM, peepholes)",
    "NIG": "not significantly worse on music (worse on speech, handwriting)",
    "NFG": "significantly worse on every data set",
    "NOG": "not significantly worse on music (worse on speech, handwriting)",
    "NIAF": "not significantly worse on music (worse on speech, handwriting)",
    "NOAF": "significantly worse on every data set",
    "NP": "no significant difference",
    "CIFG": "no significant difference",
    "FGR": "no significant difference on speech, handwriting; worse on music",
}
LOW_KEY, KEYS = 21, 88  # the piano: MIDI 21 (A0) .. 108 (C8)
CACHE_NAME = "chorales-v1.npz"
DEFAULT_CACHE = Path("~/.cache/arrayrnn/odyssey")
#: full run defaults, and ``--quick``: a subset of chorales, tiny budgets (under 3 minutes on 2 cores, cold)
FULL = {"trials": 8, "epochs": 20, "seeds": 5, "patience": 3, "chorales": None, "hidden": (32, 128)}
QUICK = {"trials": 2, "epochs": 4, "seeds": 2, "patience": 2, "chorales": 80, "hidden": (16, 32)}
LEARNING_RATES = (2e-3, 4e-2)  # log-uniform (Adam; below ~2e-3 it needs far more epochs)
BATCH = 16


class OdysseyError(Exception):
    """A problem the command reports in one line (a missing library, an unknown variant, a bad cache)."""


# ----------------------------------------------------------------------------------------------
# models


def available_variants() -> list[str]:
    """The variants to run by default: the paper's nine (``ar.LSTM_VARIANTS``), in its order.

    Returns
    -------
    list of str
        :data:`VARIANTS`.
    """
    return list(VARIANTS)


def model_for(
    variant: str,
    input_size: int,
    hidden_size: int,
    *,
    seed: Any = None,
    dtype: str = "float32",
    backend: Optional[str] = None,
) -> Any:
    """A one-layer ``ar.LSTM(..., variant=variant)``.

    Parameters
    ----------
    variant : str
        A name of :data:`VARIANTS` (``ar.LSTM_VARIANTS``).
    input_size, hidden_size : int
        ``I`` and ``H`` of the single layer.
    seed : int, optional
        Initialises the weights.
    dtype : str, optional
        The params' dtype. Default ``"float32"``.
    backend : str, optional
        Where the params live; ``None``: the current backend.

    Returns
    -------
    arrayrnn.LSTM
        A one-layer, time-major model.

    Raises
    ------
    OdysseyError
        ``variant`` is unknown.
    """
    import arrayrnn as ar

    if variant not in ar.LSTM_VARIANTS:
        raise OdysseyError(f"unknown LSTM variant {variant!r}; the paper's are {', '.join(ar.LSTM_VARIANTS)}")
    return ar.LSTM(input_size, hidden_size, variant=variant, seed=seed, dtype=dtype, backend=backend)


# ----------------------------------------------------------------------------------------------
# data


def stream_to_roll(stream: Any) -> np.ndarray:
    """A binary piano roll of a music21 stream, sampled at every quarter-note beat.

    Key ``k`` (MIDI ``21 + k``) is on at step ``t`` if a note of that pitch sounds at offset ``t`` quarter notes
    (``start <= t < end``, ties merged); notes outside the piano's 88 keys are left out.

    Parameters
    ----------
    stream : music21.stream.Stream
        A score, part or any stream of notes and chords.

    Returns
    -------
    numpy.ndarray, shape (T, 88), uint8
        ``T = ceil(highest time)`` steps, at least 1.
    """
    flat = stream.stripTies().flatten()
    steps = max(1, math.ceil(float(flat.highestTime) - 1e-9))
    roll = np.zeros((steps, KEYS), dtype=np.uint8)
    for element in flat.notes:
        start = float(element.offset)
        end = start + float(element.quarterLength)
        first, stop = math.ceil(start - 1e-9), math.ceil(end - 1e-9)  # beats t with start <= t < end
        for pitch in element.pitches:
            key = int(pitch.midi) - LOW_KEY
            if 0 <= key < KEYS and stop > first:
                roll[first : min(stop, steps), key] = 1
    return roll


def _import_music21() -> Any:
    try:
        import music21
    except ImportError:
        raise OdysseyError(
            'parsing the chorales needs music21, which is not installed; install with: pip install ".[examples]"'
        ) from None
    return music21


def _parse_corpus(stream: TextIO) -> tuple[list[np.ndarray], list[str]]:
    """Every 4-part Bach chorale of music21's corpus as a piano roll (sorted by file name)."""
    music21 = _import_music21()
    paths = sorted(
        (p for p in music21.corpus.getComposer("bach") if Path(str(p)).suffix in (".mxl", ".xml")),
        key=lambda p: Path(str(p)).name,
    )
    if not paths:
        raise OdysseyError("music21's corpus has no Bach chorales here (is music21 installed completely?)")
    rolls, names, started = [], [], time.perf_counter()
    for number, path in enumerate(paths, 1):
        score = music21.corpus.parse(path, forceSource=True)  # no pickles left in music21's scratch directory
        if len(score.parts) == 4:
            rolls.append(stream_to_roll(score))
            names.append(Path(str(path)).name)
        if number % 50 == 0 or number == len(paths):
            stream.write(
                f"  parsed {number}/{len(paths)} scores ({len(rolls)} four-part chorales) "
                f"{time.perf_counter() - started:.0f}s\n"
            )
            stream.flush()
    return rolls, names


def load_chorales(cache: Path | str | None = None, *, stream: Optional[TextIO] = None) -> tuple[list, list]:
    """The 4-part Bach chorales of music21's corpus as piano rolls, parsed once and cached as ``.npz``.

    Parameters
    ----------
    cache : path, optional
        The cache directory (default ``~/.cache/arrayrnn/odyssey``); the rolls go to ``chorales-v1.npz`` in it.
    stream : file, optional
        Where progress lines go (default ``sys.stdout``).

    Returns
    -------
    rolls : list of numpy.ndarray, each (T_i, 88) uint8
        The chorales, sorted by file name.
    names : list of str
        Their corpus file names.

    Raises
    ------
    OdysseyError
        music21 is missing (and there is no cache), or the cache cannot be read or written.
    """
    stream = sys.stdout if stream is None else stream
    directory = Path(cache if cache is not None else DEFAULT_CACHE).expanduser()
    path = directory / CACHE_NAME
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                steps, names = data["steps"], [str(n) for n in data["names"]]
                rolls = np.split(data["rolls"], np.cumsum(steps)[:-1])
        except (OSError, ValueError, KeyError) as error:
            raise OdysseyError(f"cannot read the cache {path} ({error}); delete it to parse again") from None
        stream.write(f"chorales: {len(rolls)} from the cache {path}\n")
        return rolls, names
    stream.write("chorales: parsing music21's Bach corpus (once; cached after)\n")
    rolls, names = _parse_corpus(stream)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(
            partial, rolls=np.concatenate(rolls), steps=np.array([len(r) for r in rolls]), names=np.array(names)
        )
        partial.replace(path)
    except OSError as error:
        raise OdysseyError(f"cannot write the cache {path}: {error}") from None
    stream.write(f"chorales: {len(rolls)} cached in {path}\n")
    return rolls, names


def synthetic_rolls(count: int, seed: int = 0, *, low: int = 24, high: int = 64) -> list[np.ndarray]:
    """Predictable stand-ins for chorales (tests, no parsing): chords walking up a scale, varied lengths.

    Parameters
    ----------
    count : int
        How many rolls.
    seed : int, optional
        Their randomness (start key, step, length).
    low, high : int, optional
        The range of lengths, in steps.

    Returns
    -------
    list of numpy.ndarray, each (T_i, 88) uint8
    """
    rng = np.random.default_rng(seed)
    rolls = []
    for _ in range(count):
        steps, root, stride = int(rng.integers(low, high + 1)), int(rng.integers(30, 50)), int(rng.integers(1, 3))
        roll = np.zeros((steps, KEYS), dtype=np.uint8)
        for t in range(steps):
            base = root + stride * (t % 8)
            roll[t, [base, base + 4, base + 7, base - 12]] = 1
        rolls.append(roll)
    return rolls


def split(count: int, seed: int = 0, fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[np.ndarray, ...]:
    """A fixed random train/validation/test split of ``count`` items.

    Parameters
    ----------
    count : int
        The number of items (at least 3).
    seed : int, optional
        Fixes the split.
    fractions : (float, float), optional
        The train and validation shares; the test set gets the rest. Default 60/20/20 (JSB: 229/76/77).

    Returns
    -------
    train, valid, test : numpy.ndarray of int
        Disjoint sorted indices covering ``range(count)``, each non-empty.
    """
    if count < 3:
        raise OdysseyError(f"need at least 3 chorales to split, got {count}")
    order = np.random.default_rng(_seed(seed, "split")).permutation(count)
    n_train = min(max(1, round(count * fractions[0])), count - 2)
    n_valid = min(max(1, round(count * fractions[1])), count - n_train - 1)
    parts = order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    return tuple(np.sort(p) for p in parts)


def _seed(seed: int, *tags: Any) -> int:
    """A 32-bit seed derived from ``seed`` and tags (stable across runs and platforms)."""
    words = [seed] + [zlib.crc32(str(tag).encode()) for tag in tags]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _batch(rolls: Sequence[np.ndarray], backend: str, dtype: str) -> tuple[Any, Any, list[int]]:
    """Inputs ``(T, B, 88)`` (steps ``0..L-2``), targets ``(T, B, 88)`` (``1..L-1``), valid steps per chorale."""
    import arrayrnn as ar

    lengths = [len(r) - 1 for r in rolls]
    steps = max(lengths)
    x = np.zeros((steps, len(rolls), KEYS), dtype=dtype)
    target = np.zeros_like(x)
    for b, roll in enumerate(rolls):
        x[: lengths[b], b] = roll[:-1]
        target[: lengths[b], b] = roll[1:]
    return ar.to_backend(x, backend), ar.to_backend(target, backend), lengths


def _mask(xp: Any, like: Any, lengths: list[int]) -> Any:
    """``(T, B, 1)``: 1 on valid steps, 0 on padding."""
    steps = like.shape[0]
    mask = (np.arange(steps)[:, None] < np.asarray(lengths)[None, :]).astype(np.float64)
    return xp.asarray(mask[..., None], dtype=like.dtype, device=_device(like))


def _device(array: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(array)


# ----------------------------------------------------------------------------------------------
# loss and gradients


def nll(logits: Any, target: Any, mask: Any) -> Any:
    """Bernoulli negative log-likelihood per time step: the sum over keys, averaged over valid steps.

    Parameters
    ----------
    logits, target : array, shape (T, B, K)
        Readout logits and the 0/1 targets.
    mask : array, shape (T, B, 1)
        1 on valid steps, 0 on padding.

    Returns
    -------
    array, shape ()
        ``sum(mask * (softplus(z) - target * z)) / sum(mask)``, in the namespace of ``logits``.
    """
    import arrayrnn as ar

    xp, _, _ = ar.backend.namespace_of(logits=logits, target=target, mask=mask)
    per_key = xp.maximum(logits, 0.0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))
    return xp.sum(per_key * mask) / xp.sum(mask)


def _sigmoid(xp: Any, z: Any) -> Any:
    e = xp.exp(-xp.abs(z))  # never overflows
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _readout(xp: Any, hidden: Any, readout: dict[str, Any]) -> Any:
    """``hidden (T, B, H) -> logits (T, B, 88)``."""
    return xp.matmul(hidden, xp.matrix_transpose(readout["weight"])) + readout["bias"]


def loss_and_grads(model: Any, params: dict[str, Any], x: Any, target: Any, lengths: list[int]) -> tuple[Any, Any]:
    """The NLL per step of a padded batch and its gradient for the LSTM's and the readout's params.

    The LSTM's gradient comes from ``ar.vjp(model.apply, ...)``; the readout's (and the cotangent of the LSTM's
    outputs) are computed here by hand, in the namespace of ``x``.

    Parameters
    ----------
    model : arrayrnn.LSTM
        Gives the structure and options; its own params are not used.
    params : dict
        ``{"model": <params of model>, "readout": {"weight": (88, H), "bias": (88,)}}``.
    x, target : array, shape (T, B, 88)
        Inputs and next-step targets, time-major, zero-padded.
    lengths : list of int
        Valid steps per sequence.

    Returns
    -------
    loss : array, shape ()
        :func:`nll` of the batch.
    grads : dict
        The structure of ``params``.
    """
    import arrayrnn as ar

    xp, _, _ = ar.backend.namespace_of(x=x, target=target)
    (hidden, _state), pullback = ar.vjp(model.apply, params["model"], x, lengths=lengths)
    mask = _mask(xp, x, lengths)
    logits = _readout(xp, hidden, params["readout"])
    loss = nll(logits, target, mask)
    d_logits = (_sigmoid(xp, logits) - target) * mask / xp.sum(mask)
    size = hidden.shape[-1]
    flat_hidden = xp.reshape(hidden, (-1, size))
    flat_d = xp.reshape(d_logits, (-1, KEYS))
    readout_grads = {
        "weight": xp.matmul(xp.matrix_transpose(flat_d), flat_hidden),
        "bias": xp.sum(flat_d, axis=0),
    }
    d_hidden = xp.matmul(d_logits, params["readout"]["weight"]) * mask
    model_grads = pullback((d_hidden, None))[0]
    return loss, {"model": model_grads, "readout": readout_grads}


def _evaluate(model: Any, params: dict[str, Any], batches: list[tuple[Any, Any, list[int]]]) -> float:
    """NLL per valid step over several batches (forward only)."""
    import arrayrnn as ar

    total, steps = 0.0, 0
    for x, target, lengths in batches:
        xp = ar.backend.namespace_of(x=x)[0]
        hidden, _ = model.apply(params["model"], x, lengths=lengths)
        count = sum(lengths)
        total += float(nll(_readout(xp, hidden, params["readout"]), target, _mask(xp, x, lengths))) * count
        steps += count
    return total / steps


def _init_readout(hidden: int, rolls: Sequence[np.ndarray], seed: int, backend: str, dtype: str) -> dict[str, Any]:
    """U(-1/sqrt(H), 1/sqrt(H)) weights; biases the log-odds of each key in the training rolls (smoothed)."""
    import arrayrnn as ar

    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(hidden)
    weight = rng.uniform(-bound, bound, size=(KEYS, hidden))
    on = sum(r.sum(axis=0, dtype=np.float64) for r in rolls)
    total = sum(len(r) for r in rolls)
    frequency = (on + 0.5) / (total + 1.0)
    bias = np.log(frequency) - np.log1p(-frequency)
    return ar.to_backend({"weight": weight.astype(dtype), "bias": bias.astype(dtype)}, backend)


def _batches(rolls: Sequence[np.ndarray], order: np.ndarray, size: int, backend: str, dtype: str) -> list:
    """Padded batches of ``rolls[order]``; chorales of similar length share a batch (groups of 4 batches)."""
    batches = []
    group = 4 * size
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: len(rolls[i]))
        for first in range(0, len(chunk), size):
            batches.append(_batch([rolls[i] for i in chunk[first : first + size]], backend, dtype))
    return batches


def train_model(
    variant: str,
    hidden: int,
    lr: float,
    data: dict[str, Sequence[np.ndarray]],
    *,
    epochs: int,
    patience: int,
    seed: int,
    backend: str = "numpy",
    dtype: str = "float32",
    batch_size: int = BATCH,
    evaluate_test: bool = False,
) -> dict[str, Any]:
    """Train one model with Adam, early-stopped on the validation NLL.

    Parameters
    ----------
    variant : str
        The LSTM variant (:func:`model_for`).
    hidden : int
        Hidden units.
    lr : float
        Adam's learning rate (gradients clipped to global norm 1).
    data : dict
        ``"train"``, ``"valid"`` (and ``"test"`` for ``evaluate_test``): lists of (T_i, 88) piano rolls.
    epochs : int
        The most passes over the training set.
    patience : int
        Stop after this many epochs without a better validation NLL.
    seed : int
        Weights and batch order.
    backend, dtype : str, optional
        Where and in what precision to train. Default NumPy, float32.
    batch_size : int, optional
        Chorales per batch. Default 16.
    evaluate_test : bool, optional
        Also report the test NLL of the best params.

    Returns
    -------
    dict
        ``valid`` (best validation NLL), ``epoch`` (its epoch, 0: before training), ``epochs_run``,
        ``history`` (training and validation NLL per epoch), ``test`` (with ``evaluate_test``), ``seconds``.
    """
    import arrayrnn as ar

    started = time.perf_counter()
    model = model_for(variant, KEYS, hidden, seed=_seed(seed, "weights"), dtype=dtype, backend=backend)
    params = {
        "model": model.params,
        "readout": _init_readout(hidden, data["train"], _seed(seed, "readout"), backend, dtype),
    }
    optimizer = ar.optim.Adam(lr=lr, clip_norm=1.0)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(_seed(seed, "order"))
    train = data["train"]
    valid_batches = _batches(data["valid"], np.arange(len(data["valid"])), 4 * batch_size, backend, dtype)
    valid_initial = _evaluate(model, params, valid_batches)
    best_params, best_valid, best_epoch = params, valid_initial, 0
    history = []
    epoch = 0
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        for x, target, lengths in _batches(train, rng.permutation(len(train)), batch_size, backend, dtype):
            loss, grads = loss_and_grads(model, params, x, target, lengths)
            params, opt_state = optimizer.update(params, grads, opt_state)
            total += float(loss) * sum(lengths)
            steps += sum(lengths)
        valid = _evaluate(model, params, valid_batches)
        history.append({"epoch": epoch, "train": total / steps, "valid": valid})
        if not math.isfinite(valid):
            break
        if valid < best_valid:
            best_params, best_valid, best_epoch = params, valid, epoch
        elif epoch - best_epoch >= patience:
            break
    result = {
        "valid_initial": valid_initial,
        "valid": best_valid,
        "epoch": best_epoch,
        "epochs_run": epoch,
        "history": history,
    }
    if evaluate_test:
        test_batches = _batches(data["test"], np.arange(len(data["test"])), 4 * batch_size, backend, dtype)
        result["test"] = _evaluate(model, best_params, test_batches)
    result["seconds"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------------------------
# the experiment


def _configs(trials: int, seed: int, hidden_range: tuple[int, int]) -> list[dict[str, Any]]:
    """The random search's candidates (the same for every variant): log-uniform hidden size and learning rate."""
    rng = np.random.default_rng(_seed(seed, "search"))
    low, high = hidden_range
    configs = []
    for _ in range(trials):
        hidden = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        lr = float(math.exp(rng.uniform(math.log(LEARNING_RATES[0]), math.log(LEARNING_RATES[1]))))
        configs.append({"hidden": hidden, "lr": float(f"{lr:.3g}")})
    return configs


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic of ``mean(a) - mean(b)`` and its two-sided p-value (NaN with under 2 values each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return (0.0, 1.0) if a.mean() == b.mean() else (math.copysign(math.inf, a.mean() - b.mean()), 0.0)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(t), _t_two_sided(abs(t), df)


def _t_two_sided(t: float, df: float) -> float:
    """``P(|T| > t)`` for Student's t with ``df`` degrees of freedom (Simpson's rule on the density)."""
    if not math.isfinite(t):
        return 0.0
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    n = 2000
    grid = np.linspace(0.0, t, n + 1)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
    weights = np.ones(n + 1)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    inside = float(density @ weights) * (t / n) / 3
    return max(0.0, min(1.0, 1.0 - 2.0 * inside))


def run(
    *,
    variants: Optional[Sequence[str]] = None,
    trials: int = FULL["trials"],
    epochs: int = FULL["epochs"],
    seeds: int = FULL["seeds"],
    patience: int = FULL["patience"],
    chorales: Optional[int] = FULL["chorales"],
    hidden_range: tuple[int, int] = FULL["hidden"],
    seed: int = 0,
    backend: str = "numpy",
    batch_size: int = BATCH,
    out: Path | str = "odyssey-results",
    cache: Path | str | None = None,
    rolls: Optional[Sequence[np.ndarray]] = None,
    stream: Optional[TextIO] = None,
) -> dict[str, Any]:
    """The whole experiment: search, retrain over seeds, compare with V; writes results.json, table.md, boxplot.png.

    Parameters
    ----------
    variants : sequence of str, optional
        Which variants (default: :func:`available_variants`); each is checked before anything trains.
    trials, epochs, seeds, patience : int, optional
        The budget, the same for every variant: random-search trials, the most epochs per model, retraining seeds
        of the best config, early-stopping patience (epochs).
    chorales : int, optional
        Use only this many chorales (a fixed random subset); ``None``: all.
    hidden_range : (int, int), optional
        The search's hidden sizes (log-uniform).
    seed : int, optional
        Fixes the split, the candidates, the weights and the batch order.
    backend : str, optional
        ``"numpy"`` (default) or ``"cupy"`` (any arrayrnn backend that trains).
    batch_size : int, optional
        Chorales per training batch. Default 16.
    out : path, optional
        The output directory (created).
    cache : path, optional
        The chorale cache directory (:func:`load_chorales`).
    rolls : sequence of numpy.ndarray, optional
        Piano rolls to use instead of the chorales (tests: no parsing).
    stream : file, optional
        Progress lines (default ``sys.stdout``).

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    stream = sys.stdout if stream is None else stream
    started = time.perf_counter()
    variants = list(variants) if variants is not None else available_variants()
    for variant in variants:
        model_for(variant, 2, 2, seed=0, backend="numpy")  # fails now, not after an hour, for an unknown one
    out = Path(out)
    _import_matplotlib()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OdysseyError(f"cannot create the output directory {out}: {error}") from None
    source = "synthetic rolls" if rolls is not None else "music21 Bach chorales (4-part)"
    if rolls is None:
        rolls, _names = load_chorales(cache, stream=stream)
    rolls = [np.asarray(r, dtype=np.uint8) for r in rolls if len(r) >= 2]
    if chorales is not None and chorales < len(rolls):
        keep = np.sort(np.random.default_rng(_seed(seed, "subset")).permutation(len(rolls))[:chorales])
        rolls = [rolls[i] for i in keep]
    parts = split(len(rolls), seed)
    data = {name: [rolls[i] for i in part] for name, part in zip(("train", "valid", "test"), parts)}
    steps = {name: sum(len(r) - 1 for r in value) for name, value in data.items()}
    stream.write(
        f"arrayrnn odyssey: {', '.join(variants)} on {backend}; {source}: {len(data['train'])}/{len(data['valid'])}/"
        f"{len(data['test'])} train/valid/test ({steps['train']} training steps); per variant {trials} trials x "
        f"<= {epochs} epochs (patience {patience}), then {seeds} seeds; seed {seed}\n"
    )
    configs = _configs(trials, seed, hidden_range)
    results: dict[str, Any] = {}
    for variant in variants:
        search = []
        for number, config in enumerate(configs, 1):
            trial = train_model(
                variant, config["hidden"], config["lr"], data,
                epochs=epochs, patience=patience, seed=_seed(seed, "trial", number), backend=backend,
                batch_size=batch_size,
            )  # fmt: skip
            search.append(
                {
                    **config,
                    "valid_initial": trial["valid_initial"],
                    "valid": trial["valid"],
                    "epoch": trial["epoch"],
                    "epochs_run": trial["epochs_run"],
                }
            )
            stream.write(
                f"  {variant:<4} trial {number}/{trials}: hidden {config['hidden']:>3}, lr {config['lr']:.2e} -> "
                f"valid NLL {trial['valid']:.3f} (best epoch {trial['epoch']}/{trial['epochs_run']}) "
                f"{trial['seconds']:.1f}s\n"
            )
            stream.flush()
        best = min(search, key=lambda s: s["valid"] if math.isfinite(s["valid"]) else math.inf)
        runs = []
        for repeat in range(seeds):
            final = train_model(
                variant, best["hidden"], best["lr"], data, epochs=epochs, patience=patience,
                seed=_seed(seed, "final", repeat), backend=backend, batch_size=batch_size, evaluate_test=True,
            )  # fmt: skip
            runs.append({"seed": repeat, "valid": final["valid"], "test": final["test"], "epoch": final["epoch"]})
            stream.write(
                f"  {variant:<4} seed {repeat + 1}/{seeds} (hidden {best['hidden']}, lr {best['lr']:.2e}): "
                f"test NLL {final['test']:.3f} {final['seconds']:.1f}s\n"
            )
            stream.flush()
        tests = [r["test"] for r in runs]
        results[variant] = {
            "search": search,
            "best": {"hidden": best["hidden"], "lr": best["lr"]},
            "runs": runs,
            "test_mean": float(np.mean(tests)),
            "test_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0,
            "paper": PAPER.get(variant, ""),
        }
    if "V" in results:
        for variant, result in results.items():
            if variant != "V":
                t, p = _welch([r["test"] for r in result["runs"]], [r["test"] for r in results["V"]["runs"]])
                result["welch_t_vs_V"], result["p_vs_V"] = t, p
    record = {
        "paper": "Greff et al. 2015, LSTM: A Search Space Odyssey (IEEE TNNLS 28(10), 2017)",
        "data": source,
        "sizes": {name: len(value) for name, value in data.items()},
        "steps": steps,
        "settings": {
            "variants": variants,
            "trials": trials,
            "epochs": epochs,
            "seeds": seeds,
            "patience": patience,
            "chorales": chorales,
            "hidden_range": list(hidden_range),
            "learning_rates": list(LEARNING_RATES),
            "batch": batch_size,
            "seed": seed,
            "backend": backend,
        },  # fmt: skip
        "candidates": configs,
        "variants": results,
        "seconds": 0.0,
    }
    record["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")
    table = _table(record)
    (out / "table.md").write_text(table)
    _boxplot(record, out / "boxplot.png")
    stream.write("\n" + table + f"\nwrote {out / 'results.json'}, {out / 'table.md'}, {out / 'boxplot.png'} "
                 f"({record['seconds']:.0f}s)\n")  # fmt: skip
    return record


def _table(record: dict[str, Any]) -> str:
    """The results as a Markdown table, the paper's finding beside each variant."""
    settings = record["settings"]
    lines = [
        f"Test NLL per time step (lower is better), mean ± std over {settings['seeds']} seeds of each variant's best "
        f"config from {settings['trials']} random-search trials (<= {settings['epochs']} epochs each); "
        f"p: Welch's t-test against V.",
        "",
        "| variant | hidden | lr | test NLL | p vs V | paper (music, JSB Chorales) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for variant, result in record["variants"].items():
        p = result.get("p_vs_V")
        p_text = "—" if p is None or not math.isfinite(p) else f"{p:.3f}"
        lines.append(
            f"| {variant} | {result['best']['hidden']} | {result['best']['lr']:.2e} | "
            f"{result['test_mean']:.3f} ± {result['test_std']:.3f} | {p_text} | {result['paper']} |"
        )
    return "\n".join(lines) + "\n"


def _import_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise OdysseyError(
            'the box plot needs matplotlib, which is not installed; install with: pip install ".[examples]"'
        ) from None
    return matplotlib


def _boxplot(record: dict[str, Any], path: Path) -> None:
    matplotlib = _import_matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["variants"])
    values = [[r["test"] for r in record["variants"][v]["runs"]] for v in names]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.0 + 0.8 * len(names)), 4))
    axis.boxplot(values)
    axis.set_xticks(range(1, len(names) + 1), names)
    axis.set_ylabel("test NLL per time step")
    axis.set_title(f"LSTM variants, {record['data']}\n({len(values[0])} seeds each; lower is better)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ----------------------------------------------------------------------------------------------
# command line


def main(args: argparse.Namespace) -> int:
    """Run ``arrayrnn odyssey`` with parsed arguments; a problem is one line on stderr and exit status 1."""
    import arrayrnn as ar

    budget = dict(QUICK if args.quick else FULL)
    for name in ("trials", "epochs", "seeds", "patience", "chorales"):
        if getattr(args, name) is not None:
            budget[name] = getattr(args, name)
    backend = args.backend or ar.get_backend()
    try:
        run(
            variants=args.variants, trials=budget["trials"], epochs=budget["epochs"], seeds=budget["seeds"],
            patience=budget["patience"], chorales=budget["chorales"] or None, hidden_range=budget["hidden"],
            seed=args.seed, backend=backend, out=args.out, cache=args.cache,
            rolls=synthetic_rolls(args.synthetic, args.seed) if args.synthetic else None,
        )  # fmt: skip
    except OdysseyError as error:
        print(f"arrayrnn odyssey: error: {error}", file=sys.stderr)
        return 1
    return 0


def _variant_list(text: str) -> list[str]:
    names = [item.strip().upper() for item in text.split(",") if item.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(VARIANTS)}, got {text!r}")
    return list(dict.fromkeys(names))


def add_parser(commands: Any) -> None:
    """Register ``arrayrnn odyssey`` on the CLI's subcommands.

    Parameters
    ----------
    commands : argparse subparsers
        What ``ArgumentParser.add_subparsers`` returned.
    """
    parser = commands.add_parser(
        "odyssey", help="Greff et al. 2015 (LSTM: A Search Space Odyssey) on Bach chorales: variants compared"
    )
    parser.add_argument("--quick", action="store_true", help="a subset of chorales and tiny budgets (< 3 minutes)")
    parser.add_argument("--backend", type=backend_name, help="numpy or cupy (default: $ARRAYRNN_BACKEND, else numpy)")
    parser.add_argument(
        "--variants", type=_variant_list, help=f"comma-separated, of {','.join(VARIANTS)} (default: all available)"
    )
    full, quick = FULL, QUICK
    parser.add_argument(
        "--trials",
        type=positive_int,
        help=f"random-search trials per variant ({full['trials']}; quick {quick['trials']})",
    )
    parser.add_argument(
        "--epochs", type=positive_int, help=f"most epochs per model ({full['epochs']}; quick {quick['epochs']})"
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        help=f"retraining seeds of the best config ({full['seeds']}; quick {quick['seeds']})",
    )
    parser.add_argument(
        "--patience", type=positive_int, help=f"early-stopping patience ({full['patience']}; quick {quick['patience']})"
    )
    parser.add_argument(
        "--chorales", type=non_negative_int, help=f"use this many chorales, 0: all (all; quick {quick['chorales']})"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="fixes split, search, weights (default 0)")
    parser.add_argument(
        "--out", type=Path, default=Path("odyssey-results"), help="output directory (default odyssey-results)"
    )
    parser.add_argument("--cache", type=Path, default=None, help=f"chorale cache directory (default {DEFAULT_CACHE})")
    parser.add_argument("--synthetic", type=positive_int, default=0, help=argparse.SUPPRESS)  # tests: N fake rolls
    parser.set_defaults(handler=main, parser=parser)
