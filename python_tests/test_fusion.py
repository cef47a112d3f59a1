"""Batch normalisation applies the activation layer after it in its own pass at inference (predict, evaluate,
a call outside GradientTape): same results as the layers one by one, and only where nothing else reads the
normalised values."""

import numpy as np
import pytest

import convkit
from convkit import layers, ops


def _graph_model():
    x = layers.Input((6, 6, 3))
    h = layers.Conv2D(8, 3, padding="same")(x)
    h = layers.ReLU(6.0)(layers.BatchNormalization()(h))                  # fused: relu6
    h = layers.Activation("swish")(layers.BatchNormalization()(h))        # fused: silu
    shared = layers.BatchNormalization()(h)                               # read twice: not fused
    h = layers.Add()([layers.Activation("sigmoid")(shared), shared])
    h = layers.ReLU(negative_slope=0.1)(layers.BatchNormalization()(h))   # leaky: not fused
    h = layers.Activation("relu")(layers.BatchNormalization()(h))         # fused: relu
    return convkit.Model(x, layers.BatchNormalization()(h))              # the output itself: alone


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


@pytest.mark.parametrize("build,fused", [(_graph_model, ["relu6", "silu", "relu"]),
                                         (_sequential_model, ["relu", "relu6", "sigmoid"])],
                         ids=["functional", "sequential"])
def test_inference_fuses_the_activation_and_agrees_with_the_layers_one_by_one(rng, monkeypatch, build, fused):
    model = _with_random_statistics(build(), rng)
    x = rng.standard_normal((5, 6, 6, 3)).astype(np.float32) * 3
    with convkit.GradientTape():  # recording: every layer runs on its own
        apart = np.asarray(model(x, training=False))
    seen, plain = [], ops.batch_norm_inference

    def spy(*args, **kw):
        seen.append(args[6] if len(args) > 6 else kw.get("activation"))
        return plain(*args, **kw)

    monkeypatch.setattr(ops, "batch_norm_inference", spy)
    together = model.predict(x, verbose=0)
    assert [a for a in seen if a] == fused
    np.testing.assert_allclose(together, apart, rtol=1e-6, atol=1e-6)
    seen.clear()
    model.compile(loss="mse")
    assert model.evaluate(x, apart, verbose=0) < 1e-10
    assert [a for a in seen if a] == fused


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
