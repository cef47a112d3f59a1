"""Comparing convkit.applications models with Keras's (on its PyTorch backend): the same layers, weights and
predictions once Keras's weights are copied in."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import functools  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import convkit  # noqa: E402


@functools.lru_cache(maxsize=None)
def reads_keras_weight_files() -> bool:
    """Whether ``model.load_weights`` reads a Keras 3 ``.weights.h5`` file (an optional capability)."""
    keras.backend.clear_session()
    k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    c = convkit.Sequential([convkit.layers.Input((3,)), convkit.layers.Dense(2, name="d")])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.weights.h5")
        k.save_weights(path)
        try:
            c.load_weights(path)
        except Exception:  # noqa: BLE001 - any failure means the format is not read
            return False
    return all(np.array_equal(a, b) for a, b in zip(c.get_weights(), k.get_weights()))


needs_keras_weight_files = pytest.mark.skipif(not reads_keras_weight_files(),
                                              reason="model.load_weights does not read Keras's HDF5 weight files")


def build_pair(keras_fn, convkit_fn, **kwargs):
    """The same model from Keras and from convkit (random weights, names counted from a fresh session),
    with Keras's weights copied into convkit's."""
    keras.backend.clear_session()
    convkit.backend.clear_session(free_memory=False)
    k = keras_fn(weights=None, **kwargs)
    c = convkit_fn(weights=None, **kwargs)
    c.set_weights(k.get_weights())
    return k, c


def assert_same_structure(k, c):
    """Layer names, types and order, weight shapes and order, and parameter counts equal Keras's."""
    assert [l.name for l in c.layers] == [l.name for l in k.layers]
    assert [type(l).__name__ for l in c.layers] == [type(l).__name__ for l in k.layers]
    assert [w.shape for w in c.get_weights()] == [tuple(w.shape) for w in k.get_weights()]
    assert c.count_params() == k.count_params()
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(c) == trainable(k)
    assert tuple(c.output_shape) == tuple(k.output_shape)


def images(shape, batch=2, seed=0):
    """Random images with values in [0, 255)."""
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + tuple(shape)).astype(np.float32)


def assert_same_predictions(k, c, x, atol=1e-4):
    """Equal outputs within ``atol`` and, for class probabilities, the same top-5 classes."""
    ours, theirs = c.predict(x, verbose=0), keras.ops.convert_to_numpy(k.predict(x, verbose=0))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)
    if ours.ndim == 2 and ours.shape[1] >= 5:
        top = lambda p: np.argsort(-p, axis=1, kind="stable")[:, :5]  # noqa: E731
        np.testing.assert_array_equal(top(ours), top(theirs))
