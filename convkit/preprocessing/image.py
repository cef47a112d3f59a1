"""Random image augmentation and directory-backed image iterators (NHWC, float32)."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from convkit._device import to_numpy, xp_of
from convkit.data import Dataset
from convkit._transform import FILL_MODES, affine_batch, affine_maps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
_COLOR_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install 'convkit[image]'") from None
    return Image


def _range(value, name, symmetric=True):
    """Turn a Keras-style range argument into (low, high)."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        return (-float(value), float(value)) if symmetric else (1.0 - value, 1.0 + value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value}")
    return lo, hi


class ImageDataGenerator:
    """Random augmentation of NHWC image batches, in the manner of Keras's ``ImageDataGenerator``.

    Ranges: ``rotation_range`` in degrees (uniform in +-range, positive turns content
    counter-clockwise); ``width_shift_range``/``height_shift_range`` as a fraction of the size when
    below 1, else in pixels; ``shear_range`` in degrees; ``zoom_range`` a float z for [1-z, 1+z] or a
    (low, high) pair, each axis drawn independently, values below 1 enlarging the content as in
    Keras. Flips happen with probability 1/2. ``fill_mode`` is 'constant' (``cval``), 'nearest',
    'reflect' or 'wrap'. Each batch goes through ``preprocessing_function`` (per image), the random
    transform (one affine map per image, bilinear, vectorised over the batch), ``rescale``, then
    sample-wise and feature-wise standardisation (the latter needs :meth:`fit`).

    Images given as CuPy arrays are transformed on the GPU and stay there; the random parameters
    are always drawn on the host, so a seed gives the same batches on either device.
    """

    def __init__(self, rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0,
                 shear_range=0.0, zoom_range=0.0, horizontal_flip=False, vertical_flip=False,
                 rescale=None, fill_mode="nearest", cval=0.0, featurewise_center=False,
                 featurewise_std_normalization=False, samplewise_center=False,
                 samplewise_std_normalization=False, preprocessing_function=None,
                 validation_split=0.0, dtype="float32"):
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        self.rotation_range = float(rotation_range)
        self.width_shift_range = width_shift_range
        self.height_shift_range = height_shift_range
        self.shear_range = float(shear_range)
        self.zoom_range = _range(zoom_range, "zoom_range", symmetric=False)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.rescale = rescale
        self.fill_mode = fill_mode
        self.cval = float(cval)
        self.featurewise_center = featurewise_center
        self.featurewise_std_normalization = featurewise_std_normalization
        self.samplewise_center = samplewise_center
        self.samplewise_std_normalization = samplewise_std_normalization
        self.preprocessing_function = preprocessing_function
        self.validation_split = float(validation_split)
        self.dtype = np.dtype(dtype)
        self.mean = None
        self.std = None

    # -- random parameters -------------------------------------------------------------
    def get_random_transforms(self, n: int, height: int, width: int, rng: np.random.Generator) -> dict:
        """Draw parameters for ``n`` images: arrays ``theta``, ``tx``, ``ty`` (pixels), ``shear``, ``zx``,
        ``zy``, ``flip_horizontal``, ``flip_vertical``."""
        def shift(rng_value, size):
            lo, hi = _range(rng_value, "shift range")
            if hi == lo == 0:
                return np.zeros(n)
            s = rng.uniform(lo, hi, n)
            return s * size if max(abs(lo), abs(hi)) < 1 else np.rint(s)

        zeros = np.zeros(n)
        zl, zh = self.zoom_range
        params = {
            "theta": rng.uniform(-self.rotation_range, self.rotation_range, n) if self.rotation_range else zeros,
            "tx": shift(self.width_shift_range, width),
            "ty": shift(self.height_shift_range, height),
            "shear": rng.uniform(-self.shear_range, self.shear_range, n) if self.shear_range else zeros,
            "zx": rng.uniform(zl, zh, n) if (zl, zh) != (1.0, 1.0) else np.ones(n),
            "zy": rng.uniform(zl, zh, n) if (zl, zh) != (1.0, 1.0) else np.ones(n),
            "flip_horizontal": rng.random(n) < 0.5 if self.horizontal_flip else np.zeros(n, bool),
            "flip_vertical": rng.random(n) < 0.5 if self.vertical_flip else np.zeros(n, bool),
        }
        return params

    # -- applying them -----------------------------------------------------------------
    def apply_transform(self, x, params: dict) -> np.ndarray:
        """Apply per-image parameters (as from :meth:`get_random_transforms`) to ``x`` (N, H, W, C).

        ``tx`` > 0 moves content right and ``ty`` > 0 down, by that many pixels; ``theta`` turns it
        counter-clockwise (degrees); ``zx``/``zy`` < 1 enlarge it; ``shear`` is an angle in degrees.
        """
        xp = xp_of(x)
        x = xp.asarray(x, dtype=xp.float32)
        n, h, w, _ = x.shape
        get = lambda k, d: np.broadcast_to(np.asarray(params.get(k, d), dtype=np.float64), (n,))
        theta, shear = np.deg2rad(get("theta", 0.0)), np.deg2rad(get("shear", 0.0))
        tx, ty, zx, zy = get("tx", 0.0), get("ty", 0.0), get("zx", 1.0), get("zy", 1.0)
        if np.any(theta) or np.any(shear) or np.any(tx) or np.any(ty) or np.any(zx != 1) or np.any(zy != 1):
            m, offsets = affine_maps(h, w, theta, tx, ty, shear, zx, zy)
            x = affine_batch(x, m, offsets, self.fill_mode, self.cval)
        flip_h = np.flatnonzero(np.asarray(params.get("flip_horizontal", np.zeros(n, bool)), bool))
        flip_v = np.flatnonzero(np.asarray(params.get("flip_vertical", np.zeros(n, bool)), bool))
        if len(flip_h) or len(flip_v):
            x = x.copy()
            flip_h, flip_v = xp.asarray(flip_h), xp.asarray(flip_v)
            x[flip_h] = x[flip_h][:, :, ::-1]
            x[flip_v] = x[flip_v][:, ::-1]
        return x

    def random_transform(self, x, seed=None) -> np.ndarray:
        """Randomly transform a batch (N, H, W, C) or one image (H, W, C)."""
        xp = xp_of(x)
        x = xp.asarray(x, dtype=xp.float32)
        single = x.ndim == 3
        batch = x[None] if single else x
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        out = self.apply_transform(batch, self.get_random_transforms(len(batch), *batch.shape[1:3], rng))
        return out[0] if single else out

    def fit(self, x, augment=False, rounds=1, seed=None) -> None:
        """Compute per-channel mean and std over ``x`` (N, H, W, C) for feature-wise standardisation."""
        x = _as_nhwc(x)
        xp = xp_of(x)
        if augment:
            rng = np.random.default_rng(seed)
            x = xp.concatenate([self.random_transform(x, rng) for _ in range(rounds)])
        if self.rescale:
            x = x * np.float32(self.rescale)
        self.mean = to_numpy(x.mean(axis=(0, 1, 2), keepdims=True)[0]).astype(np.float32)
        self.std = to_numpy(x.std(axis=(0, 1, 2), keepdims=True)[0]).astype(np.float32)

    def standardize(self, x) -> np.ndarray:
        """Rescale, then sample-wise, then feature-wise normalisation of a batch (N, H, W, C)."""
        xp = xp_of(x)
        x = xp.asarray(x, dtype=xp.float32)
        if self.rescale:
            x = x * np.float32(self.rescale)
        if self.samplewise_center:
            x = x - x.mean(axis=(1, 2, 3), keepdims=True)
        if self.samplewise_std_normalization:
            x = x / (x.std(axis=(1, 2, 3), keepdims=True) + 1e-6)
        if self.featurewise_center or self.featurewise_std_normalization:
            if self.mean is None:
                raise RuntimeError("featurewise_center/std_normalization need fit(x) to be called first")
            if self.featurewise_center:
                x = x - xp.asarray(self.mean)
            if self.featurewise_std_normalization:
                x = x / (xp.asarray(self.std) + 1e-6)
        return x

    def _process(self, x, rng, params=None):
        """preprocessing_function, the random transform (``params``, else drawn from ``rng``), standardize."""
        xp = xp_of(x)
        x = xp.asarray(x, dtype=xp.float32)
        if self.preprocessing_function is not None:
            x = xp.stack([xp.asarray(self.preprocessing_function(im), xp.float32) for im in x])
        if params is None:
            params = self.get_random_transforms(len(x), x.shape[1], x.shape[2], rng)
        x = self.apply_transform(x, params)
        return self.standardize(x).astype(self.dtype, copy=False)

    # -- iterators ---------------------------------------------------------------------
    def flow(self, x, y=None, batch_size=32, shuffle=True, seed=None):
        """Endless iterator over augmented batches of ``x`` (N, H, W, C; N, H, W is taken as one channel).

        Yields ``(x_batch, y_batch)``, or ``x_batch`` alone when ``y`` is None; ``len()`` is the
        number of batches per epoch, the last of which may be smaller. Batches are on the device
        of ``x`` (NumPy or CuPy); ``y``'s batches on that of ``y``.
        """
        return NumpyArrayIterator(self, x, y, batch_size, shuffle, seed)

    def flow_from_directory(self, directory, target_size=(256, 256), color_mode="rgb", classes=None,
                            class_mode="categorical", batch_size=32, shuffle=True, seed=None,
                            subset=None, interpolation="nearest"):
        """Endless iterator over images in ``directory``, one sub-folder per class (sorted names).

        ``class_mode``: 'categorical' (one-hot), 'binary' (0/1, two classes), 'sparse' (class index)
        -- all float32 -- or None (images only). ``subset`` 'training'/'validation' uses this
        generator's ``validation_split``, taking the first part of each class as validation.
        """
        return DirectoryIterator(self, directory, target_size, color_mode, classes, class_mode,
                                 batch_size, shuffle, seed, subset, interpolation)

    def flow_from_dataframe(self, dataframe, directory=None, x_col="filename", y_col="class", weight_col=None,
                            target_size=(256, 256), color_mode="rgb", classes=None, class_mode="categorical",
                            batch_size=32, shuffle=True, seed=None, subset=None, interpolation="nearest",
                            validate_filenames=True):
        """Endless iterator over the image files named in column ``x_col`` of a pandas DataFrame
        (relative to ``directory`` when given), labelled by column(s) ``y_col``, as Keras's.

        ``class_mode``: 'categorical' (one-hot; a list of names in a row gives a multi-hot label),
        'binary', 'sparse' (class names as strings; classes sorted unless ``classes`` orders them),
        'raw' (``y_col``'s values as they are), 'multi_output' (one target per column of the list
        ``y_col``), 'input' (the images themselves) or None. ``weight_col`` adds sample weights to
        each batch. ``validate_filenames`` drops (with a warning) rows whose file is missing or not an
        image. ``subset`` takes the first ``validation_split`` of the rows as validation.
        """
        return DataFrameIterator(self, dataframe, directory, x_col, y_col, weight_col, target_size, color_mode,
                                 classes, class_mode, batch_size, shuffle, seed, subset, interpolation,
                                 validate_filenames)


