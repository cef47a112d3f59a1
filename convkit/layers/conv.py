"""Conv2D over convkit.ops.conv2d (bias and ReLU fused into the kernel's epilogue)."""

from __future__ import annotations

from convkit import _serial, ops
from convkit.layers.base import KernelLayer


def _pair(v, name):
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(e, int) and e > 0 for e in t):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return t


def _channels_last(data_format, who):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{who}: only data_format='channels_last' (NHWC) is supported, got {data_format!r}")


def _padding(p, who):
    if not isinstance(p, str) or p.lower() not in ("valid", "same"):
        raise ValueError(f"{who}: padding must be 'valid' or 'same', got {p!r}")
    return p.lower()


@_serial.register_serializable
class Conv2D(KernelLayer):
    """2-D convolution: NHWC input, HWIO kernel (kh, kw, in, filters), Keras arguments and defaults."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, **kwargs)
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
        n = input_shape[0]
        out = ops.conv2d_output_shape((1,) + tuple(input_shape[1:]), kshape, self.strides, self.padding,
                                      self.dilation_rate)
        return (n,) + tuple(out[1:])

    def _geometry(self):
        return dict(strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate)

    def call(self, x, training=False):
        if self._fused:
            return ops.conv2d(x, self.kernel, self.bias, activation="relu", **self._geometry())
        return self.activation(ops.conv2d(x, self.kernel, self.bias, **self._geometry()))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding, "dilation_rate": list(self.dilation_rate)}


Convolution2D = Conv2D
