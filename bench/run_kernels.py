#!/usr/bin/env python3
"""convkit's conv, depthwise conv and pool kernels against PyTorch's, side by side in one run.

CPU: PyTorch's CPU ops (oneDNN), same thread count, the faster of NCHW and
channels_last. GPU: cuDNN through PyTorch (cudnn.benchmark on), strict fp32
(TF32 off on both sides) and TF32 (on for both). Every result is checked
against the peer before it is timed. Times are medians of interleaved repeats
(wall clock around each call on the CPU; on the GPU, CUDA events around many
back-to-back calls, see CudaTimer). Prints one table and writes JSON, which is
rewritten after every case.

    python bench/run_kernels.py                  # CPU, all threads
    python bench/run_kernels.py --device cuda    # GPU, both numeric modes, plus batch 512
    python bench/run_kernels.py --only depthwise # MobileNet's and EfficientNet's depthwise layers, batch 1 and 32

Depthwise convolutions are compared with PyTorch's grouped convolution (groups = channels), timed with
its own symmetric padding of the same output size and checked against TensorFlow's 'same' padding
applied explicitly (PyTorch float32 autograd, untimed).

On the CPU every convolution row (not the depthwise ones) also gives its share of the machine's float32
peak (``convkit._cpu.peak_gflops``: independent multiply-adds in registers, the same threads), the larger
of the peaks measured right before and right after the case, so that a host whose speed drifts during
the run is divided by its speed at the time. The summary counts the large layers (at least 1 GFLOP a
call) at 70% or more, with the work counted two ways: nominal (every tap, those on padding too, as the
GFLOP/s column) and real (only taps inside the image).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spec_shapes  # noqa: E402
from result_file import out_help, result_path  # noqa: E402
from workers import allocator_seen  # noqa: E402

import convkit  # noqa: E402
from convkit import ops  # noqa: E402
from convkit._atomic import atomic_open  # noqa: E402
from convkit._backend import device_name  # noqa: E402



# --------------------------------------------------------------------------- timing


class CpuTimer:
    """Wall-clock median of interleaved repeats, after warm-up."""

    def __init__(self, min_time: float, min_reps: int):
        self.min_time, self.min_reps = min_time, min_reps

    def run(self, fns: dict) -> dict:
        for f in fns.values():  # warm-up: caches, page faults, thread pools
            f()
            f()
        times = {k: [] for k in fns}
        start = time.perf_counter()
        while len(times[next(iter(fns))]) < self.min_reps or time.perf_counter() - start < self.min_time:
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
            if len(times[next(iter(fns))]) >= 200:
                break
        return {k: statistics.median(v) * 1e3 for k, v in times.items()}


class CudaTimer:
    """GPU time per call: CUDA events around many back-to-back calls, after warm-up, median of
    interleaved samples.

    Before each sample a spin kernel holds the stream while the host queues the start event, the
    calls and the end event, so the events bracket the GPU's work alone: neither the Python call
    nor the gaps host dispatch leaves between small kernels enter the time. A sample whose start
    event the GPU reached before the last call was queued is retaken with a longer spin. Both
    libraries run on one stream; their inputs stay in L2 across a sample where they fit, alike for
    both.
    """

    def __init__(self, min_time: float, min_reps: int, window_ms: float = 1.0, max_calls: int = 100,
                 gpu=None):
        self.min_time, self.min_reps = min_time, min_reps
        self.window_ms, self.max_calls = window_ms, max_calls
        self.gpu = gpu or CudaStream()
        self.hold = {}  # seconds of spin per function name: twice the host's last queueing
        self.missed = self.uncovered = 0  # tries retaken with a longer spin; samples kept after 4 misses

    def run(self, fns: dict) -> dict:
        gpu = self.gpu
        gpu.synchronize()  # the inputs, made on the default streams, are ready
        with gpu.using():
            for f in fns.values():
                f()
                f()
            gpu.synchronize()
            for k in fns:
                self.hold.setdefault(k, 1e-3)
            calls = {k: self._calls(k, f) for k, f in fns.items()}
            times = {k: [] for k in fns}
            start = gpu.now()
            while len(times[next(iter(fns))]) < self.min_reps or gpu.now() - start < self.min_time:
                for k, f in fns.items():
                    times[k].append(self._sample(k, f, calls[k]))
                if len(times[next(iter(fns))]) >= 100:
                    break
        return {k: statistics.median(v) for k, v in times.items()}

    def _calls(self, key, f) -> int:
        """Calls per sample for a window of at least window_ms, within max_calls."""
        once = self._sample(key, f, 1)
        return max(1, min(self.max_calls, math.ceil(self.window_ms / max(once, 1e-6))))

    def _sample(self, key, f, calls: int) -> float:
        gpu = self.gpu
        for _ in range(4):
            gpu.spin(self.hold[key])
            e0 = gpu.record()
            t0 = gpu.now()
            for _ in range(calls):
                f()
            e1 = gpu.record()
            queued = gpu.now() - t0
            covered = not gpu.done(e0)
            ms = gpu.elapsed_ms(e0, e1) / calls
            if covered:
                self.hold[key] = max(2 * queued, 1e-3)
                return ms
            self.missed += 1
            self.hold[key] = max(2 * self.hold[key], 2 * queued)
        self.uncovered += 1  # kept, but it may hold host gaps; reported with the results
        return ms


class CudaStream:
    """What CudaTimer needs of the GPU: a stream both libraries use, its events, a spin kernel."""

    def __init__(self):
        self.stream = torch.cuda.Stream()
        with self.using():  # the spin counts clock cycles: measure how many make a second
            torch.cuda._sleep(1000)
            e0 = self.record()
            torch.cuda._sleep(2_000_000)
            ms = self.elapsed_ms(e0, self.record())
        self.cycles_per_s = 2e9 / ms if ms > 0 else 2e9

    @contextlib.contextmanager
    def using(self):
        import cupy

        with torch.cuda.stream(self.stream), cupy.cuda.ExternalStream(self.stream.cuda_stream):
            yield

    def spin(self, seconds: float):
        torch.cuda._sleep(max(1, int(seconds * self.cycles_per_s)))

    def record(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return event

    @staticmethod
    def done(event) -> bool:
        return event.query()

    @staticmethod
    def elapsed_ms(e0, e1) -> float:
        e1.synchronize()
        return e0.elapsed_time(e1)

    @staticmethod
    def synchronize():
        torch.cuda.synchronize()

    now = staticmethod(time.perf_counter)


# --------------------------------------------------------------------------- problems


def distinct(shapes) -> list:
    """``shapes`` (model first) with each shape once, in first-seen order, named after every model
    that has it ('lenet5@512+lenet5_subclassed@512')."""
    models = {}
    for model, *shape in shapes:
        models.setdefault(tuple(shape), []).append(model)
    return [("+".join(names), *shape) for shape, names in models.items()]


def conv_shapes(device: str) -> list:
    """The notes' conv layers, each shape once; on the GPU each also at batch 512."""
    shapes = list(spec_shapes.CONV)
    if device == "cuda":
        shapes += [(m + "@512", 512, h, w, c, k, ks, p) for (m, n, h, w, c, k, ks, p) in spec_shapes.CONV if n != 512]
    return distinct(shapes)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


