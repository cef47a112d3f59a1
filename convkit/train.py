"""Train a zoo model as the course notes do:  python -m convkit.train lenet

Loads the recipe's dataset (convkit.datasets.<name>.load_data), preprocesses it, trains with
the notes' optimizer, learning rate, batch size, epochs, validation split and callbacks, then
evaluates on the test set. Writes into the output folder (default runs/<name>-<timestamp>):

    model.convkit    the trained model (convkit.load_model)
    checkpoint.ckpt  the last completed epoch (weights, optimizer state, epoch counter, RNG
                     and augmentation state, history), rewritten atomically at each epoch end;
                     --resume continues from it exactly as the run would have gone on
    log.csv          one row per epoch (rewritten from the checkpoint on --resume)
    curves.png       loss and accuracy per epoch, training and validation
    metrics.json     test loss and accuracy, history, settings, timings, how many ranks trained

Under ``mpirun -np N`` (or mpiexec, srun) the N processes train data-parallel (convkit.distributed):
--batch-size is the global batch, split over the ranks; rank 0 alone prints and writes the files.

Exit status: 0 on success, 1 when --target-acc is not reached, 2 on bad arguments or data, 130 when
interrupted with Ctrl-C (after the checkpoint being written, if any, is whole).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time

import numpy as np

import convkit
from convkit import distributed, zoo
from convkit._atomic import atomic_open, remove_leftovers
from convkit._backend import device_name, get_num_threads
from convkit._device import resolve_device, to_device
from convkit.callbacks import Callback, CSVLogger, training_state
from convkit.distributed import print0
from convkit.plotting import plot_history
from convkit.preprocessing.image import ImageDataGenerator, append_augmented
from convkit.saving import load_model, save_model
from convkit.utils import set_random_seed, set_rng_state

CHECKPOINT = "checkpoint.ckpt"
BEST, LOG, MODEL, METRICS = "best.convkit", "log.csv", "model.convkit", "metrics.json"


def load_dataset(name: str, data_dir=None):
    """((x_train, y_train), (x_test, y_test)) from convkit.datasets.<name>.load_data(path=data_dir)."""
    try:
        module = importlib.import_module(f"convkit.datasets.{name}")
    except ImportError as e:
        raise OSError(f"dataset {name!r} is not available (convkit.datasets.{name}: {e})") from None
    return module.load_data(path=data_dir)


class EpochCheckpoint(Callback):
    """Rewrites ``path`` atomically after every epoch with everything needed to resume."""

    chief_only = True

    def __init__(self, path, info, history_before, data=None):
        super().__init__()
        self.path, self.info, self.data = path, info, data
        self.history = {k: list(v) for k, v in history_before.items()}

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        with _DeferInterrupt():
            save_model(self.model, self.path, extra={**self.info, **training_state(self.model, epoch + 1, self.history,
                                                                                   self.data)})


class UsageError(Exception):
    """A mistake in the command line or in what it names: one line on stderr and exit status 2."""


# The run's settings, stored with its checkpoint: flag -> key in the checkpoint's metadata.
SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate", "lr_schedule": "lr_schedule",
            "seed": "seed", "limit": "limit"}
INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m convkit.train", description="Train a model from the convkit zoo.",
        epilog="--resume restores the model, optimizer, epoch counter, random and augmentation state, history and "
               "the run's settings (model, epochs, batch size, learning rate and schedule, seed, limit) from the "
               "checkpoint in --out; a flag that contradicts them is an error. Exit status: 0 done, 1 test accuracy "
               "below --target-acc, 2 bad arguments or data, 130 interrupted (Ctrl-C).")
    p.add_argument("model", nargs="?", help="zoo name (see --list), e.g. lenet")
    p.add_argument("--list", action="store_true", help="list every model and exit")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "cosine-steps"],
                   help="override the recipe's learning-rate schedule (cosine: per epoch, to 0 at the end; "
                        "cosine-steps: the same per training step)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to train (default auto: the GPU when one is usable)")
    p.add_argument("--seed", type=int, help="random seed for weights, shuffling and augmentation (default 0)")
    p.add_argument("--out", help="output folder (default runs/<name>-<timestamp>)")
    p.add_argument("--data-dir", help="where the dataset files are (passed to load_data(path=...))")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest runs/<name>-* with a checkpoint)")
    p.add_argument("--target-acc", type=float,
                   help="exit with status 1 if the test accuracy is below this: a fraction (0.99) or a percentage (99)")
    p.add_argument("--limit", type=int, help="train on the first N training examples only")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                   help="0 silent, 1 a live progress bar (default), 2 one line per epoch")
    return p


def _list():
    for n in zoo.names():
        r = zoo.recipe(n)
        extra = f"  [{r.reported}]" if r.reported else ""
        print(f"{n:<18} {r.dataset:<14} epochs {r.epochs:<4} batch {r.batch_size:<4} lr {r.learning_rate:g}{extra}")
    print("aliases: " + ", ".join(f"{a} -> {t}" for a, t in zoo.ALIASES.items()))


def _resume_dir(name, out):
    if out:
        return out
    found = sorted(glob.glob(os.path.join("runs", f"{name}-*", CHECKPOINT)), key=os.path.getmtime)
    if not found:
        raise UsageError(f"--resume found no runs/{name}-*/{CHECKPOINT}; pass --out")
    return os.path.dirname(found[-1])


def _command(argv) -> str:
    """The command line that reproduces the run; where files went (--out, --data-dir) does not matter."""
    keep, skip = [], False
    for a in argv:
        if skip or a.split("=")[0] in ("--out", "--data-dir"):
            skip = not skip and "=" not in a
            continue
        keep.append(a)
    return " ".join(["python -m convkit.train", *keep])


def _resume_command(name, out, data_dir) -> str:
    data = f" --data-dir {shlex.quote(data_dir)}" if data_dir else ""
    return f"python -m convkit.train {name} --resume --out {shlex.quote(out)}{data}"


def _rewrite_log(path, history: dict) -> None:
    """log.csv as CSVLogger writes it, for exactly the epochs in ``history``: a run killed between
    writing its log row and its checkpoint must not log that epoch twice once resumed."""
    keys = sorted(history)
    rows = [["epoch"] + keys] + [[i] + [history[k][i] for k in keys] for i in range(len(history.get("loss", [])))]
    with atomic_open(path) as f:
        f.write("".join(",".join(map(str, row)) + "\r\n" for row in rows).encode())


def _labels(y):
    y = np.asarray(y)
    return y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_numbers(args) -> None:
    for flag, v in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--limit", args.limit)):
        if v is not None and v <= 0:
            raise UsageError(f"{flag} must be a positive whole number, got {v}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {args.lr:g}")
    if args.target_acc is not None and not 0 < args.target_acc <= 100:
        raise UsageError(f"--target-acc must be a fraction (0.99) or a percentage (99), got {args.target_acc:g}")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir} is not a folder")


def _fresh_settings(args, name, r) -> dict:
    return {"model": name, "dataset": r.dataset, "seed": 0 if args.seed is None else args.seed,
            "epochs": args.epochs or r.epochs, "batch_size": args.batch_size or r.batch_size,
            "learning_rate": args.lr or r.learning_rate, "lr_schedule": args.lr_schedule or r.lr_schedule or "constant",
            "limit": args.limit}


def _resumed_settings(args, name, out, saved: dict) -> dict:
    """The settings the run in ``out`` started with; a flag given again must agree with them."""
    if saved.get("model", name) != name:
        raise UsageError(f"{out} holds a run of {saved['model']}, not {name}")
    settings = {k: saved.get(k) for k in ("model", "dataset", *SETTINGS.values(), "command")}
    for flag, key in SETTINGS.items():
        given = getattr(args, flag)
        if given is not None and given != saved.get(key):
            dash = "--" + flag.replace("_", "-")
            raise UsageError(f"{dash} {given} contradicts the run in {out}, which was started with "
                             f"{dash} {saved.get(key)}; resume without it, or start a new run with another --out")
    return settings


class _DeferInterrupt:
    """Hold Ctrl-C until the block ends (a checkpoint being written is finished first)."""

    def __enter__(self):
        self.hit = False
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.old = signal.signal(signal.SIGINT, lambda *_: setattr(self, "hit", True))
        return self

    def __exit__(self, *exc):
        if self.main:
            signal.signal(signal.SIGINT, self.old)
            if self.hit:
                raise KeyboardInterrupt
        return False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        _list()
        return 0
    if not args.model:
        _parser().print_usage(sys.stderr)
        print0("error: name a model (see --list)", file=sys.stderr)
        return 2
    try:
        return _run(args, sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print0(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started: nothing was written
        print0("\nInterrupted.", file=sys.stderr)
        return INTERRUPTED


def _load_data(args, r, settings):
    try:
        (x_train, y_train), (x_test, y_test) = load_dataset(r.dataset, args.data_dir)
    except (OSError, ValueError) as e:
        raise UsageError(" ".join(str(e).split("\n"))) from None
    limit = settings["limit"]
    limited = min(limit or len(x_train), len(x_train)) / len(x_train)
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_train, x_test = zoo.preprocess(r, x_train, x_test)
    return x_train, _labels(y_train), x_test, _labels(y_test), limited


def _run(args, argv) -> int:
    try:
        name = zoo.canonical(args.model)
    except ValueError as e:
        raise UsageError(e) from None
    _check_numbers(args)
    r = zoo.recipe(name)
    if distributed.launched_size() > 1:  # started by mpirun & co: one GPU per process, by local rank
        try:
            distributed.init(device=args.device)
        except (RuntimeError, ImportError) as e:
            raise UsageError(f"data-parallel start-up: {e}") from None
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device}: {e}") from None

    if args.resume:
        out = _resume_dir(name, args.out)
        ckpt = os.path.join(out, CHECKPOINT)
        if not os.path.exists(ckpt):
            raise UsageError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}) to continue from")
        try:
            model, extra = load_model(ckpt, return_extra=True)
        except (OSError, ValueError) as e:
            raise UsageError(f"--resume: {ckpt} cannot be read ({e})") from None
        settings = _resumed_settings(args, name, out, extra)
        settings["command"] = settings["command"] or _command(argv)
        done, history_before, stopped = int(extra["epoch"]), extra["history"], bool(extra.get("stopped"))
        if (done >= settings["epochs"] or stopped) and _finished(out, done):
            how = "stopped early after" if stopped and done < settings["epochs"] else "finished after"
            print0(f"The run of {name} in {out} {how} {_plural(done, 'epoch')}: nothing left to train "
                  f"(its results are in {os.path.join(out, METRICS)})")
            return 0
        set_rng_state(extra["rng_state"])
    else:
        out = args.out or os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if distributed.active():  # rank 0's clock names the folder
            out = distributed.broadcast_text(out)
        if any(os.path.exists(os.path.join(out, f)) for f in (CHECKPOINT, METRICS)):
            raise UsageError(f"{out} already holds a run: continue it with --resume, or choose another --out")
        settings = {**_fresh_settings(args, name, r), "command": _command(argv)}
        set_random_seed(settings["seed"])
        model = zoo.build(name, learning_rate=settings["learning_rate"])
        done, history_before, stopped, extra = 0, {}, False, {}
    r.lr_schedule = "" if settings["lr_schedule"] == "constant" else settings["lr_schedule"]
    x_train, y_train, x_test, y_test, limited = _load_data(args, r, settings)

    created = not os.path.isdir(out)
    if distributed.is_chief():
        os.makedirs(out, exist_ok=True)
        # What a run killed during a save left beside the files it writes here: a resumed run, and one
        # started afresh after a kill before its first checkpoint, both own the folder now.
        for f in (CHECKPOINT, BEST, LOG, MODEL, METRICS):
            remove_leftovers(os.path.join(out, f))
    if args.resume:
        print0(f"Resuming {name} from {os.path.join(out, CHECKPOINT)} after epoch {done}")
    try:
        return _train(args, name, r, settings, model, out, device, extra, done, history_before, stopped,
                      (x_train, y_train, x_test, y_test, limited))
    except KeyboardInterrupt:
        return _interrupted(name, out, args.data_dir, created)


def _finished(out, epochs_done) -> bool:
    try:
        with open(os.path.join(out, METRICS)) as f:
            return json.load(f).get("epochs_run") == epochs_done
    except (OSError, ValueError):
        return False


def _interrupted(name, out, data_dir, created) -> int:
    if not distributed.is_chief():
        return INTERRUPTED
    ckpt = os.path.join(out, CHECKPOINT)
    if os.path.exists(ckpt):
        _, extra = load_model(ckpt, return_extra=True)
        print0(f"\nInterrupted. The checkpoint after epoch {extra['epoch']} is in {out}; resume with:\n"
              f"  {_resume_command(name, out, data_dir)}", file=sys.stderr)
    else:
        print0("\nInterrupted before the first epoch ended: nothing to resume.", file=sys.stderr)
        if created:
            for f in (LOG, BEST):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(out, f))
            with contextlib.suppress(OSError):
                os.rmdir(out)
    return INTERRUPTED


def _train(args, name, r, settings, model, out, device, extra, initial_epoch, history_before, stopped, data) -> int:
    x_train, y_train, x_test, y_test, limited = data
    epochs, batch_size, lr, seed = settings["epochs"], settings["batch_size"], settings["learning_rate"], settings["seed"]
    if r.validation_split:
        cut = int(len(x_train) * (1 - r.validation_split))
        x_train, x_val, y_train, y_val = x_train[:cut], x_train[cut:], y_train[:cut], y_train[cut:]
    else:  # the notes hold nothing out: show the test set, for the curves only
        x_val, y_val = x_test, y_test

    callbacks = r.make_callbacks(checkpoint_path=os.path.join(out, BEST), epochs=epochs, learning_rate=lr)
    for c in callbacks:  # early stopping and best-checkpoint counters carry on from the epochs before
        c.restore(history_before)
    if r.extra_augmented:  # enlarged once (in proportion under --limit), from the training part only
        x_train, y_train = append_augmented(ImageDataGenerator(**r.augmentation), x_train, y_train,
                                            round(r.extra_augmented * limited), seed=seed)
    train, fit_kw, gen = (x_train, y_train), {}, None
    if r.augmentation and not r.extra_augmented:
        # Augment where training runs: on the GPU the images are resampled there, never copied back.
        images = to_device(x_train, device)
        gen = ImageDataGenerator(**r.augmentation).flow(images, y_train, batch_size=batch_size, seed=seed)
        train, fit_kw = (gen, None), {"steps_per_epoch": len(gen)}
        if args.resume and extra.get("data_state"):
            gen.set_state(extra["data_state"])
    if args.resume and distributed.is_chief():
        _rewrite_log(os.path.join(out, LOG), history_before)
    callbacks += [CSVLogger(os.path.join(out, LOG), append=bool(args.resume)),
                  EpochCheckpoint(os.path.join(out, CHECKPOINT), settings, history_before, data=gen)]

    ranks = f" over {distributed.size()} ranks" if distributed.active() else ""
    print0(f"Training {name} on {r.dataset}: {len(x_train)} examples, {_plural(epochs, 'epoch')}, batch {batch_size}"
           f"{ranks}, lr {lr:g}, output in {out}")
    t0 = time.perf_counter()
    if initial_epoch < epochs and not stopped:
        model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=(x_val, y_val), callbacks=callbacks, verbose=args.verbose, device=device,
                  **fit_kw)
    train_seconds = time.perf_counter() - t0
    history = callbacks[-1].history
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=max(batch_size, 256), verbose=0)
    print0(f"Test loss {test_loss:.4f} - test accuracy {test_acc:.4f}")

    with _DeferInterrupt():
        if distributed.is_chief():
            _write_results(name, r, settings, model, out, history, test_loss, test_acc, train_seconds)
    target = args.target_acc
    if target is not None:
        target = target / 100 if target > 1 else target
        if test_acc < target:
            print0(f"Test accuracy {test_acc:.4f} is below the target {target:.4f}", file=sys.stderr)
            return 1
    return 0


def _write_results(name, r, settings, model, out, history, test_loss, test_acc, train_seconds) -> None:
    model.save(os.path.join(out, MODEL))
    plot_history(history, os.path.join(out, "curves.png"), title=f"{name} on {r.dataset}")
    result = {**settings, "epochs_run": len(history.get("loss", [])), "test_loss": float(test_loss),
              "test_accuracy": float(test_acc), "train_seconds": round(train_seconds, 2),
              "reported": r.reported, "history": history, "device": model._device,
              "machine": device_name(model._device), "threads": get_num_threads(), "ranks": distributed.size(),
              "convkit": convkit.__version__, "date": time.strftime("%Y-%m-%d")}
    with atomic_open(os.path.join(out, METRICS)) as f:
        f.write(json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    sys.exit(main())
