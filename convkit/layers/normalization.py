"""BatchNormalization over the channel (last) axis, for conv and dense outputs alike."""

from __future__ import annotations

import numpy as np

from convkit import _serial, activations, autodiff, distributed, initializers, ops, regularizers
from convkit._device import xp_of
from convkit.autodiff import custom_gradient
from convkit.layers.base import Layer, serialize_optional
from convkit.layers.conv import Conv2D, DepthwiseConv2D
from convkit.layers.core import Activation, Dropout, ReLU
from convkit.layers.merge import Add
from convkit.layers.reshaping import ZeroPadding2D


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

    def call(self, x, training=False, activation=None):
        """``activation`` (a name ops.batch_norm_inference takes) is applied in the same pass, in inference mode
        only: models pass it for the activation layer that follows, see ``fusion``."""
        c = x.shape[-1]
        x2 = ops.reshape(x, (-1, c))
        inference = self.inference_mode(training)
        if activation is not None and not inference:
            raise ValueError(f"BatchNormalization {self.name!r}: an activation is fused only in inference mode")
        if not inference:
            if self.synchronized and distributed.active():
                y, mean, var = self._global_batch_norm(x2)
            else:
                y, _, mean, var, _ = ops.batch_norm_train(x2, self.gamma, self.beta, self.epsilon)
            m = self.momentum
            mm, mv = self.moving_mean.value, self.moving_variance.value
            mm *= m
            mm += (1 - m) * mean
            mv *= m
            mv += (1 - m) * var
        else:
            y = ops.batch_norm_inference(x2, self.gamma, self.beta, self.moving_mean.value,
                                         self.moving_variance.value, self.epsilon, activation)
        return ops.reshape(y, x.shape)

    def inference_mode(self, training) -> bool:
        """Whether a call with this ``training`` uses the moving statistics (always, when not trainable)."""
        return not (training and self.trainable)

    def _global_batch_norm(self, x2):
        """(y, mean, var): batch normalisation with the statistics of every rank's rows together, recorded as one
        op whose gradient also sums over the ranks."""
        stats, has = {}, [v is not None for v in (self.gamma, self.beta)]

        def f(x2, *gamma_beta):
            given = iter(gamma_beta)
            g, b = (next(given) if h else None for h in has)
            y, xhat, mean, var, inv = _global_batch_norm(x2, g, b, self.epsilon)
            stats["mean"], stats["var"] = mean, var

            def grad(dy):
                dx, dg, db = _global_batch_norm_backward(dy, xhat, inv, g)
                return (dx, *(d for d, h in zip((dg, db), has) if h))

            return y, grad

        y = custom_gradient(f)(x2, *(v for v in (self.gamma, self.beta) if v is not None))
        return y, stats["mean"], stats["var"]

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "synchronized": self.synchronized,
                "beta_initializer": _serial.serialize(self.beta_initializer),
                "gamma_initializer": _serial.serialize(self.gamma_initializer),
                "moving_mean_initializer": _serial.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": _serial.serialize(self.moving_variance_initializer),
                "beta_regularizer": serialize_optional(self.beta_regularizer),
                "gamma_regularizer": serialize_optional(self.gamma_regularizer)}


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


def _global_batch_norm_backward(dy2, xhat, inv, g):
    """(dx, dgamma, dbeta): dx from the global sums of dy and dy * xhat; dgamma and dbeta stay this rank's (fit
    sums them)."""
    xp = xp_of(dy2)
    dbeta = dy2.sum(axis=0)
    dgamma = (dy2 * xhat).sum(axis=0)
    c = dy2.shape[1]
    total = distributed.allreduce(xp.concatenate([dgamma.astype(xp.float64), dbeta.astype(xp.float64),
                                                  xp.asarray([dy2.shape[0]], xp.float64)]))
    rows = total[-1]
    dx = xhat * (total[:c] / rows).astype(np.float32)
    dx += (total[c:2 * c] / rows).astype(np.float32)
    dx -= dy2
    dx *= -(inv * g if g is not None else inv)
    return dx, dgamma, dbeta


@_serial.register_serializable
class SyncBatchNormalization(BatchNormalization):
    """BatchNormalization(synchronized=True), under PyTorch's name (SyncBatchNorm)."""

    def __init__(self, *args, synchronized=True, **kwargs):
        super().__init__(*args, synchronized=synchronized, **kwargs)


