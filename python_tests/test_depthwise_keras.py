"""DepthwiseConv2D, SeparableConv2D and dilated Conv2D against Keras itself on its PyTorch backend: the
same configuration and weights give the same outputs and the same input and weight gradients (within
1e-5 relative) on random inputs of odd sizes, strides 2, 'same' with even kernels, dilations, depth
multipliers and batch 1; the same weights (names, shapes, order), configs, parameter counts and
summaries; constraints as Keras's, applied after each update; and the layers saved and loaded in
Sequential, functional and subclassed models."""

import os
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import convkit  # noqa: E402
import oracle  # noqa: E402
from convkit import activations, constraints  # noqa: E402
from convkit import layers as L  # noqa: E402

K = keras.layers

# (layer class name, input shape (N, H, W, C), keyword arguments)
CASES = [
    ("DepthwiseConv2D", (2, 11, 9, 5), dict(kernel_size=3)),
    ("DepthwiseConv2D", (1, 12, 10, 4), dict(kernel_size=3, strides=2, padding="same", activation="relu")),
    ("DepthwiseConv2D", (2, 9, 8, 3), dict(kernel_size=4, padding="same", depth_multiplier=2)),
    ("DepthwiseConv2D", (2, 10, 11, 6), dict(kernel_size=(2, 3), strides=(2, 1), padding="same", use_bias=False)),
    ("DepthwiseConv2D", (1, 13, 12, 3), dict(kernel_size=3, dilation_rate=2, padding="same", depth_multiplier=3,
                                             activation="tanh")),
    ("DepthwiseConv2D", (2, 7, 7, 20), dict(kernel_size=5, padding="same", activation="relu6")),
    ("SeparableConv2D", (2, 11, 9, 5), dict(filters=7, kernel_size=3)),
    ("SeparableConv2D", (1, 12, 10, 4), dict(filters=6, kernel_size=4, strides=2, padding="same",
                                             activation="relu")),
    ("SeparableConv2D", (2, 9, 8, 3), dict(filters=4, kernel_size=3, depth_multiplier=2, dilation_rate=2,
                                           padding="same", use_bias=False)),
    ("SeparableConv2D", (1, 8, 9, 6), dict(filters=3, kernel_size=2, strides=2, padding="valid",
                                           activation="sigmoid")),
    ("Conv2D", (2, 13, 11, 3), dict(filters=4, kernel_size=3, dilation_rate=2, padding="same")),
    ("Conv2D", (1, 12, 12, 2), dict(filters=5, kernel_size=(2, 3), dilation_rate=(3, 2), activation="relu")),
]
IDS = [f"{name}-{shape}-{kw}" for name, shape, kw in CASES]


def _pair(name, kw):
    """Our layer and Keras's, from the same arguments."""
    if kw.get("activation") == "relu6" and not _has_relu6():
        pytest.skip("convkit.activations has no 'relu6' yet")
    return getattr(L, name)(**kw), getattr(K, name)(**kw)


def _has_relu6():
    try:
        activations.get("relu6")
        return True
    except ValueError:
        return False


def _keras_run(layer, x, dy):
    """Keras's output and gradients (input, then each trainable weight) for upstream gradient dy."""
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), [xt.grad.numpy()] + [w.value.grad.numpy() for w in layer.trainable_weights]


def _our_run(layer, x, dy):
    with convkit.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grads = tape.gradient(y, [x] + layer.trainable_weights, output_gradients=dy)
    return y, grads


@pytest.mark.parametrize("name,shape,kw", CASES, ids=IDS)
def test_outputs_and_gradients_match_keras(name, shape, kw):
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}{kw}".encode()))
    ours, theirs = _pair(name, kw)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    theirs.build(shape)
    ours.build((None,) + shape[1:])
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    dy = rng.standard_normal(tuple(theirs.compute_output_shape(shape))).astype(np.float32)
    y_ref, g_ref = _keras_run(theirs, x, dy)
    y, grads = _our_run(ours, x, dy)
    assert y.shape == y_ref.shape
    assert oracle.rel_err(y, y_ref) < 1e-5, "output"
    assert len(grads) == len(g_ref) == 1 + len(weights)
    for i, (g, ref) in enumerate(zip(grads, g_ref)):
        assert oracle.rel_err(g, ref) < 1e-5, f"gradient of {'x' if i == 0 else ours.trainable_weights[i - 1].name}"


@pytest.mark.parametrize("name,shape,kw", CASES, ids=IDS)
def test_weights_config_and_params_match_keras(name, shape, kw):
    ours, theirs = _pair(name, kw)
    model_ours = convkit.Sequential([L.Input(shape[1:]), ours])
    model_theirs = keras.Sequential([K.Input(shape[1:]), theirs])
    assert [(w.name.split("/")[-1], tuple(w.shape)) for w in ours.weights] == \
           [(w.name, tuple(w.shape)) for w in theirs.weights]
    assert ours.count_params() == theirs.count_params()
    assert model_ours.output_shape == model_theirs.output_shape
    ref = theirs.get_config()
    cfg = ours.get_config()
    keys = set(cfg) - {"name", "trainable"}
    assert keys <= set(ref), sorted(keys - set(ref))
    for k in keys:
        want = ref[k]
        if isinstance(want, tuple):
            want = list(want)
        if isinstance(want, dict):  # initializers: the same class (Keras adds its module and names)
            assert cfg[k]["class_name"] == want["class_name"], k
            continue
        assert cfg[k] == want, k
    # activity_regularizer: every layer's base config holds it only when one is set
    missing = {k for k in ref if k.endswith(("_initializer", "_regularizer", "_constraint")) or k in (
        "depth_multiplier", "filters", "kernel_size", "strides", "padding", "dilation_rate", "activation",
        "use_bias")} - set(cfg) - {"activity_regularizer"}
    assert not missing, sorted(missing)


