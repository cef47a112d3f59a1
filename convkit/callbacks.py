"""Training callbacks: History, progress output, EarlyStopping, ModelCheckpoint, CSVLogger,
LearningRateScheduler and TerminateOnNaN (Keras names and arguments)."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings



class Callback:
    """Base class; fit calls the hooks with ``logs`` dicts of floats (epochs are 0-based)."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass

    def on_train_end(self, logs=None): pass

    def on_epoch_begin(self, epoch, logs=None): pass

    def on_epoch_end(self, epoch, logs=None): pass

    def on_train_batch_begin(self, batch, logs=None): pass

    def on_train_batch_end(self, batch, logs=None): pass

    def on_test_begin(self, logs=None): pass

    def on_test_end(self, logs=None): pass

    def restore(self, history: dict) -> None:
        """Catch up with the epochs a resumed run trained before (``history``: key -> per-epoch values,
        as History holds them), so that counters and bests carry on instead of restarting."""


def _epoch_logs(history: dict) -> list:
    """Per-epoch logs dicts from a History-style dict of lists."""
    n = max((len(v) for v in history.values()), default=0)
    return [{k: v[e] for k, v in history.items() if e < len(v)} for e in range(n)]


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def run(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)

        return run


class History(Callback):
    """Records each epoch's logs: ``history.history['loss']`` etc.; ``history['loss']`` works too."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key):
        return self.history[key]

    def keys(self):
        return self.history.keys()


def _fmt_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if isinstance(v, (int, float)))


class ProgbarLogger(Callback):
    """Progress output. verbose=1: a live bar (tqdm) on a terminal, else one line per epoch;
    verbose=2: one line per epoch; verbose=0: nothing. Setting env CI forces line mode."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self._bar = None

    def _live(self):
        return self.verbose == 1 and not os.environ.get("CI") and getattr(self.stream, "isatty", lambda: False)()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._epoch = epoch
        if self._live():
            from tqdm import tqdm

            self._bar = tqdm(total=self.params.get("steps"), desc=f"Epoch {epoch + 1}/{self.params['epochs']}",
                             file=self.stream, leave=True, dynamic_ncols=True, unit="step")
            self._last = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            now = time.perf_counter()
            if now - self._last > 0.2:
                self._bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=False)
                self._last = now

    def on_test_begin(self, logs=None):
        if self._bar is not None:  # fit's validation pass: the bar is full, the epoch is not over
            self._bar.set_description(f"Epoch {self._epoch + 1}/{self.params['epochs']} validating", refresh=True)

    def on_epoch_end(self, epoch, logs=None):
        secs = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.set_description(f"Epoch {epoch + 1}/{self.params['epochs']}", refresh=False)
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=True)
            self._bar.close()
            self._bar = None
        elif self.verbose:
            print(f"Epoch {epoch + 1}/{self.params['epochs']} - {secs:.1f}s - {_fmt_logs(logs or {})}",
                  file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _mode_better(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the best epoch's weights are put back when training ends,
    whether or not this callback stopped it.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.mode = _mode_better(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, \
            start_from_epoch

    def _improved(self, value, ref):
        if ref is None:
            return True
        return value < ref - self.min_delta if self.mode == "min" else value > ref + self.min_delta

    def restore(self, history):
        self._before = _epoch_logs(history)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best, self.best_weights = None, None
        for epoch, past in enumerate(getattr(self, "_before", [])):
            self._track(epoch, past, replay=True)
        if self.restore_best_weights and getattr(self, "_before", None):
            warnings.warn("EarlyStopping(restore_best_weights=True) after a resume restores the best epoch only "
                          "if it comes after the resume point", stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        self._track(epoch, logs or {}, replay=False)

    def _track(self, epoch, logs, replay):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged values "
                             f"{sorted(logs)}")
        if epoch < self.start_from_epoch:
            return
        value = logs[self.monitor]
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = None if replay else self.model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            if not replay:  # a run that stopped is not resumed (the trainer checks), so replay never stops
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after each epoch; ``filepath`` may hold ``{epoch}`` and log keys,
    e.g. 'ckpt-{epoch:02d}-{val_loss:.3f}.keras'. With ``save_best_only`` only improvements of ``monitor``."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise NotImplementedError("ModelCheckpoint: only save_freq='epoch' is supported")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _mode_better(mode, monitor)
        self.best = initial_value_threshold

    def restore(self, history):
        for past in _epoch_logs(history):
            value = past.get(self.monitor)
            if value is not None and self._better(value):
                self.best = value

    def _better(self, value):
        return self.best is None or (value < self.best if self.mode == "min" else value > self.best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"ModelCheckpoint: monitor {self.monitor!r} is not among the logged values "
                                 f"{sorted(logs)}")
            if not self._better(value):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to {value:.5f}, saving to {path}")
            self.best = value
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (epoch first)."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer, self._keys, self._header_done = None, None, exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            self._keys = sorted(logs)
            self._writer = csv.writer(self._file, delimiter=self.separator)
            if not self._header_done:
                self._writer.writerow(["epoch"] + self._keys)
        self._writer.writerow([epoch] + [logs.get(k, "NA") for k in self._keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        self._file.close()


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start to ``schedule(epoch, lr)`` (epoch 0-based)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.schedule(epoch, self.model.optimizer.learning_rate))
        self.model.optimizer.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from plain functions: on_epoch_end=lambda epoch, logs: ..., etc."""

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_"):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


__all__ = ["Callback", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LearningRateScheduler", "TerminateOnNaN", "LambdaCallback"]
