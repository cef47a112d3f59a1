"""Host (and GPU) memory over a long training run: it must hold steady, not grow per epoch.

    python bench/memory_training.py                       # LeNet-5, 60 epochs of 2,048 images, CPU
    python bench/memory_training.py --device cuda --epochs 100

Records the resident set size after every epoch (and CuPy's pool usage on the GPU), writes
bench/results/memory-<device>.json and prints the growth from the first settled epoch to the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np

import convkit
from convkit import callbacks as cb
from convkit._backend import device_name
from result_file import out_help, result_path


def rss_mib() -> float:
    """Current (not peak) resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemoryLog(cb.Callback):
    def __init__(self, device):
        super().__init__()
        self.device, self.host, self.gpu = device, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.host.append(round(rss_mib(), 2))
        if self.device == "cuda":
            import cupy

            self.gpu.append(round(cupy.get_default_memory_pool().used_bytes() / 2**20, 2))


def measure(epochs=60, n=2048, batch_size=128, device="cpu", model="lenet5", seed=0, callbacks=()) -> dict:
    """Train ``model`` on ``n`` random MNIST-shaped images for ``epochs`` and log memory per epoch."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    convkit.set_random_seed(seed)
    m = convkit.zoo.build(model)
    log = MemoryLog(device)
    m.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x[:512], y[:512]), verbose=0,
          callbacks=[*callbacks, log], device=device)
    return {"model": model, "epochs": epochs, "examples": n, "batch_size": batch_size, "device": device,
            "host_rss_mib": log.host, "gpu_pool_mib": log.gpu}


def growth(series, settle=3) -> float:
    """MiB gained from epoch ``settle`` (allocator pools warmed up) to the last epoch."""
    return series[-1] - series[min(settle, len(series) - 1)] if series else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", default=None, help=out_help("memory-<device>"))
    args = p.parse_args(argv)
    r = measure(epochs=args.epochs, device=args.device)
    r.update(date=datetime.date.today().isoformat(), machine=device_name(args.device), convkit=convkit.__version__,
             numpy=np.__version__, threads=convkit.get_num_threads(),
             host_growth_mib=round(growth(r["host_rss_mib"]), 2), gpu_growth_mib=round(growth(r["gpu_pool_mib"]), 2))
    out = result_path(args.out, f"memory-{args.device}")
    out.write_text(json.dumps(r, indent=1) + "\n")
    h = r["host_rss_mib"]
    print(f"{r['machine']}: host RSS {h[0]:.1f} MiB after epoch 1, {h[-1]:.1f} MiB after epoch {len(h)}; "
          f"growth after epoch 3: {r['host_growth_mib']:+.2f} MiB"
          + (f"; GPU pool growth {r['gpu_growth_mib']:+.2f} MiB" if r["gpu_pool_mib"] else "") + f" -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
