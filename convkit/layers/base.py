"""Layer base class, weights and symbolic tensors.

A layer holds weights and composes ops: ``build(input_shape)`` makes its weights and
``call(x, training)`` runs forward through registered ops (convkit.ops), passing its
Variables to them. It has no backward of its own: a recording convkit.GradientTape sees
the ops and their rules, so any composition of layers has gradients.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import defaultdict

import numpy as np

from convkit import _serial, activations, constraints, initializers, ops, regularizers
from convkit._device import xp_of
from convkit.autodiff import Variable

_name_counts: defaultdict = defaultdict(int)


def _snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """'conv2d', 'conv2d_1', ... as Keras names layers."""
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


_calls = threading.local()  # per thread: nesting depth of layer calls, and a count of outermost calls


def _enter_call() -> int:
    """Count a layer or model call; an outermost one starts a new forward pass. Returns the old depth."""
    depth = getattr(_calls, "depth", 0)
    if depth == 0:
        _calls.passes = getattr(_calls, "passes", 0) + 1
    _calls.depth = depth + 1
    return depth


def _exit_call(depth: int) -> None:
    _calls.depth = depth


def _current_pass() -> int:
    return getattr(_calls, "passes", 0)


# -- symbolic tensors --------------------------------------------------------------------------------------

class KerasTensor:
    """A symbolic tensor: a shape (batch dim None) and the node that produces it."""

    def __init__(self, shape, node=None):
        self.shape, self.node = tuple(shape), node

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}>"


class Node:
    """One call of a layer on symbolic inputs."""

    def __init__(self, layer, inputs, multi):
        self.layer, self.inputs, self.multi = layer, inputs, multi
        self.output = None


def node_depths(order):
    """Keras's depths of a graph's nodes and layers, keyed by id: how many layers lie between a node and the
    outputs (a layer's is the largest of its nodes'). ``order`` lists the nodes inputs first."""
    node_depth, layer_depth = {}, {}
    for n in reversed(order):  # every consumer of a node comes before it
        d = max(node_depth.get(id(n), 0), layer_depth.get(id(n.layer), 0))
        node_depth[id(n)] = layer_depth[id(n.layer)] = d
        for t in n.inputs:
            node_depth[id(t.node)] = max(node_depth.get(id(t.node), 0), d + 1)
    return node_depth, layer_depth


def _is_symbolic(x) -> bool:
    if isinstance(x, (list, tuple)):
        return any(isinstance(t, KerasTensor) for t in x)
    return isinstance(x, KerasTensor)


def _shape_of(x):
    if isinstance(x, (list, tuple)):
        return [tuple(t.shape) for t in x]
    return tuple(x.shape)


# -- layers ------------------------------------------------------------------------------------------------

class Layer:
    """Base class. Subclasses implement build, call (with convkit.ops), compute_output_shape, get_config."""

    multi_input = False
    _is_model = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # build() called directly (as in Keras) must leave the layer built, like a build on first call
        if "build" in cls.__dict__ and not cls._is_model:
            user_build = cls.__dict__["build"]

            @functools.wraps(user_build)
            def build(self, input_shape):
                user_build(self, input_shape)
                self._mark_built(input_shape)

            cls.build = build

    def __init__(self, name=None, trainable=True, dtype=None, input_shape=None, activity_regularizer=None,
                 **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        if dtype not in (None, "float32", np.float32):
            raise TypeError(f"{type(self).__name__}: only float32 is supported, got dtype={dtype!r}")
        object.__setattr__(self, "_layers", [])
        self.name = name or unique_name(_snake(type(self).__name__))
        self.trainable = trainable
        self.built = False
        self._weights: list[Variable] = []
        self._activity_losses: tuple = (0, [])  # (forward pass, penalties of this layer's calls in it)
        self._input_spec = None
        self._output_shapes: list = []
        self._input_shape_arg = tuple(input_shape) if input_shape is not None else None
        self.activity_regularizer = regularizers.get(activity_regularizer)

    # sub-layers assigned as attributes are tracked (subclassed models, composite layers)
    def __setattr__(self, key, value):
        layers = self.__dict__.get("_layers")
        if layers is not None and key != "_layers":
            items = value if isinstance(value, (list, tuple)) else [value]
            for v in items:
                if isinstance(v, Layer) and v is not self and all(v is not l for l in layers):
                    layers.append(v)
        object.__setattr__(self, key, value)

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        # as Keras: the layers inside follow, so a frozen model's BatchNormalizations run in inference mode
        object.__setattr__(self, "_trainable", bool(value))
        for layer in self._layers:
            layer.trainable = value

    # weights ---------------------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer="glorot_uniform", regularizer=None, trainable=True,
                   constraint=None):
        value = np.array(initializers.get(initializer)(tuple(shape)), dtype=np.float32, order="C")  # 0-d stays 0-d
        v = Variable(value, f"{self.name}/{name}", trainable, regularizers.get(regularizer),
                     constraints.get(constraint))
        self._weights.append(v)
        return v

    @property
    def weights(self) -> list:
        out, seen = [], set()
        for v in self._weights + [w for l in self._layers for w in l.weights]:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    @property
    def trainable_weights(self) -> list:
        if not self.trainable:
            return []
        own = [v for v in self._weights if v.trainable]
        return own + [w for l in self._layers for w in l.trainable_weights if all(w is not o for o in own)]

    @property
    def non_trainable_weights(self) -> list:
        t = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in t]

    @property
    def variables(self) -> list:
        return self.weights

    @property
    def trainable_variables(self) -> list:
        return self.trainable_weights

    @property
    def non_trainable_variables(self) -> list:
        return self.non_trainable_weights

    @property
    def losses(self) -> list:
        """Scalar penalties to add to the loss, as in Keras: the activity regularisers' values from the
        latest forward pass and the weight regularisers' values now, for this layer and those inside it
        (differentiable under a GradientTape)."""
        out, seen = [], set()
        self._collect_losses(out, seen)
        return out

    def _collect_losses(self, out, seen):
        if id(self) in seen:
            return
        seen.add(id(self))
        passed, values = self._activity_losses
        if passed == _current_pass():
            out.extend(values)
        for v in self._weights:
            if v.regularizer is not None:
                out.append(ops.penalty(v, v.regularizer))
        for layer in self._layers:
            layer._collect_losses(out, seen)

    def get_weights(self) -> list:
        return [v.numpy() for v in self.weights]

    def set_weights(self, arrays):
        ws = self.weights
        if len(arrays) != len(ws):
            raise ValueError(f"{self.name}: set_weights got {len(arrays)} arrays for {len(ws)} weights")
        for v, a in zip(ws, arrays):
            v.assign(a)

    def count_params(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.weights))

    # building --------------------------------------------------------------------------------------------
    def build(self, input_shape):
        self.built = True

    def _maybe_build(self, input_shape):
        if not self.built:
            self.build(input_shape)
            self._mark_built(input_shape)

    def _mark_built(self, input_shape):
        if not self.built:
            self.built = True
            # later calls must match the dims the weights depend on (the last one); weightless
            # layers may be reused on inputs of other sizes, as the notes' LeNet-5 reuses its pooling
            if not isinstance(input_shape, list):
                last = input_shape[-1] if self._weights else None
                self._input_spec = (None,) * (len(input_shape) - 1) + (last,)

    def compute_output_shape(self, input_shape):
        return input_shape

    def _check_input(self, shape):
        spec = self._input_spec
        if spec is None or self.multi_input:
            return
        if len(shape) != len(spec) or any(s is not None and s != d for s, d in zip(spec[1:], shape[1:])):
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) was built for inputs of shape "
                             f"{tuple(spec)} but got {tuple(shape)}")

    # calling ---------------------------------------------------------------------------------------------
    def __call__(self, inputs, training=None, **kwargs):
        if _is_symbolic(inputs):
            return self._symbolic_call(inputs)
        inputs = [_as_float32(x) for x in inputs] if isinstance(inputs, (list, tuple)) else _as_float32(inputs)
        shape = _shape_of(inputs)
        if not self.built:
            self._maybe_build(_with_batch_none(shape))
        else:
            self._check_input(shape)
        depth = _enter_call()
        try:
            y = self.call(inputs, training=training, **kwargs)
        finally:
            _exit_call(depth)
        if self.activity_regularizer is not None:
            passed, values = self._activity_losses
            now = _current_pass()
            self._activity_losses = (now, (values if passed == now else []) + [ops.penalty(y, self.activity_regularizer)])
        return y

    def _symbolic_call(self, inputs):
        shape = _shape_of(inputs)
        if self.built:
            self._check_input(shape)
        self._maybe_build(shape)
        out_shape = tuple(self.compute_output_shape(shape))
        multi = isinstance(inputs, (list, tuple))
        node = Node(self, list(inputs) if multi else [inputs], multi)
        node.output = KerasTensor(out_shape, node)
        self._output_shapes.append(out_shape)
        return node.output

    def call(self, x, training=False):
        return x

    # config ----------------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.activity_regularizer is not None:
            cfg["activity_regularizer"] = _serial.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def output_shape(self):
        if not self._output_shapes:
            raise AttributeError(f"layer {self.name!r} has not been called on a symbolic input yet")
        return self._output_shapes[0]

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"



def serialize_optional(obj):
    """``_serial.serialize(obj)``, or None for an absent regularizer or constraint."""
    return None if obj is None else _serial.serialize(obj)


class KernelLayer(Layer):
    """A layer with a kernel, an optional bias and an activation (Conv2D, Dense): their shared
    arguments, weights and config."""

    def __init__(self, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _add_kernel_and_bias(self, kernel_shape, units):
        self.kernel = self.add_weight("kernel", kernel_shape, self.kernel_initializer, self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.bias = self.add_weight("bias", (units,), self.bias_initializer, self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _serial.serialize(self.kernel_initializer),
                "bias_initializer": _serial.serialize(self.bias_initializer),
                "kernel_regularizer": serialize_optional(self.kernel_regularizer),
                "bias_regularizer": serialize_optional(self.bias_regularizer),
                "kernel_constraint": serialize_optional(self.kernel_constraint),
                "bias_constraint": serialize_optional(self.bias_constraint)}


def _as_float32(x):
    """Layers compute in float32 and, as Keras layers, cast real inputs of other dtypes (the ops do not)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    if x.dtype == np.float32:
        return x
    if x.dtype.kind not in "fiub":
        raise TypeError(f"layers take real-valued arrays, got dtype {x.dtype}")
    return x.astype(np.float32)


