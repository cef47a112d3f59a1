#!/usr/bin/env python3
"""Every CUDA op once on small odd shapes, each checked against its CPU twin.

Meant to run under compute-sanitizer (memcheck, racecheck, initcheck, synccheck),
so it is short; it exits non-zero when any result differs from the CPU's.
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
        err = np.linalg.norm(g.astype(np.float64) - c) / max(np.linalg.norm(c), 1e-30)
        if not err < tol:
            failures.append(f"{name}: relative error {err:.2e}")


stream = cupy.cuda.Stream(non_blocking=True)
with stream:
    for xs, ks, st, pad, dil in [((2, 9, 11, 3), (3, 3, 3, 5), 1, "same", 1), ((3, 10, 7, 17), (2, 4, 17, 9), 2, "same", 1),
                                 ((1, 12, 12, 8), (3, 3, 8, 20), (2, 1), "valid", 2), ((0, 5, 5, 2), (3, 3, 2, 4), 1, "same", 1)]:
        x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ks).astype(np.float32)
        b = rng.standard_normal(ks[3]).astype(np.float32)
        dy = rng.standard_normal(ops.conv2d_output_shape(xs, ks, st, pad, dil)).astype(np.float32)
        X, W, B, DY = (cupy.asarray(a) for a in (x, w, b, dy))
        for prec, tol in (("float32", 1e-5), ("tf32", 5e-3)):
            name = f"conv2d {xs} {ks} {st} {pad} {dil} {prec}"
            same(name + " fwd", ops.conv2d(X, W, B, st, pad, dil, activation="relu", precision=prec),
                 ops.conv2d(x, w, b, st, pad, dil, activation="relu"), tol)
            same(name + " bwd", ops.conv2d_backward(DY, X, W, st, pad, dil, precision=prec),
                 ops.conv2d_backward(dy, x, w, st, pad, dil), tol)
    for xs, p, st, pad in [((2, 7, 9, 5), 2, None, "same"), ((3, 8, 8, 16), 3, 1, "same"), ((1, 10, 10, 3), 2, 4, "valid")]:
        x = rng.standard_normal(xs).astype(np.float32)
        dy = rng.standard_normal(ops.pool2d_output_shape(xs, p, st, pad)).astype(np.float32)
        X, DY = cupy.asarray(x), cupy.asarray(dy)
        name = f"pool {xs} {p} {st} {pad}"
        same(name + " max", ops.max_pool2d_with_argmax(X, p, st, pad)[0], ops.max_pool2d(x, p, st, pad))
        same(name + " max bwd", ops.max_pool2d_backward(DY, X, p, st, pad), ops.max_pool2d_backward(dy, x, p, st, pad))
        same(name + " avg", ops.avg_pool2d(X, p, st, pad), ops.avg_pool2d(x, p, st, pad))
        same(name + " avg bwd", ops.avg_pool2d_backward(DY, X, p, st, pad), ops.avg_pool2d_backward(dy, x, p, st, pad))
stream.synchronize()
print("\n".join(failures) or "all CUDA ops match their CPU twins")
sys.exit(1 if failures else 0)
