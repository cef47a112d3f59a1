"""What MobileNet and MobileNetV2 share: the input size their weight files exist for, and the checks on it."""

from __future__ import annotations

import warnings

from convkit.applications import imagenet_utils


def mobile_input(input_tensor, input_shape, *, include_top, weights, classes, sizes, size_from_tensor, wording):
    """``model_input`` (its messages in the model's ``wording``) with the default size taken from a square
    ``input_shape`` (or, with ``size_from_tensor``, input tensor) of one of ``sizes``, as Keras's MobileNets do.
    Returns ``(rows, img_input, model_inputs)``, ``rows`` being the size of the 'imagenet' weights to load (224,
    with a warning, when the input is none of ``sizes``)."""
    given = input_shape
    if given is None and size_from_tensor and input_tensor is not None:
        given = tuple(input_tensor.shape[1:])
    default_size = given[0] if given is not None and given[0] == given[1] and given[0] in sizes else 224
    shape, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                          weights=weights, classes=classes,
                                                          default_size=default_size, min_size=32, wording=wording)
    rows, cols = shape[:2]
    if weights == "imagenet" and (rows != cols or rows not in sizes):
        rows = 224
        warnings.warn(f"`input_shape` is undefined or non-square, or `rows` is not in {list(sizes)}. Weights for "
                      "input shape (224, 224) will be loaded as the default.", stacklevel=3)
    return rows, img_input, inputs
