"""Each layer's forward and gradients against the same layer in PyTorch (CPU, float64) on the same weights."""

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as F

import convkit
import oracle
from convkit import layers as L
from convkit import regularizers
from convkit import GradientTape
from helpers import to_device, to_numpy

TOL = 2e-5  # norm-wise relative error allowed for float32 results against float64 references


def run(layer, x, dy, training=True):
    """Forward of one layer call, then its gradients for upstream ``dy`` on a GradientTape; returns (y, dx)
    (dx a list for a list of inputs) and leaves the weights' gradients in their ``grad``."""
    xs = list(x) if isinstance(x, list) else [x]
    with GradientTape() as tape:
        tape.watch(xs)
        y = layer(x, training=training)
    ws = layer.trainable_weights
    grads = tape.gradient(y, xs + ws, output_gradients=dy)
    for v, g in zip(ws, grads[len(xs):]):
        v.grad = g
    return y, (grads[:len(xs)] if isinstance(x, list) else grads[0])


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def t64(a, grad=True):
    return torch.tensor(np.asarray(to_numpy(a), np.float64), requires_grad=grad)


def check(ours, ref, tol=TOL):
    assert oracle.rel_err(to_numpy(ours), ref) < tol


@pytest.mark.parametrize("padding,strides,k,act,bias", [
    ("same", 1, 3, "relu", True), ("valid", 1, 5, "relu", True), ("same", 2, 3, "linear", True),
    ("valid", 2, 2, "sigmoid", False), ("same", 1, 4, "tanh", True), ("same", 1, 1, None, True),
])
def test_conv2d_matches_torch(device, rng, padding, strides, k, act, bias):
    x = rand(rng, 3, 9, 8, 4)
    layer = L.Conv2D(5, k, strides=strides, padding=padding, activation=act, use_bias=bias)
    layer.build(x.shape)
    if bias:
        layer.bias.assign(rand(rng, 5))
    w, b = layer.kernel.numpy(), layer.bias.numpy() if bias else None
    ref_y = oracle.conv2d(x, w, b, None, (strides, strides), padding, (1, 1))
    ref_y = {"relu": np.maximum(ref_y, 0), "sigmoid": 1 / (1 + np.exp(-ref_y)), "tanh": np.tanh(ref_y)}.get(act, ref_y)
    dy = rand(rng, *ref_y.shape)
    if device == "cuda":
        layer.kernel.value, layer.bias.value = to_device(w, device), to_device(b, device) if bias else None
    y, dx = run(layer, to_device(x, device), to_device(dy, device))
    check(y, ref_y)
    # reference gradients through torch autograd on the same weights
    xt, wt = t64(x), t64(w)
    bt = t64(b) if bias else None
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], k, strides, 1, padding) for i in (0, 1))
    z = F.conv2d(F.pad(xt.permute(0, 3, 1, 2), (pl, pr, pt, pb)), wt.permute(3, 2, 0, 1), bt, stride=strides)
    z = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}.get(act, lambda t: t)(z)
    z.permute(0, 2, 3, 1).backward(torch.tensor(dy, dtype=torch.float64))
    check(dx, xt.grad.numpy())
    check(layer.kernel.grad, wt.grad.numpy())
    if bias:
        check(layer.bias.grad, bt.grad.numpy())


def test_conv2d_relu_uses_the_fused_kernel(monkeypatch, rng):
    from convkit import ops
    seen = []
    real = ops.conv2d
    monkeypatch.setattr(ops, "conv2d", lambda *a, **k: seen.append(k.get("activation")) or real(*a, **k))
    L.Conv2D(2, 3, activation="relu")(rand(rng, 1, 5, 5, 1))
    assert seen == ["relu"]


@pytest.mark.parametrize("act", ["relu", "linear", "sigmoid", "tanh", "softmax"])
def test_dense_matches_torch(device, rng, act):
    x, layer = rand(rng, 6, 7), L.Dense(4, activation=act)
    layer.build(x.shape)
    layer.bias.assign(rand(rng, 4))
    w, b = layer.kernel.numpy(), layer.bias.numpy()
    xt, wt, bt = t64(x), t64(w), t64(b)
    z = xt @ wt + bt
    z = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "softmax": lambda t: torch.softmax(t, -1)}.get(act, lambda t: t)(z)
    dy = rand(rng, 6, 4)
    z.backward(torch.tensor(dy, dtype=torch.float64))
    layer.kernel.value, layer.bias.value = to_device(w, device), to_device(b, device)
    y, dx = run(layer, to_device(x, device), to_device(dy, device))
    check(y, z.detach().numpy())
    check(dx, xt.grad.numpy())
    check(layer.kernel.grad, wt.grad.numpy())
    check(layer.bias.grad, bt.grad.numpy())


