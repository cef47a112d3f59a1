"""convkit.utils.get_file, as the notes call it, against a local HTTP server (127.0.0.1 only)."""

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile

import pytest

from convkit.datasets._common import DataUnavailableError
from convkit.utils import get_file


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/'www' on 127.0.0.1; ``hits`` counts GET requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def tar_gz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_downloads_once_then_uses_the_cache(server, tmp_path, capsys):
    root, url, hits = server
    (root / "notes.txt").write_bytes(b"hello")
    cache = tmp_path / "cache"
    path = get_file("notes.txt", origin=f"{url}/notes.txt", cache_dir=cache)
    assert path == str(cache / "datasets" / "notes.txt") and open(path, "rb").read() == b"hello"
    assert "Downloading data from" in capsys.readouterr().out
    assert get_file("notes.txt", origin=f"{url}/notes.txt", cache_dir=cache) == path
    assert len(hits) == 1
    assert os.listdir(cache / "datasets") == ["notes.txt"]  # no temporary file left behind
    # fname defaults to the URL's last part; an absolute cache_subdir is used as is
    other = get_file(origin=f"{url}/notes.txt", cache_subdir=str(tmp_path / "elsewhere"))
    assert other == str(tmp_path / "elsewhere" / "notes.txt")


def test_digests_are_checked(server, tmp_path, capsys):
    root, url, hits = server
    (root / "w.bin").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    cache = tmp_path / "cache"
    path = get_file("w.bin", f"{url}/w.bin", file_hash=sha, cache_dir=cache)
    with open(path, "wb") as f:  # a damaged cached copy is fetched again
        f.write(b"damaged")
    assert get_file("w.bin", f"{url}/w.bin", file_hash=sha, cache_dir=cache) == path
    assert open(path, "rb").read() == b"weights" and len(hits) == 2
    assert "does not match" in capsys.readouterr().out
    with pytest.raises(ValueError, match="digest"):
        get_file("bad.bin", f"{url}/w.bin", file_hash="0" * 64, cache_dir=cache)
    assert not (cache / "datasets" / "bad.bin").exists()
    with pytest.warns(DeprecationWarning, match="file_hash"):
        get_file("md5.bin", f"{url}/w.bin", md5_hash=hashlib.md5(b"weights").hexdigest(), cache_dir=cache)
    assert sorted(os.listdir(cache / "datasets")) == ["md5.bin", "w.bin"]


def test_archives_are_extracted_as_keras_3_does(server, tmp_path):
    root, url, hits = server
    (root / "flower_photos.tgz").write_bytes(tar_gz({"flower_photos/roses/a.txt": b"rose",
                                                     "flower_photos/tulips/b.txt": b"tulip"}))
    cache = tmp_path / "cache"
    folder = get_file("flower_photos", origin=f"{url}/flower_photos.tgz", extract=True, cache_dir=cache)
    assert folder == str(cache / "datasets" / "flower_photos")
    assert open(os.path.join(folder, "flower_photos", "roses", "a.txt"), "rb").read() == b"rose"
    assert (cache / "datasets" / "flower_photos_archive").is_file()
    with pytest.warns(DeprecationWarning, match="extract=True"):
        assert get_file("flower_photos", origin=f"{url}/flower_photos.tgz", untar=True, cache_dir=cache) == folder
    assert len(hits) == 1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data/x.csv", "1,2\n")
    (root / "data.zip").write_bytes(buf.getvalue())
    folder = get_file("data.zip", origin=f"{url}/data.zip", extract=True, cache_dir=cache)
    assert folder == str(cache / "datasets" / "data_extracted")
    assert open(os.path.join(folder, "data", "x.csv")).read() == "1,2\n"


def test_an_archive_escaping_its_folder_is_refused(server, tmp_path):
    root, url, _ = server
    (root / "evil.tar.gz").write_bytes(tar_gz({"../../escaped.txt": b"x"}))
    with pytest.raises(ValueError, match="outside"):
        get_file("evil.tar.gz", origin=f"{url}/evil.tar.gz", extract=True, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()
    assert not any(name.endswith(".extracting") for name in os.listdir(tmp_path / "cache" / "datasets"))


def test_offline_gives_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataUnavailableError, match=r"could not download http://127\.0\.0\.1.*no copy is cached"):
        get_file("x.bin", origin=f"http://127.0.0.1:{port}/x.bin", cache_dir=tmp_path)
    assert os.listdir(tmp_path / "datasets") == []
    with pytest.raises(ValueError, match="origin"):
        get_file("x.bin")
    with pytest.raises(ValueError, match="not a path"):
        get_file("a/b.bin", origin="http://127.0.0.1/b.bin", cache_dir=tmp_path)
