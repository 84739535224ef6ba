"""Test helpers: move NumPy inputs to a backend and results back, with placement checks."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

import arrayrnn as ar
from arrayrnn.backend import backend_name, namespace

#: for a test outside ``tests/cupy_backend/experimental`` whose subject leans on the experimental CuPy paths (the
#: dispatch switches of the GPU benchmark tools: ``policy`` imports ``experimental/`` to weigh CLUSTER_AUTO): runs
#: wherever ``_backends/cupy/experimental`` is, skips, saying why, where it was deleted
needs_experimental = pytest.mark.skipif(
    importlib.util.find_spec("arrayrnn._backends.cupy.experimental") is None,
    reason="needs arrayrnn._backends.cupy.experimental (deleted here): the switches it weighs are its paths'",
)


class Backend:
    """One backend under test. ``asarray`` makes inputs; ``numpy`` checks placement and brings results back.

    NumPy inputs are made read-only, so every NumPy test also proves inputs are never written.
    array_api_strict arrays live on a non-default device, so every strict test also proves that
    nothing is created on, or copied to, the default device behind the caller's back.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.xp = namespace(name)
        self.device: Any = None
        if name == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # the suite compares float64 results too
        if name == "array_api_strict":
            import array_api_strict

            self.device = array_api_strict.Device("device1")

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def asarray(self, value: Any) -> Any:
        if value is None:
            return None
        array = np.array(value, copy=True)
        array.flags.writeable = False
        if self.name == "numpy":
            return array
        return ar.to_backend(array, self.name, device=self.device)

    def tree(self, tree: Any) -> Any:
        """Move every NumPy array in a params object / tuple / dict to this backend."""
        from arrayrnn.backend import map_arrays

        return map_arrays(self.asarray, tree)

    def numpy(self, array: Any, dtype: Any = None) -> np.ndarray:
        """Check ``array`` is on this backend (and device, and of ``dtype``), then copy it to NumPy."""
        assert backend_name(array) == self.name, f"result is on {backend_name(array)}, expected {self.name}"
        if self.device is not None:
            import array_api_compat

            assert array_api_compat.device(array) == self.device, "result left the input device"
        result = ar.to_numpy(array)
        if dtype is not None:
            assert result.dtype == np.dtype(dtype), f"result dtype {result.dtype}, expected {dtype}"
        return result


def tolerance(dtype: Any, steps: int = 1) -> dict[str, float]:
    """rtol/atol for comparing against a float64 reference; grows slowly with sequence length."""
    growth = max(1.0, np.sqrt(steps))
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-10 * growth, "atol": 1e-10 * growth}
    if np.dtype(dtype) == np.float16:
        return {"rtol": 2e-2, "atol": 2e-2}
    return {"rtol": 1e-5 * growth, "atol": 1e-5 * growth}


def random_params(
    kind: str, input_size: int, hidden_size: int, *, seed: int, dtype: str = "float64", **extra: Any
) -> Any:
    """NumPy params with non-zero random biases (a zero bias hides wrong-gate bugs)."""
    init = {"rnn": ar.init_rnn, "lstm": ar.init_lstm, "gru": ar.init_gru}[kind]
    return init(input_size, hidden_size, seed=seed, dtype=dtype, backend="numpy", **extra)
