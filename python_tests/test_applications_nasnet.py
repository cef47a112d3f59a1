"""convkit.applications.nasnet against Keras's (PyTorch backend): the same layers, weights and predictions once
Keras's weights are copied in. Keras refuses NASNetMobile on its PyTorch backend (an open Keras issue), so the
reference is Keras's NASNet builder with NASNetMobile's settings."""

import functools

import pytest

from keras_apps import (assert_comparison_catches, assert_loads_weights_keras_saved, assert_same_model,
                        assert_same_predictions, assert_same_structure, build_pair, images, needs_keras_weight_files,
                        summary_lines)

from keras.src.applications import nasnet as kn  # noqa: E402

from convkit.applications import nasnet as cn  # noqa: E402

keras_mobile = functools.partial(kn.NASNet, penultimate_filters=1056, num_blocks=4, stem_block_filters=32,
                                 skip_reduction=False, filter_multiplier=2, default_size=224, name="nasnet_mobile")


def keras_mobile_as_keras_calls_it(include_top=True, input_shape=None, **kwargs):
    if not include_top and input_shape is None:
        input_shape = (224, 224, 3)
    return keras_mobile(input_shape=input_shape, include_top=include_top, **kwargs)


@pytest.fixture(scope="module")
def mobile():
    return build_pair(keras_mobile_as_keras_calls_it, cn.NASNetMobile)


def test_nasnet_mobile_at_224_predicts_as_keras(mobile):
    k, c = mobile
    assert_same_model(k, c, cn.preprocess_input(images((224, 224, 3))), params=5_326_716)


@pytest.mark.parametrize("layer", ["stem_bn1", "normal_conv_1_12"])
def test_the_comparison_fails_for_a_copy_one_percent_wrong(mobile, layer):
    k, c = mobile
    assert_comparison_catches(k, c, cn.preprocess_input(images((224, 224, 3), batch=1)), layer)


def test_nasnet_large_matches_keras_on_the_smallest_images():
    k, c = build_pair(kn.NASNetLarge, cn.NASNetLarge, input_shape=(32, 32, 3))
    assert_same_model(k, c, cn.preprocess_input(images((32, 32, 3), batch=1)), params=88_949_818)


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_features_with_each_pooling_on_another_input_size(pooling):
    k, c = build_pair(keras_mobile_as_keras_calls_it, cn.NASNetMobile, include_top=False, pooling=pooling,
                      input_shape=(72, 64, 3))
    assert_same_structure(k, c)
    assert c.output_shape == ((None, 3, 2, 1056) if pooling is None else (None, 1056))
    assert_same_predictions(k, c, cn.preprocess_input(images((72, 64, 3))))


def test_mobile_without_top_defaults_to_224():
    assert cn.NASNetMobile(include_top=False, weights=None).input_shape == (None, 224, 224, 3)


def test_keras_argument_checks():
    with pytest.raises(ValueError, match="must be static"):
        cn.NASNetLarge(include_top=False, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"`penultimate_filters` must be a multiple of 24 \* "):
        cn.NASNet(penultimate_filters=1000, weights=None, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="ImageNet weights can only be loaded with NASNetLarge or NASNetMobile"):
        cn.NASNet(input_shape=(32, 32, 3), penultimate_filters=96, num_blocks=1, stem_block_filters=8,
                  include_top=False, default_size=96)


@needs_keras_weight_files
def test_weights_from_files_keras_saved(mobile, tmp_path):
    assert_loads_weights_keras_saved(mobile[0], cn.NASNetMobile, tmp_path)


def test_imagenet_weights_are_keras_official_files(monkeypatch):
    from test_applications_densenet import requested_files

    theirs, ours = requested_files(monkeypatch, kn, keras_mobile_as_keras_calls_it, cn.NASNetMobile,
                                   include_top=False)
    assert ours == theirs
    (_, large_url, _), (_, large_notop_url, _) = cn._FILES[331]
    assert (cn._ORIGIN + large_url, cn._ORIGIN + large_notop_url) == (kn.NASNET_LARGE_WEIGHT_PATH,
                                                                      kn.NASNET_LARGE_WEIGHT_PATH_NO_TOP)


def test_summary_reads_as_keras(mobile, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    k, c = mobile
    assert summary_lines(c) == summary_lines(k)