def append_augmented(generator, x, y, count, seed=None, chunk=1024):
    """``x`` and ``y`` with ``count`` randomly transformed copies of randomly picked images of ``x``
    appended, all shuffled together: a data set enlarged once by augmentation, as opposed to
    :meth:`ImageDataGenerator.flow`'s fresh transforms every batch. Reproducible for a seed; ``chunk``
    images are transformed at a time and does not change the result."""
    x = _as_nhwc(x)
    xp = xp_of(x)
    if len(y) != len(x):
        raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
    if count < 0 or (count and not len(x)):
        raise ValueError(f"cannot append {count} augmented images to {len(x)} images")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), count)
    params = generator.get_random_transforms(count, x.shape[1], x.shape[2], rng)
    extra = [generator._process(x[xp.asarray(picks[i:i + chunk])], None,
                                {k: v[i:i + chunk] for k, v in params.items()}) for i in range(0, count, chunk)]
    order = rng.permutation(len(x) + count)
    x_all = xp.concatenate([generator.standardize(x)] + extra)[xp.asarray(order)]
    y_all = xp_of(y).concatenate([y, y[xp_of(y).asarray(picks)]])[xp_of(y).asarray(order)]
    return x_all, y_all


def _as_nhwc(x):
    xp = xp_of(x)
    x = xp.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C) or (N, H, W), got {x.shape}")
    return x.astype(xp.float32, copy=False)


