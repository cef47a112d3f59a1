"""Writing a file so that readers, and a crash, only ever see the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
import tempfile


def _prefix(path) -> str:
    return f".{os.path.basename(path)}."


def remove_leftovers(path) -> list:
    """Delete the temporary files that writers of ``path`` killed mid-write (SIGKILL, power loss)
    left beside it; call only when no other process is writing ``path``. Returns what was removed."""
    path = os.fspath(path)
    folder, prefix = os.path.dirname(os.path.abspath(path)), _prefix(path)
    gone = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
                gone.append(name)
    return gone


@contextlib.contextmanager
def atomic_open(path):
    """Open a temporary file beside ``path`` for binary writing; on success it is synced and renamed
    over ``path`` (and the rename made durable); on any error it is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
