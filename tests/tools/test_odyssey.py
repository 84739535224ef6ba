"""``arrayrnn odyssey``: piano rolls, the split, the loss and its gradient, and a quick run on synthetic rolls."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn._tools import cli, odyssey


def test_piano_roll_of_a_hand_made_stream():
    from music21 import chord, note, stream, tie

    part = stream.Stream()
    part.insert(0, note.Note("C4", quarterLength=1))  # MIDI 60, beat 0
    part.insert(0, chord.Chord(["G3", "D5"], quarterLength=1.5))  # 55, 74: beats 0, 1 (not 1.5)
    part.insert(1, note.Note("E4", quarterLength=2))  # 64: beats 1, 2
    part.insert(3, note.Note("A0", quarterLength=1))  # 21: the lowest key, beat 3
    part.insert(3, note.Note("C8", quarterLength=1))  # 108: the highest key, beat 3
    part.insert(3, note.Note("G#0", quarterLength=1))  # 20: below the piano, left out
    part.insert(3.5, note.Note("A4", quarterLength=0.5))  # 69: sounds at no beat
    first, second = note.Note("F4", quarterLength=1), note.Note("F4", quarterLength=1)  # 65 tied: beats 4, 5
    first.tie, second.tie = tie.Tie("start"), tie.Tie("stop")
    part.insert(4, first)
    part.insert(5, second)
    roll = odyssey.stream_to_roll(part)
    expected = [{60, 55, 74}, {55, 74, 64}, {64}, {21, 108}, {65}, {65}]
    assert roll.shape == (6, 88) and roll.dtype == np.uint8
    assert [set((np.flatnonzero(row) + 21).tolist()) for row in roll] == expected


def test_split_is_fixed_by_the_seed_disjoint_and_complete():
    train, valid, test = odyssey.split(100, seed=3)
    again = odyssey.split(100, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again))
    assert (len(train), len(valid), len(test)) == (60, 20, 20)
    together = np.concatenate([train, valid, test])
    assert len(set(together.tolist())) == 100 and set(together.tolist()) == set(range(100))
    assert not np.array_equal(odyssey.split(100, seed=4)[0], train)
    assert all(len(part) >= 1 for part in odyssey.split(3, seed=0))


def test_nll_matches_an_independent_float64_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(5, 3, 88))
    target = (rng.random((5, 3, 88)) < 0.1).astype(float)
    lengths = [5, 2, 4]
    mask = (np.arange(5)[:, None] < np.array(lengths))[..., None].astype(float)
    got = float(odyssey.nll(logits, target, mask))
    total = 0.0  # -log p(target) of independent Bernoulli keys, valid steps only, per valid step
    for b, length in enumerate(lengths):
        for t in range(length):
            p = 1.0 / (1.0 + np.exp(-logits[t, b]))
            total -= float(np.sum(target[t, b] * np.log(p) + (1 - target[t, b]) * np.log(1 - p)))
    assert got == pytest.approx(total / sum(lengths), rel=1e-12)


def _leaves(tree):
    """The arrays of a params tree, in a fixed order (``None`` fields left out)."""
    if tree is None:
        return []
    if dataclasses.is_dataclass(tree):
        return [leaf for f in dataclasses.fields(tree) for leaf in _leaves(getattr(tree, f.name))]
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [tree]


def _combine(function, tree, other):
    """``function(a, b)`` leaf by leaf over two trees of the same structure."""
    if tree is None:
        return None
    if dataclasses.is_dataclass(tree):
        return dataclasses.replace(
            tree,
            **{
                f.name: _combine(function, getattr(tree, f.name), getattr(other, f.name))
                for f in dataclasses.fields(tree)
            },
        )
    if isinstance(tree, (tuple, list)):
        return type(tree)(_combine(function, a, b) for a, b in zip(tree, other))
    if isinstance(tree, dict):
        return {key: _combine(function, tree[key], other[key]) for key in tree}
    return function(tree, other)


@pytest.mark.parametrize("variant", odyssey.available_variants())
def test_gradient_of_the_loss_matches_central_differences(variant):
    rng = np.random.default_rng(1)
    model = odyssey.model_for(variant, 88, 3, seed=2, dtype="float64")
    weight = rng.uniform(-0.5, 0.5, size=(88, 3))
    params = {"model": model.params, "readout": {"weight": weight, "bias": rng.normal(-2.0, 1.0, size=88)}}
    rolls = [(rng.random((steps, 88)) < 0.2).astype(np.uint8) for steps in (6, 3)]
    x, target, lengths = odyssey._batch(rolls, "numpy", "float64")
    loss, grads = odyssey.loss_and_grads(model, params, x, target, lengths)

    def loss_at(current):
        hidden, _ = model.apply(current["model"], x, lengths=lengths)
        logits = odyssey._readout(np, hidden, current["readout"])
        return float(odyssey.nll(logits, target, odyssey._mask(np, x, lengths)))

    assert float(loss) == pytest.approx(loss_at(params), rel=1e-12)
    for trial in range(3):  # directional derivatives along random directions through every parameter
        direction = _combine(lambda a, _: rng.standard_normal(a.shape), params, params)
        plus = loss_at(_combine(lambda a, d: a + 1e-6 * d, params, direction))
        minus = loss_at(_combine(lambda a, d: a - 1e-6 * d, params, direction))
        numeric = (plus - minus) / 2e-6
        analytic = sum(float(np.sum(g * d)) for g, d in zip(_leaves(grads), _leaves(direction)))
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), trial
    # and the readout's bias entry by entry (the hand-written part)
    for key in (0, 40, 87):
        bumped = [dict(params["readout"]) for _ in range(2)]
        for sign, readout in zip((1, -1), bumped):
            readout["bias"] = params["readout"]["bias"].copy()
            readout["bias"][key] += sign * 1e-6
        numeric = (loss_at({**params, "readout": bumped[0]}) - loss_at({**params, "readout": bumped[1]})) / 2e-6
        assert float(grads["readout"]["bias"][key]) == pytest.approx(numeric, rel=1e-6, abs=1e-10)


def test_model_for_builds_the_available_variants():
    for variant in odyssey.available_variants():
        model = odyssey.model_for(variant, 4, 3, seed=0, dtype="float64")
        assert isinstance(model, ar.LSTM) and model.dtype == "float64" and model.hidden_size == 3
    with pytest.raises(odyssey.OdysseyError, match="unknown LSTM variant 'XYZ'"):
        odyssey.model_for("XYZ", 4, 3)


def test_cache_is_written_once_and_read_back(tmp_path, monkeypatch):
    rolls = odyssey.synthetic_rolls(5, seed=1)
    calls = []

    def parse(stream):
        calls.append(1)
        return rolls, [f"bwv{k}.mxl" for k in range(5)]

    monkeypatch.setattr(odyssey, "_parse_corpus", parse)
    first, names = odyssey.load_chorales(tmp_path, stream=io.StringIO())
    again, names_again = odyssey.load_chorales(tmp_path, stream=io.StringIO())
    assert len(calls) == 1 and (tmp_path / odyssey.CACHE_NAME).is_file()
    assert names == names_again == [f"bwv{k}.mxl" for k in range(5)]
    assert all(np.array_equal(a, b) and b.dtype == np.uint8 for a, b in zip(rolls, again))


def test_missing_music21_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "music21", None)  # import music21 -> ImportError
    with pytest.raises(odyssey.OdysseyError, match=r'pip install "\.\[examples\]"'):
        odyssey.load_chorales(tmp_path / "empty", stream=io.StringIO())
    code = cli.main(["odyssey", "--quick", "--cache", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "music21" in err and ".[examples]" in err


def test_an_unknown_variant_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # a usage error, from the argument parser
        cli.main(["odyssey", "--variants", "V,XYZ", "--synthetic", "9", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and "got 'V,XYZ'" in captured.err and captured.out == ""
    with pytest.raises(odyssey.OdysseyError, match="unknown LSTM variant 'XYZ'"):
        odyssey.run(variants=["V", "XYZ"], rolls=odyssey.synthetic_rolls(9, seed=0), out=tmp_path / "out")
    assert captured.err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_quick_run_on_synthetic_rolls_writes_its_files_and_learns(tmp_path):
    settings = dict(trials=2, epochs=8, seeds=2, patience=2, hidden_range=(8, 16), batch_size=3, seed=5)
    rolls = odyssey.synthetic_rolls(30, seed=0, low=12, high=24)
    out = io.StringIO()
    record = odyssey.run(variants=["V", "NP"], rolls=rolls, out=tmp_path, stream=out, **settings)
    for name in ("results.json", "table.md", "boxplot.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sizes"] == {"train": 18, "valid": 6, "test": 6} and list(saved["variants"]) == ["V", "NP"]
    for result in record["variants"].values():
        assert all(trial["valid"] < trial["valid_initial"] for trial in result["search"])  # every trial learns
        assert min(trial["valid_initial"] - trial["valid"] for trial in result["search"]) > 0.5
        assert max(trial["valid_initial"] - trial["valid"] for trial in result["search"]) > 3.0
        assert len(result["runs"]) == 2 and all(r["test"] < 12.0 for r in result["runs"])
    assert math.isfinite(record["variants"]["NP"]["p_vs_V"])
    table = (tmp_path / "table.md").read_text()
    assert "| V |" in table and "| NP |" in table and "no significant difference" in table
    assert "trial 2/2" in out.getvalue() and "seed 2/2" in out.getvalue()


def test_training_is_deterministic_for_a_fixed_seed():
    rolls = odyssey.synthetic_rolls(9, seed=1, low=8, high=12)
    data = dict(zip(("train", "valid", "test"), ([rolls[i] for i in part] for part in odyssey.split(9, seed=0))))
    runs = [
        odyssey.train_model("V", 6, 1e-2, data, epochs=2, patience=2, seed=s, evaluate_test=True) for s in (3, 3, 4)
    ]
    assert runs[0]["history"] == runs[1]["history"] and runs[0]["test"] == runs[1]["test"]
    assert runs[0]["history"] != runs[2]["history"]
    assert odyssey._configs(4, 0, (32, 128)) == odyssey._configs(4, 0, (32, 128)) != odyssey._configs(4, 1, (32, 128))


def test_cli_runs_on_synthetic_rolls(tmp_path, capsys):
    args = ["odyssey", "--synthetic", "12", "--variants", "CIFG", "--trials", "1", "--epochs", "2", "--seeds", "2"]
    assert cli.main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CIFG" in out and "synthetic rolls" in out and "table.md" in out
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["trials"] == 1


def test_training_uses_only_the_array_api():
    import array_api_strict  # noqa: F401  (in the test extra: a missing one fails here)

    rolls = odyssey.synthetic_rolls(9, seed=1, low=8, high=12)
    data = dict(zip(("train", "valid", "test"), ([rolls[i] for i in part] for part in odyssey.split(9, seed=0))))
    runs = [
        odyssey.train_model("V", 6, 1e-2, data, epochs=2, patience=2, seed=3, evaluate_test=True, backend=backend)
        for backend in ("array_api_strict", "numpy")
    ]
    assert runs[0]["test"] == pytest.approx(runs[1]["test"], rel=1e-5)
