"""convkit.applications.imagenet_utils against Keras's: preprocessing, decoding predictions, input shape
rules, and finding the official files in Keras's cache or failing clearly without a network."""

import hashlib
import json
import urllib.error
import warnings

import numpy as np
import pytest

from keras_apps import keras, needs_keras_weight_files

import convkit
from convkit.applications import imagenet_utils as iu
from convkit.datasets import DataUnavailableError


from keras.src.applications import imagenet_utils as kiu  # noqa: E402 (its CLASS_INDEX too)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("data_format,shape", [("channels_last", (2, 5, 4, 3)), ("channels_last", (5, 4, 3)),
                                               ("channels_first", (2, 3, 5, 4)), ("channels_first", (3, 5, 4))])
def test_preprocess_input_matches_keras(mode, data_format, shape):
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    ours = iu.preprocess_input(x.copy(), data_format=data_format, mode=mode)
    theirs = kiu.preprocess_input(x.copy(), data_format=data_format, mode=mode)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_array_equal(ours, theirs)
    # integers become float32, as Keras makes them floatx
    as_int = iu.preprocess_input(x.astype(np.uint8), data_format=data_format, mode=mode)
    assert as_int.dtype == np.float32
    np.testing.assert_array_equal(as_int, theirs)


def test_preprocess_input_default_is_caffe_channels_last_and_works_in_place():
    x = np.full((1, 2, 2, 3), 200.0, np.float32)
    x[..., 0] = 10.0  # red
    y = iu.preprocess_input(x)
    np.testing.assert_allclose(y[0, 0, 0], [200 - 103.939, 200 - 116.779, 10 - 123.68], rtol=1e-6)
    t = np.full((2, 2, 3), 255.0, np.float32)
    assert iu.preprocess_input(t, mode="tf") is t and np.all(t == 1.0)


def test_preprocess_input_errors():
    with pytest.raises(ValueError, match=r"mode to be one of `caffe`, `tf` or `torch`. Received: mode=keras"):
        iu.preprocess_input(np.zeros((1, 2, 2, 3)), mode="keras")
    with pytest.raises(ValueError, match=r"Received: data_format=NHWC"):
        iu.preprocess_input(np.zeros((1, 2, 2, 3)), data_format="NHWC")


@pytest.fixture
def class_index(tmp_path, monkeypatch):
    """A class index in the official format in a fresh Keras cache, its digest taken as the official one."""
    names = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    path = tmp_path / "models" / "imagenet_class_index.json"
    path.parent.mkdir()
    path.write_text(json.dumps(names))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "convkit_cache"))
    monkeypatch.setattr(iu, "CLASS_INDEX_HASH", hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setattr(iu, "_class_index", None)
    monkeypatch.setattr(kiu, "CLASS_INDEX", names)  # Keras's own reader would download the real one
    return names


def test_decode_predictions_matches_keras(class_index):
    preds = np.random.default_rng(1).dirichlet(np.ones(1000), size=3).astype(np.float32)
    preds[0, [7, 900, 3, 512, 44]] = [0.9, 0.8, 0.7, 0.6, 0.5]
    ours = iu.decode_predictions(preds)
    assert ours[0] == [("n00000007", "class_7", np.float32(0.9)), ("n00000900", "class_900", np.float32(0.8)),
                       ("n00000003", "class_3", np.float32(0.7)), ("n00000512", "class_512", np.float32(0.6)),
                       ("n00000044", "class_44", np.float32(0.5))]
    assert ours == kiu.decode_predictions(preds)
    assert iu.decode_predictions(preds, top=2) == kiu.decode_predictions(preds, top=2)
    assert [len(r) for r in iu.decode_predictions(preds, top=1)] == [1, 1, 1]


def test_decode_predictions_refuses_other_shapes(class_index):
    for bad in (np.zeros((2, 10)), np.zeros(1000), np.zeros((1, 1000, 1))):
        with pytest.raises(ValueError, match=r"a 2D array of shape \(samples, 1000\)\). Received array with shape"):
            iu.decode_predictions(bad)


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return f"ValueError: {e}"


@pytest.mark.parametrize("case", [
    (None, 224, 32, True, None), (None, 224, 32, False, None), (None, 224, 32, True, "imagenet"),
    ((224, 224, 3), 224, 32, True, "imagenet"), ((200, 200, 3), 224, 32, True, "imagenet"),
    ((200, 200, 3), 224, 32, False, "imagenet"), ((200, 200, 1), 224, 32, False, "imagenet"),
    ((200, 200, 1), 224, 32, True, None), ((31, 200, 3), 224, 32, False, None), ((200, 31, 3), 224, 32, False, None),
    ((None, None, 3), 224, 32, False, None), ((None, None, 3), 224, 32, True, None), ((64, 64), 224, 32, False, None),
    ((3, 64, 64), 299, 75, False, None), ((75, 75, 3), 299, 75, False, "imagenet"), ((74, 80, 3), 299, 75, False, None),
])
def test_obtain_input_shape_follows_keras(case):
    shape, default, minimum, flatten, weights = case
    args = dict(default_size=default, min_size=minimum, data_format="channels_last", require_flatten=flatten,
                weights=weights)
    with warnings.catch_warnings():  # the channel-count warning is checked below
        warnings.simplefilter("ignore")
        ours = _outcome(iu.obtain_input_shape, shape, **args)
        theirs = _outcome(kiu.obtain_input_shape, shape, **args)
    assert ours == (tuple(theirs) if isinstance(theirs, (tuple, list)) else theirs)


def test_obtain_input_shape_messages():
    rules = dict(default_size=224, min_size=32, data_format="channels_last")
    with pytest.raises(ValueError, match=r"`input_shape` should be \(224, 224, 3\)"):
        iu.obtain_input_shape((200, 200, 3), require_flatten=True, weights="imagenet", **rules)
    with pytest.raises(ValueError, match="The input must have 3 channels"):
        iu.obtain_input_shape((200, 200, 1), require_flatten=False, weights="imagenet", **rules)
    with pytest.raises(ValueError, match="Input size must be at least 32x32"):
        iu.obtain_input_shape((16, 200, 3), require_flatten=False, **rules)
    with pytest.raises(ValueError, match="must be a tuple of three integers"):
        iu.obtain_input_shape((200, 200, 3, 1), require_flatten=False, **rules)
    with pytest.raises(ValueError, match="you should specify a static `input_shape`"):
        iu.obtain_input_shape((None, None, 3), require_flatten=True, **rules)
    with pytest.warns(UserWarning, match="with 4 input channels"):
        assert iu.obtain_input_shape((64, 64, 4), require_flatten=False, **rules) == (64, 64, 4)


def test_validate_activation_and_weights_argument(tmp_path):
    iu.validate_activation("relu", None)
    iu.validate_activation(None, "imagenet")
    iu.validate_activation("softmax", "imagenet")
    with pytest.raises(ValueError, match="Only `None` and `softmax` activations are allowed"):
        iu.validate_activation("sigmoid", "imagenet")
    iu.check_weights_argument(None, True, 10)
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"")
    iu.check_weights_argument(str(path), True, 10)
    with pytest.raises(ValueError, match="The `weights` argument should be either `None`"):
        iu.check_weights_argument(str(tmp_path / "missing.h5"), True, 1000)
    with pytest.raises(ValueError, match="`classes` should be 1000.  Received classes=10"):
        iu.check_weights_argument("imagenet", True, 10)
    iu.check_weights_argument("imagenet", False, 10)


