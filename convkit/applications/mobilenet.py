"""MobileNet (Howard et al., 2017), as ``keras.applications.mobilenet``: depthwise separable convolutions
(a 3x3 depthwise then a 1x1 pointwise convolution, each with batch normalization and ReLU6), thinned by
``alpha``."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._mobile import mobile_input
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("tf", "MobileNet")

_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
# (pointwise filters, stride) of the 13 depthwise separable blocks
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
           (512, 1), (1024, 2), (1024, 1))


def _conv_block(x, filters, alpha):
    x = layers.Conv2D(int(filters * alpha), (3, 3), padding="same", use_bias=False, strides=(2, 2), name="conv1")(x)
    x = layers.BatchNormalization(axis=-1, name="conv1_bn")(x)
    return layers.ReLU(6.0, name="conv1_relu")(x)


def depthwise_conv_block(x, pointwise_filters, alpha, depth_multiplier=1, stride=1, block_id=1):
    """Depthwise 3x3 (strided blocks pad their bottom and right first) and pointwise 1x1 convolutions, each
    followed by batch normalization and ReLU6."""
    if stride != 1:
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same" if stride == 1 else "valid", depth_multiplier=depth_multiplier,
                               strides=(stride, stride), use_bias=False, name=f"conv_dw_{block_id}")(x)
    x = layers.BatchNormalization(axis=-1, name=f"conv_dw_{block_id}_bn")(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(int(pointwise_filters * alpha), (1, 1), padding="same", use_bias=False, strides=(1, 1),
                      name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(axis=-1, name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True, weights="imagenet",
              input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax", name=None):
    """MobileNet (4,253,864 parameters with the top at ``alpha=1``), for RGB images preprocessed by
    ``preprocess_input`` (tf mode), 224x224 by default. ``alpha`` scales every layer's filters (weights exist
    for 0.25, 0.5, 0.75, 1.0), ``depth_multiplier`` the depthwise outputs (1 for the weights), ``dropout``
    is the rate before the classifier; 'imagenet' weights exist for square inputs of 128, 160, 192 or 224.
    Other arguments as ``VGG16``'s; the name defaults to ``mobilenet_<alpha>_<rows>``."""
    if weights == "imagenet":
        if depth_multiplier != 1:
            raise ValueError("If imagenet weights are being loaded, depth multiplier must be 1.  "
                             f"Received depth_multiplier={depth_multiplier}")
        if alpha not in (0.25, 0.50, 0.75, 1.0):
            raise ValueError("If imagenet weights are being loaded, alpha can be one of`0.25`, `0.50`, `0.75` or "
                             f"`1.0` only.  Received alpha={alpha}")
    rows, img_input, inputs = mobile_input(input_tensor, input_shape, include_top=include_top, weights=weights,
                                           classes=classes, sizes=(128, 160, 192, 224), size_from_tensor=False,
                                           wording="mobilenet")
    x = _conv_block(img_input, 32, alpha)
    for block_id, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = depthwise_conv_block(x, filters, alpha, depth_multiplier, stride, block_id)

    def classifier(x):
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        return layers.Activation(classifier_activation, name="predictions")(x)

    def weight_file(top):
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
        file_name = f"mobilenet_{alpha_text}_{rows}_tf{'' if top else '_no_top'}.h5"
        return file_name, None, _WEIGHTS + file_name

    return imagenet_utils.finish_model(inputs, x, name or f"mobilenet_{alpha:0.2f}_{rows}", include_top=include_top,
                                       classifier=classifier, pooling=pooling,
                                       classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file)


__all__ = ["MobileNet", "preprocess_input", "decode_predictions"]
