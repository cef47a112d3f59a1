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
