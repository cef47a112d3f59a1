"""Keras's model configs (the JSON in a '.keras' zip's config.json and a Keras 2 '.h5' file's model_config)
translated to convkit objects and back.

Both generations are read: Keras 3's ``{"module", "class_name", "config", "registered_name"}`` dicts (with
dtype policies) and functional ``inbound_nodes`` of ``{"args": [keras tensors], "kwargs"}``, and Keras 2's
``{"class_name", "config"}`` dicts, ``batch_input_shape`` and ``inbound_nodes`` of ``[[layer, node, tensor,
kwargs], ...]``. A Keras argument that convkit's class lacks is accepted only at the value that changes
nothing (``groups=1``, ``renorm=False``, None, ...); anything else raises ValueError naming the layer.
"""

from __future__ import annotations

import inspect

from convkit import _serial
from convkit._keras_h5 import keras_class_name

_ANY = object()
# Keras arguments convkit's classes lack, at the values that make Keras compute what convkit does.
_NEUTRAL = {"groups": 1, "data_format": "channels_last", "renorm_momentum": _ANY, "ema_momentum": _ANY,
            "autocast": True, "steps_per_execution": 1, "keras_version": _ANY, "is_legacy_optimizer": False,
            "decay": 0.0, "jit_compile": _ANY, "run_eagerly": _ANY, "interpolation": "bilinear",
            "crop_to_aspect_ratio": False, "pad_to_aspect_ratio": False, "fill_mode": "constant",
            "fill_value": 0.0, "value_range": [0, 255], "antialias": False, "axis": -1}
_KINDS = {"initializer": "keras.initializers", "regularizer": "keras.regularizers",
          "constraint": "keras.constraints", "optimizer": "keras.optimizers", "loss": "keras.losses",
          "schedule": "keras.optimizers.schedules", "layer": "keras.layers"}


def _params(cls) -> set:
    """Every keyword the class's constructor chain accepts."""
    out = set()
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        ps = inspect.signature(init).parameters.values()
        out |= {p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in ps):
            break
    return out - {"self"}


def _check_dtype(value, who):
    name = value.get("config", {}).get("name") if isinstance(value, dict) else value
    if name not in (None, "float32"):
        raise ValueError(f"{who}: dtype {name!r}; convkit computes in float32 only")


# -- Keras -> convkit ----------------------------------------------------------------------------------------

def _is_object(value) -> bool:
    return isinstance(value, dict) and "class_name" in value and "config" in value


def _class(d, custom_objects, kind):
    return _serial.lookup(d.get("registered_name") or d["class_name"], custom_objects, kind)


def kwargs_from_keras(cls, config: dict, who: str, custom_objects=None) -> dict:
    """Constructor arguments for convkit's ``cls`` from a Keras config."""
    params, out = _params(cls), {}
    for key, value in config.items():
        if key == "dtype":
            _check_dtype(value, who)
        elif key in ("batch_shape", "batch_input_shape") and value is not None:
            out["shape" if "shape" in params else "input_shape"] = tuple(value[1:])
        elif key in params:
            out[key] = object_from_keras(value, custom_objects, key) if _is_object(value) else value
        elif not (value is None or value is False or _NEUTRAL.get(key, object()) in (value, _ANY)):
            raise ValueError(f"{who}: convkit's {cls.__name__} has no {key}={value!r}")
    return out


def _kind_of(key: str) -> str:
    for kind in ("initializer", "regularizer", "constraint"):
        if key.endswith(kind):
            return kind
    return {"learning_rate": "schedule", "optimizer": "optimizer", "loss": "loss"}.get(key, "object")


def object_from_keras(d, custom_objects=None, key="object"):
    """A convkit initializer, regularizer, constraint, schedule, optimizer or loss from its Keras dict."""
    kind = _kind_of(key)
    cls = _class(d, custom_objects, kind)
    return cls(**kwargs_from_keras(cls, d.get("config") or {}, f"{kind} {d['class_name']}", custom_objects))


def layer_from_keras(d, custom_objects=None, kind="layer"):
    """A convkit layer (or model) from a Keras layer dict."""
    name = d.get("class_name")
    if name == "Sequential" or (name in ("Functional", "Model") and "layers" in (d.get("config") or {})):
        return model_from_keras(d, custom_objects)
    cls = _class(d, custom_objects, kind)
    config = dict(d.get("config") or {})
    who = f"layer {config.get('name', '?')!r} ({name})"
    if name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]
    if not cls.__module__.startswith("convkit."):  # the user's class rebuilds itself from its own config
        _check_dtype(config.pop("dtype", None), who)
        return cls.from_config(config)
    return cls(**kwargs_from_keras(cls, config, who, custom_objects))


