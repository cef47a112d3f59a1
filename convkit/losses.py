"""Losses with Keras names; each gives its value and its gradient with respect to the prediction.

Cross-entropies on probabilities clip them to [1e-7, 1 - 1e-7] for the value, as Keras does.
When the model's last layer ends in the matching activation (softmax for the categorical
losses, sigmoid for binary), training takes the fused gradient with respect to the logits,
(p - y) / N, which stays exact where 1/p would overflow.
"""

from __future__ import annotations

import numpy as np

from convkit import _serial, ops
from convkit._device import xp_of

EPSILON = 1e-7


class Loss:
    """Base: ``value_and_grad(y_true, y_pred) -> (mean loss as a 0-d array, dL/dy_pred)``."""

    name = "loss"
    fused_activation = None  # activation whose pre-activation gradient fused_grad gives

    def __init__(self, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        if name:
            self.name = name

    def __call__(self, y_true, y_pred):
        """Mean loss over the batch, a scalar array (recorded by a GradientTape, as convkit.ops.loss)."""
        return ops.loss(y_pred, self, self.prepare_labels(y_true, y_pred.shape))

    def prepare_labels(self, y, output_shape):
        """Check labels against the model's output shape; returns them in the dtype the loss needs."""
        y = _float_labels(y, type(self).__name__)
        if tuple(y.shape[1:]) != tuple(output_shape[1:]):
            raise ValueError(f"{self.name}: labels have shape {tuple(y.shape)} but the model outputs "
                             f"{tuple(output_shape)}")
        return y

    def value_and_grad(self, y_true, y_pred):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _float_labels(y, who):
    if y.dtype.kind not in "fiub":
        raise TypeError(f"{who}: labels must be numeric, got dtype {y.dtype}")
    return y if y.dtype == np.float32 else y.astype(np.float32)


def _log_softmax(z):
    xp = xp_of(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


@_serial.register_serializable
class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot labels (N, K): -sum(y log p), averaged over the batch."""

    name = "categorical_crossentropy"
    fused_activation = "softmax"

    def __init__(self, from_logits=False, name=None, **kwargs):
        super().__init__(name, **kwargs)
        self.from_logits = bool(from_logits)

    def value_and_grad(self, y, p):
        xp, n = xp_of(p), p.shape[0]
        if self.from_logits:
            logp = _log_softmax(p)
            return -(y * logp).sum() / n, (xp.exp(logp) - y) / n
        pc = xp.clip(p, EPSILON, 1 - EPSILON)
        return -(y * xp.log(pc)).sum() / n, -(y / pc) / n

    def fused_grad(self, y, p):
        n = p.shape[0]
        pc = xp_of(p).clip(p, EPSILON, 1 - EPSILON)
        return -(y * xp_of(p).log(pc)).sum() / n, (p - y) / n

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


@_serial.register_serializable
class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy with integer class labels, shape (N,) or (N, 1)."""

    name = "sparse_categorical_crossentropy"

    def prepare_labels(self, y, output_shape):
        if y.dtype.kind not in "iuf" or y.dtype.kind == "b":
            raise TypeError(f"{self.name}: labels must be integer class ids, got dtype {y.dtype}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise ValueError(f"{self.name}: labels must have shape (N,) or (N, 1), got {tuple(y.shape)}; "
                             "use categorical_crossentropy for one-hot labels")
        k = output_shape[-1]
        if y.size:
            xp = xp_of(y)
            lo, hi = float(y.min()), float(y.max())
            if lo < 0 or hi >= k:
                raise ValueError(f"{self.name}: labels must lie in [0, {k}) for a model with {k} outputs, "
                                 f"got range [{lo:g}, {hi:g}]")
            if y.dtype.kind == "f" and not bool(xp.all(y == xp.floor(y))):
                raise ValueError(f"{self.name}: labels must be whole numbers")
        return y.astype(np.int64, copy=False)

    def _pick(self, a, y):
        return a[xp_of(a).arange(a.shape[0]), y]

    def value_and_grad(self, y, p):
        xp, n = xp_of(p), p.shape[0]
        if self.from_logits:
            logp = _log_softmax(p)
            g = xp.exp(logp)
            g[xp.arange(n), y] -= 1
            return -self._pick(logp, y).sum() / n, g / n
        pc = xp.clip(self._pick(p, y), EPSILON, 1 - EPSILON)
        g = xp.zeros_like(p)
        g[xp.arange(n), y] = -1 / (pc * n)
        return -xp.log(pc).sum() / n, g

    def fused_grad(self, y, p):
        xp, n = xp_of(p), p.shape[0]
        pc = xp.clip(self._pick(p, y), EPSILON, 1 - EPSILON)
        g = p.copy()
        g[xp.arange(n), y] -= 1
        g /= n
        return -xp.log(pc).sum() / n, g


@_serial.register_serializable
class BinaryCrossentropy(CategoricalCrossentropy):
    """Binary cross-entropy on probabilities in [0, 1] (or logits), averaged over all outputs."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"

    def prepare_labels(self, y, output_shape):
        y = _float_labels(y, self.name)
        if y.ndim == 1 and len(output_shape) == 2 and output_shape[1] == 1:
            y = y.reshape(-1, 1)
        return super().prepare_labels(y, output_shape)

    def value_and_grad(self, y, p):
        xp, size = xp_of(p), p.size
        if self.from_logits:
            # log(1 + e^-|z|) + max(z, 0) - z y, and its gradient sigmoid(z) - y
            v = xp.maximum(p, 0) - p * y + xp.log1p(xp.exp(-xp.abs(p)))
            s = 1 / (1 + xp.exp(-p))
            return v.sum() / size, (s - y) / size
        pc = xp.clip(p, EPSILON, 1 - EPSILON)
        v = -(y * xp.log(pc) + (1 - y) * xp.log(1 - pc))
        return v.sum() / size, (pc - y) / (pc * (1 - pc)) / size

    def fused_grad(self, y, p):
        xp, size = xp_of(p), p.size
        pc = xp.clip(p, EPSILON, 1 - EPSILON)
        v = -(y * xp.log(pc) + (1 - y) * xp.log(1 - pc))
        return v.sum() / size, (p - y) / size


@_serial.register_serializable
class MeanSquaredError(Loss):
    """mean((y - p) ** 2)."""

    name = "mean_squared_error"

    def value_and_grad(self, y, p):
        d = p - y
        return (d * d).sum() / p.size, d * (2.0 / p.size)


_TABLE = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}


def get(identifier) -> Loss:
    """A Loss from a name ('categorical_crossentropy', ...), a config dict or an instance."""
    if identifier is None:
        raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
    loss = _serial.get(identifier, _TABLE, "loss")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a name or a convkit.losses.Loss, got {type(identifier).__name__}")
    return loss
