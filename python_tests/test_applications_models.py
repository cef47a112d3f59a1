"""convkit.applications' VGG, ResNet, InceptionV3 and MobileNet models against Keras's (PyTorch backend): the
same layers in the same order, the same weights one to one, the same parameter counts and, with Keras's
weights copied in, the same predictions; with and without the classifier, each pooling, other input sizes."""

import hashlib
import urllib.error

import numpy as np
import pytest

from keras_apps import (assert_comparison_catches, assert_same_model, assert_same_predictions, assert_same_structure,
                        build_pair, images, keras, needs_keras_weight_files, summary_lines)

import convkit
from convkit import applications as A
from convkit.datasets import DataUnavailableError

KA = keras.applications

# (model function, keyword arguments, input side): each family once at its full size with the classifier, the
# others small; every variant with and without the classifier, each pooling, a non-default input shape
CASES = [
    ("VGG16", dict(include_top=False, input_shape=(48, 64, 3)), None),
    ("VGG16", dict(include_top=False, input_shape=(32, 32, 3), pooling="max"), None),
    ("VGG16", dict(include_top=False, input_shape=(32, 40, 3), pooling="avg"), None),
    ("VGG19", dict(include_top=False, input_shape=(40, 32, 3), pooling="avg"), None),
    ("VGG19", dict(include_top=False, input_shape=(32, 32, 3), pooling="max", classes=3), None),
    ("ResNet50", dict(), 224),
    ("ResNet50", dict(include_top=False, input_shape=(64, 80, 3), pooling="avg"), None),
    ("ResNet50", dict(include_top=False, input_shape=(32, 32, 3), pooling="max", name="backbone"), None),
    ("ResNet101", dict(input_shape=(32, 32, 3), classes=10, classifier_activation=None), None),
    ("ResNet101", dict(include_top=False, input_shape=(32, 32, 3)), None),
    ("ResNet152", dict(include_top=False, input_shape=(32, 32, 3), pooling="avg"), None),
    ("ResNet152", dict(input_shape=(32, 32, 3)), None),
    ("ResNet152", dict(include_top=False, input_shape=(32, 32, 3), pooling="max"), None),
    ("InceptionV3", dict(), 299),
    ("InceptionV3", dict(include_top=False, input_shape=(75, 75, 3)), None),
    ("InceptionV3", dict(include_top=False, input_shape=(96, 80, 3), pooling="max"), None),
    ("InceptionV3", dict(include_top=False, input_shape=(75, 75, 3), pooling="avg"), None),
    ("MobileNet", dict(include_top=False, input_shape=(64, 64, 3), pooling="avg", alpha=0.5, depth_multiplier=2),
     None),
    ("MobileNet", dict(input_shape=(128, 128, 3), alpha=0.25, dropout=0.5, classes=7), None),
    ("MobileNet", dict(include_top=False, input_shape=(48, 48, 3), pooling="max"), None),
    ("MobileNet", dict(include_top=False, input_shape=(32, 32, 3), alpha=0.75), None),
    ("MobileNetV2", dict(), 224),
    ("MobileNetV2", dict(include_top=False, input_shape=(96, 96, 3), alpha=1.4, pooling="avg"), None),
    ("MobileNetV2", dict(input_shape=(64, 48, 3), alpha=0.35, classes=12), None),
    ("MobileNetV2", dict(include_top=False, input_shape=(33, 33, 3), pooling="max", alpha=0.75), None),
    ("MobileNetV2", dict(include_top=False, input_shape=(32, 32, 3), alpha=0.5), None),
]


