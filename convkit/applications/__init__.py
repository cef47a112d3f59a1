"""Keras's ImageNet models (``keras.applications``): the same functions, arguments, layer names, layer and weight
order, so that Keras's weights (its official files, or ``get_weights()`` of a Keras model) load one to one.

Each model has a module with its model functions, ``preprocess_input`` and ``decode_predictions``, e.g.
``convkit.applications.mobilenet``; the model functions are also here, e.g. ``convkit.applications.MobileNet``.
"""

from convkit.applications import (densenet, efficientnet, imagenet_utils, inception_v3, mobilenet, mobilenet_v2,
                                  nasnet, resnet, resnet50, vgg16, vgg19)
from convkit.applications.densenet import DenseNet121, DenseNet169, DenseNet201
from convkit.applications.efficientnet import (EfficientNetB0, EfficientNetB1, EfficientNetB2, EfficientNetB3,
                                               EfficientNetB4, EfficientNetB5, EfficientNetB6, EfficientNetB7)
from convkit.applications.inception_v3 import InceptionV3
from convkit.applications.mobilenet import MobileNet
from convkit.applications.mobilenet_v2 import MobileNetV2
from convkit.applications.nasnet import NASNetLarge, NASNetMobile
from convkit.applications.resnet import ResNet50, ResNet101, ResNet152
from convkit.applications.vgg16 import VGG16
from convkit.applications.vgg19 import VGG19

__all__ = ["imagenet_utils", "vgg16", "vgg19", "resnet", "resnet50", "inception_v3", "mobilenet", "mobilenet_v2",
           "densenet", "nasnet", "efficientnet", "VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "InceptionV3",
           "MobileNet", "MobileNetV2", "DenseNet121", "DenseNet169", "DenseNet201", "NASNetMobile", "NASNetLarge",
           "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
           "EfficientNetB6", "EfficientNetB7"]
