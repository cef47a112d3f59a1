"""BatchNormalization over the channel (last) axis, for conv and dense outputs alike."""

from __future__ import annotations

import numpy as np

from convkit import _serial, distributed, initializers, ops, regularizers
from convkit._device import xp_of
from convkit.layers.base import Layer, serialize_optional


@_serial.register_serializable
class BatchNormalization(Layer):
    """Keras' BatchNormalization: batch statistics in training (biased variance), moving ones in inference.

    moving = moving * momentum + batch * (1 - momentum). gamma/beta are trainable; the moving
    mean/variance are not. A layer with ``trainable=False`` always runs in inference mode.
    With ``synchronized=True`` (data-parallel training, convkit.distributed) the batch statistics
    and their gradients are those of the global batch, summed over every rank; alone it changes nothing.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 synchronized=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized = bool(synchronized)
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

    def _affine(self):
        g = self.gamma.value if self.scale else None
        b = self.beta.value if self.center else None
        return g, b

    def call(self, x, training=False):
        xp = xp_of(x)
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        g, b = self._affine()
        if training and self.trainable:
            sync = self.synchronized and distributed.active()
            y, xhat, mean, var, inv = (self._global_batch_norm if sync else ops.batch_norm_train)(
                x2, g, b, self.epsilon)
            m = self.momentum
            mm, mv = self.moving_mean.value, self.moving_variance.value
            mm *= m
            mm += (1 - m) * mean
            mv *= m
            mv += (1 - m) * var
            self._save("sync" if sync else "batch", xhat, inv)
        else:
            inv = 1.0 / xp.sqrt(self.moving_variance.value + self.epsilon)
            s = inv * g if g is not None else inv
            shift = -self.moving_mean.value * s
            if b is not None:
                shift = shift + b
            y = x2 * s + shift
            self._save("moving", x2, inv)
        return y.reshape(x.shape)

    @staticmethod
    def _global_batch_norm(x2, g, b, epsilon):
        """batch_norm_train with the mean and biased variance of every rank's rows together."""
        xp = xp_of(x2)
        local = xp.concatenate([x2.sum(axis=0, dtype=xp.float64), (x2.astype(xp.float64) ** 2).sum(axis=0),
                                xp.asarray([x2.shape[0]], xp.float64)])
        total = distributed.allreduce(local)
        c = x2.shape[1]
        rows = total[-1]
        mean64 = total[:c] / rows
        var64 = xp.maximum(total[c:2 * c] / rows - mean64 * mean64, 0.0)
        mean, var = mean64.astype(np.float32), var64.astype(np.float32)
        inv = (1.0 / xp.sqrt(var64 + epsilon)).astype(np.float32)
        xhat = ((x2 - mean64) * inv).astype(np.float32)
        y = xhat * g if g is not None else xhat.copy()
        if b is not None:
            y += b
        return y, xhat, mean, var, inv

    @staticmethod
    def _global_batch_norm_backward(dy2, xhat, inv, g, need_dx):
        """dx from the global sums of dy and dy * xhat; dgamma and dbeta stay this rank's (fit sums them)."""
        xp = xp_of(dy2)
        dbeta = dy2.sum(axis=0)
        dgamma = (dy2 * xhat).sum(axis=0)
        if not need_dx:
            return None, dgamma, dbeta
        c = dy2.shape[1]
        total = distributed.allreduce(xp.concatenate([dgamma.astype(xp.float64), dbeta.astype(xp.float64),
                                                      xp.asarray([dy2.shape[0]], xp.float64)]))
        rows = total[-1]
        dx = xhat * (total[:c] / rows).astype(np.float32)
        dx += (total[c:2 * c] / rows).astype(np.float32)
        dx -= dy2
        dx *= -(inv * g if g is not None else inv)
        return dx, dgamma, dbeta

    def backward(self, dy, need_dx=True):
        mode, a, inv = self._pop()
        shape = dy.shape
        dy2 = dy.reshape(-1, shape[-1])
        g, _ = self._affine()
        if mode == "sync":
            dx, dgamma, dbeta = self._global_batch_norm_backward(dy2, a, inv, g, need_dx)
        elif mode == "batch":
            dx, dgamma, dbeta = ops.batch_norm_train_backward(dy2, a, inv, g, need_dx)
        else:
            xhat = (a - self.moving_mean.value) * inv
            dbeta = dy2.sum(axis=0)
            dgamma = (dy2 * xhat).sum(axis=0)
            dx = dy2 * (inv * g if g is not None else inv) if need_dx else None
        if self.center:
            self.beta.add_grad(dbeta)
        if self.scale:
            self.gamma.add_grad(dgamma)
        return None if dx is None else dx.reshape(shape)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "synchronized": self.synchronized,
                "beta_initializer": _serial.serialize(self.beta_initializer),
                "gamma_initializer": _serial.serialize(self.gamma_initializer),
                "moving_mean_initializer": _serial.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": _serial.serialize(self.moving_variance_initializer),
                "beta_regularizer": serialize_optional(self.beta_regularizer),
                "gamma_regularizer": serialize_optional(self.gamma_regularizer)}


@_serial.register_serializable
class SyncBatchNormalization(BatchNormalization):
    """BatchNormalization(synchronized=True), under PyTorch's name (SyncBatchNorm)."""

    def __init__(self, *args, synchronized=True, **kwargs):
        super().__init__(*args, synchronized=synchronized, **kwargs)
