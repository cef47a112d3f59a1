"""Whole training steps, convkit against PyTorch eager and Keras on the same models, same device, one run.

    python bench/run_training.py                          # CPU, the five models of the issue
    python bench/run_training.py --keras-python venv-tf/bin/python   # Keras/TensorFlow from another venv
    python bench/run_training.py --models lenet5 mnist_cnn --device cuda

For each model: the zoo model and its twins in PyTorch and (on the CPU, when a Python with Keras and
TensorFlow is at hand) Keras: same layers, convkit's initial weights copied in and checked to give
the same forward pass, Adam with Keras's eps, trained on the same resident synthetic batches
(Keras through its own ``fit``, with its default compilation). Reports training and inference images/s (median of timed windows
after warm-up) and the peak resident memory of each framework's own process, as ratios
convkit/PyTorch (above 1 = convkit faster; for memory, below 1 = convkit smaller).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from result_file import out_help, result_path

MODELS = {"lenet5": 128, "mnist_cnn": 128, "fashion3": 512, "cifar10_bn": 256, "cifar10_deep": 256}


def layer_specs(model) -> list:
    """``model``'s layers as framework-neutral (kind, settings, weights) triples, weights in Keras's
    order and layout (HWIO kernels, (in, out) dense kernels): what every twin is built from."""
    specs = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            cfg = dict(filters=layer.filters, kernel_size=list(layer.kernel_size), strides=list(layer.strides),
                       padding=layer.padding, activation=layer.activation.name, use_bias=layer.use_bias)
            weights = [layer.kernel.value] + ([layer.bias.value] if layer.use_bias else [])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            cfg = dict(pool_size=list(layer.pool_size), strides=list(layer.strides), padding=layer.padding)
            weights = []
        elif kind == "BatchNormalization":
            cfg = dict(momentum=layer.momentum, epsilon=layer.epsilon)
            weights = [layer.gamma.value, layer.beta.value, layer.moving_mean.value, layer.moving_variance.value]
        elif kind == "Dropout":
            cfg, weights = dict(rate=layer.rate), []
        elif kind == "Flatten":
            cfg, weights = {}, []
        elif kind == "Dense":
            cfg = dict(units=layer.units, activation=layer.activation.name, use_bias=layer.use_bias)
            weights = [layer.kernel.value] + ([layer.bias.value] if layer.use_bias else [])
        else:
            raise ValueError(f"no twin for layer {kind}")
        specs.append((kind, cfg, [np.array(w, dtype=np.float32) for w in weights]))
    return specs


def torch_twin(model):
    """The same architecture in PyTorch (NCHW), holding a copy of ``model``'s current weights."""
    import torch
    from torch import nn

    class NHWCFlatten(nn.Module):  # flatten in convkit's (H, W, C) order so Dense weights line up
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)

    def param(a):
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)))

    acts = {"relu": nn.ReLU, "softmax": lambda: nn.Identity(), "linear": lambda: nn.Identity()}
    mods, ndim = [], 4
    for kind, cfg, w in layer_specs(model):
        if kind == "Conv2D":
            (kh, kw), (sh, sw) = cfg["kernel_size"], cfg["strides"]
            if cfg["padding"] == "same" and ((sh, sw) != (1, 1) or kh % 2 == 0 or kw % 2 == 0):
                raise ValueError("only stride-1 odd 'same' convolutions map to symmetric padding")
            conv = nn.Conv2d(w[0].shape[2], cfg["filters"], (kh, kw), (sh, sw),
                             padding=(kh // 2, kw // 2) if cfg["padding"] == "same" else 0, bias=cfg["use_bias"])
            conv.weight = param(w[0].transpose(3, 2, 0, 1))
            if cfg["use_bias"]:
                conv.bias = param(w[1])
            mods += [conv, acts[cfg["activation"]]()]
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = nn.MaxPool2d if kind == "MaxPooling2D" else nn.AvgPool2d
            # For the even sizes of these models 'same' pooling equals ceil-mode pooling.
            mods.append(pool(cfg["pool_size"], cfg["strides"], ceil_mode=cfg["padding"] == "same"))
        elif kind == "BatchNormalization":
            bn = (nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d)(len(w[0]), eps=cfg["epsilon"],
                                                                   momentum=1 - cfg["momentum"])
            bn.weight, bn.bias = param(w[0]), param(w[1])
            bn.running_mean.data, bn.running_var.data = torch.from_numpy(w[2]), torch.from_numpy(w[3])
            mods.append(bn)
        elif kind == "Dropout":
            mods.append(nn.Dropout(cfg["rate"]))
        elif kind == "Flatten":
            mods.append(NHWCFlatten())
            ndim = 2
        elif kind == "Dense":
            dense = nn.Linear(*w[0].shape, bias=cfg["use_bias"])
            dense.weight = param(w[0].T)
            if cfg["use_bias"]:
                dense.bias = param(w[1])
            mods += [dense, acts[cfg["activation"]]()]
    return nn.Sequential(*mods)  # logits: the softmax lives in the loss


def keras_twin(specs, input_shape, learning_rate):
    """The same architecture in Keras (channels-last, so weights load as they are), compiled with Adam
    and sparse categorical cross-entropy as the zoo compiles it; needs only Keras and its backend."""
    import keras

    model = keras.Sequential([keras.Input(shape=input_shape)] +
                             [getattr(keras.layers, kind)(**cfg) for kind, cfg, _ in specs])
    for layer, (_, _, w) in zip(model.layers, specs):
        layer.set_weights(w)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy")
    return model


def _check_twin(framework, name, ours, theirs):
    err = float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))
    if err > 1e-4:
        raise AssertionError(f"{name}: the {framework} twin disagrees with convkit (max relative error {err:.2e})")


