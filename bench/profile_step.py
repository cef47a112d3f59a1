"""Python work per LeNet-5 training step: function calls counted by cProfile (deterministic, so two
versions of convkit compare on a busy machine) and the step's wall time.

    python bench/profile_step.py [--steps 20] [--batch-size 128]

prints one JSON line: calls per step, primitive calls per step, and the median step time in ms
over ``--steps`` unprofiled steps (after one warm-up step). Run it with two checkouts' interpreters
in turn, several times, to compare their times on the same machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()

    import convkit
    from convkit import zoo

    convkit.set_random_seed(0)
    model = zoo.lenet5()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 28, 28, 1), dtype=np.float32)
    y = model.loss.prepare_labels(rng.integers(0, 10, args.batch_size), (None, 10))
    model.train_step(x, y)  # warm-up: builds the optimizer state

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        model.train_step(x, y)
    prof.disable()
    stats = pstats.Stats(prof)

    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        model.train_step(x, y)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"calls_per_step": stats.total_calls / args.steps,
                      "primitive_calls_per_step": stats.prim_calls / args.steps,
                      "median_step_ms": round(1e3 * statistics.median(times), 3)}))


if __name__ == "__main__":
    main()
