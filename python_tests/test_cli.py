"""python -m convkit.train on small synthetic datasets (the real loaders are faked)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from convkit import saving
from convkit import train as cli

FAKE = textwrap.dedent('''
    import numpy as np

    def fake_dataset(name, data_dir=None, n=600):
        """MNIST-like uint8 images whose class is the row of a bright block: learnable."""
        r = np.random.default_rng(0)
        size, ch = (32, 3) if name == "cifar10" else (28, None)
        y = r.integers(0, 10, n + 200).astype(np.uint8)
        shape = (n + 200, size, size) + ((ch,) if ch else ())
        x = (r.random(shape) * 40).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 6, 4:10] = 250
        if name == "cifar10":
            y = y.reshape(-1, 1)
        return (x[:n], y[:n]), (x[n:], y[n:])
''')
exec(FAKE)


@pytest.fixture
def fake_data(monkeypatch):
    monkeypatch.setattr(cli, "load_dataset", fake_dataset)


def test_list_names_every_model(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    from convkit import zoo
    assert all(n in out for n in zoo.names())


def test_bad_arguments_exit_2(capsys):
    assert cli.main(["vgg16"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_train_writes_model_metrics_and_log(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["lenet", "--epochs", "3", "--out", str(out), "--verbose", "2", "--target-acc", "0.5",
                   "--limit", "500"])
    assert rc == 0
    text = capsys.readouterr()
    assert "Epoch 3/3" in text.out and "Test loss" in text.out
    files = set(os.listdir(out))
    assert {"model.convkit", "checkpoint.ckpt", "log.csv", "metrics.json"} <= files
    try:
        import matplotlib  # noqa: F401
        assert "curves.png" in files
    except ImportError:
        assert "matplotlib is not installed" in text.err
    m = json.load(open(out / "metrics.json"))
    assert m["model"] == "lenet5" and m["epochs_run"] == 3 and m["test_accuracy"] > 0.5
    assert list(m["history"]) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    # what reproduces the run, without where its files went
    assert m["command"] == "python -m convkit.train lenet --epochs 3 --verbose 2 --target-acc 0.5 --limit 500"
    assert m["machine"] and m["date"] and m["threads"] >= 1
    from convkit import load_model
    assert load_model(out / "model.convkit").count_params() == 61_706


def test_target_accuracy_not_reached_exits_1(fake_data, tmp_path):
    assert cli.main(["lenet", "--epochs", "1", "--limit", "64", "--out", str(tmp_path), "--verbose", "0",
                     "--target-acc", "0.999"]) == 1


def test_cifar_recipe_with_standardisation_and_split(fake_data, tmp_path):
    assert cli.main(["cifar10_bn", "--epochs", "1", "--limit", "100", "--batch-size", "50", "--out", str(tmp_path),
                     "--verbose", "0"]) == 0
    m = json.load(open(tmp_path / "metrics.json"))
    assert m["learning_rate"] == 1e-4 and m["batch_size"] == 50


DRIVER = FAKE + textwrap.dedent('''
    import sys
    import convkit.train as cli
    cli.load_dataset = lambda name, data_dir=None: fake_dataset(name, n=3000)
    sys.exit(cli.main(sys.argv[1:]))
''')


def test_kill_mid_training_then_resume(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    args = [sys.executable, str(driver), "mnist_cnn2", "--epochs", "8", "--batch-size", "100", "--out", str(out),
            "--verbose", "0", "--seed", "3"]
    ckpt = out / "checkpoint.ckpt"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if ckpt.exists():
                try:
                    _, extra = saving.load_model(ckpt, return_extra=True)
                    if extra["epoch"] >= 2:
                        break
                except (ValueError, OSError):
                    pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    model, extra = saving.load_model(ckpt, return_extra=True)  # whatever moment the kill came, the file is whole
    done = extra["epoch"]
    assert 2 <= done < 8, "the run finished before it could be killed"
    assert len(extra["history"]["loss"]) == done
    assert model.optimizer.iterations == done * 27  # 2700 training examples / 100
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"after epoch {done}" in res.stdout
    m = json.load(open(out / "metrics.json"))
    hist = m["history"]["loss"]
    assert len(hist) == m["epochs_run"] <= 8
    assert hist[:done] == extra["history"]["loss"]
    _, final = saving.load_model(ckpt, return_extra=True)
    assert final["epoch"] == m["epochs_run"]
    if final["stopped"]:  # early stopping ended it: a further resume trains nothing
        res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "nothing left to train" in res.stdout, res.stderr
    else:
        assert m["epochs_run"] == 8


def test_lr_schedule_option_overrides_the_recipe(fake_data, tmp_path):
    assert cli.main(["lenet", "--epochs", "2", "--out", str(tmp_path), "--verbose", "0", "--limit", "200",
                     "--lr-schedule", "cosine"]) == 0
    m = json.load(open(tmp_path / "metrics.json"))
    assert m["lr_schedule"] == "cosine" and m["history"]["learning_rate"] == pytest.approx([1e-3, 5e-4])
