"""ResNet50, as ``keras.applications.resnet50`` (the same function as ``convkit.applications.resnet``'s)."""

from convkit.applications.resnet import ResNet50, decode_predictions, preprocess_input

__all__ = ["ResNet50", "preprocess_input", "decode_predictions"]
