"""InceptionV3 (Szegedy et al., 2015), as ``keras.applications.inception_v3``: a stem of convolutions, then
inception modules whose parallel branches (1x1, factorised 3x3/5x5/7x7 convolutions, pooling) are
concatenated."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("tf", "InceptionV3")

_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
_HASHES = ("9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63")


def conv2d_bn(x, filters, num_row, num_col, padding="same", strides=(1, 1), name=None):
    """Convolution without bias, batch normalization without scale, ReLU."""
    x = layers.Conv2D(filters, (num_row, num_col), strides=strides, padding=padding, use_bias=False,
                      name=None if name is None else f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=3, scale=False, name=None if name is None else f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def _chain(x, specs):
    """Convolutions one after another, each spec ``(filters, rows, cols)``."""
    for filters, rows, cols in specs:
        x = conv2d_bn(x, filters, rows, cols)
    return x


def _pool_branch(x, filters):
    x = layers.AveragePooling2D((3, 3), strides=(1, 1), padding="same")(x)
    return conv2d_bn(x, filters, 1, 1)


def _module_a(x, pool_filters, name):
    """35x35: 1x1, 5x5, double 3x3 and pooling branches."""
    branches = [conv2d_bn(x, 64, 1, 1), _chain(x, [(48, 1, 1), (64, 5, 5)]),
                _chain(x, [(64, 1, 1), (96, 3, 3), (96, 3, 3)]), _pool_branch(x, pool_filters)]
    return layers.concatenate(branches, axis=3, name=name)


def _module_b(x, width, name):
    """17x17: 1x1, 7x7 and double 7x7 (factorised into 1x7 and 7x1) and pooling branches."""
    branches = [conv2d_bn(x, 192, 1, 1), _chain(x, [(width, 1, 1), (width, 1, 7), (192, 7, 1)]),
                _chain(x, [(width, 1, 1), (width, 7, 1), (width, 1, 7), (width, 7, 1), (192, 1, 7)]),
                _pool_branch(x, 192)]
    return layers.concatenate(branches, axis=3, name=name)


def _split(x, name=None):
    """A 1x3 and a 3x1 convolution side by side, concatenated."""
    return layers.concatenate([conv2d_bn(x, 384, 1, 3), conv2d_bn(x, 384, 3, 1)], axis=3, name=name)


def _module_c(x, index):
    """8x8: 1x1, split 3x3, 3x3 then split 3x3, and pooling branches."""
    branches = [conv2d_bn(x, 320, 1, 1), _split(conv2d_bn(x, 384, 1, 1), name=f"mixed9_{index}"),
                _split(_chain(x, [(448, 1, 1), (384, 3, 3)])), _pool_branch(x, 192)]
    return layers.concatenate(branches, axis=3, name=f"mixed{9 + index}")


def _reduction(x, branches, name):
    """Halving the grid: strided convolution branches beside a 3x3 max pooling."""
    pool = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    return layers.concatenate(branches + [pool], axis=3, name=name)


def _features(x):
    x = conv2d_bn(x, 32, 3, 3, strides=(2, 2), padding="valid")
    x = conv2d_bn(x, 32, 3, 3, padding="valid")
    x = conv2d_bn(x, 64, 3, 3)
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    x = conv2d_bn(x, 80, 1, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, 3, padding="valid")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    for i, pool_filters in enumerate((32, 64, 64)):
        x = _module_a(x, pool_filters, f"mixed{i}")
    x = _reduction(x, [conv2d_bn(x, 384, 3, 3, strides=(2, 2), padding="valid"),
                       conv2d_bn(_chain(x, [(64, 1, 1), (96, 3, 3)]), 96, 3, 3, strides=(2, 2), padding="valid")],
                   "mixed3")
    for i, width in enumerate((128, 160, 160, 192)):
        x = _module_b(x, width, f"mixed{4 + i}")
    x = _reduction(x, [conv2d_bn(conv2d_bn(x, 192, 1, 1), 320, 3, 3, strides=(2, 2), padding="valid"),
                       conv2d_bn(_chain(x, [(192, 1, 1), (192, 1, 7), (192, 7, 1)]), 192, 3, 3, strides=(2, 2),
                                 padding="valid")], "mixed8")
    for i in range(2):
        x = _module_c(x, i)
    return x


def InceptionV3(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="inception_v3"):
    """InceptionV3 (23,851,784 parameters with the top), for 299x299 RGB images preprocessed by
    ``preprocess_input`` (tf mode). ``weights``: None, 'imagenet' or a file; ``include_top=False`` drops the
    classifier (then ``pooling`` None, 'avg' or 'max', and any input of at least 75x75)."""
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=299,
                                                      min_size=75, wording="inception_v3")
    x = _features(img_input)

    classifier = gap_classifier(classes, classifier_activation, "avg_pool")

    def weight_file(top):
        file_name = f"inception_v3_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        return file_name, _HASHES[0 if top else 1], _WEIGHTS + file_name

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top, classifier=classifier,
                                       pooling=pooling, classifier_activation=classifier_activation,
                                       weights=weights, weight_file=weight_file)


__all__ = ["InceptionV3", "preprocess_input", "decode_predictions"]
