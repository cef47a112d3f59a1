"""Batched affine resampling: one 2-D affine map per image, bilinear interpolation.

Written against ``xp`` (NumPy or CuPy, whichever holds the images), so augmentation runs on
the GPU when the training data lives there.
"""

from __future__ import annotations

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
    rows = xp.repeat(xp.arange(h, dtype=xp.float64), w)  # output pixel p's row and column, (HW,)
    cols = xp.tile(xp.arange(w, dtype=xp.float64), h)
    m, t = xp.asarray(matrices, dtype=xp.float64), xp.asarray(offsets, dtype=xp.float64)
    # Source positions (N, HW), written out: a 2x2 map per image is too small a contraction for einsum.
    r = m[:, 0, 0, None] * rows + m[:, 0, 1, None] * cols + t[:, 0, None]
    c = m[:, 1, 0, None] * rows + m[:, 1, 1, None] * cols + t[:, 1, None]
    # Snap values within rounding error of a pixel centre so exact maps (flips, 90-degree
    # rotations, whole-pixel shifts) copy pixels exactly instead of blending a 1e-16 sliver.
    r0, c0 = xp.rint(r), xp.rint(c)
    r, c = xp.where(xp.abs(r - r0) < 1e-6, r0, r), xp.where(xp.abs(c - c0) < 1e-6, c0, c)
    r0, c0 = xp.floor(r), xp.floor(c)
    fr, fc = (r - r0)[..., None].astype(xp.float32), (c - c0)[..., None].astype(xp.float32)
    r0, c0 = r0.astype(xp.int64), c0.astype(xp.int64)
    pixels = x.reshape(n * h * w, ch)
    first = (xp.arange(n, dtype=xp.int64) * (h * w))[:, None]  # each image's first pixel
    # The two rows and two columns each output pixel blends, folded inside the image once.
    row_at = [first + _fold(xp, r0 + k, h, fill_mode) * w for k in (0, 1)]
    col_at = [_fold(xp, c0 + k, w, fill_mode) for k in (0, 1)]
    row_w, col_w = (1 - fr, fr), (1 - fc, fc)
    out = xp.zeros((n, h * w, ch), dtype=xp.float32)
    for i in (0, 1):
        for j in (0, 1):
            vals = xp.take(pixels, row_at[i] + col_at[j], axis=0)
            if fill_mode == "constant":
                inside = ((r0 + i >= 0) & (r0 + i < h) & (c0 + j >= 0) & (c0 + j < w))[..., None]
                vals = xp.where(inside, vals, xp.float32(cval))
            out += (row_w[i] * col_w[j]) * vals
    return out.reshape(n, h, w, ch)
