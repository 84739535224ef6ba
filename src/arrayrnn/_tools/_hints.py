"""Install hints for optional packages, as they work from a clone of the repository (the README's extras)."""

#: install hints as they work from a clone of the repository (the README's extras; torch pinned: an
#: unpinned install pulls a multi-GB CUDA build)
INSTALL_HINTS = {
    "cupy": 'pip install ".[cuda12]"  (or ".[cuda13]" for CUDA 13)',
    "array_api_strict": 'pip install ".[strict]"',
    "torch": 'pip install "torch==2.13.0"  (pinned: see "What each capability needs" in the README)',
    "jax": 'pip install ".[jax]"',
    "dask": 'pip install ".[dask]"',
    "numba": 'pip install ".[numba]"',
    "onnxruntime": 'pip install ".[onnx]"',
    "onnx": 'pip install ".[onnx]"',
    "threadpoolctl": 'pip install ".[bench]"',
    "matplotlib": 'pip install ".[bench]"',
    "music21": 'pip install ".[examples]"',
}
