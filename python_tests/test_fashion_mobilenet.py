"""The modern blocks train: a small MobileNet (depthwise-separable inverted residuals, residual adds,
squeeze-and-excitation through Multiply) learns real Fashion-MNIST with the zoo's recipe."""

import numpy as np

import convkit
from convkit import zoo
from convkit.datasets import fashion_mnist
from helpers import real_data


def test_blocks_are_the_modern_ones():
    kinds = {type(layer).__name__ for layer in zoo.get("fashion_mobilenet").layers}
    assert {"DepthwiseConv2D", "Add", "Multiply", "GlobalAveragePooling2D", "ReLU"} <= kinds


def test_small_mobilenet_reaches_90_percent_on_fashion_mnist():
    """The recipe's 5 epochs end at 91.8% (seed 1); 90% leaves room for other seeds and machines."""
    (x_train, y_train), (x_test, y_test) = real_data(fashion_mnist.load_data, "Fashion-MNIST")
    r = zoo.recipe("fashion_mobilenet")
    x_train, x_test = zoo.preprocess(r, x_train, x_test)
    convkit.set_random_seed(0)
    model = zoo.build("fashion_mobilenet")
    model.fit(x_train, y_train.astype(np.int64), batch_size=r.batch_size, epochs=r.epochs, verbose=0,
              callbacks=r.make_callbacks())
    accuracy = model.evaluate(x_test, y_test.astype(np.int64), verbose=0, return_dict=True)["accuracy"]
    assert accuracy >= 0.90
