#!/usr/bin/env python3
"""Two builds of convkit's CPU module, side by side in one process, on every notes' conv layer.

A kernel change is judged by the time ratio of the build with it to the build without it.
Timed in separate processes, the same build moves by 20-30% on these shared machines; loaded
into one process and called in turn, the two builds see the same conditions, so ratios of a
few percent mean something. Each build is a folder holding a compiled ``_cpu`` module:

    cp build/<tag>/_cpu*.so /tmp/before/       # then change csrc/, rebuild, and
    python bench/compare_builds.py /tmp/before build/<tag> --match 'bwd_filter'

Prints, per case, the median milliseconds of each build and after/before, then the geometric
mean of that ratio per op. Results are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spec_shapes  # noqa: E402
from run_kernels import CpuTimer, rel_err  # noqa: E402

OPS = ("fwd", "bwd_data", "bwd_filter")


def load_build(folder: Path, tag: str):
    """The compiled ``_cpu`` module in ``folder``, imported under its own name."""
    found = sorted(folder.glob("_cpu*.so"))
    if not found:
        raise SystemExit(f"no compiled _cpu module in {folder}")
    spec = importlib.util.spec_from_file_location(f"{tag}._cpu", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conv_call(module, op, x, w, b, dy, outs, padding):
    y, dx, dw, db = outs
    if op == "fwd":
        module.conv2d_fwd(x, w, b, y, (1, 1), (1, 1), padding, True)
        return y
    if op == "bwd_data":
        module.conv2d_bwd_data(dy, w, dx, (1, 1), (1, 1), padding)
        return dx
    module.conv2d_bwd_filter(x, dy, dw, db, (1, 1), (1, 1), padding)
    return dw


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="folder with the reference build's _cpu module")
    p.add_argument("after", type=Path, help="folder with the changed build's _cpu module")
    p.add_argument("--match", default="", help="only cases whose 'op model shape' matches this regular expression")
    p.add_argument("--min-time", type=float, default=0.4, help="seconds of timing per case, at least")
    args = p.parse_args()
    before, after = load_build(args.before, "before"), load_build(args.after, "after")
    timer, rng, ratios = CpuTimer(args.min_time, 10), np.random.default_rng(0), {}
    print(f"{'case':52s} {'before ms':>10s} {'after ms':>10s} {'after/before':>13s}")
    for model, batch, h, w, c, k, ks, padding in spec_shapes.CONV:
        x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
        wt = rng.standard_normal((ks, ks, c, k)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        oh, ow = (h, w) if padding == "same" else (h - ks + 1, w - ks + 1)
        dy = rng.standard_normal((batch, oh, ow, k)).astype(np.float32)
        for op in OPS:
            name = f"{op} {model} {batch}x{h}x{w}x{c} k{ks} {c}->{k} {padding}"
            if not re.search(args.match, name):
                continue
            outs = {m: (np.empty_like(dy), np.empty_like(x), np.empty_like(wt), np.empty_like(b))
                    for m in (before, after)}
            ref, got = (conv_call(m, op, x, wt, b, dy, outs[m], padding) for m in (before, after))
            if rel_err(got, ref) > 1e-5:
                raise SystemExit(f"{name}: the builds disagree (relative error {rel_err(got, ref):.2e})")
            t = timer.run({m: (lambda m=m: conv_call(m, op, x, wt, b, dy, outs[m], padding)) for m in (before, after)})
            ratio = t[after] / t[before]
            ratios.setdefault(op, []).append(ratio)
            print(f"{name:52s} {t[before]:10.3f} {t[after]:10.3f} {ratio:13.3f}", flush=True)
    for op, r in ratios.items():
        print(f"{op:10s} geometric mean after/before {math.exp(sum(map(math.log, r)) / len(r)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
