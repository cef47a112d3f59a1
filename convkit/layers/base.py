"""Layer base class, weights, symbolic tensors and the tape that drives backward.

A layer is a thin stateful shell over stateless ops. ``build(input_shape)`` makes its
weights, ``call(x, training)`` runs forward and, while a :class:`Tape` records, keeps
what backward needs on a per-layer stack (a layer called twice in one pass keeps two
entries), and ``backward(dy)`` pops the newest entry, returns dx and adds the weight
gradients into ``Variable.grad``. The tape remembers every call in order, so replaying
it in reverse pops each layer's stack in the right order whatever the model's shape.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import defaultdict

import numpy as np

from convkit import _serial, activations, initializers, regularizers
from convkit._device import device_of, to_device, to_numpy, xp_of

_name_counts: defaultdict = defaultdict(int)


def _snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """'conv2d', 'conv2d_1', ... as Keras names layers."""
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


class Variable:
    """A weight: its array (``value``), gradient (``grad``), trainability and regulariser."""

    __slots__ = ("value", "grad", "name", "trainable", "regularizer")

    def __init__(self, value, name: str, trainable: bool = True, regularizer=None):
        self.value, self.name, self.trainable, self.regularizer = value, name, trainable, regularizer
        self.grad = None

    @property
    def shape(self):
        return tuple(self.value.shape)

    def numpy(self):
        """A NumPy copy (never a view that later updates would change)."""
        v = self.value
        return v.copy() if isinstance(v, np.ndarray) else to_numpy(v)

    def assign(self, value):
        value = np.asarray(to_numpy(value), dtype=np.float32) if not hasattr(value, "__cuda_array_interface__") \
            else value
        if tuple(value.shape) != self.shape:
            raise ValueError(f"cannot assign shape {tuple(value.shape)} to weight {self.name!r} of shape {self.shape}")
        self.value = to_device(value, device_of(self.value), np.float32).copy()

    def add_grad(self, g):
        self.grad = g if self.grad is None else self.grad + g

    def __repr__(self):
        return f"<Variable {self.name} shape={self.shape} trainable={self.trainable}>"


# -- recording --------------------------------------------------------------------------------------------

_local = threading.local()  # the recording tape is per thread: a prefetch thread's layer calls are not recorded


def _active_tape():
    return getattr(_local, "tape", None)


class _Entry:
    __slots__ = ("layer", "inputs", "output", "multi")

    def __init__(self, layer, inputs, output, multi):
        self.layer, self.inputs, self.output, self.multi = layer, inputs, output, multi


class Tape:
    """Records layer calls made inside ``with Tape():`` so that ``backward`` can replay them.

    Gradients flow by array identity: each call's output is matched to the inputs of later
    calls, which makes Sequential, functional DAGs and subclassed ``call()`` code alike.
    """

    def __init__(self):
        self.entries: list[_Entry] = []
        self.losses = []  # (value, layer, output) from activity regularisers
        self._produced: set[int] = set()
        self.watcher = None  # told start(entries) before backward and done(layer) after each replayed call

    def __enter__(self):
        if _active_tape() is not None:
            raise RuntimeError("a Tape is already recording; tapes do not nest")
        _local.tape = self
        return self

    def __exit__(self, *exc):
        _local.tape = None
        self.clear()

    def record(self, layer, inputs, output, multi):
        self.entries.append(_Entry(layer, inputs, output, multi))
        self._produced.add(id(output))

    def clear(self):
        for e in self.entries:
            e.layer._cache.clear()
        self.entries.clear()
        self._produced.clear()

    def backward(self, output, dy, skip_output_activation: bool = False, scale: float = 1.0):
        """Propagate ``dy`` (dL/d``output``) back through every recorded call.

        With ``skip_output_activation`` dy is taken as the gradient before the activation of
        the layer that produced ``output`` (softmax + cross-entropy fused by the loss). ``scale``
        multiplies dy and the activity regularisers' gradients (a rank's share of a global batch).
        """
        grads = {id(output): dy * scale if scale != 1.0 else dy}
        for reg_value, layer, out in self.losses:
            g = layer.activity_regularizer.grad(out)
            g = g * scale if scale != 1.0 else g
            grads[id(out)] = grads[id(out)] + g if id(out) in grads else g
        produced = self._produced
        last = self.entries[-1] if self.entries else None
        watcher = self.watcher
        if watcher is not None:
            watcher.start(self.entries)
        while self.entries:
            e = self.entries.pop()
            self._replay(e, grads, produced, skip_output_activation and e is last)
            if watcher is not None:
                watcher.done(e.layer)
        self._produced.clear()

    @staticmethod
    def _replay(e, grads, produced, skip_activation):
        g = grads.pop(id(e.output), None)
        if g is None:  # this call does not reach the loss
            e.layer._cache.pop()
            return
        inputs = e.inputs if e.multi else (e.inputs,)
        need = [id(i) in produced for i in inputs]
        kw = {"skip_activation": True} if skip_activation else {}
        if e.multi:
            dxs = e.layer.backward(g, need_dx=need, **kw)
        else:
            dxs = (e.layer.backward(g, need_dx=need[0], **kw),)
        for inp, dx, n in zip(inputs, dxs, need):
            if n and dx is not None:
                k = id(inp)
                grads[k] = grads[k] + dx if k in grads else dx


def recording() -> bool:
    return _active_tape() is not None


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
    """Base class. Subclasses implement build, call, backward, compute_output_shape, get_config."""

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
        self._cache: list = []
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

    # weights ---------------------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer="glorot_uniform", regularizer=None, trainable=True):
        value = np.ascontiguousarray(initializers.get(initializer)(tuple(shape)), dtype=np.float32)
        v = Variable(value, f"{self.name}/{name}", trainable, regularizers.get(regularizer))
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
        y = self.call(inputs, training=training, **kwargs)
        tape = _active_tape()
        if tape is not None:
            tape.record(self, inputs, y, self.multi_input)
            if self.activity_regularizer is not None:
                tape.losses.append((self.activity_regularizer(y), self, y))
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

    def backward(self, dy, need_dx=True):
        """dL/dx for the newest recorded call (and weight gradients into Variable.grad)."""
        return dy

    def _save(self, *cache):
        """Keep what backward needs, only while a tape records."""
        if _active_tape() is not None:
            self._cache.append(cache)

    def _pop(self):
        if not self._cache:
            raise RuntimeError(f"layer {self.name!r}: backward without a recorded forward pass; run the forward "
                               "inside `with convkit.layers.Tape():` (fit does this)")
        return self._cache.pop()

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
    arguments, weights, activation gradient and config."""

    def __init__(self, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _add_kernel_and_bias(self, kernel_shape, units):
        self.kernel = self.add_weight("kernel", kernel_shape, self.kernel_initializer, self.kernel_regularizer)
        self.bias = self.add_weight("bias", (units,), self.bias_initializer, self.bias_regularizer) \
            if self.use_bias else None

    def _activation_grad(self, dy, y, skip_activation):
        return dy if skip_activation else self.activation.grad(dy, y)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _serial.serialize(self.kernel_initializer),
                "bias_initializer": _serial.serialize(self.bias_initializer),
                "kernel_regularizer": serialize_optional(self.kernel_regularizer),
                "bias_regularizer": serialize_optional(self.bias_regularizer)}


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


__all__ = ["Layer", "Variable", "Tape", "KerasTensor", "InputLayer", "Input", "xp_of"]
