"""Batched affine resampling: one 2-D affine map per image, bilinear interpolation.

Written against ``xp`` (NumPy or CuPy, whichever holds the images), so augmentation runs on
the GPU when the training data lives there.
"""

from __future__ import annotations

import numpy as np

from convkit._device import xp_of

FILL_MODES = ("constant", "nearest", "reflect", "wrap")


def _fold(xp, idx, n: int, mode: str):
    """Map integer sample positions outside [0, n) back inside according to ``mode``."""
    if mode == "reflect":  # abcd|dcba|abcd: period 2n, mirrored about the pixel edges
        m = xp.mod(idx, 2 * n)
        return xp.where(m < n, m, 2 * n - 1 - m)
    if mode == "wrap":  # abcd|abcd
        return xp.mod(idx, n)
    return xp.clip(idx, 0, n - 1)  # nearest; constant: clipped for the gather, masked afterwards


def affine_batch(x, matrices, offsets, fill_mode: str = "nearest", cval: float = 0.0):
    """Resample each image of ``x`` (N, H, W, C; NumPy or CuPy) through its own affine map.

    Output pixel ``p = (row, col)`` of image ``b`` reads input position
    ``matrices[b] @ p + offsets[b]`` with bilinear interpolation; positions outside the image
    are filled per ``fill_mode`` ('constant' uses ``cval``). The result is on ``x``'s device.
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    xp = xp_of(x)
    n, h, w, ch = x.shape
    rows, cols = xp.meshgrid(xp.arange(h, dtype=xp.float64), xp.arange(w, dtype=xp.float64), indexing="ij")
    grid = xp.stack([rows.ravel(), cols.ravel()], axis=-1)  # (HW, 2)
    matrices, offsets = xp.asarray(matrices, dtype=xp.float64), xp.asarray(offsets, dtype=xp.float64)
    src = xp.einsum("bij,pj->bpi", matrices, grid) + offsets[:, None, :]  # (N, HW, 2)
    # Snap values within rounding error of a pixel centre so exact maps (flips, 90-degree
    # rotations, whole-pixel shifts) copy pixels exactly instead of blending a 1e-16 sliver.
    snapped = xp.rint(src)
    src = xp.where(xp.abs(src - snapped) < 1e-6, snapped, src)
    r, c = src[..., 0], src[..., 1]
    r0, c0 = xp.floor(r), xp.floor(c)
    fr, fc = (r - r0)[..., None].astype(xp.float32), (c - c0)[..., None].astype(xp.float32)
    r0, c0 = r0.astype(xp.int64), c0.astype(xp.int64)
    b = xp.arange(n)[:, None]
    out = xp.zeros((n, h * w, ch), dtype=xp.float32)
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        ri, ci = r0 + dr, c0 + dc
        vals = x[b, _fold(xp, ri, h, fill_mode), _fold(xp, ci, w, fill_mode)]
        if fill_mode == "constant":
            inside = ((ri >= 0) & (ri < h) & (ci >= 0) & (ci < w))[..., None]
            vals = xp.where(inside, vals, xp.float32(cval))
        out += weight * vals
    return out.reshape(n, h, w, ch)