def _data(name, batch, steps, seed=0):
    from convkit import zoo

    rng = np.random.default_rng(seed)
    shape = (28, 28, 1) if zoo.recipe(name).dataset in ("mnist", "fashion_mnist") else (32, 32, 3)
    return rng.random((batch * steps,) + shape, dtype=np.float32), rng.integers(0, 10, batch * steps)


def match_precision(framework, precision):
    """The same GPU arithmetic for both frameworks: strict 'float32' (convkit's default; PyTorch's cuDNN
    would otherwise use TF32 for convolutions) or 'tf32' for convolutions and matrix products."""
    if framework == "convkit":
        import convkit

        convkit.ops.default_precision = precision
    else:
        import torch

        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def _convkit_model(name):
    import convkit

    convkit.set_random_seed(0)
    return convkit.zoo.build(name)


def worker(framework, name, batch, device, min_window, precision="float32"):
    """Measure one framework on one model in this process; returns a dict."""
    import convkit

    match_precision(framework, precision)
    model = _convkit_model(name)
    x, y = _data(name, batch, 4)
    if framework == "convkit":
        if device == "cuda":  # resident on the GPU, as the PyTorch tensors are
            import cupy

            x, y = cupy.asarray(x), cupy.asarray(y)

        def train(xs, ys):
            return model.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                             device=device).history["loss"][0]

        def infer(xs):
            model.predict(xs, batch_size=batch, verbose=0, device=device)

        losses = [train(x, y) for _ in range(3)]
        sync = lambda: None  # noqa: E731  (fit ends by reading its loss off the device: every step is done)
    else:
        import torch

        torch.manual_seed(0)
        dev = torch.device("cuda" if device == "cuda" else "cpu")
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        net = torch_twin(model).to(dev)
        probe = x[:8]
        ours = model.predict(probe, verbose=0)
        net.eval()
        with torch.no_grad():
            theirs = torch.softmax(net(torch.from_numpy(probe.transpose(0, 3, 1, 2)).to(dev)), 1).cpu().numpy()
        _check_twin("PyTorch", name, ours, theirs)
        opt = torch.optim.Adam(net.parameters(), lr=model.optimizer.learning_rate, eps=1e-7)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
        yt = torch.from_numpy(y.astype(np.int64)).to(dev)
        loss_fn = torch.nn.CrossEntropyLoss()

        def train(xs, ys):
            net.train()
            for s in range(0, len(xs), batch):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xs[s:s + batch]), ys[s:s + batch])
                loss.backward()
                opt.step()
            return float(loss)

        def infer(xs):
            net.eval()
            with torch.no_grad():
                for s in range(0, len(xs), batch):
                    net(xs[s:s + batch])

        losses = [train(xt, yt) for _ in range(3)]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        x, y = xt, yt
    return {**measure(f"{framework} {name}", train, infer, sync, x, y, losses, min_window),
            "threads": convkit.get_num_threads()}


