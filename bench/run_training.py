"""Whole training steps, convkit against PyTorch eager on the same models, same device, one run.

    python bench/run_training.py                          # CPU, the five models of the issue
    python bench/run_training.py --models lenet5 mnist_cnn --device cuda

For each model: the zoo model and its PyTorch twin (same layers, convkit's initial weights copied
in and checked to give the same forward pass, Adam with Keras's eps), trained on the same
resident synthetic batches. Reports training and inference images/s (median of timed windows
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
import time
from pathlib import Path

import numpy as np

MODELS = {"lenet5": 128, "mnist_cnn": 128, "fashion3": 512, "cifar10_bn": 256, "cifar10_deep": 256}


def torch_twin(model):
    """The same architecture in PyTorch (NCHW), holding a copy of ``model``'s current weights."""
    import torch
    from torch import nn

    class NHWCFlatten(nn.Module):  # flatten in convkit's (H, W, C) order so Dense weights line up
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)

    acts = {"relu": nn.ReLU, "softmax": lambda: nn.Identity(), "linear": lambda: nn.Identity()}
    mods, ndim = [], 4
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
            if layer.padding == "same" and ((sh, sw) != (1, 1) or kh % 2 == 0 or kw % 2 == 0):
                raise ValueError(f"{layer.name}: only stride-1 odd 'same' convolutions map to symmetric padding")
            conv = nn.Conv2d(layer.kernel.shape[2], layer.filters, (kh, kw), (sh, sw),
                             padding=(kh // 2, kw // 2) if layer.padding == "same" else 0, bias=layer.use_bias)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(layer.kernel.value.transpose(3, 2, 0, 1)))
            if layer.use_bias:
                conv.bias.data = torch.from_numpy(layer.bias.value.copy())
            mods += [conv, acts[layer.activation.name]()]
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = nn.MaxPool2d if kind == "MaxPooling2D" else nn.AvgPool2d
            # For the even sizes of these models 'same' pooling equals ceil-mode pooling.
            mods.append(pool(layer.pool_size, layer.strides, ceil_mode=layer.padding == "same"))
        elif kind == "BatchNormalization":
            n = layer.gamma.shape[0]
            bn = (nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d)(n, eps=layer.epsilon, momentum=1 - layer.momentum)
            bn.weight.data, bn.bias.data = (torch.from_numpy(layer.gamma.value.copy()),
                                            torch.from_numpy(layer.beta.value.copy()))
            bn.running_mean.data = torch.from_numpy(layer.moving_mean.value.copy())
            bn.running_var.data = torch.from_numpy(layer.moving_variance.value.copy())
            mods.append(bn)
        elif kind == "Dropout":
            mods.append(nn.Dropout(layer.rate))
        elif kind == "Flatten":
            mods.append(NHWCFlatten())
            ndim = 2
        elif kind == "Dense":
            dense = nn.Linear(*layer.kernel.shape, bias=layer.use_bias)
            dense.weight.data = torch.from_numpy(np.ascontiguousarray(layer.kernel.value.T))
            if layer.use_bias:
                dense.bias.data = torch.from_numpy(layer.bias.value.copy())
            mods += [dense, acts[layer.activation.name]()]
        else:
            raise ValueError(f"no PyTorch twin for layer {kind}")
    return nn.Sequential(*mods)  # logits: the softmax lives in the loss


def _data(name, batch, steps, seed=0):
    from convkit import zoo

    rng = np.random.default_rng(seed)
    shape = (28, 28, 1) if zoo.recipe(name).dataset in ("mnist", "fashion_mnist") else (32, 32, 3)
    return rng.random((batch * steps,) + shape, dtype=np.float32), rng.integers(0, 10, batch * steps)


def _convkit_model(name):
    import convkit

    convkit.set_random_seed(0)
    return convkit.zoo.build(name)


def worker(framework, name, batch, device, min_window):
    """Measure one framework on one model in this process; returns a dict."""
    import convkit

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
        sync = lambda: None  # noqa: E731  (fit returns host values: every step has finished)
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
        err = float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))
        if err > 1e-4:
            raise AssertionError(f"{name}: the PyTorch twin disagrees with convkit (max relative error {err:.2e})")
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
    if not losses[-1] < losses[0]:
        raise AssertionError(f"{framework} {name}: the loss did not drop over warm-up ({losses})")

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
            "warmup_losses": [float(v) for v in losses], "threads": convkit.get_num_threads()}


def run_worker(framework, name, batch, device, min_window, threads):
    cmd = [sys.executable, __file__, "--worker", framework, "--models", name, "--device", device,
           "--min-window", str(min_window)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="threads for both (default: all cores)")
    p.add_argument("--min-window", type=float, default=1.0, help="seconds per timed window, at least")
    p.add_argument("--out", help="JSON path (default bench/results/training-<device>.json)")
    p.add_argument("--worker", choices=["convkit", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import convkit
    import torch

    if args.threads:
        convkit.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    else:
        torch.set_num_threads(convkit.get_num_threads())
    if args.worker:
        name = args.models[0]
        print(json.dumps(worker(args.worker, name, MODELS[name], args.device, args.min_window)))
        return 0

    from convkit._backend import device_name

    info = dict(date=datetime.date.today().isoformat(), device=device_name(args.device), python=platform.python_version(),
                numpy=np.__version__, torch=torch.__version__, convkit=convkit.__version__,
                threads=args.threads or convkit.get_num_threads(), precision="float32")
    rows = []
    head = (f"{'model':<13} {'batch':>5} {'train img/s':>12} {'torch':>9} {'ratio':>6} {'infer img/s':>12} "
            f"{'torch':>9} {'ratio':>6} {'RSS MiB':>8} {'torch':>7} {'ratio':>6}")
    lines = [f"# {info['device']} | {info['threads']} threads | torch {info['torch']} | {info['date']}",
             "# images/s: median of 5 timed windows after warm-up; ratio = convkit / PyTorch (train and "
             "inference: above 1 = convkit faster; RSS: peak of each framework's own process)", head]
    print("\n".join(lines), flush=True)
    for name in args.models:
        batch = MODELS[name]
        ours = run_worker("convkit", name, batch, args.device, args.min_window, args.threads)
        peer = run_worker("torch", name, batch, args.device, args.min_window, args.threads)
        row = {"model": name, "batch": batch, "convkit": ours, "torch": peer,
               "train_ratio": ours["train_img_s"] / peer["train_img_s"],
               "infer_ratio": ours["infer_img_s"] / peer["infer_img_s"],
               "rss_ratio": ours["peak_rss_mib"] / peer["peak_rss_mib"]}
        rows.append(row)
        line = (f"{name:<13} {batch:>5} {ours['train_img_s']:>12.0f} {peer['train_img_s']:>9.0f} "
                f"{row['train_ratio']:>6.2f} {ours['infer_img_s']:>12.0f} {peer['infer_img_s']:>9.0f} "
                f"{row['infer_ratio']:>6.2f} {ours['peak_rss_mib']:>8.0f} {peer['peak_rss_mib']:>7.0f} "
                f"{row['rss_ratio']:>6.2f}")
        lines.append(line)
        print(line, flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"training-{args.device}.json")
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
