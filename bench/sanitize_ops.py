#!/usr/bin/env python3
"""Every CUDA op on small odd shapes, each checked against its CPU twin.

Meant to run under compute-sanitizer (memcheck, racecheck, initcheck, synccheck),
so it is short; the shapes still reach every kernel variant: 1 and 4-wide
gathers (C or K not a multiple of 4, or one), both tile widths, split and unsplit
backward-filter, strided backward-data, both numeric modes; depthwise convolution with
depth multipliers, ragged channel blocks, ReLU6 and split and unsplit backward-filter. Exits non-zero when
any result differs from the CPU's or a repeated backward-filter is not bitwise
identical.
"""

import sys

import cupy
import numpy as np

from convkit import ops

rng = np.random.default_rng(0)
failures = []


def same(name, gpu, cpu, tol=1e-5):
    gpu = [g.get() if g is not None else None for g in (gpu if isinstance(gpu, tuple) else (gpu,))]
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    for g, c in zip(gpu, cpu):
        if g is None:
            continue
        if g.shape != c.shape:
            failures.append(f"{name}: shape {g.shape} != {c.shape}")
            continue
        err = np.linalg.norm(g.astype(np.float64) - c) / max(np.linalg.norm(c), 1e-30)
        if not err < tol:  # also catches NaN
            failures.append(f"{name}: relative error {err:.2e}")


CONV = [  # x shape, kernel shape, strides, padding, dilation
    ((2, 9, 11, 3), (3, 3, 3, 5), 1, "same", 1),            # C=3: scalar gathers, narrow tiles
    ((3, 10, 7, 17), (2, 4, 17, 9), 2, "same", 1),           # odd C and K, stride 2 backward-data
    ((1, 12, 12, 8), (3, 3, 8, 20), (2, 1), "valid", 2),     # C, K multiples of 4: 16-byte gathers
    ((2, 16, 16, 16), (3, 3, 16, 64), 1, "same", 1),         # wide tiles, split backward-filter
    ((1, 7, 5, 1), (1, 1, 1, 70), 1, "same", 1),             # C=1, K over one 64-wide tile
    ((2, 11, 13, 8), (3, 3, 8, 12), (2, 3), "same", (1, 2)),  # strides and dilation on vector paths
    ((0, 5, 5, 2), (3, 3, 2, 4), 1, "same", 1),              # empty batch
]
DEPTHWISE = [  # x shape, kernel shape (kh, kw, C, M), strides, padding, dilation, fused activation
    ((2, 9, 11, 3), (3, 3, 3, 1), 1, "same", 1, "relu"),       # few channels
    ((3, 10, 7, 35), (4, 4, 35, 2), 2, "same", 1, "relu6"),    # even kernel, 70 channels in 3 blocks
    ((1, 12, 12, 8), (3, 3, 8, 3), (2, 1), "valid", 2, None),  # multiplier 3, strides and dilation
    ((4, 16, 16, 32), (5, 5, 32, 1), 1, "same", 1, None),      # many pixels: split backward-filter
    ((0, 5, 5, 2), (3, 3, 2, 2), 1, "same", 1, None),          # empty batch
]
POOL = [  # x shape, pool, strides, padding
    ((2, 7, 9, 5), 2, None, "same"),
    ((3, 8, 8, 16), 3, 1, "same"),
    ((1, 10, 10, 3), 2, 4, "valid"),
    ((2, 9, 10, 8), (2, 3), (3, 2), "same"),
]

stream = cupy.cuda.Stream(non_blocking=True)
with stream:
    for xs, ks, st, pad, dil in CONV:
        x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ks).astype(np.float32)
        b = rng.standard_normal(ks[3]).astype(np.float32)
        dy = rng.standard_normal(ops.conv2d_output_shape(xs, ks, st, pad, dil)).astype(np.float32)
        X, W, B, DY = (cupy.asarray(a) for a in (x, w, b, dy))
        ref_fwd = ops.conv2d(x, w, b, st, pad, dil, activation="relu")
        ref_bwd = ops.conv2d_backward(dy, x, w, st, pad, dil)
        for prec, tol in (("float32", 1e-5), ("tf32", 5e-3)):
            name = f"conv2d {xs} {ks} {st} {pad} {dil} {prec}"
            same(name + " fwd", ops.conv2d(X, W, B, st, pad, dil, activation="relu", precision=prec), ref_fwd, tol)
            got = ops.conv2d_backward(DY, X, W, st, pad, dil, precision=prec)
            same(name + " bwd", got, ref_bwd, tol)
            again = ops.conv2d_backward_filter(DY, X, ks, st, pad, dil, precision=prec)
            if not all(bool((a == b_).all()) for a, b_ in zip(again, got[1:])):
                failures.append(name + ": backward-filter is not deterministic")
    for xs, ks, st, pad, dil, act in DEPTHWISE:
        x, w = rng.standard_normal(xs).astype(np.float32) * 3, rng.standard_normal(ks).astype(np.float32)
        b = rng.standard_normal(ks[2] * ks[3]).astype(np.float32)
        dy = rng.standard_normal(ops.depthwise_conv2d_output_shape(xs, ks, st, pad, dil)).astype(np.float32)
        X, W, B, DY = (cupy.asarray(a) for a in (x, w, b, dy))
        name = f"depthwise_conv2d {xs} {ks} {st} {pad} {dil} {act}"
        same(name + " fwd", ops.depthwise_conv2d(X, W, B, st, pad, dil, act),
             ops.depthwise_conv2d(x, w, b, st, pad, dil, act))
        same(name + " bwd-data", ops.depthwise_conv2d_backward_data(DY, W, xs, st, pad, dil),
             ops.depthwise_conv2d_backward_data(dy, w, xs, st, pad, dil))
        got = ops.depthwise_conv2d_backward_filter(DY, X, ks, st, pad, dil)
        same(name + " bwd-filter", got, ops.depthwise_conv2d_backward_filter(dy, x, ks, st, pad, dil))
        again = ops.depthwise_conv2d_backward_filter(DY, X, ks, st, pad, dil)
        if not all(bool((a == b_).all()) for a, b_ in zip(again, got)):
            failures.append(name + ": backward-filter is not deterministic")
    for xs, p, st, pad in POOL:
        x = rng.standard_normal(xs).astype(np.float32)
        dy = rng.standard_normal(ops.pool2d_output_shape(xs, p, st, pad)).astype(np.float32)
        X, DY = cupy.asarray(x), cupy.asarray(dy)
        name = f"pool {xs} {p} {st} {pad}"
        y, am = ops.max_pool2d_with_argmax(X, p, st, pad)
        ref_y, ref_am = ops.max_pool2d_with_argmax(x, p, st, pad)
        same(name + " max", y, ref_y)
        if not (am.get() == ref_am).all():
            failures.append(name + ": argmax differs")
        same(name + " max (no argmax)", ops.max_pool2d(X, p, st, pad), ref_y)
        same(name + " max bwd", ops.max_pool2d_backward(DY, X, p, st, pad), ops.max_pool2d_backward(dy, x, p, st, pad))
        same(name + " avg", ops.avg_pool2d(X, p, st, pad), ops.avg_pool2d(x, p, st, pad))
        same(name + " avg bwd", ops.avg_pool2d_backward(DY, X, p, st, pad), ops.avg_pool2d_backward(dy, x, p, st, pad))
stream.synchronize()
print("\n".join(failures) or "all CUDA ops match their CPU twins")
sys.exit(1 if failures else 0)
