"""At inference (predict, evaluate, a call outside GradientTape) a Conv2D or DepthwiseConv2D folds in the batch
normalisation after it, and the activation after that, into its own pass (a Conv2D also a residual sum after the
normalisation, the shortcut added as it writes); a batch normalisation not after a convolution, and a sum, apply
their activation themselves. Same results as the layers one by one (up to float32 rounding
where weights are folded), and only where nothing else reads the values in between."""

import numpy as np
import pytest

import convkit
from convkit import layers, ops


def _graph_model():
    x = layers.Input((6, 6, 3))
    h = layers.Conv2D(8, 3, padding="same")(x)
    h = layers.ReLU(6.0)(layers.BatchNormalization()(h))                  # into the conv: relu6
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.Activation("swish")(layers.BatchNormalization()(h))        # into the depthwise: silu
    h = layers.Conv2D(8, 1, activation="relu")(h)                          # has its own activation: stays apart
    h = layers.Activation("swish")(layers.BatchNormalization()(h))        # normalisation with silu
    shared = layers.BatchNormalization()(h)                               # read twice: not fused
    h = layers.Add()([layers.Activation("sigmoid")(shared), shared])
    h = layers.ReLU(negative_slope=0.1)(layers.BatchNormalization()(h))   # leaky: not fused
    h = layers.Activation("relu")(layers.BatchNormalization()(h))         # normalisation with relu
    c = layers.Conv2D(4, 1)(h)
    h = layers.ReLU()(layers.Add()([c, layers.BatchNormalization()(c)]))  # conv read twice; the sum's relu
    r = layers.Dropout(0.5)(layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(h)))
    h = layers.ReLU()(layers.Add()([h, r]))                               # into the conv: the shortcut, relu
    r = layers.BatchNormalization()(layers.Conv2D(4, 1)(h))
    h = layers.Add()([r, layers.Reshape((1, 1, 4))(layers.GlobalAveragePooling2D()(h))])  # broadcasts: apart
    h = layers.BatchNormalization(activity_regularizer="l2")(layers.Conv2D(4, 1)(h))  # observed: not folded
    return convkit.Model(x, layers.BatchNormalization()(layers.Conv2D(4, 1)(h)))     # into the conv, the output


def _sequential_model():
    return convkit.Sequential([layers.Input((6, 6, 3)), layers.Conv2D(4, 3), layers.BatchNormalization(),
                               layers.Activation("relu"), layers.BatchNormalization(), layers.ReLU(6.0),
                               layers.Flatten(), layers.Dense(3), layers.BatchNormalization(),
                               layers.Activation("sigmoid")])


def _with_random_statistics(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.standard_normal(c).astype(np.float32) * 2, rng.standard_normal(c).astype(np.float32),
                               rng.standard_normal(c).astype(np.float32), rng.uniform(0.2, 2, c).astype(np.float32)])
    return model


def _spy(monkeypatch):
    """The fused calls a model makes: ('bn', activation), ('conv' or 'depthwise', activation; '+residual' when it
    adds an Add's other input), ('add', activation)."""
    seen, norm, folded, add = [], ops.batch_norm_inference, ops.conv_batch_norm_inference, ops.add_activation

    def norm_spy(*args, **kw):
        act = args[6] if len(args) > 6 else kw.get("activation")
        if act:
            seen.append(("bn", act))
        return norm(*args, **kw)

    def folded_spy(*args, **kw):
        kind = "depthwise" if kw.get("depthwise") else "conv"
        kind += "+residual" if kw.get("residual") is not None else ""
        seen.append((kind, kw.get("activation")))
        return folded(*args, **kw)

    def add_spy(a, b, activation):
        seen.append(("add", activation))
        return add(a, b, activation)

    monkeypatch.setattr(ops, "add_activation", add_spy)
    monkeypatch.setattr(ops, "batch_norm_inference", norm_spy)
    monkeypatch.setattr(ops, "conv_batch_norm_inference", folded_spy)
    return seen


@pytest.mark.parametrize("build,fused", [
    (_graph_model, [("conv", "relu6"), ("depthwise", "silu"), ("bn", "silu"), ("bn", "relu"), ("add", "relu"),
                    ("conv+residual", "relu"), ("conv", None), ("conv", None)]),
    (_sequential_model, [("conv", "relu"), ("bn", "relu6"), ("bn", "sigmoid")])], ids=["functional", "sequential"])
def test_inference_fuses_and_agrees_with_the_layers_one_by_one(rng, monkeypatch, build, fused):
    model = _with_random_statistics(build(), rng)
    x = rng.standard_normal((5, 6, 6, 3)).astype(np.float32) * 3
    seen = _spy(monkeypatch)
    with convkit.GradientTape():  # recording: every layer runs on its own
        apart = np.asarray(model(x, training=False))
    assert seen == []
    together = model.predict(x, verbose=0)
    assert seen == fused, seen
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-5)
    seen.clear()
    model.compile(loss="mse")
    assert model.evaluate(x, apart, verbose=0) < 1e-9
    assert seen == fused, seen
    seen.clear()
    model(x, training=True)  # batch statistics: no normalisation fuses (a sum and its activation still may)
    assert [f for f in seen if f[0] != "add"] == []


