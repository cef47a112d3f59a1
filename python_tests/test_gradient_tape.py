"""convkit.GradientTape: its API as TensorFlow's, gradients of composed ops and layers against PyTorch
float64, the gradients fit applies, and a custom training loop that trains LeNet-5 on real MNIST
exactly as fit does."""

import gc
import weakref

import numpy as np
import pytest
import torch

import convkit
import oracle
from convkit import layers as L
from convkit import ops
from convkit.autodiff import Variable
from helpers import real_data


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_gradient_of_composed_math_ops(rng):
    x, w = rand(rng, 5, 3), Variable(rand(rng, 3, 4), "w")
    with convkit.GradientTape() as tape:
        loss = ops.mean(ops.square(ops.matmul(x, w)))
    g = tape.gradient(loss, w)
    np.testing.assert_allclose(g, 2 * x.T @ (x @ w.value) / 20, rtol=1e-5)


def test_watch_persistent_and_one_gradient_call_by_default(rng):
    x = rand(rng, 4)
    with convkit.GradientTape() as tape:
        y = ops.sum(ops.exp(x))
    assert tape.gradient(y, x) is None  # arrays are not watched unless asked
    with pytest.raises(RuntimeError, match="non-persistent"):
        tape.gradient(y, x)
    with convkit.GradientTape(persistent=True) as tape:
        tape.watch(x)
        e = ops.exp(x)
        y = ops.sum(ops.multiply(e, e))
    np.testing.assert_allclose(tape.gradient(y, x), 2 * np.exp(2 * x), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, e), 2 * e, rtol=1e-6)  # an intermediate result as a source
    np.testing.assert_allclose(tape.gradient(y, [x])[0], 2 * np.exp(2 * x), rtol=1e-6)


def test_unconnected_sources_nested_tapes_and_stop_recording(rng):
    w, v = Variable(rand(rng, 3), "w"), Variable(rand(rng, 3), "v")
    with convkit.GradientTape(persistent=True) as outer:
        with convkit.GradientTape() as inner:
            y = ops.sum(ops.multiply(w, 3.0))
            with inner.stop_recording():
                z = ops.sum(ops.square(w))
        total = ops.add(y, z)
    assert inner.gradient(y, [w, v]) [1] is None
    assert inner.watched_variables() == []  # released after its one call
    np.testing.assert_allclose(outer.gradient(total, w), 3 + 2 * w.value, rtol=1e-6)
    np.testing.assert_array_equal(outer.gradient(total, v, unconnected_gradients="zero"), np.zeros(3, np.float32))
    with convkit.GradientTape(watch_accessed_variables=False) as tape:
        y = ops.sum(ops.multiply(w, v))
    assert tape.gradient(y, w) is None
    with pytest.raises(TypeError, match="watch"):
        tape.watch("w")


def test_a_variable_used_twice_sums_its_gradients(rng):
    x, w = rand(rng, 2, 3), Variable(rand(rng, 3, 3), "w")
    with convkit.GradientTape() as tape:
        loss = ops.sum(ops.matmul(ops.matmul(x, w), w))
    xt, wt = torch.tensor(x, dtype=torch.float64), torch.tensor(w.value, dtype=torch.float64, requires_grad=True)
    (xt @ wt @ wt).sum().backward()
    assert oracle.rel_err(tape.gradient(loss, w), wt.grad.numpy()) < 1e-5


def test_custom_gradient(rng):
    @convkit.custom_gradient
    def clip_grad(x):
        return x * 1, lambda dy: np.clip(dy, -1, 1)

    x = rand(rng, 6) * 3
    with convkit.GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(ops.multiply(clip_grad(x), x))  # d/dx = clip(x) + x
    np.testing.assert_allclose(tape.gradient(y, x), np.clip(x, -1, 1) + x, rtol=1e-6)


def test_the_tape_keeps_what_rules_need_and_no_more(rng):
    """Average pooling keeps its input's shape, a convolution without ReLU its inputs, not its output:
    the convolution's output is freed once the model drops it, while the tape still records."""
    x, k = rand(rng, 2, 8, 8, 3), Variable(rand(rng, 3, 3, 3, 4), "k")
    with convkit.GradientTape() as tape:
        h = ops.conv2d(x, k, padding="same")
        alive = weakref.ref(h)
        p = ops.avg_pool2d(h, 2)
        del h
        gc.collect()
        assert alive() is None
        loss = ops.sum(p)
    assert tape.gradient(loss, k).shape == k.shape


