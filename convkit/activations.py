"""Activation functions by name, over the differentiable ops of convkit.ops."""

from __future__ import annotations

from convkit import ops


class Activation:
    name = "linear"

    def __call__(self, x):
        return x

    def __repr__(self):
        return self.name


class Linear(Activation):
    pass


class ReLU(Activation):
    name = "relu"

    def __call__(self, x):
        return ops.relu(x)


class Sigmoid(Activation):
    name = "sigmoid"

    def __call__(self, x):
        return ops.sigmoid(x)


class Tanh(Activation):
    name = "tanh"

    def __call__(self, x):
        return ops.tanh(x)


class Softmax(Activation):
    name = "softmax"

    def __call__(self, x):
        return ops.softmax(x)


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
