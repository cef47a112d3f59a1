"""Training callbacks: History, progress output, EarlyStopping, ModelCheckpoint, CSVLogger, TensorBoard,
LearningRateScheduler, ReduceLROnPlateau, BackupAndRestore and TerminateOnNaN (Keras names and arguments)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

from convkit import distributed


class Callback:
    """Base class; fit calls the hooks with ``logs`` dicts of floats (epochs are 0-based).

    ``chief_only``: a callback that only writes (prints, logs, saves) sets it; in data-parallel training
    (convkit.distributed) it then runs on rank 0 alone, while the others run on every rank."""

    chief_only = False

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
        # backups come last, so that they hold what the other callbacks changed at the epoch's end
        chief = distributed.is_chief()
        callbacks = [c for c in callbacks if chief or not c.chief_only]
        self.callbacks = [c for c in callbacks if not isinstance(c, BackupAndRestore)] + \
            [c for c in callbacks if isinstance(c, BackupAndRestore)]
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def on_train_begin(self, logs=None):
        """A BackupAndRestore that finds a backup restores it first; the other callbacks then catch up
        with the epochs it had trained, before their own on_train_begin."""
        history = None
        for c in self.callbacks:
            if isinstance(c, BackupAndRestore):
                history = c.restore_backup()
        for c in self.callbacks:
            if history is not None and not isinstance(c, BackupAndRestore):
                c.restore(history)
            c.on_train_begin(logs)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def run(*args):
            for c in self.callbacks:
                getattr(c, hook)(*args)

        return run

    def watches_batches(self) -> bool:
        """Whether a callback acts after each batch (and so may stop training there)."""
        return any(type(c).on_train_batch_end is not Callback.on_train_batch_end and not c.chief_only
                   for c in self.callbacks)


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


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel app is running), without importing IPython."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # a stand-in or broken IPython: not a notebook
        return False


class ProgbarLogger(Callback):
    """Progress output. verbose=1: a live bar, in a Jupyter notebook tqdm's notebook display (tqdm.auto)
    and on a terminal tqdm's text bar, else one line per epoch; verbose=2: one line per epoch;
    verbose=0: nothing. Setting env CI forces line mode."""

    chief_only = True

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self._bar = None

    def _out(self):
        return self.stream or sys.stdout  # read when used: a notebook replaces sys.stdout per cell

    def _notebook(self):
        return self.stream is None and _in_notebook()

    def _live(self):
        if self.verbose != 1 or os.environ.get("CI"):
            return False
        return self._notebook() or getattr(self._out(), "isatty", lambda: False)()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._epoch = epoch
        if self._live():
            desc = f"Epoch {epoch + 1}/{self.params['epochs']}"
            if self._notebook():
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.params.get("steps"), desc=desc, leave=True, unit="step")
            else:
                from tqdm import tqdm

                self._bar = tqdm(total=self.params.get("steps"), desc=desc, file=self._out(), leave=True,
                                 dynamic_ncols=True, unit="step")
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

    def on_test_end(self, logs=None):
        if self._bar is not None:
            self._bar.set_description_str(f"Epoch {self._epoch + 1}/{self.params['epochs']}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        secs = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=True)
            self._bar.close()
            self._bar = None
        elif self.verbose:
            print(f"Epoch {epoch + 1}/{self.params['epochs']} - {secs:.1f}s - {_fmt_logs(logs or {})}",
                  file=self._out(), flush=True)

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
            distributed.print0(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                distributed.print0(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after each epoch; ``filepath`` may hold ``{epoch}`` and log keys,
    e.g. 'ckpt-{epoch:02d}-{val_loss:.3f}.keras'. With ``save_best_only`` only improvements of ``monitor``.
    The name's suffix picks the format, as for ``model.save`` ('.keras', '.h5', '.convkit') or, with
    ``save_weights_only``, ``model.save_weights`` ('.weights.h5', '.convkit'); other names raise ValueError."""

    chief_only = True

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise NotImplementedError("ModelCheckpoint: only save_freq='epoch' is supported")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        from convkit.saving import check_file_name

        check_file_name(self.filepath, save_weights_only, "ModelCheckpoint")  # as Keras: refused now, not at epoch 1
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

    chief_only = True

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