def model_from_keras(d, custom_objects=None):
    """A convkit Sequential or functional Model from Keras's model dict (either generation)."""
    from convkit.layers.base import InputLayer
    from convkit.models import Sequential

    name, config = d.get("class_name"), d.get("config") or {}
    if name == "Sequential" and isinstance(config, list):  # Keras 2.0-2.1 listed a Sequential's layers alone
        config = {"layers": config}
    if name == "Sequential":
        model = Sequential(name=config.get("name"))
        for ld in config["layers"]:
            model.add(layer_from_keras(ld, custom_objects))
        shape = config.get("build_input_shape") or (d.get("build_config") or {}).get("input_shape")
        if not model._traced and shape:
            model.build(tuple(shape))
        return model
    if name in ("Functional", "Model") and "layers" in config:
        return _functional(config, custom_objects)
    model = layer_from_keras(d, custom_objects, "model")
    shape = (d.get("build_config") or {}).get("input_shape")
    if not model._traced and shape and not isinstance(model, InputLayer):
        model.build(tuple(shape))
    return model


def _history(t):
    """(layer name, node index, tensor index) of a serialized tensor, in either generation's form."""
    if isinstance(t, dict):
        return tuple(t["config"]["keras_history"])
    return tuple(t[:3])


def _node_inputs(node):
    """([(layer, node, tensor)], multi) of one inbound node, Keras 3's {"args": ...} or Keras 2's list."""
    if isinstance(node, dict):
        args = node.get("args") or []
        first = args[0] if args else []
        if isinstance(first, list):
            return [_history(t) for t in first], True
        return [_history(first)], False
    return [_history(t) for t in node], len(node) > 1


def _endpoints(spec):
    """input_layers / output_layers: one [name, node, tensor] or a list of them."""
    return [tuple(spec)] if spec and isinstance(spec[0], str) else [tuple(s) for s in spec]


def _functional(config, custom_objects):
    from convkit.layers.base import InputLayer
    from convkit.models import Model

    layers, pending, tensors = {}, [], {}
    for ld in config["layers"]:
        layer = layer_from_keras(ld, custom_objects)
        lname = ld.get("name") or ld["config"]["name"]
        layers[lname] = layer
        if isinstance(layer, InputLayer):
            tensors[(lname, 0, 0)] = layer.output
        else:
            pending.append([lname, layer, list(ld.get("inbound_nodes") or []), 0])
    while pending:  # call each layer once its inputs exist (a shared layer's calls may wait on each other)
        progress = False
        for entry in pending:
            lname, layer, nodes, done = entry
            while nodes:
                keys, multi = _node_inputs(nodes[0])
                if not all(k in tensors for k in keys):
                    break
                if any(k[2] != 0 for k in keys):
                    raise ValueError(f"layer {lname!r}: takes a layer's second output; convkit's layers have one")
                args = [tensors[k] for k in keys]
                tensors[(lname, done, 0)] = layer(args if multi else args[0])
                nodes.pop(0)
                done = entry[3] = done + 1
                progress = True
        pending = [e for e in pending if e[2]]
        if pending and not progress:
            raise ValueError(f"the model's graph cannot be rebuilt: layers {[e[0] for e in pending]} wait on "
                             "inputs that no layer makes")
    ins = [tensors[k] for k in _endpoints(config["input_layers"])]
    outs = [tensors[k] for k in _endpoints(config["output_layers"])]
    if len(outs) != 1:
        raise ValueError(f"the model has {len(outs)} outputs; convkit's models have one")
    return Model(ins if len(ins) > 1 else ins[0], outs[0], name=config.get("name"))


def compile_from_keras(cc: dict, custom_objects=None) -> dict:
    """compile() arguments from Keras's compile config (Keras 3's compile_config or Keras 2's training_config);
    ValueError for what convkit cannot honour."""
    for key in ("loss_weights", "weighted_metrics"):
        if cc.get(key):
            raise ValueError(f"{key}={cc[key]!r}")
    opt = cc.get("optimizer") or cc.get("optimizer_config")
    if isinstance(opt, dict):
        opt = object_from_keras(opt, custom_objects, "optimizer")
    loss = cc.get("loss")
    if isinstance(loss, dict):
        loss = object_from_keras(loss, custom_objects, "loss")
    metrics = cc.get("metrics") or []
    if any(not isinstance(m, str) for m in metrics):
        raise ValueError(f"metrics {metrics!r}: only metric names are read")
    return {"optimizer": opt, "loss": loss, "metrics": metrics}


# -- convkit -> Keras ----------------------------------------------------------------------------------------