def test_training_mode_never_fuses(rng):
    model = _with_random_statistics(_sequential_model(), rng)
    bn = model.layers[1]
    with pytest.raises(ValueError, match="an activation is fused only in inference mode"):
        bn(np.ones((2, 4, 4, 4), np.float32), training=True, activation="relu")
    bn.trainable = False  # frozen: inference mode even in training, as in Keras
    assert bn(np.ones((2, 4, 4, 4), np.float32), training=True, activation="relu").shape == (2, 4, 4, 4)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="batch_norm_inference: activation must be None or one of relu, relu6"):
        ops.batch_norm_inference(np.ones((2, 3), np.float32), None, None, np.zeros(3, np.float32),
                                 np.ones(3, np.float32), activation="tanh")


def test_zero_padding_that_same_would_add_is_left_to_the_convolution(rng, monkeypatch):
    x = layers.Input((8, 7, 5))
    h = layers.ZeroPadding2D(((0, 1), (1, 1)))(x)       # what 'same' adds for a 3x3 window, strides 2, to 8 x 7
    h = layers.DepthwiseConv2D(3, strides=2)(h)
    h = layers.Activation("relu")(layers.BatchNormalization()(h))
    h = layers.Conv2D(4, 3)(layers.ZeroPadding2D(2)(h))  # not what 'same' adds: padded apart
    h = layers.Conv2D(4, 3, dilation_rate=2)(layers.ZeroPadding2D(2)(h))  # 'same' for a dilated 3x3
    h = layers.Conv2D(4, 3, padding="same")(layers.ZeroPadding2D(1)(h))   # pads again itself: padded apart
    h = layers.Conv2D(3, 3)(layers.ZeroPadding2D(1)(h))  # what 'same' adds at strides 1
    model = _with_random_statistics(convkit.Model(x, h), rng)
    pads, pad = [], convkit.ops.pad
    monkeypatch.setattr(convkit.ops, "pad", lambda *a, **k: pads.append(1) or pad(*a, **k))
    x = rng.standard_normal((2, 8, 7, 5)).astype(np.float32)
    with convkit.GradientTape():  # recording: every layer runs on its own
        apart = np.asarray(model(x, training=False))
    assert len(pads) == 5
    np.testing.assert_allclose(model.predict(x, verbose=0), apart, rtol=1e-5, atol=1e-5)
    assert len(pads) == 7


def test_a_sum_fuses_into_the_branch_computed_last_and_never_changes_the_result(rng, monkeypatch):
    x = layers.Input((6, 6, 4))
    main = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(x))       # computed first
    short = layers.BatchNormalization()(layers.Conv2D(4, 1)(x))
    h = layers.ReLU()(layers.Add()([main, short]))                                    # into the shortcut's conv
    d = layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(h))
    h = layers.Add()([d, h])                                                          # a depthwise: the sum apart
    model = _with_random_statistics(convkit.Model(x, h), rng)
    x = rng.standard_normal((3, 6, 6, 4)).astype(np.float32)
    seen = _spy(monkeypatch)
    with convkit.GradientTape():
        apart = np.asarray(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), apart, rtol=1e-5, atol=1e-5)
    assert seen == [("conv", None), ("conv+residual", "relu"), ("depthwise", None)], seen


def test_a_shortcut_that_broadcasts_is_added_after_the_pass(rng, monkeypatch):
    a, b = layers.Input((6, 6, 3)), layers.Input((None, None, 4))  # b's declared shape passes for the sum's
    h = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(a))
    model = _with_random_statistics(convkit.Model([a, b], layers.ReLU()(layers.Add()([b, h]))), rng)
    xs = [rng.standard_normal((2, 6, 6, 3)).astype(np.float32), rng.standard_normal((2, 1, 1, 4)).astype(np.float32)]
    seen = _spy(monkeypatch)
    with convkit.GradientTape():
        apart = np.asarray(model(xs, training=False))
    np.testing.assert_allclose(np.asarray(model(xs, training=False)), apart, rtol=1e-5, atol=1e-5)
    assert seen == [("conv", None), ("add", "relu")], seen  # offered the shortcut, the conv adds it after


def test_dropout_in_training_keeps_the_sum_apart(rng, monkeypatch):
    x = layers.Input((6, 6, 4))
    norm = layers.BatchNormalization()
    r = layers.Dropout(0.5)(norm(layers.Conv2D(4, 3, padding="same")(x)))
    model = _with_random_statistics(convkit.Model(x, layers.Add()([x, r])), rng)
    norm.trainable = False  # frozen: in inference mode even in training, so the conv still folds it
    seen = _spy(monkeypatch)
    model(rng.standard_normal((2, 6, 6, 4)).astype(np.float32), training=True)
    assert seen == [("conv", None)], seen
