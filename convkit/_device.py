"""Array module and device helpers shared by layers, models and optimizers.

Every piece of convkit above the ops is written against ``xp`` (NumPy or CuPy),
chosen from the arrays it is handed; nothing here imports CuPy unless a GPU is used.
"""

from __future__ import annotations

import numpy as np

from convkit._backend import has_cuda, cuda_status, is_cupy

DEVICES = ("auto", "cpu", "cuda")


def xp_of(a):
    """numpy or cupy, whichever owns ``a``."""
    if is_cupy(a):
        import cupy

        return cupy
    return np


def device_of(a) -> str:
    return "cuda" if is_cupy(a) else "cpu"


def resolve_device(device) -> str:
    """'cpu' or 'cuda' for 'auto' | 'cpu' | 'cuda' | None (None and 'auto' pick the GPU when usable)."""
    if device is None:
        device = "auto"
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if has_cuda() else "cpu"
    if device == "cuda" and not has_cuda():
        raise RuntimeError(f"device='cuda' was requested but CUDA is {cuda_status()}")
    return device


def to_device(a, device: str, dtype=None):
    """``a`` on 'cpu' (NumPy) or 'cuda' (CuPy); no copy when it is already there with that dtype."""
    if device == "cuda":
        import cupy

        return cupy.asarray(a, dtype=dtype)
    if is_cupy(a):
        a = a.get()
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    """Any array (NumPy, CuPy) or scalar as NumPy."""
    if is_cupy(a):
        return a.get()
    return np.asarray(a)