class Arrays:
    """Host data, and the same data as convkit's arrays and as torch tensors in both layouts."""

    def __init__(self, device: str):
        self.device = device

    def ours(self, a):
        if self.device == "cuda":
            import cupy

            return cupy.asarray(a)
        return a

    def torch(self, a, layout=None):
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        if layout is None:  # not an activation
            return t
        t = t.permute(0, 3, 1, 2)  # NHWC -> logical NCHW
        return t.contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)

    @staticmethod
    def host(a):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu()
            return a.permute(0, 2, 3, 1).numpy() if a.dim() == 4 else a.numpy()
        return a if isinstance(a, np.ndarray) else a.get()


def conv_cases(args, arrays, timer, precision):
    rng = np.random.default_rng(0)
    for model, n, h, w, c, k, ks, padding in conv_shapes(args.device)[: args.limit]:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        wt = (rng.standard_normal((ks, ks, c, k)) / math.sqrt(ks * ks * c)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        oshape = ops.conv2d_output_shape(x.shape, wt.shape, 1, padding)
        dy = rng.standard_normal(oshape).astype(np.float32)
        X, W, B, DY = (arrays.ours(a) for a in (x, wt, b, dy))
        flops = 2.0 * oshape[0] * oshape[1] * oshape[2] * k * ks * ks * c
        real = 2.0 * n * k * c * _inside_taps(h, ks, padding) * _inside_taps(w, ks, padding)
        pad = (ks - 1) // 2 if padding == "same" else 0  # all SPEC convs: odd kernels, stride 1
        wt_t, b_t = arrays.torch(wt).permute(3, 2, 0, 1).contiguous(), arrays.torch(b)

        ours = {
            "fwd": lambda: ops.conv2d(X, W, B, padding=padding, precision=precision),
            "bwd_data": lambda: ops.conv2d_backward_data(DY, W, X.shape, padding=padding, precision=precision),
            "bwd_filter": lambda: ops.conv2d_backward_filter(DY, X, W.shape, padding=padding, precision=precision),
        }
        for op, ours_fn in ours.items():
            if args.match and not re.search(args.match, f"{op} {model} {n}x{h}x{w}x{c} k{ks} {c}->{k} {padding}"):
                continue
            best = None
            for layout in ("nchw", "nhwc"):
                xt, dyt = arrays.torch(x, layout), arrays.torch(dy, layout)
                aten = torch.ops.aten.convolution_backward
                peer = {
                    "fwd": lambda: F.conv2d(xt, wt_t, b_t, padding=pad),
                    "bwd_data": lambda: aten(dyt, xt, wt_t, [k], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                             [True, False, False])[0],
                    "bwd_filter": lambda: aten(dyt, xt, wt_t, [k], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                               [False, True, True])[1],
                }[op]
                with torch.no_grad():
                    t = timer.run({"ours": ours_fn, "peer": peer})
                if best is None or t["peer"] < best[1]["peer"]:
                    best = (layout, t, peer)
            layout, t, peer = best
            got = ours_fn()
            got = got[0] if isinstance(got, tuple) else got
            want = peer()
            want = want.permute(2, 3, 1, 0).cpu().numpy() if op == "bwd_filter" else arrays.host(want)  # OIHW -> HWIO
            err = rel_err(arrays.host(got), want)
            tol = 5e-3 if precision == "tf32" else 1e-4
            yield dict(kind="conv", op=op, model=model, shape=f"{n}x{h}x{w}x{c} k{ks} {c}->{k} {padding}",
                       ours_ms=t["ours"], peer_ms=t["peer"], ratio=t["ours"] / t["peer"], peer_layout=layout,
                       gflops=flops / t["ours"] / 1e6, peer_gflops=flops / t["peer"] / 1e6,
                       rel_err=err, ok=err < tol, precision=precision, gflop=flops / 1e9, real_gflop=real / 1e9)


def _inside_taps(size, ks, padding) -> int:
    """Taps of a stride-1 window that fall inside an axis of ``size``, summed over its output positions."""
    pad, out = ((ks - 1) // 2, size) if padding == "same" else (0, size - ks + 1)
    return sum(sum(0 <= o - pad + t < size for t in range(ks)) for o in range(out))


LARGE_GFLOP, PEAK_SHARE = 1.0, 0.7  # issue 19's target: large conv layers at 70% of the peak or more


def pool_cases(args, arrays, timer):
    rng = np.random.default_rng(1)
    for model, n, h, w, c, ps, st, padding, kind in distinct(spec_shapes.POOL)[: args.limit]:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        oshape = ops.pool2d_output_shape(x.shape, ps, st, padding)
        dy = rng.standard_normal(oshape).astype(np.float32)
        X, DY = arrays.ours(x), arrays.ours(dy)
        _, argmax = ops.max_pool2d_with_argmax(X, ps, st, padding)
        # TF 'same' windows equal torch's ceil_mode windows here (stride == window); padded
        # cells never count in either library.
        ceil = padding == "same"
        xt, dyt = arrays.torch(x, "nhwc"), arrays.torch(dy, "nhwc")
        if kind == "max":
            yt, idx = F.max_pool2d(xt, ps, st, ceil_mode=ceil, return_indices=True)
            cases = {
                "fwd": (lambda: ops.max_pool2d(X, ps, st, padding), lambda: F.max_pool2d(xt, ps, st, ceil_mode=ceil)),
                # The backward as training runs it: the public op first checks a caller's argmax against
                # every window (about as long again), which PyTorch's kernel does not do either.
                "bwd": (lambda: ops._max_pool2d_backward_from_argmax(DY, argmax, X.shape, ps, st, padding),
                        lambda: torch.ops.aten.max_pool2d_with_indices_backward(dyt, xt, [ps, ps], [st, st], [0, 0],
                                                                                [1, 1], ceil, idx)),
            }
        else:
            cases = {
                "fwd": (lambda: ops.avg_pool2d(X, ps, st, padding),
                        lambda: F.avg_pool2d(xt, ps, st, ceil_mode=ceil, count_include_pad=False)),
                "bwd": (lambda: ops.avg_pool2d_backward(DY, X, ps, st, padding),
                        lambda: torch.ops.aten.avg_pool2d_backward(dyt, xt, [ps, ps], [st, st], [0, 0], ceil,
                                                                   False, None)),
            }
        for op, (ours_fn, peer) in cases.items():
            if args.match and not re.search(args.match, f"{kind}_{op} {model} {n}x{h}x{w}x{c} p{ps} s{st} {padding}"):
                continue
            t = timer.run({"ours": ours_fn, "peer": peer})
            err = rel_err(arrays.host(ours_fn()), arrays.host(peer()))
            yield dict(kind="pool", op=f"{kind}_{op}", model=model, shape=f"{n}x{h}x{w}x{c} p{ps} s{st} {padding}",
                       ours_ms=t["ours"], peer_ms=t["peer"], ratio=t["ours"] / t["peer"], peer_layout="nhwc",
                       rel_err=err, ok=err < 1e-5)


# (model, H, W, C, kernel, stride): the depthwise layers of MobileNet (3x3) and EfficientNet-B0 (5x5)
# at 224x224, all 'same'
DEPTHWISE = [
    ("mobilenet", 112, 112, 32, 3, 1), ("mobilenet", 112, 112, 64, 3, 2), ("mobilenet", 56, 56, 128, 3, 1),
    ("mobilenet", 56, 56, 128, 3, 2), ("mobilenet", 28, 28, 256, 3, 1), ("mobilenet", 28, 28, 256, 3, 2),
    ("mobilenet", 14, 14, 512, 3, 1), ("mobilenet", 14, 14, 512, 3, 2), ("mobilenet", 7, 7, 1024, 3, 1),
    ("efficientnet_b0", 56, 56, 144, 5, 2), ("efficientnet_b0", 28, 28, 240, 5, 1),
    ("efficientnet_b0", 14, 14, 672, 5, 1), ("efficientnet_b0", 14, 14, 672, 5, 2),
    ("efficientnet_b0", 7, 7, 1152, 5, 1),
]


def _tf_pads(size, k, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _depthwise_truth(arrays, x, wt_t, b, dy, ks, st):
    """PyTorch float32 with TensorFlow's 'same' padding applied explicitly: y, dx, dkernel (HWC1), dbias."""
    xt = arrays.torch(x, "nchw").requires_grad_(True)
    wq, bq = wt_t.clone().requires_grad_(True), arrays.torch(b).requires_grad_(True)
    (pt, pb), (pl, pr) = _tf_pads(x.shape[1], ks, st), _tf_pads(x.shape[2], ks, st)
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wq, bq, stride=st, groups=x.shape[3])
    y.backward(arrays.torch(dy, "nchw"))
    dk = wq.grad[:, 0].permute(1, 2, 0)[..., None].cpu().numpy()
    return {"fwd": arrays.host(y), "bwd_data": arrays.host(xt.grad), "bwd_filter": dk}


def depthwise_cases(args, arrays, timer):
    rng = np.random.default_rng(2)
    shapes = [(m, n, h, w, c, ks, st) for n in (1, 32) for (m, h, w, c, ks, st) in DEPTHWISE]
    for model, n, h, w, c, ks, st in shapes[: args.limit]:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        wt = (rng.standard_normal((ks, ks, c, 1)) / ks).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        oshape = ops.depthwise_conv2d_output_shape(x.shape, wt.shape, st, "same")
        dy = rng.standard_normal(oshape).astype(np.float32)
        X, W, B, DY = (arrays.ours(a) for a in (x, wt, b, dy))
        wt_t = arrays.torch(wt[..., 0]).permute(2, 0, 1)[:, None].contiguous()  # (C, 1, kh, kw)
        b_t, pad = arrays.torch(b), (ks - 1) // 2
        truth = _depthwise_truth(arrays, x, wt_t, b, dy, ks, st)
        ours = {
            "fwd": lambda: ops.depthwise_conv2d(X, W, B, st, "same"),
            "bwd_data": lambda: ops.depthwise_conv2d_backward_data(DY, W, X.shape, st, "same"),
            "bwd_filter": lambda: ops.depthwise_conv2d_backward_filter(DY, X, W.shape, st, "same")[0],
        }
        shape = f"{n}x{h}x{w}x{c} k{ks} s{st}"
        for op, ours_fn in ours.items():
            if args.match and not re.search(args.match, f"dw_{op} {model} {shape}"):
                continue
            best = None
            for layout in ("nchw", "nhwc"):
                xt, dyt = arrays.torch(x, layout), arrays.torch(dy, layout)
                aten = torch.ops.aten.convolution_backward
                grad = lambda mask: aten(dyt, xt, wt_t, [c], [st, st], [pad, pad], [1, 1], False, [0, 0], c, mask)
                peer = {
                    "fwd": lambda: F.conv2d(xt, wt_t, b_t, stride=st, padding=pad, groups=c),
                    "bwd_data": lambda: grad([True, False, False])[0],
                    "bwd_filter": lambda: grad([False, True, True])[1],
                }[op]
                with torch.no_grad():
                    t = timer.run({"ours": ours_fn, "peer": peer})
                if best is None or t["peer"] < best[1]["peer"]:
                    best = (layout, t)
            layout, t = best
            err = rel_err(arrays.host(ours_fn()), truth[op])
            outputs = oshape[0] * oshape[1] * oshape[2] * c
            yield dict(kind="depthwise", op=f"dw_{op}", model=model, shape=shape, ours_ms=t["ours"],
                       peer_ms=t["peer"], ratio=t["ours"] / t["peer"], peer_layout=layout,
                       gflops=2.0 * outputs * ks * ks / t["ours"] / 1e6, rel_err=err, ok=err < 1e-4)


# --------------------------------------------------------------------------- report


def fmt_row(r) -> str:
    g = f"{r['gflops']:8.1f}" if "gflops" in r else " " * 8
    share = f" {r['gflops'] / r['peak_gflops']:6.0%}" if "peak_gflops" in r else ""
    return (f"{r['op']:<10} {r['model']:<22} {r['shape']:<30} {'pass' if r['ok'] else 'FAIL'}  "
            f"{r['ours_ms']:9.3f} {r['peer_ms']:9.3f} {r['ratio']:6.2f}  {g}{share}")


HEADER = f"{'op':<10} {'model':<22} {'shape':<30} check  {'ours ms':>9} {'peer ms':>9} {'ratio':>6}  GFLOP/s  %peak"


def peak_share(rows) -> dict:
    """Of the CPU convolutions of at least LARGE_GFLOP a call (nominal): how many reach PEAK_SHARE of the peak
    measured beside them and the median share, with the work counted nominally and by real taps."""
    large = [r for r in rows if r["kind"] == "conv" and "peak_gflops" in r and r["gflop"] >= LARGE_GFLOP]
    if not large:
        return {}
    out = {"large_conv_cases": len(large)}
    for how, key in (("nominal", "gflop"), ("real", "real_gflop")):
        shares = [r["gflops"] * r[key] / r["gflop"] / r["peak_gflops"] for r in large]
        out[how] = {f"at_{PEAK_SHARE:.0%}_of_peak": sum(v >= PEAK_SHARE for v in shares),
                    "median_share_of_peak": statistics.median(shares)}
    return out


def title(info) -> str:
    kernels = f" | convkit kernels {info['micro_kernel']}" if "micro_kernel" in info else ""
    return f"# {info['device']}{kernels} | torch {info['torch']} | {info['date']}"


def report(info, rows, summary) -> str:
    """The table as printed during the run, for bench/results/kernels-<device>.txt."""
    lines = [title(info), HEADER]
    section = None
    for r in rows:
        name = {"pool": "## pooling", "depthwise": "## depthwise conv, float32"}.get(r["kind"]) or \
            f"## conv, {r['precision']}"
        if name != section:
            lines.append(section := name)
        lines.append(fmt_row(r))
    lines += ["", "geometric mean of time ratio ours/peer (below 1 = convkit faster):"]
    lines += [f"  {k:<28} {v:6.3f}" for k, v in summary.items()]
    return "\n".join(lines + _peak_lines(rows)) + "\n"


def _peak_lines(rows) -> list:
    share = peak_share(rows)
    if not share:
        return []
    n, key = share["large_conv_cases"], f"at_{PEAK_SHARE:.0%}_of_peak"
    return ["", f"convolutions of at least {LARGE_GFLOP:g} GFLOP a call, at {PEAK_SHARE:.0%} or more of the float32 "
            f"peak measured beside each: {share['nominal'][key]} of {n} counting every tap (median "
            f"{share['nominal']['median_share_of_peak']:.0%}), {share['real'][key]} of {n} counting taps inside the "
            f"image (median {share['real']['median_share_of_peak']:.0%})"]


def geomean(vals) -> float:
    vals = list(vals)
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def summarize(rows) -> dict:
    groups = {}
    for r in rows:
        key = {"pool": "pool", "depthwise": f"depthwise {r['op']}"}.get(r["kind"]) or \
            f"conv {r['op']}" + (f" ({r['precision']})" if "precision" in r else "")
        groups.setdefault(key, []).append(r["ratio"])
    for prec in sorted({r.get("precision") for r in rows if r["kind"] == "conv"}):
        groups[f"conv all ({prec})"] = [r["ratio"] for r in rows if r["kind"] == "conv" and r.get("precision") == prec]
    return {k: geomean(v) for k, v in groups.items()}


def device_info(device: str) -> dict:
    info = dict(date=datetime.date.today().isoformat(), python=platform.python_version(), numpy=np.__version__,
                torch=torch.__version__, convkit=convkit.__version__, threads=convkit.get_num_threads())
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    if device == "cuda":
        info["device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
        import cupy

        info["cupy"] = cupy.__version__
    else:
        info["device"] = device_name("cpu")
        info["micro_kernel"] = convkit._cpu.micro_kernel()
        info["torch_threads"] = torch.get_num_threads()
        # Both libraries run in this one process, so they share its allocator and its settings.
        info["allocator"] = {"shared_by_both": True, **allocator_seen()}
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both libraries (default: all cores)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of timing per case, at least")
    p.add_argument("--min-reps", type=int, default=7)
    p.add_argument("--limit", type=int, default=None, help="only the first N shapes of each table (smoke runs)")
    p.add_argument("--only", choices=["conv", "pool", "depthwise"], default=None)
    p.add_argument("--match", default=None,
                   help="only cases whose 'op model shape' contains this regular expression (e.g. 'bwd_data.*1->')")
    p.add_argument("--out", type=Path, default=None, help=out_help("kernels-<device>") + "; rewritten after every case")
    p.add_argument("--table", type=Path, default=None, help="the table's path instead (default: beside the JSON)")
    args = p.parse_args(argv)

    if args.device == "cpu":
        threads = args.threads or os.cpu_count()
        convkit.set_num_threads(threads)
        torch.set_num_threads(threads)
        timer = CpuTimer(args.min_time, args.min_reps)
        precisions = ["float32"]
    else:
        if not convkit.has_cuda():
            print(f"convkit CUDA {convkit.cuda_status()}", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
        timer = CudaTimer(args.min_time, args.min_reps)
        precisions = ["float32", "tf32"]
    arrays = Arrays(args.device)
    info = device_info(args.device)
    out = result_path(args.out, f"kernels-{args.device}")
    rows = []

    def save(summary=None):
        """The JSON as it stands, rewritten after every case: a run cut short keeps what it measured."""
        if isinstance(timer, CudaTimer):
            info["timer"] = dict(missed=timer.missed, uncovered=timer.uncovered)
        data = dict(info=info, complete=summary is not None, summary=summary or {}, rows=rows)
        with atomic_open(out) as f:
            f.write((json.dumps(data, indent=1) + "\n").encode())

    # The peak before a case is the one measured after the case before it.
    peaks = [convkit._cpu.peak_gflops(0.1)] if args.device == "cpu" else []

    def record(row):
        if args.device == "cpu" and row["kind"] == "conv":
            peaks[:] = [peaks[-1], convkit._cpu.peak_gflops(0.1)]
            row["peak_gflops"] = max(peaks)
        rows.append(row)
        print(fmt_row(row), flush=True)
        save()

    print(title(info))
    print(HEADER)
    save()
    if args.only in (None, "conv"):
        for prec in precisions:
            if args.device == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = prec == "tf32"
            print(f"## conv, {prec}" + (" (peer TF32 " + ("on)" if prec == "tf32" else "off)") if args.device == "cuda" else ""))
            for row in conv_cases(args, arrays, timer, prec):
                record(row)
    if args.only in (None, "pool"):
        print("## pooling")
        for row in pool_cases(args, arrays, timer):
            record(row)
    if args.only in (None, "depthwise"):
        if args.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        print("## depthwise conv, float32")
        for row in depthwise_cases(args, arrays, timer):
            record(row)
    summary = summarize(rows)
    print("\ngeometric mean of time ratio ours/peer (below 1 = convkit faster):")
    for k, v in summary.items():
        print(f"  {k:<28} {v:6.3f}")
    for line in _peak_lines(rows):
        print(line)
    info["peak_share"] = peak_share(rows)
    failed = [r for r in rows if not r["ok"]]
    save(summary)
    (args.table or out.with_suffix(".txt")).write_text(report(info, rows, summary))
    if isinstance(timer, CudaTimer) and timer.uncovered:
        print(f"{timer.uncovered} sample(s) may hold host dispatch gaps (the spin never outlasted the queueing)")
    print(f"\nwrote {out}" + (f"; {len(failed)} case(s) FAILED the check" if failed else ""))
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
