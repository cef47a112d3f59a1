"""Small helpers the course notes use: seeding, one-hot labels."""

from __future__ import annotations

import random
import sys

import numpy as np

_rng = np.random.default_rng()


def rng() -> np.random.Generator:
    """The generator behind weight initialisation, dropout masks and shuffling."""
    return _rng


def set_random_seed(seed: int) -> None:
    """Seed convkit's generator (and Python's, NumPy's legacy one and CuPy's when loaded)."""
    global _rng
    _rng = np.random.default_rng(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "cupy" in sys.modules:
        sys.modules["cupy"].random.seed(seed % 2**32)


def get_rng_state() -> dict:
    """JSON-serialisable state of convkit's generator (for checkpoints)."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    _rng.bit_generator.state = state


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer labels: shape (N,) or (N, 1) -> (N, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"to_categorical: labels must have shape (N,) or (N, 1), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("to_categorical: labels must be whole numbers")
        y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out
