"""Keras's files, both ways: weights (Keras 3 '.weights.h5', Keras 2 HDF5) and whole models ('.keras', '.h5')
written by Keras (PyTorch backend) and read by convkit, and the reverse, with equal predictions; format
detection, suffix rules and damaged files."""

import os
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

import convkit  # noqa: E402
from convkit import saving  # noqa: E402


# -- the same architectures in both libraries ------------------------------------------------------------------

def mlp(lib):
    L = lib.layers
    return lib.Sequential([L.InputLayer(shape=(6,)), L.Dense(8, activation="relu"), L.Dense(5, activation="tanh"),
                           L.Dense(3)])


def cnn(lib):
    L = lib.layers
    return lib.Sequential([L.InputLayer(shape=(10, 10, 3)), L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(),
                           L.MaxPooling2D(), L.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
                           L.SeparableConv2D(5, 3, padding="same", activation="relu"), L.Flatten(), L.Dense(3)])


def branches(lib, nested=True):
    """Inception-like branches of unequal length, BatchNormalization, depthwise and separable convolutions, a
    residual Add, a layer called twice and (optionally) a nested Sequential."""
    L = lib.layers
    x = lib.Input((9, 9, 3))
    stem = L.Conv2D(6, 1, name="stem")(x)
    b1 = L.Conv2D(4, 1)(stem)
    b2 = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(L.Conv2D(3, 1)(stem)))
    b3 = L.SeparableConv2D(4, 3, padding="same")(L.AveragePooling2D(3, 1, padding="same")(stem))
    b4 = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(stem)
    cat = L.Concatenate()([b1, b2, b3, b4])
    res = L.Add()([L.Conv2D(24, 1)(cat), cat])
    shared = L.Conv2D(24, 3, padding="same", activation="relu")
    y = shared(shared(res))
    y = L.GlobalAveragePooling2D()(L.BatchNormalization()(y))
    if nested:
        y = lib.Sequential([L.InputLayer(shape=(24,)), L.Dense(7, activation="relu"), L.BatchNormalization(),
                            L.Dense(4)])(y)
    return lib.Model(x, L.Dense(2)(y))


def misc(lib):
    """The other layers both libraries have, with a regularizer, a constraint and fixed normalization."""
    L = lib.layers
    x = lib.Input((8, 8, 3))
    y = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0])(L.Rescaling(0.5, offset=0.1)(x))
    y = L.Conv2D(4, 3, strides=2, activation="relu", kernel_regularizer=lib.regularizers.L2(0.01),
                 kernel_constraint=lib.constraints.MaxNorm(2.0))(L.ZeroPadding2D(1)(y))
    y = L.ReLU(max_value=6.0)(L.LeakyReLU(0.2)(L.Dropout(0.3)(L.Cropping2D(1)(y))))
    a, b = L.GlobalMaxPooling2D()(y), L.GlobalAveragePooling2D()(y)
    y = L.Concatenate()([L.Multiply()([a, b]), L.Subtract()([a, b]), L.Maximum()([a, b]), L.Average()([a, b]),
                         L.Minimum()([a, b])])
    y = L.Flatten()(L.Permute((2, 1))(L.Reshape((5, 4))(y)))
    return lib.Model(x, L.Dense(3, activation="softmax")(L.Activation("tanh")(y)))


ARCHS = {"mlp": mlp, "cnn": cnn, "branches": branches, "misc": misc}


def randomized(model, rng):
    """Random weights (positive variances), so that every weight's place shows in the predictions."""
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in v.name
                       else rng.normal(0, 0.5, w.shape).astype("float32")
                       for v, w in zip(model.weights, model.get_weights())])
    return model


def inputs_for(model, rng, n=4):
    return rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")


def keras_predict(model, x):
    return np.asarray(model.predict(x, verbose=0))


def assert_same(km, cm, x):
    np.testing.assert_allclose(cm.predict(x, verbose=0), keras_predict(km, x), rtol=1e-5, atol=1e-5)


def keras2_weights_file(km, path):
    """A Keras 2 weights file (root attribute layer_names, one group per layer), as the Keras applications'."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, km)


def tf_keras2_weights_file(km, path):
    """A weights file as tf.keras 2 wrote the Keras applications' ('block1_conv1/kernel:0', byte-string names,
    layers without weights listed too), written by hand from the Keras model's weights."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [l.name.encode() for l in km.layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.13.1"
        for layer in km.layers:
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{'/'.join(w.path.split('/')[-2:])}:0".encode() for w in weights]
            g = f.create_group(layer.name)
            g.attrs["weight_names"] = names
            for name, w in zip(names, weights):
                g.create_dataset(name.decode(), data=np.asarray(w))


