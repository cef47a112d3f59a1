"""VGG16 (Simonyan and Zisserman, 2015), as ``keras.applications.vgg16``."""

from convkit.applications._vgg import vgg
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("caffe", "VGG16")


def VGG16(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg16"):
    """VGG16: 13 convolutions in 5 blocks and 3 dense layers (138,357,544 parameters with the top), for
    224x224 RGB images preprocessed by ``preprocess_input`` (caffe mode). ``weights``: None, 'imagenet' or a
    file; ``include_top=False`` drops the dense layers (then ``pooling`` None, 'avg' or 'max', and any input
    of at least 32x32); ``classes`` and ``classifier_activation`` shape the last layer."""
    return vgg("vgg16", (2, 2, 3, 3, 3), ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
               include_top=include_top, weights=weights, input_tensor=input_tensor, input_shape=input_shape,
               pooling=pooling, classes=classes, classifier_activation=classifier_activation, name=name)


__all__ = ["VGG16", "preprocess_input", "decode_predictions"]
