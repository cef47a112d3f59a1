"""Whole models: gradient checks by central differences, Sequential / functional / subclassed APIs,
summary figures, train vs inference behaviour, and clear errors for bad input."""

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as F

import convkit
from convkit import layers as L
from convkit.models import Model, Sequential
import oracle
from helpers import to_device


def _directional_check(model, x, y, training, rng, n_dirs=4, eps=3e-3, tol=1e-2):
    """<grad, d> from backward against (L(w + eps d) - L(w - eps d)) / 2 eps, in float32.

    eps is large enough that float32 rounding of the loss (about 1e-7 relative) stays far below
    eps * |<grad, d>|, small enough that the second-order error is negligible; 1% still catches
    any wrong term.
    """
    y = model.loss.prepare_labels(y, model.output_shape)
    loss, _ = model.compute_gradients(x, y, training=training)
    vs = model.trainable_weights
    grads = [v.grad.astype(np.float64) for v in vs]
    base = [v.value.copy() for v in vs]

    def loss_at(step, d):
        for v, b, di in zip(vs, base, d):
            v.value = (b + step * di).astype(np.float32)
        with_training = model(x, training=training)
        value = model.loss.value_and_grad(y, with_training)[0]
        return float(value) + model._regularization(vs)

    for _ in range(n_dirs):
        d = [rng.standard_normal(b.shape) for b in base]
        analytic = sum(float((g * di).sum()) for g, di in zip(grads, d))
        numeric = (loss_at(eps, d) - loss_at(-eps, d)) / (2 * eps)
        assert abs(analytic - numeric) <= tol * max(abs(numeric), 1e-3), (analytic, numeric)
    for v, b in zip(vs, base):
        v.value = b


def _smooth_cnn(dropout=0.0):
    """Every parameterised layer, with smooth activations (tanh, sigmoid) and average pooling so that
    central differences see no kinks."""
    return Sequential([
        L.Input(shape=(8, 8, 2)),
        L.Conv2D(4, 3, padding="same", activation="tanh", kernel_regularizer=convkit.regularizers.L2(1e-3)),
        L.BatchNormalization(),
        L.AveragePooling2D(2),
        L.Conv2D(3, 2, activation="sigmoid", bias_regularizer=convkit.regularizers.L1(1e-3)),
        L.Flatten(),
        L.Dropout(dropout),
        L.Dense(6, activation="tanh"),
        L.Dense(5, activation="softmax"),
    ])


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_gradient_check_conv_bn_pool_dense_by_central_differences(rng, loss):
    convkit.set_random_seed(1)
    model = _smooth_cnn()
    model.compile("sgd", loss)
    x = rng.standard_normal((6, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    if loss.startswith("categorical"):
        y = convkit.to_categorical(y, 5)
    _directional_check(model, x, y, training=True, rng=rng)


def test_gradient_check_inference_mode_with_dropout_off(rng):
    convkit.set_random_seed(2)
    model = _smooth_cnn(dropout=0.5)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.standard_normal((5, 8, 8, 2)).astype(np.float32)
    _directional_check(model, x, rng.integers(0, 5, 5), training=False, rng=rng)


# ReLU and max pooling have kinks that central differences trip over (near-ties between window
# entries are common), so models with them are checked against PyTorch float64 autograd instead.

def _torch_layer(layer, x, w):
    """Our layer's forward in torch (NHWC tensors, float64); ``w`` maps our Variables to torch leaves."""
    name = type(layer).__name__
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": lambda t: torch.softmax(t, -1),
           "linear": lambda t: t}
    if name == "Conv2D":
        (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], layer.kernel_size[i], layer.strides[i], 1, layer.padding)
                              for i in (0, 1))
        z = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb)), w[layer.kernel].permute(3, 2, 0, 1),
                     w[layer.bias] if layer.use_bias else None, stride=layer.strides)
        return act[layer.activation.name](z.permute(0, 2, 3, 1))
    if name in ("MaxPooling2D", "AveragePooling2D"):
        assert layer.padding == "valid"
        f = F.max_pool2d if name == "MaxPooling2D" else F.avg_pool2d
        return f(x.permute(0, 3, 1, 2), layer.pool_size, layer.strides).permute(0, 2, 3, 1)
    if name == "Dense":
        return act[layer.activation.name](x @ w[layer.kernel] + w[layer.bias])
    if name == "Flatten":
        return x.reshape(x.shape[0], -1)
    if name == "BatchNormalization":
        c = x.shape[-1]
        return F.batch_norm(x.reshape(-1, c), None, None, w[layer.gamma], w[layer.beta], training=True,
                            eps=layer.epsilon).reshape(x.shape)
    if name == "GlobalAveragePooling2D":
        return x.mean(dim=(1, 2))
    if name == "Activation":
        return act[layer.activation.name](x)
    if name == "Add":
        return sum(x[1:], x[0])
    if name == "Concatenate":
        return torch.cat(x, dim=-1)
    if name == "Dropout":
        return x
    raise AssertionError(name)


