"""Saving and loading models, in the format the file name's suffix says (see save_model, save_weights);
loading tells the format from the file's bytes.

Keras's formats ('.keras', '.h5', '.weights.h5') are read and written by convkit._keras_h5 and
convkit._keras_config. convkit's own ('.convkit', and '.ckpt' for training state) is one zip file
holding JSON and .npy entries, never pickles:

    convkit.json          format name and version, architecture config, compile config,
                          optimizer config, weight names and shapes, optional extra metadata
    weights/0000.npy ...  the model's weights, in ``model.weights`` order
    optimizer/0000.npy .. the optimizer's step count and slots (for save_model only)

Files are written to a temporary file in the same folder, fsynced, then moved over the
target with os.replace, so a crash while saving leaves any previous file intact. Loading
reads arrays with ``allow_pickle=False`` and nothing executable; a truncated, corrupted or
foreign file, or an unknown layer class, raises ValueError saying which.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
import zipfile
import zlib

import numpy as np

from convkit import _keras_config, _keras_h5, _serial
from convkit._atomic import atomic_open
from convkit._serial import register_keras_serializable, register_serializable

FORMAT = "convkit-model"
FORMAT_VERSION = 1
_META = "convkit.json"
KERAS_WEIGHTS = "model.weights.h5"  # the weights inside a Keras 3 '.keras' zip

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "restore_training_state",
           "register_serializable", "register_keras_serializable", "FORMAT_VERSION"]


def _atomic_write(filepath, meta: dict, arrays: dict, overwrite: bool):
    path = os.fspath(filepath)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    with atomic_open(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_META, json.dumps(meta, indent=1))
            for name, a in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.asarray(a, order="C"), allow_pickle=False)
                zf.writestr(name, buf.getvalue())


# What zipfile raises on damaged entries: a flipped method field gives NotImplementedError,
# a flipped flag bit "encrypted" gives RuntimeError, a damaged deflate stream zlib.error.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error)


class _Reader:
    """An opened convkit file; every failure becomes a ValueError naming the file and the problem."""

    def __init__(self, filepath):
        self.path = os.fspath(filepath)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no such file: {self.path}")
        try:
            self.zf = zipfile.ZipFile(self.path)
        except _ZIP_ERRORS as e:  # a damaged directory entry may name a zip version Python does not read
            raise ValueError(f"{self.path}: not a convkit model file, or it is truncated or corrupted ({e})") from None
        try:
            self.meta = json.loads(self.zf.read(_META))
        except KeyError:
            raise ValueError(f"{self.path}: not a convkit model file (no {_META} inside)") from None
        except (*_ZIP_ERRORS, ValueError) as e:
            raise ValueError(f"{self.path}: the file is corrupted ({e})") from None
        found = self.meta.get("format") if isinstance(self.meta, dict) else type(self.meta).__name__
        if found != FORMAT:
            raise ValueError(f"{self.path}: not a convkit model file (format {found!r})")
        v = self.meta.get("format_version")
        if not isinstance(v, int) or v > FORMAT_VERSION:
            raise ValueError(f"{self.path}: format version {v!r} is newer than this convkit reads ({FORMAT_VERSION}); "
                             "upgrade convkit")

    def array(self, name):
        try:
            raw = self.zf.read(name)
        except KeyError:
            raise ValueError(f"{self.path}: entry {name!r} is missing; the file is truncated or corrupted") from None
        except _ZIP_ERRORS as e:
            raise ValueError(f"{self.path}: entry {name!r} is corrupted ({e})") from None
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{self.path}: entry {name!r} is not a plain array ({e})") from None

    def arrays(self, prefix, count):
        return [self.array(f"{prefix}/{i:04d}.npy") for i in range(count)]

    def close(self):
        self.zf.close()


def _weights_meta(model):
    return [{"name": v.name, "shape": list(v.shape)} for v in model.weights]


def _save_convkit_model(model, filepath, overwrite=True, extra=None):
    """Write the whole model in convkit's format: architecture, weights, compile settings and optimizer state.

    ``extra`` is JSON-serialisable metadata stored alongside (the CLI keeps its epoch counter
    and RNG state there). A subclassed model saves the constructor arguments it was given when they
    are plain values (or what its get_config returns); loading finds its class by registration
    (``register_serializable``) or in ``custom_objects``. Otherwise use save_weights.
    """
    config = model.get_config()  # raises, with advice, for subclassed models it cannot describe
    ws = model.weights
    arrays = {f"weights/{i:04d}.npy": v.numpy() for i, v in enumerate(ws)}
    opt_meta, n_opt = None, 0
    if model.optimizer is not None:
        opt_meta = _serial.serialize(model.optimizer)
        state = model.optimizer.get_state(model.trainable_weights)
        n_opt = len(state)
        arrays.update({f"optimizer/{i:04d}.npy": a for i, a in enumerate(state)})
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "model",
        "class_name": _serial.class_name(model) if type(model).__name__ != "Model" else "Functional",
        "config": config, "build_input_shape": _shape_json(getattr(model, "_input_spec", None)),
        "compile_config": model._compile_config, "optimizer": opt_meta, "optimizer_arrays": n_opt,
        "weights": _weights_meta(model), "extra": extra,
    }
    _atomic_write(filepath, meta, arrays, overwrite)


def _shape_json(shape):
    return None if shape is None else [None if d is None else int(d) for d in shape]


def _load_convkit_model(filepath, custom_objects=None, compile=True, return_extra=False):
    r = _Reader(filepath)
    try:
        return _rebuild(r, custom_objects, compile, return_extra)
    except (KeyError, TypeError, IndexError, AttributeError, MemoryError) as e:
        # The zip and its JSON are intact, but what the JSON says does not fit together (or asks
        # for layers too large to allocate).
        raise ValueError(f"{r.path}: the model description is malformed ({type(e).__name__}: {e})") from None
    finally:
        r.close()


def _rebuild(r, custom_objects, compile, return_extra):
    """load_model's work on an opened file."""
    meta = r.meta
    if meta.get("kind") != "model":
        raise ValueError(f"{r.path}: holds only weights (written by save_weights); build the model in code and "
                         "call model.load_weights(path)")
    cls = _serial.lookup(meta.get("class_name", "?"), custom_objects, "model")
    try:
        model = cls.from_config(meta["config"], custom_objects=custom_objects) \
            if hasattr(cls, "_run_graph") else cls.from_config(meta["config"])
    except ValueError as e:
        raise ValueError(f"{r.path}: cannot rebuild the model: {e}") from None
    if not model._traced and meta.get("build_input_shape"):
        model.build(tuple(meta["build_input_shape"]))
    trainable = _assign(model, r, meta)
    cc = meta.get("compile_config")
    if compile and cc and meta.get("optimizer"):
        loss = cc["loss"] if isinstance(cc["loss"], str) else _serial.deserialize(cc["loss"], custom_objects,
                                                                                  "loss")
        model.compile(optimizer=_serial.deserialize(meta["optimizer"], custom_objects, "optimizer"), loss=loss,
                      metrics=cc.get("metrics"))
        model.optimizer.set_state(trainable, r.arrays("optimizer", meta["optimizer_arrays"]))
    return (model, meta.get("extra")) if return_extra else model


