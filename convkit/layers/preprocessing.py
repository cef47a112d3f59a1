"""Keras's image preprocessing layers: Resizing, CenterCrop and the random augmentations RandomFlip,
RandomRotation, RandomZoom, RandomTranslation and RandomContrast (Rescaling lives in core).

They take (N, H, W, C) batches or single (H, W, C) images, have no weights, and pass gradients
back like any other layer. The random ones transform only in training: inside ``fit``, or when
called directly without ``training`` (as Keras 3 does, so ``augment(images)`` shows augmented
images); ``predict``, ``evaluate`` and ``training=False`` leave the images as they are. Each image
of a batch gets its own random parameters, drawn on the host from the layer's own generator when
it has a ``seed``, else from convkit's (``convkit.utils.set_random_seed``).
"""

from __future__ import annotations

import math

import numpy as np

from convkit import _serial
from convkit._device import xp_of
from convkit.layers.base import Layer
from convkit._transform import (FILL_MODES, INTERPOLATIONS, affine_batch, affine_batch_backward,
                                              affine_maps)
from convkit.utils import rng


def _size(value, name, who):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return int(value)


def _choice(value, allowed, name, who):
    if value not in allowed:
        raise ValueError(f"{who}: {name} must be one of {allowed}, got {value!r}")
    return value


class _ImageLayer(Layer):
    """Shared by the image layers: single images as batches of one, and the 'training' default."""

    default_training = False

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{type(self).__name__}: only data_format='channels_last' (NHWC) is supported, "
                             f"got {data_format!r}")

    def build(self, input_shape):
        if len(input_shape) not in (3, 4):
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects images (N, H, W, C) or (H, W, C), "
                             f"got shape {tuple(input_shape)}")

    def _check_input(self, shape):
        if len(shape) not in (3, 4):
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects images (N, H, W, C) or (H, W, C), "
                             f"got shape {tuple(shape)}")

    def call(self, x, training=None):
        training = self.default_training if training is None else bool(training)
        single = x.ndim == 3
        y, cache = self._transform(x[None] if single else x, training)
        self._save(single, x.shape, cache)
        return y[0] if single else y

    def backward(self, dy, need_dx=True):
        single, x_shape, cache = self._pop()
        if not need_dx:
            return None
        dx = self._transform_backward(dy[None] if single else dy, (1,) + x_shape if single else x_shape, cache)
        return dx[0] if single else dx

    def _transform(self, x, training):
        """(y, what backward needs) for a batch."""
        raise NotImplementedError

    def _transform_backward(self, dy, x_shape, cache):
        raise NotImplementedError


def _crop_box(h, w, th, tw):
    """Keras's centred crop of (h, w) to the aspect ratio of (th, tw): (top, left, height, width)."""
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


class _Resample:
    """A batch resampled through per-image affine maps (forward and its gradient)."""

    @staticmethod
    def forward(x, m, offsets, fill_mode, fill_value, out_size, interpolation):
        y = affine_batch(x, m, offsets, fill_mode, fill_value, out_size, interpolation)
        return y, (m, offsets, fill_mode, interpolation)

    @staticmethod
    def backward(dy, x_shape, cache):
        m, offsets, fill_mode, interpolation = cache
        return affine_batch_backward(dy, x_shape, m, offsets, fill_mode, interpolation)


def _crop_resize(x, size, box, interpolation):
    """Crop ``box`` (top, left, height, width; None for all) out of each image, then resize it to
    ``size`` with half-pixel centres, edge pixels repeated outside the crop (as PyTorch's interpolate)."""
    n, h, w, _ = x.shape
    top, left, bh, bw = box or (0, 0, h, w)
    crop = x[:, top:top + bh, left:left + bw]
    sr, sc = bh / size[0], bw / size[1]
    m = np.broadcast_to(np.array([[sr, 0.0], [0.0, sc]]), (n, 2, 2))
    offsets = np.broadcast_to(np.array([0.5 * sr - 0.5, 0.5 * sc - 0.5]), (n, 2))
    y, cache = _Resample.forward(crop, m, offsets, "nearest", 0.0, size, interpolation)
    return y, ("resize", (top, left, crop.shape), cache)


def _crop_resize_backward(dy, x_shape, cache):
    (top, left, crop_shape), resample = cache[1], cache[2]
    dx = xp_of(dy).zeros(x_shape, dtype=np.float32)
    dx[:, top:top + crop_shape[1], left:left + crop_shape[2]] = _Resample.backward(dy, crop_shape, resample)
    return dx


