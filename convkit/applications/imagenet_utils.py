"""What every ImageNet model of ``convkit.applications`` shares, as Keras's ``imagenet_utils``: input shape
rules, preprocessing, decoding predictions into class names, and finding the official weight files."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from convkit import activations, backend, layers
from convkit._files import get_file
from convkit.datasets._common import DataUnavailableError, file_digest
from convkit.layers.base import InputLayer, KerasTensor
from convkit.models import Model

CLASS_INDEX_PATH = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_FILE = "imagenet_class_index.json"
CLASS_INDEX_HASH = "c2c37ea517e94d9795004a39431a14cb"
_class_index = None  # {"0": ["n01440764", "tench"], ...}, read once

# per mode: the channel means subtracted and the deviations divided by (caffe's are BGR, on 0-255 pixels)
_NORMALIZATION = {"caffe": ((103.939, 116.779, 123.68), None),
                  "torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def _check_data_format(data_format):
    if data_format is None:
        return backend.image_data_format()
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError("Expected data_format to be one of `channels_first` or `channels_last`. "
                         f"Received: data_format={data_format}")
    return data_format


def preprocess_input(x, data_format=None, mode="caffe"):
    """Scale a batch of RGB images (or one image) with values in [0, 255] the way an ImageNet model was trained.

    ``mode`` 'caffe': RGB to BGR, then each channel less its ImageNet mean, unscaled; 'tf': to [-1, 1];
    'torch': to [0, 1], then each channel less its ImageNet mean, over its deviation. As in Keras, a float
    array is changed in place (pass a copy to keep it) and anything else becomes float32. Returns the array.
    """
    if mode not in ("caffe", "tf", "torch"):
        raise ValueError(f"Expected mode to be one of `caffe`, `tf` or `torch`. Received: mode={mode}")
    data_format = _check_data_format(data_format)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(backend.floatx())
    if mode == "tf":
        x /= 127.5
        x -= 1.0
        return x
    axis = -1 if data_format == "channels_last" else x.ndim - 3
    if mode == "torch":
        x /= 255.0
    else:
        x = np.flip(x, axis=axis)
    mean, std = _NORMALIZATION[mode]
    shape = [1] * x.ndim
    shape[axis] = 3
    x -= np.asarray(mean, x.dtype).reshape(shape)
    if std is not None:
        x /= np.asarray(std, x.dtype).reshape(shape)
    return x


def preprocessor(mode, model):
    """A model module's ``preprocess_input(x, data_format=None)``: ``preprocess_input`` in ``mode``."""
    def preprocess(x, data_format=None):
        return preprocess_input(x, data_format=data_format, mode=mode)

    preprocess.__name__ = preprocess.__qualname__ = "preprocess_input"
    preprocess.__doc__ = (f"Scale RGB images (values in [0, 255]) as {model} expects: ``preprocess_input`` in "
                          f"'{mode}' mode.")
    return preprocess


def decode_predictions(preds, top=5):
    """The ``top`` classes of each row of a (samples, 1000) batch of ImageNet predictions, best first: one
    list per sample of ``(class_id, class_name, score)`` tuples, e.g. ``('n02123045', 'tabby', 0.82)``. The
    class index is Keras's file, read from Keras's cache or downloaded once."""
    global _class_index
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError("`decode_predictions` expects a batch of predictions (i.e. a 2D array of shape "
                         f"(samples, 1000)). Received array with shape: {preds.shape}")
    if _class_index is None:
        with open(official_file(CLASS_INDEX_FILE, CLASS_INDEX_HASH, CLASS_INDEX_PATH)) as f:
            _class_index = json.load(f)
    results = []
    for pred in preds:
        best = np.argsort(pred, kind="stable")[::-1][:top]
        results.append([tuple(_class_index[str(i)]) + (pred[i],) for i in best])
    return results


