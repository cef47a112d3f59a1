"""Every zoo model: the notes' parameter counts, and one training step on tiny random data."""

import numpy as np
import pytest

import convkit
from convkit import zoo


@pytest.mark.parametrize("name,total,non_trainable", [
    ("fashion1", 3_239_114, 0), ("fashion2", 228_554, 0), ("fashion3", 2_589_834, 1_728),
    ("cifar10_bn", 652_874, 448), ("lenet5", 61_706, 0),
])
def test_parameter_counts_match_the_notes(name, total, non_trainable):
    out = []
    zoo.get(name).summary(print_fn=out.append)
    lines = [l.strip() for l in out[0].splitlines()]
    count = lambda key: int(next(l for l in lines if l.startswith(key)).split(":")[1].split("(")[0].replace(",", ""))
    assert count("Total params") == total
    assert count("Non-trainable params") == non_trainable
    assert count("Trainable params") == total - non_trainable


@pytest.mark.parametrize("name", zoo.names())
def test_every_model_builds_and_trains_one_step(name, rng):
    convkit.set_random_seed(0)
    model = zoo.build(name)
    r = zoo.recipe(name)
    shape = (28, 28, 1) if r.dataset in ("mnist", "fashion_mnist") else (32, 32, 3)
    assert model.input_shape == (None,) + shape
    x, y = rng.random((4,) + shape, dtype=np.float32), rng.integers(0, 10, 4)
    before = [w.copy() for w in model.get_weights()]
    h = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.predict(x, verbose=0).shape == (4, 10)
    assert model.optimizer.learning_rate == r.learning_rate


def test_recipes_follow_the_notes():
    r = zoo.recipe("lenet5_subclassed")
    assert (r.batch_size, r.validation_split, r.epochs) == (32, 0.2, 30)
    es = r.make_callbacks()[0]
    assert isinstance(es, convkit.callbacks.EarlyStopping) and es.patience == 3 and es.monitor == "val_loss"
    assert zoo.recipe("cifar10_bn").learning_rate == 1e-4 and zoo.recipe("cifar10_bn").preprocess == "standardize"
    assert zoo.recipe("mnist_cnn2").batch_size == 500
    assert zoo.recipe("cifar10_deep").augmentation["horizontal_flip"]
    assert zoo.canonical("lenet") == "lenet5_aug"
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        zoo.get("vgg")


def test_cosine_schedule_anneals_over_the_run_and_resumes_on_the_same_curve():
    r = zoo.recipe("fashion_cnn")
    assert r.lr_schedule == "cosine" and r.dataset == "fashion_mnist"
    (sched,) = r.make_callbacks(epochs=10, learning_rate=0.002)
    lrs = [sched.schedule(e, 123.0) for e in range(10)]
    np.testing.assert_allclose(lrs[0], 0.002)
    np.testing.assert_allclose(lrs[5], 0.001)
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:]))
    (again,) = r.make_callbacks(epochs=10, learning_rate=0.002)  # as a resumed run builds it
    assert [again.schedule(e, 0.0) for e in range(10)] == lrs
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        zoo.Recipe("mnist", 1, lr_schedule="step").make_callbacks()


def test_resnet_small_has_skip_connections_and_global_pooling():
    types = {type(l).__name__ for l in zoo.get("resnet_small").layers}
    assert {"Add", "GlobalAveragePooling2D", "BatchNormalization"} <= types


def test_preprocess_scales_and_standardises(rng):
    x = rng.integers(0, 256, (10, 4, 4, 3)).astype(np.uint8)
    a, _ = zoo.preprocess(zoo.recipe("cifar10_cnn"), x, x)
    np.testing.assert_allclose(a, x / 255.0, rtol=1e-6)
    b, _ = zoo.preprocess(zoo.recipe("cifar10_bn"), x, x)
    np.testing.assert_allclose(b.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(b.std(axis=(0, 1, 2)), 1, atol=1e-4)
    m, _ = zoo.preprocess(zoo.recipe("lenet5"), x[..., 0], x[..., 0])
    assert m.shape == (10, 4, 4, 1) and m.dtype == np.float32


def test_per_step_cosine_sets_every_step_and_resumes_on_the_same_curve(rng):
    """'cosine-steps' gives each training step Keras's CosineDecay over all the run's steps, also across a
    run resumed with initial_epoch, and logs each epoch's last rate."""
    r = zoo.recipe("mnist_speedrun")
    assert r.lr_schedule == "cosine-steps" and r.epochs == 1
    x, y = rng.random((12, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 12)
    seen = []
    spy = convkit.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs=None: seen.append(model.optimizer.learning_rate))
    model = zoo.build("mnist_speedrun")
    fresh = lambda: r.make_callbacks(epochs=3, learning_rate=0.01) + [spy]  # noqa: E731
    h = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=fresh())
    model.fit(x, y, batch_size=4, initial_epoch=2, epochs=3, verbose=0, callbacks=fresh())
    want = [convkit.optimizers.CosineDecay(0.01, 9)(k) for k in range(9)]
    np.testing.assert_allclose(seen, want, rtol=1e-12)
    assert want[0] == 0.01 and all(a > b > 0 for a, b in zip(want, want[1:]))
    np.testing.assert_allclose(h.history["learning_rate"], [want[2], want[5]], rtol=1e-12)
