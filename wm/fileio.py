"""File access for workdirs on local disk or any ``tf.io.gfile`` filesystem (``gs://``, ``ram://``, ...).

The shared helpers the stages use instead of ``open``/``os.replace``/``os.makedirs``: atomic writes
(a temporary object, then ``tf.io.gfile.rename(..., overwrite=True)``; on GCS a rename is a copy and
a delete, so a reader sees the old or the new object, never half of one), reads that return None for
a missing file, appends, and copying a locally written file (a video) to its destination.
(The dataset layer keeps its own ``tfrecords.writer.write_json_atomic``: ``tfrecords`` does not
depend on ``wm``.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths (gs://, ram://, ...), which must not go through os.path.abspath."""
    return "://" in str(path)


def abspath(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs are returned as they are."""
    return path if is_url(path) else os.path.abspath(path)


def dirname(path: str) -> str:
    """The parent directory of ``path`` (absolute for local paths)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_url(path) else os.path.dirname(os.path.abspath(path))


def makedirs(path: str) -> None:
    _gfile().makedirs(path)


def exists(path: str) -> bool:
    return _gfile().exists(path)


def open_read(path: str):
    """A binary file object for reading (np.load and pickle.load accept it)."""
    return _gfile().GFile(path, "rb")


def read_bytes(path: str) -> bytes | None:
    """The file's contents, or None if it does not exist."""
    gfile = _gfile()
    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    """The parsed JSON file, or None if it does not exist."""
    data = read_bytes(path)
    return None if data is None else json.loads(data.decode("utf-8"))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` under a temporary name next to ``path``, then renames it over ``path``
    (local files are also fsynced first)."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not is_url(path):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    gfile = _gfile()
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    finally:
        if gfile.exists(tmp):
            gfile.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def append_text(path: str, text: str) -> None:
    """Appends to a file (on GCS, gfile rewrites the object: fine for small logs)."""
    with _gfile().GFile(path, "a") as f:
        f.write(text)


def copy_from_local(local_path: str, dest: str) -> None:
    """Puts a locally written file at ``dest`` (local or URL), replacing what was there, atomically."""
    if is_url(dest):
        tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        gfile = _gfile()
        try:
            gfile.copy(local_path, tmp, overwrite=True)
            gfile.rename(tmp, dest, overwrite=True)
        finally:
            if gfile.exists(tmp):
                gfile.remove(tmp)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class LocalTemp:
    """A local temporary file named like ``dest`` (same suffix, so writers pick the format); on
    ``commit()`` it is moved/copied to ``dest``; it is always removed at exit."""

    def __init__(self, dest: str):
        self.dest = dest
        fd, self.path = tempfile.mkstemp(suffix=os.path.splitext(dest)[1], prefix="wm-")
        os.close(fd)

    def __enter__(self) -> "LocalTemp":
        return self

    def commit(self) -> None:
        copy_from_local(self.path, self.dest)

    def __exit__(self, *exc) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