class TensorBoard(Callback):
    """Event files for TensorBoard, written with the ``tensorboard`` package (``pip install
    'convkit[tensorboard]'``), laid out as Keras writes them: ``log_dir/train`` holds ``epoch_<metric>``
    scalars per epoch (``epoch_learning_rate`` too), ``batch_<metric>`` every ``update_freq`` batches
    when it is 'batch' or an int, weight histograms ``<layer>/<weight>/histogram`` every
    ``histogram_freq`` epochs and, with ``write_graph``, the graph of layers; ``log_dir/validation``
    holds the validation metrics as ``epoch_<metric>``. Then run ``tensorboard --logdir log_dir``."""

    chief_only = True

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        if update_freq != "epoch" and update_freq != "batch" and (
                isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a positive int, "
                             f"got {update_freq!r}")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be a non-negative int, got {histogram_freq!r}")
        for name, value in (("write_images", write_images), ("profile_batch", profile_batch),
                            ("embeddings_freq", embeddings_freq)):
            if value:
                raise NotImplementedError(f"TensorBoard: {name} is not supported")
        self.log_dir, self.histogram_freq, self.write_graph = os.fspath(log_dir), histogram_freq, write_graph
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._tb = None

    def _proto(self):
        if self._tb is None:
            try:
                from tensorboard.compat.proto import event_pb2, graph_pb2, node_def_pb2, summary_pb2
                from tensorboard.summary.writer.event_file_writer import EventFileWriter
            except ImportError:
                raise ImportError("the TensorBoard callback writes with the tensorboard package: "
                                  "pip install 'convkit[tensorboard]'") from None
            self._tb = (EventFileWriter, event_pb2, summary_pb2, graph_pb2, node_def_pb2)
        return self._tb

    def _writer(self, run):
        if run not in self._writers:
            self._writers[run] = self._proto()[0](os.path.join(self.log_dir, run))
        return self._writers[run]

    def _write(self, run, step, values=(), histograms=()):
        _, event_pb2, summary_pb2, _, _ = self._proto()
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values] +
                  [summary_pb2.Summary.Value(tag=tag, histo=_histogram(summary_pb2, a)) for tag, a in histograms])
        self._writer(run).add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def on_train_begin(self, logs=None):
        self._proto()
        self._batches = 0
        if self.write_graph:
            _, event_pb2, _, _, _ = self._proto()
            self._writer("train").add_event(event_pb2.Event(wall_time=time.time(),
                                                            graph_def=self._graph().SerializeToString()))

    def _graph(self):
        """The layers as a GraphDef: one node per layer, its inputs the layers feeding it."""
        from convkit._model_graph import layer_graph

        _, _, _, graph_pb2, node_def_pb2 = self._proto()
        return graph_pb2.GraphDef(node=[node_def_pb2.NodeDef(name=n.layer.name, op=type(n.layer).__name__,
                                                             input=n.inputs) for n in layer_graph(self.model)])

    def on_train_batch_begin(self, batch, logs=None):
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq == "epoch" or self._batches % self.update_freq:
            return
        values = [(f"batch_{k}", v) for k, v in (logs or {}).items()]
        if self.write_steps_per_second:
            values.append(("batch_steps_per_second", 1.0 / max(time.perf_counter() - self._t_batch, 1e-9)))
        self._write("train", self._batches, values)

    def on_epoch_begin(self, epoch, logs=None):
        self._t_epoch, self._epoch_start_batches = time.perf_counter(), self._batches

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = [(f"epoch_{k}", v) for k, v in logs.items() if not k.startswith("val_")]
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if isinstance(lr, (int, float)) and "learning_rate" not in logs:
            train.append(("epoch_learning_rate", lr))
        if self.write_steps_per_second:
            steps = self._batches - self._epoch_start_batches
            train.append(("epoch_steps_per_second", steps / max(time.perf_counter() - self._t_epoch, 1e-9)))
        histograms = []
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            histograms = [(f"{v.name.replace(':', '_')}/histogram", v.numpy())
                          for layer in self.model.layers for v in layer.weights]
        self._write("train", epoch, train, histograms)
        val = [(f"epoch_{k[4:]}", v) for k, v in logs.items() if k.startswith("val_")]
        if val:
            self._write("validation", epoch, val)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}


