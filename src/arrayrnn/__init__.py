"""arrayrnn: RNN, LSTM and GRU written once against the Python array API standard.

The same call runs on NumPy, CuPy, torch, JAX and array-api-strict arrays: functions follow the
namespace of their inputs; functions that create arrays use the selected backend.
"""

from __future__ import annotations

from . import convert, optim
from ._version import __version__
from .backend import (
    BackendMismatchError,
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    to_backend,
    to_numpy,
    use_backend,
)
from .cells import gru_cell, lstm_cell, rnn_cell
from .grad import vjp
from .introspect import explain
from .io import load, save
from .models import GRU, LSTM, LSTM_VARIANTS, RNN
from .params import GRUParams, LSTMParams, RNNParams, init_gru, init_lstm, init_rnn
from .sequence import gru, lstm, rnn

__all__ = [
    "BackendMismatchError",
    "BackendUnavailableError",
    "GRU",
    "GRUParams",
    "LSTM",
    "LSTMParams",
    "LSTM_VARIANTS",
    "RNN",
    "RNNParams",
    "__version__",
    "available_backends",
    "convert",
    "explain",
    "get_backend",
    "gru",
    "gru_cell",
    "init_gru",
    "init_lstm",
    "init_rnn",
    "load",
    "lstm",
    "lstm_cell",
    "optim",
    "rnn",
    "rnn_cell",
    "save",
    "set_backend",
    "to_backend",
    "to_numpy",
    "use_backend",
    "vjp",
]
