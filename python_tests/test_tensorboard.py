"""The TensorBoard callback: event files read back with TensorBoard's own reader and served by TensorBoard."""

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import convkit
from convkit import layers
from convkit.callbacks import TensorBoard

pytest.importorskip("tensorboard", reason="the tensorboard package (convkit[tensorboard]) is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def fit_logged(log_dir, epochs=2, **tb):
    convkit.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 6, 6, 1), dtype=np.float32), rng.integers(0, 2, 64)
    inp = layers.Input((6, 6, 1))
    h = layers.Conv2D(2, 3, activation="relu", name="conv")(inp)
    out = layers.Dense(2, activation="softmax", name="head")(layers.Flatten()(h))
    model = convkit.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=16, epochs=epochs, validation_split=0.25, verbose=0,
                     callbacks=[TensorBoard(log_dir, **tb)])
    return hist.history


def read(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_event_files_hold_epoch_scalars_histograms_and_graph(tmp_path):
    history = fit_logged(tmp_path, histogram_freq=1)
    train, val = read(tmp_path / "train"), read(tmp_path / "validation")
    assert set(train.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert [e.step for e in train.Scalars("epoch_loss")] == [0, 1]
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_loss")], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in val.Scalars("epoch_accuracy")], history["val_accuracy"],
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_learning_rate")], 0.001, rtol=1e-6)
    assert set(train.Tags()["histograms"]) == {"conv/kernel/histogram", "conv/bias/histogram",
                                               "head/kernel/histogram", "head/bias/histogram"}
    kernel = train.Histograms("head/kernel/histogram")[-1].histogram_value
    assert kernel.num == 32 * 2 and sum(kernel.bucket) == 64 and kernel.min <= kernel.max
    nodes = {n.op: n for n in train.Graph().node}
    assert list(nodes["Conv2D"].input) == [nodes["InputLayer"].name]
    assert list(nodes["Dense"].input) == [nodes["Flatten"].name] and nodes["Dense"].name == "head"


def test_update_freq_writes_batch_scalars(tmp_path):
    fit_logged(tmp_path, update_freq=2, write_graph=False)
    train = read(tmp_path / "train")
    assert [e.step for e in train.Scalars("batch_loss")] == [2, 4, 6]  # 3 batches an epoch, 2 epochs
    assert train.Tags()["graph"] is False
    fit_logged(tmp_path / "every", update_freq="batch")
    assert len(read(tmp_path / "every" / "train").Scalars("batch_accuracy")) == 6


def test_tensorboard_serves_the_runs_scalars(tmp_path):
    """Start ``tensorboard --logdir`` on 127.0.0.1 and read the run's scalars from its HTTP API."""
    history = fit_logged(tmp_path / "logs")
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "logs"),
                             "--host", "127.0.0.1", "--port", "0", "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline, url = time.monotonic() + 60, None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = [m.group(0) for m in map(re.compile(r"http://127\.0\.0\.1:\d+/").search, list(lines)) if m]
            url = found[0] if found else None
            time.sleep(0.2)
        assert url, f"TensorBoard did not start: {''.join(lines)[-2000:]}"
        values = None
        while values is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}data/plugin/scalars/scalars?run=train&tag=epoch_loss",
                                            timeout=5) as resp:
                    values = json.load(resp)
            except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError):
                time.sleep(0.5)  # still loading the run
        assert values is not None, "TensorBoard never served the run's scalars"
        assert [step for _, step, _ in values] == [0, 1]
        np.testing.assert_allclose([v for _, _, v in values], history["loss"], rtol=1e-6)
        with urllib.request.urlopen(f"{url}data/runs", timeout=5) as resp:
            assert set(json.load(resp)) >= {"train", "validation"}
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(update_freq="sometimes")
    with pytest.raises(NotImplementedError, match="profile_batch"):
        TensorBoard(profile_batch=2)
