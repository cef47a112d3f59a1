"""Activation functions by name, over the differentiable ops of convkit.ops (Keras's names and defaults)."""

from __future__ import annotations

from convkit import ops


class Activation:
    """A named activation: calling it applies the op; ``name`` is what configs save."""

    name = "linear"

    def __call__(self, x):
        return x

    def __repr__(self):
        return self.name


def _activation(name: str, fn, doc: str) -> type:
    return type(name.title().replace("_", ""), (Activation,),
                {"name": name, "__call__": lambda self, x: fn(x), "__doc__": doc})


Linear = Activation
ReLU = _activation("relu", ops.relu, "max(x, 0).")
ReLU6 = _activation("relu6", ops.relu6, "min(max(x, 0), 6).")
Sigmoid = _activation("sigmoid", ops.sigmoid, "1 / (1 + exp(-x)).")
HardSigmoid = _activation("hard_sigmoid", ops.hard_sigmoid, "relu6(x + 3) / 6.")
Silu = _activation("silu", ops.silu, "x * sigmoid(x) (also 'swish').")
Gelu = _activation("gelu", ops.gelu, "x * P(N(0, 1) <= x), exact (Keras's default).")
Tanh = _activation("tanh", ops.tanh, "Hyperbolic tangent.")
Softmax = _activation("softmax", ops.softmax, "Softmax over the last axis.")
Elu = _activation("elu", ops.elu, "x where positive, exp(x) - 1 elsewhere.")
Selu = _activation("selu", ops.selu, "Scaled ELU (self-normalising).")
Softplus = _activation("softplus", ops.softplus, "log(1 + exp(x)).")
LeakyRelu = _activation("leaky_relu", ops.leaky_relu, "x where positive, 0.2 x elsewhere.")


def hard_silu(x):
    """x * hard_sigmoid(x) (also 'hard_swish', MobileNetV3's activation)."""
    return ops.multiply(x, ops.hard_sigmoid(x))


HardSilu = _activation("hard_silu", hard_silu, hard_silu.__doc__)

_TABLE = {c.name: c for c in (Linear, ReLU, ReLU6, Sigmoid, HardSigmoid, Silu, Gelu, Tanh, Softmax, Elu, Selu,
                              Softplus, LeakyRelu, HardSilu)}
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}  # as Keras, which saves them under the second names


def get(identifier) -> Activation:
    """An Activation from a name (one of ``names()``), one of this module's functions, None (linear) or an
    instance."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier.lower(), identifier.lower())
        if key in _TABLE:
            return _TABLE[key]()
    elif callable(identifier):  # one of this module's functions (activation=convkit.activations.relu)
        for name, cls in _TABLE.items():
            if globals().get(name) is identifier:
                return cls()
    raise ValueError(f"unknown activation {identifier!r}; known: {names()}")


def names() -> list:
    """Every name ``get`` accepts."""
    return sorted(set(_TABLE) | set(_ALIASES))


# the functions, as keras.activations has them (with their arguments: elu's alpha, gelu's approximate, ...)
relu, relu6, sigmoid, hard_sigmoid, silu, gelu, tanh, softmax, elu, selu, softplus, leaky_relu = (
    ops.relu, ops.relu6, ops.sigmoid, ops.hard_sigmoid, ops.silu, ops.gelu, ops.tanh, ops.softmax, ops.elu, ops.selu,
    ops.softplus, ops.leaky_relu)
swish, hard_swish = silu, hard_silu


def linear(x):
    return x


__all__ = ["get", "names", "relu", "relu6", "sigmoid", "hard_sigmoid", "silu", "swish", "gelu", "tanh", "softmax",
           "elu", "selu", "softplus", "leaky_relu", "hard_silu", "hard_swish", "linear"]
