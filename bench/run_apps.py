#!/usr/bin/env python3
"""Inference images/s of ImageNet models: convkit.applications against PyTorch and Keras, on the CPU.

    python bench/run_apps.py            # ResNet50, MobileNet and EfficientNetB1, 224x224, batch 1 and 32
    python bench/run_apps.py --quick    # a smoke run (well under a minute): 64x64 images, batch 1 and 2

PyTorch runs the same architecture with the same weights: bench/torch_twin.py translates the convkit model
into torch.nn.functional calls (no torchvision), timed in NCHW and in channels_last, each as it is and with every
convolution-batch-normalisation pair folded into the convolution's weights beforehand (PyTorch's own inference
fusion, as convkit folds them at inference), the fastest of the four reported.
Keras runs its own keras.applications model on its PyTorch backend (KERAS_BACKEND=torch, set here), with
convkit's weights set into it. All random weights (the speed does not depend on them); every peer's output is
checked against convkit's before it is timed. Each framework is called directly on one batch (model(x),
inference mode), the same preprocessed images for all, already in its own layout and type (PyTorch's NCHW or
channels_last tensor, Keras's torch tensor) so that no conversion is timed.

All three run in one process, so they share its thread count (--threads, set in convkit and PyTorch) and its
allocator (--allocator, bench/workers.py's choices; by default glibc keeping freed blocks, the setting convkit's
fit and predict make for themselves, given here through glibc's environment before the process starts). Times
are medians of interleaved repeats after warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from result_file import out_help, result_path  # noqa: E402
from run_kernels import CpuTimer  # noqa: E402
from run_training import write_results  # noqa: E402
from torch_twin import TorchTwin, to_numpy, to_torch  # noqa: E402
from workers import ALLOCATORS, allocator_env, allocator_seen  # noqa: E402

import convkit  # noqa: E402
from convkit._backend import device_name  # noqa: E402

MODELS = ["ResNet50", "MobileNet", "EfficientNetB1"]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
TOLERANCE = 1e-4  # largest difference of class probabilities allowed between convkit and a peer


def build(name, size):
    """(convkit model, Keras model with the same weights, the module's preprocess_input)."""
    import keras

    import convkit.applications as apps

    ours = getattr(apps, name)(weights=None, input_shape=(size, size, 3))
    theirs = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    theirs.set_weights(ours.get_weights())
    module = sys.modules[getattr(apps, name).__module__]
    return ours, theirs, module.preprocess_input


def frameworks(model, keras_model) -> dict:
    """name: (prepare, run, as_numpy) for convkit and each peer. ``prepare`` turns the NHWC batch into the
    framework's own input once, outside the timing; ``run`` is what is timed."""
    def keras_run(x):
        with torch.no_grad():
            return keras_model(x, training=False)

    out = {"convkit": (lambda x: x, lambda x: model(x, training=False), np.asarray)}
    for label, fmt in FORMATS.items():
        for fold, suffix in ((False, ""), (True, "+folded")):  # folded: PyTorch's conv-BN fusion for inference
            out[f"torch_{label}{suffix}"] = ((lambda fmt: lambda x: to_torch(x, fmt))(fmt),
                                             TorchTwin(model, memory_format=fmt, fold_batch_norm=fold), to_numpy)
    out["keras"] = (torch.from_numpy, keras_run, lambda y: y.cpu().numpy())
    return out


def measure(name, model, fws, preprocess, batch, timer, seed=0):
    """One row: images/s of convkit and each peer on one batch, after checking the peers' outputs."""
    size = model.input_shape[1]
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(preprocess(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)))
    inputs = {k: prepare(x) for k, (prepare, _, _) in fws.items()}
    outputs = {k: as_numpy(run(inputs[k])) for k, (_, run, as_numpy) in fws.items()}
    diffs = {k: float(np.abs(y - outputs["convkit"]).max()) for k, y in outputs.items() if k != "convkit"}
    bad = {k: d for k, d in diffs.items() if not d <= TOLERANCE}
    if bad:
        raise RuntimeError(f"{name} batch {batch}: outputs differ from convkit's by {bad}")
    ms = timer.run({k: (lambda run, x: lambda: run(x))(run, inputs[k]) for k, (_, run, _) in fws.items()})
    rates = {k: batch / (t / 1e3) for k, t in ms.items()}  # from the median ms per batch
    torch_format = max((k[len("torch_"):] for k in rates if k.startswith("torch_")), key=lambda f: rates[f"torch_{f}"])
    row = dict(model=name, size=size, batch=batch, params=model.count_params(), img_s=rates, max_abs_diff=diffs,
               torch_format=torch_format)
    row["ratio_torch"] = rates["convkit"] / rates[f"torch_{torch_format}"]
    row["ratio_keras"] = rates["convkit"] / rates["keras"]
    return row


