"""Greff et al.'s nine LSTMs as models: ``ar.LSTM(..., variant=...)``, stacks, saving, torch-style names, gradients.

The one-layer functions are checked against the paper's equations in ``test_greff_variants.py``; here the same
torch transcription (:func:`tests.core.test_greff_variants._oracle`) runs layer by layer and direction by direction
as the oracle of whole stacks, and central finite differences check the gradients of a stack.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import arrayrnn as ar
from tests.core.test_greff_variants import _oracle

PAPER = {
    "V": {},
    "NIG": {"input_gate": False},
    "NFG": {"forget_gate": False},
    "NOG": {"output_gate": False},
    "NIAF": {"input_activation": "identity"},
    "NOAF": {"output_activation": "identity"},
    "NP": {},
    "CIFG": {"coupled": True},
    "FGR": {},
}
CALL_OPTIONS = ("coupled", "input_gate", "forget_gate", "output_gate", "input_activation", "output_activation")


def test_the_table_is_the_paper():
    """Every variant is the vanilla LSTM with peepholes, changed in one place (NP: the peepholes removed)."""
    assert list(ar.LSTM_VARIANTS) == list(PAPER)
    for name, options in ar.LSTM_VARIANTS.items():
        model = ar.LSTM(3, 4, variant=name, seed=0)
        assert model.variant == name
        assert model.peepholes is (name != "NP")
        assert model.gate_recurrence is (name == "FGR")
        for option in CALL_OPTIONS:
            default = ar.LSTM(3, 4, seed=0).config()[option]
            assert model.config()[option] == PAPER[name].get(option, default), (name, option)
        assert {k: v for k, v in options.items() if k not in ("peepholes", "gate_recurrence")} == PAPER[name]
    assert ar.LSTM(3, 4, seed=0).variant == "NP"  # torch's LSTM is the paper's "no peepholes"
    assert ar.LSTM(3, 4, peepholes=True, input_gate=False, coupled=False, seed=0).variant == "NIG"
    assert ar.LSTM(3, 4, peepholes=True, input_activation="identity", output_gate=False, seed=0).variant is None


def test_variant_conflicts_and_unknown_names_are_refused():
    assert ar.LSTM(3, 4, variant="NIG", peepholes=True).variant == "NIG"  # agreeing, or at the default: fine
    with pytest.raises(ValueError, match=r"variant='NP' sets peepholes=False, but peepholes=True was given"):
        ar.LSTM(3, 4, variant="NP", peepholes=True)
    with pytest.raises(ValueError, match=r"variant must be one of 'V', 'NIG'.* got 'LSTM'"):
        ar.LSTM(3, 4, variant="LSTM")
    with pytest.raises(ValueError, match="forget_gate"):
        ar.LSTM(3, 4, coupled=True, forget_gate=False)
    # options beyond the variant's are kept
    model = ar.LSTM(3, 4, variant="NIG", proj_size=2, clip=3.0, seed=0)
    assert (model.input_gate, model.proj_size, model.clip, model.variant) == (False, 2, 3.0, "NIG")


def _stack_oracle(model, x, state, lengths):
    """The stack through the torch oracle, layer by layer: ``y`` and the final states ``(L*D, B, ·)`` each."""
    options = {name: model.config()[name] for name in CALL_OPTIONS}
    if model.clip is not None:
        options["clip"] = model.clip
    layer_input, finals = x, []
    for layer, layer_params in enumerate(model.params):
        outputs = []
        for direction, params in enumerate(layer_params):
            index = layer * model.num_directions + direction
            initial = tuple(np.asarray(s[index]) for s in state)
            zero_cotangent = (
                np.zeros((*layer_input.shape[:2], params.output_size)),
                tuple(map(np.zeros_like, initial)),
            )
            y, final, _ = _oracle(
                ar.to_numpy(params), layer_input, initial, zero_cotangent, lengths=lengths,
                reverse=(direction == 1) != model.reverse, **options,
            )  # fmt: skip
            outputs.append(y)
            finals.append(final)
        layer_input = np.concatenate(outputs, axis=-1)
    return layer_input, [np.stack([f[k] for f in finals]) for k in range(len(finals[0]))]


def _random_state(model, batch, rng):
    count = model.num_layers * model.num_directions
    state = [rng.standard_normal((count, batch, model.output_size)), rng.standard_normal((count, batch, 4))]
    if model.gate_recurrence:
        state.append(rng.uniform(0.05, 0.95, (count, batch, 12)))
    return tuple(state)


@pytest.mark.parametrize("name", list(PAPER))
def test_stacks_of_every_variant_match_the_equations(backend, name):
    extra = {"NIG": {"proj_size": 2}, "NOAF": {"clip": 0.8}}.get(name, {})
    model = ar.LSTM(3, 4, 2, variant=name, bidirectional=name != "CIFG", reverse=name == "CIFG", seed=1,
                    dtype="float64", **extra)  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 3))
    state = _random_state(model, 3, rng)
    lengths = [5, 2, 4]
    expected_y, expected_finals = _stack_oracle(model, x, state, lengths)
    moved = model.to(backend.name, device=backend.device)
    y, finals = moved(backend.asarray(x), backend.tree(state), lengths=backend.asarray(np.array(lengths)))
    np.testing.assert_allclose(backend.numpy(y), expected_y, rtol=1e-10, atol=1e-12)
    assert len(finals) == (3 if name == "FGR" else 2)
    for got, want in zip(finals, expected_finals, strict=True):
        np.testing.assert_allclose(backend.numpy(got), want, rtol=1e-10, atol=1e-12)


def test_gradients_of_a_gate_recurrent_stack_match_finite_differences():
    model = ar.LSTM(2, 3, 2, variant="FGR", bidirectional=True, seed=3, dtype="float64")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 2, 2))
    state = tuple(0.5 * s for s in _random_state_sized(model, 2, rng))
    dy = rng.standard_normal((4, 2, 6))
    d_final = tuple(rng.standard_normal(s.shape) for s in state)
    out, pullback = ar.vjp(model.apply, model.params, x, state)
    d_params, d_x, d_state = pullback((dy, d_final))

    def loss(params, x, state):
        y, finals = model.apply(params, x, state)
        return float(np.sum(y * dy) + sum(np.sum(f * d) for f, d in zip(finals, d_final)))

    eps = 1e-6
    for _ in range(3):  # random directions in x, the state and weight_gg of the top layer's backward direction
        vx, vs = rng.standard_normal(x.shape), tuple(rng.standard_normal(s.shape) for s in state)
        top = model.params[1][1]
        vgg = rng.standard_normal(top.weight_gg.shape)

        def shifted(t, top=top, vgg=vgg, vx=vx, vs=vs):
            params = list(map(list, model.params))
            params[1][1] = type(top)(**{**top.arrays(), "weight_gg": top.weight_gg + t * vgg})
            return loss(tuple(map(tuple, params)), x + t * vx, tuple(s + t * v for s, v in zip(state, vs)))

        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        analytic = np.sum(d_x * vx) + sum(np.sum(g * v) for g, v in zip(d_state, vs))
        analytic += np.sum(d_params[1][1].weight_gg * vgg)
        assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-8)


def _random_state_sized(model, batch, rng):
    count = model.num_layers * model.num_directions
    hidden = model.hidden_size
    return (
        rng.standard_normal((count, batch, model.output_size)),
        rng.standard_normal((count, batch, hidden)),
        rng.uniform(0.05, 0.95, (count, batch, 3 * hidden)),
    )


@pytest.mark.parametrize("name", list(PAPER))
def test_save_load_and_state_dict_round_trip_every_variant(name):
    model = ar.LSTM(3, 4, 2, variant=name, bidirectional=True, seed=5)
    buffer = io.BytesIO()
    ar.save(buffer, model)
    buffer.seek(0)
    loaded = ar.load(buffer)
    assert loaded.config() == model.config() and loaded.variant == name
    state_dict = model.state_dict()
    assert ("weight_gg_l1_reverse" in state_dict) is (name == "FGR")
    again = ar.LSTM.from_state_dict(state_dict, **{k: model.config()[k] for k in CALL_OPTIONS})
    x = np.random.default_rng(6).standard_normal((5, 2, 3)).astype("float32")
    y = model(x)[0]
    np.testing.assert_array_equal(loaded(x)[0], y)
    np.testing.assert_array_equal(again(x)[0], y)


def test_gate_recurrent_model_states_are_triples():
    model = ar.LSTM(3, 4, 2, variant="FGR", seed=7)
    x = np.ones((5, 2, 3), dtype="float32")
    y, (h, c, g) = model(x)
    assert (h.shape, c.shape, g.shape) == ((2, 2, 4), (2, 2, 4), (2, 2, 12))
    zeros = tuple(np.zeros(s.shape, dtype="float32") for s in (h, c, g))
    np.testing.assert_array_equal(model(x, zeros)[0], y)  # zeros are the default state
    with pytest.raises(TypeError, match=r"state must be a tuple \(h_0, c_0, g_0\) of three arrays .* of length 2"):
        model(x, (h, c))
    with pytest.raises(ValueError, match=r"state\[2\] \(g_0\) must have shape \(num_layers\*num_directions, B, 3H\)"):
        model(x, (h, c, g[..., :4]))