# -- layer order ------------------------------------------------------------------------------------------------

def test_functional_layers_are_listed_in_keras_order():
    km, cm = branches(keras), branches(convkit)
    assert [type(l).__name__ for l in cm.layers] == [type(l).__name__ for l in km.layers]
    assert [w.shape for w in cm.get_weights()] == [tuple(w.shape) for w in km.get_weights()]


def test_convkit_files_written_in_the_old_layer_order_still_load(rng, tmp_path):
    model = randomized(branches(convkit, nested=False), rng)
    x = inputs_for(model, rng)
    model.save_weights(tmp_path / "w.convkit")
    with zipfile.ZipFile(tmp_path / "w.convkit") as zf:  # put the file's weights in another order
        import json
        meta = json.loads(zf.read("convkit.json"))
        arrays = {n: zf.read(n) for n in zf.namelist() if n.startswith("weights/")}
    perm = list(range(len(meta["weights"])))[::-1]
    meta["weights"] = [meta["weights"][i] for i in perm]
    with zipfile.ZipFile(tmp_path / "w.convkit", "w") as zf:
        zf.writestr("convkit.json", json.dumps(meta))
        for j, i in enumerate(perm):
            zf.writestr(f"weights/{j:04d}.npy", arrays[f"weights/{i:04d}.npy"])
    fresh = branches(convkit, nested=False)
    for a, b in zip(fresh.layers, model.layers):  # the names the file speaks of
        for v, w in zip(a.weights, b.weights):
            v.name = w.name
    fresh.load_weights(tmp_path / "w.convkit")
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))


# -- Keras writes weights, convkit reads ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("fmt", ["keras3", "keras2", "tf.keras2"])
def test_keras_weights_load_into_convkit(arch, fmt, rng, tmp_path):
    km = randomized(ARCHS[arch](keras), rng)
    path = tmp_path / ("w.weights.h5" if fmt == "keras3" else "w.h5")
    {"keras3": lambda: km.save_weights(path), "keras2": lambda: keras2_weights_file(km, path),
     "tf.keras2": lambda: tf_keras2_weights_file(km, path)}[fmt]()
    cm = ARCHS[arch](convkit)
    cm.load_weights(path)
    assert_same(km, cm, inputs_for(cm, rng))


def test_format_is_found_from_the_contents_not_the_name(rng, tmp_path):
    km = randomized(cnn(keras), rng)
    km.save_weights(tmp_path / "w.weights.h5")
    os.replace(tmp_path / "w.weights.h5", tmp_path / "weights.bin")
    cm = cnn(convkit)
    cm.load_weights(tmp_path / "weights.bin")
    assert_same(km, cm, inputs_for(cm, rng))


