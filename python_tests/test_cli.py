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

import convkit
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
CKPT = cli.CHECKPOINT


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
    rc = cli.main(["lenet5", "--epochs", "3", "--out", str(out), "--verbose", "2", "--target-acc", "0.5",
                   "--limit", "500"])
    assert rc == 0
    text = capsys.readouterr()
    assert "Epoch 3/3" in text.out and "Test loss" in text.out
    files = set(os.listdir(out))
    assert {"model.convkit", "checkpoint.ckpt", "log.csv", "metrics.json"} <= files
    assert "curves.png" in files
    m = json.load(open(out / "metrics.json"))
    assert m["model"] == "lenet5" and m["epochs_run"] == 3 and m["test_accuracy"] > 0.5
    assert list(m["history"]) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    # what reproduces the run, without where its files went
    assert m["command"] == "python -m convkit.train lenet5 --epochs 3 --verbose 2 --target-acc 0.5 --limit 500"
    assert m["machine"] and m["date"] and m["threads"] >= 1
    from convkit import load_model
    assert load_model(out / "model.convkit").count_params() == 61_706


def test_target_accuracy_not_reached_exits_1(fake_data, tmp_path):
    assert cli.main(["lenet5", "--epochs", "1", "--limit", "64", "--out", str(tmp_path), "--verbose", "0",
                     "--target-acc", "0.999"]) == 1


def test_cifar_recipe_with_standardisation_and_split(fake_data, tmp_path):
    assert cli.main(["cifar10_bn", "--epochs", "1", "--limit", "100", "--batch-size", "50", "--out", str(tmp_path),
                     "--verbose", "0"]) == 0
    m = json.load(open(tmp_path / "metrics.json"))
    assert m["learning_rate"] == 1e-4 and m["batch_size"] == 50


DRIVER = FAKE + textwrap.dedent('''
    import contextlib, os, signal, sys
    import convkit.saving, convkit.train as cli
    cli.load_dataset = lambda name, data_dir=None: fake_dataset(name, n=3000)

    # CONVKIT_KILL_IN_SAVE=K: SIGKILL this process in the middle of writing the K-th checkpoint
    # (after its first 4 KiB reached the temporary file), as a power cut or the OOM killer would.
    kill_at, saves, real_open = int(os.environ.get("CONVKIT_KILL_IN_SAVE", 0)), [0], convkit.saving.atomic_open

    class Killing:
        def __init__(self, f):
            self.f, self.written = f, 0
        def write(self, b):
            n = self.f.write(b)
            self.written += len(b)
            if self.written > 4096:
                self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return n
        def __getattr__(self, name):
            return getattr(self.f, name)

    @contextlib.contextmanager
    def atomic_open(path):
        with real_open(path) as f:
            if str(path).endswith(cli.CHECKPOINT):
                saves[0] += 1
                f = Killing(f) if saves[0] == kill_at else f
            yield f

    convkit.saving.atomic_open = atomic_open
    sys.exit(cli.main(sys.argv[1:]))
''')


