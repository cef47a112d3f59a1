"""Dense, Flatten, Dropout, Activation and Rescaling."""

from __future__ import annotations

import math

import numpy as np

from convkit import _serial, activations, ops
from convkit._device import xp_of
from convkit.layers.base import KernelLayer, Layer
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
    """Zeroes a fraction ``rate`` of inputs during training and scales the rest by 1/(1-rate)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise NotImplementedError("Dropout: noise_shape is not supported")
        self.rate, self.seed = float(rate), seed
        self._gen = np.random.default_rng(seed) if seed is not None else None

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        xp = xp_of(x)
        if xp is np:
            u = (self._gen or rng()).random(x.shape, dtype=np.float32)
        else:
            u = xp.random.random(x.shape, dtype=np.float32)
        mask = (u >= self.rate).astype(np.float32)
        mask *= 1.0 / (1.0 - self.rate)
        return ops.multiply(x, mask)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


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
class Rescaling(Layer):
    """y = x * scale + offset (e.g. Rescaling(1/255) for images)."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = float(scale), float(offset)

    def call(self, x, training=False):
        y = ops.multiply(x, np.float32(self.scale))
        return ops.add(y, np.float32(self.offset)) if self.offset else y

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}