def test_keras2_by_name_loads_the_layers_of_that_name(rng, tmp_path):
    """A headless model takes the layers it shares with the file, whatever their places (as include_top=False)."""
    L = keras.layers
    km = randomized(keras.Sequential([L.InputLayer(shape=(6,)), L.Dense(5, name="a"), L.Dense(4, name="b"),
                                      L.Dense(3, name="top")]), rng)
    keras2_weights_file(km, tmp_path / "w.h5")
    C = convkit.layers
    cm = convkit.Sequential([C.InputLayer(shape=(6,)), C.Dense(5, name="a"), C.Dense(4, name="b"),
                             C.Dense(2, name="other")])
    other = cm.get_layer("other").get_weights()
    with pytest.raises(ValueError, match=r"'other' in the model, 'top' in the file.*\(4, 2\).*\(4, 3\)"):
        cm.load_weights(tmp_path / "w.h5")  # by order, the third layers are paired
    cm.load_weights(tmp_path / "w.h5", by_name=True)
    for name in "ab":
        for got, want in zip(cm.get_layer(name).get_weights(), km.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(cm.get_layer("other").get_weights(), other):
        np.testing.assert_array_equal(got, want)


def test_keras2_by_name_skip_mismatch(rng, tmp_path):
    L, C = keras.layers, convkit.layers
    km = randomized(keras.Sequential([L.InputLayer(shape=(6,)), L.Dense(5, name="a"), L.Dense(3, name="top")]), rng)
    keras2_weights_file(km, tmp_path / "w.h5")
    cm = convkit.Sequential([C.InputLayer(shape=(6,)), C.Dense(5, name="a"), C.Dense(7, name="top")])
    with pytest.raises(ValueError, match=r"'top'.*\(5, 7\).*\(5, 3\)"):
        cm.load_weights(tmp_path / "w.h5", by_name=True)
    before = cm.get_layer("top").get_weights()
    with pytest.warns(UserWarning, match="top"):
        cm.load_weights(tmp_path / "w.h5", by_name=True, skip_mismatch=True)
    np.testing.assert_array_equal(cm.get_layer("a").get_weights()[0], km.get_layer("a").get_weights()[0])
    np.testing.assert_array_equal(cm.get_layer("top").get_weights()[0], before[0])


def test_keras3_shape_mismatch_names_the_layer_and_both_shapes(rng, tmp_path):
    km = randomized(mlp(keras), rng)
    km.save_weights(tmp_path / "w.weights.h5")
    C = convkit.layers
    cm = convkit.Sequential([C.InputLayer(shape=(6,)), C.Dense(8), C.Dense(9), C.Dense(3)])
    with pytest.raises(ValueError, match=r"w\.weights\.h5.*dense.*\(8, 9\).*\(8, 5\)"):
        cm.load_weights(tmp_path / "w.weights.h5")
    with pytest.warns(UserWarning, match="skipping"):
        cm.load_weights(tmp_path / "w.weights.h5", skip_mismatch=True)
    np.testing.assert_array_equal(cm.layers[0].get_weights()[0], km.layers[0].get_weights()[0])


def test_keras3_missing_layer_is_named(rng, tmp_path):
    km = randomized(mlp(keras), rng)
    km.save_weights(tmp_path / "w.weights.h5")
    C = convkit.layers
    cm = convkit.Sequential([C.InputLayer(shape=(6,)), C.Dense(8), C.Dense(5), C.Dense(3), C.Dense(2, name="extra")])
    with pytest.raises(ValueError, match=r"no weights for layer 'extra' \(layers/dense_3\)"):
        cm.load_weights(tmp_path / "w.weights.h5")


def test_by_name_is_refused_for_keras3_files(rng, tmp_path):
    km = mlp(keras)
    km.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="by_name"):
        mlp(convkit).load_weights(tmp_path / "w.weights.h5", by_name=True)


def test_keras2_long_layer_name_lists_split_in_chunks_are_read(rng, tmp_path):
    """Keras splits an attribute over 64 KB into layer_names0, layer_names1, ... (as in NASNet's weights)."""
    km = randomized(mlp(keras), rng)
    keras2_weights_file(km, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as f:
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:1], names[1:]
    cm = mlp(convkit)
    cm.load_weights(tmp_path / "w.h5")
    assert_same(km, cm, inputs_for(cm, rng))