@_serial.register_serializable
class Resizing(_ImageLayer):
    """Resize images to (height, width) as Keras does on its PyTorch backend: half-pixel centres,
    'bilinear' (no antialiasing) or 'nearest'; ``crop_to_aspect_ratio`` first takes the largest
    centred crop with the target's aspect ratio."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, data_format=None,
                 **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.height, self.width = _size(height, "height", "Resizing"), _size(width, "width", "Resizing")
        self.interpolation = _choice(interpolation, INTERPOLATIONS, "interpolation", "Resizing")
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])

    def _transform(self, x, training):
        h, w = x.shape[1:3]
        box = _crop_box(h, w, self.height, self.width) if self.crop_to_aspect_ratio else None
        return _crop_resize(x, (self.height, self.width), box, self.interpolation)

    def _transform_backward(self, dy, x_shape, cache):
        return _crop_resize_backward(dy, x_shape, cache)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio}


@_serial.register_serializable
class CenterCrop(_ImageLayer):
    """The centred (height, width) crop of each image; an image smaller than that is instead
    cropped to the target's aspect ratio and resized (bilinear), as Keras does."""

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.height, self.width = _size(height, "height", "CenterCrop"), _size(width, "width", "CenterCrop")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])

    def _transform(self, x, training):
        n, h, w, _ = x.shape
        if h >= self.height and w >= self.width:
            top, left = (h - self.height) // 2, (w - self.width) // 2
            return x[:, top:top + self.height, left:left + self.width], ("crop", top, left)
        return _crop_resize(x, (self.height, self.width), _crop_box(h, w, self.height, self.width), "bilinear")

    def _transform_backward(self, dy, x_shape, cache):
        if cache[0] != "crop":
            return _crop_resize_backward(dy, x_shape, cache)
        _, top, left = cache
        dx = xp_of(dy).zeros(x_shape, dtype=np.float32)
        dx[:, top:top + self.height, left:left + self.width] = dy
        return dx

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


class _RandomLayer(_ImageLayer):
    """A random augmentation: identity outside training, per-image parameters inside."""

    default_training = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._gen = np.random.default_rng(seed) if seed is not None else None

    def _rng(self):
        return self._gen if self._gen is not None else rng()

    def _transform(self, x, training):
        if not training:
            return x, None
        params = self._draw(x.shape[0], x.shape[1], x.shape[2], self._rng())
        return self._apply(x, params)

    def _transform_backward(self, dy, x_shape, cache):
        return dy if cache is None else self._apply_backward(dy, x_shape, cache)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _factor_range(factor, who, name="factor"):
    """Keras's factor argument: a number f for (-f, f), or a (low, high) pair."""
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        return -abs(float(factor)), abs(float(factor))
    if isinstance(factor, (tuple, list)) and len(factor) == 2:
        lo, hi = (float(v) for v in factor)
        if lo > hi:
            raise ValueError(f"{who}: {name} must be (low, high) with low <= high, got {factor!r}")
        return lo, hi
    raise ValueError(f"{who}: {name} must be a number or a (low, high) pair, got {factor!r}")


class _AffineRandomLayer(_RandomLayer):
    """Random rotation, zoom or translation: one affine map per image, resampled like ImageDataGenerator."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        who = type(self).__name__
        self.fill_mode = _choice(fill_mode, FILL_MODES, "fill_mode", who)
        self.interpolation = _choice(interpolation, INTERPOLATIONS, "interpolation", who)
        self.fill_value = float(fill_value)

    def _apply(self, x, params):
        n, h, w, _ = x.shape
        m, offsets = affine_maps(h, w, **params)
        return _Resample.forward(x, m, offsets, self.fill_mode, self.fill_value, None, self.interpolation)

    def _apply_backward(self, dy, x_shape, cache):
        return _Resample.backward(dy, x_shape, cache)

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "fill_value": self.fill_value}


@_serial.register_serializable
class RandomRotation(_AffineRandomLayer):
    """Rotate each image by a random fraction of a full turn drawn from ``factor`` (f for [-f, f],
    or (low, high)); positive turns are counter-clockwise. Uncovered pixels per ``fill_mode``
    ('reflect', 'wrap', 'nearest', 'constant' with ``fill_value``)."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0,
                 data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format=data_format, **kwargs)
        self.factor = _factor_range(factor, "RandomRotation")

    def _draw(self, n, h, w, gen):
        turns = gen.uniform(self.factor[0], self.factor[1], n)
        return {"theta": turns * 2 * math.pi, "tx": 0.0, "ty": 0.0}

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor)}