def test_image_input_takes_the_source_inputs_of_a_tensor():
    L = convkit.layers
    img, inputs = iu.image_input(None, (32, 32, 3))
    assert img is inputs and img.shape == (None, 32, 32, 3)
    source = L.Input((40, 40, 3))
    cropped = L.Cropping2D(4)(L.Rescaling(1 / 255)(source))
    img, inputs = iu.image_input(cropped, (32, 32, 3))
    assert img is cropped and inputs is source
    model = convkit.Model(inputs, iu.pool_features(L.Conv2D(2, 3)(img), "avg"))
    assert model.output_shape == (None, 2) and model.predict(np.ones((1, 40, 40, 3)), verbose=0).shape == (1, 2)
    with pytest.raises(ValueError, match="`input_tensor` must be a symbolic tensor"):
        iu.image_input(np.zeros((1, 32, 32, 3)), (32, 32, 3))


def test_correct_pad_matches_keras():
    for side in (224, 225, None):
        for k in (3, (3, 5)):
            ours = iu.correct_pad(convkit.layers.Input((side, side, 3)), k)
            assert ours == kiu.correct_pad(keras.Input((side, side, 3)), k)


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Empty Keras and convkit caches, and every download failing."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("convkit._files.download", offline)
    return tmp_path


def test_imagenet_weights_offline_name_the_file_the_url_and_the_folder(no_network):
    model = convkit.Sequential([convkit.layers.Input((4,)), convkit.layers.Dense(2)])
    url = "https://storage.googleapis.com/tensorflow/keras-applications/x/x_notop.h5"
    with pytest.raises(DataUnavailableError) as e:
        iu.load_weights(model, "imagenet", "x_notop.h5", "0" * 32, url)
    message = str(e.value)
    assert "x_notop.h5" in message and url in message and str(no_network / "keras" / "models") in message
    iu.load_weights(model, None, "x_notop.h5", "0" * 32, url)  # None loads nothing and needs no file


def _keras_and_convkit_twins():
    keras.backend.clear_session()
    convkit.backend.clear_session(free_memory=False)
    k = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                          keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten(), keras.layers.Dense(3)])
    c = convkit.Sequential([convkit.layers.Input((6, 6, 3)), convkit.layers.Conv2D(4, 3, name="conv"),
                            convkit.layers.BatchNormalization(name="bn"), convkit.layers.Flatten(),
                            convkit.layers.Dense(3)])
    return k, c


@pytest.fixture
def cached_twins(no_network):
    """Twin models and the Keras one's weights saved in Keras's cache as 'twin.weights.h5'."""
    k, c = _keras_and_convkit_twins()
    folder = no_network / "keras" / "models"
    folder.mkdir(parents=True)
    path = folder / "twin.weights.h5"
    k.save_weights(str(path))
    return k, c, path


def test_imagenet_weights_come_from_keras_cache_when_the_digest_matches(cached_twins):
    _, _, path = cached_twins
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    assert iu.official_file("twin.weights.h5", digest, "https://example.invalid/twin.weights.h5") == str(path)
    with pytest.raises(DataUnavailableError, match="twin.weights.h5"):  # a copy that is not the official file
        iu.official_file("twin.weights.h5", "f" * 32, "https://example.invalid/twin.weights.h5")


@needs_keras_weight_files
def test_imagenet_weights_load_from_keras_cache(cached_twins):
    k, c, path = cached_twins
    iu.load_weights(c, "imagenet", "twin.weights.h5", hashlib.md5(path.read_bytes()).hexdigest(),
                    "https://example.invalid/twin.weights.h5")
    for a, b in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
