"""Whole training steps, convkit against PyTorch eager and Keras on the same models, same device, one run.

    python bench/run_training.py                          # CPU, the five models of the issue
    python bench/run_training.py --keras-python venv-tf/bin/python   # Keras/TensorFlow from another venv
    python bench/run_training.py --models lenet5 mnist_cnn --device cuda

For each model: the zoo model and its twins, each in a process of its own: PyTorch eager in NCHW and
in channels_last and, on the CPU, Keras with and without compilation (XLA on TensorFlow,
torch.compile on Keras's PyTorch backend; TensorFlow from another venv with --keras-python). Same
layers, convkit's initial weights copied in and checked to give the same forward pass, Adam with
Keras's eps, the same resident synthetic batches (Keras through its own ``fit``). Every process runs
under the same allocator (default: glibc keeping freed memory, the setting convkit makes for itself).
Training and inference images/s are medians of windows interleaved across the processes
(bench/workers.py); each framework's peer is its fastest configuration, named in the table, and the
ratios are convkit / peer (above 1 = convkit faster; for peak memory, below 1 = convkit smaller).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from result_file import out_help, result_path
from workers import ALLOCATORS, Worker, allocator_env, interleaved, serve

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
        elif kind == "ReLU" and layer.max_value is None and not layer.negative_slope and not layer.threshold:
            cfg, weights = {}, []
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
        elif kind == "ReLU":
            mods.append(nn.ReLU())
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


def keras_twin(specs, input_shape, learning_rate, jit_compile="auto"):
    """The same architecture in Keras (channels-last, so weights load as they are), compiled with Adam
    and sparse categorical cross-entropy as the zoo compiles it; needs only Keras and its backend.
    ``jit_compile`` True is XLA on TensorFlow and torch.compile on PyTorch."""
    import keras

    model = keras.Sequential([keras.Input(shape=input_shape)] +
                             [getattr(keras.layers, kind)(**cfg) for kind, cfg, _ in specs])
    for layer, (_, _, w) in zip(model.layers, specs):
        layer.set_weights(w)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
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


def worker(framework, name, batch, device, min_window, precision="float32", layout="nchw"):
    """Build one framework's model, warm it up and serve timed windows (bench/workers.py) in this process.
    ``layout`` is PyTorch's memory format: 'nchw' or 'channels_last' (its weights and batches alike)."""
    import convkit

    match_precision(framework, precision)
    model = _convkit_model(name)
    x, y = _data(name, batch, 4)
    info = {"threads": convkit.get_num_threads()}
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
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = torch_twin(model).to(dev, memory_format=fmt)
        probe = x[:8]
        ours = model.predict(probe, verbose=0)
        net.eval()
        with torch.no_grad():
            nchw = torch.from_numpy(probe.transpose(0, 3, 1, 2)).to(dev).contiguous(memory_format=fmt)
            theirs = torch.softmax(net(nchw), 1).cpu().numpy()
        _check_twin("PyTorch", name, ours, theirs)
        opt = torch.optim.Adam(net.parameters(), lr=model.optimizer.learning_rate, eps=1e-7)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev).contiguous(memory_format=fmt)
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
        info["layout"] = layout
    serve(train, infer, sync, x, y, losses, min_window, info, f"{framework} {name}")