# convkit's layers that Keras has, under the same class name and arguments.
KERAS_LAYERS = {
    "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "Flatten", "Dropout", "SpatialDropout2D",
    "Activation", "ReLU", "LeakyReLU", "Rescaling", "BatchNormalization", "Normalization", "MaxPooling2D",
    "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "Reshape",
    "Permute", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Resizing",
    "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "Sequential", "Functional"}
_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _custom(obj) -> bool:
    """A class of the user's (registered for saving), not one of convkit's."""
    return not type(obj).__module__.startswith("convkit.")


def object_to_keras(obj, kind: str) -> dict:
    """Keras 3's dict for a convkit initializer, regularizer, constraint, schedule, optimizer or loss."""
    custom = _custom(obj)
    return {"module": type(obj).__module__ if custom else _KINDS.get(kind, "keras"),
            "class_name": type(obj).__name__, "config": _values_to_keras(obj.get_config()),
            "registered_name": _serial.class_name(obj) if custom else None}


def _values_to_keras(config: dict) -> dict:
    out = {}
    for key, value in config.items():
        if _is_object(value):
            cls = _serial.lookup(value["class_name"], None, _kind_of(key))
            value = object_to_keras(cls.from_config(value["config"]), _kind_of(key))
        out[key] = value
    return out


def layer_to_keras(layer, node_entries=None, input_shape=None) -> dict:
    """Keras 3's dict for a convkit layer (a model's, nested, included); ValueError for what Keras lacks."""
    from convkit.layers.base import InputLayer
    from convkit.models import Model, Sequential

    name = keras_class_name(layer)
    custom = _custom(layer)
    if not custom and name not in KERAS_LAYERS:
        raise ValueError(f"layer {layer.name!r}: convkit's {type(layer).__name__} has no Keras counterpart, so no "
                         "Keras file can hold it; save the model as '.convkit'")
    if isinstance(layer, Sequential) or (type(layer) is Model and layer._graph is not None):
        d = model_to_keras(layer)
    elif isinstance(layer, InputLayer):
        d = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, *layer.shape], "dtype": "float32", "sparse": False, "ragged": False,
                        "name": layer.name}}
    else:
        config = _values_to_keras(layer.get_config())
        if name == "BatchNormalization":
            config["synchronized"] = bool(getattr(layer, "synchronized", False))
        d = {"module": type(layer).__module__ if custom else "keras.layers", "class_name": name,
             "config": {**config, "dtype": _POLICY}, "registered_name": _serial.class_name(layer) if custom else None}
        if input_shape is not None:
            d["build_config"] = {"input_shape": _shape_list(input_shape)}
    if node_entries is not None:
        d = {**d, "name": layer.name, "inbound_nodes": node_entries}
    return d


def _shape_list(shape):
    """A shape, or a list of shapes (a merge layer's inputs), as JSON lists."""
    return [list(s) for s in shape] if shape and isinstance(shape[0], (list, tuple)) else list(shape)


def _tensor(t, producer_index) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": "float32",
                       "keras_history": [t.node.layer.name, producer_index[id(t.node)], 0]}}


def model_to_keras(model) -> dict:
    """Keras 3's dict for a Sequential or functional convkit model."""
    from convkit.layers.base import InputLayer
    from convkit.models import Sequential

    shape = None if model._input_spec is None or isinstance(model._input_spec, list) else list(model._input_spec)
    if isinstance(model, Sequential):
        layers, prev = [], shape
        for l in model.layers:  # each layer's input shape is the one before's output shape
            layers.append(layer_to_keras(l, input_shape=prev))
            prev = l._output_shapes[0] if prev is not None and l._output_shapes else None
        if shape is not None:
            layers.insert(0, layer_to_keras(InputLayer(shape=tuple(shape[1:]), name=f"{model.name}_input")))
        config = {"name": model.name, "trainable": model.trainable, "dtype": _POLICY, "layers": layers,
                  "build_input_shape": shape}
        return {"module": "keras", "class_name": "Sequential", "config": config, "registered_name": None,
                "build_config": {"input_shape": shape}}
    ins, outs, order = model._graph
    index, per_layer = {}, {}
    for node in order:  # a node's index among its layer's calls in this model
        index[id(node)] = len(per_layer.setdefault(id(node.layer), []))
        per_layer[id(node.layer)].append(node)
    layers = []
    for layer in model.layers:
        entries = [] if isinstance(layer, InputLayer) else [
            {"args": [[_tensor(t, index) for t in n.inputs] if n.multi else _tensor(n.inputs[0], index)],
             "kwargs": {}} for n in per_layer[id(layer)]]
        first = per_layer.get(id(layer), [None])[0]
        in_shape = None if first is None or not first.inputs else \
            [t.shape for t in first.inputs] if first.multi else first.inputs[0].shape
        layers.append(layer_to_keras(layer, entries, in_shape))
    config = {"name": model.name, "trainable": model.trainable, "layers": layers,
              "input_layers": [[t.node.layer.name, 0, 0] for t in ins],
              "output_layers": [[t.node.layer.name, index[id(t.node)], 0] for t in outs]}
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": config, "registered_name": "Functional",
            "build_config": {"input_shape": shape}}


def compile_to_keras(model) -> dict | None:
    """Keras 3's compile_config for a compiled convkit model, None if it is not compiled."""
    cc = model._compile_config
    if cc is None or model.optimizer is None:
        return None
    loss = cc["loss"]
    if isinstance(loss, dict):
        loss = object_to_keras(model.loss, "loss")
    return {"optimizer": object_to_keras(model.optimizer, "optimizer"), "loss": loss, "loss_weights": None,
            "metrics": list(cc.get("metrics") or []), "weighted_metrics": None, "run_eagerly": False,
            "steps_per_execution": 1, "jit_compile": False}
