"""Layers against Keras itself (on its PyTorch backend): the same config, our weights copied in, then the
outputs and the gradients with respect to the inputs and the trainable weights (ours through
convkit.GradientTape, Keras's through torch autograd) agree within 1e-5 relative, on random inputs of odd
sizes and of batch 1 too."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import convkit  # noqa: E402
import oracle  # noqa: E402
from helpers import to_device, to_numpy  # noqa: E402
from convkit import activations, layers as L  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":
    pytest.skip("Keras is on another backend in this process", allow_module_level=True)
K = keras.layers
TOL = 1e-5


def _ours(layer, xs, dy, training):
    xs = [x.copy() for x in xs]
    with convkit.GradientTape() as tape:
        tape.watch(xs)
        y = layer(xs if len(xs) > 1 else xs[0], training=training)
    weights = layer.trainable_weights
    grads = tape.gradient(y, xs + weights, output_gradients=dy.astype(np.float32))
    return np.asarray(y), grads


def _keras(layer, xs, dy, training):
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    y = layer(ts if len(ts) > 1 else ts[0], training=training)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), [t.grad for t in ts] + [w.value.grad for w in layer.trainable_weights]


def check(ours, theirs, *shapes, training=False, rng=None, inputs=None, scale=1.0):
    """Builds both layers, copies our weights into Keras's, compares outputs and gradients."""
    rng = rng or np.random.default_rng(0)
    xs = inputs or [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]
    ours(xs if len(xs) > 1 else xs[0])  # build
    theirs(xs if len(xs) > 1 else xs[0])
    theirs.set_weights(ours.get_weights())
    y_ref = theirs(xs if len(xs) > 1 else xs[0], training=False).detach()
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    y, grads = _ours(ours, xs, dy, training)
    y_k, grads_k = _keras(theirs, xs, dy, training)
    assert oracle.rel_err(y, y_k) < TOL, "output"
    assert len(grads) == len(grads_k)
    for i, (g, gk) in enumerate(zip(grads, grads_k)):
        assert g is not None, f"no gradient for input/weight {i}"
        gk = np.zeros(g.shape) if gk is None else gk.numpy()  # torch leaves an unused input's grad None
        assert oracle.rel_err(g, gk) < TOL, f"gradient of input/weight {i}"
    return y


# -- reshaping ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [1, (2, 0), ((1, 2), (0, 3))])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 4, 1)])
def test_zero_padding(padding, shape):
    check(L.ZeroPadding2D(padding), K.ZeroPadding2D(padding), shape)


@pytest.mark.parametrize("cropping", [1, (2, 0), ((0, 2), (1, 3))])
@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 6, 5, 2)])
def test_cropping(cropping, shape):
    check(L.Cropping2D(cropping), K.Cropping2D(cropping), shape)


@pytest.mark.parametrize("target", [(-1,), (3, -1), (5, 3, 7)])
def test_reshape(target):
    check(L.Reshape(target), K.Reshape(target), (2, 7, 5, 3))


@pytest.mark.parametrize("dims", [(2, 1, 3), (3, 1, 2)])
def test_permute(dims):
    check(L.Permute(dims), K.Permute(dims), (2, 5, 3, 4))


# -- merging -----------------------------------------------------------------------------------------------

MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]


SHAPES = {"two": [(2, 5, 3, 4), (2, 5, 3, 4)], "three": [(1, 3, 3, 2)] * 3, "broadcast": [(2, 5, 5, 4), (2, 1, 1, 4)],
          "ranks": [(2, 4, 6, 3), (2, 3)]}


@pytest.mark.parametrize("name,shapes", [(n, s) for n in MERGES for s in SHAPES if n != "Subtract" or s != "three"])
def test_elementwise_merge(name, shapes):
    shapes = SHAPES[shapes]
    check(getattr(L, name)(), getattr(K, name)(), *shapes)


@pytest.mark.parametrize("axis,shapes", [(-1, [(2, 5, 3, 1), (2, 5, 3, 4), (2, 5, 3, 2)]),
                                         (1, [(1, 2, 3, 4), (1, 5, 3, 4)])])
def test_concatenate(axis, shapes):
    check(L.Concatenate(axis), K.Concatenate(axis), *shapes)


