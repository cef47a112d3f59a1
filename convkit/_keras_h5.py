"""Keras's HDF5 weight files, read and written with h5py (an optional dependency).

Keras 3 (``.weights.h5``, and ``model.weights.h5`` inside a ``.keras`` zip) stores each object's own
variables under an object path: ``layers/<class>/vars/0, 1, ...``, where ``<class>`` is the layer's
class name in snake case, numbered ``_1, _2, ...`` among the layers of the same class in
``model.layers`` order (not the layer's name); nested models nest (``layers/sequential/layers/dense``),
a subclassed model's layers sit under their attribute names, and each layer lists its trainable
variables before its non-trainable ones (BatchNormalization: gamma, beta, moving_mean, moving_variance).

Keras 2 (``.h5``: the Keras applications' weights, tf.keras ``save_weights``/``save``) keeps one group
per layer name: the root attribute ``layer_names`` and each group's ``weight_names`` attribute, the
datasets at those names. Loading pairs the file's layers having weights with the model's, in order
(``model.layers`` is in Keras's topological order), or by layer name with ``by_name=True``.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def h5py():
    """The h5py module, or an ImportError saying how to get it."""
    try:
        import h5py as module
    except ImportError:
        raise ImportError("reading or writing Keras's HDF5 files (.h5, .weights.h5, .keras) needs h5py: "
                          "pip install h5py (or pip install 'convkit[h5]')") from None
    return module


def is_hdf5(path) -> bool:
    """Whether the file starts with HDF5's signature (at 0, or after a user block of 512, 1024, ... bytes)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == HDF5_MAGIC:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


# -- the names Keras gives objects ----------------------------------------------------------------------------

