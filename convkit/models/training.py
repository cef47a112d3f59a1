"""compile / fit / evaluate / predict, mixed into Model."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Mapping

import numpy as np

from convkit import _data_parallel, _serial, debugging, distributed
from convkit._backend import _cpu
from convkit import losses as losses_mod
from convkit import metrics as metrics_mod
from convkit import optimizers as optimizers_mod
from convkit._backend import is_cupy
from convkit._blas import blas_threads
from convkit._device import device_of, resolve_device, to_device, to_numpy
from convkit._device import xp_of as _xp_of
from convkit.callbacks import CallbackList, History, ProgbarLogger
from convkit.data import INFINITE_CARDINALITY, Dataset
from convkit import ops
from convkit.autodiff import GradientTape
from convkit.utils import rng


def _as_input(x, who="x"):
    """A float32 array (NumPy or CuPy); numeric inputs of other dtypes are converted once."""
    if not is_cupy(x):
        x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{who} must be a numeric array, got dtype {x.dtype}")
    x = x if x.dtype == np.float32 else x.astype(np.float32)
    if debugging.check_numerics_enabled():
        debugging.check_finite(x, who)
    return x


def _is_array(x):
    return isinstance(x, (np.ndarray, list)) or is_cupy(x)


def _dataset_steps(x, steps, who, steps_arg):
    """Steps for one pass over a Dataset: its length when known; an infinite one needs ``steps_arg``."""
    if steps is not None:
        return steps
    card = x.cardinality()
    if card == INFINITE_CARDINALITY:
        raise ValueError(f"{who}: the dataset is infinite (repeat() without a count), so pass {steps_arg}=... "
                         "to say how many batches make one pass")
    return card if card >= 0 else None


def _cpu_run_context(dev):
    """On the CPU, BLAS runs single-threaded while convkit's OpenMP kernels own the cores: two
    thread pools spinning on the same cores slow both down. From the first CPU run on, freed
    memory is also kept for reuse (``convkit._cpu.keep_freed_memory``, see README)."""
    if dev != "cpu":
        return contextlib.nullcontext()
    _keep_freed_memory()
    return blas_threads(1)


@functools.lru_cache(maxsize=None)
def _keep_freed_memory() -> bool:
    return _cpu.keep_freed_memory()


def _verbose(v):
    return 1 if v == "auto" else int(v)


def _batch_size(value, who, default=32) -> int:
    """A batch size argument: None means ``default``; anything but a positive int is refused."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{who}: batch_size must be a positive int, got {value!r}")
    return int(value)


def _resident(data, dev):
    """Training arrays go to the GPU once instead of batch by batch, when they take under a quarter of
    its free memory (a copy per step would wait for the GPU every step)."""
    if dev != "cuda" or data[0] != "arrays" or is_cupy(data[1]):
        return data
    import cupy

    _, x, y = data
    if x.nbytes + y.nbytes > cupy.cuda.Device().mem_info[0] // 4:
        return data
    return "arrays", to_device(x, dev), to_device(y, dev)


_STEPS_ARG = {"fit": "steps_per_epoch", "fit validation": "validation_steps", "evaluate": "steps"}


class _LazyLogs(Mapping):
    """A logs dict whose values (running means frozen at one step) become floats when first read."""

    def __init__(self, states: dict):
        self._states, self._values = states, {}

    def __getitem__(self, key):
        if key not in self._values:
            value_of, state = self._states[key]
            self._values[key] = value_of(*state)
        return self._values[key]

    def __iter__(self):
        return iter(self._states)

    def __len__(self):
        return len(self._states)


