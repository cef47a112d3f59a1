"""MobileNetV2 (Sandler et al., 2018), as ``keras.applications.mobilenet_v2``: inverted residual blocks (a 1x1
expansion, a 3x3 depthwise convolution and a linear 1x1 projection, added to the input where shapes allow)."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications._mobile import mobile_input
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("tf", "MobileNetV2")

_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
# (filters, stride, expansion) of the 17 inverted residual blocks
_BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
           (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
           (320, 1, 6))


def make_divisible(v, divisor=8, min_value=None):
    """``v`` rounded to a multiple of ``divisor`` (at least ``min_value``), never more than 10% below ``v``."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _bn(x, name):
    return layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)(x)


def inverted_res_block(inputs, expansion, stride, alpha, filters, block_id):
    """Expand (block 0 does not), depthwise 3x3 (``stride``), project linearly to ``filters * alpha``
    (rounded to 8); the input is added back when the shapes match."""
    in_channels = inputs.shape[-1]
    project_filters = make_divisible(int(filters * alpha), 8)
    x = inputs
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, kernel_size=1, padding="same", use_bias=False, activation=None,
                          name=f"{prefix}expand")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(_bn(x, f"{prefix}expand_BN"))
    if stride == 2:
        x = layers.ZeroPadding2D(padding=imagenet_utils.correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(kernel_size=3, strides=stride, activation=None, use_bias=False,
                               padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(_bn(x, f"{prefix}depthwise_BN"))
    x = layers.Conv2D(project_filters, kernel_size=1, padding="same", use_bias=False, activation=None,
                      name=f"{prefix}project")(x)
    x = _bn(x, f"{prefix}project_BN")
    if in_channels == project_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                classes=1000, classifier_activation="softmax", name=None):
    """MobileNetV2 (3,538,984 parameters with the top at ``alpha=1``), for RGB images preprocessed by
    ``preprocess_input`` (tf mode), 224x224 by default. ``alpha`` scales the filters (weights exist for 0.35,
    0.5, 0.75, 1.0, 1.3, 1.4); 'imagenet' weights exist for square inputs of 96, 128, 160, 192 or 224. Other
    arguments as ``VGG16``'s; the name defaults to ``mobilenetv2_<alpha>_<rows>``."""
    if input_shape is not None and input_tensor is not None and getattr(input_tensor, "shape", None) is not None \
            and input_tensor.shape[2] != input_shape[1]:
        raise ValueError("input_tensor.shape[2] must equal input_shape[1]; Received "
                         f"`input_tensor.shape={input_tensor.shape}`, `input_shape={input_shape}`")
    if weights == "imagenet" and alpha not in (0.35, 0.50, 0.75, 1.0, 1.3, 1.4):
        raise ValueError("If imagenet weights are being loaded, alpha must be one of `0.35`, `0.50`, `0.75`, "
                         f"`1.0`, `1.3` or `1.4` only; Received `alpha={alpha}`")
    rows, img_input, inputs = mobile_input(input_tensor, input_shape, include_top=include_top, weights=weights,
                                           classes=classes, sizes=(96, 128, 160, 192, 224), size_from_tensor=True,
                                           wording="mobilenet_v2")
    x = layers.Conv2D(make_divisible(32 * alpha, 8), kernel_size=3, strides=(2, 2), padding="same", use_bias=False,
                      name="Conv1")(img_input)
    x = layers.ReLU(6.0, name="Conv1_relu")(_bn(x, "bn_Conv1"))
    for block_id, (filters, stride, expansion) in enumerate(_BLOCKS):
        x = inverted_res_block(x, expansion=expansion, stride=stride, alpha=alpha, filters=filters, block_id=block_id)
    x = layers.Conv2D(make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280, kernel_size=1, use_bias=False,
                      name="Conv_1")(x)
    x = layers.ReLU(6.0, name="out_relu")(_bn(x, "Conv_1_bn"))

    classifier = gap_classifier(classes, classifier_activation)

    def weight_file(top):
        file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{'' if top else '_no_top'}.h5"
        return file_name, None, _WEIGHTS + file_name

    return imagenet_utils.finish_model(inputs, x, name or f"mobilenetv2_{alpha:0.2f}_{rows}",
                                       include_top=include_top, classifier=classifier, pooling=pooling,
                                       classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file)


__all__ = ["MobileNetV2", "preprocess_input", "decode_predictions"]