def obtain_input_shape(input_shape, default_size, min_size, data_format, require_flatten, weights=None):
    """A model's input shape (H, W, C), checked with Keras's rules: None gives the default
    (``default_size`` square, or any size without a top), a given shape needs 3 dimensions, sides of at least
    ``min_size``, 3 channels with 'imagenet' weights, and exactly the default with a top and 'imagenet'."""
    first = data_format == "channels_first"
    if weights != "imagenet" and input_shape and len(input_shape) == 3:
        channels = input_shape[0] if first else input_shape[-1]
        if channels not in (1, 3):
            warnings.warn("This model usually expects 1 or 3 input channels. However, it was passed an "
                          f"input_shape with {channels} input channels.", stacklevel=2)
        default_shape = (channels, default_size, default_size) if first else (default_size, default_size, channels)
    else:
        default_shape = (3, default_size, default_size) if first else (default_size, default_size, 3)
    if weights == "imagenet" and require_flatten:
        if input_shape is not None and tuple(input_shape) != default_shape:
            raise ValueError("When setting `include_top=True` and loading `imagenet` weights, `input_shape` "
                             f"should be {default_shape}.  Received: input_shape={input_shape}")
        return default_shape
    if input_shape:
        if len(input_shape) != 3:
            raise ValueError("`input_shape` must be a tuple of three integers.")
        channels, sides = (input_shape[0], input_shape[1:]) if first else (input_shape[-1], input_shape[:2])
        if channels != 3 and weights == "imagenet":
            raise ValueError(f"The input must have 3 channels; Received `input_shape={input_shape}`")
        if any(s is not None and s < min_size for s in sides):
            raise ValueError(f"Input size must be at least {min_size}x{min_size}; Received: "
                             f"input_shape={input_shape}")
    elif require_flatten:
        input_shape = default_shape
    else:
        input_shape = (3, None, None) if first else (None, None, 3)
    if require_flatten and None in input_shape:
        raise ValueError("If `include_top` is True, you should specify a static `input_shape`. "
                         f"Received: input_shape={input_shape}")
    return input_shape


def correct_pad(inputs, kernel_size):
    """The ((top, bottom), (left, right)) zero padding before a strided 'valid' convolution of ``kernel_size``
    that halves ``inputs`` (a symbolic NHWC tensor) as TensorFlow's 'same' would."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    rows, cols = inputs.shape[1:3]
    adjust = (1, 1) if rows is None else (1 - rows % 2, 1 - cols % 2)
    return ((kh // 2 - adjust[0], kh // 2), (kw // 2 - adjust[1], kw // 2))


def validate_activation(classifier_activation, weights):
    """Pretrained weights allow only None or 'softmax' as the classifier's activation."""
    if weights is None:
        return
    activation = activations.get(classifier_activation)
    if activation.name not in ("softmax", "linear"):
        raise ValueError("Only `None` and `softmax` activations are allowed for the `classifier_activation` "
                         "argument when using pretrained weights, with `include_top=True`; Received: "
                         f"classifier_activation={classifier_activation}")


# Keras words its ``weights`` and ``classes`` checks differently from one model to another: per wording, how
# 'imagenet' is quoted, how the ``weights`` message ends, and the ``classes`` message
_ARGUMENT_WORDINGS = {
    "vgg": ("'imagenet'", ".  Received: weights={weights}",
            "If using `weights='imagenet'` with `include_top=True`, `classes` should be 1000.  "
            "Received classes={classes}"),
    "mobilenet": ("'imagenet'", ". Received weights={weights}",
                  "If using `weights='imagenet'` with `include_top=True`, `classes` should be 1000.  "
                  "Received classes={classes}"),
    "mobilenet_v2": ("`imagenet`", ".  Received `weights={weights}`",
                     'If using `weights="imagenet"` with `include_top` as true, `classes` should be 1000. '
                     "Received `classes={classes}`"),
    "inception_v3": ("`imagenet`", "; Received: weights={weights}",
                     'If using `weights="imagenet"` with `include_top=True`, `classes` should be 1000. '
                     "Received classes={classes}"),
    "densenet": ("`imagenet`", ".", 'If using `weights` as `"imagenet"` with `include_top` as true, `classes` should '
                 "be 1000"),
    "efficientnet": ("`imagenet`", ".", 'If using `weights="imagenet"` with `include_top` as true, `classes` should be '
                     "1000"),
}


def check_weights_argument(weights, include_top, classes, wording="vgg"):
    """Keras's checks of a model function's ``weights`` (None, 'imagenet' or an existing file) and ``classes``
    (1000 with the ImageNet classifier), their messages worded as Keras's model ``wording`` (a key of
    ``_ARGUMENT_WORDINGS``) words them."""
    imagenet, received, classes_message = _ARGUMENT_WORDINGS[wording]
    if not (weights in ("imagenet", None) or (isinstance(weights, (str, os.PathLike)) and os.path.exists(weights))):
        raise ValueError(f"The `weights` argument should be either `None` (random initialization), {imagenet} "
                         "(pre-training on ImageNet), or the path to the weights file to be loaded"
                         + received.format(weights=weights))
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(classes_message.format(classes=classes))