@_serial.register_serializable
class Normalization(Layer):
    """Keras's Normalization: ``(x - mean) / sqrt(variance)`` per index of the kept ``axis`` (default: the
    last), from ``mean``/``variance`` given or learned by :meth:`adapt`; ``invert=True`` undoes it.

    Without ``mean``/``variance`` the layer holds them as non-trainable weights (and a ``count``, as
    Keras), so they are saved with the model."""

    _EPSILON = 1e-7  # Keras's backend epsilon: the smallest standard deviation divided by

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        axis = () if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        if not all(isinstance(a, int) for a in axis):
            raise ValueError(f"Normalization: axis must be an int, a tuple of ints or None, got {axis!r}")
        if (mean is None) != (variance is None):
            raise ValueError("Normalization: give both mean and variance, or neither (then call adapt)")
        if mean is not None and np.shape(mean) != np.shape(variance):
            raise ValueError(f"Normalization: mean and variance must have one shape, got {np.shape(mean)} and "
                             f"{np.shape(variance)}")
        if mean is not None and np.ndim(mean) > len(axis):
            raise ValueError(f"Normalization: mean of shape {np.shape(mean)} has more axes than axis={axis}")
        self.axis, self.invert = axis, bool(invert)
        self.input_mean = None if mean is None else np.asarray(mean, np.float32)
        self.input_variance = None if variance is None else np.asarray(variance, np.float32)

    def build(self, input_shape):
        ndim = len(input_shape)
        if any(not -ndim <= a < ndim for a in self.axis):
            raise ValueError(f"Normalization {self.name!r}: axis {self.axis} out of range for {ndim}-D inputs")
        self._keep = tuple(sorted(a % ndim for a in self.axis))
        if any(input_shape[d] is None for d in self._keep):
            raise ValueError(f"Normalization {self.name!r}: the kept axes {self._keep} of inputs "
                             f"{tuple(input_shape)} must have known sizes")
        self._broadcast = tuple(input_shape[d] if d in self._keep else 1 for d in range(ndim))
        kept = tuple(input_shape[d] for d in self._keep)
        if self.input_mean is None:
            self.adapt_mean = self.add_weight("mean", kept, "zeros", trainable=False)
            self.adapt_variance = self.add_weight("variance", kept, "ones", trainable=False)
            self.count = self.add_weight("count", (), "zeros", trainable=False)
        else:  # the given statistics fill the kept axes from the right, as Keras
            shape = [1] * ndim
            for i, d in enumerate(np.shape(self.input_mean)[::-1]):
                shape[self._keep[-1 - i]] = d
            self._given = tuple(np.ascontiguousarray(np.broadcast_to(v.reshape(shape), self._broadcast))
                                for v in (self.input_mean, self.input_variance))

    def _statistics(self, like):
        if self.input_mean is not None:
            mean, var = self._given
        else:
            mean, var = (v.value.reshape(self._broadcast) for v in (self.adapt_mean, self.adapt_variance))
        xp = xp_of(like)
        mean, var = xp.asarray(mean), xp.asarray(var)
        return mean, xp.maximum(xp.sqrt(var), np.float32(self._EPSILON))

    def call(self, x, training=False):
        mean, std = self._statistics(x)
        if self.invert:
            return ops.add(ops.multiply(x, std), mean)
        return ops.divide(ops.subtract(x, mean), std)

    def adapt(self, data):
        """Learns the mean and variance over the axes not kept, from an array or an iterable of batches
        (or of (x, y) tuples), combining batches exactly."""
        if self.input_mean is not None:
            raise ValueError(f"Normalization {self.name!r}: adapt() with mean and variance given")
        batches = iter([data]) if hasattr(data, "shape") else iter(data)
        total = mean = var = None
        for batch in batches:
            batch = np.asarray(batch[0] if isinstance(batch, tuple) else batch, np.float64)
            if not self.built:
                self._maybe_build((None,) + batch.shape[1:])
            if batch.ndim != len(self._broadcast) or any(batch.shape[d] != self._broadcast[d] for d in self._keep):
                raise ValueError(f"Normalization {self.name!r}: adapt() got a batch of shape {batch.shape}, "
                                 f"which does not fit the layer's inputs {self._broadcast} on axes {self._keep}")
            reduce = tuple(d for d in range(batch.ndim) if d not in self._keep)
            n = batch.size // max(1, int(np.prod([batch.shape[d] for d in self._keep])))
            m, v = batch.mean(axis=reduce), batch.var(axis=reduce)
            if total is None:
                total, mean, var = n, m, v
            else:  # pooled mean and variance of the two parts
                w = n / (total + n)
                new_mean = mean * (1 - w) + m * w
                var = (var + (mean - new_mean) ** 2) * (1 - w) + (v + (m - new_mean) ** 2) * w
                total, mean = total + n, new_mean
        if total is None:
            raise ValueError(f"Normalization {self.name!r}: adapt() got no data")
        self.adapt_mean.assign(mean.astype(np.float32))
        self.adapt_variance.assign(var.astype(np.float32))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        plain = lambda v: None if v is None else v.tolist()  # noqa: E731
        return {**super().get_config(), "axis": list(self.axis), "invert": self.invert,
                "mean": plain(self.input_mean), "variance": plain(self.input_variance)}