def restore_training_state(model, filepath) -> dict:
    """Put a save_model file's weights and optimizer (its settings and state) into ``model``, which has the
    saved architecture and is compiled; returns the file's extra metadata (see save_model)."""
    r = _Reader(filepath)
    try:
        if not model.weights and r.meta.get("build_input_shape"):
            model.build(tuple(r.meta["build_input_shape"]))
        trainable = _assign(model, r, r.meta)
        if r.meta.get("optimizer"):
            optimizer = _serial.deserialize(r.meta["optimizer"], kind="optimizer")
            optimizer.set_state(trainable, r.arrays("optimizer", r.meta["optimizer_arrays"]))
            if model._device is not None:
                optimizer.to(model._device)
            model.optimizer = optimizer
        return r.meta.get("extra") or {}
    finally:
        r.close()


def _assign(model, r, meta):
    """Assign the file's weights; returns the model's trainable weights in the file's order (for the optimizer's
    state). Files list weights in ``model.weights`` order; when their names are the model's, reordered, they are
    matched by name (files written before functional models listed their layers in Keras's order)."""
    ws = model.weights
    saved = meta.get("weights") or []
    if len(saved) != len(ws):
        raise ValueError(f"{r.path}: holds {len(saved)} weights but model {model.name!r} has {len(ws)}")
    names = [s.get("name") if isinstance(s, dict) else None for s in saved]
    by_name = {v.name: v for v in ws}
    if names != [v.name for v in ws] and len(by_name) == len(ws) and sorted(map(str, names)) == sorted(by_name):
        ws = [by_name[n] for n in names]
    arrays = r.arrays("weights", len(saved))
    for v, s, a in zip(ws, saved, arrays):
        if tuple(a.shape) != v.shape or list(a.shape) != list(s["shape"]):
            raise ValueError(f"{r.path}: weight {s['name']!r} has shape {tuple(a.shape)} but the model's "
                             f"{v.name!r} has shape {v.shape}")
        if a.dtype != np.float32:
            raise ValueError(f"{r.path}: weight {s['name']!r} has dtype {a.dtype}, expected float32")
    for v, a in zip(ws, arrays):
        v.assign(a)
    trainable = {id(v) for v in model.trainable_weights}
    return [v for v in ws if id(v) in trainable]