@pytest.mark.parametrize("cls,pool,strides,padding", [
    (L.MaxPooling2D, 2, None, "valid"), (L.MaxPool2D, 3, 2, "same"), (L.AveragePooling2D, 2, None, "valid"),
    (L.AvgPool2D, 3, 2, "same"),
])
def test_pooling_matches_torch(device, rng, cls, pool, strides, padding):
    x = rand(rng, 2, 7, 6, 3)
    layer = cls(pool, strides=strides, padding=padding)
    ref = oracle.max_pool2d if "Max" in cls.__name__ else oracle.avg_pool2d
    s = pool if strides is None else strides
    y_ref, _ = ref(x, np.zeros((2,) + layer.compute_output_shape(x.shape)[1:]), (pool, pool), (s, s), padding)
    dy = rand(rng, *y_ref.shape)
    y_ref, dx_ref = ref(x, dy, (pool, pool), (s, s), padding)
    y, dx = run(layer, to_device(x, device), to_device(dy, device))
    check(y, y_ref)
    check(dx, dx_ref)
    assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + y_ref.shape[1:]


def test_maxpool_worked_example():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    assert L.MaxPool2D(2)(x)[0, :, :, 0].tolist() == [[6, 8], [14, 16]]


def test_global_average_pooling_matches_torch(device, rng):
    x = rand(rng, 3, 5, 4, 6)
    xt = t64(x)
    y_ref = xt.mean(dim=(1, 2))
    dy = rand(rng, 3, 6)
    y_ref.backward(torch.tensor(dy, dtype=torch.float64))
    y, dx = run(L.GlobalAveragePooling2D(), to_device(x, device), to_device(dy, device))
    check(y, y_ref.detach().numpy())
    check(dx, xt.grad.numpy())


def test_flatten_keeps_channels_last_order(device, rng):
    x = rand(rng, 2, 3, 4, 5)
    y, dx = run(L.Flatten(), to_device(x, device), to_device(rand(rng, 2, 60), device))
    np.testing.assert_array_equal(to_numpy(y), x.reshape(2, -1))
    assert dx.shape == x.shape


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 3, 6)])
def test_batchnorm_training_matches_torch(device, rng, shape):
    x = rand(rng, *shape) * 3 + 1
    layer = L.BatchNormalization()
    layer.build(x.shape)
    layer.gamma.assign(rand(rng, shape[-1]))
    layer.beta.assign(rand(rng, shape[-1]))
    g, b = layer.gamma.numpy(), layer.beta.numpy()
    xt, gt, bt = t64(x), t64(g), t64(b)
    c = shape[-1]
    y_ref = F.batch_norm(xt.reshape(-1, c), None, None, gt, bt, training=True, eps=1e-3).reshape(shape)
    dy = rand(rng, *shape)
    y_ref.backward(torch.tensor(dy, dtype=torch.float64))
    if device == "cuda":
        for v in layer.weights:
            v.value = to_device(v.numpy(), device)
    y, dx = run(layer, to_device(x, device), to_device(dy, device))
    check(y, y_ref.detach().numpy(), 1e-4)
    check(dx, xt.grad.numpy(), 1e-4)
    check(layer.gamma.grad, gt.grad.numpy(), 1e-4)
    check(layer.beta.grad, bt.grad.numpy(), 1e-4)
    # moving statistics: Keras' rule with momentum 0.99 and the biased batch variance
    x2 = x.reshape(-1, c).astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.01 * x2.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.99 + 0.01 * x2.var(0), rtol=1e-4)


def test_batchnorm_inference_uses_moving_statistics(device, rng):
    x = rand(rng, 4, 3, 3, 2)
    layer = L.BatchNormalization(epsilon=1e-3)
    layer.build(x.shape)
    mm, mv, g, b = rand(rng, 2), np.abs(rand(rng, 2)) + 0.5, rand(rng, 2), rand(rng, 2)
    for v, a in zip(layer.weights, (g, b, mm, mv)):
        v.assign(a)
    if device == "cuda":
        for v in layer.weights:
            v.value = to_device(v.numpy(), device)
    y, dx = run(layer, to_device(x, device), to_device(np.ones_like(x), device), training=False)
    np.testing.assert_allclose(to_numpy(y), (x - mm) / np.sqrt(mv + 1e-3) * g + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dx), np.broadcast_to(g / np.sqrt(mv + 1e-3), x.shape), rtol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mm)  # inference leaves the statistics alone


def test_dropout_training_only_with_inverted_scaling(device, rng):
    x = np.abs(rand(rng, 200, 50)) + 0.1
    layer = L.Dropout(0.4)
    xd = to_device(x, device)
    np.testing.assert_array_equal(to_numpy(layer(xd)), x)  # inference: identity
    y, dx = run(layer, xd, to_device(np.ones_like(x), device))
    y, dx = to_numpy(y), to_numpy(dx)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-6)
    assert 0.35 < 1 - kept.mean() < 0.45
    np.testing.assert_allclose(dx, kept / 0.6, rtol=1e-6)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "softmax", "tanh", "linear"])
