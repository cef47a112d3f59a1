"""The VGG architecture shared by VGG16 and VGG19: five blocks of 3x3 convolutions, each ending in 2x2 max
pooling, and three dense layers."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils

_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_FILTERS = (64, 128, 256, 512, 512)


def _block(x, index, filters, convs):
    for i in range(1, convs + 1):
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"block{index}_conv{i}")(x)
    return layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{index}_pool")(x)


def _classifier(classes, classifier_activation):
    def top(x):
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)

    return top


def vgg(family, convs_per_block, hashes, *, include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name):
    """A VGG model ('vgg16' or 'vgg19', the ``family`` of its weight files) whose blocks have
    ``convs_per_block`` convolutions; ``hashes`` are the official files' digests (with top, without)."""
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=224,
                                                      min_size=32)
    x = img_input
    for index, (filters, convs) in enumerate(zip(_FILTERS, convs_per_block), start=1):
        x = _block(x, index, filters, convs)

    def weight_file(top):
        file_name = f"{family}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        return file_name, hashes[0 if top else 1], f"{_WEIGHTS}{family}/{file_name}"

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top,
                                       classifier=_classifier(classes, classifier_activation), pooling=pooling,
                                       classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file)
