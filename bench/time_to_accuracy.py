"""Seconds of training to a test accuracy on real MNIST, convkit against PyTorch eager with one recipe.

    python bench/time_to_accuracy.py                              # lenet5 and mnist_cnn, CPU, to 99%
    python bench/time_to_accuracy.py --device cuda --models lenet5
    python bench/time_to_accuracy.py --speedrun                   # mnist_speedrun's recipe, 5 seeds

Both frameworks start from the same weights (the PyTorch twin of bench/run_training.py gets a copy of
convkit's initial model), see the same shuffled batches in the same order (one seeded permutation per
epoch, applied on the device the data lives on), and train with the zoo recipe's Adam (learning rate,
batch 128, Keras's eps). The test set is evaluated ``--evals-per-epoch`` times an epoch with the clock
stopped; the figure is training seconds until the first evaluation at or above ``--target``. Each
framework runs in a process of its own, one after the other, every process under the same allocator
settings (``workers.allocator_env('glibc-kept')``, which convkit also sets in its own process).

``--speedrun`` trains the zoo's ``mnist_speedrun`` recipe as it stands (one epoch, its batch, Adam with the
rate annealed per step) once per seed, in both frameworks and PyTorch in both layouts, and reports training
seconds and the final test accuracy (nothing stops on the test set): the mean over seeds of each, against
the target of 99% in under 10 seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from result_file import out_help, result_path
from run_training import _convkit_model, match_precision, torch_twin, write_results
from workers import allocator_env

MODELS = ("lenet5", "mnist_cnn")
BATCH = 128
SPEEDRUN, SPEEDRUN_SECONDS = "mnist_speedrun", 10.0
PEERS = ("torch-nchw", "torch-channels_last")
ALLOCATOR = "glibc-kept"


def _worker(cmd) -> dict:
    """Run one worker process under the shared allocator settings; the JSON line it printed last."""
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **allocator_env(ALLOCATOR)})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mnist():
    from convkit import zoo
    from convkit.datasets import mnist

    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train, x_test = zoo.preprocess(zoo.recipe("lenet5"), x_train, x_test)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _segments(n, evals_per_epoch):
    """Batch-aligned [start, stop) sample ranges splitting one epoch into evaluation segments."""
    steps = -(-n // BATCH)
    cuts = [round(steps * k / evals_per_epoch) * BATCH for k in range(evals_per_epoch + 1)]
    return [(a, min(b, n)) for a, b in zip(cuts, cuts[1:]) if a < min(b, n)]


def _convkit(model, device, data, batch=BATCH, recipe=None):
    """(train(perm, a, b, epoch), accuracy(), sync) for convkit on ``data``, resident where it trains;
    with the callbacks of ``recipe`` (its learning-rate schedule) when given."""
    xp = np
    if device == "cuda":  # resident on the GPU, as the PyTorch tensors are
        import cupy as xp
    xs, ys, xt, yt = (xp.asarray(a) for a in data)
    callbacks = recipe.make_callbacks() if recipe else []

    def train(perm, a, b, epoch=0):
        idx = xp.asarray(perm[a:b])
        model.fit(xs[idx], ys[idx], batch_size=batch, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                  verbose=0, device=device, callbacks=callbacks)

    def accuracy():
        return float(model.evaluate(xt, yt, batch_size=1024, verbose=0, device=device)[1])

    return train, accuracy, lambda: None  # fit ends by reading its loss off the device: every step is done


def _torch(model, device, data, batch=BATCH, recipe=None, layout="nchw"):
    """The same for model's PyTorch twin (a copy of its weights) in memory format ``layout`` ('nchw' or
    'channels_last'), Adam with Keras's eps; the learning rate of ``recipe``'s 'cosine-steps' schedule set
    before every step when it has one."""
    import torch

    from convkit.optimizers import CosineDecay

    torch.manual_seed(0)
    dev = torch.device(device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    net = torch_twin(model).to(dev, memory_format=fmt)
    lr = model.optimizer.learning_rate
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy()).to(dev).contiguous(memory_format=fmt)  # noqa
    x_train, y_train, x_test, y_test = data
    xs, ys = nchw(x_train), torch.from_numpy(y_train).to(dev)
    xt, yt = nchw(x_test), torch.from_numpy(y_test).to(dev)
    if recipe and recipe.lr_schedule not in ("", "cosine-steps"):
        raise ValueError(f"the PyTorch twin follows no {recipe.lr_schedule!r} schedule")
    steps = -(-len(y_train) // batch)
    decay = recipe and recipe.lr_schedule and CosineDecay(lr, recipe.epochs * steps)

    def train(perm, a, b, epoch=0):
        net.train()
        idx = torch.from_numpy(perm[a:b]).to(dev)
        xb_all, yb_all = xs[idx].contiguous(memory_format=fmt), ys[idx]
        for k, s in enumerate(range(0, b - a, batch)):
            if decay:
                for group in opt.param_groups:
                    group["lr"] = decay(epoch * steps + (a // batch) + k)
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xb_all[s:s + batch]), yb_all[s:s + batch]).backward()
            opt.step()

    def accuracy():
        net.eval()
        with torch.no_grad():
            hits = sum(int((net(xt[s:s + 1024]).argmax(1) == yt[s:s + 1024]).sum())
                       for s in range(0, len(yt), 1024))
        return hits / len(yt)

    return train, accuracy, torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _warmed(framework, build, device, limit, precision, batch=BATCH, **kw):
    """MNIST (``limit`` training images when given) and (train, accuracy, sync) for a model ``build()`` makes.
    A throwaway copy from ``build`` trains on two batches first, untimed, so that one-time costs (kernel
    compilation and caches, cuDNN's algorithm search) stay out of the clock for both frameworks."""
    x_train, y_train, x_test, y_test = _mnist()
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    data = (x_train, y_train, x_test, y_test)
    match_precision(framework, precision)
    setup = _convkit if framework == "convkit" else _torch
    warm_train, warm_accuracy, sync = setup(build(), device, data, batch, **kw)
    warm_train(np.arange(2 * batch), 0, 2 * batch)
    warm_accuracy()
    sync()
    return data, setup(build(), device, data, batch, **kw)


def run(framework, name, device, target, max_epochs, evals_per_epoch, limit=None, precision="float32"):
    """Train one framework until ``target`` or ``max_epochs``; returns its curve and time to target."""
    import convkit

    # _convkit_model seeds: the timed model starts from the same weights in both frameworks
    data, (train, accuracy, sync) = _warmed(framework, lambda: _convkit_model(name), device, limit, precision)
    x_train = data[0]
    order = np.random.default_rng(0)
    curve, clock, reached = [], 0.0, None
    for epoch in range(max_epochs):
        perm = order.permutation(len(x_train))
        for k, (a, b) in enumerate(_segments(len(x_train), evals_per_epoch)):
            t0 = time.perf_counter()
            train(perm, a, b)
            sync()
            clock += time.perf_counter() - t0
            acc = accuracy()
            curve.append({"epochs": round(epoch + (k + 1) / evals_per_epoch, 4), "train_s": round(clock, 3),
                          "test_acc": acc})
            if reached is None and acc >= target:
                reached = curve[-1]
        if reached:
            break
    return {"framework": framework, "model": name, "curve": curve, "threads": convkit.get_num_threads(),
            "seconds_to_target": reached and reached["train_s"], "epochs_to_target": reached and reached["epochs"]}


def speedrun(framework, seed, device="cpu", limit=None, precision="float32", layout="nchw"):
    """One run of the mnist_speedrun recipe, all its epochs, seeded (initial weights and batch order):
    training seconds (after ``_warmed``'s untimed warm-up) and the test accuracy at the end."""
    import convkit
    from convkit import zoo

    def build():
        convkit.set_random_seed(seed)
        return zoo.build(SPEEDRUN)

    r = zoo.recipe(SPEEDRUN)
    extra = {"layout": layout} if framework == "torch" else {}
    data, (train, accuracy, sync) = _warmed(framework, build, device, limit, precision, r.batch_size, recipe=r,
                                            **extra)
    x_train = data[0]
    order, clock = np.random.default_rng(seed), 0.0
    for epoch in range(r.epochs):
        perm = order.permutation(len(x_train))
        t0 = time.perf_counter()
        train(perm, 0, len(perm), epoch)
        sync()
        clock += time.perf_counter() - t0
    return {"framework": framework if framework == "convkit" else f"torch-{layout}", "seed": seed,
            "train_s": round(clock, 3), "test_acc": accuracy(), "epochs": r.epochs,
            "threads": convkit.get_num_threads()}


def _title(info) -> str:
    return (f"# {info['device']} | {info['threads']} threads | torch {info['torch']} | {info['precision']} | "
            f"{info['date']} | allocator {info['allocator']} for every process")


def _speedrun_table(args, info) -> int:
    """Every seed in convkit and in PyTorch's two layouts (the order rotating per seed), each in its own
    process under the same allocator settings; the table of seconds and accuracies and their means."""
    import statistics

    configs = ("convkit",) + PEERS
    runs = {c: [] for c in configs}
    lines = [_title(info),
             f"# {SPEEDRUN}'s recipe (zoo), each seed once per framework: training seconds (evaluation excluded) "
             "and test accuracy after the last epoch",
             f"{'seed':<6}" + "".join(f"{c + ' s':>22} {'acc':>7}" for c in configs)]
    print("\n".join(lines), flush=True)
    for seed in range(args.seeds):
        turn = seed % len(configs)
        for c in configs[turn:] + configs[:turn]:  # interleaved: no framework always runs first
            cmd = [sys.executable, __file__, "--worker", c.split("-")[0], "--speedrun", "--seed", str(seed),
                   "--device", args.device, "--precision", args.precision]
            cmd += ["--layout", c.split("-", 1)[1]] if c != "convkit" else []
            cmd += ["--limit", str(args.limit)] if args.limit else []
            runs[c].append(_worker(cmd))
        row = "".join(f"{runs[c][-1]['train_s']:>22.2f} {runs[c][-1]['test_acc']:>7.2%}" for c in configs)
        lines.append(f"{seed:<6}{row}")
        print(lines[-1], flush=True)

    def mean_sd(c, key):
        v = [r[key] for r in runs[c]]
        return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0

    summary = {c: {"train_s": mean_sd(c, "train_s"), "test_acc": mean_sd(c, "test_acc")} for c in configs}
    best_peer = min(PEERS, key=lambda c: summary[c]["train_s"][0])
    ours = summary["convkit"]
    lines += [f"{'mean':<6}" + "".join(f"{summary[c]['train_s'][0]:>22.2f} {summary[c]['test_acc'][0]:>7.2%}"
                                       for c in configs),
              f"{'sd':<6}" + "".join(f"{summary[c]['train_s'][1]:>22.2f} {summary[c]['test_acc'][1]:>7.2%}"
                                     for c in configs),
              f"# fastest PyTorch: {best_peer}; its mean seconds / convkit's: "
              f"{summary[best_peer]['train_s'][0] / ours['train_s'][0]:.2f} (above 1 = convkit sooner)",
              f"# target {args.target:.0%} in under {SPEEDRUN_SECONDS:g} s (means over {args.seeds} seeds): "
              f"{'met' if ours['test_acc'][0] >= args.target and ours['train_s'][0] < SPEEDRUN_SECONDS else 'not met'}"]
    print("\n".join(lines[-4:]), flush=True)
    info = {**info, "mode": "speedrun", "model": SPEEDRUN, "seeds": args.seeds, "best_peer": best_peer}
    write_results(result_path(args.out, f"speedrun-{args.device}"), info,
                  [{"config": c, "runs": runs[c], "mean": summary[c]} for c in configs], lines)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--target", type=float, default=0.99, help="test accuracy to reach (default 0.99)")
    p.add_argument("--max-epochs", type=int, default=15)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--precision", choices=["float32", "tf32"], default="float32",
                   help="GPU arithmetic of both frameworks (default strict float32)")
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)  # fewer training images, for tests
    p.add_argument("--out", help=out_help("time-to-accuracy-<device>"))
    p.add_argument("--speedrun", action="store_true",
                   help=f"train {SPEEDRUN}'s recipe once per seed instead (target: --target in {SPEEDRUN_SECONDS:g} s)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of --speedrun (default 5)")
    p.add_argument("--worker", choices=["convkit", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    settings = (args.device, args.target, args.max_epochs, args.evals_per_epoch, args.limit, args.precision)

    import convkit
    import torch

    torch.set_num_threads(convkit.get_num_threads())
    if args.worker and args.speedrun:
        print(json.dumps(speedrun(args.worker, args.seed, args.device, args.limit, args.precision, args.layout)))
        return 0
    if args.worker:
        print(json.dumps(run(args.worker, args.models[0], *settings)))
        return 0

    from convkit._backend import device_name

    info = dict(date=datetime.date.today().isoformat(), device=device_name(args.device), target=args.target,
                python=platform.python_version(), numpy=np.__version__, torch=torch.__version__,
                convkit=convkit.__version__, threads=convkit.get_num_threads(), precision=args.precision,
                batch=BATCH, evals_per_epoch=args.evals_per_epoch, limit=args.limit, allocator=ALLOCATOR)
    if args.speedrun:
        for key in ("batch", "evals_per_epoch"):
            del info[key]
        return _speedrun_table(args, info)
    lines = [_title(info),
             f"# training seconds (evaluation excluded) to {args.target:.2%} test accuracy on MNIST, same initial "
             "weights and batch order; ratio = PyTorch / convkit (above 1 = convkit sooner); - = not reached",
             f"{'model':<10} {'convkit s':>10} {'epochs':>7} {'torch s':>9} {'epochs':>7} {'ratio':>6}"]
    print("\n".join(lines), flush=True)
    rows = []
    for name in args.models:
        row = {"model": name}
        for fw in ("convkit", "torch"):
            cmd = [sys.executable, __file__, "--worker", fw, "--models", name, "--device", args.device,
                   "--target", str(args.target), "--max-epochs", str(args.max_epochs),
                   "--evals-per-epoch", str(args.evals_per_epoch), "--precision", args.precision]
            cmd += ["--limit", str(args.limit)] if args.limit else []
            row[fw] = _worker(cmd)
        ours, theirs = row["convkit"]["seconds_to_target"], row["torch"]["seconds_to_target"]
        row["ratio"] = theirs / ours if ours and theirs else None
        fmt = lambda v, width, digits: format("-" if v is None else f"{v:.{digits}f}", f">{width}")  # noqa: E731
        line = (f"{name:<10} {fmt(ours, 10, 1)} {fmt(row['convkit']['epochs_to_target'], 7, 2)} "
                f"{fmt(theirs, 9, 1)} {fmt(row['torch']['epochs_to_target'], 7, 2)} {fmt(row['ratio'], 6, 2)}")
        lines.append(line)
        print(line, flush=True)
        rows.append(row)
    write_results(result_path(args.out, f"time-to-accuracy-{args.device}"), info, rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
