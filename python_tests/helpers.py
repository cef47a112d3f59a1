"""Moving arrays between devices in tests."""

import numpy as np


def to_device(a, device):
    """A float32 copy of a NumPy array on 'cpu' (NumPy) or 'cuda' (CuPy)."""
    a = np.ascontiguousarray(a)
    if device == "cuda":
        import cupy

        return cupy.asarray(a)
    return a.copy()


def to_numpy(a):
    """Any array (NumPy or CuPy, or None) as NumPy."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.get()
