"""Shared loader for the MNIST-like datasets stored as four IDX files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from convkit.datasets import _common
from convkit.datasets._formats import idx_sha256, parse_idx

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


@dataclass
class IdxDataset:
    title: str
    cache_name: str
    npz_name: str  # the single-file form a user may have (Keras's file name)
    raw_sha256: dict[str, str]  # key -> SHA-256 of the official uncompressed IDX file
    sources: list = field(default_factory=list)  # (label, callable(verify)) tried in order after the cache
    extra_file_readers: dict[str, Callable] = field(default_factory=dict)  # suffix -> reader(path)
    how_to_supply: str = ""

    def check(self, data: tuple, origin) -> tuple:
        """Check shapes, dtypes and that each array reproduces the official IDX file byte for byte."""
        (xtr, ytr), (xte, yte) = data
        for key, a in zip(("x_train", "y_train", "x_test", "y_test"), (xtr, ytr, xte, yte)):
            if a.dtype != np.uint8 or a.shape != SHAPES[key]:
                raise ValueError(f"{origin}: {key} is {a.dtype} {a.shape}, expected uint8 {SHAPES[key]}")
            got = idx_sha256(a)
            if got != self.raw_sha256[key]:
                raise ValueError(
                    f"{origin}: {key} has SHA-256 {got} (as IDX), expected the official {self.raw_sha256[key]}; "
                    "the data is corrupt or not the official release (verify=False skips this check)")
        return data

    def read_folder(self, folder: Path, verify: bool):
        """Read the four IDX files (each raw or .gz) or the single .npz from ``folder``; None if absent."""
        npz = folder / self.npz_name
        if npz.is_file():
            return self.read_file(npz, verify)
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (folder / (stem + ".gz"), folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if not found:
            return None
        missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (raw or .gz)")
        arrays = {}
        for key, p in found.items():
            arrays[key] = parse_idx(p.read_bytes(), str(p), ndim=len(SHAPES[key]))
        data = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
        if verify:
            return self.check(data, folder)
        _check_pairs(data, folder)
        return data

    def read_file(self, path: Path, verify: bool):
        name = path.name.lower()
        for suffix, reader in self.extra_file_readers.items():
            if name.endswith(suffix):
                data = reader(path)
                break
        else:
            if name.endswith(".npz"):
                data = _common.read_npz(path, SHAPES if verify else {})
            else:
                raise ValueError(f"{path}: unrecognised file; expected a folder of IDX files or a .npz")
        if verify:
            return self.check(data, path)
        _check_pairs(data, path)
        return data

    def read_path(self, path: Path, verify: bool):
        if path.is_dir():
            data = self.read_folder(path, verify)
            if data is None:
                raise FileNotFoundError(f"{path}: no {self.title} files ({', '.join(IDX_FILES.values())})")
            return data
        return self.read_file(path, verify)

    def read_cache(self, path: Path):
        return self.check(_common.read_npz(path, SHAPES), path)

    def load(self, path, verify: bool):
        sources = [(label, (lambda fn=fn: fn(verify))) for label, fn in self.sources]
        return _common.load_with_fallbacks(
            self.title, self.cache_name, path, verify, self.read_path, sources, self.read_cache,
            self.how_to_supply)

    def download_idx(self, base_url: str, verify: bool):
        """Fetch the four .gz files from ``base_url`` and decode them."""
        tmp_dir = _common.cache_dir()
        arrays = {}
        for key, stem in IDX_FILES.items():
            p = _common.download(base_url + stem + ".gz", tmp_dir)
            try:
                arrays[key] = parse_idx(p.read_bytes(), base_url + stem + ".gz", ndim=len(SHAPES[key]))
            finally:
                p.unlink()
        data = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
        return self.check(data, base_url) if verify else data


def _check_pairs(data, origin) -> None:
    """Minimal sanity for unverified data: images and labels agree in count, images are uint8 N x H x W."""
    for x, y in data:
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{origin}: images {x.dtype} {x.shape} and labels {y.dtype} {y.shape} do not pair up")
