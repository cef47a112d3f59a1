"""convkit.applications.efficientnet against Keras's (PyTorch backend): the same layers, weights and predictions
once Keras's weights are copied in. B0 runs at its full size; B1-B7, whose structure is B0's scaled, at 32x32."""

import math

import numpy as np
import pytest

from keras_apps import (assert_comparison_catches, assert_loads_weights_keras_saved, assert_same_model,
                        assert_same_predictions, assert_same_structure, build_pair, images, needs_keras_weight_files,
                        summary_lines)

from keras.src.applications import efficientnet as ke  # noqa: E402

import convkit  # noqa: E402
from convkit.applications import efficientnet as ce  # noqa: E402

COUNTS = {"B0": 5_330_571, "B1": 7_856_239, "B2": 9_177_569, "B3": 12_320_535, "B4": 19_466_823,
          "B5": 30_562_527, "B6": 43_265_143, "B7": 66_658_687}


@pytest.fixture(scope="module")
def b0():
    return build_pair(ke.EfficientNetB0, ce.EfficientNetB0)


def test_b0_at_224_predicts_as_keras(b0):
    k, c = b0
    assert_same_model(k, c, images((224, 224, 3)), params=COUNTS["B0"])  # the model scales pixels itself


@pytest.mark.parametrize("layer", ["block5a_project_bn", "block6a_project_conv"])
def test_the_comparison_fails_for_a_copy_one_percent_wrong(b0, layer):
    k, c = b0
    assert_comparison_catches(k, c, images((224, 224, 3), batch=1), layer)


@pytest.mark.parametrize("variant", ["B1", "B2", "B3", "B4", "B5", "B6", "B7"])
def test_larger_variants_match_keras_on_the_smallest_images(variant):
    fn = f"EfficientNet{variant}"
    k, c = build_pair(getattr(ke, fn), getattr(ce, fn), input_shape=(32, 32, 3))
    assert_same_model(k, c, images((32, 32, 3), batch=1), params=COUNTS[variant])


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_features_with_each_pooling_on_another_input_size(pooling):
    k, c = build_pair(ke.EfficientNetB0, ce.EfficientNetB0, include_top=False, pooling=pooling,
                      input_shape=(72, 64, 3))
    assert_same_structure(k, c)
    assert c.output_shape == ((None, 3, 2, 1280) if pooling is None else (None, 1280))
    assert_same_predictions(k, c, images((72, 64, 3)))


def test_drop_connect_and_top_dropout_act_only_in_training(b0):
    _, c = b0
    drops = [l for l in c.layers if isinstance(l, convkit.layers.Dropout)]
    assert [l.name for l in drops][-1] == "top_dropout" and drops[-1].rate == 0.2
    assert drops[0].name == "block2b_drop" and drops[0].noise_shape == (None, 1, 1, 1)
    assert drops[0].rate == pytest.approx(0.2 * 2 / 16)


def test_imagenet_weights_add_keras_rescaling_after_the_normalization(monkeypatch):
    loaded = []
    monkeypatch.setattr(ce.imagenet_utils, "load_weights", lambda model, *args: loaded.append(args))
    convkit.backend.clear_session(free_memory=False)
    c = ce.EfficientNetB1(include_top=False, input_shape=(32, 32, 3))
    names = [type(l).__name__ for l in c.layers[:5]]
    assert names == ["InputLayer", "Rescaling", "Normalization", "Rescaling", "ZeroPadding2D"]
    np.testing.assert_allclose(c.layers[3].scale, [1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)], rtol=1e-6)
    assert loaded == [("imagenet", "efficientnetb1_notop.h5", "74c4e6b3e1f6a1eea24c589628592432",
                       "https://storage.googleapis.com/keras-applications/efficientnetb1_notop.h5")]
    plain = ce.EfficientNetB1(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert "Rescaling" not in [type(l).__name__ for l in plain.layers[3:]]


def test_official_files_are_keras_files():
    assert ce._HASHES == ke.WEIGHTS_HASHES and ce._ORIGIN == ke.BASE_WEIGHTS_PATH


def test_keras_argument_checks():
    with pytest.raises(ValueError, match="`classes` should be 1000"):
        ce.EfficientNetB0(classes=10)
    with pytest.raises(ValueError, match="The `weights` argument should be either"):
        ce.EfficientNetB0(weights="no/such/file.h5")
    with pytest.raises(ValueError, match="Input size must be at least 32x32"):
        ce.EfficientNetB0(weights=None, include_top=False, input_shape=(31, 64, 3))
    with pytest.raises(ValueError, match="The number of repeats in `EfficientNet` must be > 0"):
        ce.EfficientNet(1.0, 1.0, 224, weights=None, blocks_args=[dict(ce.DEFAULT_BLOCKS_ARGS[0], repeats=0)])
    assert ce.preprocess_input is not None and ce.preprocess_input(7) == 7


@needs_keras_weight_files
def test_weights_from_files_keras_saved(b0, tmp_path):
    assert_loads_weights_keras_saved(b0[0], ce.EfficientNetB0, tmp_path)


def test_features_of_images_of_any_size():
    k, c = build_pair(ke.EfficientNetB0, ce.EfficientNetB0, include_top=False, pooling="max")
    assert c.input_shape == (None, None, None, 3) and c.output_shape == (None, 1280)
    for shape in [(64, 48, 3), (37, 53, 3)]:
        assert_same_predictions(k, c, images(shape, batch=1))


def test_summary_reads_as_keras(b0, monkeypatch):
    """A branching model's summary (squeeze-and-excitation, residual adds): line for line Keras's."""
    monkeypatch.setenv("COLUMNS", "200")
    k, c = b0
    assert summary_lines(c) == summary_lines(k)