# -- convkit writes weights, Keras reads -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_convkit_weights_h5_loads_into_keras(arch, rng, tmp_path):
    cm = randomized(ARCHS[arch](convkit), rng)
    cm.save_weights(tmp_path / "w.weights.h5")
    km = ARCHS[arch](keras)
    km.load_weights(tmp_path / "w.weights.h5")
    assert_same(km, cm, inputs_for(cm, rng))
    km.save_weights(tmp_path / "k.weights.h5")  # the same layout, dataset for dataset
    assert _dataset_paths(tmp_path / "w.weights.h5") == _dataset_paths(tmp_path / "k.weights.h5")
    again = ARCHS[arch](convkit)
    again.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(again.get_weights(), cm.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_weights_suffixes(rng, tmp_path):
    cm = mlp(convkit)
    for bad in ("w.h5", "w.keras", "w.npz", "w"):
        with pytest.raises(ValueError, match=r"\.weights\.h5"):
            cm.save_weights(tmp_path / bad)
        assert not (tmp_path / bad).exists()
    cm.save_weights(tmp_path / "w.convkit")
    assert zipfile.is_zipfile(tmp_path / "w.convkit")
    cm.save_weights(tmp_path / "w.weights.h5")
    assert h5py.is_hdf5(tmp_path / "w.weights.h5")


def test_missing_h5py_says_how_to_install_it(monkeypatch, rng, tmp_path):
    import sys

    cm = mlp(convkit)
    cm.save_weights(tmp_path / "w.weights.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        cm.save_weights(tmp_path / "x.weights.h5")
    with pytest.raises(ImportError, match="pip install h5py"):
        cm.load_weights(tmp_path / "w.weights.h5")
    cm.save_weights(tmp_path / "w.convkit")  # convkit's own format needs no h5py
    cm.load_weights(tmp_path / "w.convkit")


def test_damaged_h5_is_a_value_error_naming_the_file(rng, tmp_path):
    cm = randomized(cnn(convkit), rng)
    cm.save_weights(tmp_path / "w.weights.h5")
    data = (tmp_path / "w.weights.h5").read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.weights.h5"):
        cnn(convkit).load_weights(tmp_path / "cut.weights.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(ValueError, match="empty.h5.*not a Keras"):
        cnn(convkit).load_weights(tmp_path / "empty.h5")


def test_failed_weights_write_leaves_the_old_file(monkeypatch, rng, tmp_path):
    cm = randomized(mlp(convkit), rng)
    cm.save_weights(tmp_path / "w.weights.h5")
    old = (tmp_path / "w.weights.h5").read_bytes()
    monkeypatch.setattr(saving._keras_h5, "keras3_weights_bytes", lambda m: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        cm.save_weights(tmp_path / "w.weights.h5")
    assert (tmp_path / "w.weights.h5").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.weights.h5"]


# -- whole models -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_models_load_into_convkit(arch, suffix, rng, tmp_path):
    km = randomized(ARCHS[arch](keras), rng)
    km.compile(keras.optimizers.Adam(0.003), "mse")
    km.save(tmp_path / f"m{suffix}")
    cm = convkit.load_model(tmp_path / f"m{suffix}")
    assert [type(l).__name__ for l in cm.layers] == [type(l).__name__ for l in km.layers]
    assert_same(km, cm, inputs_for(cm, rng))
    assert isinstance(cm.optimizer, convkit.optimizers.Adam) and cm.optimizer.learning_rate == pytest.approx(0.003)
    x = inputs_for(cm, rng)
    cm.fit(x, cm.predict(x, verbose=0), epochs=1, verbose=0)  # compiled, trainable


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_convkit_models_load_into_keras_and_back(arch, suffix, rng, tmp_path):
    cm = randomized(ARCHS[arch](convkit), rng)
    cm.compile(convkit.optimizers.SGD(0.02, momentum=0.5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cm.save(tmp_path / f"m{suffix}")
    km = keras.saving.load_model(tmp_path / f"m{suffix}")
    x = inputs_for(cm, rng)
    assert_same(km, cm, x)
    assert isinstance(km.optimizer, keras.optimizers.SGD) and float(km.optimizer.momentum) == 0.5
    again = convkit.load_model(tmp_path / f"m{suffix}")
    np.testing.assert_array_equal(again.predict(x, verbose=0), cm.predict(x, verbose=0))
    assert again.optimizer.get_config() == cm.optimizer.get_config()


def test_keras2_model_config_is_read(rng, tmp_path):
    """tf.keras 2's configs: plain dtype strings, batch_input_shape, {'class_name', 'config'} initializers and
    inbound_nodes as [[layer, node, tensor, kwargs], ...]."""
    L = keras.layers
    x = keras.Input((6,), name="input_1")
    a = L.Dense(4, activation="relu", name="dense")(x)
    b = L.Dense(4, name="dense_1")(x)
    km = keras.Model(x, L.Dense(2, name="dense_2")(L.Add(name="add")([a, b])))
    randomized(km, rng)
    init = {"class_name": "GlorotUniform", "config": {"seed": None}}

    def dense(name, units, act, inbound):
        return {"class_name": "Dense", "name": name, "inbound_nodes": [[[n, 0, 0, {}] for n in inbound]],
                "config": {"name": name, "trainable": True, "dtype": "float32", "units": units, "activation": act,
                           "use_bias": True, "kernel_initializer": init,
                           "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
                           "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
                           "bias_constraint": None}}
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 6], "dtype": "float32", "sparse": False, "ragged": False,
                    "name": "input_1"}},
        dense("dense", 4, "relu", ["input_1"]), dense("dense_1", 4, "linear", ["input_1"]),
        {"class_name": "Add", "name": "add", "config": {"name": "add", "trainable": True, "dtype": "float32"},
         "inbound_nodes": [[["dense", 0, 0, {}], ["dense_1", 0, 0, {}]]]},
        dense("dense_2", 2, "linear", ["add"])],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["dense_2", 0, 0]]},
        "keras_version": "2.13.1", "backend": "tensorflow"}
    import json
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy", "metrics": ["accuracy"],
                                                 "optimizer_config": {"class_name": "RMSprop", "config": {
                                                     "name": "RMSprop", "learning_rate": 0.01, "decay": 0.0,
                                                     "rho": 0.9, "momentum": 0.0, "epsilon": 1e-07,
                                                     "centered": False}}})
        legacy_h5_format.save_weights_to_hdf5_group(f.create_group("model_weights"), km)
    cm = convkit.load_model(tmp_path / "m.h5")
    assert_same(km, cm, inputs_for(cm, rng))
    assert isinstance(cm.optimizer, convkit.optimizers.RMSprop) and cm.optimizer.learning_rate == 0.01


