"""Choose a recipe without looking at the test set: train on the first 54,000 training images and
report accuracy and loss per epoch on the last 6,000, which no recipe is trained on.

    python bench/holdout.py lenet5 lenet5_aug --seed 0 --out docs/results/holdout-lenet.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import convkit
from convkit import zoo
from convkit._backend import device_name
from convkit.preprocessing.image import ImageDataGenerator
from convkit.train import load_dataset
from result_file import out_help, result_path

HELD_OUT = 6000


def run(name: str, seed: int) -> dict:
    r = zoo.recipe(name)
    (x, y), _ = load_dataset(r.dataset)
    x, _ = zoo.preprocess(r, x, x[:1])
    x_fit, y_fit, x_val, y_val = x[:-HELD_OUT], y[:-HELD_OUT], x[-HELD_OUT:], y[-HELD_OUT:]
    convkit.set_random_seed(seed)
    model = zoo.build(name)
    callbacks = r.make_callbacks(epochs=r.epochs, learning_rate=r.learning_rate)
    data, kw = (x_fit, y_fit), {"batch_size": r.batch_size}
    if r.augmentation:
        gen = ImageDataGenerator(**r.augmentation).flow(x_fit, y_fit, batch_size=r.batch_size, seed=seed)
        data, kw = (gen, None), {"steps_per_epoch": len(gen)}
    t0 = time.perf_counter()
    h = model.fit(*data, epochs=r.epochs, validation_data=(x_val, y_val), callbacks=callbacks, verbose=2, **kw)
    return {"model": name, "seed": seed, "held_out": HELD_OUT, "seconds": round(time.perf_counter() - t0, 1),
            "val_accuracy": h.history["val_accuracy"], "val_loss": h.history["val_loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", choices=zoo.names())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help=out_help("holdout"))
    args = p.parse_args(argv)
    runs = [run(name, args.seed) for name in args.models]
    info = dict(date=datetime.date.today().isoformat(), machine=device_name("cpu"),
                threads=convkit.get_num_threads(), convkit=convkit.__version__)
    out = result_path(args.out, "holdout")
    out.write_text(json.dumps({"info": info, "runs": runs}, indent=1) + "\n")
    for r in runs:
        best = min(range(len(r["val_loss"])), key=r["val_loss"].__getitem__)
        print(f"{r['model']}: last epoch {r['val_accuracy'][-1]:.2%} held-out accuracy, loss {r['val_loss'][-1]:.4f}; "
              f"lowest loss {r['val_loss'][best]:.4f} at epoch {best + 1}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