class Trainer:
    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.compiled_metrics = []
        self.stop_training = False
        self.history = None
        self._device = None
        self._compile_config = None
        self._grad_reducer = None  # set by fit while training data-parallel
        self._initial_epoch = None  # set by BackupAndRestore when it resumes a run

    # compile ---------------------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, device=None):
        """Set optimizer (a name such as 'rmsprop', 'adam', 'sgd', or an Optimizer), loss (a name, a
        Loss or a loss function), metrics (['accuracy'] or ['acc']) and optionally the device ('auto', 'cpu',
        'cuda')."""
        optimizer, loss_fn = optimizers_mod.get(optimizer), losses_mod.get(loss)
        metrics = list(metrics or [])
        compiled = [metrics_mod.get(m, loss_fn.name) for m in metrics]
        names = ["loss"] + [m.name for m in compiled]
        if len(set(names)) != len(names):
            raise ValueError(f"compile: metric names must be distinct, got {names}")
        self.optimizer, self.loss, self.compiled_metrics = optimizer, loss_fn, compiled  # all or nothing
        self._loss_tracker = metrics_mod.Mean("loss")
        self._compile_config = {"loss": loss if isinstance(loss, str) else _serial.serialize(self.loss),
                                "metrics": [m if isinstance(m, str) else m.name for m in metrics]}
        if device is not None:
            self._device = resolve_device(device)

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: compile the model first, e.g. model.compile(optimizer='adam', "
                               "loss='sparse_categorical_crossentropy', metrics=['accuracy'])")

    @property
    def metrics_names(self) -> list:
        return ["loss"] + [m.name for m in self.compiled_metrics]

    # device ----------------------------------------------------------------------------------------------
    def to(self, device):
        """Move every weight (and the optimizer's state) to 'cpu', 'cuda' or 'auto'."""
        device = resolve_device(device)
        for v in self.weights:
            v.value = to_device(v.value, device)
        if self.optimizer is not None:
            self.optimizer.to(device)
        self._device = device
        return self

    def _setup_device(self, device):
        dev = resolve_device(device) if device is not None else (self._device or resolve_device("auto"))
        if dev != self._device or dev == "cuda":
            self.to(dev)
        return dev

    # one step ---------------------------------------------------------------------------------------------
    def _regularization(self, variables):
        total = 0.0
        for v in variables:
            if v.regularizer is not None:
                total += v.regularizer(v.value)
        return total

    def compute_gradients(self, x, y, training=True):
        """Forward and backward on one batch without updating: returns (loss, predictions), the loss (the model's
        ``losses`` included, an array scalar on the batch's device, so that nothing waits for the GPU) and leaves
        dL/dw in each trainable ``Variable.grad``. ``y`` must already be in the loss's label format (see
        Loss.prepare_labels). The same GradientTape as a custom training loop's computes the gradients. Inside a
        data-parallel fit they are those of the global batch, summed over the ranks bucket by bucket as backward
        finishes them."""
        reducer = self._grad_reducer
        with GradientTape() as tape:
            y_pred = self(x, training=training)
            loss = ops.loss(y_pred, self.loss, y)
            for extra in self.losses:
                loss = ops.add(loss, extra)
        variables = self.trainable_weights  # a subclassed model may have built its layers just now
        if reducer is None:
            for v, g in zip(variables, tape.gradient(loss, variables)):
                v.grad = g
            return loss, y_pred
        # this rank's share of the global batch's mean loss; the reducer starts each bucket's sum as soon as the
        # tape has finished its variables' gradients, and leaves the sums in Variable.grad
        for v in variables:
            v.grad = None
        seed = _xp_of(loss).asarray(reducer.scale, dtype=loss.dtype)
        tape.gradient(loss, variables, output_gradients=seed, watcher=reducer)
        reducer.finish()
        return loss, y_pred

    def train_step(self, x, y):
        """One forward/backward/update on a batch; updates the loss and metric trackers."""
        loss, y_pred = self.compute_gradients(x, y)
        self.optimizer.apply(self.trainable_weights)
        self._loss_tracker.update_state(loss, x.shape[0])
        for m in self.compiled_metrics:
            m.update_state(y, y_pred)

    def test_step(self, x, y):
        y_pred = self(x, training=False)
        value, _ = self.loss.value_and_grad(y, y_pred)
        self._loss_tracker.update_state(value, x.shape[0])
        for m in self.compiled_metrics:
            m.update_state(y, y_pred)

    def _reset_metrics(self):
        self._loss_tracker.reset_state()
        for m in self.compiled_metrics:
            m.reset_state()

    def _results(self, extra_loss=0.0) -> dict:
        out = {"loss": float(self._loss_tracker.result() + extra_loss)}
        for m in self.compiled_metrics:
            out[m.name] = m.result()
        return out

    def _batch_logs(self) -> "_LazyLogs":
        """This step's logs for the callbacks, read from the device only if a callback looks at them."""
        return _LazyLogs({m.name: (m.value_of, m.snapshot()) for m in [self._loss_tracker, *self.compiled_metrics]})

    # data -------------------------------------------------------------------------------------------------
    def _output_shape_for(self, x_sample):
        try:
            return tuple(self.output_shape)
        except (ValueError, AttributeError, NotImplementedError, TypeError):
            return tuple(self(x_sample, training=False).shape)

    def _check_input_shape(self, x, who):
        spec = getattr(self, "_input_spec", None)
        if spec is not None and not isinstance(spec, list):
            if x.ndim != len(spec) or any(s is not None and s != d for s, d in zip(spec[1:], x.shape[1:])):
                raise ValueError(f"{who}: x has shape {tuple(x.shape)} but the model expects inputs of shape "
                                 f"{tuple(spec)}")

    def _prepare_xy(self, x, y, who):
        x = _as_input(x, f"{who}: x")
        if y is None:
            raise ValueError(f"{who}: y is required when x is an array")
        y = y if is_cupy(y) else np.asarray(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{who}: x and y have different numbers of samples ({x.shape[0]} and {y.shape[0]})")
        if x.shape[0] == 0:
            raise ValueError(f"{who}: no samples")
        self._check_input_shape(x, who)
        y = self.loss.prepare_labels(y, self._output_shape_for(x[:1]))
        return x, y

    def _batches(self, data, batch_size, shuffle, steps, who, shard=False):
        """Yields (x, y, n) for one epoch, from arrays or from an iterator of batches: n is the batch's size;
        with ``shard`` (data-parallel) x and y are this rank's contiguous part of it (see distributed.shard_bounds),
        the ranks sharing one shuffled order, so that together they see exactly the batches one process would."""
        part = (lambda k: slice(*distributed.shard_bounds(k))) if shard else (lambda k: slice(0, k))
        if data[0] == "arrays":
            _, x, y = data
            n = x.shape[0]
            if not shuffle:
                for s in range(0, n, batch_size):
                    k = min(batch_size, n - s)
                    p = part(k)
                    yield x[s + p.start:s + p.stop], y[s + p.start:s + p.stop], k
                return
            order = rng().permutation(n)  # drawn on the host (one seeded stream), sent to the GPU once an epoch
            if shard:  # every rank takes its part of rank 0's order, whatever its own seed
                order = distributed.broadcast(order)
            order_x = to_device(order, "cuda") if is_cupy(x) else order
            order_y = order_x if is_cupy(y) == is_cupy(x) else to_device(order, device_of(y))
            for s in range(0, n, batch_size):
                k = min(batch_size, n - s)
                p = part(k)
                yield x[order_x[s:s + k][p]], y[order_y[s:s + k][p]], k
            return
        _, source = data
        it = source["iter"]
        count, restarted = 0, False
        while steps is None or count < steps:
            try:
                batch = next(it)
            except StopIteration:
                # A re-iterable source starts a new pass: at once when a step count asks for more
                # batches (or the last epoch ended exactly at the end of a pass), else next epoch.
                if not source["reiterable"]:
                    return
                source["iter"] = it = iter(source["obj"])
                if steps is None or restarted:
                    return
                restarted = True
                continue
            restarted = False
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(f"{who}: a data generator must yield (x, y) batches, got {type(batch).__name__}")
            xb = _as_input(batch[0], f"{who}: x")
            yb = batch[1] if is_cupy(batch[1]) else np.asarray(batch[1])
            if xb.shape[0] != yb.shape[0]:
                raise ValueError(f"{who}: a batch has {xb.shape[0]} inputs but {yb.shape[0]} labels")
            self._check_input_shape(xb, who)
            yb = self.loss.prepare_labels(yb, self._output_shape_for(xb[:1]))
            p = part(xb.shape[0])
            yield xb[p], yb[p], xb.shape[0]
            count += 1

    def _data(self, x, y, who, batch_size, steps):
        """('arrays', x, y) with the number of steps, or ('iter', source) for generators."""
        if _is_array(x):
            x, y = self._prepare_xy(x, y, who)
            return ("arrays", x, y), math.ceil(x.shape[0] / batch_size)
        if y is not None:
            raise ValueError(f"{who}: y must not be given when x is a generator of (x, y) batches")
        if not hasattr(x, "__iter__") and not hasattr(x, "__next__"):
            raise TypeError(f"{who}: x must be an array or an iterator of (x, y) batches, got {type(x).__name__}")
        if isinstance(x, Dataset):
            steps = _dataset_steps(x, steps, who, _STEPS_ARG[who])
        elif steps is None and hasattr(x, "__len__"):
            steps = len(x)
        reiterable = not hasattr(x, "__next__")
        return ("iter", {"obj": x, "iter": iter(x), "reiterable": reiterable}), steps

    # fit --------------------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, device=None):
        """Train for ``epochs`` (counting from ``initial_epoch``); returns a History whose keys are
        'loss', the compiled metric names, and their 'val_' twins when there is validation data.
        After convkit.distributed.init() in a job of several processes it trains data-parallel, every rank
        given the same data: ``batch_size`` is then the global batch, split over the ranks."""
        self._require_compiled("fit")
        batch_size = _batch_size(batch_size, "fit")
        validation_batch_size = _batch_size(validation_batch_size, "fit validation", batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        if initial_epoch < 0:
            raise ValueError(f"fit: initial_epoch must be >= 0, got {initial_epoch!r}")
        if not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        dev = self._setup_device(device)
        if validation_split and validation_data is None:
            if not _is_array(x):
                raise ValueError("fit: validation_split needs array inputs; pass validation_data for generators")
            x = x if is_cupy(x) else np.asarray(x)
            y = y if is_cupy(y) else np.asarray(y)
            if len(x) != len(y):
                raise ValueError(f"fit: x and y have different numbers of samples ({len(x)} and {len(y)})")
            cut = int(len(x) * (1 - validation_split))  # the last fraction, before shuffling (as Keras)
            if cut == 0 or cut == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves an empty training or "
                                 f"validation set for {len(x)} samples")
            validation_data = (x[cut:], y[cut:])
            x, y = x[:cut], y[:cut]
        data, steps = self._data(x, y, "fit", batch_size, steps_per_epoch)
        data = _resident(data, dev)
        if steps_per_epoch is not None:
            steps = steps_per_epoch
        val = None
        if validation_data is not None:
            if isinstance(validation_data, (tuple, list)):
                if len(validation_data) not in (2, 3):
                    raise ValueError("fit: validation_data must be (x_val, y_val)")
                val = self._data(validation_data[0], validation_data[1], "fit validation",
                                 validation_batch_size, validation_steps)
                val = (_resident(val[0], dev), val[1])
            else:
                val = self._data(validation_data, None, "fit validation", validation_batch_size,
                                 validation_steps)
        history = History()
        cbs = list(callbacks or [])
        verbose = _verbose(verbose)
        if verbose:
            cbs.append(ProgbarLogger(verbose))
        cbs.append(history)
        stateful = x if hasattr(x, "get_state") and hasattr(x, "set_state") else None  # a resumable iterator
        cl = CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                      "batch_size": batch_size, "data": stateful})
        self.history = history
        self.stop_training = False
        parallel = distributed.active()
        self._grad_reducer = _data_parallel.GradientReducer(self) if parallel else None
        try:
            with _cpu_run_context(dev):
                return self._fit_loop(cl, history, data, val, steps, batch_size, shuffle, epochs, initial_epoch,
                                      validation_batch_size, dev)
        finally:
            if parallel:
                self._dp_stats = self._grad_reducer.stats
            self._grad_reducer = None

    def _parallel_step(self, xb, yb, n, dev):
        """One data-parallel step on this rank's part (possibly empty) of a global batch of ``n``; the first
        starts every rank from rank 0's weights and optimizer state (after callbacks restored any backup)."""
        reducer = self._grad_reducer
        if not reducer.synced:
            if not self.weights:  # a subclassed model makes its weights on its first call
                self(to_device(xb[:1], dev), training=False)
            _data_parallel.sync_model(self)
            reducer.synced = True
        if n < distributed.size() and _data_parallel.synchronized_layers(self):
            raise ValueError(f"fit: a batch of {n} examples cannot be split over {distributed.size()} ranks with "
                             "synchronized BatchNormalization (every rank needs one example); choose a batch size "
                             "or number of examples whose last batch holds at least one example per rank")
        reducer.begin_step(len(xb), n)
        if len(xb):
            self.train_step(to_device(xb, dev), to_device(yb, dev))
        else:  # nothing to compute here, but the sums and the update are everyone's
            for v in self.trainable_weights:
                v.grad = None
            reducer.finish()  # the regularisers' gradients came, scaled by their shares, from the other ranks
            self.optimizer.apply(self.trainable_weights)

    def _fit_loop(self, cl, history, data, val, steps, batch_size, shuffle, epochs, initial_epoch,
                  validation_batch_size, dev):
        parallel = self._grad_reducer is not None
        # a callback may stop training after a batch: then every rank has to hear of it at once
        batch_stop = parallel and cl.watches_batches()
        cl.on_train_begin()
        if self._initial_epoch is not None:  # a backup was restored
            initial_epoch, self._initial_epoch = self._initial_epoch, None
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            cl.on_epoch_begin(epoch)
            for step, (xb, yb, n) in enumerate(self._batches(data, batch_size, shuffle, steps, "fit", parallel)):
                cl.on_train_batch_begin(step)
                if parallel:
                    self._parallel_step(xb, yb, n, dev)
                else:
                    self.train_step(to_device(xb, dev), to_device(yb, dev))
                cl.on_train_batch_end(step, self._batch_logs())
                if batch_stop:
                    self.stop_training = _data_parallel.any_rank(self.stop_training)
                if self.stop_training:
                    break
            if parallel:  # the epoch's figures over every rank, and one set of moving statistics
                _data_parallel.reduce_metrics([self._loss_tracker, *self.compiled_metrics])
                _data_parallel.average_non_trainable(self)
            logs = self._results()
            if val is not None:
                cl.on_test_begin()
                vlogs = self._evaluate_data(*val, validation_batch_size, dev)
                cl.on_test_end(vlogs)
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            cl.on_epoch_end(epoch, logs)
            if parallel:  # rank 0's word: its callbacks saw the same logs, but it decides for all
                self.stop_training = bool(distributed.broadcast(np.array([self.stop_training], np.int64))[0])
            if self.stop_training:
                break
        cl.on_train_end(logs)
        return history

    # evaluate / predict ----------------------------------------------------------------------------------
    def _evaluate_data(self, data, steps, batch_size, dev):
        """Loss and metrics over ``data``; data-parallel, each rank takes its part of every batch."""
        self._reset_metrics()
        parallel = distributed.active()
        with _cpu_run_context(dev):
            for xb, yb, _ in self._batches(data, batch_size, False, steps if data[0] == "iter" else None, "evaluate",
                                           parallel):
                if len(xb):
                    self.test_step(to_device(xb, dev), to_device(yb, dev))
        if parallel:
            _data_parallel.reduce_metrics([self._loss_tracker, *self.compiled_metrics])
        return self._results(self._regularization(self.weights))

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", steps=None, return_dict=False, device=None):
        """Loss and metrics in inference mode: a float when no metrics were compiled, else
        [loss, *metrics] (or a dict with return_dict=True)."""
        self._require_compiled("evaluate")
        batch_size = _batch_size(batch_size, "evaluate")
        dev = self._setup_device(device)
        t0 = time.perf_counter()
        data, n_steps = self._data(x, y, "evaluate", batch_size, steps)
        logs = self._evaluate_data(data, steps if steps is not None else n_steps, batch_size, dev)
        if _verbose(verbose):
            print(f"evaluate - {time.perf_counter() - t0:.1f}s - " + " - ".join(f"{k}: {v:.4f}"
                                                                             for k, v in logs.items()))
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size=None, verbose="auto", steps=None, device=None):
        """Outputs for ``x`` in inference mode, batch by batch, as a NumPy array."""
        batch_size = _batch_size(batch_size, "predict")
        dev = self._setup_device(device)
        outs = []
        if _is_array(x):
            x = _as_input(x, "predict: x")
            self._check_input_shape(x, "predict")
            with _cpu_run_context(dev):
                for s in range(0, x.shape[0], batch_size):
                    outs.append(to_numpy(self(to_device(x[s:s + batch_size], dev), training=False)))
        else:
            if isinstance(x, Dataset):
                steps = _dataset_steps(x, steps, "predict", "steps")
            for i, batch in enumerate(x):
                if steps is not None and i >= steps:
                    break
                xb = batch[0] if isinstance(batch, (tuple, list)) else batch
                outs.append(to_numpy(self(to_device(_as_input(xb, "predict: x"), dev), training=False)))
                if steps is None and not isinstance(x, Dataset) and hasattr(x, "__len__") and i + 1 >= len(x):
                    break
        if not outs:
            raise ValueError("predict: no samples")
        return np.concatenate(outs, axis=0)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=len(x), verbose=0)

    # saving (see convkit.saving) ----------------------------------------------------------------------------
    def save(self, filepath, overwrite=True):
        """Write architecture, weights, compile settings and optimizer state to one file (see convkit.saving)."""
        from convkit.saving import save_model

        save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        """Write the weights: 'x.weights.h5' in Keras 3's format, 'x.convkit' in convkit's (see convkit.saving)."""
        from convkit.saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False, by_name=False):
        """Load weights from a convkit file or a Keras one (.weights.h5, .keras, Keras 2 .h5), the format found
        from the file's contents; ``by_name`` and ``skip_mismatch`` as Keras takes them (see convkit.saving)."""
        from convkit.saving import load_weights

        load_weights(self, filepath, skip_mismatch=skip_mismatch, by_name=by_name)
