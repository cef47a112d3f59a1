"""Keras's ImageNet models (``keras.applications``): the same functions, arguments, layer names, layer and weight
order, so that Keras's weights (its official files, or ``get_weights()`` of a Keras model) load one to one.

Each model has a module with its model functions, ``preprocess_input`` and ``decode_predictions``, e.g.
``convkit.applications.mobilenet``; the model functions are also here, e.g. ``convkit.applications.MobileNet``.
"""

from convkit.applications import imagenet_utils
from convkit.applications.densenet import DenseNet121, DenseNet169, DenseNet201
from convkit.applications.efficientnet import (EfficientNetB0, EfficientNetB1, EfficientNetB2, EfficientNetB3,
                                               EfficientNetB4, EfficientNetB5, EfficientNetB6, EfficientNetB7)
from convkit.applications.nasnet import NASNetLarge, NASNetMobile

__all__ = ["imagenet_utils", "DenseNet121", "DenseNet169", "DenseNet201", "EfficientNetB0", "EfficientNetB1",
           "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
           "NASNetMobile", "NASNetLarge"]
