"""Small helpers the course notes use: seeding, one-hot labels; and, loaded when first used, Keras 3's
``keras.utils`` image and file helpers (``load_img``, ``img_to_array``, ``array_to_img``, ``save_img``,
``image_dataset_from_directory``, ``get_file``, ``plot_model``)."""

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


def to_categorical(y, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """One-hot encode integer class labels.

    ``y`` of shape (..., ) or (..., 1) becomes (..., num_classes); ``num_classes`` defaults to
    ``max(y) + 1``. Labels must be integers in ``[0, num_classes)``.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and y.size and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"to_categorical needs integer labels, got dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


_LAZY = {"load_img": "convkit.preprocessing.image", "img_to_array": "convkit.preprocessing.image",
         "array_to_img": "convkit.preprocessing.image", "save_img": "convkit.preprocessing.image",
         "image_dataset_from_directory": "convkit.preprocessing.image", "get_file": "convkit._files",
         "plot_model": "convkit._model_graph", "model_to_dot": "convkit._model_graph"}


def __getattr__(name):
    # imported on first use: these modules import this one (for rng), and Pillow or pydot may be absent
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
