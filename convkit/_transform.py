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


INTERPOLATIONS = ("bilinear", "nearest")


def _snap(xp, v):
    nearest = xp.rint(v)
    return xp.where(xp.abs(v - nearest) < 1e-6, nearest, v)


def _taps(xp, shape, matrices, offsets, fill_mode, out_size, interpolation):
    """For every output pixel, the flat input pixels it reads and their weights: a list of
    (index (N, HW_out), weight (N, HW_out, 1)) pairs, 4 for 'bilinear', 1 for 'nearest'. Reads
    outside the image are folded back per ``fill_mode``; for 'constant' their weight is 0."""
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    n, h, w, _ = shape
    h_out, w_out = (h, w) if out_size is None else (int(out_size[0]), int(out_size[1]))
    rows = xp.repeat(xp.arange(h_out, dtype=xp.float64), w_out)  # output pixel p's row and column
    cols = xp.tile(xp.arange(w_out, dtype=xp.float64), h_out)
    m, t = xp.asarray(matrices, dtype=xp.float64), xp.asarray(offsets, dtype=xp.float64)
    # Source positions (N, HW), written out: a 2x2 map per image is too small a contraction for einsum.
    r = m[:, 0, 0, None] * rows + m[:, 0, 1, None] * cols + t[:, 0, None]
    c = m[:, 1, 0, None] * rows + m[:, 1, 1, None] * cols + t[:, 1, None]
    # Snap values within rounding error of a pixel centre so exact maps (flips, 90-degree
    # rotations, whole-pixel shifts) copy pixels exactly instead of blending a 1e-16 sliver.
    r, c = _snap(xp, r), _snap(xp, c)
    first = (xp.arange(n, dtype=xp.int64) * (h * w))[:, None]  # each image's first pixel

    def tap(ri, ci, weight):
        index = first + _fold(xp, ri, h, fill_mode) * w + _fold(xp, ci, w, fill_mode)
        if fill_mode == "constant":
            weight = weight * ((ri >= 0) & (ri < h) & (ci >= 0) & (ci < w))[..., None]
        return index, weight

    if interpolation == "nearest":
        half_up = lambda v: xp.floor(_snap(xp, v + 0.5)).astype(xp.int64)
        return [tap(half_up(r), half_up(c), xp.ones((n, r.shape[1], 1), dtype=xp.float32))]
    r0, c0 = xp.floor(r), xp.floor(c)
    fr, fc = (r - r0)[..., None].astype(xp.float32), (c - c0)[..., None].astype(xp.float32)
    r0, c0 = r0.astype(xp.int64), c0.astype(xp.int64)
    row_w, col_w = (1 - fr, fr), (1 - fc, fc)
    return [tap(r0 + i, c0 + j, row_w[i] * col_w[j]) for i in (0, 1) for j in (0, 1)]


def affine_batch(x, matrices, offsets, fill_mode: str = "nearest", cval: float = 0.0, out_size=None,
                 interpolation: str = "bilinear"):
    """Resample each image of ``x`` (N, H, W, C; NumPy or CuPy) through its own affine map.

    Output pixel ``p = (row, col)`` of image ``b`` reads input position
    ``matrices[b] @ p + offsets[b]``, blending its four neighbours ('bilinear') or taking the
    nearest pixel, halves rounded up ('nearest'); positions outside the image are filled per
    ``fill_mode`` ('constant' uses ``cval``). The output is ``out_size`` (rows, cols), by default
    the input's, on ``x``'s device.
    """
    xp = xp_of(x)
    n, h, w, ch = x.shape
    taps = _taps(xp, x.shape, matrices, offsets, fill_mode, out_size, interpolation)
    pixels = x.reshape(n * h * w, ch)
    out = xp.zeros((n, taps[0][0].shape[1], ch), dtype=xp.float32)
    for index, weight in taps:
        out += weight * xp.take(pixels, index, axis=0)
    if fill_mode == "constant" and cval:
        out += xp.float32(cval) * (1 - sum(weight for _, weight in taps))
    h_out, w_out = (h, w) if out_size is None else out_size
    return out.reshape(n, h_out, w_out, ch)


def affine_batch_backward(dy, x_shape, matrices, offsets, fill_mode: str = "nearest", interpolation="bilinear"):
    """Gradient of :func:`affine_batch` with respect to its input: each output pixel's gradient
    goes back to the input pixels it read, in proportion to their weights."""
    xp = xp_of(dy)
    n, h, w, ch = x_shape
    taps = _taps(xp, x_shape, matrices, offsets, fill_mode, dy.shape[1:3], interpolation)
    g = dy.reshape(n, -1, ch)
    dx = xp.zeros((n * h * w, ch), dtype=xp.float32)
    for index, weight in taps:
        flat, contrib = index.ravel(), (weight * g).reshape(-1, ch)
        for k in range(ch):
            dx[:, k] += xp.bincount(flat, weights=contrib[:, k], minlength=n * h * w).astype(xp.float32)
    return dx.reshape(x_shape)


def affine_maps(h, w, theta, tx, ty, shear=0.0, zx=1.0, zy=1.0):
    """Per-image (matrices, offsets) for :func:`affine_batch` from arrays of parameters: ``theta``
    turns content counter-clockwise (radians), ``tx``/``ty`` move it right/down (pixels), ``zx``/``zy``
    below 1 enlarge it, ``shear`` is an angle (radians); all about the image centre."""
    theta, tx, ty, shear, zx, zy = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                         for v in (theta, tx, ty, shear, zx, zy)))
    n = theta.shape[0]
    cos, sin = np.cos(theta), np.sin(theta)
    # Output (row, col) -> input (row, col): undo the shift, then the rotation, then shear and
    # zoom (the inverse of the forward map content goes through).
    rot_inv = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    shear_m = np.zeros((n, 2, 2))
    shear_m[:, 0, 0] = np.cos(shear)
    shear_m[:, 1, 0] = -np.sin(shear)
    shear_m[:, 1, 1] = 1.0
    zoom = np.zeros((n, 2, 2))
    zoom[:, 0, 0], zoom[:, 1, 1] = zy, zx
    m = zoom @ shear_m @ rot_inv
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    offsets = centre - np.einsum("bij,bj->bi", m, centre + np.stack([ty, tx], -1))
    return m, offsets