def _with_batch_none(shape):
    if isinstance(shape, list):
        return [(None,) + tuple(s[1:]) for s in shape]
    return (None,) + tuple(shape[1:])


@_serial.register_serializable
class InputLayer(Layer):
    """Declares the input shape (without the batch dimension)."""

    def __init__(self, shape=None, batch_size=None, name=None, input_shape=None, **kwargs):
        kwargs.pop("trainable", None)
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer needs shape=(H, W, C) or similar (without the batch dimension)")
        if isinstance(shape, int):
            shape = (shape,)
        super().__init__(name=name or unique_name("input_layer"), **kwargs)
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.batch_size = batch_size
        self.built = True
        self._input_spec = (None,) + self.shape
        self.output = KerasTensor((None,) + self.shape, Node(self, [], False))
        self.output.node.output = self.output
        self._output_shapes.append(self.output.shape)

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}


def Input(shape=None, batch_size=None, name=None, **kwargs):
    """A symbolic input tensor for the functional API: ``Input(shape=(28, 28, 1))``."""
    return InputLayer(shape=shape, batch_size=batch_size, name=name, **kwargs).output


def serialize_layer(layer) -> dict:
    return _serial.serialize(layer)


def deserialize_layer(d, custom_objects=None):
    return _serial.deserialize(d, custom_objects, kind="layer")


__all__ = ["Layer", "Variable", "KerasTensor", "InputLayer", "Input", "xp_of"]