def snake(name: str) -> str:
    """Keras's to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_class_name(layer) -> str:
    """The class Keras has for ``layer``: its own class name, except convkit's functional Model (Keras's
    Functional) and SyncBatchNormalization (Keras's BatchNormalization(synchronized=True))."""
    from convkit.layers.normalization import SyncBatchNormalization
    from convkit.models import Model

    cls = type(layer)
    if cls is Model:
        return "Functional" if getattr(layer, "_graph", None) is not None else "Model"
    if cls is SyncBatchNormalization:
        return "BatchNormalization"
    return cls.__name__


def own_variables(layer) -> list:
    """A layer's own variables as Keras saves them: trainable ones, then the others, each in creation order."""
    return [v for v in layer._weights if v.trainable] + [v for v in layer._weights if not v.trainable]


def legacy_weights(layer) -> list:
    """A layer's weights as Keras 2 files list them: trainable, then non-trainable (nested layers included)."""
    return layer.trainable_weights + layer.non_trainable_weights


def _children(obj):
    """(attribute, value) pairs Keras 3 walks below ``obj``: a Sequential's or functional model's layers
    first, then attributes holding layers or containers, sorted by name (private ones last)."""
    from convkit.layers.base import Layer
    from convkit.models import Model, Sequential

    attrs = {k: v for k, v in vars(obj).items() if k not in ("_layers", "_graph", "_last")}
    if isinstance(obj, Sequential) or getattr(obj, "_graph", None) is not None:
        yield "layers", obj.layers
    elif isinstance(obj, Model):  # a subclassed model's ``layers`` property is walked among its attributes
        attrs["layers"] = obj.layers
    for attr in sorted(attrs, key=lambda a: "~" + a if a.startswith("_") else a):
        value = attrs[attr]
        if isinstance(value, Layer) or (isinstance(value, (list, tuple, dict)) and _holds_layer(value)):
            yield attr, value


def _holds_layer(container) -> bool:
    from convkit.layers.base import Layer

    items = container.values() if isinstance(container, dict) else container
    return any(isinstance(v, Layer) or (isinstance(v, (list, tuple, dict)) and _holds_layer(v)) for v in items)


def object_paths(model) -> list:
    """[(path, layer)] for the model and every layer below it, each once, in Keras 3's walk order."""
    from convkit.layers.base import Layer

    out, seen = [], set()

    def walk(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        out.append((path, obj))
        for attr, child in _children(obj):
            sub = f"{path}/{attr}" if path else attr
            walk(child, sub) if isinstance(child, Layer) else container(child, sub)

    def container(items, path):
        used: dict = {}
        for item in (items.values() if isinstance(items, dict) else items):
            if isinstance(item, Layer):
                walk(item, f"{path}/{_unique(snake(keras_class_name(item)), used)}")
            elif isinstance(item, (list, tuple, dict)):
                container(item, f"{path}/{_unique('container', used)}")

    walk(model, "")
    return out


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


# -- reading --------------------------------------------------------------------------------------------------

def _text(v) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def attr_list(group, name) -> list:
    """A string-list attribute, joined from its chunks ``name0, name1, ...`` when Keras split a long one."""
    if name in group.attrs:
        return [_text(v) for v in np.atleast_1d(group.attrs[name])]
    out, i = [], 0
    while f"{name}{i}" in group.attrs:
        out += [_text(v) for v in np.atleast_1d(group.attrs[f"{name}{i}"])]
        i += 1
    return out


def _assign(path, where, variables, arrays, skip_mismatch):
    """Check every shape, then assign (all or none); on a mismatch raise, or warn and skip with ``skip_mismatch``."""
    if len(arrays) != len(variables):
        problem = (f"{path}: {where} expects {len(variables)} weight(s) "
                   f"{[v.name for v in variables]}, the file has {len(arrays)}")
    else:
        problem = next((f"{path}: {where}: weight {v.name!r} has shape {v.shape} in the model, {tuple(a.shape)} in "
                        "the file" for v, a in zip(variables, arrays) if tuple(a.shape) != v.shape), None)
    if problem:
        if not skip_mismatch:
            raise ValueError(problem)
        warnings.warn(f"skipping {problem}", stacklevel=4)
        return
    for v, a in zip(variables, arrays):
        v.assign(np.asarray(a, np.float32))


def _read(path, dataset):
    try:
        return np.asarray(dataset[()])
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot read dataset {dataset.name!r} ({e})") from None


def load_keras3_weights(model, root, path, skip_mismatch=False):
    """Assign a Keras 3 weights file's variables (``root``, an open h5py group) to ``model``."""
    h5 = h5py()
    layers_root = root.get("layers")
    if layers_root is None and "vars" not in root:
        raise ValueError(f"{path}: not a Keras weights file (neither 'layers' nor 'vars' at its top)")
    for inner, layer in object_paths(model):
        variables = own_variables(layer)
        group = root.get(f"{inner}/vars" if inner else "vars")
        if not variables and not (isinstance(group, h5.Group) and "0" in group):
            continue  # nothing to load, nothing saved
        where = f"layer {layer.name!r} ({inner or 'the model itself'})"
        if not isinstance(group, h5.Group):
            if skip_mismatch:
                warnings.warn(f"skipping {path}: has no weights for {where}", stacklevel=3)
                continue
            raise ValueError(f"{path}: has no weights for {where}, which expects "
                             f"{[(v.name, v.shape) for v in variables]}; the file holds "
                             f"{sorted(layers_root) if layers_root is not None else []} at its top level")
        arrays, i = [], 0
        while str(i) in group:
            arrays.append(_read(path, group[str(i)]))
            i += 1
        _assign(path, where, variables, arrays, skip_mismatch)


def load_legacy_weights(model, root, path, by_name=False, skip_mismatch=False):
    """Assign a Keras 2 weights file's layers (root attribute ``layer_names``) to ``model``: in order among the
    layers having weights, or by layer name."""
    if "layer_names" not in root.attrs and "layer_names0" not in root.attrs and "model_weights" in root:
        root = root["model_weights"]
    names = attr_list(root, "layer_names")
    if not names and "layer_names" not in root.attrs:
        raise ValueError(f"{path}: not a Keras weights file (no 'layer_names' attribute)")
    saved = {}
    for name in names:
        if name not in root:
            raise ValueError(f"{path}: layer {name!r} is listed but has no group; the file is damaged")
        group = root[name]
        try:
            saved[name] = [_read(path, group[w]) for w in attr_list(group, "weight_names")]
        except KeyError as e:
            raise ValueError(f"{path}: layer {name!r} lists a weight that is missing ({e})") from None
    if by_name:
        for layer in model.layers:
            if layer.name in saved and legacy_weights(layer):
                _assign(path, f"layer {layer.name!r}", legacy_weights(layer), saved[layer.name], skip_mismatch)
        return
    with_weights = [n for n in names if saved[n]]
    layers = [l for l in model.layers if legacy_weights(l)]
    if len(with_weights) != len(layers):
        raise ValueError(f"{path}: holds weights for {len(with_weights)} layers {with_weights}, but model "
                         f"{model.name!r} has {len(layers)} layers with weights {[l.name for l in layers]}")
    for k, (name, layer) in enumerate(zip(with_weights, layers)):
        where = f"layer #{k} ({layer.name!r} in the model, {name!r} in the file)"
        if len(saved[name]) != len(legacy_weights(layer)):  # as Keras: skip_mismatch skips only shapes here
            _assign(path, where, legacy_weights(layer), saved[name], False)
        _assign(path, where, legacy_weights(layer), saved[name], skip_mismatch)


def open_h5(source, path):
    """An h5py File on a path or bytes; a file h5py cannot open is a ValueError naming ``path``."""
    h5 = h5py()
    try:
        return h5.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable HDF5 file; it is truncated or corrupted ({e})") from None


def load_weights(model, path, by_name=False, skip_mismatch=False, source=None):
    """Load a Keras HDF5 weights file of either generation (told apart by its contents) into ``model``."""
    with open_h5(source if source is not None else path, path) as f:
        try:
            legacy = "layer_names" in f.attrs or "layer_names0" in f.attrs or "model_weights" in f
            if by_name and not legacy:
                raise ValueError(f"{path}: by_name applies only to Keras 2 HDF5 files (layer-name groups); this is "
                                 "a Keras 3 weights file, whose layers are found by their place in the model")
            if legacy:
                load_legacy_weights(model, f, path, by_name, skip_mismatch)
            else:
                load_keras3_weights(model, f, path, skip_mismatch)
        except (OSError, KeyError, RuntimeError) as e:  # h5py's errors on damaged objects inside the file
            raise ValueError(f"{path}: the file is truncated or corrupted ({type(e).__name__}: {e})") from None


# -- writing --------------------------------------------------------------------------------------------------

def write_keras3_weights(model, f):
    """Write ``model``'s variables into the open h5py File ``f`` in Keras 3's layout."""
    for inner, layer in object_paths(model):
        group = f.create_group(f"{inner}/vars" if inner else "vars")
        group.attrs["name"] = layer.name
        for i, v in enumerate(own_variables(layer)):
            group.create_dataset(str(i), data=v.numpy())
    opt = getattr(model, "optimizer", None)
    arrays = optimizer_arrays(opt, model.trainable_weights)
    if arrays is not None:
        group = f.create_group("optimizer/vars")
        group.attrs["name"] = opt.name
        for i, a in enumerate(arrays):
            group.create_dataset(str(i), data=a)


# convkit's optimizers whose state Keras keeps in the same slots: [iteration, learning_rate] + slots, per variable
# (RMSprop: per kind of slot, each over all variables). Keras's Nadam keeps one more (its momentum product).
_KERAS_OPTIMIZERS = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax"}


def _keras_layout(opt) -> bool:
    return type(opt).__module__ == "convkit.optimizers" and type(opt).__name__ in _KERAS_OPTIMIZERS


def optimizer_arrays(opt, variables):
    """The optimizer's state in Keras's order, or None when Keras keeps it otherwise."""
    if opt is None or not _keras_layout(opt):
        return None
    state, n, m = opt.get_state(variables), len(opt.slot_names), len(variables)
    per_var = [state[1 + i * n: 1 + (i + 1) * n] for i in range(m)]
    slots = [per_var[i][k] for k in range(n) for i in range(m)] if type(opt).__name__ == "RMSprop" \
        else [a for s in per_var for a in s]
    return [np.asarray(state[0], np.int64), np.asarray(opt.learning_rate, np.float32)] + slots


def set_optimizer_arrays(opt, variables, arrays, path):
    """Give the optimizer the state Keras saved (``arrays`` in Keras's order); warn and leave it fresh when the
    state does not fit, as Keras does."""
    n, m = len(opt.slot_names), len(variables)
    if not _keras_layout(opt) or len(arrays) != 2 + n * m:
        warnings.warn(f"{path}: the optimizer's saved state ({len(arrays)} arrays) does not fit {type(opt).__name__} "
                      f"over {m} weights; it starts afresh", stacklevel=4)
        return
    slots = arrays[2:]
    if type(opt).__name__ == "RMSprop":
        per_var = [[slots[k * m + i] for k in range(n)] for i in range(m)]
    else:
        per_var = [slots[i * n:(i + 1) * n] for i in range(m)]
    try:
        opt.set_state(variables, [np.asarray(arrays[0])] + [np.asarray(a, np.float32) for s in per_var for a in s])
    except ValueError as e:
        warnings.warn(f"{path}: the optimizer's saved state does not fit ({e}); it starts afresh", stacklevel=4)


def read_keras3_optimizer(model, root, path):
    group = root.get("optimizer/vars")
    if model.optimizer is None or group is None:
        return
    arrays, i = [], 0
    while str(i) in group:
        arrays.append(_read(path, group[str(i)]))
        i += 1
    set_optimizer_arrays(model.optimizer, model.trainable_weights, arrays, path)


def read_keras2_optimizer(model, f, path):
    group = f.get("optimizer_weights")
    if model.optimizer is None or group is None:
        return
    set_optimizer_arrays(model.optimizer, model.trainable_weights,
                         [_read(path, group[w]) for w in attr_list(group, "weight_names")], path)


def keras3_weights_bytes(model) -> bytes:
    """A Keras 3 ``.weights.h5`` file's bytes."""
    h5 = h5py()
    buf = io.BytesIO()
    with h5.File(buf, "w") as f:
        write_keras3_weights(model, f)
    return buf.getvalue()


_ATTR_LIMIT = 64512  # HDF5's limit on an object header's attributes, which Keras splits longer lists to fit


def write_attr_list(group, name, values):
    """A string-list attribute, split into ``name0, name1, ...`` as Keras does when it is too long for one."""
    data = np.asarray([v.encode("utf8") for v in values])
    chunks = 1
    while data.nbytes / chunks > _ATTR_LIMIT:
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
        return
    for i, part in enumerate(np.array_split(data, chunks)):
        group.attrs[f"{name}{i}"] = part


def keras2_model_bytes(model, model_config: str, training_config: str | None) -> bytes:
    """A Keras 2 HDF5 model file's bytes (as Keras 3 writes '.h5'): the config attributes and model_weights,
    one group per layer name with its ``weight_names``."""
    h5 = h5py()
    buf = io.BytesIO()
    with h5.File(buf, "w") as f:
        f.attrs["keras_version"] = KERAS_FORMAT_VERSION
        f.attrs["model_config"] = model_config
        if training_config is not None:
            f.attrs["training_config"] = training_config
        root = f.create_group("model_weights")
        write_attr_list(root, "layer_names", [layer.name for layer in model.layers])
        root.attrs["keras_version"] = KERAS_FORMAT_VERSION
        for layer in sorted(model.layers, key=lambda l: l.name):
            group = root.create_group(layer.name)
            weights = legacy_weights(layer)
            write_attr_list(group, "weight_names", [v.name for v in weights])
            for v in weights:
                group.create_dataset(v.name, data=v.numpy())
        write_attr_list(root.create_group("top_level_model_weights"), "weight_names", [])
        opt = getattr(model, "optimizer", None)
        arrays = optimizer_arrays(opt, model.trainable_weights)
        if arrays is not None:
            group = f.create_group("optimizer_weights")
            names = [f"{opt.name}/{i:04d}" for i in range(len(arrays))]
            write_attr_list(group, "weight_names", names)
            for name, a in zip(names, arrays):
                group.create_dataset(name, data=a)
    return buf.getvalue()


KERAS_FORMAT_VERSION = "3.0.0"  # the Keras generation whose layout the files convkit writes follow