class _BatchIterator:
    """Endless batches over ``n`` samples; reshuffled every epoch from one seeded generator."""

    def __init__(self, n, batch_size, shuffle, seed):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n, self.batch_size, self.shuffle = n, int(batch_size), shuffle
        self.rng = np.random.default_rng(seed)
        self._order = None
        self._pos = 0

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        return self

    def next(self):
        """The next batch: tf.keras 2's spelling of ``next(iterator)``, which Keras 3 dropped."""
        warnings.warn("iterator.next() is tf.keras 2's spelling; Keras 3 has next(iterator)", DeprecationWarning,
                      stacklevel=2)
        return self.__next__()

    def __getitem__(self, index):
        """Batch ``index`` of the current epoch's order, without moving the iterator (as Keras)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"batch index must be an int, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"asked for batch {index} of an iterator with {len(self)} batches")
        index %= len(self)
        if self._order is None:
            self._order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            self._pos = 0
        return self._batch(self._order[index * self.batch_size:(index + 1) * self.batch_size])

    def reset(self):
        """Start a new epoch at the next call."""
        self._order = None

    def get_state(self) -> dict:
        """JSON-serialisable position and generator state: ``set_state`` on a fresh iterator over the
        same data continues with exactly the batches this one would give next (used to resume)."""
        mid_pass = self._order is not None and self._pos < self.n
        return {"rng": self.rng.bit_generator.state, "pos": self._pos if mid_pass else 0,
                "order": self._order.tolist() if mid_pass else None}

    def set_state(self, state: dict) -> None:
        order = state.get("order")
        if order is not None and sorted(order) != list(range(self.n)):
            raise ValueError(f"iterator state is for {len(order)} samples in another order, not these {self.n}")
        self.rng.bit_generator.state = state["rng"]
        self._order = None if order is None else np.asarray(order, dtype=np.int64)
        self._pos = int(state["pos"])

    def __next__(self):
        if self.n == 0:
            raise StopIteration
        if self._order is None or self._pos >= self.n:
            self._order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += len(idx)
        return self._batch(idx)


class NumpyArrayIterator(_BatchIterator):
    """Iterator returned by :meth:`ImageDataGenerator.flow`."""

    def __init__(self, generator, x, y, batch_size=32, shuffle=True, seed=None):
        self.x = _as_nhwc(x)
        if y is not None:
            y = xp_of(y).asarray(y)
            if len(y) != len(self.x):
                raise ValueError(f"x and y have different lengths: {len(self.x)} and {len(y)}")
        self.y, self.generator = y, generator
        super().__init__(len(self.x), batch_size, shuffle, seed)

    def _batch(self, idx):
        xb = self.generator._process(self.x[xp_of(self.x).asarray(idx)], self.rng)
        return xb if self.y is None else (xb, self.y[xp_of(self.y).asarray(idx)])


def _list_class_files(directory, classes=None):
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    if classes is None:
        classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    files, labels = [], []
    for i, name in enumerate(classes):
        folder = directory / name
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {folder} does not exist")
        found = sorted(
            os.path.relpath(os.path.join(root, f), directory)
            for root, _, names in os.walk(folder, followlinks=True) for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS))
        files += found
        labels += [i] * len(found)
    return list(classes), files, np.asarray(labels, dtype=np.int64)


def _resample_methods(Image):
    return {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def load_img(path, color_mode="rgb", target_size=None, interpolation="nearest", keep_aspect_ratio=False):
    """Read an image file (a path or a binary file object) as a PIL image, as Keras's ``load_img``.

    ``color_mode`` 'grayscale', 'rgb' or 'rgba'; ``target_size`` (height, width) resizes with
    ``interpolation`` ('nearest', 'bilinear', 'bicubic', 'lanczos', 'box', 'hamming'), after
    cropping the centre to the target's aspect ratio when ``keep_aspect_ratio``.
    """
    Image = _pil()
    if color_mode not in _COLOR_CHANNELS:
        raise ValueError(f"color_mode must be one of {tuple(_COLOR_CHANNELS)}, got {color_mode!r}")
    methods = _resample_methods(Image)
    if interpolation not in methods:
        raise ValueError(f"interpolation must be one of {tuple(methods)}, got {interpolation!r}")
    if not isinstance(path, (str, os.PathLike)) and not hasattr(path, "read"):
        raise TypeError(f"load_img: path must be a file path or a binary file object, got {type(path).__name__}")
    try:
        with Image.open(path) as im:
            im = im.convert({"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}[color_mode])
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{getattr(path, 'name', path)}: cannot read image ({exc})") from None
    if target_size is not None:
        h, w = (int(v) for v in target_size)
        if im.size != (w, h):
            box = None
            if keep_aspect_ratio:
                cw, ch = min(im.width, round(im.height * w / h)), min(im.height, round(im.width * h / w))
                left, top = (im.width - cw) // 2, (im.height - ch) // 2
                box = (left, top, left + cw, top + ch)
            im = im.resize((w, h), methods[interpolation], box=box)
    return im


def img_to_array(img, data_format=None, dtype="float32") -> np.ndarray:
    """A PIL image as an (H, W, C) array (C = 1 for grayscale), float32 by default."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"img_to_array: only data_format='channels_last' is supported, got {data_format!r}")
    x = np.asarray(img, dtype=np.dtype(dtype or "float32"))
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ValueError(f"img_to_array: expected an image, got an array of shape {x.shape}")
    return x


