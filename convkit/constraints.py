"""Weight constraints, as Keras's: projections the optimizer applies to a weight after each update
(``MaxNorm``, ``MinMaxNorm``, ``NonNeg``, ``UnitNorm``), with Keras's definitions and names."""

from __future__ import annotations

from convkit import _serial
from convkit._device import xp_of

EPSILON = 1e-7  # Keras's backend.epsilon()


class Constraint:
    """Base class: ``__call__(w)`` returns the projected weight (here, ``w`` unchanged)."""

    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _norms(w, axis):
    xp = xp_of(w)
    return xp.sqrt(xp.sum(w * w, axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=True))


@_serial.register_serializable
class MaxNorm(Constraint):
    """Scales each weight vector (the slices along ``axis``) down to a norm of at most ``max_value``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        return w * (xp_of(w).clip(norms, 0, self.max_value) / (EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


@_serial.register_serializable
class MinMaxNorm(Constraint):
    """Moves each weight vector's norm into [min_value, max_value], by the fraction ``rate`` per update."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * xp_of(w).clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


@_serial.register_serializable
class NonNeg(Constraint):
    """Negative weights become 0."""

    def __call__(self, w):
        return xp_of(w).maximum(w, 0)


@_serial.register_serializable
class UnitNorm(Constraint):
    """Each weight vector (the slices along ``axis``) scaled to norm 1."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


max_norm, min_max_norm, non_neg, unit_norm = MaxNorm, MinMaxNorm, NonNeg, UnitNorm

_TABLE = {"max_norm": MaxNorm, "min_max_norm": MinMaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm,
          "maxnorm": MaxNorm, "minmaxnorm": MinMaxNorm, "nonneg": NonNeg, "unitnorm": UnitNorm}


def get(identifier):
    """None, a name ('max_norm', 'non_neg', 'unit_norm', 'min_max_norm' or the class name), a config dict,
    or a callable (an instance)."""
    c = _serial.get(identifier, _TABLE, "constraint")
    if c is not None and not callable(c):
        raise TypeError(f"constraint {identifier!r} is not callable; use a convkit.constraints.Constraint")
    return c


def serialize(constraint):
    """Its {'class_name', 'config'}, or None for no constraint."""
    return None if constraint is None else _serial.serialize(constraint)


__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "max_norm", "min_max_norm", "non_neg",
           "unit_norm", "get", "serialize"]
