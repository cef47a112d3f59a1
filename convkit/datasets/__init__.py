"""Dataset loaders returning Keras-style ``((x_train, y_train), (x_test, y_test))`` uint8 arrays."""

from convkit.datasets import cifar10, fashion_mnist, mnist
from convkit.datasets._common import DataUnavailableError, cache_dir
from convkit.utils import to_categorical

__all__ = ["mnist", "fashion_mnist", "cifar10", "DataUnavailableError", "cache_dir", "to_categorical"]
