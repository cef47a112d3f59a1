"""Conv2D over convkit.ops.conv2d (bias and ReLU fused into the kernel's epilogue); DepthwiseConv2D over
convkit.ops.depthwise_conv2d (bias and ReLU/ReLU6 fused); SeparableConv2D, a depthwise then a 1x1
convolution."""

from __future__ import annotations

from convkit import _serial, activations, constraints, initializers, ops, regularizers
from convkit.layers.base import KernelLayer, Layer, serialize_optional


def _pair(v, name):
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(e, int) and e > 0 for e in t):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return t


def _channels_last(data_format, who):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{who}: only data_format='channels_last' (NHWC) is supported, got {data_format!r}")


_ANY_SIZE = 1 << 14  # stands for an unknown image side while a shape function runs


def windowed_output_shape(shape_fn, input_shape, *args):
    """``shape_fn((1, H, W, C), *args)`` for a symbolic (N, H, W, C) whose H or W may be None (any size, as
    ``Input((None, None, 3))`` gives): the output keeps None there, and N as given."""
    n, h, w, c = input_shape
    out = shape_fn((1, _ANY_SIZE if h is None else h, _ANY_SIZE if w is None else w, c), *args)
    return (n, None if h is None else out[1], None if w is None else out[2], out[3])


def folded_call(conv, x, norm, activation, depthwise, residual=None, padding=None):
    """``conv``'s output through the batch normalisation ``norm`` (its moving statistics), plus ``residual``,
    through ``activation``, in one pass (ops.conv_batch_norm_inference). A residual that broadcasts (a graph
    can declare a shortcut's shape with unknown dimensions) is added after the pass instead, as Add would."""
    geometry = conv._geometry(padding)
    if residual is not None:
        shape_of = ops.depthwise_conv2d_output_shape if depthwise else ops.conv2d_output_shape
        if tuple(residual.shape) != tuple(shape_of(x.shape, conv.kernel.shape, **geometry)):
            y = folded_call(conv, x, norm, None, depthwise, padding=padding)
            return ops.add(y, residual) if activation is None else ops.add_activation(y, residual, activation)
    return ops.conv_batch_norm_inference(x, conv.kernel, conv.bias, norm.gamma, norm.beta, norm.moving_mean,
                                         norm.moving_variance, norm.epsilon, depthwise=depthwise,
                                         activation=activation, residual=residual, **geometry)


def _window_geometry(layer, padding=None):
    """The convolution op's strides, padding (``padding`` instead of the layer's when given) and dilation."""
    return dict(strides=layer.strides, padding=padding or layer.padding, dilation_rate=layer.dilation_rate)


def _padding(p, who):
    if not isinstance(p, str) or p.lower() not in ("valid", "same"):
        raise ValueError(f"{who}: padding must be 'valid' or 'same', got {p!r}")
    return p.lower()


@_serial.register_serializable
class Conv2D(KernelLayer):
    """2-D convolution: NHWC input, HWIO kernel (kh, kw, in, filters), Keras arguments and defaults."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, kernel_constraint, bias_constraint,
                         activity_regularizer=activity_regularizer, **kwargs)
        _channels_last(data_format, "Conv2D")
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.strides = _pair(strides, "Conv2D strides")
        self.dilation_rate = _pair(dilation_rate, "Conv2D dilation_rate")
        self.padding = _padding(padding, "Conv2D")
        self._fused = self.activation.name == "relu"

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D {self.name!r}: expects 4-D input (N, H, W, C), got shape {tuple(input_shape)}")
        self._add_kernel_and_bias(self.kernel_size + (input_shape[-1], self.filters), self.filters)

    def compute_output_shape(self, input_shape):
        kshape = self.kernel_size + (input_shape[-1], self.filters)
        return windowed_output_shape(ops.conv2d_output_shape, input_shape, kshape, self.strides, self.padding,
                                     self.dilation_rate)

    _geometry = _window_geometry

    def call(self, x, training=False, norm=None, activation=None, residual=None, padding=None):
        """``norm`` (a BatchNormalization in inference mode), ``residual`` (the other input of an Add after it)
        and ``activation`` (a name it takes) are applied in the same pass, and ``padding='same'`` stands for a
        ZeroPadding2D before it: models pass them for the layers around it, see ``normalization.fusion``."""
        if norm is not None:
            return folded_call(self, x, norm, activation, depthwise=False, residual=residual, padding=padding)
        if self._fused:
            return ops.conv2d(x, self.kernel, self.bias, activation="relu", **self._geometry(padding))
        return self.activation(ops.conv2d(x, self.kernel, self.bias, **self._geometry(padding)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "dilation_rate": list(self.dilation_rate)}


Convolution2D = Conv2D


def _positive_int(v, name, who):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")
    return v


def _fused(activation, allowed):
    """The activation's name when the kernel can apply it itself (a built-in one of ``allowed``), else None."""
    name = activation.name
    return name if name in allowed and type(activation) is type(activations.get(name)) else None


