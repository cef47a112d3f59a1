"""The notes' everyday idioms once ``tensorflow.keras`` reads ``convkit``: submodules reached from
``import convkit`` alone, ``backend`` and ``random`` calls, and ``models.save_model / load_model /
clone_model`` with subclassed models saved as Keras 3 saves them."""

import subprocess
import sys

import numpy as np
import pytest

import convkit
from convkit import layers as L
from convkit.models import Model, Sequential


def test_import_convkit_alone_reaches_every_submodule_lazily():
    code = ("import sys, convkit\n"
            "lazy = ['datasets', 'preprocessing', 'backend', 'random', 'applications']\n"
            "before = {n: 'convkit.' + n in sys.modules for n in ['datasets', 'preprocessing', 'applications']}\n"
            "assert not any(before.values()), before\n"
            "assert convkit.datasets.mnist.load_data and convkit.preprocessing.ImageDataGenerator\n"
            "assert convkit.backend.floatx() == 'float32' and callable(convkit.random.set_seed)\n"
            "assert callable(convkit.applications.imagenet_utils.preprocess_input)\n"
            "assert set(lazy) <= set(dir(convkit))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_lazy_entry_whose_module_is_missing_names_it(monkeypatch):
    monkeypatch.setitem(convkit._LAZY_MODULES, "extras", "convkit.extras")
    with pytest.raises(AttributeError, match=r"convkit.extras is not available: .* no module convkit.extras"):
        convkit.extras
    assert not hasattr(convkit, "extras")
    with pytest.raises(AttributeError, match="module 'convkit' has no attribute 'nonsense'"):
        convkit.nonsense


def test_backend_functions_the_notes_call():
    K = convkit.backend
    assert (K.image_data_format(), K.floatx(), K.epsilon()) == ("channels_last", "float32", 1e-7)
    K.set_floatx("float32")
    K.set_image_data_format("channels_last")
    with pytest.raises(ValueError, match="only 'float32', got 'float64'"):
        K.set_floatx("float64")
    with pytest.raises(ValueError, match="only 'channels_last'"):
        K.set_image_data_format("channels_first")
    K.set_epsilon(1e-3)
    try:  # the losses clip with it, as Keras's do
        assert convkit.losses.binary_crossentropy([[1.0]], [[0.0]])[0] == pytest.approx(-np.log(1e-3), rel=1e-5)
    finally:
        K.set_epsilon(1e-7)


def test_clear_session_restarts_layer_names():
    convkit.backend.clear_session()
    first = Sequential([L.Input((3,)), L.Dense(2)]).layers[0].name
    Sequential([L.Input((3,)), L.Dense(2)])
    convkit.backend.clear_session()
    assert first == "dense" and Sequential([L.Input((3,)), L.Dense(2)]).layers[0].name == "dense"


def test_random_set_seed_makes_initial_weights_and_training_repeat(rng):
    x, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)

    def run():
        convkit.random.set_seed(42)
        model = Sequential([L.Input((4,)), L.Dense(8, activation="relu"), L.Dropout(0.5),
                            L.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model.get_weights()

    a, b = run(), run()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(TypeError, match="seed must be an int"):
        convkit.random.set_seed("42")


class Residual(Model):
    """A notes-style subclassed model: plain constructor arguments, no get_config, not registered."""

    def __init__(self, units=8, num_classes=3, rate=0.25, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(units, activation="relu")
        self.drop = L.Dropout(rate)
        self.out = L.Dense(num_classes, activation="softmax")

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


@convkit.saving.register_keras_serializable(package="notes")
class Registered(Residual):
    pass


def _trained(model, rng):
    x, y = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16)
    model.compile("rmsprop", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, x


def test_subclassed_model_saves_its_constructor_arguments_and_loads_with_custom_objects(rng, tmp_path):
    model, x = _trained(Residual(units=6, rate=0.1, name="res"), rng)
    assert model.get_config() == {"name": "res", "units": 6, "num_classes": 3, "rate": 0.1}
    convkit.models.save_model(model, tmp_path / "res.convkit")
    with pytest.raises(ValueError, match=r"unknown model class 'Residual': pass it in custom_objects"):
        convkit.models.load_model(tmp_path / "res.convkit")
    again = convkit.models.load_model(tmp_path / "res.convkit", custom_objects={"Residual": Residual})
    assert type(again) is Residual and again.name == "res" and again.hidden.kernel.shape == (5, 6)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert again.optimizer.iterations == model.optimizer.iterations == 2


def test_registered_subclass_loads_by_its_keras_name(rng, tmp_path):
    model, x = _trained(Registered(units=4), rng)
    model.save(tmp_path / "reg.keras")
    again = convkit.load_model(tmp_path / "reg.keras")
    assert type(again) is Registered and convkit._serial.class_name(again) == "notes>Registered"
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_clone_model_has_the_architecture_and_fresh_weights(rng):
    inp = L.Input((5,))
    a, b = L.Dense(4, activation="relu")(inp), L.Dense(4, activation="tanh")(inp)
    functional = Model(inp, L.Dense(3, activation="softmax")(L.Concatenate()([a, b])))
    sequential = Sequential([L.Input((5,)), L.Dense(4), L.BatchNormalization(), L.Dense(3)])
    subclassed, _ = _trained(Residual(units=7), rng)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    for model in (functional, sequential, subclassed):
        clone = convkit.models.clone_model(model)
        assert type(clone) is type(model) and clone.optimizer is None
        assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
        assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
        assert all(c is not o for c, o in zip(clone.layers, model.layers))
        assert not np.array_equal(clone.get_weights()[0], model.get_weights()[0])
        clone.set_weights(model.get_weights())
        np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    dropped = convkit.models.clone_model(
        sequential, clone_function=lambda l: L.Dropout(0.5) if isinstance(l, L.BatchNormalization)
        else type(l).from_config(l.get_config()))
    assert [type(l).__name__ for l in dropped.layers] == ["Dense", "Dropout", "Dense"]
    with pytest.raises(ValueError, match="clone_function applies to Sequential and functional models"):
        convkit.models.clone_model(subclassed, clone_function=lambda l: l)


class FakeKernel:
    """What IPython's get_ipython() returns inside a Jupyter kernel, as far as detection looks."""

    config = {"IPKernelApp": {"connection_file": "kernel.json"}}


def test_verbose_1_in_a_notebook_shows_tqdm_auto_bar(monkeypatch, rng):
    import types

    import tqdm.auto
    import tqdm.std

    bars = []

    class Recorder(tqdm.std.tqdm):  # stands for the notebook widget: records and writes nowhere visible
        def __init__(self, *args, **kwargs):
            import io

            super().__init__(*args, file=io.StringIO(), **kwargs)
            bars.append(self)

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    x, y = rng.standard_normal((20, 3)).astype(np.float32), rng.integers(0, 2, 20)
    model = Sequential([L.Input((3,)), L.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")

    model.fit(x, y, epochs=2, batch_size=5, verbose=1)  # not a notebook, not a terminal: lines
    assert bars == []
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    model.fit(x, y, epochs=1, batch_size=5, verbose=1)  # IPython in a terminal is no notebook
    assert bars == []
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=FakeKernel))
    model.fit(x, y, epochs=2, batch_size=5, verbose=1)
    assert [(b.desc, b.n, b.total) for b in bars] == [("Epoch 1/2", 4, 4), ("Epoch 2/2", 4, 4)]
    model.fit(x, y, epochs=1, batch_size=5, verbose=2)  # one line per epoch, even in a notebook
    assert len(bars) == 2
