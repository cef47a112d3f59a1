"""NASNet-A Mobile (4 @ 1056) and Large (6 @ 4032) (Zoph et al., "Learning Transferable Architectures for
Scalable Image Recognition", 2018), layer for layer and weight for weight as Keras builds them."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/"
# default size: (file with the classifier, its hash, file without, its hash); the URLs name them differently
_FILES = {224: (("nasnet_mobile.h5", "NASNet-mobile.h5", "020fb642bf7360b370c678b08e0adf61"),
                ("nasnet_mobile_no_top.h5", "NASNet-mobile-no-top.h5", "1ed92395b5b598bdda52abe5c0dbfd63")),
          331: (("nasnet_large.h5", "NASNet-large.h5", "11577c9a518f0070763c2b964a382f17"),
                ("nasnet_large_no_top.h5", "NASNet-large-no-top.h5", "d81d89dc07e6e56530c4e77faddd61b5"))}


def _bn(x, name):
    return layers.BatchNormalization(axis=-1, momentum=0.9997, epsilon=1e-3, name=name)(x)


def _conv1x1(x, filters, name):
    return layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer="he_normal", name=name)(x)


def _avg_pool(x, strides, name):
    """3x3 average pooling: 'same' at stride 1, 'valid' at stride 2 (whose input is padded already)."""
    return layers.AveragePooling2D(3, strides=strides, padding="same" if strides == 1 else "valid", name=name)(x)


def separable_conv_block(x, filters, kernel_size=3, strides=1, block_id=None):
    """Twice ReLU, separable convolution and batch normalisation; a stride of 2 in the first, after zero
    padding as TensorFlow's 'same' would pad."""
    x = layers.Activation("relu")(x)
    padding = "same"
    if strides == 2:
        x = layers.ZeroPadding2D(padding=imagenet_utils.correct_pad(x, kernel_size),
                                 name=f"separable_conv_1_pad_{block_id}")(x)
        padding = "valid"
    x = layers.SeparableConv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                               name=f"separable_conv_1_{block_id}")(x)
    x = _bn(x, f"separable_conv_1_bn_{block_id}")
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(filters, kernel_size, padding="same", use_bias=False,
                               name=f"separable_conv_2_{block_id}")(x)
    return _bn(x, f"separable_conv_2_bn_{block_id}")