class _DepthwiseBase(Layer):
    """What DepthwiseConv2D and SeparableConv2D share: the depthwise geometry, activation and bias."""

    _who = ""

    def __init__(self, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                 use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                 depthwise_constraint, bias_constraint, **kwargs):
        super().__init__(**kwargs)
        who = self._who
        _channels_last(data_format, who)
        self.kernel_size = _pair(kernel_size, f"{who} kernel_size")
        self.strides = _pair(strides, f"{who} strides")
        self.dilation_rate = _pair(dilation_rate, f"{who} dilation_rate")
        self.padding = _padding(padding, who)
        self.depth_multiplier = _positive_int(depth_multiplier, "depth_multiplier", who)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
        self.bias_constraint = constraints.get(bias_constraint)

    def _check_rank(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{self._who} {self.name!r}: expects 4-D input (N, H, W, C), got shape "
                             f"{tuple(input_shape)}")

    def _add_depthwise_kernel(self, name, channels):
        return self.add_weight(name, self.kernel_size + (channels, self.depth_multiplier), self.depthwise_initializer,
                               self.depthwise_regularizer, constraint=self.depthwise_constraint)

    def _add_bias(self, units):
        return self.add_weight("bias", (units,), self.bias_initializer, self.bias_regularizer,
                               constraint=self.bias_constraint) if self.use_bias else None

    def _depthwise_shape(self, input_shape):
        """(N, OH, OW, C * depth_multiplier) of the depthwise step; ValueError for a window that does not fit."""
        kshape = self.kernel_size + (input_shape[-1], self.depth_multiplier)
        return windowed_output_shape(ops.depthwise_conv2d_output_shape, input_shape, kshape, self.strides,
                                     self.padding, self.dilation_rate)

    _geometry = _window_geometry

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides), "padding": self.padding,
                "data_format": "channels_last", "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.name, "use_bias": self.use_bias,
                "depthwise_initializer": _serial.serialize(self.depthwise_initializer),
                "bias_initializer": _serial.serialize(self.bias_initializer),
                "depthwise_regularizer": serialize_optional(self.depthwise_regularizer),
                "bias_regularizer": serialize_optional(self.bias_regularizer),
                "depthwise_constraint": serialize_optional(self.depthwise_constraint),
                "bias_constraint": serialize_optional(self.bias_constraint)}


@_serial.register_serializable
class DepthwiseConv2D(_DepthwiseBase):
    """Depthwise 2-D convolution as Keras's: each input channel convolved with its own ``depth_multiplier``
    filters; kernel (kh, kw, C, depth_multiplier), bias (C * depth_multiplier,), NHWC only."""

    _who = "DepthwiseConv2D"

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                         depthwise_constraint, bias_constraint, activity_regularizer=activity_regularizer, **kwargs)
        self._fused = _fused(self.activation, ("relu", "relu6"))

    def build(self, input_shape):
        self._check_rank(input_shape)
        self._depthwise_shape(input_shape)
        self.kernel = self._add_depthwise_kernel("kernel", input_shape[-1])
        self.bias = self._add_bias(input_shape[-1] * self.depth_multiplier)

    def compute_output_shape(self, input_shape):
        return self._depthwise_shape(input_shape)

    def call(self, x, training=False, norm=None, activation=None, padding=None):
        """``norm``, ``activation`` and ``padding`` as Conv2D.call's."""
        if norm is not None:
            return folded_call(self, x, norm, activation, depthwise=True, padding=padding)
        y = ops.depthwise_conv2d(x, self.kernel, self.bias, activation=self._fused, **self._geometry(padding))
        return y if self._fused else self.activation(y)


@_serial.register_serializable
class SeparableConv2D(_DepthwiseBase):
    """Depthwise separable 2-D convolution as Keras's: a depthwise convolution (depthwise_kernel
    (kh, kw, C, depth_multiplier)) then a 1x1 convolution to ``filters`` (pointwise_kernel
    (1, 1, C * depth_multiplier, filters)), bias (filters,), NHWC only."""

    _who = "SeparableConv2D"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None, dilation_rate=(1, 1),
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                         depthwise_constraint, bias_constraint, activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _positive_int(filters, "filters", self._who)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.pointwise_constraint = constraints.get(pointwise_constraint)
        self._fused = _fused(self.activation, ("relu",))

    def build(self, input_shape):
        self._check_rank(input_shape)
        self._depthwise_shape(input_shape)
        channels = input_shape[-1]
        self.depthwise_kernel = self._add_depthwise_kernel("depthwise_kernel", channels)
        self.pointwise_kernel = self.add_weight("pointwise_kernel", (1, 1, channels * self.depth_multiplier,
                                                                     self.filters), self.pointwise_initializer,
                                                self.pointwise_regularizer, constraint=self.pointwise_constraint)
        self.bias = self._add_bias(self.filters)

    def compute_output_shape(self, input_shape):
        return self._depthwise_shape(input_shape)[:3] + (self.filters,)

    def call(self, x, training=False):
        z = ops.depthwise_conv2d(x, self.depthwise_kernel, None, **self._geometry())
        y = ops.conv2d(z, self.pointwise_kernel, self.bias, activation=self._fused)
        return y if self._fused else self.activation(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "pointwise_initializer": _serial.serialize(self.pointwise_initializer),
                "pointwise_regularizer": serialize_optional(self.pointwise_regularizer),
                "pointwise_constraint": serialize_optional(self.pointwise_constraint)}


SeparableConvolution2D = SeparableConv2D