_FUSABLE = {activations.ReLU: "relu", activations.ReLU6: "relu6", activations.Sigmoid: "sigmoid",
            activations.Silu: "silu"}


def fusion(layers, training, shortcut=None) -> tuple[int, dict]:
    """How many of ``layers`` (a run in which each is the one reader of the one before) the first one's call
    computes, and the keyword arguments that make it do so: a Conv2D or DepthwiseConv2D folds in the
    BatchNormalization after it and that one's activation (``norm=``, ``activation=``), a BatchNormalization
    or an Add applies its activation (``activation=``); (1, {}) when nothing fuses. A Conv2D and its
    normalisation followed by an Add (Dropout at inference may stand between) also take in the Add and its
    activation (``residual=``) when the caller gives ``shortcut``, the Add's other input
    (``residual_input``), already computed. Only with no GradientTape recording (and for
    a normalisation in inference mode), for Keras's own classes without activity regularisers: then nothing
    can observe the values in between, and the feature map is written once instead of two to four times."""
    if len(layers) < 2 or autodiff.recording():
        return 1, {}
    count, kw = _fusion(layers, training, shortcut)
    return (1, {}) if any(map(_regularised, layers[:count])) else (count, kw)


def _fusion(layers, training, shortcut):
    first, second = layers[:2]
    if type(first) not in _FUSING:
        return 1, {}
    if type(first) in (Conv2D, DepthwiseConv2D) and type(first.activation) is activations.Linear \
            and _in_inference(second, training):
        kw, at = {"norm": second}, 2  # at: where an activation to take in would be
        add = _past_identities(layers, 2, training)
        if add < len(layers) and type(layers[add]) is Add:
            if shortcut is None or type(first) is not Conv2D:
                return 2, kw
            kw["residual"], at = shortcut, add + 1
        name = len(layers) > at and _activation_name(layers[at])
        return (at + 1, {**kw, "activation": name}) if name else (at, kw)
    name = (_in_inference(first, training) or type(first) is Add) and _activation_name(second)
    return (2, {"activation": name}) if name else (1, {})


_FUSING = {Conv2D, DepthwiseConv2D, BatchNormalization, Add}  # the layers that may compute the next ones


def pads_as_same(pad, conv, shape) -> bool:
    """Whether ZeroPadding2D ``pad``, whose one reader is ``conv`` (a Conv2D or DepthwiseConv2D with padding
    'valid'), adds to an input of ``shape`` exactly the zeros that padding 'same' would: then the convolution
    pads as 'same' itself and the padded copy is never made (the strided convolutions of EfficientNet and the
    MobileNets). With no GradientTape recording, and neither layer observed by an activity regulariser."""
    if type(pad) is not ZeroPadding2D or type(conv) not in (Conv2D, DepthwiseConv2D) or conv.padding != "valid" \
            or autodiff.recording() or _regularised(pad) or _regularised(conv):
        return False
    for (before, after), n, k, stride, dilation in zip(pad.padding, shape[1:3], conv.kernel_size, conv.strides,
                                                       conv.dilation_rate):
        total = max((-(-n // stride) - 1) * stride + (k - 1) * dilation + 1 - n, 0)
        if (before, after) != (total // 2, total - total // 2):
            return False
    return True


def residual_input(run, training):
    """For a run of graph nodes (each the one reader of the one before) whose third is an Add of two inputs,
    Dropout at inference allowed before it (EfficientNet's blocks): the Add's other input, when it has the
    sum's shape (a residual block's shortcut), else None."""
    at = _past_identities([n.layer for n in run], 2, training)
    if at >= len(run) or not run[at].multi or len(run[at].inputs) != 2:
        return None
    other = [t for t in run[at].inputs if t is not run[at - 1].output]
    return other[0] if len(other) == 1 and tuple(other[0].shape) == tuple(run[at].output.shape) else None


def _past_identities(layers, start, training) -> int:
    """The index of the first of ``layers`` from ``start`` on that is not a Dropout at inference (which passes
    its input through)."""
    while start < len(layers) and type(layers[start]) is Dropout and not training:
        start += 1
    return start


def _regularised(layer) -> bool:
    return getattr(layer, "activity_regularizer", None) is not None


def _in_inference(norm, training) -> bool:
    return type(norm) is BatchNormalization and norm.inference_mode(training)


def _activation_name(act):
    """The name batch_norm_inference takes for the activation layer ``act``, or None."""
    if type(act) is Activation:
        return _FUSABLE.get(type(act.activation))
    if type(act) is ReLU and not act.negative_slope and not act.threshold and act.max_value in (None, 6.0):
        return "relu" if act.max_value is None else "relu6"
    return None