def adjust_block(p, ip, filters, block_id=None):
    """The previous cell's output ``p`` made to fit ``ip``: halved by two offset 1x1 strided paths when its width
    differs, projected to ``filters`` channels when only those differ (``ip`` itself when there is none)."""
    if p is None:
        return ip
    if p.shape[-2] != ip.shape[-2]:
        p = layers.Activation("relu", name=f"adjust_relu_1_{block_id}")(p)
        p1 = layers.AveragePooling2D(1, strides=2, name=f"adjust_avg_pool_1_{block_id}")(p)
        p1 = _conv1x1(p1, filters // 2, f"adjust_conv_1_{block_id}")
        p2 = layers.ZeroPadding2D(padding=((0, 1), (0, 1)))(p)
        p2 = layers.Cropping2D(cropping=((1, 0), (1, 0)))(p2)
        p2 = layers.AveragePooling2D(1, strides=2, name=f"adjust_avg_pool_2_{block_id}")(p2)
        p2 = _conv1x1(p2, filters // 2, f"adjust_conv_2_{block_id}")
        p = layers.concatenate([p1, p2], axis=-1)
        return _bn(p, f"adjust_bn_{block_id}")
    if p.shape[-1] != filters:
        p = layers.Activation("relu")(p)
        p = _conv1x1(p, filters, f"adjust_conv_projection_{block_id}")
        return _bn(p, f"adjust_bn_{block_id}")
    return p


def _cell_input(ip, p, filters, kind, block_id):
    """(h, p): the cell's input through ReLU, a 1x1 convolution and batch normalisation, and ``p`` adjusted."""
    p = adjust_block(p, ip, filters, block_id)
    h = layers.Activation("relu")(ip)
    h = _conv1x1(h, filters, f"{kind}_conv_1_{block_id}")
    return _bn(h, f"{kind}_bn_1_{block_id}"), p


def normal_a_cell(ip, p, filters, block_id=None):
    """A NASNet-A normal cell (Fig. 4 of the paper): five sums of two operations, concatenated with ``p``.
    Returns (output, ip), the next cell's two inputs."""
    h, p = _cell_input(ip, p, filters, "normal", block_id)
    sep = lambda x, k, side: separable_conv_block(x, filters, k, block_id=f"normal_{side}_{block_id}")  # noqa: E731
    add = lambda xs, i: layers.add(xs, name=f"normal_add_{i}_{block_id}")  # noqa: E731
    x1 = add([sep(h, 5, "left1"), sep(p, 3, "right1")], 1)
    x2 = add([sep(p, 5, "left2"), sep(p, 3, "right2")], 2)
    x3 = add([_avg_pool(h, 1, f"normal_left3_{block_id}"), p], 3)
    x4 = add([_avg_pool(p, 1, f"normal_left4_{block_id}"), _avg_pool(p, 1, f"normal_right4_{block_id}")], 4)
    x5 = add([sep(h, 3, "left5"), h], 5)
    return layers.concatenate([p, x1, x2, x3, x4, x5], axis=-1, name=f"normal_concat_{block_id}"), ip


def reduction_a_cell(ip, p, filters, block_id=None):
    """A NASNet-A reduction cell (Fig. 4 of the paper), which halves the image. Returns (output, ip)."""
    h, p = _cell_input(ip, p, filters, "reduction", block_id)
    h3 = layers.ZeroPadding2D(padding=imagenet_utils.correct_pad(h, 3), name=f"reduction_pad_1_{block_id}")(h)
    sep = lambda x, k, side, s=2: separable_conv_block(  # noqa: E731
        x, filters, k, strides=s, block_id=f"reduction_{side}_{block_id}")
    max_pool = lambda side: layers.MaxPooling2D(3, strides=2, name=f"reduction_{side}_{block_id}")(h3)  # noqa: E731
    x1 = layers.add([sep(h, 5, "left1"), sep(p, 7, "right1")], name=f"reduction_add_1_{block_id}")
    x2 = layers.add([max_pool("left2"), sep(p, 7, "right2")], name=f"reduction_add_2_{block_id}")
    x3 = layers.add([_avg_pool(h3, 2, f"reduction_left3_{block_id}"), sep(p, 5, "right3")],
                    name=f"reduction_add3_{block_id}")
    x4 = layers.add([x2, _avg_pool(x1, 1, f"reduction_left4_{block_id}")])
    x5 = layers.add([sep(x1, 3, "left4", s=1), max_pool("right5")], name=f"reduction_add4_{block_id}")
    return layers.concatenate([x2, x3, x4, x5], axis=-1, name=f"reduction_concat_{block_id}"), ip


def NASNet(input_shape=None, penultimate_filters=4032, num_blocks=6, stem_block_filters=96, skip_reduction=True,
           filter_multiplier=2, include_top=True, weights="imagenet", input_tensor=None, pooling=None, classes=1000,
           default_size=None, classifier_activation="softmax", name="NASNet"):
    """A NASNet-A (``num_blocks`` @ ``penultimate_filters``) as Keras's ``nasnet.NASNet``: a stem, two reduction
    cells, then three stages of ``num_blocks`` normal cells with a reduction cell between them. 'imagenet' weights
    exist for NASNetMobile's and NASNetLarge's settings (``default_size`` 224 and 331)."""
    default_size = 331 if default_size is None else default_size
    imagenet_utils.check_weights_argument(weights, include_top, classes, "densenet")
    if isinstance(input_shape, tuple) and None in input_shape and weights == "imagenet":
        raise ValueError("When specifying the input shape of a NASNet and loading `ImageNet` weights, the "
                         f"input_shape argument must be static (no None entries). Got: `input_shape={input_shape}`.")
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=default_size,
                                                      min_size=32, wording="densenet")
    if penultimate_filters % (24 * (filter_multiplier ** 2)) != 0:
        raise ValueError("For NASNet-A models, the `penultimate_filters` must be a multiple of 24 * "
                         f"(`filter_multiplier` ** 2). Current value: {penultimate_filters}")
    filters = penultimate_filters // 24
    x = layers.Conv2D(stem_block_filters, 3, strides=2, padding="valid", use_bias=False,
                      kernel_initializer="he_normal", name="stem_conv1")(img_input)
    x = _bn(x, "stem_bn1")
    x, p = reduction_a_cell(x, None, filters // filter_multiplier ** 2, block_id="stem_1")
    x, p = reduction_a_cell(x, p, filters // filter_multiplier, block_id="stem_2")
    for stage in range(3):
        stage_filters = filters * filter_multiplier ** stage
        if stage:
            x, reduced = reduction_a_cell(x, p, stage_filters, block_id=f"reduce_{stage * num_blocks}")
            p = p if skip_reduction else reduced
        for i in range(num_blocks):
            x, p = normal_a_cell(x, p, stage_filters, block_id=f"{stage * num_blocks + i + (stage > 0)}")
    x = layers.Activation("relu")(x)

    def weight_file(top):
        if default_size not in _FILES:
            raise ValueError("ImageNet weights can only be loaded with NASNetLarge or NASNetMobile")
        file_name, url_name, file_hash = _FILES[default_size][0 if top else 1]
        return file_name, file_hash, _ORIGIN + url_name

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top,
                                       classifier=gap_classifier(classes, classifier_activation), pooling=pooling,
                                       classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file)


def NASNetMobile(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                 classes=1000, classifier_activation="softmax", name="nasnet_mobile"):
    """NASNet-A Mobile (4 @ 1056) for 224x224 RGB images, as Keras's ``NASNetMobile``: ``weights`` None,
    'imagenet' or a weight file's path; ``input_shape`` only without the top (default then 224x224x3);
    ``pooling`` None, 'avg' or 'max' without it. Inputs go through ``preprocess_input`` first."""
    if not include_top and input_shape is None:
        input_shape = (224, 224, 3)
    return NASNet(input_shape, penultimate_filters=1056, num_blocks=4, stem_block_filters=32, skip_reduction=False,
                  filter_multiplier=2, include_top=include_top, weights=weights, input_tensor=input_tensor,
                  pooling=pooling, classes=classes, default_size=224, classifier_activation=classifier_activation,
                  name=name)


def NASNetLarge(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="nasnet_large"):
    """NASNet-A Large (6 @ 4032) for 331x331 RGB images, as Keras's ``NASNetLarge``: ``weights`` None,
    'imagenet' or a weight file's path; ``input_shape`` (at least 32x32) only without the top; ``pooling``
    None, 'avg' or 'max' without it. Inputs go through ``preprocess_input`` first."""
    return NASNet(input_shape, penultimate_filters=4032, num_blocks=6, stem_block_filters=96, skip_reduction=True,
                  filter_multiplier=2, include_top=include_top, weights=weights, input_tensor=input_tensor,
                  pooling=pooling, classes=classes, default_size=331, classifier_activation=classifier_activation,
                  name=name)


preprocess_input = preprocessor("tf", "NASNet")

__all__ = ["NASNetMobile", "NASNetLarge", "preprocess_input", "decode_predictions"]
