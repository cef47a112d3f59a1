"""Lookup, verification, download and caching shared by the dataset loaders."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from convkit._atomic import atomic_open

DOWNLOAD_TIMEOUT_S = 10
_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataUnavailableError(OSError):
    """No source of a dataset could be used; the message lists every place tried and why."""


def cache_dir() -> Path:
    """Folder for decoded datasets: ``$XDG_CACHE_HOME/convkit``, else ``~/.cache/convkit``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convkit"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file_digests(path: Path, expected: dict[str, str], what: str) -> None:
    """Raise ValueError unless every ``{algorithm: hexdigest}`` in ``expected`` matches the file."""
    for algorithm, want in expected.items():
        got = file_digest(path, algorithm)
        if got != want:
            raise ValueError(
                f"{path}: {algorithm} {got} does not match the official {what} ({want}); "
                "the file is corrupt or not the official one (verify=False skips this check)")


def read_npz(path: Path, shapes: dict[str, tuple]) -> tuple:
    """Read a Keras-style ``.npz`` (x_train, y_train, x_test, y_test) and check shapes and dtypes."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _SPLIT_KEYS}
    except KeyError as exc:
        raise ValueError(f"{path}: missing array {exc}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    for key, shape in shapes.items():
        a = arrays[key]
        if a.dtype != np.uint8 or a.shape != shape:
            raise ValueError(f"{path}: {key} is {a.dtype} {a.shape}, expected uint8 {shape}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def write_npz_atomic(path: Path, data: tuple) -> None:
    """Write the four arrays to ``path`` through a temporary file so readers never see half a file."""
    (x_train, y_train), (x_test, y_test) = data
    with atomic_open(path) as f:
        np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def download(url: str, dest_dir: Path, digests: dict[str, str] | None = None) -> Path:
    """Fetch ``url`` into a temporary file under ``dest_dir``; check ``digests`` (algorithm: hex) if given.

    The caller deletes the returned file when done with it.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".download")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        if digests:
            check_file_digests(Path(tmp), digests, f"download {url}")
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


Source = tuple[str, Callable[[], "tuple | None"]]


def load_with_fallbacks(title: str, cache_name: str, path, verify: bool,
                        read_path: Callable, sources: list[Source], read_cache: Callable,
                        how_to_supply: str) -> tuple:
    """Shared lookup: explicit path only; else $CONVKIT_DATA, cache, then ``sources`` in order.

    Each source returns the data, returns None when it has nothing, or raises with the reason.
    Data from a verified source is written to the cache.
    """
    if path is not None:
        p = Path(os.fspath(path)).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{title}: {p} does not exist")
        data = read_path(p, verify)
        if verify:
            _try_cache(cache_name, data)
        return data

    tried: list[tuple[str, str]] = []
    plan: list[Source] = []
    env = os.environ.get("CONVKIT_DATA")
    if env:
        root = Path(env).expanduser()
        for folder in (root / cache_name, root):
            plan.append((f"$CONVKIT_DATA folder {folder}",
                         lambda folder=folder: read_path(folder, verify) if folder.is_dir() else None))
    else:
        tried.append(("$CONVKIT_DATA", "not set"))
    cached = cache_dir() / f"{cache_name}.npz"
    plan.append((f"cache {cached}", lambda: read_cache(cached) if cached.is_file() else None))
    plan.extend(sources)

    for label, fn in plan:
        try:
            data = fn()
        except Exception as exc:  # any failure of one source moves on to the next
            tried.append((label, f"{type(exc).__name__}: {exc}"))
            continue
        if data is None:
            tried.append((label, "no files found"))
            continue
        if verify and not label.startswith("cache "):
            _try_cache(cache_name, data)
        return data

    lines = "\n".join(f"  - {where}: {why}" for where, why in tried)
    raise DataUnavailableError(f"could not load {title}. Tried:\n{lines}\n{how_to_supply}")


def _try_cache(cache_name: str, data: tuple) -> None:
    try:
        write_npz_atomic(cache_dir() / f"{cache_name}.npz", data)
    except OSError:
        pass  # an unwritable cache only costs speed