def keras_worker(spec_file, min_window, threads=None, jit_compile=False):
    """The Keras twin written by ``write_keras_spec``, built, checked, warmed up and serving timed windows
    (bench/workers.py) in this process, which needs Keras and its backend, not convkit or PyTorch:
    Keras's own ``fit`` and ``predict`` on resident arrays."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    with np.load(spec_file) as f:
        meta = json.loads(str(f["meta"]))
        x, y, probe, expected = f["x"], f["y"], f["probe"], f["expected"]
        weights = [[f[f"w{i}_{j}"] for j in range(n)] for i, n in enumerate(meta["n_weights"])]
    specs = [(kind, cfg, w) for (kind, cfg), w in zip(meta["layers"], weights)]
    model = keras_twin(specs, x.shape[1:], meta["learning_rate"], jit_compile)
    _check_twin("Keras", meta["name"], expected, model.predict(probe, verbose=0))
    batch = meta["batch"]

    def train(xs, ys):
        return model.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0).history["loss"][0]

    def infer(xs):
        model.predict(xs, batch_size=batch, verbose=0)

    losses = [train(x, y) for _ in range(3)]
    info = {"keras": keras.__version__, "backend": keras.backend.backend(),
            "backend_version": _backend_version(keras.backend.backend()), "jit_compile": str(model.jit_compile)}
    serve(train, infer, lambda: None, x, y, losses, min_window, info, f"keras {meta['name']}")


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


def peer_configs(args) -> list:
    """The configurations timed beside convkit: PyTorch in both memory formats and, where a Python
    with Keras is at hand, Keras with and without compilation (XLA on TensorFlow)."""
    configs = ["torch-nchw", "torch-channels_last"]
    if args.keras_python:
        configs += ["keras", "keras-jit"]
    return [c for c in configs if not args.peers or c in args.peers]


def start_worker(config, name, batch, args, tmp) -> Worker:
    """The worker process of ``config`` ('convkit' or one of ``peer_configs``) for model ``name``."""
    common = ["--models", name, "--device", args.device, "--min-window", str(args.min_window),
              "--precision", args.precision]
    common += ["--threads", str(args.threads)] if args.threads else []
    env = dict(args.allocator_env)
    if config.startswith("keras"):
        spec = str(Path(tmp) / f"{name}.npz")
        if not Path(spec).exists():
            write_keras_spec(name, batch, spec)
        cmd = [args.keras_python, __file__, "--worker", "keras", "--spec", spec] + common
        cmd += ["--jit-compile"] if config == "keras-jit" else []
        env.update(args.keras_env)
    elif config == "convkit":
        cmd = [sys.executable, __file__, "--worker", "convkit"] + common
    else:
        cmd = [sys.executable, __file__, "--worker", "torch", "--layout", config.split("-", 1)[1]] + common
    return Worker(f"{config} {name}", cmd, env)


def _keras_python(requested):
    """(interpreter, extra environment) that run the Keras peer: ``requested``, else this Python with its
    configured backend, else this Python with Keras on PyTorch; (None, {}) when none can."""
    probe = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'; import keras; keras.ops.ones(1)"
    tries = [(requested, {})] if requested else [(sys.executable, {}), (sys.executable, {"KERAS_BACKEND": "torch"})]
    for py, env in tries:
        if subprocess.run([py, "-c", probe], capture_output=True, env={**os.environ, **env}).returncode == 0:
            return py, env
    if requested:
        raise SystemExit(f"error: {requested} cannot run Keras with a backend ({probe!r} failed)")
    return None, {}


def best_of(results: dict, family: str, metric: str) -> str:
    """The configuration of ``family`` ('torch' or 'keras') with the most images/s in ``metric``."""
    names = [n for n in results if n.split("-")[0] == family]
    return max(names, key=lambda n: results[n][f"{metric}_img_s"]) if names else None


def compare(name, batch, results) -> tuple:
    """The row of model ``name``: every configuration's results, and for each peer family its best
    configuration for training and for inference with convkit's ratio to it."""
    ours, row, lines = results["convkit"], {"model": name, "batch": batch, "configs": results}, []
    for family in ("torch", "keras"):
        train, infer = best_of(results, family, "train"), best_of(results, family, "infer")
        if train is None:
            continue
        ratios = {"train": ours["train_img_s"] / results[train]["train_img_s"],
                  "infer": ours["infer_img_s"] / results[infer]["infer_img_s"],
                  "rss": ours["peak_rss_mib"] / results[train]["peak_rss_mib"]}
        row.setdefault("best", {})[family] = {"train": train, "infer": infer}
        row.setdefault("ratios", {})[family] = ratios
        lines.append(f"{name:<13} {batch:>5} {ours['train_img_s']:>9.0f} {train:<20} "
                     f"{results[train]['train_img_s']:>9.0f} {ratios['train']:>6.2f} {ours['infer_img_s']:>9.0f} "
                     f"{infer:<20} {results[infer]['infer_img_s']:>9.0f} {ratios['infer']:>6.2f} "
                     f"{ours['peak_rss_mib']:>7.0f} {results[train]['peak_rss_mib']:>7.0f} {ratios['rss']:>6.2f}")
    return row, lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="threads for every framework (default: all cores)")
    p.add_argument("--min-window", type=float, default=1.0, help="seconds per timed window, at least")
    p.add_argument("--rounds", type=int, default=5, help="interleaved windows per configuration (median)")
    p.add_argument("--allocator", choices=ALLOCATORS, default="glibc-kept",
                   help="the allocator of every process (default: glibc keeping freed memory, as convkit sets it)")
    p.add_argument("--peers", nargs="+", help="only these peer configurations (default: all: torch-nchw, "
                   "torch-channels_last, keras, keras-jit)")
    p.add_argument("--precision", choices=["float32", "tf32"], default="float32",
                   help="GPU arithmetic of both frameworks (default strict float32)")
    p.add_argument("--keras-python", help="a Python with Keras and a backend, e.g. TensorFlow for XLA (default: "
                   "this Python, with Keras's configured backend, else on PyTorch; without Keras no Keras column)")
    p.add_argument("--out", help=out_help("training-<device>"))
    p.add_argument("--worker", choices=["convkit", "torch", "keras"], help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw", help=argparse.SUPPRESS)
    p.add_argument("--jit-compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "keras":  # neither convkit nor PyTorch need be importable here
        keras_worker(args.spec, args.min_window, args.threads, args.jit_compile)
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
        worker(args.worker, name, MODELS[name], args.device, args.min_window, args.precision, args.layout)
        return 0

    from convkit._backend import device_name

    args.allocator_env = allocator_env(args.allocator)
    args.keras_python, args.keras_env = (None, {}) if args.device != "cpu" else _keras_python(args.keras_python)
    configs = ["convkit"] + peer_configs(args)
    info = dict(date=datetime.date.today().isoformat(), device=device_name(args.device), python=platform.python_version(),
                numpy=np.__version__, torch=torch.__version__, convkit=convkit.__version__,
                threads=args.threads or convkit.get_num_threads(), precision=args.precision, configs=configs,
                allocator=args.allocator, allocator_env=args.allocator_env, rounds=args.rounds,
                min_window=args.min_window)
    head = (f"{'model':<13} {'batch':>5} {'train':>9} {'best peer (train)':<20} {'peer':>9} {'ratio':>6} "
            f"{'infer':>9} {'best peer (infer)':<20} {'peer':>9} {'ratio':>6} {'RSS MiB':>7} {'peer':>7} {'ratio':>6}")
    lines = [f"# {info['device']} | {info['threads']} threads | torch {info['torch']} | {args.precision} | "
             f"allocator {args.allocator} {args.allocator_env or ''} | {info['date']}",
             f"# images/s: median of {args.rounds} windows of >= {args.min_window} s, interleaved across every "
             "configuration's own process; the peer is each framework's fastest configuration (named), ratio = "
             "convkit / peer (above 1 = convkit faster; RSS: peak of each process, below 1 = convkit smaller); "
             "keras-jit = XLA on TensorFlow, torch.compile on PyTorch", head]
    print("\n".join(lines), flush=True)
    out = result_path(args.out, f"training-{args.device}")
    rows = []
    for name in args.models:
        batch = MODELS[name]
        with tempfile.TemporaryDirectory() as tmp:
            workers = {}
            try:
                for config in configs:
                    workers[config] = start_worker(config, name, batch, args, tmp)
            except BaseException:
                for w in workers.values():
                    w.kill()
                raise
            results = interleaved(workers, args.rounds)
        if "keras" in results and "keras" not in info:
            k = results["keras"]
            info["keras"] = f"{k['keras']} on {k['backend']} {k['backend_version']}"
        row, row_lines = compare(name, batch, results)
        rows.append(row)
        lines += row_lines
        print("\n".join(row_lines), flush=True)
        keras_line = [f"# keras {info['keras']}"] if "keras" in info else []
        write_results(out, info, rows, lines[:1] + keras_line + lines[1:])  # after every model
    return 0


def write_results(out, info, rows, lines):
    """A benchmark's JSON (``info`` and ``rows``) and, beside it as .txt, the table it printed (``out`` named
    .txt writes the JSON beside it as .json, never one over the other)."""
    out = Path(out)
    out = out.with_suffix(".json") if out.suffix == ".txt" else out
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
