"""Parsers for the on-disk formats of the bundled datasets.

Every parser takes bytes plus a ``name`` (the file it came from) and raises
``ValueError`` naming that file and the problem when the data is malformed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import zlib

import numpy as np

# IDX type codes (third magic byte) and the big-endian dtype each stands for.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def maybe_gunzip(data: bytes, name: str) -> bytes:
    """Decompress ``data`` when it starts with the gzip magic; pass it through otherwise."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{name}: corrupt or truncated gzip stream ({exc})") from None


def parse_idx(data: bytes, name: str, ndim: int | None = None) -> np.ndarray:
    """Decode an IDX file (raw or gzip) into a native-endian array."""
    data = maybe_gunzip(data, name)
    if len(data) < 4:
        raise ValueError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{name}: bad IDX magic number 0x{data[:4].hex()}")
    if rank == 0 or (ndim is not None and rank != ndim):
        raise ValueError(f"{name}: IDX file has {rank} dimensions, expected {ndim}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{rank}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise ValueError(f"{name}: truncated IDX data: header promises {expected} bytes, file holds {found}")
    if found > expected:
        raise ValueError(f"{name}: {found - expected} unexpected trailing bytes after the IDX data")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as an uncompressed IDX file (the inverse of :func:`parse_idx`)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError("only uint8 arrays are encoded")
    head = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def idx_sha256(arr: np.ndarray) -> str:
    """SHA-256 of ``arr`` written as an uncompressed IDX file: the digest of the official raw file."""
    return hashlib.sha256(idx_bytes(arr)).hexdigest()


# ---------------------------------------------------------------------------
# Restricted unpickling. The official CIFAR-10 batches and the classic
# mnist.pkl.gz are Python 2 pickles of dicts/tuples/lists holding NumPy arrays;
# rebuilding those needs exactly these three globals. Recent NumPy moved
# multiarray to numpy._core, so both spellings of the one function are allowed.
try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # NumPy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Forbidden(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Forbidden(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid):
        raise _Forbidden("persistent references are not allowed")


def restricted_unpickle(data: bytes, name: str):
    """Unpickle ``data`` allowing only plain containers, strings, numbers and NumPy arrays."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Forbidden as exc:
        raise ValueError(f"{name}: refused pickle: {exc}") from None
    except Exception as exc:  # truncated or garbled streams raise many different types
        raise ValueError(f"{name}: malformed or truncated pickle ({type(exc).__name__}: {exc})") from None


def _str_keys(obj: dict, name: str) -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str):
            raise ValueError(f"{name}: unexpected key {key!r}")
        out[key] = value
    return out


def _labels(values, n: int, name: str, num_classes: int) -> np.ndarray:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, list) or len(values) != n or not all(type(v) is int for v in values):
        raise ValueError(f"{name}: labels must be a list of {n} integers")
    y = np.asarray(values, dtype=np.int64)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name}: labels outside 0..{num_classes - 1}")
    return y.astype(np.uint8)


def parse_cifar_pickle(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 python-version batch into ``x`` (N, 32, 32, 3) uint8 and ``y`` (N,) uint8."""
    obj = restricted_unpickle(data, name)
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a pickled dict, found {type(obj).__name__}")
    obj = _str_keys(obj, name)
    for key in ("data", "labels"):
        if key not in obj:
            raise ValueError(f"{name}: missing key {key!r}")
    x = obj["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: 'data' must be a uint8 array of shape (N, 3072), found {desc}")
    y = _labels(obj["labels"], x.shape[0], name, 10)
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y


CIFAR_RECORD = 1 + 3 * 32 * 32


def parse_cifar_binary(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 binary-version batch (3073-byte records: label, then R, G, B planes)."""
    if not data or len(data) % CIFAR_RECORD:
        raise ValueError(
            f"{name}: size {len(data)} is not a positive multiple of the {CIFAR_RECORD}-byte CIFAR-10 record")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = rec[:, 0].copy()
    if y.max() > 9:
        raise ValueError(f"{name}: label byte {int(y.max())} outside 0..9; not a CIFAR-10 binary batch")
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return x, y
