"""Dropout against its definition and against torch: the empirical rates of the drawn masks (binomial bounds, fixed
seeds), ``dropout`` between layers equal to torch's ``nn.LSTM`` layers with the same masks injected, and equal to
``nn.LSTM(num_layers=2, dropout=p)`` in distribution."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn import _dropout
from tests.conftest import need


def _within_binomial(fraction: float, p: float, count: int) -> bool:
    return abs(fraction - p) <= 5.0 * np.sqrt(p * (1.0 - p) / count)  # 5 sigma: a fixed seed never flakes


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_drawn_masks_drop_at_rate_p_and_scale_the_rest(p):
    ones = np.ones((100, 40, 25))
    mask = np.asarray(_dropout.layer_dropout_mask(np.random.default_rng(0), p, ones, False))
    assert _within_binomial(float(np.mean(mask == 0)), p, mask.size)
    np.testing.assert_allclose(mask[mask != 0], 1.0 / (1.0 - p))
    request = _dropout.Request(recurrent_dropout=p, zoneout=p, train=True, rng=np.random.default_rng(1))
    x, state = np.zeros((100, 400, 3)), (np.zeros((400, 25)), np.zeros((400, 25)))
    drawn = _dropout.draw_regularization("lstm", request, np, "numpy", "cpu", x, state)
    recurrent = np.asarray(drawn.recurrent_mask)
    assert recurrent.shape == (400, 25) and _within_binomial(float(np.mean(recurrent == 0)), p, recurrent.size)
    for zone in drawn.zoneout_masks:  # 1 = the unit keeps its previous value, with probability p
        assert zone.shape == (100, 400, 25) and _within_binomial(float(np.mean(np.asarray(zone))), p, zone.size)


def _torch_stack(torch, model):
    """One single-layer ``nn.LSTM`` per layer of ``model`` (float64), with its weights."""
    layers = []
    for layer_params in model.params:
        p = ar.to_numpy(layer_params[0])
        module = torch.nn.LSTM(p.input_size, p.hidden_size).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(module, f"{name}_l0").copy_(torch.from_numpy(np.asarray(getattr(p, name))))
        layers.append(module)
    return layers


def test_dropout_between_layers_is_torchs_layers_with_the_same_masks():
    torch = need("torch")
    model = ar.LSTM(3, 5, 3, dropout=0.4, seed=0, dtype="float64")
    x = np.random.default_rng(1).standard_normal((6, 4, 3))
    y, (h_n, c_n) = model(x, train=True, seed=7)
    rng = np.random.default_rng(7)  # the documented draw order: only the output masks of layers 0 and 1
    layer_input = torch.from_numpy(x)
    finals = []
    with torch.no_grad():
        for index, module in enumerate(_torch_stack(torch, model)):
            out, (h, c) = module(layer_input)
            finals.append((h, c))
            if index < model.num_layers - 1:
                mask = (rng.random(tuple(out.shape)) >= 0.4) / 0.6
                out = out * torch.from_numpy(mask)
            layer_input = out
    np.testing.assert_allclose(y, layer_input.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, torch.cat([f[0] for f in finals]).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n, torch.cat([f[1] for f in finals]).numpy(), rtol=1e-12, atol=1e-12)


def test_dropout_between_layers_matches_torch_nn_lstm_in_distribution():
    """Mean and variance of every output over many draws: ``nn.LSTM(dropout=p)`` in training mode vs arrayrnn."""
    torch = need("torch")
    model = ar.LSTM(3, 4, 2, dropout=0.5, seed=2, dtype="float64")
    reference = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5).double()
    reference.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
    reference.train()
    x = np.random.default_rng(3).standard_normal((5, 2, 3))
    draws = 400
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = np.stack([reference(torch.from_numpy(x))[0].numpy() for _ in range(draws)])
    rng = np.random.default_rng(4)
    ours = np.stack([model(x, train=True, seed=rng)[0] for _ in range(draws)])
    assert not np.allclose(ours[0], ours[1])  # the generator advances: a new mask per call
    pooled = np.sqrt((theirs.var(axis=0) + ours.var(axis=0)) / draws)
    assert np.all(np.abs(theirs.mean(axis=0) - ours.mean(axis=0)) <= 5.0 * pooled + 1e-12)
    ratio = ours.var(axis=0).mean() / theirs.var(axis=0).mean()
    assert 0.8 < ratio < 1.25  # the same spread: the same rate and 1/(1-p) scaling


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradients_with_the_masks_fixed_equal_finite_differences(kind):
    """The same seed fixes every mask, so the trained function is smooth in params and x: central differences."""
    model = {"rnn": ar.RNN, "lstm": ar.LSTM, "gru": ar.GRU}[kind](
        3, 4, 2, bidirectional=True, dropout=0.3, recurrent_dropout=0.25, zoneout=0.2, seed=5, dtype="float64"
    )
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 2, 3))
    (y, final), pullback = ar.vjp(model.apply, model.params, x, train=True, seed=11)
    dy = rng.standard_normal(y.shape)
    d_params, d_x = pullback((dy, None))

    def loss(params, inputs):
        return float(np.sum(model.apply(params, inputs, train=True, seed=11)[0] * dy))

    top = model.params[1][1]
    direction_w = rng.standard_normal(top.weight_hh.shape)
    direction_x = rng.standard_normal(x.shape)

    def shifted(t):
        params = [list(layer) for layer in model.params]
        params[1][1] = type(top)(**{**top.arrays(), "weight_hh": top.weight_hh + t * direction_w})
        return loss(tuple(map(tuple, params)), x + t * direction_x)

    numeric = (shifted(1e-6) - shifted(-1e-6)) / 2e-6
    analytic = np.sum(d_params[1][1].weight_hh * direction_w) + np.sum(d_x * direction_x)
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-9)
