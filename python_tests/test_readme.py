"""The README's code runs as written (fewer images and epochs, so that it runs in seconds)."""

import re
from pathlib import Path

from convkit.datasets import mnist
from helpers import real_data

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block(section: str) -> str:
    start = README.index(f"## {section}")
    return re.search(r"```python\n(.*?)```", README[start:], re.S).group(1)


def test_layers_example(monkeypatch, tmp_path, capsys):
    real_data(mnist.load_data, "MNIST")
    monkeypatch.chdir(tmp_path)
    code = _block("Using the layers")
    small = code.replace("epochs=5", "epochs=1").replace("model.fit(x_train, y_train", "model.fit(x_train[:2000], y_train[:2000]")
    assert small != code
    scope = {}
    exec(compile(small, "README.md", "exec"), scope)
    assert "Total params: 61,706" in capsys.readouterr().out
    assert (tmp_path / "lenet.convkit").exists()


def test_ops_example():
    scope = {}
    exec(compile(_block("Using the ops"), "README.md", "exec"), scope)
    assert scope["dx"].shape == scope["x"].shape and scope["dk"].shape == scope["k"].shape


def test_custom_training_loop_example():
    scope = {}
    exec(compile(_block("Gradients and custom training loops"), "README.md", "exec"), scope)
    assert scope["optimizer"].iterations == 4
    assert all(g.shape == v.shape for g, v in zip(scope["grads"], scope["model"].trainable_variables))


def test_imagenet_models_example():
    code = _block("ImageNet models")
    offline = code.replace('weights="imagenet"', "weights=None")  # no download in tests
    assert offline != code
    scope = {}
    exec(compile(offline, "README.md", "exec"), scope)
    model, base = scope["model"], scope["base"]
    assert model.output_shape == (None, 2) and len(model.trainable_weights) == 2
    assert not any(layer.trainable for layer in base.layers)
