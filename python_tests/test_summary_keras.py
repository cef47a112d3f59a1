"""model.summary() prints what Keras 3 prints (Keras itself on its PyTorch backend, the same models with
the same layer names): the box-drawn table row by row, the parameter counts and their sizes."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import convkit  # noqa: E402
from convkit import layers as L  # noqa: E402

K = keras.layers


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """Both libraries size the table by the terminal when no line_length is given."""
    monkeypatch.setenv("COLUMNS", "200")


def _text(model, **kwargs):
    out = []
    model.summary(print_fn=lambda s, **_: out.append(s), **kwargs)
    assert len(out) == 1  # Keras 3 hands print_fn the whole summary at once
    return out[0]


def _same(ours, theirs, **kwargs):
    a, b = _text(ours, **kwargs).splitlines(), _text(theirs, **kwargs).splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"line {i} differs:\nours:   {x}\nkeras:  {y}"
    assert len(a) == len(b)
    return a


def lenet(lib):
    """The notes' LeNet-5, every layer named."""
    conv = lambda f, n: lib.Conv2D(f, 5, padding="same", activation="relu", name=n)  # noqa: E731
    return [lib.Input((28, 28, 1)), conv(6, "conv1"), lib.MaxPooling2D(2, name="pool1"), conv(16, "conv2"),
            lib.MaxPooling2D(2, name="pool2"), lib.BatchNormalization(name="bn"), lib.Flatten(name="flatten"),
            lib.Dense(120, activation="relu", name="fc1"), lib.Dropout(0.5, name="drop"),
            lib.Dense(84, activation="relu", name="fc2"), lib.Dense(10, activation="softmax", name="out")]


@pytest.mark.parametrize("kwargs", [{}, {"line_length": 60}, {"line_length": 130, "show_trainable": True}])
def test_sequential_lenet_matches_keras(kwargs):
    ours = convkit.Sequential(lenet(L), name="lenet5")
    theirs = keras.Sequential(lenet(K), name="lenet5")
    ours.get_layer("conv1").trainable = theirs.get_layer("conv1").trainable = False
    lines = _same(ours, theirs, **kwargs)
    assert lines[-3].startswith(" Total params: ") and "KB)" in lines[-3]


def branched(lib, model):
    """A functional model with two branches joined, a residual add and a shared layer."""
    inp = lib.Input((12, 12, 3), name="image")
    a = lib.Conv2D(4, 3, padding="same", activation="relu", name="left")(inp)
    b = lib.Conv2D(4, 1, name="right")(inp)
    s = lib.Add(name="add")([a, b])
    c = lib.Concatenate(name="concat")([s, lib.MaxPooling2D(1, name="same_size")(s)])
    shared = lib.Conv2D(8, 3, padding="same", name="shared")
    c = shared(shared(c))
    f = lib.GlobalAveragePooling2D(name="gap")(c)
    return model(inp, lib.Dense(3, activation="softmax", name="probs")(f), name="two_branches")


@pytest.mark.parametrize("kwargs", [{}, {"line_length": 80}])
def test_functional_model_with_branches_matches_keras(kwargs):
    lines = _same(branched(L, convkit.Model), branched(K, keras.Model), **kwargs)
    assert any("Connected to" in l for l in lines) and any("│ left[0][0]," in l for l in lines)


def test_chain_functional_model_and_long_names_match_keras():
    def chain(lib, model):
        inp = lib.Input((20,), name="features")
        x = lib.Dense(7, name="a_rather_long_layer_name_that_will_not_fit_its_column")(inp)
        x = lib.Dense(5, name="several short words in one name")(x)
        return model(inp, x, name="chain")

    _same(chain(L, convkit.Model), chain(K, keras.Model), line_length=50)


def test_after_training_the_optimizer_counts_as_in_keras(rng):
    x, y = rng.random((8, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 8)
    for opt in ("adam", "rmsprop", "nadam", "sgd"):
        ours, theirs = convkit.Sequential(lenet(L), name="m"), keras.Sequential(lenet(K), name="m")
        for model in (ours, theirs):
            model.compile(opt, "sparse_categorical_crossentropy")
            model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        lines = _same(ours, theirs)
        assert lines[-1].startswith(" Optimizer params: ")


def test_nested_model_expands_as_in_keras():
    def nested(lib, seq):
        block = seq([lib.Input((6,)), lib.Dense(4, name="inner1"), lib.Dense(3, name="inner2")], name="block")
        return seq([lib.Input((6,)), block, lib.Dense(2, name="head")], name="outer")

    for expand in (False, True):
        lines = _same(nested(L, convkit.Sequential), nested(K, keras.Sequential), expand_nested=expand)
        assert any("└ inner1 (Dense)" in l for l in lines) == expand


def test_the_notes_model_totals_and_stdout(capsys):
    convkit.zoo.fashion1().summary()
    out = capsys.readouterr().out
    assert " Total params: 3,239,114 (12.36 MB)" in out.splitlines()
    assert out.startswith('Model: "') and "┏" in out and out.endswith("\n")


def test_functional_layers_and_weights_in_keras_order():
    """model.layers and model.weights follow Keras's order (by depth from the output, then by discovery), which
    Keras's weight files and get_weights() rely on, for branches, residual adds and shared layers."""
    def graph(lib, model):
        inp = lib.Input((8, 8, 3), name="image")
        stem = lib.Conv2D(4, 1, name="stem")(inp)
        long = lib.Conv2D(4, 3, padding="same", name="long_b")(lib.Conv2D(4, 1, name="long_a")(stem))
        short = lib.Conv2D(4, 1, name="short")(stem)
        pooled = lib.AveragePooling2D(3, strides=1, padding="same", name="pool")(stem)
        x = lib.Concatenate(name="cat")([long, short, pooled])
        shared = lib.Conv2D(12, 1, name="shared")
        x = lib.Add(name="res")([lib.Conv2D(12, 1, name="projection")(x), shared(shared(x))])
        return model(inp, lib.Dense(2, name="out")(lib.GlobalAveragePooling2D(name="gap")(x)), name="order")

    ours, theirs = graph(L, convkit.Model), graph(K, keras.Model)
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    assert [w.name for w in ours.weights] == [w.path for w in theirs.weights]


def test_deep_functional_graph_needs_no_deep_recursion():
    inp = L.Input((4,))
    x = inp
    for _ in range(3000):
        x = L.Activation("relu")(x)
    model = convkit.Model(inp, x)
    assert len(model.layers) == 3001 and model.predict(np.ones((1, 4)), verbose=0).shape == (1, 4)
