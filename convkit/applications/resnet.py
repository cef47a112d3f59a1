"""ResNet50, ResNet101 and ResNet152 (He et al., 2015), as ``keras.applications.resnet``: bottleneck residual
blocks (1x1, 3x3, 1x1 convolutions with batch normalization) in four stacks."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("caffe", "ResNet")

_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_HASHES = {"resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
           "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
           "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c")}
_EPSILON = 1.001e-5


def _conv_bn(x, filters, kernel_size, name, strides=1, padding="valid"):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, name=f"{name}_conv")(x)
    return layers.BatchNormalization(axis=3, epsilon=_EPSILON, name=f"{name}_bn")(x)


def residual_block(x, filters, name, stride=1, conv_shortcut=True):
    """A bottleneck block: 1x1 (``stride``), 3x3 and 1x1 (to ``4 * filters``) convolutions added to the
    input, or to its 1x1 projection when ``conv_shortcut``."""
    shortcut = _conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride) if conv_shortcut else x
    x = _conv_bn(x, filters, 1, f"{name}_1", strides=stride)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv_bn(x, filters, 3, f"{name}_2", padding="same")
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv_bn(x, 4 * filters, 1, f"{name}_3")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def residual_stack(x, filters, blocks, name, stride=2):
    """``blocks`` residual blocks, the first projecting its shortcut (and striding by ``stride``)."""
    x = residual_block(x, filters, f"{name}_block1", stride=stride)
    for i in range(2, blocks + 1):
        x = residual_block(x, filters, f"{name}_block{i}", conv_shortcut=False)
    return x


def _resnet(family, blocks, *, include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name):
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=224,
                                                      min_size=32)
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
    x = _conv_bn(x, 64, 7, "conv1", strides=2)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stack, (filters, count) in enumerate(zip((64, 128, 256, 512), blocks), start=2):
        x = residual_stack(x, filters, count, f"conv{stack}", stride=1 if stack == 2 else 2)

    classifier = gap_classifier(classes, classifier_activation, "avg_pool")

    def weight_file(top):
        file_name = f"{family}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        return file_name, _HASHES[family][0 if top else 1], _WEIGHTS + file_name

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top, classifier=classifier,
                                       pooling=pooling, classifier_activation=classifier_activation,
                                       weights=weights, weight_file=weight_file, pool_names=("avg_pool", "max_pool"))


def ResNet50(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="resnet50"):
    """ResNet50 (25,636,712 parameters with the top), for 224x224 RGB images preprocessed by
    ``preprocess_input`` (caffe mode). ``weights``: None, 'imagenet' or a file; ``include_top=False`` drops
    the classifier (then ``pooling`` None, 'avg' or 'max', and any input of at least 32x32)."""
    return _resnet("resnet50", (3, 4, 6, 3), include_top=include_top, weights=weights, input_tensor=input_tensor,
                   input_shape=input_shape, pooling=pooling, classes=classes,
                   classifier_activation=classifier_activation, name=name)


def ResNet101(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name="resnet101"):
    """ResNet101 (44,707,176 parameters with the top); arguments as ``ResNet50``'s."""
    return _resnet("resnet101", (3, 4, 23, 3), include_top=include_top, weights=weights, input_tensor=input_tensor,
                   input_shape=input_shape, pooling=pooling, classes=classes,
                   classifier_activation=classifier_activation, name=name)


def ResNet152(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name="resnet152"):
    """ResNet152 (60,419,944 parameters with the top); arguments as ``ResNet50``'s."""
    return _resnet("resnet152", (3, 8, 36, 3), include_top=include_top, weights=weights, input_tensor=input_tensor,
                   input_shape=input_shape, pooling=pooling, classes=classes,
                   classifier_activation=classifier_activation, name=name)


__all__ = ["ResNet50", "ResNet101", "ResNet152", "preprocess_input", "decode_predictions"]