def test_activation_layer_matches_torch(device, rng, act):
    x = rand(rng, 5, 7) * 3
    xt = t64(x)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": lambda t: torch.softmax(t, -1),
          "linear": lambda t: t * 1}[act]
    ref = fn(xt)
    dy = rand(rng, 5, 7)
    ref.backward(torch.tensor(dy, dtype=torch.float64))
    y, dx = run(L.Activation(act), to_device(x, device), to_device(dy, device))
    check(y, ref.detach().numpy())
    check(dx, xt.grad.numpy())


def test_rescaling_add_concatenate(device, rng):
    a, b, c = rand(rng, 2, 3, 3, 2), rand(rng, 2, 3, 3, 2), rand(rng, 2, 3, 3, 5)
    da, db, dc = (to_device(v, device) for v in (a, b, c))
    y, dx = run(L.Rescaling(1 / 255, offset=-1), da, to_device(np.ones_like(a), device))
    np.testing.assert_allclose(to_numpy(y), a / 255 - 1, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(dx), np.full_like(a, 1 / 255), rtol=1e-6)
    add, cat = L.Add(), L.Concatenate()
    dy = rand(rng, 2, 3, 3, 2)
    y, dxs = run(add, [da, db], to_device(dy, device))
    np.testing.assert_allclose(to_numpy(y), a + b, rtol=1e-6)
    assert all(np.array_equal(to_numpy(d), dy) for d in dxs)
    dy = rand(rng, 2, 3, 3, 7)
    y, dxs = run(cat, [da, dc], to_device(dy, device))
    np.testing.assert_array_equal(to_numpy(y), np.concatenate([a, c], -1))
    np.testing.assert_array_equal(to_numpy(dxs[0]), dy[..., :2])
    np.testing.assert_array_equal(to_numpy(dxs[1]), dy[..., 2:])


def test_regularizers_value_and_grad(rng):
    w = rand(rng, 3, 4)
    wt = t64(w)
    for reg, fn in [(regularizers.L1(0.01), lambda t: 0.01 * t.abs().sum()),
                    (regularizers.L2(0.02), lambda t: 0.02 * (t * t).sum()),
                    (regularizers.L1L2(0.01, 0.02), lambda t: 0.01 * t.abs().sum() + 0.02 * (t * t).sum())]:
        wt.grad = None
        ref = fn(wt)
        ref.backward()
        assert reg(w) == pytest.approx(ref.item(), rel=1e-5)
        check(reg.grad(w), wt.grad.numpy())


def test_layer_reused_twice_keeps_both_calls(rng):
    pool = L.MaxPool2D(2)
    a, b = rand(rng, 1, 4, 4, 1), rand(rng, 1, 6, 6, 2)
    with GradientTape() as tape:
        tape.watch([a, b])
        ya, yb = pool(a, training=True), pool(b, training=True)
        total = convkit.ops.add(convkit.ops.sum(ya), convkit.ops.sum(yb))
    da, db = tape.gradient(total, [a, b])
    assert db.shape == b.shape and da.shape == a.shape
    assert da.sum() == 4 and db.sum() == 18


def test_config_round_trip_for_every_layer():
    made = [L.Conv2D(3, (3, 2), strides=2, padding="same", activation="tanh", use_bias=False,
                     kernel_initializer="he_normal", kernel_regularizer=regularizers.L2(1e-3)),
            L.MaxPooling2D(3, 2, "same"), L.AveragePooling2D(2), L.GlobalAveragePooling2D(keepdims=True),
            L.Flatten(), L.Dense(7, activation="softmax", bias_regularizer="l1"), L.Dropout(0.3),
            L.BatchNormalization(momentum=0.9, epsilon=1e-5), L.Activation("sigmoid"), L.Rescaling(0.5, 1.0),
            L.Add(), L.Concatenate(axis=-1), L.InputLayer(shape=(4, 4, 1))]
    for layer in made:
        cfg = layer.get_config()
        again = type(layer).from_config(cfg)
        assert again.get_config() == cfg


@pytest.mark.parametrize("bad,exc,match", [
    (lambda: L.Conv2D(0, 3), ValueError, "filters"),
    (lambda: L.Conv2D(4, 3, padding="full"), ValueError, "padding"),
    (lambda: L.Dense(4, activation="swishy"), ValueError, "unknown activation"),
    (lambda: L.Dense(4, kernel_initializer="nope"), ValueError, "unknown initializer"),
    (lambda: L.Dropout(1.5), ValueError, "rate"),
    (lambda: L.Conv2D(4, 3, data_format="channels_first"), ValueError, "channels_last"),
    (lambda: L.Dense(3, dtype="float64"), TypeError, "float32"),
])
def test_bad_arguments(bad, exc, match):
    with pytest.raises(exc, match=match):
        bad()


def test_wrong_input_shape_after_build_names_the_layer(rng):
    conv = L.Conv2D(2, 3)
    conv(rand(rng, 1, 5, 5, 1))
    with pytest.raises(ValueError, match="conv2d.*built for inputs"):
        conv(rand(rng, 1, 5, 5, 3))
    assert L.Conv2D(2, 3)(np.zeros((1, 5, 5, 1))).dtype == np.float32  # layers cast, as Keras layers do
