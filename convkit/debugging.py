"""Opt-in checks for NaN and Inf, in the manner of ``tf.debugging.enable_check_numerics``.

    convkit.debugging.enable_check_numerics()   # fit / evaluate / predict refuse non-finite inputs
    convkit.debugging.disable_check_numerics()

Off by default: the check reads every input batch once more. To stop training cleanly when the
loss itself goes NaN, use ``convkit.callbacks.TerminateOnNaN``.
"""

from __future__ import annotations

import numpy as np

from convkit._backend import is_cupy

_enabled = False


def enable_check_numerics() -> None:
    """Make fit, evaluate and predict raise ValueError on input batches holding NaN or Inf."""
    global _enabled
    _enabled = True


def disable_check_numerics() -> None:
    global _enabled
    _enabled = False


def check_numerics_enabled() -> bool:
    return _enabled


def check_finite(a, who: str) -> None:
    """Raise ValueError naming ``who`` and the first bad position when ``a`` holds NaN or Inf."""
    xp = np
    if is_cupy(a):
        import cupy as xp
    bad = ~xp.isfinite(a)
    if bool(bad.any()):
        first = tuple(int(i) for i in np.unravel_index(int(xp.argmax(bad.ravel())), a.shape))
        kind = "NaN" if bool(xp.isnan(a[first])) else "Inf"
        raise ValueError(f"{who} holds {int(bad.sum())} NaN/Inf value(s); the first, {kind}, at index {first} "
                         "(check_numerics is enabled)")
