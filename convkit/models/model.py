"""Model: the functional graph (Model(inputs, outputs)) and the base of subclassed models.

A subclassed model defines its layers in ``__init__`` and its forward pass in ``call()``;
backward needs no code from it, because every op its layers call during a training step is
recorded on a GradientTape and replayed in reverse.
"""

from __future__ import annotations

import functools
import inspect

from convkit import _serial
from convkit.layers.base import (InputLayer, KerasTensor, Layer, Node, _enter_call, _exit_call, _is_symbolic,
                                 node_depths, unique_name, _snake)
from convkit.layers.normalization import fusion, pads_as_same, residual_input
from convkit.models.summary import print_summary
from convkit.models.training import Trainer


@functools.lru_cache(maxsize=None)
def _call_takes_training(cls) -> bool:
    params = inspect.signature(cls.call).parameters
    return "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _plain(value) -> bool:
    """A constructor argument that a config can hold as it is: str, number, bool, None, or lists,
    tuples and string-keyed dicts of those."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _auto_config(cls, args, kwargs):
    """The constructor arguments of a subclassed model, defaults included, when all are plain values
    (as Keras 3 records them); None otherwise."""
    try:
        sig = inspect.signature(cls.__init__)
        bound = sig.bind(None, *args, **kwargs)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())[1:]
    if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in params):
        return None
    bound.apply_defaults()
    config = dict(list(bound.arguments.items())[1:])
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            config.update(config.pop(p.name, {}))
    config.pop("name", None)
    return config if _plain(config) else None


class Model(Trainer, Layer):
    """Keras-style model. ``Model(inputs, outputs)`` builds a functional graph; subclass and define
    ``call(self, x, training=False)`` for a subclassed model."""

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        if cls.__module__ not in (__name__, "convkit.models.sequential"):  # a subclassed model
            object.__setattr__(instance, "_auto_config", _auto_config(cls, args, kwargs))
        return instance

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, **kwargs):
        base = "functional" if inputs is not None else ("model" if type(self) is Model else _snake(type(self).__name__))
        Layer.__init__(self, name=name or unique_name(base), trainable=trainable, **kwargs)
        Trainer.__init__(self)
        self._graph = None
        self._pairs = None
        self._traced = False
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError("Model(inputs, outputs): both are required for a functional model")
            self._init_graph(inputs, outputs)

    # functional graph ------------------------------------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        ins, outs = _as_list(inputs), _as_list(outputs)
        for t in ins + outs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors from Input(...) and layer calls, "
                                f"got {type(t).__name__}")
        for t in ins:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError("Model inputs must come straight from Input(...)")
        order, layers = _topology(outs)
        input_nodes = {id(t.node) for t in ins}
        for n in order:
            if isinstance(n.layer, InputLayer) and id(n) not in input_nodes:
                raise ValueError(f"the outputs depend on input {n.layer.name!r}, which is not in Model(inputs=...)")
        if len(outs) != 1:
            raise NotImplementedError("models with several outputs are not supported; give Model one output")
        self._graph = (ins, outs, order)
        self._layers[:] = layers
        self.built = self._traced = True
        self._input_spec = ins[0].shape if len(ins) == 1 else None
        self._multi_input = len(ins) > 1

    def _run_graph(self, x, training):
        ins, outs, order = self._graph
        xs = _as_list(x)
        if len(xs) != len(ins):
            raise ValueError(f"model {self.name!r} takes {len(ins)} input(s), got {len(xs)}")
        values = {id(t): v for t, v in zip(ins, xs)}
        readers, fused = self._fusable_pairs(), set()
        for node in order:
            if isinstance(node.layer, InputLayer) or id(node) in fused:
                continue
            args = [values[id(t)] for t in node.inputs]
            head, padding = node, {}  # head: the layer called; a ZeroPadding2D may leave its zeros to its reader
            if id(node) in readers and pads_as_same(node.layer, readers[id(node)].layer, args[0].shape):
                head, padding = readers[id(node)], {"padding": "same"}
                fused.add(id(head))
            run = [head]  # the head and up to four that read it alone, one after the other
            while len(run) < 5 and id(run[-1]) in readers:
                run.append(readers[id(run[-1])])
            other = residual_input(run, training)  # the value when it is computed already, for a fused sum
            shortcut = None if other is None else values.get(id(other))
            count, kw = fusion([n.layer for n in run], training, shortcut)
            fused.update(id(n) for n in run[1:count])  # their value comes from the head's call
            values[id(run[count - 1].output)] = head.layer(args if head.multi else args[0], training=training,
                                                           **padding, **kw)
        return values[id(outs[0])]

    def _fusable_pairs(self):
        """{id(node): the node of its output's one consumer}, for nodes whose output nothing else reads (not the
        model's output either): runs of layers that one call may compute (``normalization.fusion``)."""
        if self._pairs is None:
            _, outs, order = self._graph
            readers = {}
            for n in order:
                for t in n.inputs:
                    readers.setdefault(id(t), []).append(n)
            self._pairs = {id(t.node): r[0] for n in order for t in n.inputs
                           if len(r := readers[id(t)]) == 1 and all(t is not o for o in outs)}
        return self._pairs

    # calling ---------------------------------------------------------------------------------------------
    def call(self, x, training=False):
        if self._graph is not None:
            return self._run_graph(x, training)
        raise NotImplementedError(f"{type(self).__name__}: a subclassed Model must define call(self, x)")

    def _invoke(self, x, training):
        if _call_takes_training(type(self)):
            return self.call(x, training=training)
        return self.call(x)

    def __call__(self, inputs, training=None, **kwargs):
        if _is_symbolic(inputs):
            return self._nested_call(inputs)
        if not self.built and not isinstance(inputs, (list, tuple)):
            self._input_spec = (None,) + tuple(inputs.shape[1:])
            self.built = True
        depth = _enter_call()
        try:
            return self._invoke(inputs, training)
        finally:
            _exit_call(depth)

    def _nested_call(self, inputs):
        """A call on symbolic inputs: the model joins the caller's graph as one layer (as in Keras, so that the
        outer model lists it, and saves its weights, as one), its output shape found by tracing its layers."""
        shape = [t.shape for t in inputs] if isinstance(inputs, (list, tuple)) else inputs.shape
        if not self._traced and not isinstance(inputs, (list, tuple)):
            self.build(shape)
        traced = [KerasTensor(s) for s in shape] if isinstance(shape, list) else KerasTensor(shape)
        out = self._invoke(traced, False)
        if not isinstance(out, KerasTensor):
            raise TypeError(f"model {self.name!r}: call() on symbolic inputs must return one symbolic tensor")
        multi = isinstance(inputs, (list, tuple))
        node = Node(self, list(inputs) if multi else [inputs], multi)
        node.output = KerasTensor(out.shape, node)
        self._output_shapes.append(out.shape)
        return node.output

    def build(self, input_shape):
        """Create every weight and record output shapes by tracing call() on a symbolic input."""
        if self._graph is not None:
            return
        shape = tuple(input_shape)
        self._input_spec = (None,) + shape[1:]
        self._invoke(KerasTensor(self._input_spec), False)
        self.built = self._traced = True

    def compute_output_shape(self, input_shape):
        out = self(KerasTensor(tuple(input_shape)))
        return out.shape

    @property
    def layers(self) -> list:
        return list(self._layers)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    @property
    def input_shape(self):
        return self._input_spec

    @property
    def output_shape(self):
        if self._graph is not None:
            return self._graph[1][0].shape
        if not self._traced:
            if self._input_spec is None:
                raise ValueError(f"model {self.name!r} has not been built yet")
            self.build(self._input_spec)
        return self.compute_output_shape(self._input_spec)

    def summary(self, line_length=None, print_fn=None, expand_nested=False, show_trainable=False):
        """Print the layers (name, type, output shape, parameters; for a branching graph what each is connected
        to) in a box-drawn table and the parameter totals with their size, as Keras 3 does. ``print_fn``
        receives the whole text as one string; ``expand_nested`` lists the layers of nested models."""
        if not self._traced:
            if self._input_spec is None:
                raise ValueError(f"model {self.name!r} has not been built yet, so it has no summary: give the first "
                                 "layer input_shape=..., start with Input(shape=...), call model.build("
                                 "(None, H, W, C)) or fit the model first")
            self.build(self._input_spec)
        print_summary(self, line_length=line_length, print_fn=print_fn, expand_nested=expand_nested,
                      show_trainable=show_trainable)

    # config ----------------------------------------------------------------------------------------------
    def get_config(self):
        """The functional graph; for a subclassed model without its own get_config, the constructor
        arguments it was given (recorded when they are all plain values, as Keras 3 does)."""
        if self._graph is None:
            auto = getattr(self, "_auto_config", None)
            if auto is None:
                raise NotImplementedError(
                    f"{type(self).__name__} is a subclassed model built with constructor arguments that are not "
                    "plain values (str, int, float, bool, None, lists and dicts of them), and it has no "
                    "get_config, so its architecture cannot be saved: use model.save_weights(path) and "
                    "load_weights(path) on a new instance, or define get_config()")
            params = inspect.signature(type(self).__init__).parameters
            takes_name = "name" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
            return {"name": self.name, **auto} if takes_name else dict(auto)
        ins, outs, order = self._graph
        index = {id(l): i for i, l in enumerate(self._layers)}
        nodes = {id(n): i for i, n in enumerate(order)}
        return {
            "name": self.name,
            "layers": [_serial.serialize(l) for l in self._layers],
            "nodes": [{"layer": index[id(n.layer)], "inputs": [nodes[id(t.node)] for t in n.inputs],
                       "multi": n.multi} for n in order],
            "inputs": [nodes[id(t.node)] for t in ins],
            "outputs": [nodes[id(t.node)] for t in outs],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "nodes" not in config:
            return cls(**config)
        return _graph_from_config(config, [_serial.deserialize(d, custom_objects, "layer") for d in config["layers"]])


def _topology(outs):
    """The nodes that produce ``outs``, in execution order (depth first from the outputs, as Keras's graph
    walk), and their layers in Keras's order: by decreasing depth from the outputs, ties in the order the walk
    first met them. Iterative, so that graphs hundreds of layers deep need no deep recursion."""
    order, done, found = [], set(), {}
    for out in outs:
        if id(out.node) in done:
            continue
        found.setdefault(id(out.node.layer), (len(found), out.node.layer))
        stack = [[out.node, 0]]
        while stack:
            frame = stack[-1]
            node, i = frame
            if i == len(node.inputs):
                stack.pop()
                done.add(id(node))
                order.append(node)
                continue
            frame[1] += 1
            child = node.inputs[i].node
            if id(child) not in done:
                found.setdefault(id(child.layer), (len(found), child.layer))
                stack.append([child, 0])
    _, layer_depth = node_depths(order)
    ranked = sorted(found.values(), key=lambda f: (-layer_depth[id(f[1])], f[0]))
    return order, [layer for _, layer in ranked]


def _graph_from_config(config, layers):
    """A functional Model wired as ``config`` says, from its layers (in config order)."""
    tensors = []
    for n in config["nodes"]:
        layer = layers[n["layer"]]
        if isinstance(layer, InputLayer):
            tensors.append(layer.output)
        else:
            args = [tensors[i] for i in n["inputs"]]
            tensors.append(layer(args if n["multi"] else args[0]))
    ins = [tensors[i] for i in config["inputs"]]
    outs = [tensors[i] for i in config["outputs"]]
    return Model(ins if len(ins) > 1 else ins[0], outs[0], name=config["name"])


_serial.register_serializable(Model, name="Functional")
_serial.register_serializable(Model)
__all__ = ["Model", "Node"]
