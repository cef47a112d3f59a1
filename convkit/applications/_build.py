"""Pieces every model function of DenseNet, NASNet and EfficientNet builds the same way as Keras: the checked
input, the classifier or pooling on top, and the finished model with its weights."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.models import Model


def model_input(weights, include_top, classes, input_tensor, input_shape, default_size, min_size=32, static=False):
    """``(img_input, model_inputs)`` after Keras's checks of ``weights``, ``classes`` and ``input_shape``;
    ``static``: with 'imagenet' weights a given ``input_shape`` may not hold None (NASNet's rule)."""
    imagenet_utils.check_weights_argument(weights, include_top, classes)
    if static and weights == "imagenet" and isinstance(input_shape, tuple) and None in input_shape:
        raise ValueError("When specifying the input shape of a NASNet and loading `ImageNet` weights, the "
                         f"input_shape argument must be static (no None entries). Got: `input_shape={input_shape}`.")
    input_shape = imagenet_utils.obtain_input_shape(input_shape, default_size=default_size, min_size=min_size,
                                                    data_format="channels_last", require_flatten=include_top,
                                                    weights=weights)
    return imagenet_utils.image_input(input_tensor, input_shape)


def top(x, include_top, pooling, classes, classifier_activation, weights, named=True, dropout=0.0,
        kernel_initializer="glorot_uniform"):
    """Keras's end of a network: global average pooling, optional dropout ('top_dropout') and the Dense
    'predictions' classifier with ``include_top``; else the features pooled as ``pooling`` says. ``named``:
    the pooling layers are called 'avg_pool' / 'max_pool' (else they take their default names)."""
    name = (lambda n: n) if named else (lambda n: None)
    if include_top:
        x = layers.GlobalAveragePooling2D(name=name("avg_pool"))(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        imagenet_utils.validate_activation(classifier_activation, weights)
        return layers.Dense(classes, activation=classifier_activation, kernel_initializer=kernel_initializer,
                            name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=name("avg_pool"))(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=name("max_pool"))(x)
    return x


def finish(inputs, outputs, name, weights, file_name, file_hash, origin):
    """The functional model, with ``weights`` loaded (the official ``file_name`` for 'imagenet')."""
    model = Model(inputs, outputs, name=name)
    imagenet_utils.load_weights(model, weights, file_name, file_hash, origin)
    return model
