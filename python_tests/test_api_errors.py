"""Bad arguments to layers, models, training, optimizers, augmentation, saving and the data loaders
raise a clear exception naming the problem; the table in docs/ERRORS.md is made from these cases."""

import numpy as np

import convkit
import convkit.datasets
from convkit import layers as L
from convkit.models import Sequential
from convkit.preprocessing import ImageDataGenerator
from convkit.saving import load_model
from helpers import error_table_tests, write_error_table

X = np.zeros((4, 8, 8, 1), np.float32)
Y = np.array([0, 1, 2, 1])


def model():
    """A small compiled classifier of (8, 8, 1) images into 3 classes."""
    m = Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3), L.Flatten(), L.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


BAD = [
    # (call, as evaluated with X, Y, np, L, Sequential, model, convkit, ImageDataGenerator and load_model
    # in scope; exception; message pattern)
    ('L.Conv2D(0, 3)', ValueError, r"Conv2D: filters must be a positive int, got 0"),
    ('L.Conv2D(8, (3, 3, 3))', ValueError, r"kernel_size must be a positive int or a pair of them"),
    ('L.Conv2D(8, 3, padding="full")', ValueError, r"padding must be 'valid' or 'same', got 'full'"),
    ('L.Conv2D(8, 3, data_format="channels_first")', ValueError, r"only data_format='channels_last'"),
    ('L.Conv2D(8, 3, activation="swishy")', ValueError, r"unknown activation 'swishy'"),
    ('L.Conv2D(8, 3, kernel_initializer="golden")', ValueError, r"unknown initializer 'golden'"),
    ('L.Conv2D(8, 3, foo=1)', TypeError, r"unexpected argument\(s\) \['foo'\]"),
    ('L.DepthwiseConv2D(3, depth_multiplier=0)', ValueError, r"DepthwiseConv2D: depth_multiplier must be a positive int"),
    ('L.DepthwiseConv2D(3, data_format="channels_first")', ValueError, r"only data_format='channels_last'"),
    ('L.DepthwiseConv2D(3, depthwise_constraint="no_such")', ValueError, r"unknown constraint 'no_such'"),
    ('Sequential([L.Input((2, 2, 3)), L.DepthwiseConv2D(3)])', ValueError,
     r"window height \(3\) is larger than the input height \(2\)"),
    ('L.SeparableConv2D(0, 3)', ValueError, r"SeparableConv2D: filters must be a positive int, got 0"),
    ('L.SeparableConv2D(4, 3, padding="full")', ValueError, r"padding must be 'valid' or 'same', got 'full'"),
    ('L.Dense(-1)', ValueError, r"Dense: units must be a positive int, got -1"),
    ('L.Dense(4, dtype="float64")', TypeError, r"only float32 is supported"),
    ('L.Dropout(1.5)', ValueError, r"rate must be in \[0, 1\), got 1.5"),
    ('L.MaxPooling2D(0)', ValueError, r"pool_size must be a positive int or a pair of them, got 0"),
    ('L.BatchNormalization(momentum=2)', ValueError, r"momentum must be in \[0, 1\], got 2"),
    ('L.BatchNormalization(epsilon=0)', ValueError, r"epsilon must be positive, got 0"),
    ('L.ZeroPadding2D((1, 2, 3))', ValueError, r"ZeroPadding2D: padding must be an int, a pair of ints or a pair"),
    ('L.Cropping2D(-1)', ValueError, r"Cropping2D: each cropping amount must be a non-negative int, got -1"),
    ('L.Cropping2D(4, name="crop")(X)', ValueError, r"cropping \(\(4, 4\), \(4, 4\)\) must leave something of an input"),
    ('L.Reshape((0, 4))', ValueError, r"Reshape: target_shape must be a tuple of positive ints with at most one -1"),
    ('L.Reshape((5, -1), name="reshape")(X)', ValueError, r"cannot reshape samples of shape \(8, 8, 1\) \(64 values\) to \(5, -1\)"),
    ('L.Permute((1, 3))', ValueError, r"Permute: dims must be a permutation of 1..n, got \(1, 3\)"),
    ('L.ReLU(negative_slope=-1)', ValueError, r"ReLU: negative_slope must be a non-negative number, got -1"),
    ('L.Subtract(name="sub")([X, X, X])', ValueError, r"Subtract .*: needs a list of exactly 2 inputs"),
    ('L.Add(name="add")([X, X[:, :4]])', ValueError, r"inputs of shapes .* cannot be broadcast together"),
    ('L.Normalization(mean=1.0)', ValueError, r"Normalization: give both mean and variance, or neither"),
    ('L.Rescaling("half")', ValueError, r"Rescaling: scale must be a number or a sequence of finite numbers"),
    ('L.SpatialDropout2D(0.5, name="drop")(X[0], training=True)', ValueError, r"SpatialDropout2D .*: expects 4-D input"),
    ('Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(2)]).fit(X, Y)', RuntimeError, r"fit: compile the model first"),
    ('model().compile("adamx", "mse")', ValueError, r"unknown optimizer 'adamx'"),
    ('model().compile("adam", "hinge")', ValueError, r"unknown loss 'hinge'"),
    ('model().compile("adam", "mse", metrics=["auc"])', ValueError, r"unknown metric 'auc'"),
    ('model().fit(X, Y[:3])', ValueError, r"x and y have different numbers of samples \(4 and 3\)"),
    ('model().fit(X, Y + 10)', ValueError, r"labels must lie in \[0, 3\) for a model with 3 outputs, got range \[10, 12\]"),
    ('model().fit(X[:, :4], Y)', ValueError, r"x has shape \(4, 4, 8, 1\) but the model expects inputs of shape"),
    ('model().fit(X.astype(str), Y)', TypeError, r"x must be a numeric array"),
    ('model().fit(X, Y, batch_size=0)', ValueError, r"fit: batch_size must be a positive int, got 0"),
    ('model().fit(X, Y, epochs=-1)', ValueError, r"fit: epochs must be a non-negative int, got -1"),
    ('model().fit(X, Y, validation_split=1.5)', ValueError, r"validation_split must be in \[0, 1\), got 1.5"),
    ('model().evaluate(X, Y[:2])', ValueError, r"evaluate: x and y have different numbers of samples"),
    ('model().predict(X[0])', ValueError, r"predict: x has shape \(8, 8, 1\) but the model expects"),
    ('model().predict(X, batch_size=2.5)', ValueError, r"predict: batch_size must be a positive int, got 2.5"),
    ('convkit.distributed.allreduce(X)', RuntimeError, r"convkit.distributed.allreduce: call convkit.distributed.init"),
    ('convkit.distributed.init(device="tpu")', ValueError, r"init: device must be 'auto', 'cpu' or 'cuda'"),
    ('convkit.distributed.init(bucket_mb=0)', ValueError, r"init: bucket_mb must be positive, got 0"),
    ('convkit.distributed.init(timeout=-5)', ValueError, r"init: timeout must be a positive number of seconds, got -5"),
    ('convkit.optimizers.Adam(learning_rate=-1)', ValueError, r"learning_rate must be positive"),
    ('convkit.optimizers.SGD(momentum=1.5)', ValueError, r"momentum must be in \[0, 1\), got 1.5"),
    ('convkit.utils.to_categorical([0, 5], 3)', ValueError, r"labels must lie in \[0, 3\), got range \[0, 5\]"),
    ('ImageDataGenerator(fill_mode="mirror")', ValueError, r"fill_mode must be one of"),
    ('ImageDataGenerator(zoom_range=(1.2, 0.8))', ValueError, r"zoom_range must be \(low, high\) with low <= high"),
    ('ImageDataGenerator().flow(X, Y[:3])', ValueError, r"x and y have different lengths: 4 and 3"),
    ('load_model("missing.convkit")', FileNotFoundError, r"no such file: missing.convkit"),
    ('model().save("model.txt")', ValueError, r"save: cannot tell the format from the name 'model.txt'; end it with"),
    ('model().save_weights("w.h5")', ValueError, r"save_weights: cannot tell the format from the name 'w.h5'"),
    ('model().save("w.weights.h5")', ValueError, r"save: 'w.weights.h5' names a weights file"),
    ('convkit.datasets.mnist.load_data(path="missing-folder")', FileNotFoundError, r"missing-folder does not exist"),
]


def run_case(call: str):
    return eval(call, {"X": X, "Y": Y, "np": np, "L": L, "Sequential": Sequential, "model": model,
                       "convkit": convkit, "ImageDataGenerator": ImageDataGenerator, "load_model": load_model})


test_errors_doc_lists_every_case_with_its_message, test_bad_input_is_refused_clearly = \
    error_table_tests("api", BAD, run_case)


def test_valid_edge_arguments_still_work():
    m = model()
    assert m.fit(X, Y, epochs=0, verbose=0).history == {}  # Keras trains nothing for epochs=0
    assert m.predict(X, batch_size=np.int64(3), verbose=0).shape == (4, 3)
    L.BatchNormalization(momentum=0.0), L.BatchNormalization(momentum=1.0)


if __name__ == "__main__":  # rewrite the table in docs/ERRORS.md
    write_error_table("api", BAD, run_case)