def test_kill_mid_training_then_resume(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    args = [sys.executable, str(driver), "mnist_cnn2", "--epochs", "8", "--batch-size", "100", "--out", str(out),
            "--verbose", "0", "--seed", "3"]
    ckpt = out / CKPT
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


def _log_rows(out):
    return max(0, len((out / "log.csv").read_text().splitlines()) - 1) if (out / "log.csv").exists() else 0


def _leftovers(out):
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_killed_at_random_moments_and_mid_save_resumes_to_the_uninterrupted_result(tmp_path):
    """Issue-6 fault trials: SIGKILLs at random moments, and one inside a checkpoint write. Each
    run resumes with --resume, loses at most the epoch in flight, and ends bit-identical to an
    uninterrupted run with the same seed (dropout, shuffling and augmentation state included)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, str(driver), "mnist_cnn_aug", "--epochs", "4", "--limit", "600", "--batch-size", "100",
           "--verbose", "0", "--seed", "5", "--out"]
    t0 = time.perf_counter()
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True, timeout=300)
    whole = time.perf_counter() - t0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())

    def finish_like_the_reference(out):
        resume = ["--resume"] if (out / CKPT).exists() else []  # killed before the first epoch ended: start over
        res = subprocess.run(cmd + [str(out)] + resume, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert not _leftovers(out)
        m = json.loads((out / "metrics.json").read_text())
        assert m["history"] == ref["history"] and m["test_loss"] == ref["test_loss"]
        assert _log_rows(out) == 4

    moments = np.random.default_rng().uniform(0.1, 1.0, size=(3, 2)) * whole  # fresh each run
    for trial, kills in enumerate(moments):
        out = tmp_path / f"trial{trial}"
        for delay in kills:
            resume = ["--resume"] if (out / CKPT).exists() else []
            proc = subprocess.Popen(cmd + [str(out)] + resume, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            if (out / CKPT).exists():  # whole whatever moment the kill came, at most one epoch behind
                _, extra = saving.load_model(out / CKPT, return_extra=True)
                assert extra["epoch"] >= _log_rows(out) - 1, f"kills at {moments[trial]} s"
        finish_like_the_reference(out)

    out = tmp_path / "mid_save"
    env = {**os.environ, "CONVKIT_KILL_IN_SAVE": "3"}
    res = subprocess.run(cmd + [str(out)], capture_output=True, timeout=300, env=env)
    assert res.returncode == -signal.SIGKILL
    assert _leftovers(out), "the kill should have come inside the write"
    _, extra = saving.load_model(out / CKPT, return_extra=True)
    assert extra["epoch"] == 2 and _log_rows(out) == 3  # the previous checkpoint, whole
    finish_like_the_reference(out)


def test_lr_schedule_option_overrides_the_recipe(fake_data, tmp_path):
    assert cli.main(["lenet5", "--epochs", "2", "--out", str(tmp_path), "--verbose", "0", "--limit", "200",
                     "--lr-schedule", "cosine"]) == 0
    m = json.load(open(tmp_path / "metrics.json"))
    assert m["lr_schedule"] == "cosine" and m["history"]["learning_rate"] == pytest.approx([1e-3, 5e-4])


def _interrupt_after_epoch(monkeypatch, n):
    """Ctrl-C right after the n-th checkpoint was written, as a user would press it."""
    real = cli.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch + 1 == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.EpochCheckpoint, "on_epoch_end", on_epoch_end)


RUN = ["lenet5", "--epochs", "3", "--limit", "300", "--batch-size", "50", "--lr", "0.002", "--seed", "4",
       "--lr-schedule", "cosine", "--verbose", "0"]


def test_resume_continues_with_the_settings_the_run_started_with(fake_data, tmp_path, monkeypatch, capsys):
    assert cli.main(RUN + ["--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after_epoch(m, 1)
        assert cli.main(RUN + ["--out", str(out)]) == cli.INTERRUPTED
    err = capsys.readouterr().err
    assert f"python -m convkit.train lenet5 --resume --out {out}" in err
    # every flag the run started with is restored from its checkpoint; none has to be repeated
    assert cli.main(["lenet5", "--resume", "--out", str(out), "--verbose", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("epochs", "limit", "batch_size", "learning_rate", "lr_schedule", "seed", "model", "command"):
        assert m[key] == whole[key], key
    assert m["history"] == whole["history"] and m["test_loss"] == whole["test_loss"]


def test_a_flag_that_contradicts_the_resumed_run_is_refused(fake_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after_epoch(m, 1)
        assert cli.main(RUN + ["--out", str(out)]) == cli.INTERRUPTED
    capsys.readouterr()
    for flag, value in (("--epochs", "5"), ("--lr", "0.01"), ("--seed", "0"), ("--limit", "100"),
                        ("--batch-size", "32"), ("--lr-schedule", "constant")):
        assert cli.main(["lenet5", "--resume", "--out", str(out), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag} {value} contradicts the run in {out}" in err
    assert cli.main(["mnist_cnn", "--resume", "--out", str(out)]) == 2
    assert "holds a run of lenet5" in capsys.readouterr().err
    # the same values again are no contradiction
    assert cli.main(["lenet5", "--resume", "--out", str(out), "--epochs", "3", "--seed", "4", "--verbose", "0"]) == 0


def test_resuming_a_finished_run_changes_nothing(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["lenet5", "--epochs", "1", "--limit", "100", "--out", str(out), "--verbose", "0"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(["lenet5", "--resume", "--out", str(out)]) == 0
    assert "finished after 1 epoch: nothing left to train" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_new_run_never_overwrites_one_in_its_folder(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["lenet5", "--epochs", "1", "--limit", "100", "--out", str(out), "--verbose", "0"]) == 0
    before = (out / "metrics.json").read_bytes()
    assert cli.main(["lenet5", "--epochs", "1", "--limit", "100", "--out", str(out), "--verbose", "0"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


def _no_data(name, data_dir=None):
    from convkit.datasets._common import DataUnavailableError
    raise DataUnavailableError("could not load MNIST. Tried:\n  a: no\n  b: no\nPut it somewhere")


@pytest.mark.parametrize("args, says", [
    (["--epochs", "0"], "--epochs must be a positive whole number"),
    (["--epochs", "-2"], "--epochs must be a positive whole number"),
    (["--limit", "0"], "--limit must be a positive whole number"),
    (["--batch-size", "0"], "--batch-size must be a positive whole number"),
    (["--lr", "-0.1"], "--lr must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--target-acc", "150"], "--target-acc must be a fraction"),
    (["--data-dir", "/nonexistent/convkit-data"], "--data-dir /nonexistent/convkit-data is not a folder"),
    (["--resume"], "holds no checkpoint"),
    ("no data", "could not load MNIST. Tried:   a: no   b: no Put it somewhere"),
    ("cuda", "--device cuda:"),
])
def test_user_errors_are_one_line_and_status_2_and_leave_no_folder(args, says, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(cli, "load_dataset", _no_data if args == "no data" else fake_dataset)
    if args == "cuda":
        if convkit.has_cuda():
            pytest.skip("a GPU is usable here")
        args = ["--device", "cuda"]
    if args == ["--resume"]:
        out.mkdir()
    argv = ["lenet5", "--out", str(out), "--verbose", "0"] + (args if isinstance(args, list) else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not out.exists() or not any(out.iterdir())


def test_cli_process_prints_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "convkit.train", "lenet", "--epochs", "0", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == "error: --epochs must be a positive whole number, got 0\n"


def test_target_accuracy_as_fraction_or_percentage(fake_data, tmp_path, capsys):
    args = ["lenet5", "--epochs", "1", "--limit", "300", "--verbose", "0"]
    assert cli.main(args + ["--out", str(tmp_path / "a"), "--target-acc", "10"]) == 0
    assert "1 epoch," in capsys.readouterr().out
    assert cli.main(args + ["--out", str(tmp_path / "b"), "--target-acc", "99.99"]) == 1
    assert "below the target 0.9999" in capsys.readouterr().err


def test_ctrl_c_saves_and_prints_the_command_that_resumes(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    args = [sys.executable, str(driver), "mnist_cnn2", "--epochs", "6", "--batch-size", "100", "--out", str(out),
            "--verbose", "0", "--seed", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / CKPT).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == cli.INTERRUPTED, err
    assert "Traceback" not in err
    command = err.strip().splitlines()[-1].strip()
    assert command == f"python -m convkit.train mnist_cnn2 --resume --out {out}"
    _, extra = saving.load_model(out / CKPT, return_extra=True)  # whole
    res = subprocess.run([sys.executable, str(driver)] + command.split()[3:], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"after epoch {extra['epoch']}" in res.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 6


def test_curves_have_whole_epoch_ticks(tmp_path):
    from convkit.plotting import plot_history
    fig = plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8]}, tmp_path / "c.png")
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