def measure(label, train, infer, sync, x, y, losses, min_window) -> dict:
    """Images/s of ``train(x, y)`` and ``infer(x)`` (median of 5 windows of at least ``min_window``
    seconds) and this process's peak RSS; ``losses`` are the warm-up losses, which must drop."""
    if not losses[-1] < losses[0]:
        raise AssertionError(f"{label}: the loss did not drop over warm-up ({losses})")

    def rate(fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        sync()
        return len(args[0]) / (time.perf_counter() - t0)

    # Repeat the resident batches so that one window lasts at least min_window seconds.
    reps = max(1, math.ceil(min_window * rate(train, x, y) / len(x)))
    train_rates = [rate(lambda a, b: [train(a, b) for _ in range(reps)], x, y) * reps for _ in range(5)]
    infer_rates = [rate(lambda a: [infer(a) for _ in range(reps)], x) * reps for _ in range(5)]
    return {"train_img_s": statistics.median(train_rates), "infer_img_s": statistics.median(infer_rates),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "warmup_losses": [float(v) for v in losses]}


def keras_worker(spec_file, min_window, threads=None) -> dict:
    """The Keras twin written by ``write_keras_spec``, measured in this process (which needs Keras and
    its backend, not convkit or PyTorch): Keras's own ``fit`` and ``predict`` on resident arrays."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    with np.load(spec_file) as f:
        meta = json.loads(str(f["meta"]))
        x, y, probe, expected = f["x"], f["y"], f["probe"], f["expected"]
        weights = [[f[f"w{i}_{j}"] for j in range(n)] for i, n in enumerate(meta["n_weights"])]
    specs = [(kind, cfg, w) for (kind, cfg), w in zip(meta["layers"], weights)]
    model = keras_twin(specs, x.shape[1:], meta["learning_rate"])
    _check_twin("Keras", meta["name"], expected, model.predict(probe, verbose=0))
    batch = meta["batch"]

    def train(xs, ys):
        return model.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0).history["loss"][0]

    def infer(xs):
        model.predict(xs, batch_size=batch, verbose=0)

    losses = [train(x, y) for _ in range(3)]
    return {**measure(f"keras {meta['name']}", train, infer, lambda: None, x, y, losses, min_window),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "backend_version": _backend_version(keras.backend.backend()), "jit_compile": str(model.jit_compile)}


def _backend_version(backend):
    import importlib

    return getattr(importlib.import_module(backend), "__version__", "?")


def write_keras_spec(name, batch, path):
    """What the Keras worker needs, written by a convkit process: the layer specs with convkit's
    initial weights, the synthetic batches, and convkit's output on a probe to check the twin."""
    model = _convkit_model(name)
    x, y = _data(name, batch, 4)
    specs = layer_specs(model)
    meta = {"name": name, "batch": batch, "learning_rate": model.optimizer.learning_rate,
            "layers": [(kind, cfg) for kind, cfg, _ in specs], "n_weights": [len(w) for _, _, w in specs]}
    arrays = {f"w{i}_{j}": a for i, (_, _, w) in enumerate(specs) for j, a in enumerate(w)}
    np.savez(path, meta=json.dumps(meta), x=x, y=y, probe=x[:8], expected=model.predict(x[:8], verbose=0), **arrays)


def run_worker(framework, name, batch, args):
    """One framework on one model in a process of its own; Keras in ``args.keras_python``."""
    common = ["--models", name, "--device", args.device, "--min-window", str(args.min_window),
              "--precision", args.precision]
    common += ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        if framework == "keras":
            spec = str(Path(tmp) / "twin.npz")
            write_keras_spec(name, batch, spec)
            cmd = [args.keras_python, __file__, "--worker", "keras", "--spec", spec] + common
        else:
            cmd = [sys.executable, __file__, "--worker", framework] + common
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _keras_python(requested):
    """The interpreter that runs the Keras peer: ``requested``, else this one when it has Keras with a
    backend; None (no Keras column) when neither does."""
    probe = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'; import keras; keras.ops.ones(1)"
    for py in ([requested] if requested else [sys.executable]):
        if subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
            return py
        if requested:
            raise SystemExit(f"error: {requested} cannot run Keras with a backend ({probe!r} failed)")
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="threads for every framework (default: all cores)")
    p.add_argument("--min-window", type=float, default=1.0, help="seconds per timed window, at least")
    p.add_argument("--precision", choices=["float32", "tf32"], default="float32",
                   help="GPU arithmetic of both frameworks (default strict float32)")
    p.add_argument("--keras-python", help="a Python with Keras and TensorFlow (on the CPU the default is this "
                   "Python when it has them; without them there is no Keras column)")
    p.add_argument("--out", help=out_help("training-<device>"))
    p.add_argument("--worker", choices=["convkit", "torch", "keras"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "keras":  # neither convkit nor PyTorch need be importable here
        print(json.dumps(keras_worker(args.spec, args.min_window, args.threads)))
        return 0

    import convkit
    import torch

    if args.threads:
        convkit.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    else:
        torch.set_num_threads(convkit.get_num_threads())
    if args.worker:
        name = args.models[0]
        print(json.dumps(worker(args.worker, name, MODELS[name], args.device, args.min_window, args.precision)))
        return 0

    from convkit._backend import device_name

    peers = ["torch"]
    if args.device == "cpu":
        args.keras_python = _keras_python(args.keras_python)
        peers += ["keras"] if args.keras_python else []
    info = dict(date=datetime.date.today().isoformat(), device=device_name(args.device), python=platform.python_version(),
                numpy=np.__version__, torch=torch.__version__, convkit=convkit.__version__,
                threads=args.threads or convkit.get_num_threads(), precision=args.precision, peers=peers)
    head = (f"{'model':<13} {'batch':>5} {'peer':<7} {'train img/s':>12} {'peer':>9} {'ratio':>6} "
            f"{'infer img/s':>12} {'peer':>9} {'ratio':>6} {'RSS MiB':>8} {'peer':>7} {'ratio':>6}")
    lines = [f"# {info['device']} | {info['threads']} threads | torch {info['torch']} | {args.precision} | "
             f"{info['date']}",
             "# images/s: median of 5 timed windows after warm-up; ratio = convkit / peer (train and "
             "inference: above 1 = convkit faster; RSS: peak of each framework's own process, below 1 = "
             "convkit smaller)", head]
    print("\n".join(lines), flush=True)
    out = result_path(args.out, f"training-{args.device}")
    rows = []

    def save():  # after every model, so that a run cut short keeps the models it finished
        keras = [f"# keras {info['keras']}"] if "keras" in info else []
        write_results(out, info, rows, lines[:1] + keras + lines[1:])

    for name in args.models:
        batch = MODELS[name]
        row = {"model": name, "batch": batch, "convkit": run_worker("convkit", name, batch, args)}
        for peer in peers:
            ours, theirs = row["convkit"], row.setdefault(peer, run_worker(peer, name, batch, args))
            ratios = {"train": ours["train_img_s"] / theirs["train_img_s"],
                      "infer": ours["infer_img_s"] / theirs["infer_img_s"],
                      "rss": ours["peak_rss_mib"] / theirs["peak_rss_mib"]}
            row.setdefault("ratios", {})[peer] = ratios
            if peer == "keras" and "keras" not in info:
                info["keras"] = f"{theirs['keras']} on {theirs['backend']} {theirs['backend_version']}, " \
                                f"jit_compile={theirs['jit_compile']}"
            line = (f"{name:<13} {batch:>5} {peer:<7} {ours['train_img_s']:>12.0f} {theirs['train_img_s']:>9.0f} "
                    f"{ratios['train']:>6.2f} {ours['infer_img_s']:>12.0f} {theirs['infer_img_s']:>9.0f} "
                    f"{ratios['infer']:>6.2f} {ours['peak_rss_mib']:>8.0f} {theirs['peak_rss_mib']:>7.0f} "
                    f"{ratios['rss']:>6.2f}")
            lines.append(line)
            print(line, flush=True)
        rows.append(row)
        save()
    return 0


def write_results(out, info, rows, lines):
    """A benchmark's JSON (``info`` and ``rows``) and, beside it as .txt, the table it printed."""
    out = Path(out)
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
