"""Saving: every layer and optimizer state round-trips, saves are atomic, bad files fail clearly."""

import errno
import io
import json
import os
import zipfile

import numpy as np
import pytest

import convkit
from convkit import layers as L
from convkit import optimizers, saving
from convkit.models import Model, Sequential


def every_layer_model():
    inp = L.Input(shape=(8, 8, 3))
    x = L.Rescaling(1 / 2, offset=0.1)(inp)
    a = L.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer=convkit.regularizers.L2(1e-4))(x)
    a = L.BatchNormalization()(a)
    b = L.Conv2D(4, 1, use_bias=False, kernel_initializer="he_normal")(x)
    s = L.Add()([a, b])
    c = L.Concatenate()([s, L.AveragePooling2D(1)(s)])
    m = L.MaxPooling2D(2, padding="same")(c)
    g = L.GlobalAveragePooling2D()(m)
    f = L.Flatten()(L.AvgPool2D(2)(m))
    h = L.Concatenate()([g, f])
    h = L.Dropout(0.3)(L.Dense(6, activation="tanh")(h))
    h = L.Activation("relu")(h)
    out = L.Dense(3, activation="softmax")(h)
    return Model(inp, out)


@pytest.mark.parametrize("opt", [lambda: optimizers.Adam(0.01), lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                                 lambda: optimizers.AdamW(learning_rate=optimizers.ExponentialDecay(0.01, 5, 0.5)),
                                 lambda: "sgd"])
def test_every_layer_and_optimizer_state_round_trip(rng, tmp_path, opt):
    convkit.set_random_seed(0)
    model = every_layer_model()
    model.compile(opt(), "sparse_categorical_crossentropy", metrics=["acc"])
    x, y = rng.standard_normal((16, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 16)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "my_cnn.convkit"
    model.save(path)
    again = convkit.load_model(path)
    assert again.get_config() == model.get_config()
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert again.optimizer.iterations == model.optimizer.iterations == 4
    assert again.optimizer.get_config() == model.optimizer.get_config()
    # the same next step from the same state gives the same weights
    convkit.set_random_seed(1)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    convkit.set_random_seed(1)
    h = again.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert list(h.history) == ["loss", "acc"]
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sequential_and_registered_subclass_round_trip(rng, tmp_path):
    for model in (convkit.zoo.fashion3(), convkit.zoo.lenet5_subclassed()):
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        x = rng.random((4, 28, 28, 1), dtype=np.float32)
        model.fit(x, rng.integers(0, 10, 4), verbose=0)
        model.save(tmp_path / "m.convkit")
        again = convkit.load_model(tmp_path / "m.convkit")
        assert type(again) is type(model)
        np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


class Unregistered(Model):
    """Built from a layer object, which no config can hold."""

    def __init__(self, dense=None):
        super().__init__()
        self.d = dense or L.Dense(2)

    def call(self, x):
        return self.d(x)


def test_subclass_with_an_object_argument_says_to_use_save_weights(rng, tmp_path):
    model = Unregistered(L.Dense(2))
    x = rng.random((3, 4), dtype=np.float32)
    model.predict(x, verbose=0)
    with pytest.raises(NotImplementedError, match="save_weights"):
        model.save(tmp_path / "m.h5")
    assert not os.listdir(tmp_path)
    model.save_weights(tmp_path / "w.convkit")
    other = Unregistered(L.Dense(2))
    other.predict(x, verbose=0)
    other.load_weights(tmp_path / "w.convkit")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError, match="only weights"):
        convkit.load_model(tmp_path / "w.convkit")
    wrong = Sequential([L.Input(shape=(4,)), L.Dense(3)])
    with pytest.raises(ValueError, match="shape"):
        wrong.load_weights(tmp_path / "w.convkit")


def _saved(tmp_path):
    model = Sequential([L.Input(shape=(5,)), L.Dense(4, activation="relu"), L.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "model.convkit"
    model.save(path)
    return model, path


def test_a_crash_while_saving_keeps_the_old_file(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    before = path.read_bytes()
    real = np.save
    calls = []

    def dying_save(f, a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-save")
        return real(f, a, **kw)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.convkit"]  # no temporary file left behind
    monkeypatch.setattr(np, "save", real)
    convkit.load_model(path)


def test_a_full_disk_while_saving_raises_and_keeps_the_old_file(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    before = path.read_bytes()
    model.layers[0].kernel.assign(np.ones((5, 4), np.float32))  # something new to save
    real_fdopen = os.fdopen

    class FillingDisk(io.RawIOBase):  # the device runs out of space after 1 KiB
        def __init__(self, f):
            self.f, self.n = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.n += len(b)
            if self.n > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def close(self):
            self.f.close()
            super().close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FillingDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as e:
        model.save(path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.convkit"]
    assert not np.all(convkit.load_model(path).layers[0].kernel.numpy() == 1)


def test_truncated_file(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        convkit.load_model(path)


def test_corrupted_bytes(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights/0000.npy")
    at = info.header_offset + 30 + len(info.filename) + info.file_size - 8  # inside the array's data
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="weights/0000.npy.*corrupted"):
        convkit.load_model(path)


def _rewrite(path, edit_meta=None, replace=None):
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(entries["convkit.json"])
    if edit_meta:
        edit_meta(meta)
    entries["convkit.json"] = json.dumps(meta).encode()
    entries.update(replace or {})
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in entries.items():
            zf.writestr(n, b)


def test_unknown_layer_class(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, lambda m: m["config"]["layers"][0].update(class_name="FancyDense"))
    with pytest.raises(ValueError, match="unknown layer class 'FancyDense'"):
        convkit.load_model(path)


def test_newer_format_version_and_foreign_files(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, lambda m: m.update(format_version=saving.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="newer"):
        convkit.load_model(path)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match="not a convkit model file"):
        convkit.load_model(other)
    (tmp_path / "text.h5").write_text("not a zip")
    with pytest.raises(ValueError, match="not a convkit model file"):
        convkit.load_model(tmp_path / "text.h5")
    with pytest.raises(FileNotFoundError):
        convkit.load_model(tmp_path / "missing.h5")


def test_pickled_entries_are_refused(tmp_path):
    _, path = _saved(tmp_path)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    _rewrite(path, replace={"weights/0000.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="not a plain array"):
        convkit.load_model(path)


def test_overwrite_false(tmp_path):
    model, path = _saved(tmp_path)
    with pytest.raises(FileExistsError):
        model.save(path, overwrite=False)