def test_unsupported_keras_layer_is_named(tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((5, 3)), L.LayerNormalization(), L.Flatten(), L.Dense(2)])
    km.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"m\.keras.*'LayerNormalization'"):
        convkit.load_model(tmp_path / "m.keras")


def test_keras_arguments_convkit_lacks_are_refused_unless_neutral(tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 3, groups=2)])
    km.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"Conv2D.*groups=2"):
        convkit.load_model(tmp_path / "m.keras")


def test_compile_settings_convkit_cannot_honour_leave_the_model_uncompiled(rng, tmp_path):
    km = randomized(mlp(keras), rng)
    km.compile("adam", "mse", metrics=["mae"])
    km.save(tmp_path / "m.keras")
    with pytest.warns(UserWarning, match="uncompiled"):
        cm = convkit.load_model(tmp_path / "m.keras")
    assert cm.optimizer is None
    assert_same(km, cm, inputs_for(cm, rng))


def test_convkit_only_models_refuse_keras_formats(tmp_path):
    model = convkit.zoo.lenet5_subclassed()
    model.build((None, 28, 28, 1))
    for name in ("m.keras", "m.h5"):
        with pytest.raises(ValueError, match=r"no Keras counterpart.*\.convkit"):
            model.save(tmp_path / name)
    assert not os.listdir(tmp_path)
    model.save(tmp_path / "m.convkit")
    assert type(convkit.load_model(tmp_path / "m.convkit")) is type(model)


def test_save_suffixes(rng, tmp_path):
    cm = randomized(cnn(convkit), rng)
    for bad in ("m.txt", "m", "m.zip"):
        with pytest.raises(ValueError, match=r"'\.keras'.*'\.h5'.*'\.convkit'"):
            cm.save(tmp_path / bad)
    with pytest.raises(ValueError, match="save_weights"):
        cm.save(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match="extra"):
        convkit.models.save_model(cm, tmp_path / "m.keras", extra={"epoch": 1})
    assert not os.listdir(tmp_path)
    cm.save(tmp_path / "m.keras")
    cm.save(tmp_path / "m.h5")
    cm.save(tmp_path / "m.convkit")
    cm.save(tmp_path / "state.ckpt")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        assert sorted(zf.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    assert h5py.is_hdf5(tmp_path / "m.h5")
    for name in ("m.convkit", "state.ckpt"):
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert "convkit.json" in zf.namelist()
    x = inputs_for(cm, rng)
    for name in ("m.keras", "m.h5", "m.convkit", "state.ckpt"):  # each read back, its format found from its bytes
        os.replace(tmp_path / name, tmp_path / "model.bin")
        np.testing.assert_array_equal(convkit.load_model(tmp_path / "model.bin").predict(x, verbose=0),
                                      cm.predict(x, verbose=0))


def test_load_model_on_a_weights_file_says_so(rng, tmp_path):
    cm = mlp(convkit)
    cm.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="only weights"):
        convkit.load_model(tmp_path / "w.weights.h5")


def test_damaged_keras_files_are_value_errors_naming_the_file(rng, tmp_path):
    cm = randomized(cnn(convkit), rng)
    for name in ("m.keras", "m.h5"):
        cm.save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(ValueError, match=f"cut-{name}"):
            convkit.load_model(cut)
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        zf.writestr("config.json", b"{not json")
        zf.writestr("model.weights.h5", entries["model.weights.h5"])
    with pytest.raises(ValueError, match=r"bad\.keras.*config\.json"):
        convkit.load_model(tmp_path / "bad.keras")


