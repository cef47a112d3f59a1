"""EfficientNet-B0 to -B7 (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", 2019), layer for layer and weight for weight as Keras 3 builds them: the images' scaling and
normalisation are the model's first layers, so inputs are pixels in [0, 255]."""

from __future__ import annotations

import copy
import math

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications.imagenet_utils import decode_predictions

_ORIGIN = "https://storage.googleapis.com/keras-applications/"
# weights name: (hash of the file with the classifier, hash of the one without)
_HASHES = {"b0": ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
           "b1": ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
           "b2": ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
           "b3": ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
           "b4": ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
           "b5": ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
           "b6": ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
           "b7": ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a")}
# weights name: (width coefficient, depth coefficient, default size, dropout rate before the classifier)
_SCALING = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}
_STAGES = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
           (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
DEFAULT_BLOCKS_ARGS = [
    dict(kernel_size=k, repeats=r, filters_in=i, filters_out=o, expand_ratio=e, id_skip=True, strides=s, se_ratio=0.25)
    for k, r, i, o, e, s in _STAGES]
CONV_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                           "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_KERNEL_INITIALIZER = {"class_name": "VarianceScaling",
                            "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}
# the official weights hold these deviations where the Normalization layer expects variances
IMAGENET_STDDEV_RGB = [0.229, 0.224, 0.225]


def _conv_bn_act(x, filters, activation, prefix, conv_name="conv", bn_name="bn", act_name="activation"):
    """A bias-free 1x1 convolution, batch normalisation and the activation (none when ``activation`` is None)."""
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=CONV_KERNEL_INITIALIZER,
                      name=f"{prefix}{conv_name}")(x)
    x = layers.BatchNormalization(axis=3, name=f"{prefix}{bn_name}")(x)
    return x if activation is None else layers.Activation(activation, name=f"{prefix}{act_name}")(x)


def squeeze_excite(x, filters_se, activation, name):
    """Channel attention: the global average of ``x`` through a 1x1 bottleneck of ``filters_se`` channels and a
    sigmoid, multiplied into ``x``."""
    filters = x.shape[-1]
    se = layers.GlobalAveragePooling2D(name=f"{name}se_squeeze")(x)
    se = layers.Reshape((1, 1, filters), name=f"{name}se_reshape")(se)
    se = layers.Conv2D(filters_se, 1, padding="same", activation=activation,
                       kernel_initializer=CONV_KERNEL_INITIALIZER, name=f"{name}se_reduce")(se)
    se = layers.Conv2D(filters, 1, padding="same", activation="sigmoid", kernel_initializer=CONV_KERNEL_INITIALIZER,
                       name=f"{name}se_expand")(se)
    return layers.multiply([x, se], name=f"{name}se_excite")


