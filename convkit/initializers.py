"""Weight initialisers with Keras names and defaults; all draw from convkit's seeded generator."""

from __future__ import annotations

import math

import numpy as np

from convkit import _serial
from convkit.utils import rng


def _fans(shape):
    shape = tuple(shape)
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    def __call__(self, shape, dtype="float32"):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_serial.register_serializable
class Zeros(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype)


@_serial.register_serializable
class Ones(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype)


@_serial.register_serializable
class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.value, dtype)

    def get_config(self):
        return {"value": self.value}


@_serial.register_serializable
class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _gen(self):
        return np.random.default_rng(self.seed) if self.seed is not None else rng()

    def __call__(self, shape, dtype="float32"):
        return (self.mean + self.stddev * self._gen().standard_normal(shape)).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


@_serial.register_serializable
class RandomUniform(RandomNormal):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype="float32"):
        return self._gen().uniform(self.minval, self.maxval, shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


@_serial.register_serializable
class VarianceScaling(RandomNormal):
    """Keras' VarianceScaling: std = sqrt(scale / n), n the fan_in, fan_out or their mean."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        var = self.scale / max(1.0, n)
        g = self._gen()
        if self.distribution == "uniform":
            lim = math.sqrt(3 * var)
            return g.uniform(-lim, lim, shape).astype(dtype)
        if self.distribution == "untruncated_normal":
            return (math.sqrt(var) * g.standard_normal(shape)).astype(dtype)
        # normal truncated at two standard deviations, rescaled to keep the variance
        z = g.standard_normal(shape)
        bad = np.abs(z) > 2
        while bad.any():
            z[bad] = g.standard_normal(int(bad.sum()))
            bad = np.abs(z) > 2
        return (math.sqrt(var) / 0.87962566103423978 * z).astype(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _variant(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "get_config": lambda self: {"seed": self.seed}})
    return _serial.register_serializable(cls)


GlorotUniform = _variant("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variant("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeNormal = _variant("HeNormal", 2.0, "fan_in", "truncated_normal")
HeUniform = _variant("HeUniform", 2.0, "fan_in", "uniform")
LecunNormal = _variant("LecunNormal", 1.0, "fan_in", "truncated_normal")
LecunUniform = _variant("LecunUniform", 1.0, "fan_in", "uniform")

_TABLE = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
    "random_uniform": RandomUniform, "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_normal": HeNormal, "he_uniform": HeUniform, "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
}


def get(identifier) -> Initializer:
    """An initializer from a name ('glorot_uniform', 'he_normal', ...), a config dict or an instance."""
    if identifier is None:
        raise ValueError("initializer must not be None")
    if callable(identifier) and not isinstance(identifier, (str, dict, type)):
        return identifier
    return _serial.get(identifier, _TABLE, "initializer")