def _save_convkit_weights(model, filepath, overwrite=True):
    """Write only the weights in convkit's format, in ``model.weights`` order (any model, subclassed ones included)."""
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no weights yet: build it or run it on data first")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "weights",
            "weights": _weights_meta(model), "build_input_shape": _shape_json(getattr(model, "_input_spec", None))}
    _atomic_write(filepath, meta, {f"weights/{i:04d}.npy": v.numpy() for i, v in enumerate(model.weights)},
                  overwrite)


def _load_convkit_weights(model, r):
    if not model.weights and r.meta.get("build_input_shape"):
        model.build(tuple(r.meta["build_input_shape"]))
    _assign(model, r, r.meta)


def _file_kind(path) -> str:
    """'hdf5' (a Keras weights or Keras 2 model file), 'keras' (Keras 3's zip) or 'convkit', from the contents."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if _keras_h5.is_hdf5(path):
        return "hdf5"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except _ZIP_ERRORS:
        return "convkit"  # its reader says what is wrong
    return "keras" if _META not in names and KERAS_WEIGHTS in names else "convkit"


def _suffix(path, allowed: dict, what: str):
    """The format ``allowed`` maps the file name's suffix to, or a ValueError listing the suffixes."""
    name = os.path.basename(os.fspath(path)).lower()
    for suffix, fmt in allowed.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{what}: cannot tell the format from the name {os.fspath(path)!r}; end it with "
                     + ", ".join(f"{k!r} ({v})" for k, v in allowed.items() if v))


_WEIGHT_SUFFIXES = {".weights.h5": "Keras 3 weights", ".convkit": "convkit's format"}


def check_file_name(filepath, weights_only=False, who="save"):
    """ValueError unless the name's suffix says a format that save (or save_weights) writes."""
    if weights_only:
        _suffix(filepath, _WEIGHT_SUFFIXES, who)
    elif _suffix(filepath, _MODEL_SUFFIXES, who) is None:
        advice = "pass save_weights_only=True" if who == "ModelCheckpoint" else "use save_weights"
        raise ValueError(f"{who}: {os.fspath(filepath)!r} names a weights file; {advice}, or end the name with "
                         "'.keras', '.h5' or '.convkit' to save the whole model")


def save_weights(model, filepath, overwrite=True):
    """Write the model's weights: '.weights.h5' in Keras 3's format (Keras loads it with load_weights),
    '.convkit' in convkit's own. Other names raise ValueError, as in Keras."""
    path = os.fspath(filepath)
    fmt = _suffix(path, _WEIGHT_SUFFIXES, "save_weights")
    if fmt == "convkit's format":
        return _save_convkit_weights(model, path, overwrite)
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no weights yet: build it or run it on data first")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    data = _keras_h5.keras3_weights_bytes(model)
    with atomic_open(path) as f:
        f.write(data)


