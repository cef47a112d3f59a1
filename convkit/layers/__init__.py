"""Keras-style layers (NHWC activations, HWIO kernels) over convkit.ops."""

from convkit.layers.base import Input, InputLayer, KerasTensor, Layer, Variable
from convkit.layers.conv import (Conv2D, Convolution2D, DepthwiseConv2D, SeparableConv2D,
                                  SeparableConvolution2D)
from convkit.layers.core import (Activation, Dense, Dropout, Flatten, LeakyReLU, ReLU, Rescaling,
                                 SpatialDropout2D)
from convkit.layers.merge import (Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average,
                                  concatenate, maximum, minimum, multiply, subtract)
from convkit.layers.normalization import BatchNormalization, Normalization, SyncBatchNormalization
from convkit.layers.preprocessing import (CenterCrop, RandomContrast, RandomFlip, RandomRotation, RandomTranslation,
                                          RandomZoom, Resizing)
from convkit.layers.pooling import (AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D,
                                    GlobalMaxPool2D, GlobalMaxPooling2D, MaxPool2D, MaxPooling2D)
from convkit.layers.reshaping import Cropping2D, Permute, Reshape, ZeroPadding2D

__all__ = ["Layer", "Variable", "KerasTensor", "Input", "InputLayer", "Conv2D", "Convolution2D",
           "DepthwiseConv2D", "SeparableConv2D", "SeparableConvolution2D",
           "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D",
           "GlobalAvgPool2D", "Flatten", "Dense", "Dropout", "BatchNormalization", "SyncBatchNormalization",
           "Activation", "ReLU", "LeakyReLU", "Rescaling", "Normalization", "SpatialDropout2D", "GlobalMaxPooling2D",
           "GlobalMaxPool2D", "ZeroPadding2D", "Cropping2D", "Reshape", "Permute", "Add", "Subtract", "Multiply",
           "Average", "Maximum", "Minimum", "Concatenate", "add", "subtract", "multiply", "average", "maximum",
           "minimum", "concatenate", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom",
           "RandomTranslation", "RandomContrast", "experimental"]


def __getattr__(name):
    # tf.keras 2's layers.experimental.preprocessing, loaded (and warned about) only when used
    if name == "experimental":
        import importlib

        return importlib.import_module("convkit.layers.experimental")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
