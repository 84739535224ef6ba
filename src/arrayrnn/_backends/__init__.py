"""Backend fast paths (NumPy, CuPy): one package per backend, imported only when a call on it needs it."""
