"""VGG19 (Simonyan and Zisserman, 2015), as ``keras.applications.vgg19``."""

from convkit.applications._vgg import vgg
from convkit.applications.imagenet_utils import decode_predictions, preprocessor

preprocess_input = preprocessor("caffe", "VGG19")


def VGG19(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg19"):
    """VGG19: 16 convolutions in 5 blocks and 3 dense layers (143,667,240 parameters with the top), for
    224x224 RGB images preprocessed by ``preprocess_input`` (caffe mode). Arguments as ``VGG16``'s."""
    return vgg("vgg19", (2, 2, 4, 4, 4), ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
               include_top=include_top, weights=weights, input_tensor=input_tensor, input_shape=input_shape,
               pooling=pooling, classes=classes, classifier_activation=classifier_activation, name=name)


__all__ = ["VGG19", "preprocess_input", "decode_predictions"]
