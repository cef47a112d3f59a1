"""Moving arrays between devices in tests, and real data sets when they can be had."""

import os

import numpy as np
import pytest


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


def real_data(loader, name):
    """``loader()``'s data; where it cannot be had the test skips, except in CI, which must have it."""
    from convkit.datasets import DataUnavailableError

    try:
        return loader()
    except DataUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be available in CI: {exc}")
        pytest.skip(f"{name} not available here: {str(exc).splitlines()[0]}")
