"""CIFAR-10: 50,000 training and 10,000 test colour images, 32x32, 10 classes."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np

from convkit.datasets import _common
from convkit.datasets._formats import parse_cifar_binary, parse_cifar_pickle

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Official MD5s from the CIFAR page (also used by torchvision); SHA-256 of the python archive as Keras checks it.
PYTHON_ARCHIVE = {"md5": "c58f30108f718f92721af3b95e74349a",
                  "sha256": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}
BINARY_ARCHIVE = {"md5": "c32a1d4ab5d03f1284b67883e8d87530"}
PYTHON_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
PY_DIR, BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
SHAPES = {"x_train": (50000, 32, 32, 3), "y_train": (50000, 1), "x_test": (10000, 32, 32, 3), "y_test": (10000, 1)}
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _assemble(batches: dict, verify: bool, origin) -> tuple:
    x_train = np.concatenate([batches[n][0] for n in TRAIN])
    y_train = np.concatenate([batches[n][1] for n in TRAIN]).reshape(-1, 1)
    x_test, y_test = batches["test_batch"]
    data = (x_train, y_train), (x_test, y_test.reshape(-1, 1))
    if verify:
        for key, a in zip(SHAPES, (x_train, data[0][1], x_test, data[1][1])):
            if a.shape != SHAPES[key]:
                raise ValueError(f"{origin}: {key} has shape {a.shape}, expected {SHAPES[key]}")
    return data


def read_archive(path: Path, verify: bool) -> tuple:
    """Read the python or binary ``.tar.gz`` without extracting it to disk."""
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({exc})") from None
    with tf:
        try:
            members = {m.name.lstrip("./"): m for m in tf.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated tar archive ({exc})") from None
        if f"{PY_DIR}/data_batch_1" in members:
            layout, names, parse, digests = PY_DIR, TRAIN + ["test_batch"], parse_cifar_pickle, PYTHON_ARCHIVE
        elif f"{BIN_DIR}/data_batch_1.bin" in members:
            layout, names, parse, digests = BIN_DIR, [n + ".bin" for n in TRAIN + ["test_batch"]], \
                parse_cifar_binary, BINARY_ARCHIVE
        else:
            raise ValueError(f"{path}: no {PY_DIR}/data_batch_1 or {BIN_DIR}/data_batch_1.bin inside; "
                             "not a CIFAR-10 archive")
        if verify:
            _common.check_file_digests(path, digests, "CIFAR-10 archive")
        batches = {}
        for name in names:
            member = members.get(f"{layout}/{name}")
            if member is None:
                raise ValueError(f"{path}: archive lacks {layout}/{name}")
            try:
                blob = tf.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"{path}: corrupt or truncated member {layout}/{name} ({exc})") from None
            batches[name.removesuffix(".bin")] = parse(blob, f"{path}!{layout}/{name}")
    return _assemble(batches, verify, path)


def read_python_folder(folder: Path, verify: bool) -> tuple:
    batches = {}
    for name in TRAIN + ["test_batch"]:
        p = folder / name
        if not p.is_file():
            raise FileNotFoundError(f"{folder}: missing {name}")
        if verify:
            _common.check_file_digests(p, {"md5": PYTHON_BATCH_MD5[name]}, f"CIFAR-10 {name}")
        batches[name] = parse_cifar_pickle(p.read_bytes(), str(p))
    return _assemble(batches, verify, folder)


def read_binary_folder(folder: Path, verify: bool) -> tuple:
    if verify:
        raise ValueError(
            f"{folder}: no official digests exist for the extracted binary batches, so they cannot be "
            "verified; pass cifar-10-binary.tar.gz itself, or verify=False to load them unchecked")
    batches = {}
    for name in TRAIN + ["test_batch"]:
        p = folder / (name + ".bin")
        if not p.is_file():
            raise FileNotFoundError(f"{folder}: missing {name}.bin")
        batches[name] = parse_cifar_binary(p.read_bytes(), str(p))
    return _assemble(batches, verify, folder)


def _read_folder(folder: Path, verify: bool):
    for sub in (PY_DIR, BIN_DIR):
        if (folder / sub).is_dir():
            return _read_folder(folder / sub, verify)
    if (folder / "data_batch_1").is_file():
        return read_python_folder(folder, verify)
    if (folder / "data_batch_1.bin").is_file():
        return read_binary_folder(folder, verify)
    for name in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"):
        if (folder / name).is_file():
            return read_archive(folder / name, verify)
    return None


def _read_path(path: Path, verify: bool):
    if path.is_dir():
        data = _read_folder(path, verify)
        if data is None:
            raise FileNotFoundError(f"{path}: no CIFAR-10 files ({PY_DIR}/, {BIN_DIR}/ or their .tar.gz)")
        return data
    if path.name.lower().endswith(".npz"):
        if verify:
            raise ValueError(f"{path}: a .npz cannot be checked against the official digests; "
                             "pass verify=False to load it unchecked")
        return _common.read_npz(path, {})
    return read_archive(path, verify)


def _read_cache(path: Path):
    return _common.read_npz(path, SHAPES)


def _download(verify: bool):
    p = _common.download(URL, _common.cache_dir(), PYTHON_ARCHIVE if verify else None)
    try:
        return read_archive(p, verify=False)  # the download itself was just checked
    finally:
        p.unlink()


def load_data(path=None, *, verify: bool = True):
    """Load CIFAR-10 as ``((x_train, y_train), (x_test, y_test))``.

    ``x`` is uint8 of shape (N, 32, 32, 3) and ``y`` uint8 of shape (N, 1) with N = 50000 / 10000,
    as Keras returns them. ``path`` may be ``cifar-10-python.tar.gz`` or ``cifar-10-binary.tar.gz``,
    or a folder holding either archive or the extracted ``cifar-10-batches-py`` /
    ``cifar-10-batches-bin``; when given, nothing else is tried. Without it the lookup is
    ``$CONVKIT_DATA``, the cache, then the official download. Files are checked against the official
    MD5/SHA-256 digests unless ``verify=False`` (unverified data is never cached). Pickled batches are
    read with an unpickler that admits only plain containers and NumPy arrays.
    """
    return _common.load_with_fallbacks(
        "CIFAR-10", "cifar10", path, verify, _read_path, [(f"download {URL}", lambda: _download(verify))],
        _read_cache,
        "Download cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html "
        "and pass it with load_data(path=...), or put it (or its extracted folder) in the folder named by "
        "$CONVKIT_DATA.")