@_serial.register_serializable
class RandomZoom(_AffineRandomLayer):
    """Zoom each image about its centre by a random ``1 + f``, f drawn from ``height_factor`` (and
    ``width_factor``; None keeps the aspect ratio): positive values zoom out, negative zoom in."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format=data_format, **kwargs)
        self.height_factor = _factor_range(height_factor, "RandomZoom", "height_factor")
        self.width_factor = None if width_factor is None else _factor_range(width_factor, "RandomZoom",
                                                                            "width_factor")
        if min(self.height_factor + (self.width_factor or (0.0,))) <= -1:
            raise ValueError("RandomZoom: factors must be above -1 (a zoom of 1 + factor must stay positive)")

    def _draw(self, n, h, w, gen):
        zy = 1.0 + gen.uniform(*self.height_factor, n)
        zx = zy if self.width_factor is None else 1.0 + gen.uniform(*self.width_factor, n)
        return {"theta": 0.0, "tx": 0.0, "ty": 0.0, "zx": zx, "zy": zy}

    def get_config(self):
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": None if self.width_factor is None else list(self.width_factor)}


@_serial.register_serializable
class RandomTranslation(_AffineRandomLayer):
    """Shift each image by random fractions of its height and width drawn from ``height_factor``
    and ``width_factor`` (f for [-f, f], or (low, high)); positive moves content down and right."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format=data_format, **kwargs)
        self.height_factor = _factor_range(height_factor, "RandomTranslation", "height_factor")
        self.width_factor = _factor_range(width_factor, "RandomTranslation", "width_factor")

    def _draw(self, n, h, w, gen):
        ty = gen.uniform(*self.height_factor, n) * h
        tx = gen.uniform(*self.width_factor, n) * w
        return {"theta": 0.0, "tx": tx, "ty": ty}

    def get_config(self):
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": list(self.width_factor)}


_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


@_serial.register_serializable
class RandomFlip(_RandomLayer):
    """Flip each image with probability 1/2: left-right ('horizontal'), upside down ('vertical'), or
    both at once ('horizontal_and_vertical', as Keras 3: one draw for the two flips)."""

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.mode = _choice(mode, _FLIP_MODES, "mode", "RandomFlip")

    def _draw(self, n, h, w, gen):
        return {"flips": gen.random(n) <= 0.5}

    def _apply(self, x, params):
        flips = np.flatnonzero(np.asarray(params["flips"], bool).reshape(-1))
        if not len(flips):
            return x, flips
        xp = xp_of(x)
        y, idx = x.copy(), xp.asarray(flips)
        if self.mode != "vertical":
            y[idx] = y[idx][:, :, ::-1]
        if self.mode != "horizontal":
            y[idx] = y[idx][:, ::-1]
        return y, flips

    def _apply_backward(self, dy, x_shape, flips):
        return self._apply(dy, {"flips": np.isin(np.arange(x_shape[0]), flips)})[0]  # a flip is its own inverse

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@_serial.register_serializable
class RandomContrast(_RandomLayer):
    """Scale each image's deviation from its per-channel mean by a random factor from
    [1 - lower, 1 + upper] (``factor`` (lower, upper), or f for both, in [0, 1]), then clip to
    ``value_range`` (default [0, 255])."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(factor, (tuple, list)) and len(factor) == 2:
            lower, upper = (float(v) for v in factor)
        else:
            lower = upper = _factor_range(factor, "RandomContrast")[1]
        if not (0 <= lower <= 1 and 0 <= upper <= 1):
            raise ValueError(f"RandomContrast: factor must lie in [0, 1], got {factor!r}")
        self.factor = (lower, upper)
        self.value_range = tuple(float(v) for v in value_range)
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise ValueError(f"RandomContrast: value_range must be (low, high), got {value_range!r}")

    def _draw(self, n, h, w, gen):
        return {"contrast_factor": gen.uniform(1.0 - self.factor[0], 1.0 + self.factor[1], n)}

    def _apply(self, x, params):
        xp = xp_of(x)
        f = xp.asarray(np.asarray(params["contrast_factor"], np.float32).reshape(-1, 1, 1, 1))
        mean = x.mean(axis=(1, 2), keepdims=True)
        z = (x - mean) * f + mean
        y = xp.clip(z, *self.value_range).astype(np.float32, copy=False)
        return y, (f, (z >= self.value_range[0]) & (z <= self.value_range[1]))

    def _apply_backward(self, dy, x_shape, cache):
        f, inside = cache
        g = dy * inside
        return g * f + (1 - f) * g.mean(axis=(1, 2), keepdims=True)

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor), "value_range": list(self.value_range)}


__all__ = ["Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
           "RandomContrast"]
