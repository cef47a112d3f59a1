"""Activation functions with the gradients backward needs, written in terms of the output y."""

from __future__ import annotations

from convkit._device import xp_of


class Activation:
    name = "linear"

    def __call__(self, x):
        return x

    def grad(self, dy, y):
        """dL/dx given dL/dy and y = self(x)."""
        return dy

    def __repr__(self):
        return self.name


class Linear(Activation):
    pass


class ReLU(Activation):
    name = "relu"

    def __call__(self, x):
        return xp_of(x).maximum(x, 0)

    def grad(self, dy, y):
        return dy * (y > 0)


class Sigmoid(Activation):
    name = "sigmoid"

    def __call__(self, x):
        xp = xp_of(x)
        # exp of a non-positive number never overflows
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def grad(self, dy, y):
        return dy * y * (1 - y)


class Tanh(Activation):
    name = "tanh"

    def __call__(self, x):
        return xp_of(x).tanh(x)

    def grad(self, dy, y):
        return dy * (1 - y * y)


class Softmax(Activation):
    name = "softmax"

    def __call__(self, x):
        xp = xp_of(x)
        e = xp.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def grad(self, dy, y):
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


_TABLE = {c.name: c for c in (Linear, ReLU, Sigmoid, Tanh, Softmax)}


def get(identifier) -> Activation:
    """An Activation from a name ('relu', 'sigmoid', 'softmax', 'tanh', 'linear'), None or an instance."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _TABLE:
        return _TABLE[identifier.lower()]()
    raise ValueError(f"unknown activation {identifier!r}; known: {sorted(_TABLE)}")


def relu(x):
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def softmax(x):
    return Softmax()(x)


def tanh(x):
    return Tanh()(x)


def linear(x):
    return x


__all__ = ["get", "relu", "sigmoid", "softmax", "tanh", "linear"]
