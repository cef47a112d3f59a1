"""Batched affine resampling in NumPy: one 2-D affine map per image, bilinear interpolation."""

from __future__ import annotations

import numpy as np

FILL_MODES = ("constant", "nearest", "reflect", "wrap")


def _fold(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map integer sample positions outside [0, n) back inside according to ``mode``."""
    if mode == "nearest":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect":  # abcd|dcba|abcd: period 2n, mirrored about the pixel edges
        m = np.mod(idx, 2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    if mode == "wrap":  # abcd|abcd
        return np.mod(idx, n)
    return np.clip(idx, 0, n - 1)  # constant: clipped for the gather, masked afterwards


def affine_batch(x: np.ndarray, matrices: np.ndarray, offsets: np.ndarray,
                 fill_mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
    """Resample each image of ``x`` (N, H, W, C) through its own affine map.

    Output pixel ``p = (row, col)`` of image ``b`` reads input position
    ``matrices[b] @ p + offsets[b]`` with bilinear interpolation; positions outside the image
    are filled per ``fill_mode`` ('constant' uses ``cval``).
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    n, h, w, ch = x.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], axis=-1)  # (HW, 2)
    src = np.einsum("bij,pj->bpi", matrices, grid) + offsets[:, None, :]  # (N, HW, 2)
    # Snap values within rounding error of a pixel centre so exact maps (flips, 90-degree
    # rotations, whole-pixel shifts) copy pixels exactly instead of blending a 1e-16 sliver.
    snapped = np.rint(src)
    src = np.where(np.abs(src - snapped) < 1e-6, snapped, src)
    r, c = src[..., 0], src[..., 1]
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = (r - r0)[..., None].astype(np.float32), (c - c0)[..., None].astype(np.float32)
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    b = np.arange(n)[:, None]
    out = np.zeros((n, h * w, ch), dtype=np.float32)
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        ri, ci = r0 + dr, c0 + dc
        vals = x[b, _fold(ri, h, fill_mode), _fold(ci, w, fill_mode)]
        if fill_mode == "constant":
            inside = ((ri >= 0) & (ri < h) & (ci >= 0) & (ci < w))[..., None]
            vals = np.where(inside, vals, np.float32(cval))
        out += weight * vals
    return out.reshape(n, h, w, ch)
