"""Dense, Flatten, Dropout (and SpatialDropout2D), Activation, ReLU, LeakyReLU and Rescaling."""

from __future__ import annotations

import math
import numbers

import numpy as np

from convkit import _serial, activations, ops
from convkit._device import xp_of
from convkit.layers.base import KernelLayer, Layer
from convkit.layers.conv import _channels_last
from convkit.utils import rng


@_serial.register_serializable
class Dense(KernelLayer):
    """y = activation(x @ kernel + bias) over the last axis; kernel (in, units)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, input_dim=None, **kwargs):
        if input_dim is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (input_dim,)
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, kernel_constraint, bias_constraint,
                         activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = units

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"Dense {self.name!r}: needs inputs with a known last dimension, got {input_shape}; "
                             "put a Flatten before it for images")
        self._add_kernel_and_bias((input_shape[-1], self.units), self.units)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training=False):
        if self.activation.name == "relu":
            return ops.dense(x, self.kernel, self.bias, activation="relu")
        return self.activation(ops.dense(x, self.kernel, self.bias))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@_serial.register_serializable
class Flatten(Layer):
    """(N, ...) -> (N, prod(...)) in C order, so a Dense after it sees Keras' (channels-last) ordering."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Flatten: only channels_last is supported, got {data_format!r}")

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if any(s is None for s in rest) else math.prod(rest))

    def call(self, x, training=False):
        return ops.reshape(x, (x.shape[0], -1))


@_serial.register_serializable
class Dropout(Layer):
    """Zeroes a fraction ``rate`` of inputs during training and scales the rest by 1/(1-rate).

    ``noise_shape`` (one entry per input axis, None for the input's size) shares one draw along the axes
    where it is 1, e.g. (None, 1, 1, None) drops whole feature maps."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"{type(self).__name__}: rate must be in [0, 1), got {rate!r}")
        if noise_shape is not None and (not isinstance(noise_shape, (tuple, list)) or any(
                d is not None and (not isinstance(d, int) or d < 1) for d in noise_shape)):
            raise ValueError(f"Dropout: noise_shape must be a tuple of positive ints or None, got {noise_shape!r}")
        self.rate, self.seed = float(rate), seed
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self._gen = np.random.default_rng(seed) if seed is not None else None

    def _noise_shape(self, x):
        if self.noise_shape is None:
            return x.shape
        if len(self.noise_shape) != x.ndim:
            raise ValueError(f"{type(self).__name__} {self.name!r}: noise_shape {self.noise_shape} does not fit "
                             f"inputs of shape {tuple(x.shape)}")
        return tuple(s if d is None else d for s, d in zip(x.shape, self.noise_shape))

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        shape = self._noise_shape(x)
        xp = xp_of(x)
        if xp is np:
            u = (self._gen or rng()).random(shape, dtype=np.float32)
        else:
            u = xp.random.random(shape, dtype=np.float32)
        mask = (u >= self.rate).astype(np.float32)
        mask *= 1.0 / (1.0 - self.rate)
        return ops.multiply(x, mask)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape)}


@_serial.register_serializable
class SpatialDropout2D(Dropout):
    """Dropout of whole feature maps: each (sample, channel) plane is kept or zeroed as one."""

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        _channels_last(data_format, "SpatialDropout2D")
        super().__init__(rate, noise_shape=(None, 1, 1, None), seed=seed, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"SpatialDropout2D {self.name!r}: expects 4-D input (N, H, W, C), "
                             f"got shape {tuple(input_shape)}")

    def get_config(self):
        cfg = super().get_config()
        del cfg["noise_shape"]
        return {**cfg, "data_format": "channels_last"}


@_serial.register_serializable
class Activation(Layer):
    """Applies an activation by name: 'relu', 'sigmoid', 'softmax', 'tanh' or 'linear'."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, x, training=False):
        return self.activation(x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


@_serial.register_serializable
class ReLU(Layer):
    """Keras's ReLU: ``x`` above ``threshold`` (clipped at ``max_value``), ``negative_slope * (x - threshold)``
    at or below it."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        for arg, v in (("max_value", max_value), ("negative_slope", negative_slope), ("threshold", threshold)):
            if (v is not None or arg != "max_value") and (not isinstance(v, numbers.Real) or v < 0):
                raise ValueError(f"ReLU: {arg} must be a non-negative number, got {v!r}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)

    def call(self, x, training=False):
        if self.max_value is None and not self.negative_slope and not self.threshold:
            return ops.relu(x)
        return ops.relu_general(x, self.negative_slope, self.max_value, self.threshold)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


@_serial.register_serializable
class LeakyReLU(Layer):
    """x where positive, ``negative_slope * x`` elsewhere (Keras's default slope 0.3)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:  # Keras 2's name for it
            negative_slope = kwargs.pop("alpha")
        super().__init__(**kwargs)
        if not isinstance(negative_slope, numbers.Real) or negative_slope < 0:
            raise ValueError(f"LeakyReLU: negative_slope must be a non-negative number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def call(self, x, training=False):
        return ops.leaky_relu(x, self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


@_serial.register_serializable
class Rescaling(Layer):
    """y = x * scale + offset (e.g. Rescaling(1/255) for images); ``scale`` and ``offset`` may be numbers
    or per-channel sequences."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = _number_or_array(scale, "scale"), _number_or_array(offset, "offset")

    def call(self, x, training=False):
        y = ops.multiply(x, _on_device(self.scale, x))
        return ops.add(y, _on_device(self.offset, x)) if np.any(self.offset) else y

    def get_config(self):
        plain = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
        return {**super().get_config(), "scale": plain(self.scale), "offset": plain(self.offset)}


def _number_or_array(v, name):
    if isinstance(v, numbers.Real):
        return float(v)
    try:
        a = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        a = np.full((), np.nan, np.float32)
    if a.ndim == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"Rescaling: {name} must be a number or a sequence of finite numbers, got {v!r}")
    return a


def _on_device(v, x):
    """A float as a float32 scalar, an array on x's device."""
    return np.float32(v) if isinstance(v, float) else xp_of(x).asarray(v)