def block(inputs, activation="swish", drop_rate=0.0, name="", filters_in=32, filters_out=16, kernel_size=3, strides=1,
          expand_ratio=1, se_ratio=0.0, id_skip=True):
    """An inverted residual block (MBConv): 1x1 expansion, depthwise convolution, squeeze-and-excitation and 1x1
    projection, with the input added back (after drop-connect of ``drop_rate``) when the shapes allow."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn_act(x, filters, activation, name, "expand_conv", "expand_bn", "expand_activation")
    padding = "same"
    if strides == 2:
        x = layers.ZeroPadding2D(padding=imagenet_utils.correct_pad(x, kernel_size), name=f"{name}dwconv_pad")(x)
        padding = "valid"
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False,
                               depthwise_initializer=CONV_KERNEL_INITIALIZER, name=f"{name}dwconv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}bn")(x)
    x = layers.Activation(activation, name=f"{name}activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, max(1, int(filters_in * se_ratio)), activation, name)
    x = _conv_bn_act(x, filters_out, None, name, "project_conv", "project_bn")
    if id_skip and strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def round_filters(filters, width_coefficient, divisor=8):
    """``filters`` scaled by the width coefficient, to a multiple of ``divisor`` no less than 90% of it."""
    filters *= width_coefficient
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new_filters + divisor if new_filters < 0.9 * filters else new_filters)


def round_repeats(repeats, depth_coefficient):
    return int(math.ceil(depth_coefficient * repeats))


def _stem(x, filters, activation, weights):
    """Pixels in [0, 255] to [0, 1], normalised per channel (by a Normalization layer whose statistics the weights
    hold; the official ones need a further rescaling), then a strided 3x3 convolution."""
    x = layers.Rescaling(1.0 / 255.0)(x)
    x = layers.Normalization(axis=3)(x)
    if weights == "imagenet":
        x = layers.Rescaling([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB])(x)
    x = layers.ZeroPadding2D(padding=imagenet_utils.correct_pad(x, 3), name="stem_conv_pad")(x)
    x = layers.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False,
                      kernel_initializer=CONV_KERNEL_INITIALIZER, name="stem_conv")(x)
    x = layers.BatchNormalization(axis=3, name="stem_bn")(x)
    return layers.Activation(activation, name="stem_activation")(x)


def EfficientNet(width_coefficient, depth_coefficient, default_size, dropout_rate=0.2, drop_connect_rate=0.2,
                 depth_divisor=8, activation="swish", blocks_args="default", name="efficientnet", include_top=True,
                 weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
                 classifier_activation="softmax", weights_name=None):
    """An EfficientNet scaled by ``width_coefficient`` and ``depth_coefficient``, as Keras's
    ``efficientnet.EfficientNet``: ``blocks_args`` one dict of ``block`` arguments and ``repeats`` per stage
    ('default': B0's); 'imagenet' weights are those of ``weights_name`` ('b0' ... 'b7')."""
    blocks_args = copy.deepcopy(DEFAULT_BLOCKS_ARGS if blocks_args == "default" else blocks_args)
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=default_size,
                                                      min_size=32, wording="efficientnet")
    width = lambda f: round_filters(f, width_coefficient, depth_divisor)  # noqa: E731
    x = _stem(img_input, width(32), activation, weights)
    b, blocks = 0, float(sum(round_repeats(args["repeats"], depth_coefficient) for args in blocks_args))
    for i, args in enumerate(blocks_args):
        if args["repeats"] <= 0:
            raise ValueError("The number of repeats in `EfficientNet` must be > 0. "
                             f"Received: repeats={args['repeats']}")
        args["filters_in"], args["filters_out"] = width(args["filters_in"]), width(args["filters_out"])
        for j in range(round_repeats(args.pop("repeats"), depth_coefficient)):
            if j > 0:
                args["strides"], args["filters_in"] = 1, args["filters_out"]
            x = block(x, activation, drop_connect_rate * b / blocks, name=f"block{i + 1}{chr(j + 97)}_", **args)
            b += 1
    x = _conv_bn_act(x, width(1280), activation, "top_")
    classifier = gap_classifier(classes, classifier_activation, "avg_pool", dropout_rate, DENSE_KERNEL_INITIALIZER)

    def weight_file(top):
        file_name = name + (".h5" if top else "_notop.h5")
        return file_name, _HASHES[weights_name][0 if top else 1], _ORIGIN + file_name

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top, classifier=classifier,
                                       pooling=pooling, classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file, pool_names=("avg_pool", "max_pool"))


def _variant(key):
    def build(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=f"efficientnet{key}"):
        width, depth, size, dropout = _SCALING[key]
        return EfficientNet(width, depth, size, dropout, name=name, include_top=include_top, weights=weights,
                            input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, weights_name=key)

    size = _SCALING[key][2]
    build.__name__ = build.__qualname__ = f"EfficientNet{key.upper()}"
    build.__doc__ = (f"EfficientNet-{key.upper()} for {size}x{size} RGB images in [0, 255] (it scales and "
                     f"normalises them itself), as Keras's ``EfficientNet{key.upper()}``: ``weights`` None, "
                     "'imagenet' or a weight file's path; ``input_shape`` (at least 32x32) only without the top; "
                     "``pooling`` None, 'avg' or 'max' without it.")
    return build


(EfficientNetB0, EfficientNetB1, EfficientNetB2, EfficientNetB3, EfficientNetB4, EfficientNetB5, EfficientNetB6,
 EfficientNetB7) = (_variant(f"b{i}") for i in range(8))


def preprocess_input(x, data_format=None):
    """Returns ``x`` unchanged: EfficientNet's first layers scale and normalise the images themselves."""
    return x


__all__ = ["EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
           "EfficientNetB6", "EfficientNetB7", "preprocess_input", "decode_predictions"]