def load_weights(model, filepath, skip_mismatch=False, by_name=False):
    """Load weights into ``model``, the file's format found from its contents (not its name): convkit's
    files (save_weights or save), Keras 3's '.weights.h5' and '.keras', and Keras 2's HDF5 files (the Keras
    applications' weights, tf.keras save_weights/save). Keras files need the model built. ``by_name``
    (Keras 2 files only) pairs layers by name instead of by order; ``skip_mismatch`` (Keras files) warns
    about and skips layers whose weights do not fit instead of raising."""
    path = os.fspath(filepath)
    kind = _file_kind(path)
    if kind == "convkit":
        if by_name or skip_mismatch:
            raise ValueError(f"{path}: by_name and skip_mismatch apply to Keras files; this is a convkit file")
        r = _Reader(path)
        try:
            return _load_convkit_weights(model, r)
        finally:
            r.close()
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no weights yet: build it (or run it on data) before loading "
                         f"the Keras file {path}")
    if kind == "hdf5":
        return _keras_h5.load_weights(model, path, by_name, skip_mismatch)
    if by_name:
        raise ValueError(f"{path}: by_name applies only to Keras 2 HDF5 files, not to a .keras file")
    return _keras_h5.load_weights(model, path, False, skip_mismatch, source=_zip_entry(path, KERAS_WEIGHTS))


def _zip_entry(path, name) -> bytes:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(name)
    except KeyError:
        raise ValueError(f"{path}: has no {name!r} inside; not a Keras model file") from None
    except _ZIP_ERRORS as e:
        raise ValueError(f"{path}: entry {name!r} is corrupted ({e})") from None


_MODEL_SUFFIXES = {".weights.h5": None, ".keras": "Keras 3", ".h5": "Keras 2 HDF5", ".hdf5": "Keras 2 HDF5",
                   ".convkit": "convkit's format", ".ckpt": "convkit's format, for training state"}


def save_model(model, filepath, overwrite=True, extra=None):
    """Write the whole model (architecture, weights, compile settings), in the format its name says:

    - '.keras': Keras 3's zip (config.json, metadata.json, model.weights.h5), loadable by Keras;
    - '.h5' / '.hdf5': Keras 2's HDF5 model (model_config, model_weights), loadable by Keras;
    - '.convkit' (or '.ckpt', the trainer's training-state files): convkit's own zip, which also keeps the
      optimizer's state and ``extra``, JSON-serialisable metadata (the CLI keeps its epoch counter and RNG
      state there).

    Other names raise ValueError, as in Keras. The Keras formats hold the layers Keras has (a layer only
    convkit has raises ValueError: use '.convkit'); a subclassed model saves the constructor arguments
    it was given when they are plain values (or what its get_config returns), and loading finds its class
    by registration (``register_serializable``) or in ``custom_objects``. Otherwise use save_weights.
    """
    path = os.fspath(filepath)
    check_file_name(path)
    fmt = _suffix(path, _MODEL_SUFFIXES, "save")
    if fmt.startswith("convkit"):
        return _save_convkit_model(model, path, overwrite, extra)
    if extra is not None:
        raise ValueError(f"save: extra metadata is kept only in convkit's format ('.convkit'), not in {path!r}")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    data = _keras_zip_bytes(model) if fmt == "Keras 3" else _keras2_h5_bytes(model)
    with atomic_open(path) as f:
        f.write(data)


def _keras_model_dict(model) -> dict:
    config = _keras_config.model_to_keras(model) if model._graph is not None or \
        isinstance(model, _sequential()) else _keras_config.layer_to_keras(model, input_shape=model._input_spec)
    compile_config = _keras_config.compile_to_keras(model)
    return {**config, "compile_config": compile_config} if compile_config else config


def _sequential():
    from convkit.models import Sequential

    return Sequential