def fmt_row(r) -> str:
    best = r["img_s"][f"torch_{r['torch_format']}"]
    return (f"{r['model']:<15} {r['size']:>4} {r['batch']:>5} {r['img_s']['convkit']:>9.1f} {best:>9.1f} "
            f"{r['torch_format']:<20} {r['ratio_torch']:>6.2f} {r['img_s']['keras']:>9.1f} {r['ratio_keras']:>6.2f}")


HEADER = (f"{'model':<15} {'size':>4} {'batch':>5} {'convkit':>9} {'torch':>9} {'torch config':<20} {'ratio':>6} "
          f"{'keras':>9} {'ratio':>6}")


def info(threads, allocator) -> dict:
    import keras

    out = dict(date=datetime.date.today().isoformat(), device=device_name("cpu"), python=platform.python_version(),
               numpy=np.__version__, torch=torch.__version__, keras=f"{keras.__version__} on its torch backend",
               convkit=convkit.__version__, threads=threads, torch_threads=torch.get_num_threads(),
               micro_kernel=convkit._cpu.micro_kernel(),
               allocator={"name": allocator, "shared_by_all": True, **allocator_seen()})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    if commit.returncode == 0:
        out["commit"] = commit.stdout.strip()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS, help=f"convkit.applications model functions "
                   f"(default: {' '.join(MODELS)})")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="batch sizes (default: 1 32)")
    p.add_argument("--size", type=int, default=None, help="image side (default: 224)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every framework (default: all cores)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timing per case, at least (default 3)")
    p.add_argument("--min-reps", type=int, default=None, help="timed repeats per framework, at least (default 5)")
    p.add_argument("--allocator", choices=ALLOCATORS, default="glibc-kept",
                   help="the process's allocator (default: glibc keeping freed memory, as convkit sets it)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64x64 images, batch 1 and 2, 2 repeats "
                   "(explicit flags still win)")
    p.add_argument("--out", type=Path, default=None, help=out_help("apps-cpu"))
    args = p.parse_args(argv)
    quick = dict(batches=[1, 2], size=64, min_time=0.0, min_reps=2)
    full = dict(batches=[1, 32], size=224, min_time=3.0, min_reps=5)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    env = allocator_env(args.allocator)
    if any(os.environ.get(k) != v for k, v in env.items()):  # glibc and LD_PRELOAD read them at start-up only
        argv = sys.argv[1:] if argv is None else argv
        return subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv],
                              env={**os.environ, **env}).returncode
    threads = args.threads or os.cpu_count()
    convkit.set_num_threads(threads)
    torch.set_num_threads(threads)
    meta = info(threads, args.allocator)
    meta.update(size=args.size, quick=args.quick, min_time=args.min_time, min_reps=args.min_reps)
    timer = CpuTimer(args.min_time, args.min_reps)
    out = result_path(args.out, "apps-cpu")
    lines = [f"# {meta['device']} | {threads} threads | torch {meta['torch']} | keras {meta['keras']} | "
             f"allocator {args.allocator} | {meta['date']}",
             "# inference images/s, median of interleaved repeats; torch: its fastest configuration (layout, batch "
             "normalisation folded or not); ratio = convkit / "
             "peer (above 1 = convkit faster)", HEADER]
    print("\n".join(lines), flush=True)
    rows = []
    for name in args.models:
        model, keras_model, preprocess = build(name, args.size)
        fws = frameworks(model, keras_model)
        for batch in args.batches:
            rows.append(measure(name, model, fws, preprocess, batch, timer))
            lines.append(fmt_row(rows[-1]))
            print(lines[-1], flush=True)
            write_results(out, meta, rows, lines)  # after every case: a run cut short keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
