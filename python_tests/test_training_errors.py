"""Bad arguments to the optimizers, losses, training callbacks, backend settings and cloning raise a clear
exception naming the problem; the table in docs/ERRORS.md is made from these cases."""

import numpy as np
import pytest

import convkit
from convkit import callbacks, losses, optimizers
from convkit import layers as L
from convkit.models import Sequential, clone_model
from helpers import error_table_tests, write_error_table

pytestmark = pytest.mark.filterwarnings("ignore:SGD. `decay` is deprecated:DeprecationWarning")


def model():
    """A small compiled classifier of 4 features into 3 classes."""
    m = Sequential([L.Input((4,)), L.Dense(3, activation="softmax", name="probs")])
    m.compile("rmsprop", "sparse_categorical_crossentropy")
    return m


def fit_with(loss):
    """``model()`` compiled with ``loss`` and fitted for an epoch on four samples."""
    m = model()
    m.compile("sgd", loss)
    return m.fit(np.zeros((4, 4), np.float32), np.array([0, 1, 2, 1]), verbose=0)


BAD = [
    # (call, as evaluated with np, convkit, optimizers, losses, callbacks, L, model, fit_with and clone_model in scope;
    # exception; message pattern)
    ('optimizers.RMSprop(rho=1.5)', ValueError, r"RMSprop: rho must be in \[0, 1\), got 1.5"),
    ('optimizers.RMSprop(momentum=-0.1)', ValueError, r"RMSprop: momentum must be in \[0, 1\), got -0.1"),
    ('optimizers.Adagrad(epsilon=0)', ValueError, r"Adagrad: epsilon must be positive, got 0"),
    ('optimizers.Adagrad(initial_accumulator_value=-1)', ValueError, r"initial_accumulator_value must be >= 0"),
    ('optimizers.Adadelta(rho=1)', ValueError, r"Adadelta: rho must be in \[0, 1\), got 1"),
    ('optimizers.SGD(learning_rate=0.1, decay=-1)', ValueError, r"SGD: decay must be >= 0, got -1"),
    ('model().compile(loss=lambda y, p: ((y - p) ** 2).mean())', TypeError, r"a custom loss subclasses Loss"),
    ('losses.CategoricalCrossentropy(label_smoothing=1.5)', ValueError, r"label_smoothing must be in \[0, 1\]"),
    ('losses.MeanSquaredError(reduction="average")', ValueError, r"reduction must be one of"),
    ('losses.Huber(delta=0)', ValueError, r"Huber: delta must be positive, got 0"),
    ('losses.CategoricalCrossentropy(axis=1)', ValueError, r"only axis=-1"),
    ('fit_with(losses.SparseCategoricalCrossentropy(reduction=None))', ValueError, r"training needs a reduced loss"),
    ('callbacks.ReduceLROnPlateau(factor=1.5)', ValueError, r"factor must be < 1.0, got 1.5"),
    ('callbacks.BackupAndRestore("")', ValueError, r"backup_dir must name a folder"),
    ('callbacks.BackupAndRestore("backup", save_freq="batch")', ValueError,
     r"save_freq must be 'epoch' or a positive int, got 'batch'"),
    ('convkit.backend.set_floatx("float64")', ValueError, r"only 'float32', got 'float64'"),
    ('convkit.backend.set_image_data_format("channels_first")', ValueError, r"only 'channels_last'"),
    ('convkit.backend.set_epsilon(0)', ValueError, r"epsilon must be in \(0, 0.5\), got 0"),
    ('convkit.random.set_seed("42")', TypeError, r"seed must be an int, got str"),
    ('clone_model(L.Dense(3))', TypeError, r"clone_model expects a convkit Model, got Dense"),
    ('clone_model(model(), clone_function=lambda layer: None)', TypeError,
     r"clone_function must return a layer, got NoneType"),
    ('convkit.saving.register_keras_serializable(package="a>b")', ValueError, r"package must be a string without '>'"),
]


def run_case(call: str):
    return eval(call, {"np": np, "convkit": convkit, "optimizers": optimizers, "losses": losses,
                       "callbacks": callbacks, "L": L, "model": model, "fit_with": fit_with,
                       "clone_model": clone_model})


test_errors_doc_lists_every_case_with_its_message, test_bad_input_is_refused_clearly = \
    error_table_tests("training", BAD, run_case)


if __name__ == "__main__":  # rewrite the table in docs/ERRORS.md
    write_error_table("training", BAD, run_case)