def _compare_with_torch(model, forward, x, y):
    """Gradients of sparse cross-entropy: ours against torch autograd on the same weights."""
    model.compute_gradients(x, y)
    w = {v: torch.tensor(v.numpy().astype(np.float64), requires_grad=True) for v in model.trainable_weights}
    p = forward(torch.tensor(x.astype(np.float64)), w)
    loss = -torch.log(p[torch.arange(len(y)), torch.tensor(y)]).mean()
    loss.backward()
    for v, t in w.items():
        assert oracle.rel_err(v.grad, t.grad.numpy()) < 1e-4, v.name


def test_gradients_relu_maxpool_sequential_match_torch(rng):
    convkit.set_random_seed(3)
    model = Sequential([L.Input(shape=(8, 8, 2)), L.Conv2D(4, 3, padding="same", activation="relu"),
                        L.BatchNormalization(), L.MaxPooling2D(2), L.Conv2D(6, 3, activation="relu"), L.Flatten(),
                        L.Dense(8, activation="relu"), L.Dense(5, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")

    def forward(x, w):
        for layer in model.layers:
            x = _torch_layer(layer, x, w)
        return x

    _compare_with_torch(model, forward, rng.standard_normal((6, 8, 8, 2)).astype(np.float32), rng.integers(0, 5, 6))


def test_gradients_functional_residual_and_concat_match_torch(rng):
    convkit.set_random_seed(4)
    inp = L.Input(shape=(6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L.Conv2D(4, 1)(inp)
    s = L.Add()([a, b])
    c = L.Concatenate()([s, L.Conv2D(2, 3, padding="same", activation="relu")(s)])
    out = L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(c))
    model = Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")

    def forward(x, w):
        values = {id(inp): x}
        for node in model._graph[2][1:]:
            args = [values[id(t)] for t in node.inputs]
            values[id(node.output)] = _torch_layer(node.layer, args if node.multi else args[0], w)
        return values[id(out)]

    _compare_with_torch(model, forward, rng.standard_normal((7, 6, 6, 3)).astype(np.float32), rng.integers(0, 3, 7))


class TinyLeNet(Model):
    def __init__(self):
        super().__init__()
        self.c1 = L.Conv2D(3, 3, padding="same", activation="relu")
        self.pool = L.MaxPool2D(2)
        self.c2 = L.Conv2D(4, 3, padding="same", activation="relu")
        self.flat = L.Flatten()
        self.out = L.Dense(3, activation="softmax")

    def call(self, x):
        x = self.pool(self.c1(x))
        x = self.pool(self.c2(x))  # the same pooling layer, a second time
        return self.out(self.flat(x))


def test_gradients_subclassed_model_reusing_a_layer_match_torch(rng):
    convkit.set_random_seed(5)
    model = TinyLeNet()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = rng.standard_normal((4, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 4)
    model.predict(x, verbose=0)  # builds the layers

    def forward(t, w):
        t = _torch_layer(model.pool, _torch_layer(model.c1, t, w), w)
        t = _torch_layer(model.pool, _torch_layer(model.c2, t, w), w)
        return _torch_layer(model.out, _torch_layer(model.flat, t, w), w)

    _compare_with_torch(model, forward, x, y)
    h = model.fit(x, y, epochs=2, verbose=0)
    assert list(h.history) == ["loss", "accuracy"]


def test_sequential_add_list_and_functional_agree(rng):
    convkit.set_random_seed(5)
    a = Sequential()
    a.add(L.Conv2D(2, 3, input_shape=(5, 5, 1)))
    a.add(L.Flatten())
    a.add(L.Dense(3))
    b = Sequential([L.InputLayer(shape=(5, 5, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)])
    inp = L.Input(shape=(5, 5, 1))
    c = Model(inp, L.Dense(3)(L.Flatten()(L.Conv2D(2, 3)(inp))))
    b.set_weights(a.get_weights())
    c.set_weights(a.get_weights())
    x = rng.standard_normal((4, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0))
    np.testing.assert_allclose(a.predict(x, verbose=0), c.predict(x, verbose=0))
    assert a.output_shape == (None, 3)


def test_sequential_without_input_shape_builds_on_first_data(rng):
    model = Sequential([L.Conv2D(2, 3), L.Flatten(), L.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="not been built"):
        model.summary()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(rng.random((8, 5, 5, 1), dtype=np.float32), rng.integers(0, 3, 8), verbose=0)
    out = []
    model.summary(print_fn=out.append)
    assert "(None, 3, 3, 2)" in out[0]


def _summary_counts(model):
    out = []
    model.summary(print_fn=out.append)
    text = out[0]
    lines = [l.strip() for l in text.splitlines()]
    get = lambda key: int(next(l for l in lines if l.startswith(key)).split(":")[1].split("(")[0].replace(",", ""))
    return text, get("Total params"), get("Trainable params"), get("Non-trainable params")


def test_summary_of_the_notes_fashion_model_3_without_data():
    model = convkit.zoo.fashion3()
    text, total, trainable, non = _summary_counts(model)
    assert (total, trainable, non) == (2_589_834, 2_589_834 - 1_728, 1_728)
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert "(None, 12, 12, 64)" in text and "2,359,808" in text


def test_summary_of_subclassed_model_shows_a_reused_layer_once_with_its_last_output(rng):
    model = convkit.zoo.lenet5_subclassed()
    text, total, _, _ = _summary_counts(model)
    pool = [l for l in text.splitlines() if "(MaxPooling2D)" in l]
    assert len(pool) == 1 and "(None, 7, 7, 16)" in pool[0] and total == 107_786


def test_dropout_and_batchnorm_differ_between_fit_and_evaluate(rng):
    convkit.set_random_seed(6)
    model = Sequential([L.Input(shape=(10,)), L.Dense(20, activation="relu"), L.BatchNormalization(),
                        L.Dropout(0.5), L.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((32, 10)).astype(np.float32) * 2 + 1
    y = rng.integers(0, 3, 32)
    # inference is deterministic and matches evaluate; training mode is not
    p1, p2 = model.predict(x, verbose=0), model(x, training=False)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(model(x, training=True), p1)
    loss1 = model.evaluate(x, y, verbose=0)[0]
    assert model.evaluate(x, y, verbose=0)[0] == loss1
    bn = model.layers[1]
    mm0 = bn.moving_mean.numpy().copy()
    model.evaluate(x, y, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mm0)  # evaluate never moves the statistics
    h = model.layers[0](x)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.99 * mm0 + 0.01 * h.mean(0), rtol=1e-5, atol=1e-6)


def test_fused_softmax_crossentropy_is_exact_where_probabilities_underflow():
    model = Sequential([L.Input(shape=(2,)), L.Dense(2, activation="softmax", kernel_initializer="ones")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.array([[100.0, -100.0]], np.float32)
    model.layers[0].kernel.assign(np.array([[1, -1], [-1, 1]], np.float32))
    model.compute_gradients(x, np.array([1]))
    # p = softmax([200, -200]) = [1, 0]: the gradient w.r.t. the logits is exactly p - y = [1, -1]
    np.testing.assert_allclose(model.layers[0].bias.grad, [1, -1], atol=1e-6)


@pytest.mark.parametrize("x,y,exc,match", [
    (np.zeros((4, 6, 6, 1), np.float32), np.zeros(3, int), ValueError, "different numbers of samples"),
    (np.zeros((4, 6, 6, 1), np.float32), np.array([0, 1, 2, 9]), ValueError, r"labels must lie in \[0, 3\)"),
    (np.zeros((4, 6, 6, 1), np.float32), np.array([0, -1, 2, 1]), ValueError, "labels must lie"),
    (np.zeros((4, 7, 7, 1), np.float32), np.zeros(4, int), ValueError, "expects inputs of shape"),
    (np.array([["a"] * 36] * 4).reshape(4, 6, 6, 1), np.zeros(4, int), TypeError, "numeric"),
    (np.zeros((4, 6, 6, 1), np.float32), np.zeros((4, 3), np.float32), ValueError, r"shape \(N,\)"),
])
def test_bad_training_data_is_named(x, y, exc, match):
    model = Sequential([L.Input(shape=(6, 6, 1)), L.Flatten(), L.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(exc, match=match):
        model.fit(x, y, verbose=0)


def test_unknown_names_and_missing_compile():
    model = Sequential([L.Input(shape=(3,)), L.Dense(2)])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 3)), np.zeros(2), verbose=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.compile("adamx", "mse")
    with pytest.raises(ValueError, match="unknown loss"):
        model.compile("adam", "hinge")
    with pytest.raises(ValueError, match="unknown metric"):
        model.compile("adam", "mse", metrics=["f1"])
    with pytest.raises(ValueError, match="categorical_crossentropy: labels have shape"):
        model.compile("adam", "categorical_crossentropy")
        model.fit(np.zeros((2, 3)), np.zeros((2, 5)), verbose=0)


def test_float64_and_uint8_inputs_are_converted_once(rng):
    model = Sequential([L.Input(shape=(4, 4, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.random((6, 4, 4, 1))  # float64, as x / 255.0 gives
    model.fit(x, rng.integers(0, 2, 6), verbose=0)
    assert model.predict((x * 255).astype(np.uint8), verbose=0).dtype == np.float32


def test_model_runs_on_device(device, rng):
    model = convkit.zoo.build("lenet5")
    x, y = rng.random((8, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 8)
    h = model.fit(x, y, batch_size=4, epochs=1, verbose=0, device=device)
    assert np.isfinite(h.history["loss"][0])
    assert model.predict(to_device(x, device), verbose=0).shape == (8, 10)