@pytest.mark.parametrize("fn,kwargs,side", CASES, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_model_matches_keras(fn, kwargs, side):
    k, c = build_pair(getattr(KA, fn), getattr(A, fn), **kwargs)
    assert c.name == k.name
    assert_same_structure(k, c)
    shape = (side, side, 3) if side else kwargs["input_shape"]
    assert_same_predictions(k, c, images(shape))


@pytest.mark.parametrize("fn,kwargs,layer", [
    ("MobileNetV2", dict(input_shape=(64, 48, 3), alpha=0.35, classes=12), "Conv_1_bn"),
    ("VGG16", dict(include_top=False, input_shape=(48, 64, 3)), "block1_conv1"),
    ("ResNet50", dict(include_top=False, input_shape=(64, 80, 3), pooling="avg"), "conv2_block1_1_bn"),
], ids=["MobileNetV2-probabilities", "VGG16-features", "ResNet50-pooled"])
def test_the_comparison_fails_for_a_copy_one_percent_wrong(fn, kwargs, layer):
    k, c = build_pair(getattr(KA, fn), getattr(A, fn), **kwargs)
    assert_comparison_catches(k, c, images(kwargs["input_shape"]), layer)


@pytest.fixture(scope="module")
def vgg19():
    return build_pair(KA.VGG19, A.VGG19)


def test_vgg19_matches_keras(vgg19):
    k, c = vgg19
    assert_same_model(k, c, images((224, 224, 3)), params=143_667_240)


@pytest.mark.parametrize("which", ["vgg19", "mobilenet"])
def test_summaries_of_the_notes_read_as_keras(which, vgg19, monkeypatch):
    """The notes print VGG19's and MobileNet's summaries: line for line Keras's."""
    monkeypatch.setenv("COLUMNS", "200")
    k, c = vgg19 if which == "vgg19" else build_pair(KA.MobileNet, A.MobileNet)
    ours, theirs = summary_lines(c), summary_lines(k)
    assert ours == theirs
    total = {"vgg19": "143,667,240", "mobilenet": "4,253,864"}[which]
    assert any(line.startswith(f" Total params: {total} ") for line in ours)


def test_vgg16_with_its_classifier_counts_as_keras():
    """The classifier is VGG19's (compared above); its parameter count with VGG16's convolutions."""
    convkit.backend.clear_session(free_memory=False)
    model = A.VGG16(weights=None)
    assert model.count_params() == 138_357_544 and model.name == "vgg16"
    assert [l.name for l in model.layers[-4:]] == ["flatten", "fc1", "fc2", "predictions"]


def test_model_functions_and_modules_are_keras_s():
    assert A.resnet50.ResNet50 is A.resnet.ResNet50 is A.ResNet50
    for module, fn, mode in [("vgg16", "VGG16", "caffe"), ("vgg19", "VGG19", "caffe"), ("resnet", "ResNet101", "caffe"),
                             ("resnet50", "ResNet50", "caffe"), ("inception_v3", "InceptionV3", "tf"),
                             ("mobilenet", "MobileNet", "tf"), ("mobilenet_v2", "MobileNetV2", "tf")]:
        ours, theirs = getattr(A, module), getattr(KA, module)
        assert getattr(ours, fn) is getattr(A, fn)
        x = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
        np.testing.assert_array_equal(ours.preprocess_input(x.copy()), theirs.preprocess_input(x.copy()))
        assert ours.decode_predictions is A.imagenet_utils.decode_predictions
        assert list(_params(getattr(A, fn))) == list(_params(getattr(theirs, fn))), fn


def _params(fn):
    import inspect

    return {n: p.default for n, p in inspect.signature(fn).parameters.items()}.items()


def test_a_model_on_a_given_input_tensor_takes_its_source_inputs():
    L = convkit.layers
    raw = L.Input((40, 40, 3))
    x = L.Rescaling(2.0)(raw)
    model = A.MobileNetV2(input_tensor=x, include_top=False, weights=None, pooling="avg", alpha=0.35)
    assert model.layers[0] is raw.node.layer and model.layers[1] is x.node.layer
    assert model.output_shape == (None, 1280)
    assert model.predict(np.ones((2, 40, 40, 3)), verbose=0).shape == (2, 1280)


@pytest.mark.parametrize("call,message", [
    (lambda: A.VGG16(weights="nowhere.h5"), "The `weights` argument should be either `None`"),
    (lambda: A.ResNet50(weights="imagenet", classes=10), "`classes` should be 1000"),
    (lambda: A.InceptionV3(weights=None, include_top=False, input_shape=(64, 64, 3)), "at least 75x75"),
    (lambda: A.ResNet50(weights=None, include_top=True, input_shape=(None, None, 3)), "static `input_shape`"),
    (lambda: A.VGG19(weights="imagenet", classifier_activation="sigmoid"), "Only `None` and `softmax`"),
    (lambda: A.MobileNet(weights="imagenet", alpha=0.3), "alpha can be one of"),
    (lambda: A.MobileNet(weights="imagenet", depth_multiplier=2), "depth multiplier must be 1"),
    (lambda: A.MobileNetV2(weights="imagenet", alpha=0.3), "alpha must be one of `0.35`"),
    (lambda: A.MobileNet(weights="nowhere.h5"), "weights file to be loaded. Received weights=nowhere.h5"),
    (lambda: A.MobileNetV2(weights="nowhere.h5"), r"`imagenet` \(pre-training.*loaded.  Received `weights=nowhere.h5`"),
    (lambda: A.MobileNetV2(classes=10), "`include_top` as true, `classes` should be 1000. Received `classes=10`"),
    (lambda: A.InceptionV3(weights="nowhere.h5"), "to be loaded; Received: weights=nowhere.h5"),
    (lambda: A.InceptionV3(classes=10),
     'If using `weights="imagenet"` with `include_top=True`, `classes` should be 1000. Received classes=10'),
    (lambda: A.MobileNetV2(weights="imagenet", include_top=False, input_shape=(96, 96, 1)), "must have 3 channels"),
    (lambda: A.MobileNetV2(weights=None, input_tensor=convkit.layers.Input((64, 64, 3)), input_shape=(64, 48, 3)),
     r"input_tensor.shape\[2\] must equal input_shape\[1\]"),
])
def test_bad_arguments_are_refused_as_keras_refuses_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("fn", ["VGG16", "ResNet50", "InceptionV3", "MobileNet", "MobileNetV2", "DenseNet121",
                                "NASNetLarge", "EfficientNetB0"])
@pytest.mark.parametrize("bad", [dict(weights="nowhere.h5"), dict(weights="imagenet", classes=10)],
                         ids=["weights", "classes"])
def test_bad_weights_and_classes_are_worded_as_keras_words_them(fn, bad):
    """Keras words these checks differently from model to model; each message is that model's."""
    messages = []
    for model_fn in (getattr(KA, fn), getattr(A, fn)):
        with pytest.raises(ValueError) as refused:
            model_fn(**bad)
        messages.append(str(refused.value))
    assert messages[1] == messages[0]


def test_imagenet_weights_without_a_network_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("convkit._files.download",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.warns(UserWarning, match="Weights for input shape \\(224, 224\\) will be loaded"):
        with pytest.raises(DataUnavailableError) as e:
            A.MobileNetV2(weights="imagenet", include_top=False, input_shape=(64, 64, 3), alpha=0.35)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert name in str(e.value) and f"keras-applications/mobilenet_v2/{name}" in str(e.value)
    assert str(tmp_path / "keras" / "models") in str(e.value)


def _legacy_h5(model, path):
    """Keras 2's weight file layout, which the official application files have."""
    import h5py  # Keras's own dependency
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@needs_keras_weight_files
@pytest.mark.parametrize("fmt", ["keras3", "keras2"])
def test_weights_from_a_keras_file(fmt, tmp_path):
    kwargs = dict(include_top=False, input_shape=(64, 64, 3), pooling="avg", alpha=0.5)
    k, _ = build_pair(KA.MobileNetV2, A.MobileNetV2, **kwargs)
    path = tmp_path / ("w.weights.h5" if fmt == "keras3" else "w.h5")
    k.save_weights(str(path)) if fmt == "keras3" else _legacy_h5(k, path)
    convkit.backend.clear_session(free_memory=False)
    c = A.MobileNetV2(weights=str(path), **kwargs)
    assert_same_predictions(k, c, images((64, 64, 3)))


@needs_keras_weight_files
def test_imagenet_weights_from_keras_cache(tmp_path, monkeypatch):
    """'imagenet' finds the official file in Keras's cache (a Keras-written stand-in here)."""
    kwargs = dict(include_top=False, input_shape=(224, 224, 3), weights=None)
    k, _ = build_pair(KA.ResNet50, A.ResNet50, **{k: v for k, v in kwargs.items() if k != "weights"})
    folder = tmp_path / "models"
    folder.mkdir()
    _legacy_h5(k, folder / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    digest = hashlib.md5((folder / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").read_bytes()).hexdigest()
    monkeypatch.setitem(A.resnet._HASHES, "resnet50", ("0" * 32, digest))
    c = A.ResNet50(include_top=False, input_shape=(224, 224, 3), weights="imagenet")
    assert_same_predictions(k, c, images((224, 224, 3), batch=1))
