"""DenseNet-121, -169 and -201 (Huang et al., "Densely Connected Convolutional Networks", 2017), layer for layer
and weight for weight as Keras builds them."""

from __future__ import annotations

from convkit import layers
from convkit.applications import imagenet_utils
from convkit.applications._classifier import gap_classifier
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
# depth: (blocks per dense block, hash of the file with the classifier, hash of the one without)
_VARIANTS = {121: ((6, 12, 24, 16), "9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738"),
             169: ((6, 12, 32, 32), "d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b"),
             201: ((6, 12, 48, 32), "1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1")}
_GROWTH_RATE = 32
_EPSILON = 1.001e-5


def _bn_relu(x, prefix):
    x = layers.BatchNormalization(axis=3, epsilon=_EPSILON, name=f"{prefix}bn")(x)
    return layers.Activation("relu", name=f"{prefix}relu")(x)


def conv_block(x, growth_rate, name):
    """One layer of a dense block: BN-ReLU-1x1 conv (4 * growth_rate) and BN-ReLU-3x3 conv (growth_rate), whose
    maps are concatenated to the input's."""
    y = _bn_relu(x, f"{name}_0_")
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = _bn_relu(y, f"{name}_1_")
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(axis=3, name=f"{name}_concat")([x, y])


def dense_block(x, blocks, name):
    """``blocks`` conv blocks in a row, named ``{name}_block1``, ``{name}_block2``, ..."""
    for i in range(blocks):
        x = conv_block(x, _GROWTH_RATE, name=f"{name}_block{i + 1}")
    return x


def transition_block(x, reduction, name):
    """BN-ReLU, a 1x1 conv keeping ``reduction`` of the channels, and 2x2 average pooling."""
    x = _bn_relu(x, f"{name}_")
    x = layers.Conv2D(int(x.shape[-1] * reduction), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def DenseNet(blocks, include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="densenet"):
    """A DenseNet of four dense blocks of ``blocks`` conv blocks each, as Keras's ``densenet.DenseNet``;
    'imagenet' weights exist for the blocks of DenseNet121, 169 and 201."""
    _, img_input, inputs = imagenet_utils.model_input(input_tensor, input_shape, include_top=include_top,
                                                      weights=weights, classes=classes, default_size=224, min_size=32,
                                                      wording="densenet")
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)))(img_input)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = _bn_relu(x, "conv1_")
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)))(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, n in enumerate(blocks, start=2):
        if stage > 2:
            x = transition_block(x, 0.5, name=f"pool{stage - 1}")
        x = dense_block(x, n, name=f"conv{stage}")
    x = _bn_relu(x, "")

    def weight_file(top):
        depth = next((d for d, v in _VARIANTS.items() if v[0] == tuple(blocks)), None)
        if depth is None:
            raise ValueError("weights_path undefined")
        file_name = f"densenet{depth}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        return file_name, _VARIANTS[depth][1 if top else 2], _ORIGIN + file_name

    return imagenet_utils.finish_model(inputs, x, name, include_top=include_top,
                                       classifier=gap_classifier(classes, classifier_activation, "avg_pool"),
                                       pooling=pooling, classifier_activation=classifier_activation, weights=weights,
                                       weight_file=weight_file, pool_names=("avg_pool", "max_pool"))


def _variant(depth):
    def build(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=f"densenet{depth}"):
        return DenseNet(list(_VARIANTS[depth][0]), include_top, weights, input_tensor, input_shape, pooling, classes,
                        classifier_activation, name=name)

    build.__name__ = build.__qualname__ = f"DenseNet{depth}"
    build.__doc__ = (f"DenseNet-{depth} for 224x224 RGB images, as Keras's ``DenseNet{depth}``: ``weights`` None, "
                     "'imagenet' or a weight file's path; ``input_shape`` (at least 32x32) only without the top; "
                     "``pooling`` None, 'avg' or 'max' without it. Inputs go through ``preprocess_input`` first.")
    return build


DenseNet121, DenseNet169, DenseNet201 = (_variant(d) for d in (121, 169, 201))


preprocess_input = preprocessor("torch", "DenseNet")

__all__ = ["DenseNet121", "DenseNet169", "DenseNet201", "preprocess_input", "decode_predictions"]