class SqueezeExcite(L.Layer):
    """A composite layer written only with ops and sub-layers: no backward of its own."""

    def __init__(self, ratio=2, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio

    def build(self, input_shape):
        c = input_shape[-1]
        self.squeeze = L.Dense(c // self.ratio, activation="relu")
        self.excite = L.Dense(c, activation="sigmoid")

    def call(self, x, training=False):
        s = self.excite(self.squeeze(ops.mean(x, axis=(1, 2))))
        return ops.multiply(x, ops.reshape(s, (s.shape[0], 1, 1, s.shape[1])))


def test_composite_layer_gets_its_gradients_from_the_ops(rng):
    inp = L.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = SqueezeExcite()(h)
    out = L.Dense(3, activation="softmax")(L.Flatten()(h))
    model = convkit.Model(inp, out)
    x, y = rand(rng, 5, 6, 6, 2), np.array([0, 2, 1, 1, 0])
    loss_fn = convkit.losses.SparseCategoricalCrossentropy()
    with convkit.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)

    w = [torch.tensor(v.numpy().astype(np.float64), requires_grad=True) for v in model.trainable_variables]
    ck, cb, sk, sb, ek, eb, dk, db = w
    xt = torch.tensor(x, dtype=torch.float64)
    h = torch.relu(torch.nn.functional.conv2d(xt.permute(0, 3, 1, 2), ck.permute(3, 2, 0, 1), cb, padding=1))
    h = h.permute(0, 2, 3, 1)
    s = torch.sigmoid(torch.relu(h.mean((1, 2)) @ sk + sb) @ ek + eb)
    p = torch.softmax((h * s[:, None, None, :]).reshape(5, -1) @ dk + db, -1)
    ref = -torch.log(p[torch.arange(5), torch.tensor(y)]).mean()
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-5)
    for g, t, v in zip(grads, w, model.trainable_variables):
        assert oracle.rel_err(g, t.grad.numpy()) < 1e-4, v.name


def test_softmax_meeting_its_crossentropy_is_fused_on_the_tape():
    model = convkit.Sequential([L.Input(shape=(2,)), L.Dense(2, activation="softmax")])
    model.layers[0].kernel.assign(np.array([[1, -1], [-1, 1]], np.float32))
    x = np.array([[100.0, -100.0]], np.float32)
    with convkit.GradientTape() as tape:
        loss = convkit.losses.SparseCategoricalCrossentropy()(np.array([1]), model(x))
    # p = softmax([200, -200]) = [1, 0]: the gradient w.r.t. the logits is exactly p - y = [1, -1]
    np.testing.assert_allclose(tape.gradient(loss, model.layers[0].bias), [1, -1], atol=1e-6)


def _small_model(seed):
    convkit.set_random_seed(seed)
    reg = convkit.regularizers.L2(1e-3)
    return convkit.Sequential([
        L.Input((8, 8, 2)),
        L.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer=reg),
        L.BatchNormalization(),
        L.MaxPooling2D(2),
        L.Conv2D(3, 2, activation="tanh", activity_regularizer=convkit.regularizers.L1(1e-3)),
        L.GlobalAveragePooling2D(),
        L.Dense(5, activation="softmax", bias_regularizer=reg),
    ])


def test_gradients_equal_those_fit_applies_in_one_step(rng):
    x, y = rand(rng, 16, 8, 8, 2), rng.integers(0, 5, 16)
    ours = _small_model(7)
    loss_fn = convkit.losses.SparseCategoricalCrossentropy()
    with convkit.GradientTape() as tape:
        loss = loss_fn(y, ours(x, training=True))
        loss = ops.add(loss, ops.sum(ops.concatenate([ops.reshape(p, (1,)) for p in ours.losses])))
    grads = tape.gradient(loss, ours.trainable_variables)

    fitted = _small_model(7)
    fitted.compile(convkit.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    applied = []
    real_apply = fitted.optimizer.apply
    fitted.optimizer.apply = lambda vs: applied.append([v.grad.copy() for v in vs]) or real_apply(vs)
    hist = fitted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert len(applied) == 1 and len(grads) == len(applied[0]) == 8
    for g, a, v in zip(grads, applied[0], fitted.trainable_variables):
        np.testing.assert_allclose(g, a, rtol=1e-6, atol=1e-9, err_msg=v.name)
    assert hist.history["loss"][0] == pytest.approx(float(loss), rel=1e-6)


def test_custom_loop_trains_lenet5_on_mnist_exactly_as_fit():
    """Same seed, recipe and batch order: the weights after every step of one epoch are fit's, so the
    test accuracy is too."""
    from convkit.datasets import mnist

    (x_train, y_train), (x_test, y_test) = real_data(mnist.load_data, "MNIST")
    n, batch = 4096, 128
    x = (x_train[:n, ..., None] / 255.0).astype(np.float32)
    y = y_train[:n].astype(np.int64)
    xt, yt = (x_test[:2000, ..., None] / 255.0).astype(np.float32), y_test[:2000]

    convkit.set_random_seed(0)
    fitted = convkit.zoo.lenet5()
    fitted.compile(convkit.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                   device="cpu")
    fitted.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)

    convkit.set_random_seed(0)
    model = convkit.zoo.lenet5()
    optimizer = convkit.optimizers.Adam(1e-3)
    loss_fn = convkit.losses.SparseCategoricalCrossentropy()
    for _ in range(2):
        for s in range(0, n, batch):
            with convkit.GradientTape() as tape:
                loss = loss_fn(y[s:s + batch], model(x[s:s + batch], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

    for a, b in zip(model.get_weights(), fitted.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    ours = model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    theirs = fitted.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    assert ours == theirs > 0.85
