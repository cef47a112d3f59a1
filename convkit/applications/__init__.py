"""Keras's ImageNet models (``keras.applications``): the same functions, arguments, layer names, layer and weight
order, so that Keras's weights (its official files, or ``get_weights()`` of a Keras model) load one to one.

Each model has a module with its model functions, ``preprocess_input`` and ``decode_predictions``, e.g.
``convkit.applications.mobilenet``; the model functions are also here, e.g. ``convkit.applications.MobileNet``.
"""

from convkit.applications import imagenet_utils

__all__ = ["imagenet_utils"]
