"""Layers that merge several inputs (Keras's merging layers): Add, Subtract, Multiply, Average, Maximum,
Minimum (elementwise, broadcasting as NumPy does) and Concatenate, with their functional forms
(``add([a, b])`` builds the layer and calls it)."""

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


class _Elementwise(_Merge):
    """Inputs broadcast against each other (sample dimensions of 1 stretch; inputs of lower rank gain
    axes of size 1 after the batch axis, as in Keras)."""

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        rank = max(len(s) for s in input_shape)
        padded = [(s[0],) + (1,) * (rank - len(s)) + tuple(s[1:]) for s in input_shape]
        out = [next((s[0] for s in padded if s[0] is not None), None)]
        for dims in list(zip(*padded))[1:]:
            sizes = {d for d in dims if d != 1}
            if len(sizes - {None}) > 1:
                raise ValueError(f"{type(self).__name__} {self.name!r}: inputs of shapes {input_shape} "
                                 "cannot be broadcast together")
            out.append(None if None in sizes else sizes.pop() if sizes else 1)
        return tuple(out)

    def call(self, inputs, training=False):
        return self._merge(self._aligned(inputs))

    def _aligned(self, inputs):
        """The inputs, checked, those of lower rank given axes of size 1 after the batch axis."""
        self._check(list(inputs))
        self.compute_output_shape([tuple(x.shape) for x in inputs])
        rank = max(x.ndim for x in inputs)
        return [x if x.ndim == rank else ops.reshape(x, (x.shape[0],) + (1,) * (rank - x.ndim) + tuple(x.shape[1:]))
                for x in inputs]

    def _merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = self._op(y, x)
        return y


@_serial.register_serializable
class Add(_Elementwise):
    """Elementwise sum (residual connections)."""

    _op = staticmethod(ops.add)

    def call(self, inputs, training=False, activation=None):
        """``activation`` (a name ops.add_activation takes) is applied in the same pass: models pass it for the
        activation layer that follows, see ``normalization.fusion``."""
        xs = self._aligned(inputs)
        if activation is None:
            return self._merge(xs)
        return ops.add_activation(self._merge(xs[:-1]), xs[-1], activation)


@_serial.register_serializable
class Multiply(_Elementwise):
    """Elementwise product (e.g. squeeze-and-excitation: (N, H, W, C) times (N, 1, 1, C))."""

    _op = staticmethod(ops.multiply)


@_serial.register_serializable
class Maximum(_Elementwise):
    """Elementwise maximum."""

    _op = staticmethod(ops.maximum)


@_serial.register_serializable
class Minimum(_Elementwise):
    """Elementwise minimum."""

    _op = staticmethod(ops.minimum)


@_serial.register_serializable
class Average(_Elementwise):
    """Elementwise mean."""

    def _merge(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = ops.add(y, x)
        return ops.divide(y, len(xs))


@_serial.register_serializable
class Subtract(_Elementwise):
    """The first input minus the second (exactly two)."""

    _op = staticmethod(ops.subtract)

    def _check(self, shapes):
        if not isinstance(shapes, list) or len(shapes) != 2:
            raise ValueError(f"Subtract {self.name!r}: needs a list of exactly 2 inputs")


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


def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)
