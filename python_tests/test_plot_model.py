"""convkit.utils.plot_model with pydot and Graphviz, as the notes call it."""

import shutil
import struct
import sys

import pytest

import convkit
from convkit import layers
from convkit.utils import model_to_dot, plot_model

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")


def branched():
    inp = layers.Input((28, 28, 1))
    a = layers.Conv2D(4, 3, activation="relu", padding="same", name="conv3x3")(inp)
    b = layers.Conv2D(4, 5, activation="relu", padding="same", name="conv5x5")(inp)
    merged = layers.Concatenate(name="merge")([a, b])
    out = layers.Dense(10, activation="softmax", name="classifier")(layers.Flatten()(layers.MaxPooling2D()(merged)))
    return convkit.Model(inp, out)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG file"
    return struct.unpack(">II", data[16:24])


@needs_dot
def test_plot_model_renders_a_png_of_a_branched_model(tmp_path):
    pytest.importorskip("pydot")
    path = tmp_path / "model.png"
    assert plot_model(branched(), to_file=path, show_shapes=True, show_layer_names=True, rankdir="TB",
                      dpi=96) is None
    width, height = png_size(path)
    assert 300 < width < 3000 and 300 < height < 3000 and height > width / 3  # six boxes stacked in five rows
    assert path.stat().st_size > 5000
    wide = tmp_path / "wide.png"
    plot_model(branched(), to_file=wide, show_shapes=True, rankdir="LR", dpi=96)
    w2, h2 = png_size(wide)
    assert w2 > h2  # left to right
    big = tmp_path / "big.png"
    plot_model(branched(), to_file=big, show_shapes=True, show_layer_names=True, dpi=192)
    assert png_size(big)[0] > 1.8 * width
    plot_model(branched(), to_file=tmp_path / "model.svg")
    assert b"<svg" in (tmp_path / "model.svg").read_bytes()[:2000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "model.png", "model.svg", "wide.png"]


@needs_dot  # model_to_dot checks for Graphviz first, as Keras does
def test_the_dot_graph_follows_the_data():
    pytest.importorskip("pydot")
    text = model_to_dot(branched(), show_shapes=True, show_layer_names=True).to_string()
    for edge in ('"conv3x3" -> "merge"', '"conv5x5" -> "merge"'):
        assert edge in text
    assert "classifier (Dense)" in text and "output: (None, 10)" in text
    assert "input: (None, 28, 28, 4), (None, 28, 28, 4)" in text  # the merge's two inputs
    bare = model_to_dot(branched()).to_string()
    assert "(Dense)" not in bare and "{Dense}" in bare  # Keras 3: no layer names unless asked
    seq = convkit.Sequential([layers.Input((8,)), layers.Dense(4, name="hidden"), layers.Dense(2, name="out")])
    assert '"hidden" -> "out"' in model_to_dot(seq).to_string()


def test_clear_errors(tmp_path, monkeypatch):
    class Sub(convkit.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="subclassed"):
        plot_model(Sub(), to_file=tmp_path / "s.png")
    with pytest.raises(ValueError, match="rankdir"):
        model_to_dot(branched(), rankdir="BT")
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(ImportError, match="pip install pydot"):
        plot_model(branched(), to_file=tmp_path / "m.png")
    monkeypatch.delitem(sys.modules, "pydot")
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz on it
    with pytest.raises(ImportError, match="Graphviz"):
        plot_model(branched(), to_file=tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
