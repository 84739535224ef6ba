"""Generic core: written only against the array API standard; the reference for every backend."""