def _summary(model):
    out = []
    model.summary(print_fn=lambda s, **_: out.append(s))
    return out[0].splitlines()


def test_summary_matches_keras(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    def build(lib):
        return [lib.Input((32, 32, 3)), lib.Conv2D(16, 3, strides=2, padding="same", name="stem"),
                lib.DepthwiseConv2D(3, padding="same", activation="relu", name="dw1"),
                lib.SeparableConv2D(24, 3, padding="same", depth_multiplier=2, name="sep1"),
                lib.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2, use_bias=False, name="dw2"),
                lib.Conv2D(8, 3, dilation_rate=2, name="dilated")]

    ours, theirs = _summary(convkit.Sequential(build(L), name="mobile")), _summary(keras.Sequential(build(K),
                                                                                                      name="mobile"))
    assert ours == theirs


@pytest.mark.parametrize("ours", [constraints.MaxNorm(1.5, axis=[0, 1, 2]), constraints.MaxNorm(),
                                  constraints.MinMaxNorm(0.5, 1.2, rate=0.7, axis=0), constraints.NonNeg(),
                                  constraints.UnitNorm(axis=-1)], ids=repr)
def test_constraints_match_keras(ours):
    cfg = convkit.constraints.serialize(ours)
    theirs = getattr(keras.constraints, cfg["class_name"]).from_config(cfg["config"])
    w = np.random.default_rng(3).standard_normal((3, 3, 4, 2)).astype(np.float32)
    want = keras.ops.convert_to_numpy(theirs(keras.ops.convert_to_tensor(w)))
    assert oracle.rel_err(ours(w), want) < 1e-6
    assert constraints.get(cfg).get_config() == ours.get_config()


def test_constrained_training_step_matches_keras():
    """One SGD step of a model whose depthwise kernel and bias are constrained: the weights after it equal
    Keras's (the constraint applied after the update)."""
    def build(lib, cons):
        return [lib.Input((7, 7, 3)),
                lib.DepthwiseConv2D(3, depth_multiplier=2, depthwise_constraint=cons.MaxNorm(0.5, axis=[0, 1]),
                                    bias_constraint=cons.NonNeg(), name="dw"),
                lib.SeparableConv2D(2, 3, pointwise_constraint=cons.UnitNorm(axis=2), name="sep")]

    ours, theirs = convkit.Sequential(build(L, constraints)), keras.Sequential(build(K, keras.constraints))
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    x, y = rng.standard_normal((4, 7, 7, 3)).astype(np.float32), rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    ours.compile(convkit.optimizers.SGD(0.1), "mse")
    theirs.compile(keras.optimizers.SGD(0.1), "mse")
    ours.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    theirs.train_on_batch(x, y)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        assert oracle.rel_err(a, b) < 1e-5
    assert (ours.get_layer("dw").bias.numpy() >= 0).all()


class _Subclassed(convkit.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dw = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu",
                                    depthwise_constraint=constraints.MaxNorm(2.0))
        self.sep = L.SeparableConv2D(4, 3, strides=2, padding="same", depthwise_regularizer="l2")

    def call(self, x, training=False):
        return self.sep(self.dw(x))


def _models():
    seq = convkit.Sequential([L.Input((9, 9, 3)), L.DepthwiseConv2D(3, padding="same", bias_constraint="non_neg"),
                              L.SeparableConv2D(5, 3, dilation_rate=2, activation="relu"),
                              L.Conv2D(2, 2, dilation_rate=2)])
    inp = L.Input((9, 9, 3))
    a = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inp)
    b = L.SeparableConv2D(6, 3, padding="same", pointwise_initializer="he_normal")(inp)
    func = convkit.Model(inp, L.Add()([a, b]))
    return {"sequential": seq, "functional": func, "subclassed": _Subclassed()}


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_save_load_and_config_round_trip(tmp_path, kind):
    model = _models()[kind]
    x = np.random.default_rng(7).standard_normal((2, 9, 9, 3)).astype(np.float32)
    y = model(x)
    path = tmp_path / "m.keras"
    model.save(path)
    custom = {"_Subclassed": _Subclassed} if kind == "subclassed" else None
    loaded = convkit.load_model(path, custom_objects=custom)
    np.testing.assert_array_equal(loaded(x), y)
    for old, new in zip(model.layers, loaded.layers):
        assert old.get_config() == {**new.get_config(), "name": old.name}
    clone = type(model.layers[-1]).from_config(model.layers[-1].get_config())
    assert clone.get_config() == model.layers[-1].get_config()
    if kind == "subclassed":
        assert type(loaded.dw.depthwise_constraint) is constraints.MaxNorm
        assert loaded.dw.kernel.constraint is not None and loaded.losses  # the regularizer came back too
