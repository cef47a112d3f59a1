"""Fuzzing every file parser with random bytes and with mutations of valid files.

A parser may only ever refuse bad bytes with ValueError (its subclasses included, e.g.
json.JSONDecodeError); any other exception type, a crash or a hang is a bug. Valid files are
small synthetic ones in each official format. CONVKIT_FUZZ_EXAMPLES raises the number of
examples per target (default 100, a few seconds each).
"""

import gzip
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import convkit
from convkit import layers as L
from convkit.datasets import cifar10
from convkit.datasets._formats import idx_bytes, parse_cifar_binary, parse_cifar_pickle, parse_idx
from test_datasets import binary_version_files, cifar_batch, cifar_records, python_version_files, synthetic_cifar, \
    write_tar

EXAMPLES = int(os.environ.get("CONVKIT_FUZZ_EXAMPLES", "100"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_rng = np.random.default_rng(7)
IDX_IMAGES = idx_bytes(_rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
IDX_LABELS = idx_bytes(_rng.integers(0, 10, 5).astype(np.uint8))
_xs, _ys, _xt, _yt = synthetic_cifar(_rng, n_train=2, n_test=2)
CIFAR_PICKLE = cifar_batch(_xs[0], _ys[0])
CIFAR_BINARY = cifar_records(_xs[0], _ys[0])


@st.composite
def mutated(draw, blob: bytes):
    """``blob`` after one to four random edits: bit flips, overwrites, truncation, insertion, deletion."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


def refuses_cleanly(parse, blob):
    """``parse(blob)`` returns or raises ValueError; anything else fails the test."""
    try:
        parse(blob)
    except ValueError:
        pass


# --------------------------------------------------------------------------------------------
# IDX (raw and gzip)

@fuzz
@given(st.one_of(st.binary(max_size=64), mutated(IDX_IMAGES), mutated(gzip.compress(IDX_IMAGES)),
                 mutated(IDX_LABELS), mutated(gzip.compress(IDX_LABELS))))
@example(b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")  # a header promising 2^96 bytes
@example(b"\x1f\x8b")  # a gzip magic and nothing else
def test_idx_parser(blob):
    refuses_cleanly(lambda b: parse_idx(b, "fuzz"), blob)


# --------------------------------------------------------------------------------------------
# CIFAR-10 batches and archives

@fuzz
@given(st.one_of(st.binary(max_size=64), mutated(CIFAR_PICKLE)))
@example(b"\x80\x02cos\nsystem\nq\x00.")  # a global the restricted unpickler must refuse
def test_cifar_pickle_batch(blob):
    refuses_cleanly(lambda b: parse_cifar_pickle(b, "fuzz"), blob)


@fuzz
@given(st.one_of(st.binary(max_size=64), mutated(CIFAR_BINARY)))
def test_cifar_binary_batch(blob):
    refuses_cleanly(lambda b: parse_cifar_binary(b, "fuzz"), blob)


def _archive_bytes(files) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.tar.gz"
        write_tar(path, files)
        return path.read_bytes()


PY_ARCHIVE = _archive_bytes(python_version_files(_xs, _ys, _xt, _yt))
BIN_ARCHIVE = _archive_bytes(binary_version_files(_xs, _ys, _xt, _yt))


@fuzz
@given(st.one_of(st.binary(max_size=64), mutated(PY_ARCHIVE), mutated(BIN_ARCHIVE)))
def test_cifar_archive(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cifar-10-python.tar.gz"
        path.write_bytes(blob)
        refuses_cleanly(lambda _: cifar10.read_archive(path, verify=False), blob)


# --------------------------------------------------------------------------------------------
# Model files

def _model_bytes() -> bytes:
    convkit.set_random_seed(0)
    model = convkit.Sequential([L.Input(shape=(6, 6, 1)), L.Conv2D(2, 3, activation="relu"), L.MaxPooling2D(2),
                                L.BatchNormalization(), L.Flatten(), L.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.ones((4, 6, 6, 1), np.float32), np.arange(4) % 3, verbose=0)
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "m.convkit")
        return (Path(d) / "m.convkit").read_bytes()


MODEL = _model_bytes()


@fuzz
@given(st.one_of(st.binary(max_size=64), mutated(MODEL)))
def test_model_file(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.convkit"
        path.write_bytes(blob)
        refuses_cleanly(lambda _: convkit.load_model(path), blob)


def test_the_valid_files_parse():
    """The seeds of the mutations are valid, so the fuzzing starts from files the parsers accept."""
    assert parse_idx(IDX_IMAGES, "seed").shape == (3, 28, 28)
    assert parse_cifar_pickle(CIFAR_PICKLE, "seed")[0].shape == (2, 32, 32, 3)
    assert parse_cifar_binary(CIFAR_BINARY, "seed")[1].shape == (2,)
    with tempfile.TemporaryDirectory() as d:
        for blob in (PY_ARCHIVE, BIN_ARCHIVE):
            (Path(d) / "a.tar.gz").write_bytes(blob)
            assert cifar10.read_archive(Path(d) / "a.tar.gz", verify=False)[0][0].shape == (10, 32, 32, 3)
        (Path(d) / "m.convkit").write_bytes(MODEL)
        assert convkit.load_model(Path(d) / "m.convkit").count_params() > 0


def test_the_harness_lets_other_exceptions_through():
    with pytest.raises(KeyError):
        refuses_cleanly(lambda b: {}[b], b"a parser bug")


def _entries(blob: bytes) -> dict:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.convkit").write_bytes(blob)
        with zipfile.ZipFile(Path(d) / "m.convkit") as zf:
            return {n: zf.read(n) for n in zf.namelist()}


MODEL_ENTRIES = _entries(MODEL)
MODEL_META = json.loads(MODEL_ENTRIES["convkit.json"])


def _paths(node, path=()):
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, path + (key,))


META_PATHS = list(_paths(MODEL_META))[1:]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(), st.text(max_size=4),
                 st.just([]), st.just({}), st.lists(st.integers(0, 3), max_size=3), st.just({"a": 1}))


@fuzz
@given(st.sampled_from(META_PATHS), JUNK, st.booleans())
def test_model_description(path, junk, delete):
    """An intact zip whose JSON description says the wrong things (the CRCs stop byte-level
    mutations from reaching this far): replace any node by junk, or delete it."""
    meta = json.loads(json.dumps(MODEL_META))
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "m.convkit"
        with zipfile.ZipFile(target, "w") as zf:
            for name, data in {**MODEL_ENTRIES, "convkit.json": json.dumps(meta).encode()}.items():
                zf.writestr(name, data)
        refuses_cleanly(lambda _: convkit.load_model(target), b"")


@pytest.mark.parametrize("offset,value", [(10, 99), (8, 1)], ids=["unknown-compression-method", "encrypted-flag"])
def test_damaged_zip_directory_fields(tmp_path, offset, value):
    """Regressions found by the fuzzing: zipfile raised NotImplementedError and RuntimeError."""
    blob = bytearray(MODEL)
    cd = blob.index(b"PK\x01\x02")  # the central directory record of the first entry
    blob[cd + offset] = value
    (tmp_path / "m.convkit").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupted"):
        convkit.load_model(tmp_path / "m.convkit")


def test_a_directory_entry_naming_an_unknown_zip_version_is_a_value_error(tmp_path):
    """zipfile raises NotImplementedError for such an entry while opening the archive."""
    path = tmp_path / "m.convkit"
    path.write_bytes(MODEL.replace(b"PK\x01\x02\x14\x03\x14\x00", b"PK\x01\x02\x14\x03@\x00", 1))
    with pytest.raises(ValueError, match="not a convkit model file, or it is truncated or corrupted"):
        convkit.load_model(path)
