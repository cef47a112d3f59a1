"""Losses with Keras names, as functions and as objects.

The functions (``categorical_crossentropy(y_true, y_pred)``, ``mse``, ``huber``, ...) return one value per
sample, as Keras's do. The objects (``CategoricalCrossentropy(from_logits=True)``, ...) reduce those as
Keras does ('sum_over_batch_size' by default: their mean; 'sum'; or None / 'none' for the per-sample
values) and give training the value and its gradient with respect to the prediction. Either form, or
its name, is a ``loss=`` for ``compile``.

Cross-entropies on probabilities divide the categorical ones by their sum and clip them to
[epsilon, 1 - epsilon] (``convkit.backend.epsilon()``, 1e-7), as Keras does. When the model's last
layer ends in the matching activation (softmax for the categorical losses, sigmoid for binary),
training takes the fused gradient with respect to the logits, (p - y) / N, which stays exact where
1/p would overflow.
"""

from __future__ import annotations

import numpy as np

from convkit import _serial
from convkit._backend import is_cupy
from convkit._device import xp_of
from convkit.backend import epsilon
REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "none", None)


class Loss:
    """Base: ``per_sample(y_true, y_pred)`` and ``value_and_grad(y_true, y_pred) -> (loss as a 0-d array,
    dL/dy_pred)``, both on labels already in the loss's format (``prepare_labels``)."""

    name = "loss"
    fused_activation = None  # activation whose pre-activation gradient fused_grad gives

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if dtype not in (None, "float32", np.float32):
            raise TypeError(f"{type(self).__name__}: only float32 is supported, got dtype={dtype!r}")
        self.reduction = reduction
        if name:
            self.name = name

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The loss of a batch, reduced as ``reduction`` says (a float; per-sample values for None)."""
        y_pred = _as_float_array(y_pred)
        y_true = self.prepare_labels(_as_array(y_true), y_pred.shape)
        values = self.per_sample(y_true, y_pred)
        if sample_weight is not None:
            values = values * _as_float_array(sample_weight).reshape(values.shape)
        if self.reduction in (None, "none"):
            return values
        total = values.sum()
        return float(total / self._divisor(y_true, y_pred) if self.reduction != "sum" else total)

    def prepare_labels(self, y, output_shape):
        """Check labels against the model's output shape; returns them in the dtype the loss needs."""
        y = _float_labels(y, type(self).__name__)
        if tuple(y.shape[1:]) != tuple(output_shape[1:]):
            raise ValueError(f"{self.name}: labels have shape {tuple(y.shape)} but the model outputs "
                             f"{tuple(output_shape)}")
        return y

    def per_sample(self, y_true, y_pred):
        raise NotImplementedError

    def value_and_grad(self, y_true, y_pred):
        """The reduced loss and its gradient; subclasses give the batch mean's in ``_mean_and_grad``."""
        return self._reduced(*self._mean_and_grad(y_true, y_pred), y_true, y_pred)

    def _reduced(self, mean, grad, y_true, y_pred):
        """(loss, gradient) of the batch mean ``mean`` as this loss's reduction wants them."""
        if self.reduction == "sum":
            n = self._divisor(y_true, y_pred)
            return mean * n, grad * n
        if self.reduction in (None, "none"):
            raise ValueError(f"{self.name}: reduction={self.reduction!r} gives one value per sample; training needs "
                             "a reduced loss ('sum_over_batch_size' or 'sum')")
        return mean, grad

    def _mean_and_grad(self, y_true, y_pred):
        raise NotImplementedError

    def _divisor(self, y_true, y_pred):
        """What 'sum_over_batch_size' divides the per-sample values' sum by: their number."""
        return _count(y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _count(p) -> int:
    """How many per-sample values a prediction gives: all but its last axis."""
    return p.size // p.shape[-1] if p.ndim else 1


def _as_array(a):
    return a if is_cupy(a) else np.asarray(a)


def _as_float_array(a):
    a = _as_array(a)
    return a if a.dtype == np.float32 else a.astype(np.float32)


def _float_labels(y, who):
    if y.dtype.kind not in "fiub":
        raise TypeError(f"{who}: labels must be numeric, got dtype {y.dtype}")
    return y if y.dtype == np.float32 else y.astype(np.float32)


def _log_softmax(z):
    xp = xp_of(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def _check_axis(who, axis):
    if axis not in (-1, None):
        raise ValueError(f"{who}: only axis=-1 (the class axis last) is supported, got axis={axis!r}")


def _label_smoothing(who, value):
    value = float(value)
    if not 0 <= value <= 1:
        raise ValueError(f"{who}: label_smoothing must be in [0, 1], got {value}")
    return value


@_serial.register_serializable
class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot labels (N, K): -sum(y log p) per sample; ``label_smoothing`` mixes the
    labels with the uniform distribution, y (1 - s) + s / K."""

    name = "categorical_crossentropy"
    fused_activation = "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size", name=None,
                 **kwargs):
        super().__init__(reduction, name, **kwargs)
        _check_axis(type(self).__name__, axis)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _label_smoothing(type(self).__name__, label_smoothing)

    def _smooth(self, y):
        s = self.label_smoothing
        return y * (1 - s) + s / y.shape[-1] if s else y

    def _terms(self, y, p, grad=True):
        """Per-sample losses and (with ``grad``) dL/dp for each sample's own loss."""
        xp = xp_of(p)
        y = self._smooth(y)
        if self.from_logits:
            logp = _log_softmax(p)
            values = -(y * logp).sum(axis=-1)
            return values, (xp.exp(logp) * y.sum(axis=-1, keepdims=True) - y) if grad else None
        total = p.sum(axis=-1, keepdims=True)
        q = p / total
        qc = xp.clip(q, epsilon(), 1 - epsilon())
        values = -(y * xp.log(qc)).sum(axis=-1)
        if not grad:
            return values, None
        dq = xp.where(q == qc, -y / qc, 0).astype(p.dtype)  # clipped entries pass no gradient
        return values, (dq - (dq * q).sum(axis=-1, keepdims=True)) / total

    def per_sample(self, y, p):
        return self._terms(y, p, grad=False)[0]

    def _mean_and_grad(self, y, p):
        values, grad = self._terms(y, p)
        n = self._divisor(y, p)
        return values.sum() / n, grad / n

    def fused_grad(self, y, p):
        """The loss and its gradient with respect to the logits of the activation that made ``p``."""
        n = self._divisor(y, p)
        return self._reduced(self.per_sample(y, p).sum() / n, self._fused(y, p) / n, y, p)

    def _fused(self, y, p):
        return p - self._smooth(y)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


@_serial.register_serializable
class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy with integer class labels, shape (N,) or (N, 1); ``ignore_class`` leaves samples of
    that label out (they count in the batch size, as in Keras)."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size", axis=-1, name=None,
                 **kwargs):
        super().__init__(from_logits=from_logits, axis=axis, reduction=reduction, name=name, **kwargs)
        self.ignore_class = None if ignore_class is None else int(ignore_class)

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
            kept = y if self.ignore_class is None else y[y != self.ignore_class]
            lo, hi = (float(kept.min()), float(kept.max())) if kept.size else (0, 0)
            if lo < 0 or hi >= k:
                raise ValueError(f"{self.name}: labels must lie in [0, {k}) for a model with {k} outputs, "
                                 f"got range [{lo:g}, {hi:g}]")
            if y.dtype.kind == "f" and not bool(xp.all(y == xp.floor(y))):
                raise ValueError(f"{self.name}: labels must be whole numbers")
        return y.astype(np.int64, copy=False)

    def _one_hot(self, y, p):
        xp = xp_of(p)
        keep = None if self.ignore_class is None else (y != self.ignore_class)
        idx = y if keep is None else xp.where(keep, y, 0)
        onehot = xp.zeros_like(p)
        onehot[xp.arange(p.shape[0]), idx] = 1
        if keep is not None:
            onehot *= keep[:, None]
        return onehot

    def _terms(self, y, p, grad=True):
        return super()._terms(self._one_hot(y, p), p, grad)

    def per_sample(self, y, p):
        if self.from_logits or self.ignore_class is not None:
            return super().per_sample(y, p)
        xp = xp_of(p)  # training's usual case, without a one-hot matrix: -log(p_y / sum p)
        picked = p[xp.arange(p.shape[0]), y] / p.sum(axis=-1)
        return -xp.log(xp.clip(picked, epsilon(), 1 - epsilon()))

    def _divisor(self, y, p):
        """Keras averages over the samples that are not ignored."""
        if self.ignore_class is None:
            return super()._divisor(y, p)
        return xp_of(y).maximum((y != self.ignore_class).sum(), 1)

    def _fused(self, y, p):
        if self.ignore_class is None:
            g = p.copy()
            g[xp_of(p).arange(p.shape[0]), y] -= 1
            return g
        onehot = self._one_hot(y, p)
        return (p - onehot) * onehot.sum(axis=-1, keepdims=True)

    def get_config(self):
        config = super().get_config()
        del config["label_smoothing"]
        return {**config, "ignore_class": self.ignore_class}


@_serial.register_serializable
class BinaryCrossentropy(CategoricalCrossentropy):
    """Binary cross-entropy on probabilities in [0, 1] (or logits), averaged over the last axis per
    sample; ``label_smoothing`` moves the labels towards 0.5: y (1 - s) + s / 2."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"

    def prepare_labels(self, y, output_shape):
        y = _float_labels(y, self.name)
        if y.ndim == 1 and len(output_shape) == 2 and output_shape[1] == 1:
            y = y.reshape(-1, 1)
        return Loss.prepare_labels(self, y, output_shape)

    def _smooth(self, y):
        s = self.label_smoothing
        return y * (1 - s) + 0.5 * s if s else y

    def _terms(self, y, p, grad=True):
        xp, k = xp_of(p), p.shape[-1]
        y = self._smooth(y)
        if self.from_logits:
            # log(1 + e^-|z|) + max(z, 0) - z y, and its gradient sigmoid(z) - y
            v = xp.maximum(p, 0) - p * y + xp.log1p(xp.exp(-xp.abs(p)))
            return v.mean(axis=-1), ((1 / (1 + xp.exp(-p)) - y) / k) if grad else None
        pc = xp.clip(p, epsilon(), 1 - epsilon())
        v = -(y * xp.log(pc) + (1 - y) * xp.log(1 - pc))
        if not grad:
            return v.mean(axis=-1), None
        return v.mean(axis=-1), xp.where(p == pc, (pc - y) / (pc * (1 - pc)), 0).astype(p.dtype) / k

    def fused_grad(self, y, p):
        value, g = super().fused_grad(y, p)
        return value, g / p.shape[-1]


class _Elementwise(Loss):
    """Losses that average an element-wise term over the last axis per sample."""

    def _term_and_grad(self, d, y, p):
        raise NotImplementedError

    def per_sample(self, y, p):
        return self._term_and_grad(p - y, y, p)[0].mean(axis=-1)

    def _mean_and_grad(self, y, p):
        term, grad = self._term_and_grad(p - y, y, p)
        return term.sum() / p.size, grad / p.size


@_serial.register_serializable
class MeanSquaredError(_Elementwise):
    """mean((y - p) ** 2) over the last axis."""

    name = "mean_squared_error"

    def _term_and_grad(self, d, y, p):
        return d * d, d * 2.0


@_serial.register_serializable
class MeanAbsoluteError(_Elementwise):
    """mean(|y - p|) over the last axis."""

    name = "mean_absolute_error"

    def _term_and_grad(self, d, y, p):
        return xp_of(d).abs(d), xp_of(d).sign(d)


@_serial.register_serializable
class Huber(_Elementwise):
    """0.5 d^2 where |d| <= delta, else delta (|d| - 0.5 delta), averaged over the last axis."""

    name = "huber_loss"

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name=None, **kwargs):
        super().__init__(reduction, name, **kwargs)
        self.delta = float(delta)
        if not self.delta > 0:
            raise ValueError(f"Huber: delta must be positive, got {delta}")

    def _term_and_grad(self, d, y, p):
        xp = xp_of(d)
        a = xp.abs(d)
        quad = xp.minimum(a, self.delta)
        return 0.5 * quad * quad + self.delta * (a - quad), xp.clip(d, -self.delta, self.delta)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


@_serial.register_serializable
class KLDivergence(Loss):
    """sum(y log(y / p)) over the last axis, both clipped to [epsilon, 1]."""

    name = "kl_divergence"

    def _terms(self, y, p):
        xp = xp_of(p)
        yc, pc = xp.clip(y, epsilon(), 1), xp.clip(p, epsilon(), 1)
        return (yc * xp.log(yc / pc)).sum(axis=-1), xp.where(p == pc, -yc / pc, 0).astype(p.dtype)

    def per_sample(self, y, p):
        return self._terms(y, p)[0]

    def _mean_and_grad(self, y, p):
        values, grad = self._terms(y, p)
        n = _count(p)
        return values.sum() / n, grad / n


def _function(name, cls, doc):
    """The per-sample loss function ``name`` computed by ``cls``; compile maps it back to ``cls``."""

    def loss(y_true, y_pred, **kwargs):
        obj = cls(**kwargs)
        y_pred = _as_float_array(y_pred)
        return obj.per_sample(obj.prepare_labels(_as_array(y_true), y_pred.shape), y_pred)

    loss.__name__ = loss.__qualname__ = name
    loss.__doc__ = doc
    _FUNCTIONS[loss] = cls
    return loss


_FUNCTIONS: dict = {}
categorical_crossentropy = _function("categorical_crossentropy", CategoricalCrossentropy,
                                     "Per-sample categorical cross-entropy (from_logits=False, label_smoothing=0.0).")
sparse_categorical_crossentropy = _function("sparse_categorical_crossentropy", SparseCategoricalCrossentropy,
                                            "Per-sample cross-entropy with integer labels (from_logits=False, "
                                            "ignore_class=None).")
binary_crossentropy = _function("binary_crossentropy", BinaryCrossentropy,
                                "Per-sample binary cross-entropy, averaged over the last axis (from_logits=False, "
                                "label_smoothing=0.0).")
mean_squared_error = _function("mean_squared_error", MeanSquaredError,
                               "Per-sample mean squared error over the last axis.")
mean_absolute_error = _function("mean_absolute_error", MeanAbsoluteError,
                                "Per-sample mean absolute error over the last axis.")
huber = _function("huber", Huber, "Per-sample Huber loss over the last axis (delta=1.0).")
kl_divergence = _function("kl_divergence", KLDivergence, "Per-sample Kullback-Leibler divergence sum(y log(y / p)).")
mse, mae, kld = mean_squared_error, mean_absolute_error, kl_divergence
MSE, MAE, KLD = mean_squared_error, mean_absolute_error, kl_divergence

_TABLE = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
}


def get(identifier) -> Loss:
    """A Loss from a name ('categorical_crossentropy', 'mse', ...), one of this module's loss functions,
    a config dict or an instance."""
    if identifier is None:
        raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
    if callable(identifier) and not isinstance(identifier, Loss) and identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    loss = _serial.get(identifier, _TABLE, "loss")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a name, a convkit.losses function or a convkit.losses.Loss, got "
                        f"{getattr(identifier, '__name__', type(identifier).__name__)}: a custom loss subclasses Loss "
                        "and gives its gradient in _mean_and_grad")
    return loss
