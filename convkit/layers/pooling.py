"""Max, average, global average and global max pooling over convkit.ops."""

from __future__ import annotations

from convkit import _serial, ops
from convkit.layers.base import Layer
from convkit.layers.conv import _channels_last, _padding, _pair, windowed_output_shape


class _Pool2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        who = type(self).__name__
        _channels_last(data_format, who)
        self.pool_size = _pair(pool_size, f"{who} pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, f"{who} strides")
        self.padding = _padding(padding, who)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects 4-D input (N, H, W, C), "
                             f"got shape {tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        return windowed_output_shape(ops.pool2d_output_shape, input_shape, self.pool_size, self.strides,
                                     self.padding)

    def _geometry(self):
        return dict(pool_size=self.pool_size, strides=self.strides, padding=self.padding)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


@_serial.register_serializable
class MaxPooling2D(_Pool2D):
    """Max pooling (recorded with its argmax, which its gradient needs)."""

    def call(self, x, training=False):
        return ops.max_pool2d(x, **self._geometry())


@_serial.register_serializable
class AveragePooling2D(_Pool2D):
    """Average pooling ('same' divides by the cells inside the input, as TensorFlow)."""

    def call(self, x, training=False):
        return ops.avg_pool2d(x, **self._geometry())


class _GlobalPool2D(Layer):
    """Pools each channel over H and W: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects 4-D input, got {tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        return (n, 1, 1, c) if self.keepdims else (n, c)

    def get_config(self):
        return {**super().get_config(), "data_format": "channels_last", "keepdims": self.keepdims}


@_serial.register_serializable
class GlobalAveragePooling2D(_GlobalPool2D):
    """Mean over H and W."""

    def call(self, x, training=False):
        y = ops.global_avg_pool2d(x)
        return ops.reshape(y, (y.shape[0], 1, 1, y.shape[1])) if self.keepdims else y


@_serial.register_serializable
class GlobalMaxPooling2D(_GlobalPool2D):
    """Maximum over H and W."""

    def call(self, x, training=False):
        return ops.global_max_pool2d(x, keepdims=self.keepdims)


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
