"""Losses as functions and as objects give Keras's values (Keras itself on its PyTorch backend) on random
inputs, and the objects' training gradients are the gradients of those values (PyTorch's autograd
through Keras's own loss); both forms, and their names, train a model as ``loss=``."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import convkit  # noqa: E402
from convkit import layers as L  # noqa: E402
from convkit import losses  # noqa: E402

N, K = 16, 5


def _data(kind, rng):
    """(y_true, y_pred) as a notebook would hand them to the loss."""
    logits = rng.standard_normal((N, K)).astype(np.float32) * 2
    if kind == "sparse":
        return rng.integers(0, K, N), logits
    if kind == "onehot":
        return np.eye(K, dtype=np.float32)[rng.integers(0, K, N)], logits
    if kind == "binary":
        return rng.integers(0, 2, (N, K)).astype(np.float32), logits
    if kind == "dist":
        t = rng.random((N, K)).astype(np.float32)
        return t / t.sum(-1, keepdims=True), logits
    return rng.standard_normal((N, K)).astype(np.float32), logits  # regression


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _sigmoid(z):
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def _pred(kind, logits, from_logits):
    if from_logits or kind == "regression":
        return logits
    if kind == "binary":
        return _sigmoid(logits)
    # probabilities that do not sum to 1 exactly, as Keras normalises them, and a few clipped ones
    p = _softmax(logits) * 1.1
    p[0, 0] = 0.0
    return p


# (convkit function, keras function, data kind, keyword arguments)
FUNCTIONS = [
    ("categorical_crossentropy", "onehot", {}), ("categorical_crossentropy", "onehot", {"from_logits": True}),
    ("categorical_crossentropy", "onehot", {"label_smoothing": 0.2}),
    ("categorical_crossentropy", "onehot", {"from_logits": True, "label_smoothing": 0.1}),
    ("sparse_categorical_crossentropy", "sparse", {}),
    ("sparse_categorical_crossentropy", "sparse", {"from_logits": True}),
    ("binary_crossentropy", "binary", {}), ("binary_crossentropy", "binary", {"from_logits": True}),
    ("binary_crossentropy", "binary", {"label_smoothing": 0.3}),
    ("mean_squared_error", "regression", {}), ("mean_absolute_error", "regression", {}),
    ("huber", "regression", {}), ("huber", "regression", {"delta": 0.5}),
    ("kl_divergence", "dist", {}),
]


def _torch(a):
    return torch.tensor(np.asarray(a))


@pytest.mark.parametrize("name,kind,kwargs", FUNCTIONS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FUNCTIONS)])
def test_functions_give_keras_per_sample_values(name, kind, kwargs, rng):
    y, logits = _data(kind, rng)
    p = _pred(kind, logits, kwargs.get("from_logits", False))
    ours = getattr(losses, name)(y, p, **kwargs)
    theirs = getattr(keras.losses, name)(_torch(y), _torch(p), **kwargs).numpy()
    assert ours.shape == theirs.shape == (N,)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)


def test_short_names_are_the_same_functions():
    assert losses.mse is losses.mean_squared_error and losses.mae is losses.mean_absolute_error
    assert losses.kld is losses.kl_divergence
    y, p = np.zeros((2, 3)), np.ones((2, 3))
    np.testing.assert_array_equal(losses.mse(y, p), [1, 1])


# (class, data kind, constructor arguments)
OBJECTS = [
    ("CategoricalCrossentropy", "onehot", {}), ("CategoricalCrossentropy", "onehot", {"from_logits": True}),
    ("CategoricalCrossentropy", "onehot", {"label_smoothing": 0.1}),
    ("SparseCategoricalCrossentropy", "sparse", {}),
    ("SparseCategoricalCrossentropy", "sparse", {"from_logits": True, "reduction": "sum"}),
    ("SparseCategoricalCrossentropy", "sparse", {"from_logits": True, "ignore_class": 2}),
    ("BinaryCrossentropy", "binary", {}), ("BinaryCrossentropy", "binary", {"from_logits": True}),
    ("BinaryCrossentropy", "binary", {"label_smoothing": 0.2, "reduction": "sum"}),
    ("MeanSquaredError", "regression", {}), ("MeanAbsoluteError", "regression", {}),
    ("Huber", "regression", {"delta": 0.7}), ("KLDivergence", "dist", {}),
]


@pytest.mark.parametrize("name,kind,kwargs", OBJECTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(OBJECTS)])
def test_objects_reduce_and_differentiate_as_keras(name, kind, kwargs, rng):
    y, logits = _data(kind, rng)
    p = _pred(kind, logits, kwargs.get("from_logits", False))
    ours, theirs = getattr(losses, name)(**kwargs), getattr(keras.losses, name)(**kwargs)
    tp = _torch(p).requires_grad_(True)
    expected = theirs(_torch(y), tp)
    expected.backward()
    expected = float(expected.detach())
    assert ours(y, p) == pytest.approx(expected, rel=2e-5)
    value, grad = ours.value_and_grad(ours.prepare_labels(np.asarray(y), p.shape), p)
    assert float(value) == pytest.approx(expected, rel=2e-5)
    np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-4, atol=1e-7)
    none = getattr(losses, name)(**{**kwargs, "reduction": None})(y, p)
    assert none.shape == (N,)


@pytest.mark.parametrize("name,kind", [("SparseCategoricalCrossentropy", "sparse"), ("MeanSquaredError", "regression")])
def test_sample_weights_scale_each_sample_as_in_keras(name, kind, rng):
    y, logits = _data(kind, rng)
    p = _pred(kind, logits, False)
    w = rng.random(N).astype(np.float32)
    for reduction in ("sum_over_batch_size", "sum"):
        expected = getattr(keras.losses, name)(reduction=reduction)(_torch(y), _torch(p), sample_weight=_torch(w))
        assert getattr(losses, name)(reduction=reduction)(y, p, sample_weight=w) == pytest.approx(float(expected),
                                                                                                  rel=2e-5)


@pytest.mark.parametrize("name,activation,kind", [
    ("CategoricalCrossentropy", "softmax", "onehot"), ("SparseCategoricalCrossentropy", "softmax", "sparse"),
    ("BinaryCrossentropy", "sigmoid", "binary")])
def test_fused_gradient_with_respect_to_logits_matches_keras(name, activation, kind, rng):
    """Training takes d loss / d logits when the last layer's activation matches the loss."""
    y, logits = _data(kind, rng)
    loss = getattr(losses, name)(label_smoothing=0.1) if kind != "sparse" else getattr(losses, name)()
    tl = _torch(logits).requires_grad_(True)
    act = torch.softmax(tl, -1) if activation == "softmax" else torch.sigmoid(tl)
    expected = getattr(keras.losses, name)(**loss.get_config())(_torch(y), act)
    expected.backward()
    p = _softmax(logits) if activation == "softmax" else _sigmoid(logits)
    value, grad = loss.fused_grad(loss.prepare_labels(np.asarray(y), p.shape), p)
    assert float(value) == pytest.approx(float(expected.detach()), rel=2e-5)
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-4, atol=1e-7)


def _classifier():
    convkit.set_random_seed(0)
    return convkit.Sequential([L.Input((6,)), L.Dense(8, activation="relu"), L.Dense(K, activation="softmax")])


@pytest.mark.parametrize("loss", [losses.categorical_crossentropy, losses.CategoricalCrossentropy(label_smoothing=0.1),
                                  "categorical_crossentropy", losses.mse, "mae", losses.Huber(), "kld"])
def test_every_form_trains_as_compile_loss(loss, rng):
    x, y = rng.standard_normal((64, 6)).astype(np.float32), np.eye(K, dtype=np.float32)[rng.integers(0, K, 64)]
    model = _classifier()
    model.compile("adam", loss=loss)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    expected = loss if isinstance(loss, losses.Loss) else losses.get(loss)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expected(y, model.predict(x, verbose=0)), rel=1e-5)


def test_unknown_loss_functions_are_refused_clearly():
    model = _classifier()
    with pytest.raises(TypeError, match="a custom loss subclasses Loss"):
        model.compile("adam", loss=lambda y, p: ((y - p) ** 2).mean())
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        losses.MeanSquaredError(reduction="average")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        losses.categorical_crossentropy([[0, 1]], [[0.5, 0.5]], label_smoothing=2)
