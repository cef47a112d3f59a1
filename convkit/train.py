"""Train a zoo model as the course notes do:  python -m convkit.train lenet

Loads the recipe's dataset (convkit.datasets.<name>.load_data), preprocesses it, trains with
the notes' optimizer, learning rate, batch size, epochs, validation split and callbacks, then
evaluates on the test set. Writes into the output folder (default runs/<name>-<timestamp>):

    model.convkit    the trained model (convkit.load_model)
    checkpoint.ckpt  the last completed epoch (weights, optimizer state, epoch counter, RNG
                     and augmentation state, history), rewritten atomically at each epoch end;
                     --resume continues from it exactly as the run would have gone on
    log.csv          one row per epoch (rewritten from the checkpoint on --resume)
    curves.png       loss/accuracy curves (when matplotlib is installed)
    metrics.json     test loss and accuracy, history, settings, timings

Exit status: 0 on success, 1 when --target-acc is not reached, 2 on bad arguments or data.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import sys
import time

import numpy as np

import convkit
from convkit import zoo
from convkit._atomic import atomic_open, remove_leftovers
from convkit._backend import device_name, get_num_threads
from convkit._device import resolve_device, to_device
from convkit.callbacks import Callback, CSVLogger, training_state
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
        raise SystemExit(f"error: dataset {name!r} is not available (convkit.datasets.{name}: {e})")
    return module.load_data(path=data_dir)


class EpochCheckpoint(Callback):
    """Rewrites ``path`` atomically after every epoch with everything needed to resume."""

    def __init__(self, path, info, history_before, data=None):
        super().__init__()
        self.path, self.info, self.data = path, info, data
        self.history = {k: list(v) for k, v in history_before.items()}

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        save_model(self.model, self.path, extra={**self.info, **training_state(self.model, epoch + 1, self.history,
                                                                               self.data)})


def _parser():
    p = argparse.ArgumentParser(prog="python -m convkit.train", description="Train a model from the convkit zoo.")
    p.add_argument("model", nargs="?", help="zoo name (see --list), e.g. lenet")
    p.add_argument("--list", action="store_true", help="list every model and exit")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"],
                   help="override the recipe's learning-rate schedule (cosine: per epoch, to 0 at the end)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default runs/<name>-<timestamp>)")
    p.add_argument("--data-dir", help="where the dataset files are (passed to load_data(path=...))")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out (default: the newest runs/<name>-* that has one)")
    p.add_argument("--target-acc", type=float, help="exit with status 1 if the test accuracy is below this")
    p.add_argument("--limit", type=int, help="train on the first N training examples only")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1)
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
        raise SystemExit(f"error: --resume found no runs/{name}-*/{CHECKPOINT}; pass --out")
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


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        _list()
        return 0
    if not args.model:
        _parser().print_usage(sys.stderr)
        print("error: name a model (see --list)", file=sys.stderr)
        return 2
    try:
        name = zoo.canonical(args.model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = zoo.recipe(name)
    epochs = args.epochs or r.epochs
    batch_size = args.batch_size or r.batch_size
    lr = args.lr or r.learning_rate
    if args.lr_schedule:
        r.lr_schedule = "" if args.lr_schedule == "constant" else args.lr_schedule
    for flag, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--limit", args.limit or 1)):
        if v <= 0:
            print(f"error: {flag} must be positive", file=sys.stderr)
            return 2

    if args.resume:
        out = _resume_dir(name, args.out)
        ckpt = os.path.join(out, CHECKPOINT)
        if not os.path.exists(ckpt):
            print(f"error: --resume: no {ckpt}", file=sys.stderr)
            return 2
        model, extra = load_model(ckpt, return_extra=True)
        set_rng_state(extra["rng_state"])
        initial_epoch, history_before = int(extra["epoch"]), extra["history"]
        stopped = bool(extra.get("stopped"))
        if stopped:
            print(f"{name} in {out} had stopped early after epoch {initial_epoch}: nothing left to train")
        else:
            print(f"Resuming {name} from {ckpt} after epoch {initial_epoch}")
    else:
        out = args.out or os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        set_random_seed(args.seed)
        model = zoo.build(name, learning_rate=lr)
        initial_epoch, history_before, stopped = 0, {}, False
    os.makedirs(out, exist_ok=True)
    # What a run killed during a save left beside the files it writes here: a resumed run, and one
    # started afresh after a kill before its first checkpoint, both own the folder now.
    for f in (CHECKPOINT, BEST, LOG, MODEL, METRICS):
        remove_leftovers(os.path.join(out, f))
    if args.lr and args.resume:
        model.optimizer.learning_rate = args.lr

    (x_train, y_train), (x_test, y_test) = load_dataset(r.dataset, args.data_dir)
    limited = min(args.limit or len(x_train), len(x_train)) / len(x_train)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, x_test = zoo.preprocess(r, x_train, x_test)
    y_train, y_test = _labels(y_train), _labels(y_test)

    if r.validation_split:
        cut = int(len(x_train) * (1 - r.validation_split))
        x_train, x_val, y_train, y_val = x_train[:cut], x_train[cut:], y_train[:cut], y_train[cut:]
    else:  # the notes hold nothing out: show the test set, for the curves only
        x_val, y_val = x_test, y_test

    info = {"model": name, "dataset": r.dataset, "seed": args.seed, "epochs": epochs, "batch_size": batch_size,
            "learning_rate": lr, "lr_schedule": r.lr_schedule or "constant"}
    callbacks = r.make_callbacks(checkpoint_path=os.path.join(out, BEST), epochs=epochs, learning_rate=lr)
    for c in callbacks:  # early stopping and best-checkpoint counters carry on from the epochs before
        c.restore(history_before)
    if r.extra_augmented:  # enlarged once (in proportion under --limit), from the training part only
        x_train, y_train = append_augmented(ImageDataGenerator(**r.augmentation), x_train, y_train,
                                            round(r.extra_augmented * limited), seed=args.seed)
    train, fit_kw, gen = (x_train, y_train), {}, None
    if r.augmentation and not r.extra_augmented:
        # Augment where training runs: on the GPU the images are resampled there, never copied back.
        images = to_device(x_train, resolve_device(args.device))
        gen = ImageDataGenerator(**r.augmentation).flow(images, y_train, batch_size=batch_size, seed=args.seed)
        train, fit_kw = (gen, None), {"steps_per_epoch": len(gen)}
        if args.resume and extra.get("data_state"):
            gen.set_state(extra["data_state"])
    if args.resume:
        _rewrite_log(os.path.join(out, LOG), history_before)
    callbacks += [CSVLogger(os.path.join(out, LOG), append=bool(args.resume)),
                  EpochCheckpoint(os.path.join(out, CHECKPOINT), info, history_before, data=gen)]

    print(f"Training {name} on {r.dataset}: {len(x_train)} examples, {epochs} epochs, batch {batch_size}, lr {lr:g}, "
          f"output in {out}")
    t0 = time.perf_counter()
    if initial_epoch < epochs and not stopped:
        model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                  validation_data=(x_val, y_val), callbacks=callbacks, verbose=args.verbose, device=args.device,
                  **fit_kw)
    train_seconds = time.perf_counter() - t0
    history = callbacks[-1].history
    test_loss, test_acc = model.evaluate(x_test, y_test, batch_size=max(batch_size, 256), verbose=0)
    print(f"Test loss {test_loss:.4f} - test accuracy {test_acc:.4f}")

    model.save(os.path.join(out, MODEL))
    plot_history(history, os.path.join(out, "curves.png"), title=f"{name} on {r.dataset}")
    result = {**info, "epochs_run": len(history.get("loss", [])), "test_loss": float(test_loss),
              "test_accuracy": float(test_acc), "train_seconds": round(train_seconds, 2),
              "reported": r.reported, "history": history, "limit": args.limit, "device": model._device,
              "machine": device_name(model._device), "threads": get_num_threads(),
              "convkit": convkit.__version__, "date": time.strftime("%Y-%m-%d"),
              "command": _command(sys.argv[1:] if argv is None else argv)}
    with atomic_open(os.path.join(out, METRICS)) as f:
        f.write(json.dumps(result, indent=1).encode())
    if args.target_acc is not None and test_acc < args.target_acc:
        print(f"Test accuracy {test_acc:.4f} is below the target {args.target_acc:.4f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
