"""Layers that merge several inputs: Add (residual connections) and Concatenate (inception blocks)."""

from __future__ import annotations

from convkit import _serial, ops
from convkit.layers.base import Layer


class _Merge(Layer):
    multi_input = True

    def _check(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2:
            raise ValueError(f"{type(self).__name__} {self.name!r}: needs a list of at least 2 inputs")

    def build(self, input_shape):
        self._check(input_shape)
        self.compute_output_shape(input_shape)


@_serial.register_serializable
class Add(_Merge):
    """Elementwise sum of inputs of one shape."""

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        first = tuple(input_shape[0])
        for s in input_shape[1:]:
            if len(s) != len(first) or any(a is not None and b is not None and a != b
                                           for a, b in zip(first[1:], s[1:])):
                raise ValueError(f"Add {self.name!r}: inputs must have one shape, got {input_shape}")
        return first

    def call(self, inputs, training=False):
        if any(tuple(x.shape) != tuple(inputs[0].shape) for x in inputs):
            raise ValueError(f"Add {self.name!r}: inputs must have one shape, got {[x.shape for x in inputs]}")
        y = inputs[0]
        for x in inputs[1:]:
            y = ops.add(y, x)
        return y


@_serial.register_serializable
class Concatenate(_Merge):
    """Joins inputs along ``axis`` (default: channels)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        rank = len(input_shape[0])
        ax = self.axis % rank
        if ax == 0:
            raise ValueError(f"Concatenate {self.name!r}: cannot join along the batch axis")
        out = list(input_shape[0])
        for s in input_shape[1:]:
            if len(s) != rank or any(i != ax and a is not None and b is not None and a != b
                                     for i, (a, b) in enumerate(zip(out, s)) if i > 0):
                raise ValueError(f"Concatenate {self.name!r}: shapes {input_shape} differ outside axis {self.axis}")
            out[ax] = None if out[ax] is None or s[ax] is None else out[ax] + s[ax]
        return tuple(out)

    def call(self, inputs, training=False):
        return ops.concatenate(inputs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
