"""ReduceLROnPlateau lowers the learning rate on the epochs Keras's does (Keras itself on its PyTorch
backend, fed the same scripted logs), and BackupAndRestore resumes an interrupted fit exactly."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import convkit  # noqa: E402
from convkit import callbacks as C  # noqa: E402
from convkit import layers as L  # noqa: E402
from convkit.preprocessing import ImageDataGenerator  # noqa: E402


LOSSES = [1.0, 0.9, 0.95, 0.9, 0.89995, 0.91, 0.7, 0.7, 0.71, 0.72, 0.73, 0.74, 0.6, 0.61, 0.62, 0.63, 0.64, 0.65,
          0.66, 0.67]
ACCURACIES = [0.5, 0.6, 0.6, 0.61, 0.605, 0.7, 0.69, 0.69, 0.7, 0.8, 0.79, 0.78, 0.78, 0.78, 0.9, 0.9, 0.9]


def _lr_sequence(callback, model, key, values):
    callback.set_model(model)
    callback.on_train_begin()
    out = []
    for epoch, v in enumerate(values):
        logs = {key: v}
        callback.on_epoch_end(epoch, logs)
        out.append((float(logs["learning_rate"]), float(model.optimizer.learning_rate)))
    return out


@pytest.mark.parametrize("kwargs,key,values", [
    ({}, "val_loss", LOSSES * 2),
    ({"patience": 2}, "val_loss", LOSSES),
    ({"patience": 1, "factor": 0.5, "cooldown": 2}, "val_loss", LOSSES),
    ({"patience": 1, "factor": 0.2, "min_lr": 0.005}, "val_loss", LOSSES),
    ({"monitor": "loss", "patience": 2, "min_delta": 0.02, "cooldown": 1}, "loss", LOSSES),
    ({"monitor": "val_accuracy", "mode": "max", "patience": 1, "factor": 0.5}, "val_accuracy", ACCURACIES),
    ({"monitor": "acc", "mode": "max", "patience": 2, "min_delta": 0.01, "cooldown": 1}, "acc", ACCURACIES),
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_reduce_lr_on_plateau_follows_keras_on_scripted_logs(kwargs, key, values):
    theirs_model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    theirs_model.compile(keras.optimizers.SGD(0.1), "mse")
    ours_model = convkit.Sequential([L.Input((2,)), L.Dense(1)])
    ours_model.compile(convkit.optimizers.SGD(0.1), "mse")
    theirs = _lr_sequence(keras.callbacks.ReduceLROnPlateau(**kwargs), theirs_model, key, values)
    ours = _lr_sequence(C.ReduceLROnPlateau(**kwargs), ours_model, key, values)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ours[-1][1] < 0.1  # the script does reach a plateau


def test_reduce_lr_on_plateau_defaults_and_arguments_are_keras():
    ours, theirs = C.ReduceLROnPlateau(), keras.callbacks.ReduceLROnPlateau()
    for name in ("monitor", "factor", "patience", "verbose", "min_delta", "cooldown", "min_lr"):
        expected = getattr(theirs, name)
        assert getattr(ours, name) == (expected if isinstance(expected, str) else pytest.approx(abs(expected))), name
    with pytest.raises(ValueError, match=r"factor must be < 1.0, got 1.5"):
        C.ReduceLROnPlateau(factor=1.5)
    with pytest.warns(DeprecationWarning, match="use `min_delta`"):
        assert C.ReduceLROnPlateau(epsilon=0.01).min_delta == 0.01


def test_reduce_lr_on_plateau_in_fit_logs_the_rate(rng):
    x, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
    model = convkit.Sequential([L.Input((4,)), L.Dense(2, activation="softmax")])
    model.compile(convkit.optimizers.SGD(1e-9), "sparse_categorical_crossentropy")  # too small to improve
    h = model.fit(x, y, epochs=4, verbose=0, callbacks=[C.ReduceLROnPlateau("loss", patience=1, min_delta=1)])
    # each epoch logs the rate it trained with; the reduction at its end shows in the next
    np.testing.assert_allclose(h.history["learning_rate"], [1e-9, 1e-9, 1e-10, 1e-11], rtol=1e-6)
    assert model.optimizer.learning_rate == pytest.approx(1e-12)


class Interrupt(Exception):
    pass


class KillAt(C.Callback):
    """Stands for the kernel dying: raises when ``epoch`` begins (or at its ``batch``-th batch)."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self.now = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch
        if epoch == self.epoch and self.batch is None:
            raise Interrupt

    def on_train_batch_begin(self, batch, logs=None):
        if self.now == self.epoch and batch == self.batch:
            raise Interrupt


