"""What ``ar.save`` cannot write faithfully it refuses, so ``ar.load`` never gets a file it refuses or misreads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import arrayrnn as ar


@pytest.mark.parametrize("missing", ["bias_ih", "bias_hh"])
def test_a_model_of_one_bias_layers_is_refused_at_construction(missing):
    params = dataclasses.replace(ar.init_gru(3, 4, seed=0), **{missing: None})
    present = "bias_hh" if missing == "bias_ih" else "bias_ih"
    with pytest.raises(
        ValueError, match=rf"params\[0\]\[0\] has {present} but not {missing}: .*both biases or neither"
    ):
        ar.GRU.from_params(((params,),))
    # the sequence function runs it (and equals the same layer with the missing bias as zeros)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    zeros = dataclasses.replace(params, **{missing: np.zeros(12, "float32")})
    np.testing.assert_allclose(ar.gru(x, params)[0], ar.gru(x, zeros)[0], rtol=1e-6, atol=1e-6)


def test_save_refuses_what_the_file_cannot_hold(tmp_path):
    model = ar.LSTM(3, 4, seed=0)
    model.default_lengths = (5, 3)
    with pytest.raises(ValueError, match="model.default_lengths is set .* ar.save cannot store it"):
        ar.save(tmp_path / "m.npz", model)
    assert not (tmp_path / "m.npz").exists()
    model.default_lengths = None
    model.default_state = (np.zeros((1, 2, 4), "float32"), np.zeros((1, 2, 4), "float32"))
    with pytest.raises(ValueError, match="model.default_state is set"):
        ar.save(tmp_path / "m.npz", model)
    model.default_state = None
    ar.save(tmp_path / "m.npz", model)
    assert type(ar.load(tmp_path / "m.npz")) is ar.LSTM
