"""bench/torch_twin.py: the PyTorch twin of a convkit functional model computes what the model computes, in
NCHW and in channels_last, TensorFlow's asymmetric 'same' padding included."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_twin import TorchTwin, same_pads, to_numpy, to_torch  # noqa: E402

import convkit  # noqa: E402
from convkit import layers as L  # noqa: E402

FORMATS = [torch.contiguous_format, torch.channels_last]


def branching_model():
    """Every layer kind the twin knows, at sizes where 'same' padding is asymmetric (even sides, stride 2)."""
    x = inp = L.Input((10, 12, 3))
    x = L.Rescaling([0.5, 1.0, 2.0], offset=0.1)(x)
    x = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 4.0])(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    a = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="swish")(x)
    b = L.SeparableConv2D(16, 5, strides=1, padding="same", activation="sigmoid")(x)
    x = L.Add()([a, b])
    gate = L.GlobalAveragePooling2D(keepdims=True)(x)
    gate = L.Conv2D(16, 1, activation="hard_sigmoid")(gate)
    x = L.Multiply()([x, gate])
    x = L.ReLU(max_value=6.0)(x)
    p = L.MaxPooling2D(3, strides=2, padding="same")(x)
    q = L.AveragePooling2D(3, strides=2, padding="same")(x)
    r = L.AveragePooling2D(2)(L.ZeroPadding2D(((2, 1), (0, 0)))(x))
    r = L.Cropping2D(((1, 0), (0, 0)))(r)
    x = L.Concatenate()([p, q, L.Subtract()([p, q]), L.Maximum()([p, q]), r])
    x = L.Conv2D(6, 2, padding="valid", dilation_rate=1)(x)
    y = L.GlobalMaxPooling2D()(x)
    z = L.Dense(6, activation="tanh")(L.Flatten()(x))
    x = L.Average()([y, z, L.Minimum()([y, z])])
    x = L.Reshape((1, 1, 6))(x)
    x = L.Reshape((6,))(L.Dropout(0.5)(x))
    return convkit.Model(inp, L.Dense(5, activation="softmax")(x))


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if "variance" in v.name
                       else rng.normal(0, 0.5, w.shape).astype(np.float32)
                       for v, w in zip(model.weights, model.get_weights())])


@pytest.mark.parametrize("memory_format", FORMATS)
def test_every_layer_kind_matches_convkit(memory_format):
    model = branching_model()
    randomize(model)
    x = np.random.default_rng(1).normal(0, 1, (2, 10, 12, 3)).astype(np.float32)
    twin = TorchTwin(model, memory_format=memory_format)
    np.testing.assert_allclose(to_numpy(twin(to_torch(x, memory_format))), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("memory_format", FORMATS)
def test_an_application_model_matches(memory_format):
    from convkit.applications import EfficientNetB0

    model = EfficientNetB0(weights=None, include_top=False, input_shape=(48, 40, 3))
    randomize(model, seed=2)
    x = np.random.default_rng(3).uniform(0, 255, (1, 48, 40, 3)).astype(np.float32)
    twin = TorchTwin(model, memory_format=memory_format)
    ours = model.predict(x, verbose=0)
    np.testing.assert_allclose(to_numpy(twin(to_torch(x, memory_format))), ours, rtol=1e-3,
                               atol=1e-4 * np.abs(ours).max())


def test_same_padding_puts_the_odd_pixel_after():
    assert same_pads(224, 3, 2) == (0, 1) and same_pads(225, 3, 2) == (1, 1) and same_pads(7, 5, 1) == (2, 2)
    assert same_pads(8, 3, 1, dilation=2) == (2, 2) and same_pads(4, 1, 2) == (0, 0)


def test_what_it_cannot_translate_is_named():
    inp = L.Input((4, 4, 1))
    with pytest.raises(ValueError, match=r"no PyTorch twin for layer Permute \('perm'\)"):
        TorchTwin(convkit.Model(inp, L.Permute((2, 1, 3), name="perm")(inp)))
    with pytest.raises(ValueError, match="functional models"):
        TorchTwin(convkit.Sequential([L.Dense(2)]))