def array_to_img(x, data_format=None, scale=True, dtype=None):
    """An (H, W, C) array with C in 1, 3 or 4 as a PIL image ('L', 'RGB', 'RGBA'); with ``scale`` the
    values are first mapped linearly onto [0, 255] (minimum to 0, maximum to 255) as Keras does."""
    Image = _pil()
    if data_format not in (None, "channels_last"):
        raise ValueError(f"array_to_img: only data_format='channels_last' is supported, got {data_format!r}")
    x = np.array(to_numpy(x), dtype=np.dtype(dtype or "float32"))
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"array_to_img: expected (H, W, C) with C in 1, 3 or 4, got shape {x.shape}")
    if scale:
        x = x - x.min()
        top = x.max()
        if top != 0:
            x = x / top
        x = x * 255
    pixels = np.clip(x, 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[x.shape[-1]]
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def save_img(path, x, data_format=None, file_format=None, scale=True, **kwargs):
    """Write an (H, W, C) array as an image file (``array_to_img`` then PIL's save; the format
    from ``file_format`` or the file name). Written to a temporary file and renamed into place."""
    from convkit._atomic import atomic_open

    img = array_to_img(x, data_format=data_format, scale=scale)
    fmt = file_format or Path(os.fspath(path)).suffix.lstrip(".").upper() or None
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if img.mode == "RGBA" and fmt == "JPEG":
        warnings.warn("save_img: JPEG has no alpha channel; dropping it", stacklevel=2)
        img = img.convert("RGB")
    with atomic_open(path) as f:
        img.save(f, format=fmt, **kwargs)


def load_image(path, color_mode="rgb", target_size=None, interpolation="nearest") -> np.ndarray:
    """Read one image file as float32 (H, W, C) in [0, 255], converted and optionally resized."""
    return img_to_array(load_img(path, color_mode, target_size, interpolation))


def _split(n_val_fraction, labels, subset):
    """Per-class split: the first ``fraction`` of each class's (sorted) files is validation."""
    if subset is None:
        return np.arange(len(labels))
    if subset not in ("training", "validation"):
        raise ValueError(f"subset must be 'training', 'validation' or None, got {subset!r}")
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cut = int(round(n_val_fraction * len(idx)))
        keep.append(idx[:cut] if subset == "validation" else idx[cut:])
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


class _ImageFileIterator(_BatchIterator):
    """Batches of images read from ``self.filepaths`` as they are needed, then augmented and standardized."""

    def _setup(self, generator, target_size, color_mode, interpolation):
        if color_mode not in _COLOR_CHANNELS:
            raise ValueError(f"color_mode must be one of {tuple(_COLOR_CHANNELS)}, got {color_mode!r}")
        _pil()
        self.generator, self.target_size, self.color_mode = generator, tuple(target_size), color_mode
        self.interpolation = interpolation
        self.image_shape = self.target_size + (_COLOR_CHANNELS[color_mode],)

    def _images(self, idx):
        x = np.stack([load_image(self._filepaths[i], self.color_mode, self.target_size, self.interpolation)
                      for i in idx])
        return self.generator._process(x, self.rng)

    @property
    def filepaths(self) -> list:
        return list(self._filepaths)


def _class_targets(classes, idx, class_mode, num_classes):
    """Labels of batch ``idx`` as Keras gives them: one-hot (several ones for a multi-label row) for
    'categorical', the class index for 'binary' and 'sparse'; float32."""
    if class_mode != "categorical":
        return np.asarray([classes[i] for i in idx], dtype=np.float32)
    y = np.zeros((len(idx), num_classes), np.float32)
    for row, i in enumerate(idx):
        y[row, classes[i]] = 1.0
    return y


class DirectoryIterator(_ImageFileIterator):
    """Iterator returned by :meth:`ImageDataGenerator.flow_from_directory`."""

    def __init__(self, generator, directory, target_size=(256, 256), color_mode="rgb", classes=None,
                 class_mode="categorical", batch_size=32, shuffle=True, seed=None, subset=None,
                 interpolation="nearest"):
        if class_mode not in ("categorical", "binary", "sparse", None):
            raise ValueError(f"class_mode must be 'categorical', 'binary', 'sparse' or None, got {class_mode!r}")
        self._setup(generator, target_size, color_mode, interpolation)
        self.directory, self.class_mode = Path(directory), class_mode
        names, files, labels = _list_class_files(directory, classes)
        if class_mode == "binary" and len(names) != 2:
            raise ValueError(f"class_mode='binary' needs exactly 2 classes, found {len(names)}: {names}")
        if subset is not None and generator.validation_split == 0:
            raise ValueError("subset needs an ImageDataGenerator with validation_split > 0")
        keep = _split(generator.validation_split, labels, subset)
        self.filenames = [files[i] for i in keep]
        self._filepaths = [str(self.directory / f) for f in self.filenames]
        self.classes = labels[keep]
        self.class_indices = {name: i for i, name in enumerate(names)}
        self.num_classes = len(names)
        self.samples = len(self.filenames)
        super().__init__(self.samples, batch_size, shuffle, seed)
        print(f"Found {self.samples} images belonging to {self.num_classes} classes.")

    @property
    def labels(self) -> np.ndarray:
        return self.classes

    def _batch(self, idx):
        x = self._images(idx)
        if self.class_mode is None:
            return x
        return x, _class_targets(self.classes, idx, self.class_mode, self.num_classes)


_DATAFRAME_CLASS_MODES = ("categorical", "binary", "sparse", "input", "multi_output", "raw", None)


class DataFrameIterator(_ImageFileIterator):
    """Iterator returned by :meth:`ImageDataGenerator.flow_from_dataframe`."""

    def __init__(self, generator, dataframe, directory=None, x_col="filename", y_col="class", weight_col=None,
                 target_size=(256, 256), color_mode="rgb", classes=None, class_mode="categorical",
                 batch_size=32, shuffle=True, seed=None, subset=None, interpolation="nearest",
                 validate_filenames=True):
        if class_mode not in _DATAFRAME_CLASS_MODES:
            raise ValueError(f"class_mode must be one of {_DATAFRAME_CLASS_MODES}, got {class_mode!r}")
        if class_mode == "multi_output" and not isinstance(y_col, list):
            raise TypeError(f"class_mode='multi_output' needs y_col to be a list of columns, got {y_col!r}")
        if subset is not None and generator.validation_split == 0:
            raise ValueError("subset needs an ImageDataGenerator with validation_split > 0")
        self._setup(generator, target_size, color_mode, interpolation)
        self.directory, self.class_mode = directory or "", class_mode
        files = _column(dataframe, x_col)
        if not all(isinstance(f, str) for f in files):
            raise TypeError(f"all values in column x_col={x_col!r} must be strings (file names)")
        ys = [_column(dataframe, c) for c in y_col] if isinstance(y_col, list) else [_column(dataframe, y_col)]
        weights = _column(dataframe, weight_col) if weight_col else None
        rows = list(range(len(files)))
        if validate_filenames:
            rows = self._valid_files(files, rows, x_col)
        is_class_mode = class_mode in ("categorical", "binary", "sparse")
        if is_class_mode:
            rows, names = self._known_classes(ys[0], rows, classes, y_col)
            self.class_indices = {name: i for i, name in enumerate(names)}
            self.num_classes = len(names)
        elif classes:
            warnings.warn(f"classes is ignored with class_mode={class_mode!r}", stacklevel=3)
        if subset is not None:  # as Keras: the first validation_split of the rows is the validation set
            cut = int(generator.validation_split * len(rows))
            rows = rows[:cut] if subset == "validation" else rows[cut:]
        self.filenames = [files[r] for r in rows]
        self._filepaths = [os.path.join(self.directory, f) for f in self.filenames]
        self.samples = len(rows)
        if is_class_mode:
            self.classes = [self._index(ys[0][r]) for r in rows]
        if class_mode in ("raw", "multi_output"):
            self._targets = [np.asarray([y[r] for r in rows]) for y in ys]
        self._sample_weight = None if weights is None else np.asarray([weights[r] for r in rows], np.float32)
        super().__init__(self.samples, batch_size, shuffle, seed)
        validated = "validated" if validate_filenames else "non-validated"
        belonging = f" belonging to {self.num_classes} classes" if is_class_mode else ""
        print(f"Found {self.samples} {validated} image filenames{belonging}.")

    def _valid_files(self, files, rows, x_col):
        ok = [r for r in rows if files[r].lower().endswith(IMAGE_EXTENSIONS)
              and os.path.isfile(os.path.join(self.directory, files[r]))]
        if len(ok) < len(rows):
            warnings.warn(f"Found {len(rows) - len(ok)} invalid image filename(s) in x_col={x_col!r}. "
                          "These filename(s) will be ignored.", stacklevel=4)
        return ok

    def _known_classes(self, labels, rows, classes, y_col):
        """Rows whose label (or, for multi-label rows, some label) is among ``classes``, and the class
        names: ``classes`` in the given order, else every label found, sorted."""
        def names_of(label):
            if isinstance(label, (list, tuple)) and self.class_mode == "categorical":
                return list(label)
            if isinstance(label, str):
                return [label]
            kinds = "strings, lists or tuples" if self.class_mode == "categorical" else "strings"
            raise TypeError(f"class_mode={self.class_mode!r} needs y_col={y_col!r} values to be {kinds}, "
                            f"got {label!r}")
        found = {r: names_of(labels[r]) for r in rows}
        names = list(dict.fromkeys(classes)) if classes else sorted({n for ns in found.values() for n in ns})
        if self.class_mode == "binary" and len(names) != 2:
            raise ValueError(f"class_mode='binary' needs exactly 2 classes, found {len(names)}: {names}")
        known = set(names)
        return [r for r in rows if known.intersection(found[r])], names

    def _index(self, label):
        if isinstance(label, (list, tuple)):
            return [self.class_indices[n] for n in label if n in self.class_indices]
        return self.class_indices[label]

    @property
    def labels(self):
        if self.class_mode in ("raw", "multi_output"):
            return self._targets[0] if self.class_mode == "raw" else self._targets
        return getattr(self, "classes", None)

    @property
    def sample_weight(self):
        return self._sample_weight

    def _batch(self, idx):
        x = self._images(idx)
        if self.class_mode is None:
            y = None
        elif self.class_mode == "input":
            y = x.copy()
        elif self.class_mode == "raw":
            y = self._targets[0][idx]
        elif self.class_mode == "multi_output":
            y = [t[idx] for t in self._targets]
        else:
            y = _class_targets(self.classes, idx, self.class_mode, self.num_classes)
        if y is None:
            return x
        return (x, y) if self._sample_weight is None else (x, y, self._sample_weight[idx])


def _column(dataframe, name) -> list:
    """A column of a pandas DataFrame (or of any mapping of column names to sequences) as a list."""
    try:
        column = dataframe[name]
    except (KeyError, IndexError, TypeError):
        raise KeyError(f"the dataframe has no column {name!r}") from None
    return column.tolist() if hasattr(column, "tolist") else list(column)


class ImageDataset(Dataset):
    """The :class:`convkit.data.Dataset` of ``(images, labels)`` batches that
    :func:`image_dataset_from_directory` returns, with ``class_names`` and ``file_paths``.

    Each pass yields float32 images in [0, 255] of shape (B, H, W, C), read from disk as it goes;
    with ``shuffle`` the order changes every pass, reproducibly for a given seed.
    """

    def __init__(self, directory, files, labels, class_names, label_mode, color_mode, image_size,
                 batch_size, shuffle, seed, interpolation):
        self.directory, self.file_paths = Path(directory), [str(Path(directory) / f) for f in files]
        self.labels, self.class_names = labels, class_names
        self.label_mode, self.color_mode, self.image_size = label_mode, color_mode, tuple(image_size)
        self.batch_size, self.seed, self.interpolation = batch_size, seed, interpolation
        self._shuffle_files = shuffle
        self._epoch = 0
        self._entropy = np.random.SeedSequence(seed).entropy
        super().__init__(self._batches, math.ceil(len(self.file_paths) / batch_size))

    def _batches(self):
        n = len(self.file_paths)
        if self._shuffle_files:
            order = np.random.default_rng([self._entropy, self._epoch]).permutation(n)
        else:
            order = np.arange(n)
        self._epoch += 1
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = np.stack([load_image(self.file_paths[i], self.color_mode, self.image_size, self.interpolation)
                          for i in idx])
            if self.label_mode is None:
                yield x
                continue
            y = self.labels[idx]
            if self.label_mode == "categorical":
                y = np.eye(len(self.class_names), dtype=np.float32)[y]
            elif self.label_mode == "binary":
                y = y.astype(np.float32)[:, None]
            else:
                y = y.astype(np.int32)
            yield x, y


def image_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None,
                                 color_mode="rgb", batch_size=32, image_size=(256, 256), shuffle=True,
                                 seed=None, validation_split=None, subset=None, interpolation="bilinear",
                                 verbose=True):
    """Dataset of image batches from ``directory`` with one sub-folder per class, like Keras's function.

    ``label_mode``: 'int' (int32 indices), 'categorical' (float32 one-hot), 'binary' (float32 of shape
    (B, 1), two classes) or None. With ``validation_split``, the file list is shuffled once with
    ``seed`` (required) and its last fraction is 'validation', the rest 'training'; ``subset='both'``
    returns ``(training, validation)``. Prints what it found, as Keras does, unless ``verbose=False``.
    """
    say = print if verbose else (lambda *a: None)
    if labels != "inferred":
        raise ValueError("only labels='inferred' (one sub-folder per class) is supported")
    if label_mode not in ("int", "categorical", "binary", None):
        raise ValueError(f"label_mode must be 'int', 'categorical', 'binary' or None, got {label_mode!r}")
    if color_mode not in _COLOR_CHANNELS:
        raise ValueError(f"color_mode must be one of {tuple(_COLOR_CHANNELS)}, got {color_mode!r}")
    _pil()
    names, files, y = _list_class_files(directory, class_names)
    if label_mode == "binary" and len(names) != 2:
        raise ValueError(f"label_mode='binary' needs exactly 2 classes, found {len(names)}: {names}")
    say(f"Found {len(files)} files belonging to {len(names)} classes.")
    make = lambda sel, shuf: ImageDataset(directory, [files[i] for i in sel], y[sel], names, label_mode,
                                          color_mode, image_size, batch_size, shuf, seed, interpolation)
    if not validation_split:
        if subset is not None:
            raise ValueError("subset needs validation_split")
        return make(np.arange(len(files)), shuffle)
    if not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
    if subset not in ("training", "validation", "both"):
        raise ValueError("with validation_split, subset must be 'training', 'validation' or 'both'")
    if seed is None:
        raise ValueError("validation_split needs a seed so that both subsets see the same split")
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = int(validation_split * len(files))
    train_sel, val_sel = order[:len(files) - n_val], order[len(files) - n_val:]
    if subset == "training":
        say(f"Using {len(train_sel)} files for training.")
        return make(train_sel, shuffle)
    if subset == "validation":
        say(f"Using {len(val_sel)} files for validation.")
        return make(val_sel, False)
    say(f"Using {len(train_sel)} files for training.")
    say(f"Using {len(val_sel)} files for validation.")
    return make(train_sel, shuffle), make(val_sel, False)
