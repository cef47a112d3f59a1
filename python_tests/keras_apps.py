"""Comparing convkit.applications models with Keras's (on its PyTorch backend): the same layers, weights and
predictions once Keras's weights are copied in."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import contextlib  # noqa: E402
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
    with Keras's weights (seeded, so that every run tests the same numbers) copied into convkit's."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    convkit.backend.clear_session(free_memory=False)
    k = keras_fn(weights=None, **kwargs)
    c = convkit_fn(weights=None, **kwargs)
    k.set_weights(_with_statistics(k))
    c.set_weights(k.get_weights())
    return k, c


def _with_statistics(model, seed=0):
    """The model's weights with its batch normalizations' scales, offsets, means and variances made random
    (they start as ones and zeros, which would hide a misuse of them)."""
    rng = np.random.default_rng(seed)
    out = []
    for v, w in zip(model.weights, model.get_weights()):
        kind = v.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            w = rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
        elif kind in ("beta", "moving_mean"):
            w = rng.normal(0, 0.1, w.shape).astype(w.dtype)
        out.append(w)
    return out


def assert_same_structure(k, c):
    """Layer names, types and order, weight shapes and order, and parameter counts equal Keras's."""
    assert [l.name for l in c.layers] == [l.name for l in k.layers]
    assert [type(l).__name__ for l in c.layers] == [type(l).__name__ for l in k.layers]
    assert [w.shape for w in c.get_weights()] == [tuple(w.shape) for w in k.get_weights()]
    assert c.count_params() == k.count_params()
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(c) == trainable(k)
    assert tuple(c.output_shape) == tuple(k.output_shape)


def assert_same_model(k, c, x, params=None):
    """Keras's structure (and ``params`` parameters, when given, the count the model is known by) and its
    predictions for ``x``."""
    assert_same_structure(k, c)
    if params is not None:
        assert c.count_params() == params
    assert_same_predictions(k, c, x)


def images(shape, batch=2, seed=0):
    """Random images with values in [0, 255)."""
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + tuple(shape)).astype(np.float32)


def assert_same_predictions(k, c, x, rtol=1e-4):
    """Equal outputs within ``rtol`` of their scale (their largest magnitude) and, for class scores, the same top-5
    classes. Class probabilities are compared as their logarithms centred per image, which are the logits up to a
    constant: the nearly uniform probabilities of random weights (about 1/1000 each) would agree within any
    absolute tolerance whatever the layers below compute, their logits do not."""
    ours, theirs = c.predict(x, verbose=0), keras.ops.convert_to_numpy(k.predict(x, verbose=0))
    assert ours.shape == theirs.shape
    if _are_probabilities(theirs):
        ours, theirs = _centred_log(ours), _centred_log(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * float(np.abs(theirs).max()))
    if ours.ndim == 2 and ours.shape[1] >= 5:
        top = lambda p: np.argsort(-p, axis=1, kind="stable")[:, :5]  # noqa: E731
        np.testing.assert_array_equal(top(ours), top(theirs))


def _are_probabilities(y):
    return y.ndim == 2 and y.shape[1] > 1 and y.min() >= 0 and np.allclose(y.sum(axis=1), 1, atol=1e-3)


def _centred_log(p):
    log = np.log(np.maximum(p.astype(np.float64), 1e-30))
    return log - log.mean(axis=1, keepdims=True)


@contextlib.contextmanager
def wrong_copy(model, layer, factor=1.01):
    """``model`` with one weight array of its layer ``layer`` scaled by ``factor`` (a batch normalization's moving
    variance, another layer's kernel), as a faulty port would have it; restored on leaving."""
    target = model.get_layer(layer)
    saved = target.get_weights()
    index = len(saved) - 1 if isinstance(target, convkit.layers.BatchNormalization) else 0
    target.set_weights([w * np.float32(factor) if i == index else w for i, w in enumerate(saved)])
    try:
        yield model
    finally:
        target.set_weights(saved)


def assert_comparison_catches(k, c, x, layer, factor=1.01):
    """``assert_same_predictions(k, c, x)`` fails once ``c``'s layer ``layer`` is wrong by ``factor``
    (``wrong_copy``): proof that the comparison sees what that layer computes."""
    with wrong_copy(c, layer, factor), pytest.raises(AssertionError):
        assert_same_predictions(k, c, x)


def saved_weight_files(k, folder):
    """Keras model ``k``'s weights saved by Keras in both formats convkit reads: Keras 3's ``.weights.h5`` and
    the legacy HDF5 layout of Keras 2 (that of the official application files)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    new, legacy = os.path.join(folder, "model.weights.h5"), os.path.join(folder, "legacy.h5")
    k.save_weights(new)
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, k)
    return [new, legacy]


def assert_loads_weights_keras_saved(k, convkit_fn, folder):
    """``convkit_fn(weights=path)`` holds Keras model ``k``'s weights for both files ``saved_weight_files``
    writes."""
    for path in saved_weight_files(k, folder):
        ours = convkit_fn(weights=path)
        for a, b in zip(ours.get_weights(), k.get_weights()):
            np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))


def summary_lines(model):
    """The lines of ``model.summary()`` (set COLUMNS for a width both libraries share)."""
    out = []
    model.summary(print_fn=lambda s, **_: out.append(s))
    return out[0].splitlines()
