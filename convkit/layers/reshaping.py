"""Layers that move values without arithmetic: ZeroPadding2D, Cropping2D, Reshape and Permute."""

from __future__ import annotations

import math
import numbers

from convkit import _serial, ops
from convkit.layers.base import Layer
from convkit.layers.conv import _channels_last


def _int(v, what):
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    return int(v)


def _two_pairs(v, who, arg):
    """Keras's forms: n, (rows, cols) or ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise ValueError(f"{who}: {arg} must be an int, a pair of ints or a pair of (before, after) pairs, got {v!r}")
    out = []
    for side in v:
        pair = (side, side) if isinstance(side, numbers.Integral) else tuple(side) \
            if isinstance(side, (tuple, list)) else ()
        if len(pair) != 2:
            raise ValueError(f"{who}: {arg} must be an int, a pair of ints or a pair of (before, after) pairs, "
                             f"got {v!r}")
        out.append(tuple(_int(p, f"{who}: each {arg} amount") for p in pair))
    return tuple(out)


class _Spatial(Layer):
    """A 4-D NHWC layer that changes H and W by ``(before, after)`` amounts."""

    _arg = ""

    def __init__(self, amounts, data_format=None, **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, type(self).__name__)
        setattr(self, self._arg, _two_pairs(amounts, type(self).__name__, self._arg))

    def _amounts(self):
        return getattr(self, self._arg)

    def _widths(self):
        (t, b), (l, r) = self._amounts()
        return ((0, 0), (t, b), (l, r), (0, 0))

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects 4-D input (N, H, W, C), "
                             f"got shape {tuple(input_shape)}")

    def get_config(self):
        return {**super().get_config(), self._arg: [list(p) for p in self._amounts()],
                "data_format": "channels_last"}


@_serial.register_serializable
class ZeroPadding2D(_Spatial):
    """Zeros around the image: ``padding`` is n, (rows, cols) or ((top, bottom), (left, right))."""

    _arg = "padding"

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (t, b), (l, r) = self.padding
        return n, None if h is None else h + t + b, None if w is None else w + l + r, c

    def call(self, x, training=False):
        return ops.pad(x, self._widths())


@_serial.register_serializable
class Cropping2D(_Spatial):
    """Removes rows and columns at the edges: ``cropping`` is n, (rows, cols) or ((top, bottom), (left, right))."""

    _arg = "cropping"

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (t, b), (l, r) = self.cropping
        if (h is not None and t + b >= h) or (w is not None and l + r >= w):
            raise ValueError(f"Cropping2D {self.name!r}: cropping {self.cropping} must leave something of an input "
                             f"of shape {tuple(input_shape)}")
        return n, None if h is None else h - t - b, None if w is None else w - l - r, c

    def call(self, x, training=False):
        self.compute_output_shape(tuple(x.shape))
        return ops.crop(x, self._widths())


@_serial.register_serializable
class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (no batch dimension; one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        shape = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else None
        if not shape or any(not isinstance(d, numbers.Integral) or d == 0 or d < -1 for d in shape) \
                or shape.count(-1) > 1:
            raise ValueError(f"Reshape: target_shape must be a tuple of positive ints with at most one -1, "
                             f"got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in shape)

    def _resolved(self, sample_shape):
        if any(d is None for d in sample_shape):
            return tuple(None if d == -1 else d for d in self.target_shape)
        size, known = math.prod(sample_shape), math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and size != known):
            raise ValueError(f"Reshape {self.name!r}: cannot reshape samples of shape {tuple(sample_shape)} "
                             f"({size} values) to {self.target_shape}")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolved(tuple(input_shape[1:]))

    def call(self, x, training=False):
        return ops.reshape(x, (x.shape[0],) + self._resolved(tuple(x.shape[1:])))

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


@_serial.register_serializable
class Permute(Layer):
    """Permutes the non-batch axes: ``dims`` numbers them from 1, e.g. (2, 1) swaps the first two."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else ()
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"Permute: dims must be a permutation of 1..n, got {dims!r}")
        self.dims = tuple(int(d) for d in dims)

    def build(self, input_shape):
        if len(input_shape) != len(self.dims) + 1:
            raise ValueError(f"Permute {self.name!r}: dims {self.dims} need {len(self.dims) + 1}-D inputs, "
                             f"got shape {tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def call(self, x, training=False):
        return ops.transpose(x, (0,) + self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": list(self.dims)}