def image_input(input_tensor, input_shape):
    """``(img_input, model_inputs)``: a new ``Input(input_shape)`` twice, or ``input_tensor`` (a symbolic
    tensor) and the Input tensors it comes from, which the model built on it takes."""
    if input_tensor is None:
        img = layers.Input(shape=input_shape)
        return img, img
    if not isinstance(input_tensor, KerasTensor):
        raise ValueError("Argument `input_tensor` must be a symbolic tensor (the output of `Input()` or of a "
                         f"layer called on one). Received: input_tensor={input_tensor!r}")
    sources, seen, stack = [], set(), [input_tensor]
    while stack:
        t = stack.pop()
        if id(t.node) in seen:
            continue
        seen.add(id(t.node))
        if isinstance(t.node.layer, InputLayer):
            sources.append(t)
        stack.extend(reversed(t.node.inputs))
    return input_tensor, sources[0] if len(sources) == 1 else sources


def pool_features(x, pooling, avg_name=None, max_name=None):
    """The feature map reduced as ``pooling`` says: None keeps it, 'avg' or 'max' pool it globally."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=avg_name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=max_name)(x)
    return x


def model_input(input_tensor, input_shape, *, include_top, weights, classes, default_size, min_size,
                wording="vgg"):
    """The steps every model function starts with: the ``weights`` and ``classes`` checks, the input shape
    (``obtain_input_shape``) and the input tensor. Returns ``(input_shape, img_input, model_inputs)``."""
    check_weights_argument(weights, include_top, classes, wording)
    input_shape = obtain_input_shape(input_shape, default_size=default_size, min_size=min_size,
                                     data_format=backend.image_data_format(), require_flatten=include_top,
                                     weights=weights)
    return (input_shape,) + image_input(input_tensor, input_shape)


def finish_model(inputs, features, name, *, include_top, classifier, pooling, classifier_activation, weights,
                 weight_file, pool_names=(None, None)):
    """The steps every model function ends with: the classifier (``classifier(features)``) or the pooling
    asked for, the functional Model, and its weights. ``weight_file(include_top)`` gives the official file's
    ``(file_name, file_hash, origin)``, asked for only with 'imagenet' weights."""
    if include_top:
        validate_activation(classifier_activation, weights)
        x = classifier(features)
    else:
        x = pool_features(features, pooling, *pool_names)
    model = Model(inputs, x, name=name)
    official = weight_file(include_top) if weights == "imagenet" else (None, None, None)
    load_weights(model, weights, *official)
    return model


def keras_cache_dir() -> Path:
    """Keras's cache folder: ``$KERAS_HOME``, else ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"))


def official_file(file_name, file_hash, origin) -> str:
    """The local path of an official Keras file: Keras's own cached copy (``<keras cache>/models``) when its
    digest matches (any copy when Keras gives the file no digest), else convkit's cached or freshly downloaded one (``convkit.utils.get_file``, checked
    against ``file_hash``). Without either, a DataUnavailableError says where to put the file."""
    folder = keras_cache_dir() / "models"
    cached = folder / file_name
    if cached.is_file() and (file_hash is None or
                             file_digest(cached, "md5" if len(file_hash) == 32 else "sha256") == file_hash):
        return str(cached)
    try:
        return get_file(file_name, origin, cache_subdir="models", file_hash=file_hash)
    except DataUnavailableError:
        raise DataUnavailableError(f"{file_name} is not cached and could not be downloaded from {origin}: download "
                                   f"it yourself and put it in {folder}") from None


def load_weights(model, weights, file_name, file_hash, origin):
    """Load ``weights`` into a freshly built model: None loads nothing, 'imagenet' the official file
    ``file_name`` (see ``official_file``), anything else is a path for ``model.load_weights``."""
    if weights is None:
        return
    model.load_weights(official_file(file_name, file_hash, origin) if weights == "imagenet" else weights)


__all__ = ["preprocess_input", "decode_predictions", "obtain_input_shape", "correct_pad", "validate_activation",
           "check_weights_argument", "image_input", "pool_features", "model_input", "finish_model", "load_weights",
           "official_file", "preprocessor"]