def _model():
    m = convkit.Sequential([L.Input((6, 6, 1)), L.Conv2D(3, 3, activation="relu"), L.Flatten(), L.Dropout(0.3),
                            L.Dense(3, activation="softmax")])
    m.compile(convkit.optimizers.RMSprop(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _callbacks():
    return [C.ReduceLROnPlateau("loss", patience=1, factor=0.5, min_delta=0.05),
            C.EarlyStopping("loss", patience=3, min_delta=0.001)]


@pytest.mark.parametrize("augmented", [False, True], ids=["arrays", "generator"])
def test_backup_and_restore_resumes_an_interrupted_fit_exactly(augmented, rng, tmp_path):
    x, y = rng.random((40, 6, 6, 1), dtype=np.float32), rng.integers(0, 3, 40)

    def data():
        if augmented:
            flow = ImageDataGenerator(rotation_range=20, horizontal_flip=True).flow(x, y, batch_size=8, seed=1)
            return (flow,), {}
        return (x, y), {"batch_size": 8}

    convkit.set_random_seed(0)
    whole = _model()
    args, kw = data()
    full = whole.fit(*args, **kw, epochs=6, verbose=0, callbacks=_callbacks())

    backup = tmp_path / "backup"
    convkit.set_random_seed(0)
    first = _model()
    args, kw = data()
    with pytest.raises(Interrupt):
        first.fit(*args, **kw, epochs=6, verbose=0, callbacks=_callbacks() + [C.BackupAndRestore(backup), KillAt(3)])
    assert os.listdir(backup) == ["backup.convkit"]

    convkit.set_random_seed(123)  # a new session: other initial weights and random state
    again = _model()
    args, kw = data()
    rest = again.fit(*args, **kw, epochs=6, verbose=0, callbacks=_callbacks() + [C.BackupAndRestore(backup)])
    assert rest.epoch == [3, 4, 5]
    for key, values in full.history.items():
        np.testing.assert_allclose(rest.history[key], values[3:], rtol=1e-6, err_msg=key)
    for a, b in zip(again.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert again.optimizer.learning_rate == whole.optimizer.learning_rate < 0.01
    assert not backup.exists()  # delete_checkpoint=True


def test_backup_every_few_batches_restarts_the_interrupted_epoch_from_the_backup(rng, tmp_path):
    x, y = rng.random((40, 6, 6, 1), dtype=np.float32), rng.integers(0, 3, 40)
    convkit.set_random_seed(0)
    after_batch = []  # weights after each batch, over both epochs

    class Spy(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            after_batch.append(self.model.get_weights())

    with pytest.raises(Interrupt):  # 5 batches an epoch; killed before batch 4 of epoch 1, the 10th
        _model().fit(x, y, batch_size=8, epochs=3, verbose=0,
                     callbacks=[Spy(), C.BackupAndRestore(tmp_path, save_freq=3, delete_checkpoint=False),
                                KillAt(1, 4)])
    assert len(after_batch) == 9
    again, begun = _model(), []

    class Start(C.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not begun:
                begun.append(self.model.get_weights())

    h = again.fit(x, y, batch_size=8, epochs=3, verbose=0,
                  callbacks=[Start(), C.BackupAndRestore(tmp_path, save_freq=3, delete_checkpoint=False)])
    assert h.epoch == [1, 2]  # epoch 1 again from its start, with the weights of the 9th batch's backup
    for a, b in zip(begun[0], after_batch[8]):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "backup.convkit").exists()


def test_backup_and_restore_refuses_bad_arguments():
    with pytest.raises(ValueError, match="backup_dir must name a folder"):
        C.BackupAndRestore("")
    with pytest.raises(ValueError, match=r"save_freq must be 'epoch' or a positive int, got 'batch'"):
        C.BackupAndRestore("b", save_freq="batch")
