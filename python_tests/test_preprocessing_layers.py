"""Keras's image preprocessing layers, checked against Keras itself on its PyTorch backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import convkit
from convkit import layers

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":
    pytest.skip("Keras is on another backend in this process", allow_module_level=True)


def images(rng, n=2, h=9, w=11, c=3, scale=1.0):
    return (rng.random((n, h, w, c)) * scale).astype(np.float32)


def k(y):
    return y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)


def test_rescaling_matches_keras(rng):
    x = (rng.random((3, 4, 4, 2)) * 255).astype(np.uint8)
    np.testing.assert_allclose(layers.Rescaling(1 / 127.5, offset=-1)(x),
                               k(keras.layers.Rescaling(1 / 127.5, offset=-1)(x.astype(np.float32))), rtol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(5, 7), (14, 20), (9, 4)])
def test_resizing_matches_keras(rng, interpolation, size):
    x = images(rng)
    np.testing.assert_allclose(layers.Resizing(*size, interpolation=interpolation)(x),
                               k(keras.layers.Resizing(*size, interpolation=interpolation)(x)), atol=2e-6)


def test_resizing_with_crop_and_center_crop_match_keras(rng):
    x = images(rng)
    np.testing.assert_allclose(layers.Resizing(4, 4, crop_to_aspect_ratio=True)(x),
                               k(keras.layers.Resizing(4, 4, crop_to_aspect_ratio=True)(x)), atol=2e-6)
    np.testing.assert_array_equal(layers.CenterCrop(5, 6)(x), k(keras.layers.CenterCrop(5, 6)(x)))
    np.testing.assert_array_equal(layers.CenterCrop(5, 6)(x[0]), k(keras.layers.CenterCrop(5, 6)(x[0])))
    # an image smaller than the crop is cropped to the aspect ratio and resized, as Keras does
    np.testing.assert_allclose(layers.CenterCrop(12, 6)(x), k(keras.layers.CenterCrop(12, 6)(x)), atol=2e-6)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "nearest", "wrap"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_rotation_by_a_fixed_angle_matches_keras(rng, fill_mode, interpolation):
    x = images(rng)
    args = dict(factor=(0.1, 0.1), fill_mode=fill_mode, interpolation=interpolation, fill_value=0.5)
    np.testing.assert_allclose(layers.RandomRotation(**args)(x, training=True),
                               k(keras.layers.RandomRotation(**args)(x, training=True)), atol=2e-6)


def test_zoom_and_translation_by_fixed_amounts_match_keras(rng):
    x = images(rng)
    for args in [dict(height_factor=(0.2, 0.2), fill_mode="constant"),
                 dict(height_factor=(-0.3, -0.3), width_factor=(0.2, 0.2))]:
        np.testing.assert_allclose(layers.RandomZoom(**args)(x, training=True),
                                   k(keras.layers.RandomZoom(**args)(x, training=True)), atol=2e-6)
    args = dict(height_factor=(0.2, 0.2), width_factor=(-0.3, -0.3), fill_mode="constant")
    np.testing.assert_allclose(layers.RandomTranslation(**args)(x, training=True),
                               k(keras.layers.RandomTranslation(**args)(x, training=True)), atol=2e-6)


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_forced_flip_matches_keras(rng, mode):
    x = images(rng)
    flips = np.array([True, False])
    ours = layers.RandomFlip(mode)._apply(x, {"flips": flips})[0]
    theirs = keras.layers.RandomFlip(mode).transform_images(x, {"flips": torch.tensor(flips).reshape(2, 1, 1, 1)},
                                                            training=True)
    np.testing.assert_array_equal(ours, k(theirs))


def test_contrast_by_given_factors_matches_keras(rng):
    x = images(rng, scale=255)
    f = np.array([0.7, 1.6], np.float32)
    ours = layers.RandomContrast(0.5)._apply(x, {"contrast_factor": f})[0]
    theirs = keras.layers.RandomContrast(0.5).transform_images(
        torch.tensor(x), {"contrast_factor": torch.tensor(f).reshape(2, 1, 1, 1)}, training=True)
    np.testing.assert_allclose(ours, k(theirs), atol=1e-4)
    assert ours.max() == 255.0  # clipped to value_range, as Keras 3


RANDOM = [lambda: layers.RandomFlip(), lambda: layers.RandomRotation(0.2), lambda: layers.RandomZoom(0.3),
          lambda: layers.RandomTranslation(0.2, 0.2), lambda: layers.RandomContrast(0.5)]
KERAS_RANDOM = [lambda: keras.layers.RandomFlip(), lambda: keras.layers.RandomRotation(0.2),
                lambda: keras.layers.RandomZoom(0.3), lambda: keras.layers.RandomTranslation(0.2, 0.2),
                lambda: keras.layers.RandomContrast(0.5)]


@pytest.mark.parametrize("i", range(len(RANDOM)))
def test_random_layers_are_the_identity_in_inference_as_in_keras(rng, i):
    x = images(rng, n=4, scale=255)
    np.testing.assert_array_equal(RANDOM[i]()(x, training=False), x)
    np.testing.assert_array_equal(k(KERAS_RANDOM[i]()(x, training=False)), x)
    # called directly, as Keras 3 does, they transform (the notes look at augmented images this way)
    assert not np.array_equal(RANDOM[i]()(np.tile(x, (8, 1, 1, 1))), np.tile(x, (8, 1, 1, 1)))
    model = convkit.Sequential([layers.Input((9, 11, 3)), RANDOM[i]()])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_seeded_layers_are_reproducible_and_vary_per_image_and_call(rng):
    x = np.repeat(images(rng, n=1), 6, axis=0)
    a, b = layers.RandomRotation(0.2, seed=4), layers.RandomRotation(0.2, seed=4)
    first, again = a(x), b(x)
    np.testing.assert_array_equal(first, again)
    assert len({first[i].tobytes() for i in range(6)}) == 6  # each image its own angle
    assert not np.array_equal(a(x), first)  # and a new draw each call
    convkit.utils.set_random_seed(9)
    c = layers.RandomZoom(0.2)(x)
    convkit.utils.set_random_seed(9)
    np.testing.assert_array_equal(layers.RandomZoom(0.2)(x), c)


def test_random_layers_statistics(rng):
    x = images(rng, n=400, h=4, w=5, c=1)
    out = layers.RandomFlip("horizontal", seed=1)(x)
    flipped = np.all(out == x[:, :, ::-1], axis=(1, 2, 3)) & ~np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | np.all(out == x, axis=(1, 2, 3)))  # every image: flipped or untouched
    assert 160 < flipped.sum() < 240
    contrast = layers.RandomContrast((0.3, 0.2), value_range=(-1e9, 1e9), seed=2)(x)
    np.testing.assert_allclose(contrast.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)  # means are kept
    ratio = contrast.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    assert 0.7 - 1e-4 <= ratio.min() < 0.75 and 1.15 < ratio.max() <= 1.2 + 1e-4
    # translation by whole pixels along width only: content moves by at most 20% of the width
    shifted = layers.RandomTranslation(0, (0.4, 0.4), fill_mode="constant", seed=3)(x[:1])
    np.testing.assert_array_equal(shifted[0, :, 2:], x[0, :, :3])


def test_layers_in_models_summaries_and_saving(tmp_path, rng, capsys):
    convkit.utils.set_random_seed(0)
    model = convkit.Sequential([
        layers.Input((12, 12, 3)), layers.Rescaling(1 / 255), layers.RandomFlip("horizontal", seed=1),
        layers.RandomRotation(0.1), layers.RandomZoom(0.1), layers.RandomTranslation(0.1, 0.1),
        layers.RandomContrast(0.2), layers.Resizing(10, 10), layers.CenterCrop(8, 8),
        layers.Conv2D(2, 3, activation="relu"), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.summary()
    text = capsys.readouterr().out
    assert "(RandomRotation)" in text and "(CenterCrop)" in text and "(Resizing)" in text
    assert sum(l.count_params() for l in model.layers[:8]) == 0
    x = (rng.random((16, 12, 12, 3)) * 255).astype(np.uint8)
    y = rng.integers(0, 2, 16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # gradients pass the preprocessing layers
    model.save(tmp_path / "m.keras")
    loaded = convkit.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert loaded.layers[2].get_config() == model.layers[2].get_config()
    inp = layers.Input((12, 12, 3))
    a = layers.RandomFlip()(inp)
    branch = layers.Add()([layers.Resizing(6, 6)(a), layers.CenterCrop(6, 6)(a)])
    functional = convkit.Model(inp, layers.Flatten()(branch))
    assert functional.predict(x, verbose=0).shape == (16, 108)


@pytest.mark.parametrize("make", [lambda: layers.Resizing(5, 13),
                                  lambda: layers.Resizing(4, 4, crop_to_aspect_ratio=True),
                                  lambda: layers.CenterCrop(5, 6), lambda: layers.CenterCrop(12, 6),
                                  lambda: layers.RandomRotation(0.3, fill_mode="reflect", seed=1),
                                  lambda: layers.RandomZoom(0.3, fill_mode="constant", seed=1),
                                  lambda: layers.RandomFlip(seed=1), lambda: layers.RandomContrast(0.4, seed=1)])
def test_backward_is_the_transpose_of_forward(rng, make):
    """<layer(x), g> = <x, backward(g)> for the map the layer applied: each is linear in x (contrast
    clipping only at 0 here, which keeps the identity)."""
    layer, x = make(), images(rng, n=3, scale=100)
    with convkit.layers.Tape():
        y = layer(x, training=True)
        dx = layer.backward(y * 0 + (g := rng.standard_normal(y.shape).astype(np.float32)))
    np.testing.assert_allclose(np.sum(y * g), np.sum(x * dx), rtol=2e-4)


def test_tf_keras_2_experimental_preprocessing_names_warn():
    with pytest.warns(DeprecationWarning, match="layers.RandomFlip"):
        from convkit.layers.experimental.preprocessing import RandomFlip
    assert RandomFlip is layers.RandomFlip
    with pytest.warns(DeprecationWarning):
        assert convkit.layers.experimental.preprocessing.Rescaling is layers.Rescaling


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="interpolation"):
        layers.Resizing(4, 4, interpolation="bicubic")
    with pytest.raises(ValueError, match="fill_mode"):
        layers.RandomRotation(0.1, fill_mode="mirror")
    with pytest.raises(ValueError, match="mode"):
        layers.RandomFlip("diagonal")
    with pytest.raises(ValueError, match="expects images"):
        layers.RandomFlip()(np.zeros((2, 3), np.float32))


def test_layers_cast_real_inputs_to_float32_while_ops_stay_strict(rng):
    x = rng.random((2, 6, 6, 3))  # float64, as NumPy makes them
    conv, pool, dense = layers.Conv2D(2, 3), layers.MaxPooling2D(), layers.Dense(2)
    y = conv(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv(x.astype(np.float32)), rtol=1e-6)
    assert pool(x).dtype == np.float32 and layers.AveragePooling2D()(x.astype(np.int32)).dtype == np.float32
    assert dense(x.reshape(2, -1)).dtype == np.float32
    assert layers.Rescaling(1 / 255)((x * 255).astype(np.uint8)).dtype == np.float32
    model = convkit.Sequential([layers.Input((6, 6, 3)), layers.Conv2D(2, 3), layers.GlobalAveragePooling2D()])
    assert model(x).dtype == np.float32
    with pytest.raises(TypeError, match="real"):
        dense(np.ones((2, 3), np.complex64))
    with pytest.raises(TypeError, match="float32"):
        convkit.ops.conv2d(x, np.zeros((3, 3, 3, 2), np.float32))
