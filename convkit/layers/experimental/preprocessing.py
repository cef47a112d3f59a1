"""tf.keras 2's ``layers.experimental.preprocessing``: the same layers as ``convkit.layers``, with a
DeprecationWarning on use, as Keras 3 has them only in ``keras.layers``."""

import warnings

from convkit.layers import core as _core
from convkit.layers import preprocessing as _preprocessing

_NAMES = {"Rescaling": _core, **{name: _preprocessing for name in _preprocessing.__all__}}
__all__ = sorted(_NAMES)


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"layers.experimental.preprocessing.{name} is tf.keras 2's name; Keras 3 and convkit have it "
                  f"as layers.{name}", DeprecationWarning, stacklevel=2)
    return getattr(_NAMES[name], name)


def __dir__():
    return __all__