def test_failed_model_write_leaves_the_old_file(monkeypatch, rng, tmp_path):
    cm = randomized(mlp(convkit), rng)
    for name in ("m.keras", "m.h5"):
        cm.save(tmp_path / name)
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(saving._keras_h5, "keras3_weights_bytes", lambda m: (_ for _ in ()).throw(OSError("disk")))
    monkeypatch.setattr(saving._keras_h5, "keras2_model_bytes", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    for name in ("m.keras", "m.h5"):
        with pytest.raises(OSError, match="disk"):
            cm.save(tmp_path / name)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_missing_h5py_for_keras_models(monkeypatch, rng, tmp_path):
    import sys

    cm = mlp(convkit)
    cm.save(tmp_path / "m.keras")
    monkeypatch.setitem(sys.modules, "h5py", None)
    for call in (lambda: convkit.load_model(tmp_path / "m.keras"), lambda: cm.save(tmp_path / "n.h5")):
        with pytest.raises(ImportError, match="pip install h5py"):
            call()


OPTIMIZERS = {"adam": lambda lib: lib.optimizers.Adam(0.01),
              "rmsprop": lambda lib: lib.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
              "sgd": lambda lib: lib.optimizers.SGD(0.05, momentum=0.9)}


def _step_both(km, cm, x, y):
    km.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    cm.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for a, b in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_optimizer_state_crosses_over(opt, suffix, rng, tmp_path):
    """Trained two steps in one library, saved, loaded in the other: the next step is the same in both."""
    x = rng.normal(size=(8, 6)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    km = randomized(mlp(keras), rng)
    km.compile(OPTIMIZERS[opt](keras), "mse")
    km.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    km.save(tmp_path / f"k{suffix}")
    cm = convkit.load_model(tmp_path / f"k{suffix}")
    assert cm.optimizer.iterations == 2
    _step_both(km, cm, x, y)
    cm.save(tmp_path / f"c{suffix}")
    km = keras.saving.load_model(tmp_path / f"c{suffix}")
    assert int(km.optimizer.iterations) == 3
    if suffix == ".keras":
        _step_both(km, cm, x, y)
    # else: Keras 3.15 takes only the step count from a '.h5' file's optimizer weights, and cannot fit the model
    # it loaded (from its own '.h5' files too), so the next step is compared for '.keras' files only


def subclassed(lib):
    """Layers held in attributes, a list of layers, a nested Sequential and a private attribute: Keras 3 names
    them by attribute (the list's by class and position), and finds the private one through ``layers``."""

    class Sub(lib.Model):
        def __init__(self):
            super().__init__()
            self.conv = lib.layers.Conv2D(3, 3)
            self.blocks = [lib.layers.Dense(4), lib.layers.BatchNormalization(), lib.layers.Dense(2)]
            self.inner = lib.Sequential([lib.layers.Dense(5), lib.layers.Dense(2)])
            self.flat = lib.layers.Flatten()
            self._head = lib.layers.Dense(1)

        def call(self, x, training=False):
            y = self.flat(self.conv(x))
            for block in self.blocks:
                y = block(y)
            return self._head(self.inner(y))

    model = Sub()
    model(np.zeros((1, 5, 5, 2), "float32"))
    return model


def _dataset_paths(path):
    out = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(out)


def test_subclassed_models_weights_cross_over(rng, tmp_path):
    km, cm = randomized(subclassed(keras), rng), subclassed(convkit)
    km.save_weights(tmp_path / "k.weights.h5")
    cm.load_weights(tmp_path / "k.weights.h5")
    x = rng.normal(size=(3, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(cm.predict(x, verbose=0), keras_predict(km, x), rtol=1e-5, atol=1e-5)
    randomized(cm, rng).save_weights(tmp_path / "c.weights.h5")
    assert _dataset_paths(tmp_path / "c.weights.h5") == _dataset_paths(tmp_path / "k.weights.h5")
    km.load_weights(tmp_path / "c.weights.h5")
    np.testing.assert_allclose(cm.predict(x, verbose=0), keras_predict(km, x), rtol=1e-5, atol=1e-5)


def test_weights_for_a_layer_without_any_are_refused(rng, tmp_path):
    """A layer that was never built has no variables; the file's values for it are not dropped silently."""

    def two(lib, use_second):
        class Two(lib.Model):
            def __init__(self):
                super().__init__()
                self.first, self.second = lib.layers.Dense(3), lib.layers.Dense(2)

            def call(self, x):
                return self.second(self.first(x)) if use_second else self.first(x)

        model = Two()
        model(np.zeros((1, 4), "float32"))
        return model

    two(keras, True).save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match=r"'dense.*' \(layers/dense_1\).*0 weight\(s\).*the file has 2"):
        two(convkit, False).load_weights(tmp_path / "w.weights.h5")