def _histogram(summary_pb2, values, bins=30):
    """A HistogramProto of ``values``: ``bins`` equal-width buckets between their min and max."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        return summary_pb2.HistogramProto()
    counts, edges = np.histogram(a, bins=bins)
    return summary_pb2.HistogramProto(min=float(a.min()), max=float(a.max()), num=float(a.size),
                                      sum=float(a.sum()), sum_squares=float(np.dot(a, a)),
                                      bucket_limit=edges[1:].tolist(), bucket=counts.astype(float).tolist())


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start to ``schedule(epoch, lr)`` (epoch 0-based)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.schedule(epoch, self.model.optimizer.learning_rate))
        self.model.optimizer.learning_rate = lr
        if self.verbose:
            distributed.print0(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs before counting again; never
    below ``min_lr``. Adds 'learning_rate' to each epoch's logs, as Keras does."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if "epsilon" in kwargs:  # tf.keras 1 / early 2 spelling
            warnings.warn("ReduceLROnPlateau: `epsilon` is deprecated; use `min_delta`", DeprecationWarning,
                          stacklevel=2)
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau: unexpected argument(s) {sorted(kwargs)}")
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), int(patience), verbose
        self.mode = _mode_better(mode, monitor)
        self.min_delta, self.cooldown, self.min_lr = abs(float(min_delta)), int(cooldown), float(min_lr)
        self._before = []
        self._reset()

    def _reset(self):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def restore(self, history):
        self._before = _epoch_logs(history)

    def on_train_begin(self, logs=None):
        self._reset()
        for epoch, past in enumerate(self._before):
            self._track(epoch, past, replay=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        logs["learning_rate"] = self.model.optimizer.learning_rate
        self._track(epoch, logs, replay=False)

    def _improved(self, value):
        if self.best is None:
            return True
        return value + self.min_delta < self.best if self.mode == "min" else value - self.min_delta > self.best

    def _track(self, epoch, logs, replay):
        """One epoch's bookkeeping; a replayed epoch (of a resumed run) changes no rate."""
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: learning rate reduction is conditioned on {self.monitor!r}, which "
                          f"is not available; available: {','.join(logs)}", stacklevel=3)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch, logs, replay):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, epoch, logs, replay) -> bool:
        """Lower the rate unless it is at min_lr already; True when it was (or, replayed, would have been)."""
        old = float(logs.get("learning_rate", math.inf)) if replay else self.model.optimizer.learning_rate
        if not old > np.float32(self.min_lr):
            return False
        if not replay:
            new = max(old * self.factor, self.min_lr)
            self.model.optimizer.learning_rate = new
            if self.verbose:
                distributed.print0(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
        return True


class BackupAndRestore(Callback):
    """Back up the whole training state in ``backup_dir`` (weights, optimizer, epoch, convkit's random
    state and a data iterator's position) at each epoch end, or every ``save_freq`` batches when it is an
    int; a later ``fit`` with the same callback, after the run was killed, resumes from the backup.

    From an epoch-end backup the resumed run goes on exactly as the interrupted one would have; from a
    mid-epoch one (int ``save_freq``) it restarts that epoch, with the weights of the backup, as Keras
    does. The backup is one file written atomically, and is deleted when training finishes unless
    ``delete_checkpoint=False``.
    """

    FILENAME = "backup.convkit"

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("BackupAndRestore: backup_dir must name a folder, got an empty value")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq <= 0):
            raise ValueError(f"BackupAndRestore: save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        self.backup_dir, self.save_freq = os.fspath(backup_dir), save_freq
        self.double_checkpoint, self.delete_checkpoint = bool(double_checkpoint), bool(delete_checkpoint)
        self._path = os.path.join(self.backup_dir, self.FILENAME)
        self._epochs_done, self._batches, self._history = 0, 0, {}

    def restore_backup(self):
        """Load the backup into the model if there is one; returns the history it had trained, else None."""
        from convkit._atomic import remove_leftovers
        from convkit.saving import restore_training_state
        from convkit.utils import set_rng_state

        self._epochs_done, self._batches, self._history = 0, 0, {}
        if distributed.is_chief():  # rank 0 alone writes the backup (every rank reads it)
            remove_leftovers(self._path)  # what a kill during a backup left
        if not os.path.exists(self._path) and not os.path.exists(self._path + ".bkp"):
            return None
        try:
            extra = restore_training_state(self.model, self._path)
        except (ValueError, FileNotFoundError):
            if not (self.double_checkpoint and os.path.exists(self._path + ".bkp")):
                raise
            extra = restore_training_state(self.model, self._path + ".bkp")
        self._epochs_done = int(extra["epoch"])
        self._history = {k: list(v) for k, v in extra.get("history", {}).items()}
        self.model._initial_epoch = self._epochs_done
        if extra.get("rng_state") is not None and not extra.get("mid_epoch"):
            set_rng_state(extra["rng_state"])
        data = self.params.get("data")
        if extra.get("data_state") is not None and data is not None and not extra.get("mid_epoch"):
            data.set_state(extra["data_state"])
        return self._history

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches >= self.save_freq:
                self._batches = 0
                self._save(mid_epoch=True)

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self._history.setdefault(k, []).append(float(v))
        self._epochs_done = epoch + 1
        if self.save_freq == "epoch":
            self._save(mid_epoch=False)

    def _save(self, mid_epoch):
        from convkit.saving import save_model

        if not distributed.is_chief():
            return
        extra = training_state(self.model, self._epochs_done, self._history, self.params.get("data"))
        extra["mid_epoch"] = mid_epoch
        if self.double_checkpoint and os.path.exists(self._path):
            shutil.copyfile(self._path, self._path + ".bkp")
        save_model(self.model, self._path, extra=extra)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and distributed.is_chief() and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)


def training_state(model, epochs_done, history, data=None) -> dict:
    """What resuming needs beside the weights and the optimizer: epochs done, their logs, convkit's
    random state and a data iterator's position (JSON, for save_model's ``extra``)."""
    from convkit.utils import get_rng_state

    return {"epoch": epochs_done, "history": history, "rng_state": get_rng_state(),
            "data_state": data.get_state() if data is not None else None, "stopped": bool(model.stop_training)}


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            distributed.print0(f"Batch {batch}: invalid loss, terminating training")
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
           "LearningRateScheduler", "ReduceLROnPlateau", "BackupAndRestore", "TerminateOnNaN", "LambdaCallback",
           "TensorBoard"]