def test_functional_forms_match_the_layers():
    a, b = L.Input((4, 4, 2)), L.Input((4, 4, 2))
    for name in MERGES + ["Concatenate"]:
        y = getattr(L, name.lower())([a, b], name=f"f_{name.lower()}")
        assert type(y.node.layer).__name__ == name and y.node.layer.name == f"f_{name.lower()}"
    assert L.concatenate([a, b], axis=1).shape == (None, 8, 4, 2)


def test_merge_errors():
    x = np.zeros((2, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match="exactly 2"):
        L.Subtract()([x, x, x])
    with pytest.raises(ValueError, match="cannot be broadcast"):
        L.Add()([x, np.zeros((2, 3, 4, 2), np.float32)])
    with pytest.raises(ValueError, match="at least 2"):
        L.Multiply()([x])


# -- activations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", activations.names())
def test_activation(name):
    check(L.Activation(name), K.Activation(name), (2, 5, 3, 4), scale=4)


@pytest.mark.parametrize("kwargs", [{}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 0.5},
                                    {"max_value": 2.5, "negative_slope": 0.2, "threshold": 0.5}])
def test_relu(kwargs):
    check(L.ReLU(**kwargs), K.ReLU(**kwargs), (2, 5, 3, 4), scale=4)


@pytest.mark.parametrize("kwargs", [{}, {"negative_slope": 0.1}])
def test_leaky_relu(kwargs):
    check(L.LeakyReLU(**kwargs), K.LeakyReLU(**kwargs), (1, 5, 3, 4), scale=3)


def test_activations_in_conv_and_dense():
    for name in ("relu6", "swish", "gelu", "hard_sigmoid"):
        check(L.Conv2D(3, 3, activation=name), K.Conv2D(3, 3, activation=name), (2, 6, 5, 2))
        check(L.Dense(3, activation=name), K.Dense(3, activation=name), (3, 4))
    check(L.Conv2D(3, 3, activation=activations.silu), K.Conv2D(3, 3, activation=keras.activations.silu), (1, 5, 5, 2))
    assert L.Dense(2, activation=activations.gelu).get_config()["activation"] == "gelu"
    with pytest.raises(ValueError, match="unknown activation"):
        L.Activation("relu7")
    with pytest.raises(ValueError, match="unknown activation"):
        L.Activation(np.tanh)


# -- pooling -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("pool,strides,padding", [(3, 1, "same"), (3, 2, "same"), (2, 1, "same"), (3, 2, "valid")])
@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 6, 5, 2)])
def test_pooling(kind, pool, strides, padding, shape, rng):
    pads = [oracle.tf_pads(shape[i + 1], pool, strides, 1, padding) for i in (0, 1)]
    if kind == "AveragePooling2D" and any(a != b for a, b in pads):
        # Keras's torch backend pads uneven 'same' windows by repeating the edge (3x3 stride 2 on 6 rows
        # averages the last row twice), where TensorFlow counts only the cells inside the input; ours
        # are TensorFlow's, checked against the PyTorch float64 oracle
        x = rng.standard_normal(shape).astype(np.float32)
        layer = L.AveragePooling2D(pool, strides, padding)
        y, (dx,) = _ours(layer, [x], dy := rng.standard_normal(layer.compute_output_shape(shape)), False)
        y_ref, dx_ref = oracle.avg_pool2d(x, dy, (pool, pool), (strides, strides), padding)
        assert oracle.rel_err(y, y_ref) < TOL and oracle.rel_err(dx, dx_ref) < TOL
        return
    check(getattr(L, kind)(pool, strides, padding), getattr(K, kind)(pool, strides, padding), shape)


