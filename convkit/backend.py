"""Keras's ``backend`` functions the course notes call (``keras.backend`` / ``tf.keras.backend``).

convkit computes in float32 with channels-last (NHWC) images; the setters accept those values and
refuse others. ``epsilon`` is the fuzz factor the losses clip probabilities with.
"""

from __future__ import annotations

import gc
import sys

_epsilon = 1e-7


def clear_session(free_memory: bool = True) -> None:
    """Start afresh as Keras does: layer names count from the start again ('dense', 'dense_1', ...) and,
    with ``free_memory``, unreferenced arrays are collected and CuPy's pool hands back its free blocks."""
    from convkit.layers.base import _name_counts

    _name_counts.clear()
    if free_memory:
        gc.collect()
        if "cupy" in sys.modules:
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()


def image_data_format() -> str:
    """'channels_last': images are (batch, height, width, channels)."""
    return "channels_last"


def set_image_data_format(data_format: str) -> None:
    """Only 'channels_last' is supported."""
    if data_format != "channels_last":
        raise ValueError(f"set_image_data_format: convkit supports only 'channels_last', got {data_format!r}")


def floatx() -> str:
    """'float32', the type of every weight and activation."""
    return "float32"


def set_floatx(value: str) -> None:
    """Only 'float32' is supported."""
    if value not in ("float32",):
        raise ValueError(f"set_floatx: convkit supports only 'float32', got {value!r}")


def epsilon() -> float:
    """The fuzz factor (default 1e-7) the losses clip probabilities to [epsilon, 1 - epsilon] with."""
    return _epsilon


def set_epsilon(value: float) -> None:
    """Set the fuzz factor returned by ``epsilon()``; it must lie in (0, 0.5)."""
    global _epsilon
    value = float(value)
    if not 0 < value < 0.5:
        raise ValueError(f"set_epsilon: epsilon must be in (0, 0.5), got {value}")
    _epsilon = value


__all__ = ["clear_session", "image_data_format", "set_image_data_format", "floatx", "set_floatx", "epsilon",
           "set_epsilon"]
