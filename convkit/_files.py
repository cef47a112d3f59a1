"""``get_file``: download once into a cache, check the digest, extract archives (Keras's ``get_file``)."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import warnings
import zipfile
from pathlib import Path

from convkit.datasets._common import DataUnavailableError, cache_dir as default_cache_dir, download, file_digest


def _algorithm(hash_algorithm, file_hash):
    if hash_algorithm == "auto":
        return "sha256" if len(file_hash) == 64 else "md5"
    if hash_algorithm not in ("sha256", "md5"):
        raise ValueError(f"get_file: hash_algorithm must be 'auto', 'sha256' or 'md5', got {hash_algorithm!r}")
    return hash_algorithm


def _inside(base: str, name: str) -> bool:
    target = os.path.realpath(os.path.join(base, name))
    return os.path.commonpath([base, target]) == base


def _extract(archive: Path, dest: Path, archive_format) -> bool:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``dest`` through a temporary folder,
    refusing members that would land outside it. False if ``archive`` is none of the formats asked."""
    formats = ["tar", "zip"] if archive_format == "auto" else \
        ([archive_format] if isinstance(archive_format, str) else list(archive_format or []))
    for fmt in formats:
        if fmt not in ("tar", "zip"):
            raise ValueError(f"get_file: archive_format must be 'auto', 'tar', 'zip' or None, got {fmt!r}")
        if (tarfile.is_tarfile if fmt == "tar" else zipfile.is_zipfile)(archive):
            break
    else:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".extracting")
    try:
        base = os.path.realpath(tmp)
        if fmt == "tar":
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in members:
                    if not _inside(base, m.name) or ((m.issym() or m.islnk()) and
                                                     not _inside(base, os.path.join(os.path.dirname(m.name),
                                                                                    m.linkname))):
                        raise ValueError(f"get_file: {archive} holds {m.name!r}, which would land outside "
                                         f"{dest}; not extracting it")
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members, **kwargs)
        else:
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not _inside(base, name):
                        raise ValueError(f"get_file: {archive} holds {name!r}, which would land outside {dest}; "
                                         "not extracting it")
                zf.extractall(tmp)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def get_file(fname=None, origin=None, untar=False, md5_hash=None, file_hash=None, cache_subdir="datasets",
             hash_algorithm="auto", extract=False, archive_format="auto", cache_dir=None, force_download=False):
    """Download ``origin`` unless already cached, and return its local path, as Keras 3's ``get_file``.

    The file goes to ``cache_dir/cache_subdir/fname`` (``cache_dir`` defaults to convkit's cache
    folder, ``$XDG_CACHE_HOME/convkit`` or ``~/.cache/convkit``; an absolute ``cache_subdir`` is used
    as is; ``fname`` defaults to the last part of the URL). With ``file_hash`` (sha256 or md5, told
    apart by length unless ``hash_algorithm`` says) a cached copy that does not match is fetched again
    and a download that does not match is refused. Downloads land in a temporary file and are renamed
    into place only when complete and verified. With ``extract`` a tar or zip archive is unpacked and
    the extraction folder returned: ``fname`` without an extension names that folder (the archive is
    kept beside it as ``<fname>_archive``), else the folder is ``<stem>_extracted``. ``untar`` and
    ``md5_hash`` are the deprecated tf.keras 2 spellings of ``extract`` and ``file_hash``.
    """
    if origin is None:
        raise ValueError("get_file: give origin, the URL of the file to download")
    if untar:
        warnings.warn("get_file(untar=True) is deprecated: use extract=True (as in Keras 3, the result is the "
                      "extraction folder)", DeprecationWarning, stacklevel=2)
    if md5_hash is not None:
        warnings.warn("get_file(md5_hash=...) is deprecated: use file_hash=...", DeprecationWarning, stacklevel=2)
        if file_hash is None:
            file_hash, hash_algorithm = md5_hash, "md5"
    base = Path(os.path.expanduser(os.fspath(cache_dir))) if cache_dir is not None else default_cache_dir()
    folder = base / cache_subdir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError:  # as Keras: an unwritable cache falls back to the temporary folder
        folder = Path(tempfile.gettempdir()) / "convkit" / cache_subdir
        folder.mkdir(parents=True, exist_ok=True)
    given = os.fspath(fname) if fname is not None else ""
    name = given or os.path.basename(urllib.parse.urlsplit(origin).path)
    if not name:
        raise ValueError(f"get_file: cannot tell a file name from origin {origin!r}; pass fname=...")
    if os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"get_file: fname must be a file name, not a path ({name!r}); use cache_dir and "
                         "cache_subdir to choose the folder")
    extract = bool(extract or untar)
    if extract and (not given or "." not in name):
        extraction_dir, target = folder / name, folder / f"{name}_archive"
    elif extract:
        stem = name[:name.find(".")]
        extraction_dir, target = folder / f"{stem}_extracted", folder / name
    else:
        extraction_dir, target = None, folder / name

    algorithm = _algorithm(hash_algorithm, file_hash) if file_hash is not None else None
    fetch = force_download or not target.is_file()
    if not fetch and algorithm and file_digest(target, algorithm) != file_hash:
        print(f"A local file was found at {target}, but its {algorithm} digest does not match {file_hash}; "
              "downloading it again.")
        fetch = True
    if fetch:
        print(f"Downloading data from {origin}")
        try:
            tmp = download(origin, folder)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataUnavailableError(
                f"get_file: could not download {origin} ({reason}) and no copy is cached at {target}. "
                "Check the network connection, or put the file there yourself.") from None
        try:
            if algorithm and file_digest(tmp, algorithm) != file_hash:
                raise ValueError(f"get_file: the file downloaded from {origin} has {algorithm} digest "
                                 f"{file_digest(tmp, algorithm)}, not the expected {file_hash}: it is corrupt "
                                 "or not the file meant; it was not kept")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    if extraction_dir is None:
        return str(target)
    if fetch or not extraction_dir.exists():
        if not _extract(target, extraction_dir, archive_format):
            warnings.warn(f"get_file: {target} is not an archive of the formats asked for; nothing extracted",
                          stacklevel=2)
            return str(target)
    return str(extraction_dir)


__all__ = ["get_file"]
