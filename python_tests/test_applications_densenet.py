"""convkit.applications.densenet against Keras's (PyTorch backend): the same layers, weights and predictions once
Keras's weights are copied in."""

import numpy as np
import pytest

from keras_apps import (assert_comparison_catches, assert_loads_weights_keras_saved, assert_same_model,
                        assert_same_predictions, assert_same_structure, build_pair, images, keras,
                        needs_keras_weight_files, summary_lines)

from keras.src.applications import densenet as kd  # noqa: E402

from convkit.applications import densenet as cd  # noqa: E402


@pytest.fixture(scope="module")
def densenet121():
    return build_pair(kd.DenseNet121, cd.DenseNet121)


def test_densenet121_at_224_predicts_as_keras(densenet121):
    k, c = densenet121
    assert_same_model(k, c, cd.preprocess_input(images((224, 224, 3))), params=8_062_504)


@pytest.mark.parametrize("layer", ["conv2_block1_1_bn", "conv5_block16_2_conv"])
def test_the_comparison_fails_for_a_copy_one_percent_wrong(densenet121, layer):
    k, c = densenet121
    assert_comparison_catches(k, c, cd.preprocess_input(images((224, 224, 3), batch=1)), layer)


@pytest.mark.parametrize("fn", ["DenseNet169", "DenseNet201"])
def test_deeper_densenets_match_keras_on_small_images(fn):
    k, c = build_pair(getattr(kd, fn), getattr(cd, fn), input_shape=(32, 32, 3))
    assert_same_structure(k, c)
    x = cd.preprocess_input(images((32, 32, 3)))
    assert_same_predictions(k, c, x)


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_features_with_each_pooling_on_another_input_size(pooling):
    k, c = build_pair(kd.DenseNet121, cd.DenseNet121, include_top=False, pooling=pooling, input_shape=(72, 64, 3))
    assert_same_structure(k, c)
    assert c.output_shape == ((None, 2, 2, 1024) if pooling is None else (None, 1024))
    assert_same_predictions(k, c, cd.preprocess_input(images((72, 64, 3))))


@needs_keras_weight_files
def test_weights_from_files_keras_saved(densenet121, tmp_path):
    assert_loads_weights_keras_saved(densenet121[0], cd.DenseNet121, tmp_path)


def requested_files(monkeypatch, keras_module, keras_fn, convkit_fn, **kwargs):
    """(what Keras's ``get_file`` is asked for, what convkit's ``load_weights`` is asked for) with 'imagenet'
    weights, neither fetching anything."""
    from convkit.applications import imagenet_utils

    class Asked(Exception):
        pass

    def keras_get_file(fname, origin, cache_subdir, file_hash):
        raise Asked(fname, file_hash, origin)

    ours = []
    monkeypatch.setattr(keras_module.file_utils, "get_file", keras_get_file)
    monkeypatch.setattr(imagenet_utils, "load_weights", lambda model, weights, *file: ours.append(file))
    keras.backend.clear_session()
    with pytest.raises(Asked) as asked:
        keras_fn(**kwargs)
    convkit_fn(**kwargs)
    return asked.value.args, ours[0]


@pytest.mark.parametrize("include_top", [True, False])
def test_imagenet_weights_are_keras_official_file(monkeypatch, include_top):
    theirs, ours = requested_files(monkeypatch, kd, kd.DenseNet121, cd.DenseNet121, include_top=include_top)
    assert ours == theirs
    for depth in (169, 201):
        assert cd._ORIGIN + f"densenet{depth}_weights_tf_dim_ordering_tf_kernels.h5" == \
            getattr(kd, f"DENSENET{depth}_WEIGHT_PATH")


def test_features_of_images_of_any_size():
    k, c = build_pair(kd.DenseNet121, cd.DenseNet121, include_top=False, pooling="avg")
    assert c.input_shape == (None, None, None, 3) and c.output_shape == (None, 1024)
    for shape in [(64, 48, 3), (37, 53, 3)]:
        assert_same_predictions(k, c, cd.preprocess_input(images(shape, batch=1)))


def test_summary_reads_as_keras(densenet121, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    k, c = densenet121
    assert summary_lines(c) == summary_lines(k)


def test_input_tensor_from_other_layers_makes_them_part_of_the_model():
    import convkit

    convkit.backend.clear_session(free_memory=False)
    inp = convkit.Input((40, 36, 3))
    scaled = convkit.layers.Rescaling(2.0, name="double")(inp)
    model = cd.DenseNet121(weights=None, include_top=False, input_tensor=scaled, pooling="avg")
    assert [l.name for l in model.layers[:3]] == [inp.node.layer.name, "double", "zero_padding2d"]
    x = cd.preprocess_input(images((40, 36, 3), batch=1))
    alone = cd.DenseNet121(weights=None, include_top=False, input_shape=(40, 36, 3), pooling="avg")
    alone.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), alone.predict(2 * x, verbose=0), rtol=1e-5, atol=1e-6)
