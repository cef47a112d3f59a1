"""BatchNormalization over the channel (last) axis, for conv and dense outputs alike."""

from __future__ import annotations

from convkit import _serial, initializers, ops, regularizers
from convkit._device import xp_of
from convkit.layers.base import Layer, serialize_optional


@_serial.register_serializable
class BatchNormalization(Layer):
    """Keras' BatchNormalization: batch statistics in training (biased variance), moving ones in inference.

    moving = moving * momentum + batch * (1 - momentum). gamma/beta are trainable; the moving
    mean/variance are not. A layer with ``trainable=False`` always runs in inference mode.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1, 3) and axis != [-1]:
            raise ValueError(f"BatchNormalization: only the last axis (channels) is supported, got axis={axis!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum!r}")
        if not self.epsilon > 0:
            raise ValueError(f"BatchNormalization: epsilon must be positive, got {epsilon!r}")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    def build(self, input_shape):
        c = input_shape[-1]
        if c is None:
            raise ValueError(f"BatchNormalization {self.name!r}: the channel dimension must be known")
        self.gamma = self.add_weight("gamma", (c,), self.gamma_initializer, self.gamma_regularizer) \
            if self.scale else None
        self.beta = self.add_weight("beta", (c,), self.beta_initializer, self.beta_regularizer) \
            if self.center else None
        self.moving_mean = self.add_weight("moving_mean", (c,), self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (c,), self.moving_variance_initializer,
                                               trainable=False)

    def call(self, x, training=False):
        c = x.shape[-1]
        x2 = ops.reshape(x, (-1, c))
        if training and self.trainable:
            y, _, mean, var, _ = ops.batch_norm_train(x2, self.gamma, self.beta, self.epsilon)
            m = self.momentum
            mm, mv = self.moving_mean.value, self.moving_variance.value
            mm *= m
            mm += (1 - m) * mean
            mv *= m
            mv += (1 - m) * var
        else:  # y = x * s + shift, s = gamma / sqrt(moving_var + eps), shift = beta - moving_mean * s
            inv = 1.0 / xp_of(x2).sqrt(self.moving_variance.value + self.epsilon)
            s = ops.multiply(inv, self.gamma) if self.scale else inv
            shift = ops.negative(ops.multiply(self.moving_mean.value, s))
            if self.center:
                shift = ops.add(shift, self.beta)
            y = ops.add(ops.multiply(x2, s), shift)
        return ops.reshape(y, x.shape)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale,
                "beta_initializer": _serial.serialize(self.beta_initializer),
                "gamma_initializer": _serial.serialize(self.gamma_initializer),
                "moving_mean_initializer": _serial.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": _serial.serialize(self.moving_variance_initializer),
                "beta_regularizer": serialize_optional(self.beta_regularizer),
                "gamma_regularizer": serialize_optional(self.gamma_regularizer)}