def _keras_zip_bytes(model) -> bytes:
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no weights yet: build it or run it on data first")
    config = json.dumps(_keras_model_dict(model))
    metadata = json.dumps({"keras_version": _keras_h5.KERAS_FORMAT_VERSION, "convkit_version": _version(),
                           "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S")})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", metadata)
        zf.writestr("config.json", config)
        zf.writestr(KERAS_WEIGHTS, _keras_h5.keras3_weights_bytes(model))
    return buf.getvalue()


def _keras2_h5_bytes(model) -> bytes:
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no weights yet: build it or run it on data first")
    d = _keras_model_dict(model)
    compile_config = d.pop("compile_config", None)
    training = None
    if compile_config:  # Keras reads a loss alias ('mse') in a '.h5' file as a metric and fails: give the class
        training = {**compile_config, "optimizer_config": compile_config.pop("optimizer"),
                    "loss": _keras_config.object_to_keras(model.loss, "loss")}
    return _keras_h5.keras2_model_bytes(model, json.dumps(d), None if training is None else json.dumps(training))


def _version() -> str:
    import convkit

    return convkit.__version__


def load_model(filepath, custom_objects=None, compile=True, return_extra=False):
    """Rebuild a saved model, the format found from the file's contents: convkit's (weights, compile settings,
    optimizer state and extra metadata), Keras 3's '.keras' zip or Keras 2's '.h5' model (architecture,
    weights, and the compile settings when convkit can honour them, else the model is returned uncompiled
    with a warning). With ``return_extra`` returns (model, extra metadata; None for Keras files)."""
    path = os.fspath(filepath)
    kind = _file_kind(path)
    if kind == "convkit":
        return _load_convkit_model(path, custom_objects, compile, return_extra)
    model = _load_keras_model(path, kind, custom_objects, compile)
    return (model, None) if return_extra else model


def _load_keras_model(path, kind, custom_objects, compile):
    if kind == "keras":
        raw = _zip_entry(path, "config.json")
        try:
            config = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{path}: config.json is damaged ({e})") from None
        model = _model_from_keras(path, config, custom_objects)
        _keras_h5.load_weights(model, path, source=_zip_entry(path, KERAS_WEIGHTS))
        compile_config = config.get("compile_config") if isinstance(config, dict) else None
    else:
        with _keras_h5.open_h5(path, path) as f:
            if "model_config" not in f.attrs:
                raise ValueError(f"{path}: holds only weights (no model_config); build the model in code and call "
                                 "model.load_weights(path)")
            try:
                config = json.loads(_keras_h5._text(f.attrs["model_config"]))
                training = f.attrs.get("training_config")
                compile_config = json.loads(_keras_h5._text(training)) if training is not None else None
            except ValueError as e:
                raise ValueError(f"{path}: model_config is damaged ({e})") from None
            model = _model_from_keras(path, config, custom_objects)
            _keras_h5.load_legacy_weights(model, f, path)
    if compile and compile_config:
        try:
            model.compile(**_keras_config.compile_from_keras(compile_config, custom_objects))
        except (ValueError, TypeError, KeyError) as e:
            warnings.warn(f"{path}: its compile settings cannot be honoured by convkit ({e}); the model is returned "
                          "uncompiled: call compile() yourself", stacklevel=3)
            return model
        if kind == "keras":
            with _keras_h5.open_h5(_zip_entry(path, KERAS_WEIGHTS), path) as f:
                _keras_h5.read_keras3_optimizer(model, f, path)
        else:
            with _keras_h5.open_h5(path, path) as f:
                _keras_h5.read_keras2_optimizer(model, f, path)
    return model


def _model_from_keras(path, config, custom_objects):
    try:
        model = _keras_config.model_from_keras(config, custom_objects)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: the model description is malformed ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: cannot rebuild the model: {e}") from None
    if not model.built:
        raise ValueError(f"{path}: the model {model.name!r} has no input shape in the file (build_config), so its "
                         "weights cannot be made; rebuild it in code, build it and call load_weights(path)")
    return model