@pytest.mark.parametrize("kind", ["GlobalMaxPooling2D", "GlobalAveragePooling2D"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(kind, keepdims):
    check(getattr(L, kind)(keepdims=keepdims), getattr(K, kind)(keepdims=keepdims), (2, 5, 7, 3))
    check(getattr(L, kind)(keepdims=keepdims), getattr(K, kind)(keepdims=keepdims), (1, 1, 1, 4))


def test_windowed_layers_on_images_of_any_size(rng):
    """Input((None, None, C)), as Keras's applications take without a classifier: the symbolic sizes stay None
    and each call computes at its images' own size."""
    def net(M, inp):
        x = M.Conv2D(4, 3, strides=2, padding="same")(inp)
        x = M.DepthwiseConv2D(3, depth_multiplier=2)(x)
        x = M.SeparableConv2D(3, 3, strides=2, padding="same")(x)
        x = M.MaxPooling2D(3, strides=2, padding="same")(x)
        return M.AveragePooling2D(2, padding="valid")(x)

    ours = convkit.Model(i := L.Input((None, None, 2)), net(L, i))
    theirs = keras.Model(j := keras.Input((None, None, 2)), net(K, j))
    ours.set_weights(theirs.get_weights())
    assert ours.output_shape == tuple(theirs.output_shape) == (None, None, None, 3)
    for shape in [(1, 29, 33, 2), (2, 16, 20, 2)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert oracle.rel_err(ours.predict(x, verbose=0), keras.ops.convert_to_numpy(theirs(x))) < TOL


# -- scaling and normalisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"scale": 1 / 255}, {"scale": 1 / 127.5, "offset": -1},
                                    {"scale": [0.5, 2.0, -1.0], "offset": [0.1, 0.0, 0.3]}])
def test_rescaling(kwargs):
    check(L.Rescaling(**kwargs), K.Rescaling(**kwargs), (2, 5, 3, 3), scale=100)


@pytest.mark.parametrize("kwargs", [{"mean": [0.5, -1.0, 2.0], "variance": [4.0, 0.25, 1.0]},
                                    {"mean": 3.0, "variance": 2.0, "axis": None},
                                    {"mean": [0.5, -1.0, 2.0], "variance": [4.0, 0.25, 1.0], "invert": True}])
def test_normalization_with_given_statistics(kwargs):
    check(L.Normalization(**kwargs), K.Normalization(**kwargs), (2, 5, 4, 3))


@pytest.mark.parametrize("axis", [-1, (1, 3), None])
def test_normalization_adapt(axis, rng):
    data = (rng.standard_normal((20, 4, 3, 2)) * [1.0, 3.0] + [2.0, -1.0]).astype(np.float32)
    ours, theirs = L.Normalization(axis=axis), K.Normalization(axis=axis)
    ours.adapt(data)
    theirs.adapt(data)
    for a, b in zip(ours.get_weights()[:2], theirs.get_weights()[:2]):
        assert oracle.rel_err(a, b) < TOL
    batched = L.Normalization(axis=axis)  # adapt over batches gives the statistics of all of them
    batched.adapt([data[:7], data[7:8], (data[8:], None)])
    for a, b in zip(batched.get_weights()[:2], ours.get_weights()[:2]):
        assert oracle.rel_err(a, b) < TOL
    assert ours.count_params() == theirs.count_params()
    check(ours, theirs, inputs=[data[:3]])


def test_normalization_errors():
    with pytest.raises(ValueError, match="both mean and variance"):
        L.Normalization(mean=1.0)
    with pytest.raises(ValueError, match="no data"):
        L.Normalization().adapt([])


@pytest.mark.parametrize("center,scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_without_center_or_scale(center, scale, training, rng):
    ours, theirs = L.BatchNormalization(center=center, scale=scale), K.BatchNormalization(center=center, scale=scale)
    ours.build((None, 5, 3, 4))
    ours.set_weights([rng.random(w.shape).astype(np.float32) + 0.5 for w in ours.weights])
    check(ours, theirs, (3, 5, 3, 4), training=training, rng=rng)


# -- dropout -----------------------------------------------------------------------------------------------

def test_spatial_dropout_drops_whole_feature_maps(rng):
    x = rng.random((8, 5, 6, 16)).astype(np.float32) + 1
    layer = L.SpatialDropout2D(0.4, seed=3)
    np.testing.assert_array_equal(layer(x), np.asarray(K.SpatialDropout2D(0.4)(x)))  # inference: identity
    with convkit.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    kept = y[:, :1, :1, :] != 0
    np.testing.assert_array_equal(y != 0, np.broadcast_to(kept, y.shape))  # each plane all kept or all dropped
    np.testing.assert_allclose(y[np.broadcast_to(kept, y.shape)], x[np.broadcast_to(kept, y.shape)] / 0.6,
                               rtol=1e-6)
    assert 0.2 < 1 - kept.mean() < 0.6
    g = tape.gradient(y, x, output_gradients=np.ones_like(y))
    np.testing.assert_allclose(g, np.broadcast_to(kept / 0.6, y.shape), rtol=1e-6)


def test_dropout_noise_shape(rng):
    x = rng.random((4, 3, 50)).astype(np.float32) + 1
    y = L.Dropout(0.5, noise_shape=(None, 1, None), seed=1)(x, training=True)
    np.testing.assert_array_equal(y != 0, np.broadcast_to(y[:, :1] != 0, y.shape))
    with pytest.raises(ValueError, match="does not fit"):
        L.Dropout(0.5, noise_shape=(None, 1))(x, training=True)


# -- in models ---------------------------------------------------------------------------------------------

def every_new_layer(lib, model):
    """A functional model with every layer above, each named, as Keras and convkit both build it."""
    inp = lib.Input((9, 9, 3), name="image")
    x = lib.Normalization(name="norm")(inp)
    x = lib.Rescaling([0.5, 1.0, 2.0], offset=0.1, name="rescale")(x)
    x = lib.ZeroPadding2D(((1, 2), (0, 1)), name="pad")(x)
    x = lib.Conv2D(8, 3, name="conv")(x)
    x = lib.BatchNormalization(center=False, scale=False, name="bn")(x)
    x = lib.ReLU(6.0, name="relu6")(x)
    x = lib.Add(name="add")([lib.MaxPooling2D(3, 1, "same", name="max3")(x),
                             lib.AveragePooling2D(3, 1, "same", name="avg3")(x)])
    s = lib.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = lib.Conv2D(8, 1, activation="hard_sigmoid", name="excite")(s)
    x = lib.Multiply(name="se")([x, s])
    x = lib.Cropping2D(((1, 0), (2, 1)), name="crop")(x)
    x = lib.SpatialDropout2D(0.2, name="sdrop")(x)
    x = lib.Activation("swish", name="swish")(x)
    m, g = lib.GlobalMaxPooling2D(name="gmp")(x), lib.GlobalAveragePooling2D(name="gap")(x)
    x = lib.Concatenate(name="concat")([lib.Maximum(name="maximum")([m, g]), lib.Minimum(name="minimum")([m, g]),
                                        lib.Subtract(name="sub")([m, g]), lib.Average(name="avg")([m, g])])
    x = lib.Permute((2, 1), name="permute")(lib.Reshape((4, 8), name="reshape")(x))
    x = lib.LeakyReLU(name="leaky")(lib.Flatten(name="flat")(x))
    x = lib.Activation("gelu", name="gelu")(lib.Dense(12, activation="elu", name="fc")(x))
    return model(inp, lib.Dense(4, activation="softmax", name="probs")(x), name="every_new_layer")


@pytest.fixture
def pair(rng):
    convkit.set_random_seed(0)
    ours, theirs = every_new_layer(L, convkit.Model), every_new_layer(K, keras.Model)
    data = rng.standard_normal((16, 9, 9, 3)).astype(np.float32) * 2 + 1
    ours.get_layer("norm").adapt(data)
    theirs.get_layer("norm").adapt(data)
    theirs.set_weights(ours.get_weights())
    return ours, theirs, data


def test_summary_of_every_new_layer_matches_keras(pair, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    ours, theirs, _ = pair
    texts = []
    for m in (ours, theirs):
        out = []
        m.summary(print_fn=lambda s, **_: out.append(s))
        texts.append(out[0].splitlines())
    for i, (a, b) in enumerate(zip(*texts)):
        assert a == b, f"line {i} differs:\nours:   {a}\nkeras:  {b}"
    assert len(texts[0]) == len(texts[1])


def test_model_of_every_new_layer_matches_keras(pair, rng):
    ours, theirs, data = pair
    x = data[:3]
    dy = rng.standard_normal((3, 4)).astype(np.float32)
    with convkit.GradientTape() as tape:
        tape.watch(x)
        y = ours(x, training=False)
    grads = tape.gradient(y, [x] + ours.trainable_weights, output_gradients=dy)
    xt = torch.tensor(x, requires_grad=True)
    yk = theirs(xt, training=False)
    (yk * torch.tensor(dy)).sum().backward()
    assert oracle.rel_err(y, yk.detach().numpy()) < TOL
    refs = [xt.grad] + [w.value.grad for w in theirs.trainable_weights]
    assert len(grads) == len(refs)
    for g, r in zip(grads, refs):
        assert oracle.rel_err(g, r.numpy()) < TOL


def test_model_of_every_new_layer_saves_loads_and_trains(pair, tmp_path, rng):
    model, _, data = pair
    labels = rng.integers(0, 4, len(data))
    model.compile(convkit.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    loss = model.fit(data, labels, epochs=10, batch_size=8, verbose=0).history["loss"]
    assert loss[-1] < 0.8 * loss[0]  # it learns the 16 random labels
    model.save(tmp_path / "m.keras")
    again = convkit.load_model(tmp_path / "m.keras")
    assert again.get_config() == model.get_config()
    np.testing.assert_array_equal(again.predict(data, verbose=0), model.predict(data, verbose=0))
    for layer in model.layers:  # each layer alone rebuilds from its config too
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_layers_in_sequential_and_subclassed_models(rng):
    x = rng.standard_normal((4, 8, 8, 2)).astype(np.float32)
    seq = convkit.Sequential([L.Input((8, 8, 2)), L.ZeroPadding2D(1), L.Conv2D(4, 3, activation="relu6"),
                              L.SpatialDropout2D(0.1), L.GlobalMaxPooling2D(), L.Reshape((2, 2)), L.Permute((2, 1)),
                              L.Flatten(), L.LeakyReLU(0.1), L.Dense(3)])
    assert seq(x).shape == (4, 3)

    class Block(convkit.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = L.Conv2D(4, 3, padding="same"), L.GlobalAveragePooling2D(keepdims=True)
            self.gate, self.act = L.Activation("sigmoid"), L.ReLU(max_value=6.0)

        def call(self, x):
            h = self.act(self.conv(x))
            return L.add([h, L.multiply([h, self.gate(self.pool(h))])])

    block = Block()
    with convkit.GradientTape() as tape:
        loss = convkit.ops.mean(block(x))
    grads = tape.gradient(loss, block.trainable_weights)
    assert len(grads) == 2 and all(g is not None and np.any(g) for g in grads)


def test_model_of_every_new_layer_on_device(pair, device, rng):
    """The same predictions and gradients on the GPU as on the CPU, and fit runs there."""
    model, _, data = pair
    x = data[:4]
    dy = rng.standard_normal((4, 4)).astype(np.float32)

    def run():
        xs = to_device(x, device)
        with convkit.GradientTape() as tape:
            tape.watch(xs)
            y = model(xs, training=False)
        grads = tape.gradient(y, [xs] + model.trainable_weights, output_gradients=to_device(dy, device))
        return [to_numpy(a) for a in [y] + grads]

    on_cpu = run()
    model.to(device)
    for a, b in zip(run(), on_cpu):
        assert oracle.rel_err(a, b) < TOL
    model.compile("adam", "sparse_categorical_crossentropy")
    h = model.fit(data, rng.integers(0, 4, len(data)), batch_size=8, epochs=1, verbose=0, device=device)
    assert np.isfinite(h.history["loss"][0])


def _plain(v):
    return [_plain(e) for e in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name,args,kwargs", [
    ("ZeroPadding2D", (((1, 2), (0, 1)),), {}), ("Cropping2D", (2,), {}), ("Reshape", ((4, -1),), {}),
    ("Permute", ((2, 1),), {}), ("ReLU", (6.0, 0.1, 0.5), {}), ("LeakyReLU", (), {}),
    ("Activation", ("swish",), {}), ("GlobalMaxPooling2D", (), {"keepdims": True}),
    ("GlobalAveragePooling2D", (), {"keepdims": True}), ("SpatialDropout2D", (0.3,), {"seed": 2}),
    ("Dropout", (0.3,), {"noise_shape": (None, 1, 1, None)}), ("Rescaling", ([0.5, 2.0],), {"offset": 0.1}),
    ("Normalization", (), {"axis": -1, "invert": True}), ("Concatenate", (1,), {}),
    ("BatchNormalization", (), {"center": False, "scale": False})])
def test_configs_use_keras_keys_and_values(name, args, kwargs):
    ours, theirs = getattr(L, name)(*args, **kwargs).get_config(), getattr(K, name)(*args, **kwargs).get_config()
    for key, value in ours.items():
        if key not in ("name", "trainable") and not key.endswith(("_initializer", "_regularizer")):
            assert key in theirs and _plain(value) == _plain(theirs[key]), (key, value, theirs.get(key))
